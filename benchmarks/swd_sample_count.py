"""How the sliced Wasserstein distance depends on the number of images per set.

Two disjoint random halves of flowers-128 (the same distribution) and flowers against
hymenoptera (different photos), at 64 pixels with the paper's settings, for growing set
sizes. Prints each value, its ratio to the value at the largest size measured in this run
(the baseline), and the seconds taken; ends with one RESULT line.

    python benchmarks/swd_sample_count.py --quick     # 64..256 images, about a minute
    python benchmarks/swd_sample_count.py             # 64..2048 images
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from wgan.dataset import open_source
from wgan.metrics import SwdOptions, load_images, swd

DATA = Path(os.environ.get("WGAN_SHARED_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Set sizes 64 to 256 only.")
    parser.add_argument("--size", type=int, default=64, help="Image side in pixels.")
    args = parser.parse_args()
    counts = [64, 128, 256] if args.quick else [64, 128, 256, 512, 1024, 2048]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads (shared machine: timings are under load)")

    flowers = load_images(open_source(DATA / "flowers-128", args.size), 2 * counts[-1], seed=0)
    ants_bees = load_images(open_source(DATA / "hymenoptera", args.size), counts[-1], seed=0)
    rows = []
    for n in counts:
        start = time.perf_counter()
        halves = swd(flowers[:n], flowers[counts[-1]:counts[-1] + n], SwdOptions())
        m = min(n, len(ants_bees))
        across = swd(flowers[:m], ants_bees[:m], SwdOptions())
        rows.append((n, m, halves.mean, across.mean, time.perf_counter() - start))

    base_halves, base_across = rows[-1][2], rows[-1][3]
    print(f"{'images':>6} {'halves':>8} {'/base':>6} {'vs ants+bees':>13} {'(images)':>8} "
          f"{'/base':>6} {'seconds':>8}")
    for n, m, h, a, sec in rows:
        print(f"{n:>6} {h:>8.2f} {h / base_halves:>6.2f} {a:>13.2f} {m:>8} "
              f"{a / base_across:>6.2f} {sec:>8.1f}")
    n, m, h, a, _ = rows[-1]
    print(f"RESULT images={n} swd_halves={h:.2f} swd_across={a:.2f} "
          f"halves_at_64_over_base={rows[0][2] / h:.2f} across_over_halves={a / h:.2f}")


if __name__ == "__main__":
    main()
