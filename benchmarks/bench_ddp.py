"""Throughput of `wgan train` on 1 and N processes (torchrun, DDP): images per second and
scaling efficiency, measured in one run.

    python benchmarks/bench_ddp.py [--quick] [--nproc 2] [--device cpu|cuda] [--data DIR]

Each configuration trains the paper's algorithm (n_critic 5, no warm-up) on real photos for
a few ticks; the time per generator step is read from the run's stats.jsonl, skipping the
first tick (start-up). Images per second count the real images the critics read. On a CPU
each process gets cores / N threads, so the total compute is the same in every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "flowers-128"


def run(nproc: int, args, outdir: Path) -> dict:
    threads = max(1, (os.cpu_count() or 1) // nproc) if args.device == "cpu" else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    train = ["-m", "wgan", "--quiet", "train", "--data", str(args.data), "--outdir", str(outdir),
             "--image-size", str(args.size), "--batch-size", str(args.batch), "--no-warmup",
             "--steps", str(args.ticks * args.tick), "--tick-every", str(args.tick),
             "--sample-every", "0", "--snapshot-every", "0", "--workers", "1",
             "--device", args.device]
    if nproc == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", *train]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    run_dir = next(outdir.iterdir())
    stats = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    sec = sum(s["sec_per_step"] for s in stats[1:]) / len(stats[1:])
    return {"nproc": nproc, "threads": threads, "sec_per_step": sec,
            "images_per_s": 5 * args.batch / sec}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer, smaller steps (< 3 minutes)")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = p.parse_args()
    args.size, args.batch = (32, 64) if args.quick else (64, 64)
    args.tick, args.ticks = (4, 3) if args.quick else (10, 4)
    if not args.data.exists():
        sys.exit(f"error: {args.data} does not exist; pass --data DIR of images")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"device {args.device}" + (f" ({torch.cuda.get_device_name()})"
                                      if args.device == "cuda" else ""))
    print(f"setting: {args.size}x{args.size}, global batch {args.batch}, n_critic 5, "
          f"{args.ticks} ticks of {args.tick} generator steps (first tick skipped)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, args.nproc):
            rows.append(run(nproc, args, Path(tmp) / f"n{nproc}"))
            r = rows[-1]
            print(f"  {r['nproc']} process(es) x {r['threads']} thread(s): "
                  f"{r['sec_per_step']:.3f} s/step, {r['images_per_s']:.0f} images/s")
    speedup = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    efficiency = speedup / args.nproc if args.device == "cuda" else speedup
    print(f"speedup {speedup:.2f}x with {args.nproc} processes; scaling efficiency "
          f"{efficiency:.2f} ({'per device' if args.device == 'cuda' else 'same total cores'})")
    print(f"RESULT speedup={speedup:.3f} efficiency={efficiency:.3f}")


if __name__ == "__main__":
    main()
