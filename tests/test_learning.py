"""A learning test that can fail: the paper's MLP nets fit a 2-D mixture of Gaussians."""

import math

import torch

from wgan.networks import MLPCritic, MLPGenerator
from wgan.options import build_options
from wgan.training import TickStats, Trainer

CENTRES = 2.0 * torch.tensor([[math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)]
                              for k in range(8)])


def mixture(n: int, gen: torch.Generator) -> torch.Tensor:
    """n points from 8 Gaussians (std 0.05) on a circle of radius 2."""
    return CENTRES[torch.randint(0, 8, (n,), generator=gen)] + 0.05 * torch.randn(
        n, 2, generator=gen)


def sliced_wasserstein_2d(a: torch.Tensor, b: torch.Tensor, directions: int = 64) -> float:
    d = torch.randn(2, directions, generator=torch.Generator().manual_seed(7))
    d = d / d.norm(dim=0)
    return ((a @ d).sort(0).values - (b @ d).sort(0).values).abs().mean().item()


def test_wgan_fits_a_mixture_of_gaussians(tmp_path):
    opts = build_options({"device": "cpu", "precision": "fp32", "batch_size": 256, "lr": 2e-3,
                          "clip": 0.1, "warmup": False, "nz": 2, "seed": 0})
    trainer = Trainer(opts, None, tmp_path)
    torch.manual_seed(0)
    trainer.set_networks(MLPGenerator(2, (2,), hidden=64), MLPCritic((2,), hidden=64))
    data_gen = torch.Generator().manual_seed(1)
    held_out = mixture(2000, torch.Generator().manual_seed(6))
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(5))

    def distance() -> float:
        with torch.no_grad():
            return sliced_wasserstein_2d(trainer.generator(z), held_out)

    start = distance()
    tick = TickStats()
    for step in range(400):
        for _ in range(trainer.schedule.critic_steps(step)):
            trainer.critic_step(mixture(256, data_gen), tick)
        trainer.generator_step(tick)
    end = distance()
    assert end < 0.35 * start, (start, end)
    # The critic's Wasserstein estimate is positive: real scores above fake ones.
    assert tick.wasserstein.item() / tick.critic_steps > 0
