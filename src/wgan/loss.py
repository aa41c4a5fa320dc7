"""The training objectives: the WGAN paper's critic and generator losses, weight clipping,
the critic-step schedule, WGAN-GP's gradient penalty, and the standard GAN loss.

Scores are the critic's raw outputs, shape ``[N]``, always reduced in fp32.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("wgan", "wgan-gp", "gan")


@dataclass(frozen=True)
class CriticSchedule:
    """How many critic steps precede each generator step.

    The WGAN paper's code trains the critic ``warmup_critic_steps`` (100) times before each of
    the first ``warmup_generator_steps`` (25) generator steps and before every
    ``warmup_every``-th (500th) one, so the critic stays near optimal; ``n_critic`` (5)
    otherwise. ``warmup=False`` gives a constant ``n_critic``.
    """

    n_critic: int = 5
    warmup: bool = True
    warmup_critic_steps: int = 100
    warmup_generator_steps: int = 25
    warmup_every: int = 500

    def critic_steps(self, generator_step: int) -> int:
        if self.warmup and (
            generator_step < self.warmup_generator_steps
            or (self.warmup_every > 0 and generator_step % self.warmup_every == 0)
        ):
            return self.warmup_critic_steps
        return self.n_critic


def wasserstein_estimate(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """mean(D(real)) - mean(D(fake)): the critic's estimate of the Wasserstein distance."""
    return real_scores.float().mean() - fake_scores.float().mean()


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """mean(D(fake)) - mean(D(real)); minimising it maximises the Wasserstein estimate."""
    return fake_scores.float().mean() - real_scores.float().mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-mean(D(G(z)))."""
    return -fake_scores.float().mean()


def gan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """DCGAN's discriminator loss: sigmoid cross-entropy, real labelled 1 and fake 0."""
    real, fake = real_scores.float(), fake_scores.float()
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def gan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """DCGAN's non-saturating generator loss: sigmoid cross-entropy with fake labelled 1."""
    fake = fake_scores.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None,
                     alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP's penalty: mean over samples of (||grad D(x_hat)||_2 - 1)^2.

    ``x_hat = alpha * real + (1 - alpha) * fake`` are random interpolates between paired
    real and fake samples (``alpha``, shape ``[N]``, drawn uniformly unless given); the norm
    is taken per sample over all of its channels and pixels. Computed in fp32 with autocast
    off, so the double backward is not done in reduced precision.
    """
    n = real.shape[0]
    alpha_shape = (n,) + (1,) * (real.dim() - 1)
    if alpha is None:
        alpha = torch.rand(n, device=real.device, generator=generator)
    alpha = alpha.reshape(alpha_shape).float()
    device_type = real.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        x_hat = (alpha * real.float() + (1 - alpha) * fake.detach().float()).requires_grad_(True)
        scores = critic(x_hat).float()
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        norms = grad.reshape(n, -1).norm(2, dim=1)
        return (norms - 1).square().mean()


@torch.no_grad()
def clip_weights_(params: Iterable[torch.Tensor], clip: float) -> None:
    """Clamp every tensor into [-clip, clip] in place, as one fused foreach call per bound."""
    tensors = list(params)
    if not tensors:
        return
    try:
        torch._foreach_clamp_min_(tensors, -clip)
        torch._foreach_clamp_max_(tensors, clip)
    except (AttributeError, RuntimeError):  # note: foreach kernels missing on this backend
        for t in tensors:
            t.clamp_(-clip, clip)
