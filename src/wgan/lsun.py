"""The LSUN release: download a category's zip, unzip it safely, export its LMDB to files.

Every step is a function usable from a notebook; ``wgan lsun ...`` only parses flags and calls
them. The steps never write outside the folder they are given, never leave a half-written
file under a final name, and can be re-run after an interruption to finish the job.

- ``download``: streams a zip to ``<name>.part`` with HTTP Range resume, checks the size the
  server announced, and renames it to the final name only when complete.
- ``unzip``: refuses any member that would land outside the target folder (absolute paths,
  ``..``, drive letters, links) before it extracts anything.
- ``export``: one file per LMDB record, named by key, with the extension of the bytes' real
  format; untrusted keys and unusable records are counted, never fatal.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import logging
import os
import re
import shutil
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from wgan.checkpoint import atomic_write
from wgan.dataset import DEFAULT_MAX_PIXELS, decode_error, is_lmdb_dir, open_lmdb
from wgan.errors import WganError
from wgan.index import sniff_image
from wgan.progress import bar as progress_bar

log = logging.getLogger(__name__)

LSUN_URL = "http://dl.yf.io/lsun/scenes"
CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room",
              "dining_room", "kitchen", "living_room", "restaurant", "tower")
SETS = ("train", "val")
CHUNK = 1 << 20

# Export formats: ``keep`` writes the bytes unchanged; the others re-encode.
FORMATS = ("keep", "jpeg", "png")
# Pillow format name -> file extension for the formats an LSUN record may hold.
SNIFFED_EXTENSIONS = {"jpeg": ".jpg", "webp": ".webp", "png": ".png", "gif": ".gif",
                      "bmp": ".bmp", "tiff": ".tif", "ppm": ".ppm"}
EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "PNG": ".png", "GIF": ".gif",
              "BMP": ".bmp", "TIFF": ".tif", "PPM": ".ppm"}
# A key becomes a file name only if it is plain: letters, digits, ``_ - .``, not hidden.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


def _progress(total: int | None, desc: str, unit: str = "it", enabled: bool = True, **kw):
    return progress_bar(total=total, desc=desc, unit=unit, disable=not enabled, **kw)


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------

def category_url(category: str, set_name: str, base: str = LSUN_URL) -> str:
    """The address of one category's zip: ``<base>/<category>_<set>_lmdb.zip``."""
    if set_name not in SETS:
        raise WganError(f"--set {set_name!r} is not one of {', '.join(SETS)}")
    if not re.fullmatch(r"[a-z_]+", category):
        raise WganError(f"--category {category!r} is not a category name such as 'bedroom'")
    return f"{base.rstrip('/')}/{category}_{set_name}_lmdb.zip"


class _CutOff(Exception):
    """The connection ended before the announced size; the ``.part`` file keeps what came."""


def _announced_total(resp, offset: int) -> int | None:
    """The full size of the file from a 200 or 206 response, or None if not announced."""
    if resp.status == 206:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            raise WganError(f"the server answered the resume request with a bad Content-Range "
                            f"{resp.headers.get('Content-Range')!r}; delete the .part file "
                            "to start over")
        return int(m.group(3)) if m.group(3) != "*" else None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _validator(resp) -> str | None:
    """The ETag (if strong) or Last-Modified date, to tell whether the file changed."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.headers.get("Last-Modified")


def _fetch_once(url: str, part: Path, meta: Path, timeout: float, progress: bool) -> int:
    """Append the rest of ``url`` to ``part``; return the announced total size."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        saved = json.loads(meta.read_text()) if offset else {}
    except (OSError, ValueError):
        saved = {}
    if saved.get("url") != url:
        # note: a .part of unknown origin cannot be trusted to be a prefix of this file.
        offset = 0
    headers = {"User-Agent": "wgan-lsun/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if saved.get("validator"):
            # note: the server sends the whole file (200) if it changed since the .part began.
            headers["If-Range"] = saved["validator"]
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            total = _announced_total_416(exc)
            if total == offset:
                return total
            log.warning("server refused to resume at byte %d; starting over", offset)
            part.unlink()
            return _fetch_once(url, part, meta, timeout, progress)
        raise WganError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _CutOff(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None

    with resp:
        if offset and resp.status != 206:
            log.info("the server sent the whole file; starting over")
            offset = 0
        total = _announced_total(resp, offset)
        meta.write_text(json.dumps({"url": url, "validator": _validator(resp), "total": total}))
        mode = "ab" if offset else "wb"
        with open(part, mode) as f, _progress(total, part.name[:-5], "B", progress,
                                               initial=offset, unit_scale=True,
                                               unit_divisor=1024) as bar:
            try:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise _CutOff(f"connection broken after {f.tell()} bytes: {exc}") from None
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
    if total is not None and size < total:
        raise _CutOff(f"the connection ended after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink()
        raise WganError(f"{url}: received {size} bytes but the server announced {total}; "
                        "the partial file was deleted, run again")
    return size if total is None else total


def _announced_total_416(exc: urllib.error.HTTPError) -> int | None:
    m = re.fullmatch(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") if exc.headers
                     else "")
    return int(m.group(1)) if m else None


def download(
    url: str,
    out_dir: str | os.PathLike = ".",
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
    retry_wait: float = 2.0,
) -> Path:
    """Download ``url`` into ``out_dir``; return the path of the complete file.

    Bytes go to ``<name>.part`` and the file is renamed to ``<name>`` only once its size equals
    the size the server announced. A broken connection is retried ``retries`` times from where
    it stopped (HTTP Range); a later call resumes the same way. A file already complete under
    the final name is not downloaded again.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise WganError(f"cannot download {url!r}: give an http:// or https:// address "
                        "(--url is the base address, e.g. http://host/path)")
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    if not name or name in (".", "..") or "\\" in name:
        raise WganError(f"cannot tell a file name from the address {url!r}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WganError(f"cannot create the output folder {out}: {exc.strerror}") from None
    final, part, meta = out / name, out / f"{name}.part", out / f".{name}.part.json"
    if final.exists():
        log.info("%s is already downloaded; delete it to download again", final)
        return final

    for attempt in range(retries + 1):
        try:
            total = _fetch_once(url, part, meta, timeout, progress)
            break
        except _CutOff as exc:
            if attempt == retries:
                raise WganError(f"download of {url} stopped: {exc}; run the same command again "
                                f"to resume from {part}") from None
            log.warning("%s; retrying (%d/%d)", exc, attempt + 1, retries)
            time.sleep(retry_wait * (attempt + 1))
    if part.stat().st_size != total:
        raise WganError(f"{part} holds {part.stat().st_size} bytes, expected {total}")
    if name.lower().endswith(".zip") and not zipfile.is_zipfile(part):
        # note: a server that announces no size cannot tell a cut from the end; a zip's last
        # bytes (its central directory) can. An error page served as the file ends up here too.
        raise WganError(f"{part} ({total} bytes) is not a complete zip archive: run the same "
                        "command again to resume it, or delete it to start over")
    os.replace(part, final)
    meta.unlink(missing_ok=True)
    log.info("downloaded %s (%d bytes)", final, total)
    return final


def download_category(category: str, set_name: str, out_dir: str | os.PathLike = ".",
                      base_url: str = LSUN_URL, **kw) -> Path:
    """Download one LSUN category's zip (``bedroom``, ``train``) into ``out_dir``."""
    return download(category_url(category, set_name, base_url), out_dir, **kw)


# ---------------------------------------------------------------------------------------------
# Unzip
# ---------------------------------------------------------------------------------------------

def _member_target(root: Path, info: zipfile.ZipInfo, zip_path: Path) -> Path | None:
    """Where a member lands inside ``root``; a ``WganError`` if it would leave ``root``."""
    name = info.filename.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    mode = info.external_attr >> 16
    bad = (name.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", name)
           or stat.S_ISLNK(mode) or "\0" in name)
    if bad:
        raise WganError(f"{zip_path}: member {info.filename!r} would be written outside "
                        f"{root}; nothing was extracted. The archive is damaged or hostile")
    if not parts:
        return None
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise WganError(f"{zip_path}: member {info.filename!r} leaves {root} through a link; "
                        "nothing was extracted")
    return target


def unzip(zip_path: str | os.PathLike, dest: str | os.PathLike, progress: bool = True) -> Path:
    """Extract ``zip_path`` into ``dest`` safely; return ``dest``.

    Every member is checked first and the whole archive refused if one would land outside
    ``dest``. Each file is written to a temporary name and renamed, so an interrupted unzip
    leaves no truncated file; a re-run skips files already there at full size.
    """
    zip_path, root = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise WganError(f"cannot open {zip_path} as a zip archive: {exc}") from None
    with archive:
        root.mkdir(parents=True, exist_ok=True)
        plan = [(info, _member_target(root, info, zip_path)) for info in archive.infolist()]
        need = sum(i.file_size for i, t in plan if t is not None and not i.is_dir())
        free = shutil.disk_usage(root).free
        if need > free:
            raise WganError(f"unzipping {zip_path} needs {need / 1e9:.1f} GB but {root} has "
                            f"{free / 1e9:.1f} GB free")
        with _progress(need, f"unzip {zip_path.name}", "B", progress, unit_scale=True,
                       unit_divisor=1024) as bar:
            for info, target in plan:
                if target is None:
                    continue
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if target.is_file() and target.stat().st_size == info.file_size:
                    bar.update(info.file_size)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)

                def copy(f, info=info):
                    with archive.open(info) as src:
                        while chunk := src.read(CHUNK):
                            f.write(chunk)
                            bar.update(len(chunk))

                try:
                    atomic_write(target, copy)
                except (zipfile.BadZipFile, EOFError) as exc:
                    raise WganError(f"{zip_path}: member {info.filename!r} is damaged ({exc}); "
                                    "download the archive again") from None
    log.info("unzipped %s into %s", zip_path, root)
    return root


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ExportSummary:
    """What an export did. ``bad`` records were empty or undecodable; ``rejected`` keys were
    not plain file names. Neither was written."""

    written: int = 0
    skipped: int = 0
    bad: int = 0
    rejected: int = 0

    def __str__(self) -> str:
        return (f"written {self.written}, skipped {self.skipped} (already there), "
                f"bad {self.bad}, rejected keys {self.rejected}")


def key_to_name(key: bytes) -> str | None:
    """The file name stem for an LMDB key, or None if the key is not a plain file name."""
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _PLAIN_KEY.fullmatch(text) else None


def relative_path(stem: str, ext: str, flat: bool) -> str:
    """``a/b/c/<stem><ext>`` (first three characters as folders) or ``<stem><ext>`` if flat."""
    if flat:
        return stem + ext
    # note: a '.' among the first characters would make a '.' folder; it becomes '_'.
    prefix = [c if c.isalnum() else "_" for c in stem[:3]]
    return "/".join([*prefix, stem + ext])


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The Pillow format of fully decodable image bytes; ``ValueError`` saying why if not."""
    if not data:
        raise ValueError("empty record")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > max_pixels:
                    raise ValueError(f"{img.width}x{img.height} pixels is over the limit")
                img.load()
                fmt = img.format
    except ValueError:
        raise
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ValueError(f"cannot decode: {decode_error(exc)}") from None
    if fmt not in EXTENSIONS:
        raise ValueError(f"unexpected image format {fmt}")
    return fmt


def _encode(data: bytes, fmt: str, quality: int) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        buf = io.BytesIO()
        if fmt == "jpeg":
            img.save(buf, format="JPEG", quality=quality)
        else:
            img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _complete(path: Path, size: int | None) -> bool:
    """Whether ``path`` is there at full ``size`` (any non-empty size if None)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_size == size if size is not None else st.st_size > 0


def _write_file(path: Path, data: bytes) -> None:
    """Write to a hidden temporary name, then rename: a crash never leaves a partial file.

    note: no fsync per file (millions of them would take hours); a power cut may lose the last
    few files, and the size check of a re-run catches any left empty or short.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _records(lmdb_dir: Path) -> Iterator[tuple[bytes, bytes]]:
    env = open_lmdb(lmdb_dir)
    try:
        with env.begin(write=False, buffers=False) as txn:
            yield from txn.cursor()
    finally:
        env.close()


@dataclasses.dataclass(frozen=True)
class _Job:
    root: Path
    flat: bool
    fmt: str
    quality: int


def _export_chunk(job: _Job, records: list[tuple[bytes, bytes]]
                  ) -> tuple[ExportSummary, list[tuple[str, str]]]:
    """Export some records; return the counts and, for each record not written, the
    summary's field that counts it (``bad`` or ``rejected``) and a line saying why."""
    summary, problems = ExportSummary(), []
    fixed_ext = {"jpeg": ".jpg", "png": ".png"}.get(job.fmt)
    for key, value in records:
        stem = key_to_name(key)
        if stem is None:
            summary.rejected += 1
            problems.append(("rejected", f"rejected key {key[:80]!r}: not a plain file name"))
            continue

        # Name the file by the format its first bytes announce; skip it if already complete.
        kind = sniff_image(value[:16])
        if kind is None:
            summary.bad += 1
            why = "empty record" if not value else "the bytes are not an image"
            problems.append(("bad", f"bad record {key[:80]!r}: {why}"))
            continue
        target = job.root / relative_path(stem, fixed_ext or SNIFFED_EXTENSIONS[kind], job.flat)
        if _complete(target, len(value) if job.fmt == "keep" else None):
            summary.skipped += 1
            continue

        # Check that the whole image decodes, then write it, re-encoded if asked.
        try:
            real = check_image(value)
            if EXTENSIONS[real] != SNIFFED_EXTENSIONS[kind]:
                raise ValueError(f"starts like {kind} but decodes as {real}")
        except ValueError as exc:
            summary.bad += 1
            problems.append(("bad", f"bad record {key[:80]!r}: {exc}"))
            continue
        data = value if job.fmt == "keep" else _encode(value, job.fmt, job.quality)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_file(target, data)
        except OSError as exc:
            raise WganError(f"cannot write {target}: {exc.strerror or exc}") from None
        summary.written += 1
    return summary, problems


def _chunks(lmdb_dir: Path, limit: int | None, size: int = 64
            ) -> Iterator[list[tuple[bytes, bytes]]]:
    chunk: list[tuple[bytes, bytes]] = []
    for n, record in enumerate(_records(lmdb_dir)):
        if limit is not None and n >= limit:
            break
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _run_chunks(job: _Job, chunks, workers: int):
    """``_export_chunk`` over ``chunks`` in order, in this process or in ``workers`` others,
    with a bounded number of chunks in flight (the LMDB is never read ahead into memory)."""
    if workers <= 1:
        for chunk in chunks:
            yield len(chunk), _export_chunk(job, chunk)
        return
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append((len(chunk), pool.submit(_export_chunk, job, chunk)))
            if len(pending) >= 4 * workers:
                n, future = pending.popleft()
                yield n, future.result()
        while pending:
            n, future = pending.popleft()
            yield n, future.result()


def export(
    lmdb_dir: str | os.PathLike,
    out: str | os.PathLike,
    flat: bool = False,
    limit: int | None = None,
    fmt: str = "keep",
    quality: int = 95,
    workers: int = 1,
    progress: bool = True,
    max_examples: int = 5,
) -> ExportSummary:
    """Write each record of an LSUN LMDB to its own file under ``out``.

    Files are named ``<key><ext>``, nested in folders named by the key's first three
    characters unless ``flat``. With ``fmt="keep"`` the bytes are written unchanged under the
    extension of their real format; ``"jpeg"`` and ``"png"`` re-encode. Writes are atomic and
    a re-run skips files already complete, so an interrupted export resumes. ``limit`` stops
    after that many records (of all kinds). Keys that are not plain file names and records
    that are empty or do not decode in full are skipped and counted; the first ``max_examples``
    of each kind are logged, then how many more. ``workers`` > 1 checks and writes in that many
    processes.
    """
    src, root = Path(lmdb_dir), Path(out)
    if fmt not in FORMATS:
        raise WganError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not src.exists():
        raise WganError(f"{src} does not exist; pass the unzipped LMDB folder (holding data.mdb)")
    if not is_lmdb_dir(src):
        raise WganError(f"{src} is not an LMDB folder (no data.mdb inside); pass the unzipped "
                        "folder such as bedroom_train_lmdb")
    if limit is not None and limit < 0:
        raise WganError(f"--limit must be 0 or more, not {limit}")
    if workers < 1:
        raise WganError(f"--workers must be 1 or more, not {workers}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WganError(f"cannot create the output folder {root}: {exc.strerror}") from None
    env = open_lmdb(src)
    try:
        total = env.stat()["entries"]
    finally:
        env.close()
    total = min(total, limit) if limit is not None else total

    summary = ExportSummary()
    shown = {"bad": 0, "rejected": 0}  # lines logged, per kind: at most max_examples each
    job = _Job(root, flat, fmt, quality)
    with _progress(total, "export", "img", progress) as shown_bar:
        for n, (part, problems) in _run_chunks(job, _chunks(src, limit), workers):
            for field in dataclasses.fields(ExportSummary):
                setattr(summary, field.name,
                        getattr(summary, field.name) + getattr(part, field.name))
            for kind, line in problems:
                if shown[kind] < max_examples:
                    log.warning("%s", line)
                    shown[kind] += 1
            shown_bar.update(n)
    # note: the lines shown plus the "more" line of each kind add up to the summary's count.
    for kind, what in (("bad", "bad records"), ("rejected", "rejected keys")):
        count = getattr(summary, kind)
        if count > shown[kind]:
            log.warning("... and %d more %s (%d in all)", count - shown[kind], what, count)
    log.debug("export to %s: %s", root, summary)
    return summary
