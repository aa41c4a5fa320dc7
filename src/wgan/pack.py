"""Pack files: any image source decoded once into one file of pre-resized uint8 images.

Layout of a pack file:
- bytes ``0 .. HEADER_BYTES``: ``MAGIC``, then a JSON header within the first 4 KiB (format,
  source, size, channels, count, resize method, bad images, ``complete``), then whitespace;
- then ``count`` images as one C-ordered uint8 array ``[count, channels, size, size]``.

The header is rewritten in place after each chunk of images is on disk, so a pack stopped at
any moment says how far it got; ``wgan pack`` run again on the same source goes on from
there. Only a header with ``complete: true`` and a file of exactly the right length is read
as training data. Readers map the file read-only (copy-on-write), so any number of processes
can share it through the page cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wgan import __version__, progress
from wgan.checkpoint import fsync_dir, make_folder
from wgan.dataset import (
    RESAMPLE,
    ArrayImages,
    CsvImages,
    ImageFolder,
    ImageSource,
    LmdbImages,
)
from wgan.errors import WganError

log = logging.getLogger(__name__)

MAGIC = b"WGANPACK\n"
FORMAT = "wgan-pack/1"
HEADER_BYTES = 65536  # page-aligned start of the images
HEADER_PAGE = 4096  # the JSON is kept within the first page, so an update is one page write
MAX_BAD_NAMES = 20  # bad images named in the header at most (all of them are counted)


def is_pack(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file that starts like a pack file (complete or not)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return False


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a pack file; WganError when the file is not a readable pack."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as exc:
        raise WganError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw.startswith(MAGIC):
        raise WganError(f"{path} is not a wgan pack file; make one with: wgan pack DATA --out "
                        f"{path.name}")
    try:
        header = json.loads(raw[len(MAGIC):].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WganError(f"{path}: the pack header is damaged; make the pack again with "
                        "wgan pack --overwrite") from None
    if header.get("format") != FORMAT:
        raise WganError(f"{path} is a pack of format {header.get('format')!r}, not {FORMAT!r}; "
                        "make it again with this version of wgan pack --overwrite")
    return header


def _header_bytes(header: dict[str, Any]) -> bytes:
    """The header's first page: MAGIC, the JSON, spaces, a newline."""
    room = HEADER_PAGE - len(MAGIC) - 1
    while True:
        body = json.dumps(header, indent=1, sort_keys=True).encode("utf-8")
        if len(body) <= room or not header["bad_names"]:
            break
        header["bad_names"].pop()  # note: long paths; name fewer bad images, count them all
    assert len(body) <= room, f"pack header of {len(body)} bytes does not fit in {room}"
    return MAGIC + body + b" " * (room - len(body)) + b"\n"


def image_bytes(header: dict[str, Any]) -> int:
    return header["channels"] * header["size"] * header["size"]


def describe_method(draft: bool) -> str:
    return (f"shorter side to size, centre square, {RESAMPLE.name.lower()} (Pillow)"
            + (", JPEG reduced in the DCT domain first" if draft else ", full decode"))


def _source_kind(source: ImageSource) -> str:
    if isinstance(source, LmdbImages):
        return "lmdb"
    if isinstance(source, CsvImages):
        return "csv"
    if isinstance(source, ImageFolder):
        return "folder"
    return type(source).__name__


def _source_path(source: ImageSource) -> str:
    for attr in ("path", "csv_path", "root"):
        if hasattr(source, attr):
            return str(Path(getattr(source, attr)).resolve())
    return source.describe()


def _fresh_header(source: ImageSource, draft: bool) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "complete": False,
        "source": _source_path(source),
        "source_kind": _source_kind(source),
        "source_records": len(source),
        "name": source.describe(),
        "size": source.size,
        "channels": source.channels,
        "layout": "NCHW",
        "dtype": "uint8",
        "resize": describe_method(draft),
        "jpeg_draft": draft,
        "count": 0,  # images written
        "done": 0,  # source records read (written or bad)
        "bad": 0,
        "bad_names": [],
        "wgan_version": __version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# Header fields that must agree for an unfinished pack to be continued.
_SAME_JOB = ("source", "source_kind", "source_records", "size", "channels", "jpeg_draft")


def _job(header: dict[str, Any]) -> str:
    """``16x16 images with 3 channels from SRC``: what a pack holds, for messages."""
    draft = "" if header.get("jpeg_draft", True) else " (--no-draft)"
    return (f"{header['size']}x{header['size']} images with {header['channels']} channels from "
            f"{header['source']}{draft}")


def _write_header(f, header: dict[str, Any]) -> None:
    f.seek(0)
    f.write(_header_bytes(header))
    f.flush()
    os.fsync(f.fileno())


def _collate(items: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    return items


def pack_source(
    source: ImageSource,
    out: str | os.PathLike,
    workers: int = 0,
    chunk: int = 256,
    overwrite: bool = False,
    max_bad_fraction: float = 0.01,
    show_progress: bool = True,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Decode every image of ``source`` in order into the pack file ``out``; returns its header.

    An unfinished pack of the same source and settings at ``out`` is continued; a finished one,
    or one of anything else, is replaced only with ``overwrite``. Bad images are skipped,
    counted and named in the header; past ``max_bad_fraction`` (after 1,000 records or the whole
    source) the pack stops unfinished. ``show_progress`` draws a progress bar on a terminal and
    otherwise logs a line at each tenth of the source. ``on_chunk`` is called with the header
    after each chunk.
    """
    out = Path(out)
    header = _fresh_header(source, source.draft)
    item = image_bytes(header)

    # Continue an unfinished pack of the same job, or start afresh.
    mode = "w+b"
    if out.is_dir():
        raise WganError(f"--out {out} is a folder; name a file, e.g. {out / 'images.pack'}")
    if out.exists() and not overwrite:
        if not is_pack(out):
            raise WganError(f"{out} exists and is not a pack file; choose another --out or "
                            "pass --overwrite to replace it")
        old = read_header(out)
        same = all(old.get(k) == header[k] for k in _SAME_JOB)
        if old["complete"] and same:
            raise WganError(f"{out} is already a complete pack of {old['count']} images from "
                            f"{old['source']}; pass --overwrite to make it again")
        if not same:
            state = "a complete" if old["complete"] else "an unfinished"
            raise WganError(f"{out} is {state} pack of {_job(old)}, not of {_job(header)}; "
                            "pass --overwrite to replace it or choose another --out")
        if out.stat().st_size >= HEADER_BYTES + old["count"] * item:
            header, mode = old, "r+b"
            log.info("continuing %s at record %d of %d", out, old["done"], len(source))
        else:
            log.warning("%s is shorter than its header says; starting it again", out)

    make_folder(out.parent, "--out", out)
    try:
        if mode == "w+b" and out.exists():
            # note: a new file, not the old one truncated: a run still training from the old
            # pack keeps its mapping instead of dying of SIGBUS.
            out.unlink()
        f = open(out, mode)
    except OSError as exc:
        raise WganError(f"cannot write {out}: {exc.strerror or exc}") from None
    with f:
        if mode == "w+b":
            f.write(b" " * (HEADER_BYTES - 1) + b"\n")
            _write_header(f, header)
            fsync_dir(out.parent.resolve())
        start = header["done"]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(source, range(start, len(source))),
            batch_size=chunk, num_workers=workers, collate_fn=_collate,
            prefetch_factor=2 if workers > 0 else None,
        )
        bar = progress.bar(total=len(source), initial=start, unit="img", desc=f"pack {out.name}",
                           disable=not show_progress, smoothing=0.05)
        log_tenths = show_progress and bar.disable
        try:
            for items in loader:
                good = [x for x in items if x is not None]
                for offset, x in enumerate(items):
                    if x is None:
                        header["bad"] += 1
                        if len(header["bad_names"]) < MAX_BAD_NAMES:
                            header["bad_names"].append(source.name(header["done"] + offset))

                # Write the images first, then the header that counts them.
                if good:
                    f.seek(HEADER_BYTES + header["count"] * item)
                    f.write(torch.stack(good).numpy().tobytes())
                    f.flush()
                    os.fsync(f.fileno())
                header["count"] += len(good)
                header["done"] += len(items)
                _write_header(f, header)
                _check_bad(header, max_bad_fraction, out)
                bar.update(len(items))
                tenth = 10 * header["done"] // len(source)
                if log_tenths and tenth > 10 * (header["done"] - len(items)) // len(source):
                    log.info("packed %d of %d records (%d bad)", header["done"], len(source),
                             header["bad"])
                bar.set_postfix(bad=header["bad"], refresh=False)
                if on_chunk is not None:
                    on_chunk(header)
        finally:
            bar.close()
            del loader

        # Finish: cut the file to its images, then mark it complete.
        if header["count"] == 0:
            raise WganError(f"none of the {len(source)} images of {header['source']} could be "
                            "decoded; nothing to pack")
        f.truncate(HEADER_BYTES + header["count"] * item)
        header["complete"] = True
        header["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_header(f, header)
    if header["bad"]:
        log.warning("%d of %d images could not be decoded and were left out (named in the "
                    "header of %s)", header["bad"], len(source), out)
    log.info("packed %d images of %dx%d into %s (%.1f MB)", header["count"], header["size"],
             header["size"], out, out.stat().st_size / 1e6)
    return header


def _check_bad(header: dict[str, Any], max_bad_fraction: float, out: Path) -> None:
    done = header["done"]
    if done >= min(1000, header["source_records"]) and header["bad"] > max_bad_fraction * done:
        raise WganError(f"{header['bad']} of {done} images read could not be decoded, over "
                        f"--max-bad-fraction {max_bad_fraction}; fix or remove them (the first "
                        f"are named in the header of {out}) or raise the limit, then run the "
                        "same wgan pack command again to go on")


class PackMismatch(WganError):
    """A pack's image size or channels differ from those asked for."""

    def __init__(self, path: Path, header: dict, option: str, want: int, have: int) -> None:
        self.path, self.option, self.want, self.have = path, option, want, have
        self.holds = (f"{path} holds {header['size']}x{header['size']} images with "
                      f"{header['channels']} channels")
        super().__init__(f"{self.holds}, but {option} is {want}; train with {option} {have} "
                         "or pack again with other settings")


class PackImages(ArrayImages):
    """The images of a complete pack file, memory-mapped; opened again in each process."""

    def __init__(self, path: str | os.PathLike, size: int | None = None,
                 channels: int | None = None) -> None:
        self.path = Path(path)
        self.header = header = read_header(self.path)
        if not header["complete"]:
            raise WganError(f"{self.path} is an unfinished pack ({header['done']} of "
                            f"{header['source_records']} images read); run the wgan pack "
                            "command again to finish it")
        expected = HEADER_BYTES + header["count"] * image_bytes(header)
        actual = self.path.stat().st_size
        if actual != expected:
            raise WganError(f"{self.path} is {actual} bytes but its header promises {expected}: "
                            "the file is damaged or cut short; make it again with wgan pack "
                            "--overwrite")
        for name, want, have in (("--image-size", size, header["size"]),
                                 ("--channels", channels, header["channels"])):
            if want is not None and want != have:
                raise PackMismatch(self.path, header, name, want, have)
        self.size = header["size"]
        self.channels = header["channels"]
        self._name = header.get("name") or self.path.stem
        self._images: torch.Tensor | None = None
        self._pid: int | None = None

    @property
    def images(self) -> torch.Tensor:
        if self._images is None or self._pid != os.getpid():
            h = self.header
            # note: copy-on-write ("c") gives a writable array, which torch.from_numpy wants,
            # while the file is opened read-only and never changed.
            arr = np.memmap(self.path, dtype=np.uint8, mode="c", offset=HEADER_BYTES,
                            shape=(h["count"], h["channels"], h["size"], h["size"]))
            self._images, self._pid = torch.from_numpy(arr), os.getpid()
        return self._images

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None  # note: a worker maps the file itself instead of a copy
        state.pop("_device_images", None)
        return state

    def __len__(self) -> int:
        return self.header["count"]
