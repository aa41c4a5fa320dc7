"""Generator steps per second of the training step: the plain fp32 loop against ours.

    python benchmarks/bench_train.py [--quick] [--device cpu|cuda] [--batch 64 [512 ...]]
                                     [--compile] [--quality [--quality-steps N]]

The setting is the WGAN paper's: 64x64 images, batch 64, ngf = ndf = 64, n_critic 5, no
warm-up, the DCGAN generator and BatchNorm critic. The baseline is Algorithm 1 written
plainly, as the paper's code does it: fp32, default memory format, a Python loop clamping
each critic parameter (after each critic update, so the generator meets a clipped critic),
separate backward passes for the real and the fake batch, for-loop RMSProp. Ours is
`wgan.training.Trainer`, measured with each speed option added in turn so that every
option's share shows. Real batches come from memory:
this measures the step, not the input pipeline (see bench_input.py).

The achieved FLOP rate counts the step's FLOPs with torch.utils.flop_counter and divides by
the measured time; the peak is a large fp32 and bf16 matmul measured in the same run. The
ceiling is the speedup ours would reach if its every FLOP ran at that bf16 matmul rate: the
most any change that keeps the computation can give on this machine.

With --quality the speed options are also checked for what they train: the plain loop and
ours, from the same seed and on the same real batches, train for a fixed number of generator
steps on real photos (flowers-128, 32x32, ngf = ndf = 32, the paper's hyperparameters), and
the sliced Wasserstein distance of each one's samples to held-out photos is measured. The
plain loop from a second seed shows how far two equally good runs differ.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wgan.dataset import ImageFolder, to_model_range  # noqa: E402
from wgan.metrics import load_images, swd  # noqa: E402
from wgan.networks import ModelConfig, build_critic, build_generator  # noqa: E402
from wgan.options import build_options  # noqa: E402
from wgan.sampling import generate, noise_for_seeds  # noqa: E402
from wgan.training import TickStats, Trainer  # noqa: E402

N_CRITIC = 5
DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers-128"


class PlainWGAN:
    """Algorithm 1 of the WGAN paper, written the plain way (the baseline)."""

    def __init__(self, cfg: ModelConfig, batch: int, device: torch.device, seed: int = 0):
        torch.manual_seed(seed)
        self.generator = build_generator(cfg).to(device)
        self.critic = build_critic(cfg).to(device)
        self.opt_g = torch.optim.RMSprop(self.generator.parameters(), lr=5e-5, foreach=False)
        self.opt_c = torch.optim.RMSprop(self.critic.parameters(), lr=5e-5, foreach=False)
        self.noise = torch.Generator(device).manual_seed(seed)
        self.batch, self.nz, self.device = batch, cfg.nz, device
        for p in self.critic.parameters():
            p.data.clamp_(-0.01, 0.01)

    def latent(self) -> torch.Tensor:
        return torch.randn(self.batch, self.nz, 1, 1, device=self.device, generator=self.noise)

    def critic_step(self, real: torch.Tensor) -> float:
        self.opt_c.zero_grad()
        loss_real = -self.critic(real).mean()
        loss_real.backward()
        with torch.no_grad():
            fake = self.generator(self.latent())
        loss_fake = self.critic(fake).mean()
        loss_fake.backward()
        self.opt_c.step()
        for p in self.critic.parameters():
            p.data.clamp_(-0.01, 0.01)
        return (loss_real + loss_fake).item()

    def generator_step(self) -> float:
        for p in self.critic.parameters():
            p.requires_grad_(False)
        self.opt_g.zero_grad()
        loss = -self.critic(self.generator(self.latent())).mean()
        loss.backward()
        self.opt_g.step()
        for p in self.critic.parameters():
            p.requires_grad_(True)
        return loss.item()

    def step(self, real: torch.Tensor) -> None:
        self.step_with([real] * N_CRITIC)

    def step_with(self, reals: list[torch.Tensor]) -> None:
        for real in reals:
            self.critic_step(real)
        self.generator_step()

    def sampler(self) -> torch.nn.Module:
        return self.generator


class Ours:
    """The project's Trainer with the given speed options, driven step by step."""

    def __init__(self, device: torch.device, batch: int, **flags):
        flags = {"image_size": 64, "batch_size": batch, "warmup": False, "workers": 0,
                 "device": str(device), "tick_every": 10**9, **flags}
        self.tmp = tempfile.TemporaryDirectory()
        self.trainer = Trainer(build_options(flags), dataset=None, run_dir=Path(self.tmp.name))
        self.tick = TickStats()

    def step(self, real: torch.Tensor) -> None:
        self.step_with([real] * N_CRITIC)

    def step_with(self, reals: list[torch.Tensor]) -> None:
        for real in reals:
            real = real.contiguous(memory_format=self.trainer.memory_format)
            self.trainer.critic_step(real, self.tick)
        self.trainer.generator_step(self.tick)

    def sampler(self) -> torch.nn.Module:
        return self.trainer.sampling_net()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, real: torch.Tensor, warmup: int, steps: int, device) -> float:
    """Median seconds per generator step (each with N_CRITIC critic steps)."""
    for _ in range(warmup):
        model.step(real)
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.step(real)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int) -> float:
    """FLOP/s of an n x n matmul in ``dtype``, best of a few."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def step_flops(device: torch.device, batch: int, real: torch.Tensor) -> int:
    """FLOPs of one generator step of the algorithm (5 critic steps + 1 generator step)."""
    plain = PlainWGAN(ModelConfig(), batch, device)
    counter = FlopCounterMode(display=False)
    with counter:
        plain.step(real)
    return counter.get_total_flops()


def speed(device: torch.device, batch: int, quick: bool, compile_too: bool) -> dict[str, float]:
    """Time the baseline and each variant of ours at ``batch``; print a table; the ratios."""
    warmup, steps = (1, 3) if quick else (3, 10)
    if device.type == "cuda":
        warmup, steps = 10, 50
    print(f"\nsetting: 64x64, batch {batch}, ngf = ndf = 64, n_critic {N_CRITIC}, no warm-up")
    real = torch.rand(batch, 3, 64, 64, device=device) * 2 - 1

    flops = step_flops(device, batch, real)
    peak_size = 4096 if device.type == "cuda" else 2048
    peaks = {"fp32": matmul_peak(torch.float32, device, peak_size)}
    if device.type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        peaks["bf16"] = matmul_peak(torch.bfloat16, device, peak_size)
    print(f"step: {flops / 1e9:.1f} GFLOP per generator step; measured matmul peak "
          + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in peaks.items()))

    variants = [
        ("baseline: plain fp32 loop", lambda: PlainWGAN(ModelConfig(), batch, device)),
        ("ours fp32 (fused clamp, one backward, foreach RMSProp)",
         lambda: Ours(device, batch, precision="fp32", channels_last=False)),
        ("ours fp32 + channels-last",
         lambda: Ours(device, batch, precision="fp32", channels_last=True)),
        ("ours bf16", lambda: Ours(device, batch, precision="bf16", channels_last=False)),
        ("ours bf16 + channels-last (default)",
         lambda: Ours(device, batch, precision="bf16", channels_last=True)),
    ]
    if compile_too:
        variants.append(("ours default + compile",
                         lambda: Ours(device, batch, precision="bf16", channels_last=True,
                                      compile=True)))
    results = {}
    for label, make in variants:
        model = make()
        sec = time_steps(model, real, warmup + (3 if "compile" in label else 0), steps, device)
        results[label] = sec
        peak = peaks["fp32" if "fp32" in label or "baseline" in label else "bf16"]
        print(f"  {label:<58} {sec:7.3f} s/step  {1 / sec:7.2f} steps/s  "
              f"{results[variants[0][0]] / sec:5.2f}x  {flops / sec / peak:6.1%} of peak")
    base = results[variants[0][0]]
    default = results["ours bf16 + channels-last (default)"]
    fastest = flops / peaks.get("bf16", peaks["fp32"])
    print(f"  ceiling: every FLOP at the bf16 matmul rate would take {fastest:.3f} s/step = "
          f"{base / fastest:.2f}x the baseline")
    return {"speedup": base / default, "best_speedup": base / min(results.values()),
            "fraction_of_bf16_peak": fastest / default, "ceiling": base / fastest}


def photo_split(data: Path, size: int, held_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every decodable photo under ``data`` as uint8 ``[N, 3, size, size]``: train, held out."""
    folder = ImageFolder(data, size)
    every = load_images(folder, len(folder), seed=0)
    order = torch.randperm(len(every), generator=torch.Generator().manual_seed(0))
    return every[order[held_out:]], every[order[:held_out]]


def train_fixed(model, train: torch.Tensor, gen_steps: int, batch: int,
                device: torch.device) -> None:
    """``gen_steps`` generator steps of Algorithm 1, each critic step on a fresh real batch;
    the batches are drawn from a fixed seed, so every model sees the same ones."""
    draw = torch.Generator().manual_seed(1)
    for _ in range(gen_steps):
        reals = [to_model_range(train[torch.randint(len(train), (batch,), generator=draw)])
                 .to(device) for _ in range(N_CRITIC)]
        model.step_with(reals)


def quality(device: torch.device, data: Path, gen_steps: int) -> dict[str, float]:
    """SWD to held-out photos after the same short training: plain loop against ours."""
    size, width, batch = 32, 32, 64
    train, held = photo_split(data, size, held_out=512)
    flags = {"image_size": size, "ngf": width, "ndf": width}
    cfg = build_options(flags).model_config()
    z = noise_for_seeds(range(len(held)), cfg.nz)
    floor = swd(train[: len(held)], held).mean
    print(f"\nquality: {gen_steps} generator steps on {len(train)} photos of {data.name}, "
          f"{size}x{size}, ngf = ndf = {width}, batch {batch}; SWD x1e3 of {len(held)} samples "
          f"to {len(held)} held-out photos (real against held-out: {floor:.2f})")
    runs = {
        "plain fp32 loop, seed 0": lambda: PlainWGAN(cfg, batch, device, seed=0),
        "ours (default options), seed 0": lambda: Ours(device, batch, seed=0, **flags),
        "plain fp32 loop, seed 1": lambda: PlainWGAN(cfg, batch, device, seed=1),
    }
    values = {}
    for label, make in runs.items():
        model = make()
        t0 = time.perf_counter()
        train_fixed(model, train, gen_steps, batch, device)
        values[label] = swd(generate(model.sampler(), z), held).mean
        print(f"  {label:<32} SWD {values[label]:7.2f}  ({time.perf_counter() - t0:.0f} s)")
    plain, ours, other = values.values()
    spread = abs(other - plain) / plain
    print(f"  ours / plain = {ours / plain:.3f}; two seeds of the plain loop differ by "
          f"{spread:.1%}")
    return {"quality_ratio": ours / plain, "seed_spread": spread}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer timed steps (< 3 minutes here)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, nargs="+",
                   help="batch sizes to time [default: 64, and 512 on a GPU]")
    p.add_argument("--compile", action="store_true", help="also time --compile (slow start)")
    p.add_argument("--quality", action="store_true",
                   help="also train plain and ours for a fixed number of steps on real photos "
                   "and compare the samples' SWD to held-out photos")
    p.add_argument("--quality-steps", type=int,
                   help="generator steps of that training [default: 150 with --quick, else 500]")
    p.add_argument("--data", type=Path, default=DEFAULT_PHOTOS,
                   help="a folder of photos for --quality [default: ../shared/data/flowers-128]")
    args = p.parse_args()
    device = torch.device(args.device)
    batches = args.batch or ([64, 512] if device.type == "cuda" else [64])
    if args.quality and not args.data.is_dir():
        sys.exit(f"error: {args.data} is not a folder of photos; pass --data DIR")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"machine: {platform.machine()} {name or ''}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, OMP threads {torch.get_num_threads()}, device {device}")
    line = "RESULT"
    for batch in batches:
        tag = "" if batch == batches[0] else f"_b{batch}"
        for key, value in speed(device, batch, args.quick, args.compile).items():
            line += f" {key}{tag}={value:.3f}"
    if args.quality:
        steps = args.quality_steps or (150 if args.quick else 500)
        for key, value in quality(device, args.data, steps).items():
            line += f" {key}={value:.3f}"
    print(line)


if __name__ == "__main__":
    main()
