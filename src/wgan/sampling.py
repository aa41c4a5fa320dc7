"""Drawing images from a generator: each image depends only on its seed and the weights."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from wgan.dataset import from_model_range
from wgan.errors import WganError


def parse_seeds(text: str) -> list[int]:
    """'0-63', '1,5,9' or '0-3,10' -> a list of seeds, in order."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise WganError(f"--seeds: {part!r} is not a seed or range like 0-63")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise WganError(f"--seeds: range {part!r} runs backwards")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise WganError("--seeds: no seeds given")
    return seeds


def noise_for_seeds(seeds: Sequence[int], nz: int) -> torch.Tensor:
    """``[len(seeds), nz]`` latent codes; row i comes from a generator seeded with seeds[i]."""
    rows = [torch.randn(nz, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, nz)


# note: every chunk holds exactly this many codes (padded), so an image is computed in the same
# kernel configuration whatever the requested batch size, and comes out bit-identical.
CHUNK = 16


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` images for latent codes ``z`` ``[N, nz]``, in fp32 and eval mode.

    The generator's mode is restored afterwards, and nothing in it changes: eval mode keeps
    BatchNorm's running statistics as they are.
    """
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        out = []
        for start in range(0, len(z), CHUNK):
            chunk = z[start:start + CHUNK]
            n = len(chunk)
            if n < CHUNK:
                chunk = torch.cat([chunk, chunk.new_zeros(CHUNK - n, *chunk.shape[1:])])
            images = generator(chunk.to(device, torch.float32))[:n]
            out.append(from_model_range(images).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)
    finally:
        generator.train(was_training)
