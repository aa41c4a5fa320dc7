"""An LMDB's keys read straight from the leaf pages of its B-tree, without touching values.

Listing the 3 million keys of an LSUN release through a cursor is slow even with
``values=False``: LMDB still resolves each value's first overflow page, one random page
fault per record, and Python builds one object per key. Here the branch pages are walked
to find the leaf pages, only those are read (in file order), and every key is cut out of
them with a few NumPy operations into two arrays: all key bytes, and where each key starts.

The layout read is LMDB's on-disk format version 1 on a 64-bit little-endian machine
(every LMDB 0.9 release). Anything else, or any inconsistency with the counts LMDB itself
reports, returns None and the caller falls back to a cursor, so a surprise here costs
time, never a wrong key list.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_MAGIC = 0xBEEFC0DE
_META = struct.Struct("<IIQQ")  # magic, version, fixed address, map size
_DB = struct.Struct("<IHHQQQQQ")  # pad (the page size, in the free DB's record), flags,
#                                   depth, branch pages, leaf pages, overflow pages,
#                                   entries, root page
_PAGE = struct.Struct("<QHHHH")  # page number, pad, flags, lower, upper
_P_BRANCH, _P_LEAF, _P_LEAF2 = 0x01, 0x02, 0x20
_HEADER = _PAGE.size  # 16 bytes before the node offsets
_NODE = 8  # node header: two halves of the data size (or child page), flags, key size


def _read_page(fd: int, pgno: int, psize: int) -> bytes:
    page = os.pread(fd, psize, pgno * psize)
    if len(page) != psize:
        raise ValueError(f"page {pgno} lies past the end of the file")
    return page


def _main_db(fd: int) -> tuple[int, tuple]:
    """The page size and the main database's record from the newer of the two meta pages."""
    first = os.pread(fd, 256, 0)
    psize = _DB.unpack_from(first, _HEADER + _META.size)[0]
    if psize < 512 or psize & (psize - 1):
        raise ValueError(f"implausible page size {psize}")
    best = None
    for pgno in (0, 1):
        page = os.pread(fd, 256, pgno * psize)
        magic, version, _, _ = _META.unpack_from(page, _HEADER)
        if magic != _MAGIC or version != 1:
            raise ValueError("not an LMDB version-1 file")
        main = _DB.unpack_from(page, _HEADER + _META.size + _DB.size)
        txnid = struct.unpack_from("<Q", page, _HEADER + _META.size + 2 * _DB.size + 8)[0]
        if best is None or txnid > best[0]:
            best = (txnid, main)
    return psize, best[1]


def leaf_pages(fd: int, psize: int, root: int, depth: int) -> list[int]:
    """Leaf page numbers in key order, from the root down through ``depth - 1`` branch levels."""
    level = [root]
    for _ in range(depth - 1):
        children = []
        for pgno in level:
            page = _read_page(fd, pgno, psize)
            _, _, flags, lower, _ = _PAGE.unpack_from(page)
            if not flags & _P_BRANCH:
                raise ValueError(f"page {pgno} should be a branch page")
            ptrs = struct.unpack_from(f"<{(lower - _HEADER) // 2}H", page, _HEADER)
            for ptr in ptrs:
                lo, hi, top = struct.unpack_from("<HHH", page, ptr)
                children.append(lo | hi << 16 | top << 32)
        level = children
    return level


def _read_pages(fd: int, pgnos: list[int], psize: int, threads: int = 16) -> np.ndarray:
    """The pages as rows of one array, in the order given, read in file order, by ``threads``
    threads at once unless the first pages show that they come from memory.

    note: a disk answers many scattered reads at once far faster than one after another;
    ``pread`` lets go of the GIL, so threads are enough.
    """
    from concurrent.futures import ThreadPoolExecutor

    pages = np.empty((len(pgnos), psize), dtype=np.uint8)
    order = np.argsort(pgnos, kind="stable")

    def read(rows: np.ndarray) -> None:
        for row in rows.tolist():
            if os.preadv(fd, [pages[row]], pgnos[row] * psize) != psize:
                raise ValueError(f"page {pgnos[row]} lies past the end of the file")

    # Read a first few pages alone: if they come from the page cache, threads only cost.
    first, rest = order[:64], order[64:]
    start = time.perf_counter()
    read(first)
    cached = time.perf_counter() - start < 50e-6 * len(first)
    parts = np.array_split(rest, max(1, min(threads, len(rest) // 64)))
    if cached or len(parts) == 1:
        read(rest)
    else:
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(read, parts))
    return pages


def read_leaf_keys(data_file: str | os.PathLike, stat: dict):
    """All keys of the main database as a ``KeyList``, or None where this reader cannot vouch
    for the answer. ``stat`` is ``Environment.stat()`` from LMDB, for cross-checks."""
    from wgan.dataset import KeyList

    if sys.byteorder != "little" or not hasattr(os, "pread"):
        return None
    try:
        fd = os.open(Path(data_file), os.O_RDONLY)
    except OSError:
        return None
    try:
        if hasattr(os, "posix_fadvise"):
            # note: no read-ahead: around each leaf page lie values, which we do not want.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        psize, (_, flags, depth, _, n_leaf, _, entries, root) = _main_db(fd)
        if (flags, depth, n_leaf, entries, psize) != (
                0, stat["depth"], stat["leaf_pages"], stat["entries"], stat["psize"]):
            log.debug("LMDB %s: meta page differs from LMDB's own figures", data_file)
            return None
        if entries == 0:
            return KeyList(np.zeros(0, np.uint8), np.zeros(1, np.int64))
        leaves = leaf_pages(fd, psize, root, depth)
        if len(leaves) != n_leaf:
            return None

        pages = _read_pages(fd, leaves, psize)
    except (OSError, ValueError, struct.error) as exc:
        log.debug("LMDB %s: reading leaf pages failed (%s); using a cursor", data_file, exc)
        return None
    finally:
        os.close(fd)
    return _cut_keys(pages, psize, entries)


def _cut_keys(pages: np.ndarray, psize: int, entries: int):
    """Cut every key out of ``[n_pages, psize]`` leaf pages, with bounds checked."""
    from wgan.dataset import KeyList

    # note: LMDB keeps page headers and nodes on even offsets, so every 16-bit field read
    # here is an element of the pages viewed as uint16.
    flat = pages.reshape(-1)
    words = flat.view("<u2")
    n_pages = len(pages)
    page_start = np.arange(n_pages, dtype=np.int64) * psize
    flags = words[(page_start + 10) // 2].astype(np.int64)
    lower = words[(page_start + 12) // 2].astype(np.int64)
    if (flags & _P_LEAF == 0).any() or (flags & _P_LEAF2).any():
        return None
    counts = (lower - _HEADER) // 2
    if (counts < 1).any() or counts.sum() != entries:
        return None

    # Node offsets: the n-th node of a page is at the n-th uint16 after the page header.
    page_of = np.repeat(np.arange(n_pages), counts)
    slot = np.arange(entries) - np.repeat(np.cumsum(counts) - counts, counts)
    node = words[(page_start[page_of] + _HEADER) // 2 + slot].astype(np.int64)
    if ((node & 1).any() or (node < _HEADER + 2 * counts[page_of]).any()
            or (node + _NODE > psize).any()):
        return None
    node += page_start[page_of]
    key_size = words[(node + 6) // 2].astype(np.int64)
    key_start = node + _NODE
    if (key_start + key_size > page_start[page_of] + psize).any():
        return None

    # Gather the key bytes into one array.
    offsets = np.zeros(entries + 1, dtype=np.int64)
    np.cumsum(key_size, out=offsets[1:])
    size = int(key_size[0])
    if (key_size == size).all():  # the usual case: keys of one length, such as LSUN's hashes
        rows = np.lib.stride_tricks.sliding_window_view(flat, size)
        blob = rows[key_start].reshape(-1)  # note: one row copy per key, not one per byte
    else:
        blob = flat[np.repeat(key_start - offsets[:-1], key_size) + np.arange(offsets[-1])]
    return KeyList(blob, offsets)
