"""Generator steps per second of the training step: the plain fp32 loop against ours.

    python benchmarks/bench_train.py [--quick] [--device cpu|cuda] [--batch 64] [--compile]

The setting is the WGAN paper's: 64x64 images, batch 64, ngf = ndf = 64, n_critic 5, no
warm-up, the DCGAN generator and BatchNorm critic. The baseline is Algorithm 1 written
plainly, as the paper's code does it: fp32, default memory format, a Python loop clamping
each critic parameter (after each critic update, so the generator meets a clipped critic),
separate backward passes for the real and the fake batch, for-loop RMSProp. Ours is
`wgan.training.Trainer`, measured with each speed option added in turn so that every
option's share shows. Real batches come from memory:
this measures the step, not the input pipeline (see bench_input.py).

The achieved FLOP rate counts the step's FLOPs with torch.utils.flop_counter and divides by
the measured time; the peak is a large fp32 and bf16 matmul measured in the same run.
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

from wgan.networks import ModelConfig, build_critic, build_generator  # noqa: E402
from wgan.options import build_options  # noqa: E402
from wgan.training import TickStats, Trainer  # noqa: E402

N_CRITIC = 5


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
        for _ in range(N_CRITIC):
            self.critic_step(real)
        self.generator_step()


class Ours:
    """The project's Trainer with the given speed options, driven step by step."""

    def __init__(self, device: torch.device, batch: int, **speed):
        flags = {"image_size": 64, "batch_size": batch, "warmup": False, "workers": 0,
                 "device": str(device), "tick_every": 10**9, **speed}
        self.tmp = tempfile.TemporaryDirectory()
        self.trainer = Trainer(build_options(flags), dataset=None, run_dir=Path(self.tmp.name))
        self.tick = TickStats()

    def step(self, real: torch.Tensor) -> None:
        real = real.contiguous(memory_format=self.trainer.memory_format)
        for _ in range(N_CRITIC):
            self.trainer.critic_step(real, self.tick)
        self.trainer.generator_step(self.tick)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer timed steps (< 3 minutes here)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--compile", action="store_true", help="also time --compile (slow start)")
    args = p.parse_args()
    device = torch.device(args.device)
    warmup, steps = (1, 3) if args.quick else (3, 10)
    if device.type == "cuda":
        warmup, steps = 10, 50

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"machine: {platform.machine()} {name or ''}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, OMP threads {torch.get_num_threads()}, device {device}")
    print(f"setting: 64x64, batch {args.batch}, ngf = ndf = 64, n_critic {N_CRITIC}, no warm-up")
    real = torch.rand(args.batch, 3, 64, 64, device=device) * 2 - 1

    flops = step_flops(device, args.batch, real)
    peak_size = 4096 if device.type == "cuda" else 2048
    peaks = {"fp32": matmul_peak(torch.float32, device, peak_size)}
    if device.type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        peaks["bf16"] = matmul_peak(torch.bfloat16, device, peak_size)
    print(f"step: {flops / 1e9:.1f} GFLOP per generator step; measured matmul peak "
          + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in peaks.items()))

    variants = [
        ("baseline: plain fp32 loop", lambda: PlainWGAN(ModelConfig(), args.batch, device)),
        ("ours fp32 (fused clamp, one backward, foreach RMSProp)",
         lambda: Ours(device, args.batch, precision="fp32", channels_last=False)),
        ("ours fp32 + channels-last",
         lambda: Ours(device, args.batch, precision="fp32", channels_last=True)),
        ("ours bf16", lambda: Ours(device, args.batch, precision="bf16", channels_last=False)),
        ("ours bf16 + channels-last (default)",
         lambda: Ours(device, args.batch, precision="bf16", channels_last=True)),
    ]
    if args.compile:
        variants.append(("ours default + compile",
                         lambda: Ours(device, args.batch, precision="bf16", channels_last=True,
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
    best = min(results.values())
    line = f"RESULT speedup={base / default:.3f} best_speedup={base / best:.3f}"
    line += f" fraction_of_bf16_peak={flops / default / peaks.get('bf16', peaks['fp32']):.3f}"
    print(line)


if __name__ == "__main__":
    main()
