"""The LSUN pipeline against the common recipe, on generated data of realistic size.

    python benchmarks/bench_lsun.py [--quick] [--files N] [--keys N] [--value-bytes B]

Two measurements, each against its baseline in the same run:

- indexing: ``wgan.index.build_index`` (a CSV of every image and a seeded 10% sample) against
  the common recipe: ``Path.glob("**/*.jpg")`` with ``relative_to`` for each file, ``path,0``
  lines, and ``random.sample`` for the 10%. The folder holds N small files in LSUN's export
  layout (``a/b/c/<40 hex>.jpg``; 4,096 folders).
- key listing: ``wgan.dataset.lmdb_keys`` (no values read; the first listing, which also
  writes the cache, and the cached one) against a cursor loop that reads every value. The
  LMDB holds N records of 40-hex keys and values of the size of an LSUN bedroom record.

Indexing runs with the page cache warm (the files were just written). Key listing is timed
three ways: the first listing with the LMDB in the page cache (``keys_ratio``, the same job
as the recipe's), the listing from the key cache that every later run uses
(``keys_cached_ratio``), and the first listing with ``data.mdb`` evicted from the page cache
by ``posix_fadvise`` (``keys_cold_ratio``), as after a fresh download. The full sizes are
1,000,000 files and keys; ``--quick`` uses a tenth.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wgan.dataset import lmdb_keys  # noqa: E402
from wgan.index import build_index  # noqa: E402

JPEG_HEAD = b"\xff\xd8\xff\xe0" + bytes(60)


def hex_keys(n: int) -> list[str]:
    return [hashlib.sha1(i.to_bytes(8, "little")).hexdigest() for i in range(n)]


def make_files(root: Path, n: int) -> None:
    made = set()
    for key in hex_keys(n):
        folder = root / key[0] / key[1] / key[2]
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        fd = os.open(folder / f"{key}.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, JPEG_HEAD)
        os.close(fd)


def make_lmdb(path: Path, n: int, value_bytes: int) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 4 * value_bytes, dtype=np.uint8).tobytes()
    env = lmdb.open(str(path), map_size=int(n * (value_bytes + 4096) * 1.2) + (1 << 26),
                    writemap=True, sync=False)
    keys = sorted(hex_keys(n))
    for start in range(0, n, 10_000):
        with env.begin(write=True) as txn:
            for i in range(start, min(start + 10_000, n)):
                # Sizes vary like real photos: 50% to 150% of the mean.
                size = value_bytes // 2 + (i * 7919) % value_bytes
                off = (i * 104729) % (3 * value_bytes)
                txn.put(keys[i].encode(), noise[off:off + size], append=True)
    env.sync()
    env.close()


def recipe_index(root: Path, csv_path: Path, sample_path: Path) -> int:
    files = [str(p.relative_to(root)) for p in root.glob("**/*.jpg")]
    with open(csv_path, "w") as f:
        for p in files:
            f.write(f"{p},0\n")
    with open(sample_path, "w") as f:
        for p in random.sample(files, len(files) // 10):
            f.write(f"{p},0\n")
    return len(files)


def recipe_keys(path: Path) -> int:
    env = lmdb.open(str(path), readonly=True, lock=False)
    keys = []
    with env.begin() as txn:
        for key, _value in txn.cursor():
            keys.append(key)
    env.close()
    return len(keys)


def evict(path: Path) -> bool:
    """Drop a file's pages from the page cache (no root needed for clean pages)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def timed(func, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = func(*args)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="A tenth of the sizes (< 3 minutes).")
    ap.add_argument("--files", type=int, default=None, help="Files to index [1,000,000].")
    ap.add_argument("--keys", type=int, default=None, help="LMDB records [1,000,000].")
    ap.add_argument("--value-bytes", type=int, default=16_000,
                    help="Mean value size; LSUN bedroom averages about 16 KB a record.")
    ap.add_argument("--repeats", type=int, default=2, help="Best of this many timings.")
    ap.add_argument("--workdir", default=None, help="Where to generate data [a temp folder].")
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    n_files = args.files or 1_000_000 // scale
    n_keys = args.keys or 1_000_000 // scale
    logging.basicConfig(level=logging.WARNING)

    print(f"machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="bench_lsun_", dir=args.workdir))
    try:
        # Indexing.
        t = time.perf_counter()
        make_files(work / "images", n_files)
        print(f"generated {n_files:,} files in {time.perf_counter() - t:.1f} s")
        recipe_times, our_times = [], []
        for r in range(args.repeats):
            dt, n_recipe = timed(recipe_index, work / "images", work / "r.csv", work / "rs.csv")
            recipe_times.append(dt)
            dt, summary = timed(build_index, work / "images", work / "f.csv", 0.1,
                                work / "fs.csv", r, 0, False, False, False)
            our_times.append(dt)
        assert n_recipe == summary.listed == n_files, (n_recipe, summary.listed, n_files)
        recipe_t, our_t = min(recipe_times), min(our_times)
        index_ratio = recipe_t / our_t
        print(f"index {n_files:,} files: recipe {recipe_t:.2f} s, wgan index {our_t:.2f} s, "
              f"ratio {index_ratio:.2f}x")
        # note: deleting many files is slow on a busy disk: another process does it while the
        # LMDB is written, and is waited for before anything is timed.
        cleaner = subprocess.Popen(["rm", "-rf", str(work / "images")])

        # Key listing.
        t = time.perf_counter()
        make_lmdb(work / "db", n_keys, args.value_bytes)
        cleaner.wait()
        env = lmdb.open(str(work / "db"), readonly=True, lock=False)
        size = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        env.close()
        print(f"generated an LMDB of {n_keys:,} records, {size / 1e9:.2f} GB, in "
              f"{time.perf_counter() - t:.1f} s")
        data_file = work / "db" / "data.mdb"
        warm = {"recipe": [], "first": [], "cached": []}
        cold = {"recipe": [], "first": []}
        for r in range(args.repeats):
            dt, n_recipe = timed(recipe_keys, work / "db")
            warm["recipe"].append(dt)
            dt, keys = timed(lmdb_keys, work / "db", work / f"warm{r}")
            warm["first"].append(dt)
            dt, cached = timed(lmdb_keys, work / "db", work / f"warm{r}")
            warm["cached"].append(dt)
            assert n_recipe == len(keys) == len(cached) == n_keys
            if r == 0 and evict(data_file):  # note: once; seconds each on a slow disk
                cold["recipe"].append(timed(recipe_keys, work / "db")[0])
                evict(data_file)
                cold["first"].append(timed(lmdb_keys, work / "db", work / f"cold{r}")[0])
        best = {f"{k}_{n}": min(v) for k, d in (("warm", warm), ("cold", cold))
                for n, v in d.items() if v}
        warm_ratio = best["warm_recipe"] / best["warm_first"]
        cached_ratio = best["warm_recipe"] / best["warm_cached"]
        print(f"list {n_keys:,} keys, page cache warm: recipe (reads values) "
              f"{best['warm_recipe']:.3f} s, lmdb_keys {best['warm_first']:.3f} s "
              f"({warm_ratio:.1f}x), from its cache {best['warm_cached']:.4f} s "
              f"({cached_ratio:.1f}x)")
        if cold["recipe"]:
            cold_ratio = best["cold_recipe"] / best["cold_first"]
            print(f"list {n_keys:,} keys, data.mdb evicted from the page cache: recipe "
                  f"{best['cold_recipe']:.3f} s, lmdb_keys {best['cold_first']:.3f} s "
                  f"({cold_ratio:.1f}x)")
        else:
            cold_ratio = float("nan")
            print("cannot evict files from the page cache here; no cold measurement")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    print(f"RESULT index_ratio={index_ratio:.2f} keys_ratio={warm_ratio:.2f} "
          f"keys_cached_ratio={cached_ratio:.2f} keys_cold_ratio={cold_ratio:.2f}")


if __name__ == "__main__":
    main()
