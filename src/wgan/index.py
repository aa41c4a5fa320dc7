"""CSV lists of the images under a folder, with a reproducible random sample.

``build_index`` walks a folder once with ``os.scandir`` (no ``stat`` per file, no ``Path``
objects), in a stable order (each folder's files sorted, then its subfolders sorted), and
writes ``path,label`` rows with proper CSV quoting, so paths holding commas, quotes or even
newlines read back exactly (``wgan.dataset.CsvImages`` reads them). A sample of a given
fraction is drawn from the listing with a seeded generator: the same seed and the same
folder give the same sample.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from pathlib import Path

import numpy as np

from wgan.checkpoint import atomic_write, make_folder
from wgan.dataset import has_image_suffix, walk_folders
from wgan.errors import WganError
from wgan.progress import bar as progress_bar

log = logging.getLogger(__name__)

HEADER = ("path", "label")


def sniff_image(head: bytes) -> str | None:
    """The image format that the first bytes of a file announce, or None if not an image."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "ppm"
    return None


@dataclasses.dataclass
class IndexSummary:
    """What an indexing run found. ``not_images`` had an image suffix but other bytes (only
    with content checks); ``unlistable`` had names that are not valid UTF-8."""

    listed: int = 0
    sampled: int | None = None  # None: no sample was asked for
    not_images: int = 0
    unlistable: int = 0

    def __str__(self) -> str:
        text = f"listed {self.listed} images"
        if self.sampled is not None:
            text += f", sampled {self.sampled}"
        if self.not_images:
            text += f", {self.not_images} files whose bytes are not an image"
        if self.unlistable:
            text += f", {self.unlistable} names not valid UTF-8 (skipped)"
        return text


def list_images(
    root: str | os.PathLike,
    check_content: bool = False,
    progress: bool = True,
    summary: IndexSummary | None = None,
) -> list[str]:
    """Relative paths of the images under ``root`` in stable order.

    By default a file is an image if its suffix names an image type (any case, every type
    Pillow reads for training, not only ``.jpg``). With ``check_content`` every file's first
    bytes decide instead, whatever its name: slower (one open per file) but exact.
    """
    root = Path(root)
    if not root.exists():
        raise WganError(f"{root} does not exist; pass the folder of exported images")
    if not root.is_dir():
        raise WganError(f"{root} is not a folder; pass the folder of exported images")
    summary = summary if summary is not None else IndexSummary()
    out: list[str] = []
    with progress_bar(desc="index", unit="file", disable=not progress) as files_bar:
        for prefix, names in walk_folders(root, files_bar):
            if check_content:
                found = []
                for name in names:
                    if _is_image_file(os.path.join(root, prefix + name)):
                        found.append(name)
                    else:
                        summary.not_images += has_image_suffix(name)
            else:
                found = [name for name in names if has_image_suffix(name)]
            try:
                prefix.encode("utf-8")
                out.extend(prefix + name for name in found
                           if name.isascii() or _is_utf8(name, summary))
            except UnicodeEncodeError:
                summary.unlistable += len(found)
    if summary.unlistable:
        log.warning("skipped %d files whose names are not valid UTF-8", summary.unlistable)
    summary.listed = len(out)
    return out


def _is_image_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return sniff_image(f.read(16)) is not None
    except OSError:
        return False


def _is_utf8(name: str, summary: IndexSummary) -> bool:
    """Whether a name can be written as UTF-8 (names read from bytes that are not UTF-8
    cannot); counts those that cannot."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        summary.unlistable += 1
        return False


def sample_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random sample of ``round(fraction * n)`` of ``n`` items."""
    if not 0.0 < fraction <= 1.0:
        raise WganError(f"--sample-fraction must be in (0, 1], not {fraction}")
    k = int(round(fraction * n))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)


def labels_by_folder(paths: list[str]) -> list[int]:
    """Label each path by its top-level folder: sorted folder names numbered 0, 1, ...

    Files directly in the root get label 0 with the first folder."""
    tops = sorted({p.split("/", 1)[0] for p in paths if "/" in p})
    number = {t: i for i, t in enumerate(tops)}
    return [number.get(p.split("/", 1)[0], 0) for p in paths]


def _needs_quoting(paths: list[str]) -> bool:
    """Whether any path holds a character that CSV must quote."""
    joined = "\0".join(paths)
    return any(c in joined for c in ',"\r\n')


def write_csv(path: str | os.PathLike, paths: list[str], labels: list[int] | int = 0,
              option: str = "--csv") -> None:
    """Write ``path,label`` rows (with a header) atomically, quoting as CSV requires; ``option``
    names the output in messages."""
    path = Path(path)

    def write(f) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        if isinstance(labels, int) and not _needs_quoting(paths):
            # note: the same bytes the csv module writes, several times faster.
            text.write(",".join(HEADER) + "\n")
            text.writelines(f"{p},{labels}\n" for p in paths)
        else:
            w = csv.writer(text, lineterminator="\n")
            w.writerow(HEADER)
            w.writerows(zip(paths, [labels] * len(paths) if isinstance(labels, int) else labels,
                            strict=True))
        text.flush()
        text.detach()

    make_folder(path.parent, option, path)
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise WganError(f"cannot write {path}: {exc.strerror or exc}") from None


def build_index(
    root: str | os.PathLike,
    csv_path: str | os.PathLike,
    sample_fraction: float | None = None,
    sample_csv: str | os.PathLike | None = None,
    seed: int = 0,
    label: int = 0,
    label_by_folder: bool = False,
    check_content: bool = False,
    progress: bool = True,
) -> IndexSummary:
    """List the images under ``root`` into ``csv_path``, and a seeded sample into
    ``sample_csv`` when ``sample_fraction`` is given. Paths are relative to ``root``."""
    if (sample_fraction is None) != (sample_csv is None):
        raise WganError("--sample-fraction and --sample-csv go together; give both or neither")
    if sample_csv is not None and Path(sample_csv).resolve() == Path(csv_path).resolve():
        raise WganError(f"--sample-csv {sample_csv} is the same file as --csv: the sample "
                        "would replace the full list; name another file")
    if sample_fraction is not None and not 0.0 < sample_fraction <= 1.0:
        raise WganError(f"--sample-fraction must be in (0, 1], not {sample_fraction}")
    summary = IndexSummary()
    paths = list_images(root, check_content, progress, summary)
    if not paths:
        raise WganError(f"no images found under {root}")
    labels: list[int] | int = labels_by_folder(paths) if label_by_folder else label
    write_csv(csv_path, paths, labels)
    if sample_fraction is not None:
        idx = sample_indices(len(paths), sample_fraction, seed)
        chosen = [paths[i] for i in idx]
        chosen_labels = labels if isinstance(labels, int) else [labels[i] for i in idx]
        write_csv(sample_csv, chosen, chosen_labels, "--sample-csv")
        summary.sampled = len(chosen)
    log.debug("index of %s: %s", root, summary)
    return summary
