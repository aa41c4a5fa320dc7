"""Drawing images from a generator: each image depends only on its seed and the weights."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from wgan.checkpoint import make_folder
from wgan.dataset import from_model_range
from wgan.errors import WganError

# The most seeds one command draws (one PNG per seed), and the most images in one grid or walk.
MAX_SEEDS = 100_000
MAX_GRID = 4096


def parse_seeds(text: str, limit: int = MAX_SEEDS) -> list[int]:
    """'0-63', '1,5,9' or '0-3,10' -> a list of seeds, in order; at most ``limit`` of them.

    The count is checked before any list is built, so a huge range fails at once.
    """
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise WganError(f"--seeds: {part!r} is not a seed or range like 0-63")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise WganError(f"--seeds: range {part!r} runs backwards")
        ranges.append((lo, hi))
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > limit:
        lo = ranges[0][0]
        raise WganError(f"--seeds {text} asks for {count:,} images, over the {limit:,} one "
                        f"command draws; split the job, e.g. --seeds {lo}-{lo + limit - 1} "
                        f"then --seeds {lo + limit}-{lo + 2 * limit - 1}")
    return [s for lo, hi in ranges for s in range(lo, hi + 1)]


def noise_for_seeds(seeds: Sequence[int], nz: int) -> torch.Tensor:
    """``[len(seeds), nz]`` latent codes; row i comes from a generator seeded with seeds[i]."""
    rows = [torch.randn(nz, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, nz)


# note: every chunk holds exactly this many codes (padded), so an image is computed in the same
# kernel configuration whatever the requested batch size, and comes out bit-identical.
CHUNK = 16


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, desc: str | None = None) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` images for latent codes ``z`` ``[N, nz]``, in fp32 and eval mode.

    The generator's mode is restored afterwards, and nothing in it changes: eval mode keeps
    BatchNorm's running statistics as they are. With ``desc``, a progress bar counts images.
    """
    from wgan import progress

    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    counter = progress.bar(total=len(z), desc=desc, unit="img", disable=desc is None)
    try:
        out = []
        for start in range(0, len(z), CHUNK):
            chunk = z[start:start + CHUNK]
            n = len(chunk)
            if n < CHUNK:
                chunk = torch.cat([chunk, chunk.new_zeros(CHUNK - n, *chunk.shape[1:])])
            images = generator(chunk.to(device, torch.float32))[:n]
            out.append(from_model_range(images).cpu())
            counter.update(n)
        return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)
    finally:
        counter.close()
        generator.train(was_training)


def save_seed_images(generator: nn.Module, seeds: Sequence[int], out_dir: Path,
                     chunk: int = 256) -> None:
    """One PNG per seed, ``seed<NNNN>.png`` in ``out_dir``, drawn and written ``chunk`` seeds at
    a time so that memory stays bounded whatever the number of seeds."""
    from wgan import images, progress

    counter = progress.bar(total=len(seeds), desc="sampling", unit="img")
    try:
        for start in range(0, len(seeds), chunk):
            part = seeds[start:start + chunk]
            fakes = generate(generator, noise_for_seeds(part, generator.nz))
            for s, img in zip(part, fakes, strict=True):
                images.save_png(images.to_pil(img), out_dir / f"seed{s:04d}.png")
            counter.update(len(part))
    finally:
        counter.close()


WALKS = ("linear", "spherical")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between codes ``a`` and ``b`` ``[nz]`` at fractions ``t`` ``[F]``.

    Weights ``sin((1 - t) w) / sin w`` and ``sin(t w) / sin w``, with ``w`` the angle between
    the codes, keep the walk at the norm typical of Gaussian codes instead of cutting through
    the low-norm middle as a straight line does. Nearly parallel codes fall back to a straight
    line. Returns ``[F, nz]``.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:
        return (a64 + t64 * (b64 - a64)).to(a.dtype)
    so = torch.sin(omega)
    mix = torch.sin((1.0 - t64) * omega) / so * a64 + torch.sin(t64 * omega) / so * b64
    return mix.to(a.dtype)


def walk_codes(seeds: Sequence[int], nz: int, frames: int, walk: str = "spherical") -> torch.Tensor:
    """Latent codes of walks between consecutive seeds: ``[len(seeds) - 1, frames, nz]``.

    Row i walks from seed i's code to seed i+1's. The first and last code of each row are
    exactly the seeds' own codes (as ``noise_for_seeds`` draws them), so the walk's end images
    are the seeds' own samples, bit for bit.
    """
    if walk not in WALKS:
        raise WganError(f"unknown walk {walk!r}; choose from {', '.join(WALKS)}")
    if len(seeds) < 2:
        raise WganError("--interpolate needs at least two seeds, e.g. --seeds 0,7 or 0-3")
    if frames < 2:
        raise WganError(f"--frames must be at least 2 (the two ends), not {frames}")
    ends = noise_for_seeds(seeds, nz)  # [S, nz]
    t = torch.linspace(0.0, 1.0, frames)
    rows = []
    for a, b in zip(ends[:-1], ends[1:], strict=True):
        row = slerp(a, b, t) if walk == "spherical" else a + t[:, None] * (b - a)
        # note: a + 1 * (b - a) need not round back to b, so the ends are set, not computed.
        row[0], row[-1] = a, b
        rows.append(row)
    return torch.stack(rows)


def walk_frames(rows: torch.Tensor) -> list[torch.Tensor]:
    """The walks of ``walk_codes``'s images ``[R, F, C, H, W]`` as one path of ``[C, H, W]``
    frames, seed to seed, each shared end shown once."""
    frames = list(rows[0])
    for row in rows[1:]:
        frames.extend(row[1:])
    return frames


def generate_walk(generator: nn.Module, seeds: Sequence[int], frames: int,
                  walk: str = "spherical") -> torch.Tensor:
    """uint8 images ``[len(seeds) - 1, frames, C, H, W]`` of the walks between the seeds."""
    codes = walk_codes(seeds, generator.nz, frames, walk)
    r, f, nz = codes.shape
    fakes = generate(generator, codes.reshape(r * f, nz))
    return fakes.reshape(r, f, *fakes.shape[1:])


def save_walk(walks: torch.Tensor, out: str | os.PathLike, walk: str,
              frame_ms: int = 80) -> list[Path]:
    """Write ``generate_walk``'s images: ``.png`` a grid (one walk per row), ``.gif`` or
    ``.webp`` an animation through every seed, anything else a folder that gets both."""
    from wgan import images

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".png":
        targets = [out]
    elif suffix in images.ANIMATION_FORMATS:
        targets = [out]
    else:
        targets = [out / f"walk-{walk}.png", out / f"walk-{walk}.gif"]
    r, f = walks.shape[:2]
    make_folder(targets[0].parent, "--out", out if targets[0] == out else None)
    try:
        for path in targets:
            if path.suffix.lower() == ".png":
                images.save_png(images.grid(walks.reshape(r * f, *walks.shape[2:]), f), path)
            else:
                images.save_animation(walk_frames(walks), path, frame_ms,
                                      scale=max(1, 128 // walks.shape[-1]))
    except OSError as exc:
        raise WganError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return targets
