"""The speed options change rounding only: ours against the plain loop of the benchmark."""

import importlib.util
from pathlib import Path

import pytest
import torch

from wgan.options import build_options
from wgan.training import TickStats, Trainer

spec = importlib.util.spec_from_file_location(
    "bench_train", Path(__file__).parents[1] / "benchmarks" / "bench_train.py")
bench_train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_train)


def losses_of_ours(tmp_path, real, steps, **speed):
    opts = build_options({"image_size": 16, "ngf": 16, "ndf": 16, "batch_size": 16,
                          "warmup": False, "device": "cpu", "workers": 0, **speed})
    trainer = Trainer(opts, None, tmp_path)
    real = real.contiguous(memory_format=trainer.memory_format)
    out = []
    for _ in range(steps):
        for _ in range(5):
            tick = TickStats()
            trainer.critic_step(real, tick)
            out.append(float(tick.loss_critic))
        tick = TickStats()
        trainer.generator_step(tick)
        out.append(float(tick.loss_generator))
    return torch.tensor(out), trainer


def losses_of_plain(real, steps):
    plain = bench_train.PlainWGAN(build_options({"image_size": 16, "ngf": 16, "ndf": 16})
                                  .model_config(), 16, torch.device("cpu"))
    out = []
    for _ in range(steps):
        out += [plain.critic_step(real) for _ in range(5)]
        out.append(plain.generator_step())
    return torch.tensor(out), plain


def test_fp32_equals_the_plain_loop(tmp_path):
    real = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ours, trainer = losses_of_ours(tmp_path, real, 3, precision="fp32", channels_last=False)
    plain, baseline = losses_of_plain(real, 3)
    torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-6)
    for a, b in zip(trainer.generator.parameters(), baseline.generator.parameters(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("speed", [{"precision": "fp32", "channels_last": True},
                                   {"precision": "bf16", "channels_last": True}])
def test_speed_options_change_only_rounding(tmp_path, speed):
    from wgan.options import bf16_supported

    if speed["precision"] == "bf16" and not bf16_supported(torch.device("cpu")):
        pytest.skip("no bf16 on this CPU")
    real = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ours, _ = losses_of_ours(tmp_path, real, 3, **speed)
    plain, _ = losses_of_plain(real, 3)
    # bf16 keeps 8 bits of mantissa: relative error ~ 2^-8 per rounding, a few roundings deep.
    tol = 1e-4 if speed["precision"] == "fp32" else 5e-2
    scale = plain.abs().max()
    assert (ours - plain).abs().max() <= tol * scale, (ours, plain)
    # ...and the losses are not all equal to begin with (the comparison means something).
    assert plain.std() > 0


@pytest.mark.parametrize("device, bf16, want", [("cpu", True, "bf16"), ("cpu", False, "fp32"),
                                                ("cuda", True, "bf16"), ("cuda", False, "fp16")])
def test_auto_precision(monkeypatch, device, bf16, want):
    from wgan import options

    monkeypatch.setattr(options, "resolve_device", lambda name: torch.device(device))
    monkeypatch.setattr(options, "bf16_supported", lambda d: bf16)
    assert build_options({}).precision == want
