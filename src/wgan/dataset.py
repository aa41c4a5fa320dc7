"""Training images from a folder, a CSV list, an LSUN LMDB or memory, as uint8 tensors.

Every source yields ``[C, S, S]`` uint8 tensors: decoded by content (never by file name),
oriented by EXIF, converted to RGB (or greyscale), the shorter side resized to ``S`` and the
centre cropped. Scaling to [-1, 1] happens on the training device (``to_model_range``).
A record that cannot be decoded yields ``None`` and is counted by the collate function.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from wgan.errors import WganError
from wgan.lmdb_pages import read_leaf_keys

log = logging.getLogger(__name__)

# Suffixes listed when a folder is scanned; decoding itself always goes by content.
IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .png .webp .bmp .gif .tif .tiff .ppm .pgm .pbm .pnm .jfif".split()
)
RESAMPLE = Image.Resampling.BICUBIC
DEFAULT_MAX_PIXELS = 64_000_000  # larger images are refused as possible decompression bombs
MIN_SIDE = 8  # smaller images are refused as too small to be photos
# A JPEG is reduced in the DCT domain (by 1/2, 1/4 or 1/8) to the smallest size still at least
# DRAFT_MARGIN * size on both sides. With 1 the result is within DRAFT_TOLERANCE of a full decode:
# the mean absolute difference per image, in 8-bit levels (measured worst case on the
# hymenoptera photos at 64 pixels: 4.9; median: 1.2).
DRAFT_MARGIN = 1
DRAFT_TOLERANCE = 6.0
EXIF_ORIENTATION = 0x0112
_T = Image.Transpose
ORIENT = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
          6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}

# note: a truncated file must fail to decode, not decode as a grey-padded image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImage(Exception):
    """An image that cannot be used: empty, truncated, undecodable, too small or too large."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and arr.max() <= 1.0:
            top = 1.0  # a float image in [0, 1]
        else:
            top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
    if img.mode == "P" or img.mode in ("LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB") if img.mode != "RGB" else img


def decode_image(
    data: bytes | str | os.PathLike,
    size: int,
    channels: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
) -> np.ndarray:
    """Decode ``data`` (bytes or a path) to a ``[size, size, channels]`` uint8 array.

    The shorter side is resized to ``size`` and the centre cropped, in one resampling pass
    over the crop box; the EXIF orientation is applied. With ``draft`` a JPEG is first scaled
    down in the DCT domain to the smallest power-of-two reduction still at least ``size`` on
    both sides (within ``DRAFT_TOLERANCE`` of a full decode). Raises ``BadImage`` for anything
    that cannot be used.
    """
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise BadImage(f"{w}x{h} pixels is over the limit of {max_pixels}")
                if min(w, h) < MIN_SIDE:
                    raise BadImage(f"{w}x{h} is too small")
                orientation = img.getexif().get(EXIF_ORIENTATION, 1)
                valid_w, valid_h = float(w), float(h)
                if draft and img.format == "JPEG":
                    want = size * DRAFT_MARGIN
                    drafted = img.draft("RGB" if channels == 3 else "L", (want, want))
                    if drafted is not None:
                        # note: the reduced image is rounded up to whole pixels; its last row
                        # and column are partly padding, so crop within the valid area only.
                        valid_w, valid_h = drafted[1][2], drafted[1][3]
                img = _to_rgb(img)
                if channels == 1:
                    img = img.convert("L")
                side = min(valid_w, valid_h)
                left, top = (valid_w - side) / 2, (valid_h - side) / 2
                box = (left, top, left + side, top + side)
                img = img.resize((size, size), RESAMPLE, box=box)
                # note: a centred square crop and resize commute with the eight EXIF
                # orientations, so orient the small result instead of the full image.
                if orientation in ORIENT:
                    img = img.transpose(ORIENT[orientation])
                arr = np.asarray(img, dtype=np.uint8)
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError) as exc:
        raise BadImage(f"cannot decode: {decode_error(exc)}") from None
    return arr.reshape(size, size, channels)


def decode_error(exc: BaseException) -> str:
    """Why Pillow could not decode an image, without the name of its in-memory file object.

    note: for bytes Pillow's own message names a ``<_io.BytesIO object at 0x...>``, which says
    nothing; the caller names the image (file path or LMDB key) instead.
    """
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow reads"
    return str(exc)


class ImageSource(torch.utils.data.Dataset):
    """Base class: a sequence of encoded images with names, decoded on access."""

    def __init__(self, size: int, channels: int = 3) -> None:
        self.size = size
        self.channels = channels
        self.draft = True  # JPEG reduction in the DCT domain (see decode_image)
        self._reported: set[int] = set()

    def name(self, index: int) -> str:
        raise NotImplementedError

    def read(self, index: int) -> bytes | str:
        """The encoded image (bytes) or a path to it."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short name for the run folder."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> torch.Tensor | None:
        try:
            data = self.read(index)
            if isinstance(data, bytes) and not data:
                raise BadImage("empty record")
            arr = decode_image(data, self.size, self.channels, draft=self.draft)
        except (BadImage, OSError) as exc:
            if index not in self._reported:  # note: per worker process, so at most once each
                self._reported.add(index)
                log.warning("skipping bad image %s: %s", self.name(index), exc)
            return None
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class ImageFolder(ImageSource):
    """Every image file under a folder, searched recursively, in sorted order."""

    def __init__(self, root: str | os.PathLike, size: int, channels: int = 3) -> None:
        super().__init__(size, channels)
        self.root = Path(root)
        self.files = sorted(scan_images(self.root))
        if not self.files:
            raise WganError(f"no image files found under {self.root}; point --data at a folder "
                            "of images, a CSV list, an LSUN LMDB folder or a pack file")

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return str(self.root / self.files[index])

    def read(self, index: int) -> str:
        return str(self.root / self.files[index])

    def describe(self) -> str:
        return self.root.resolve().name


def walk_folders(root: str | os.PathLike, progress=None) -> Iterator[tuple[str, list[str]]]:
    """``(prefix, sorted file names)`` for each folder under ``root``, in a stable order: a
    folder's files, then its subfolders in sorted order. ``prefix`` is the folder's POSIX
    path relative to ``root`` with a trailing ``/`` (empty for ``root`` itself).

    Hidden names (a leading dot) are skipped, so are temporary files of unfinished writes.
    Links to folders are not followed. ``progress`` (a tqdm bar) counts the files.
    note: no ``stat`` per file and no ``Path`` objects; that is what makes it fast.
    """
    stack = [""]
    while stack:
        prefix = stack.pop()
        folder = os.path.join(root, prefix) if prefix else os.fspath(root)
        files, dirs = [], []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        dirs.append(name)
                    else:
                        files.append(name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            continue
        files.sort()
        yield prefix, files
        dirs.sort(reverse=True)
        stack.extend(f"{prefix}{d}/" for d in dirs)
        if progress is not None:
            progress.update(len(files))


def has_image_suffix(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_SUFFIXES


def scan_images(root: Path) -> Iterator[str]:
    """Relative paths (POSIX style) of files under ``root`` with an image suffix; no hidden ones."""
    for prefix, names in walk_folders(root):
        yield from (prefix + name for name in names if has_image_suffix(name))


def safe_join(root: Path, relative: str, where: str) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` that would leave ``root``."""
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or relative.startswith(("/", "\\")):
        raise WganError(f"{where}: path {relative!r} leaves the image root; list paths relative "
                        "to the root (or pass --allow-outside-root if you trust this list)")
    return root / rel


def _csv_rows(f, path: Path):
    """``(line, row)`` for each CSV row, ``line`` the row's first line in the file.

    note: strict parsing, so an unclosed quote is an error at the line where the quoted field
    starts, instead of one field that swallows the rest of the file.
    """
    reader = csv.reader(f, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise WganError(f"{path}:{start}: CSV error: a quoted field starts on this line "
                                "and is never closed; close or remove the quote") from None
            raise WganError(f"{path}:{start}: CSV error: {exc}; quote the path as CSV does "
                            "(double any \" inside it)") from None
        yield start, row


class CsvImages(ImageSource):
    """Images listed in a CSV file of ``relative_path,label`` rows below an image root.

    A first row of ``path,label`` (any case) is taken as a header. Paths must stay inside the
    root unless ``allow_outside_root``.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        size: int,
        channels: int = 3,
        root: str | os.PathLike | None = None,
        allow_outside_root: bool = False,
    ) -> None:
        super().__init__(size, channels)
        self.csv_path = Path(csv_path)
        self.root = Path(root) if root is not None else self.csv_path.parent
        self.paths: list[str] = []
        self.labels: list[int] = []
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            for line_no, row in _csv_rows(f, self.csv_path):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if line_no == 1 and row[0].strip().lower() in ("path", "relative_path", "file"):
                    continue
                where = f"{self.csv_path}:{line_no}"
                if len(row) > 2:
                    raise WganError(f"{where}: expected 'path,label', got {len(row)} fields; "
                                    "quote paths that contain commas")
                if not allow_outside_root:
                    safe_join(self.root, row[0], where)
                try:
                    label = int(row[1]) if len(row) == 2 and row[1].strip() else 0
                except ValueError:
                    raise WganError(f"{where}: label {row[1]!r} is not an integer") from None
                self.paths.append(row[0])
                self.labels.append(label)
        if not self.paths:
            raise WganError(f"{self.csv_path} lists no images")
        first = self.paths[:10]
        if not any(os.path.exists(self.root / p) for p in first):
            raise WganError(f"{self.csv_path}: none of the first {len(first)} files it lists "
                            f"exist under {self.root}; pass --data-root with the folder the "
                            "list was made from")

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return str(self.root / self.paths[index])

    def read(self, index: int) -> str:
        return str(self.root / self.paths[index])

    def describe(self) -> str:
        return self.csv_path.stem


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("WGAN_CACHE_DIR") or os.path.join(base, "wgan"))


def is_lmdb_dir(path: Path) -> bool:
    return path.is_dir() and (path / "data.mdb").is_file()


def open_lmdb(path: Path):
    """A read-only LMDB environment that works on read-only folders and in many processes."""
    import lmdb

    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False,
                        max_readers=2048, subdir=True)
    except lmdb.Error as exc:
        raise WganError(f"{path} is not a readable LMDB folder ({exc}); pass the folder that "
                        "holds data.mdb") from None
    # note: LMDB maps the file; reading a page past the end of a cut file kills the process
    # with SIGBUS, so compare the file with the last page its meta page claims first.
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = (Path(path) / "data.mdb").stat().st_size
    if size < needed:
        env.close()
        raise WganError(f"{Path(path) / 'data.mdb'} is truncated ({size:,} of at least "
                        f"{needed:,} bytes); download or unzip it again")
    return env


class KeyList(Sequence[bytes]):
    """Byte-string keys packed into two arrays (all bytes, and where each key starts).

    note: a list of millions of ``bytes`` objects would be copied page by page into every
    DataLoader worker as reference counts change; two numpy arrays are shared untouched.
    """

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        assert blob.dtype == np.uint8 and offsets.dtype == np.int64, "packed keys: bad dtypes"
        assert len(offsets) >= 1 and offsets[-1] == len(blob), "packed keys: bad offsets"
        self.blob = blob
        self.offsets = offsets

    @classmethod
    def from_keys(cls, keys: Sequence[bytes]) -> KeyList:
        lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        blob = np.frombuffer(b"".join(keys), dtype=np.uint8).copy()
        return cls(blob, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.blob[self.offsets[index]:self.offsets[index + 1]].tobytes()

    def save(self, path: Path) -> None:
        """Write to ``path`` (a .npz) via a temporary file and a rename."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, blob=self.blob, offsets=self.offsets)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> KeyList:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["blob"], z["offsets"])


def _key_cache_file(data_file: Path, cache_dir: str | os.PathLike | None) -> Path:
    st = data_file.stat()
    ident = f"{data_file.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return cache / "lmdb-keys" / (hashlib.sha1(ident.encode()).hexdigest() + ".npz")


def lmdb_keys(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> KeyList:
    """All keys of an LMDB in stored order, read from its leaf pages (a cursor where that
    cannot be vouched for) without reading the pages of values, and cached on disk.

    The cache file is named by the data file's path, size and modification time, and lives in
    ``cache_dir`` (default ``$WGAN_CACHE_DIR`` or ``~/.cache/wgan``), never in the data folder
    or the working directory, so read-only data works; a cache that cannot be written only
    costs a warning.
    """
    path = Path(path)
    if not is_lmdb_dir(path):
        raise WganError(f"{path} is not an LMDB folder (no data.mdb inside)")
    cache_file = _key_cache_file(path / "data.mdb", cache_dir)
    if cache_file.is_file():
        try:
            return KeyList.load(cache_file)
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            log.warning("ignoring unreadable key cache %s: %s", cache_file, exc)

    # List the keys from the B-tree's leaf pages, or else with a cursor.
    env = open_lmdb(path)
    try:
        keys = read_leaf_keys(path / "data.mdb", env.stat())
        if keys is None:
            # note: slower; a cursor touches each value's first page even with values=False.
            with env.begin(write=False) as txn:
                keys = KeyList.from_keys(list(txn.cursor().iternext(keys=True, values=False)))
    finally:
        env.close()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        keys.save(cache_file)
    except OSError as exc:
        log.warning("could not cache LMDB keys in %s: %s", cache_file.parent, exc)
    return keys


class LmdbImages(ImageSource):
    """Images stored as values of an LMDB (LSUN's layout), read directly with no export.

    The environment is opened lazily in each process that reads (each DataLoader worker gets
    its own), read-only and without a lock file.
    """

    def __init__(self, path: str | os.PathLike, size: int, channels: int = 3,
                 cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(size, channels)
        self.path = Path(path)
        if not is_lmdb_dir(self.path):
            raise WganError(f"{self.path} is not an LMDB folder (no data.mdb inside)")
        self.keys = lmdb_keys(self.path, cache_dir)
        if not self.keys:
            raise WganError(f"LMDB {self.path} holds no records")
        self._env = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_env"] = None
        return state

    def name(self, index: int) -> str:
        return f"{self.path}[{self.keys[index].decode('ascii', 'replace')}]"

    def read(self, index: int) -> bytes:
        if self._env is None or self._pid != os.getpid():
            self._env, self._pid = open_lmdb(self.path), os.getpid()
        with self._env.begin(write=False, buffers=False) as txn:
            value = txn.get(self.keys[index])
        if value is None:
            raise BadImage("key has no value")
        return value

    def describe(self) -> str:
        return self.path.resolve().name


class ArrayImages(torch.utils.data.Dataset):
    """Images already in memory as a ``[N, C, S, S]`` uint8 array (for example the demo digits)."""

    def __init__(self, images: np.ndarray, name: str) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 array of shape [N, C, S, S]")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self._name = name
        self.size = images.shape[-1]
        self.channels = images.shape[1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]

    def describe(self) -> str:
        return self._name

    def on_device(self, device: torch.device) -> torch.Tensor | None:
        """The images copied to a CUDA ``device`` (once), or None when they take more than half
        of its free memory."""
        held = getattr(self, "_device_images", None)
        if held is not None and held.device == device:
            return held
        images = self.images
        free, _ = torch.cuda.mem_get_info(device)
        if images.nbytes > free // 2:
            log.info("training images (%.0f MB) stay in host memory: more than half the free "
                     "memory of %s", images.nbytes / 2**20, device)
            return None
        held = torch.empty(images.shape, dtype=images.dtype, device=device)
        step = max(1, (256 << 20) // max(1, images[0].nbytes))  # copy about 256 MB at a time
        for i in range(0, len(images), step):
            held[i:i + step].copy_(images[i:i + step])
        log.info("training images (%.0f MB) copied to %s", images.nbytes / 2**20, device)
        self._device_images = held
        return held


def open_source(
    path: str | os.PathLike,
    size: int,
    channels: int = 3,
    data_root: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
) -> torch.utils.data.Dataset:
    """The right dataset for ``path``: pack file, LMDB folder, CSV list, or a folder of images."""
    from wgan.pack import PackImages, is_pack

    p = Path(path)
    if not p.exists():
        raise WganError(f"data path {p} does not exist; pass a folder of images, a CSV list, "
                        "an LSUN LMDB folder or a pack file")
    if p.is_file() and is_pack(p):
        return PackImages(p, size, channels)
    if is_lmdb_dir(p):
        return LmdbImages(p, size, channels)
    if p.is_file() and p.suffix.lower() == ".csv":
        return CsvImages(p, size, channels, data_root, allow_outside_root)
    if p.is_dir():
        return ImageFolder(p, size, channels)
    raise WganError(f"cannot read {p} as training data: expected a folder of images, a .csv "
                    "list, an LMDB folder holding data.mdb, or a pack file from wgan pack")


class InfiniteBatchSampler(torch.utils.data.Sampler):
    """Endless batches of indices: a fresh seeded permutation each pass over the data.

    The stream is a pure function of ``(seed, length)``, so a run that resumes at ``start``
    batches sees exactly the batches it would have seen. With ``world_size > 1`` the global
    stream is cut into global batches and rank ``r`` takes the ``r``-th contiguous slice of
    each, as the trainer does with the noise: image ``k`` of a global batch meets fake ``k``
    (WGAN-GP pairs them) whatever the number of processes, and no two ranks share an image
    within a global batch.
    """

    def __init__(self, length: int, batch_size: int, seed: int, start: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.length)

    def __iter__(self) -> Iterator[list[int]]:
        per_global_batch = self.batch_size * self.world_size
        epoch, perm = -1, np.empty(0, dtype=np.int64)
        for global_batch in itertools.count(self.start):
            first = global_batch * per_global_batch + self.rank * self.batch_size
            batch = []
            for pos in range(first, first + self.batch_size):
                e, offset = divmod(pos, self.length)
                if e != epoch:
                    epoch, perm = e, self._permutation(e)
                batch.append(int(perm[offset]))
            yield batch

    def __len__(self) -> int:  # a DataLoader asks; the stream is endless
        return 2**62


def collate_skip_bad(items: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, int]:
    """Stack the good images of a batch; return them with the number of bad ones skipped."""
    good = [x for x in items if x is not None]
    bad = len(items) - len(good)
    if not good:
        return torch.empty(0, dtype=torch.uint8), bad
    return torch.stack(good), bad


def to_model_range(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], done on the training device."""
    return batch.float().mul_(2.0 / 255.0).sub_(1.0)


def from_model_range(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounding to nearest."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def batch_stream(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    seed: int,
    start: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Endless ``(uint8 [B, C, S, S] batch, bad images skipped)`` pairs, from batch ``start``.

    Arrays (in memory or a memory-mapped pack file) are gathered batch by batch, with no
    decoding and no worker processes; on a CUDA ``device`` an array that takes at most half the
    free device memory is copied there once and gathered there. Everything else goes through
    one DataLoader whose workers live as long as the stream (the sampler never ends, so no
    epoch restarts). With ``pin_memory`` host batches arrive in page-locked memory, ready for
    a non-blocking copy.
    """
    sampler = InfiniteBatchSampler(len(dataset), batch_size, seed, start, rank, world_size)
    if isinstance(dataset, ArrayImages):
        images = dataset.images
        if device is not None and torch.device(device).type == "cuda":
            images = dataset.on_device(torch.device(device)) or images
        return _gather_batches(images, sampler, pin_memory)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        # note: the workers' seeds come from here, not from torch's global generator, so
        # opening a stream draws nothing from it (a resume then leaves it as it was saved).
        generator=torch.Generator().manual_seed(hash((seed, start, rank)) % 2**63),
    )
    return iter(loader)


def _gather_batches(images: torch.Tensor, sampler: InfiniteBatchSampler,
                    pin_memory: bool) -> Iterator[tuple[torch.Tensor, int]]:
    """``images[batch]`` for each batch of the sampler, on the device that holds ``images``."""
    for idx in sampler:
        index = torch.tensor(idx, dtype=torch.int64)
        if images.device.type != "cpu":
            # note: a pageable host-to-device copy would wait for the queued GPU work.
            index = index.pin_memory().to(images.device, non_blocking=True)
            yield images.index_select(0, index), 0
        elif pin_memory:
            out = torch.empty((len(idx), *images.shape[1:]), dtype=images.dtype, pin_memory=True)
            yield torch.index_select(images, 0, index, out=out), 0
        else:
            yield torch.index_select(images, 0, index), 0
