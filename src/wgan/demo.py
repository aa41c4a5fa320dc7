"""The built-in demo data: scikit-learn's 1,797 real handwritten digits, no download needed."""

from __future__ import annotations

import numpy as np
from PIL import Image

from wgan.dataset import ArrayImages
from wgan.errors import WganError


def load_digits(size: int = 16) -> ArrayImages:
    """The 8x8 digits (17 grey levels) scaled to 0..255 and resized to ``size`` (bicubic)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise WganError("the demo needs scikit-learn's bundled digits: pip install "
                        "'wgan[demo]' (or scikit-learn)") from None
    raw = sk_load_digits().images  # [1797, 8, 8], values 0..16
    out = np.empty((len(raw), 1, size, size), dtype=np.uint8)
    for i, digit in enumerate(raw):
        img = Image.fromarray(np.round(digit * (255.0 / 16.0)).astype(np.uint8), "L")
        out[i, 0] = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC))
    return ArrayImages(out, "digits")
