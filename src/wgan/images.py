"""Image grids and PNG writing."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import torch
from PIL import Image

from wgan.checkpoint import atomic_write


def grid(images: torch.Tensor, columns: int | None = None, pad: int = 2) -> Image.Image:
    """A uint8 ``[N, C, H, W]`` batch laid out as one image, row by row."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y:y + h, x:x + w] = arr[i]
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def to_pil(image: torch.Tensor) -> Image.Image:
    """One uint8 ``[C, H, W]`` image."""
    arr = image.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP"}


def save_animation(frames: list[torch.Tensor], path: str | os.PathLike, frame_ms: int = 80,
                   scale: int = 1) -> None:
    """Uint8 ``[C, H, W]`` frames as a looping animated GIF or WebP, chosen by the suffix."""
    fmt = ANIMATION_FORMATS.get(os.path.splitext(str(path))[1].lower())
    assert fmt, f"{path}: an animation must end in .gif or .webp"
    pics = [to_pil(f) for f in frames]
    if scale > 1:
        pics = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pics]
    extra = {"lossless": True} if fmt == "WEBP" else {"optimize": False}
    buf = io.BytesIO()
    pics[0].save(buf, format=fmt, save_all=True, append_images=pics[1:], duration=frame_ms,
                 loop=0, **extra)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
