"""Which objective wins on real photos for the same CPU time: wgan, wgan-gp and gan side by side.

    python benchmarks/bench_quality.py [--quick] [--budget SECONDS] [--out DIR] [--data DIR]

Each objective trains the DCGAN generator and its own critic (the presets' defaults: the
paper's clipped BatchNorm critic with RMSProp for wgan, a LayerNorm critic with Adam for
wgan-gp, DCGAN's discriminator with Adam for gan) on flowers-128 at 32x32, batch 64, for the
same wall-clock budget. At fixed intervals the sliced Wasserstein distance (SWD, x1e3, the
mean over pyramid levels) between generated images and held-out real photos is measured; the
held-out photos are never trained on. Evaluation time is not counted in the budget. The
reference row is SWD between the training photos and the held-out ones: the floor a perfect
generator would reach at this sample count.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wgan import images  # noqa: E402
from wgan.dataset import ArrayImages, ImageFolder, batch_stream  # noqa: E402
from wgan.metrics import SwdOptions, load_images, swd  # noqa: E402
from wgan.options import build_options  # noqa: E402
from wgan.sampling import generate, noise_for_seeds  # noqa: E402
from wgan.training import TickStats, Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "flowers-128"
LOSSES = ("wgan", "wgan-gp", "gan")


def split(data: Path, size: int, held_out: int, seed: int = 0):
    """Every decodable photo as uint8, split into a training array and a held-out array."""
    folder = ImageFolder(data, size)
    every = load_images(folder, len(folder), seed=seed)
    order = np.random.default_rng(seed).permutation(len(every))
    held = every[order[:held_out]]
    train = every[order[held_out:]]
    return ArrayImages(train.numpy(), f"{data.name} (training part)"), held


def train_for(loss: str, train: ArrayImages, held: torch.Tensor, budget: float, evals: int,
              swd_opts: SwdOptions, workdir: Path) -> tuple[list[tuple[float, int, float]], Path]:
    """Train one objective for ``budget`` seconds; SWD against ``held`` at ``evals`` points."""
    opts = build_options({"loss": loss, "image_size": 32, "batch_size": 64, "workers": 0,
                          "device": "cpu", "tick_every": 10**9, "outdir": str(workdir)})
    run_dir = workdir / loss
    run_dir.mkdir()
    trainer = Trainer(opts, train, run_dir)
    stream = batch_stream(train, opts.batch_size, opts.seed)
    z = noise_for_seeds(range(len(held)), opts.nz)
    tick = TickStats()
    curve = []
    spent, next_eval = 0.0, budget / evals
    while True:
        # Train until the next evaluation point (the clock stops for evaluation).
        t0 = time.perf_counter()
        while spent + (time.perf_counter() - t0) < next_eval:
            for _ in range(trainer.schedule.critic_steps(trainer.counters.step)):
                trainer.critic_step(trainer._next_batch(stream, tick), tick)
            trainer.generator_step(tick)
            trainer.counters.step += 1
        spent += time.perf_counter() - t0

        # Measure.
        fakes = generate(trainer.sample_generator(), z)
        value = swd(fakes, held, swd_opts).mean
        curve.append((spent, trainer.counters.step, value))
        print(f"  {loss:<8} {spent:6.0f} s  step {trainer.counters.step:5d}  SWD {value:7.2f}",
              flush=True)
        if len(curve) == evals:
            break
        next_eval += budget / evals
    grid = run_dir / f"{loss}-final.png"
    images.save_png(images.grid(fakes[:64]), grid)
    return curve, grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="25 s per objective, 3 measurements, 256 held-out (< 3 minutes)")
    p.add_argument("--budget", type=float, help="seconds of training per objective")
    p.add_argument("--evals", type=int, help="SWD measurements per objective [default: 5]")
    p.add_argument("--held-out", type=int, help="held-out photos (and samples) [default: 512]")
    p.add_argument("--out", type=Path, help="folder for the final sample grids")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--losses", default=",".join(LOSSES), help="comma-separated subset")
    args = p.parse_args()
    losses = [name for name in args.losses.split(",") if name]
    if not set(losses) <= set(LOSSES):
        sys.exit(f"error: --losses takes {', '.join(LOSSES)}")
    budget = args.budget or (25.0 if args.quick else 600.0)
    args.evals = args.evals or (3 if args.quick else 5)
    args.held_out = args.held_out or (256 if args.quick else 512)
    if not args.data.exists():
        sys.exit(f"error: {args.data} does not exist; pass --data DIR of images")
    torch.manual_seed(0)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"OMP threads {torch.get_num_threads()}")
    train, held = split(args.data, 32, args.held_out)
    swd_opts = SwdOptions()
    floor = swd(train.images[: len(held)], held, swd_opts).mean
    print(f"data: {len(train)} training and {len(held)} held-out photos from {args.data.name}, "
          f"32x32; {budget:.0f} s of training per objective")
    print(f"  reference: SWD(training photos, held-out photos) = {floor:.2f}")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for loss in losses:
            curve, grid = train_for(loss, train, held, budget, args.evals, swd_opts, Path(tmp))
            results[loss] = curve
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                target = args.out / grid.name
                target.write_bytes(grid.read_bytes())
                print(f"  grid: {target}")

    print("\n| measurement | " + " | ".join(f"SWD {loss} (s, step)" for loss in losses) + " |")
    print("| ---: | " + " | ".join("---:" for _ in losses) + " |")
    for i in range(args.evals):
        cells = [f"{results[loss][i][2]:.1f} ({results[loss][i][0]:.0f} s, "
                 f"{results[loss][i][1]})" for loss in losses]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    print(f"reference floor (real vs real): {floor:.2f}")
    final = {loss.replace("-", "_"): results[loss][-1][2] for loss in losses}
    print("RESULT " + " ".join(f"swd_{k}={v:.3f}" for k, v in final.items())
          + f" swd_real={floor:.3f}")


if __name__ == "__main__":
    main()
