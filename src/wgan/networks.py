"""The generator and critic networks of the WGAN paper: DCGAN-style convolutional nets and MLPs.

Shapes: a generator maps latent codes ``z`` of shape ``[N, nz]`` (or ``[N, nz, 1, 1]``) to images
``[N, C, H, W]`` in [-1, 1]; a critic maps images to one unbounded score per image, shape ``[N]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

ARCHITECTURES = ("dcgan", "mlp")
CRITIC_NORMS = ("batch", "layer", "none")
GENERATOR_NORMS = ("batch", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a generator and a critic; stored in every snapshot."""

    image_size: int = 64
    channels: int = 3
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    n_extra_layers: int = 0
    g_arch: str = "dcgan"
    c_arch: str = "dcgan"
    g_norm: str = "batch"
    c_norm: str = "batch"
    g_constant_filters: bool = False
    mlp_hidden: int = 512

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def check_image_size(size: int) -> None:
    """Raise ValueError unless ``size`` is a power of two from 16 to 256."""
    if size < 16 or size > 256 or size & (size - 1):
        raise ValueError(f"image size must be a power of two from 16 to 256, got {size}")


def _critic_norm(kind: str, channels: int) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # note: normalises each sample over (C, H, W), the usual LayerNorm for conv critics.
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return None
    raise ValueError(f"unknown critic norm {kind!r}; choose from {CRITIC_NORMS}")


class DCGANGenerator(nn.Module):
    """Transposed-convolution generator: [N, nz] -> 4x4 -> ... -> [N, C, S, S], tanh output.

    With ``constant_filters`` every hidden layer has ``ngf`` channels (the WGAN paper's
    weaker generator); otherwise channels halve as the resolution doubles (DCGAN).
    """

    def __init__(
        self,
        image_size: int = 64,
        nz: int = 100,
        ngf: int = 64,
        channels: int = 3,
        n_extra_layers: int = 0,
        norm: str = "batch",
        constant_filters: bool = False,
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        if norm not in GENERATOR_NORMS:
            raise ValueError(f"unknown generator norm {norm!r}; choose from {GENERATOR_NORMS}")
        self.nz = nz
        n_up = int(math.log2(image_size)) - 2  # 4x4 -> image_size takes n_up doublings
        width = ngf if constant_filters else ngf * 2 ** (n_up - 1)
        use_bn = norm == "batch"

        # note: no conv has a bias, with or without BatchNorm, as in the paper's code.
        def block(conv: nn.Module, out: int) -> list[nn.Module]:
            layers = [conv]
            if use_bn:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            return layers

        layers = block(nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), width)
        for _ in range(n_up - 1):
            out = width if constant_filters else width // 2
            layers += block(nn.ConvTranspose2d(width, out, 4, 2, 1, bias=False), out)
            width = out
        for _ in range(n_extra_layers):
            layers += block(nn.Conv2d(width, width, 3, 1, 1, bias=False), width)
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class DCGANCritic(nn.Module):
    """Strided-convolution critic: [N, C, S, S] -> ... -> 4x4 -> [N] unbounded scores."""

    def __init__(
        self,
        image_size: int = 64,
        ndf: int = 64,
        channels: int = 3,
        n_extra_layers: int = 0,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        _critic_norm(norm, 1)  # validate the name early

        def block(conv: nn.Conv2d, out: int) -> list[nn.Module]:
            norm_layer = _critic_norm(norm, out)
            conv.bias = None if norm_layer is not None else conv.bias
            return [conv] + ([norm_layer] if norm_layer is not None else []) + [
                nn.LeakyReLU(0.2, inplace=True)
            ]

        layers: list[nn.Module] = [
            nn.Conv2d(channels, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        size, width = image_size // 2, ndf
        for _ in range(n_extra_layers):
            layers += block(nn.Conv2d(width, width, 3, 1, 1), width)
        while size > 4:
            layers += block(nn.Conv2d(width, width * 2, 4, 2, 1), width * 2)
            size, width = size // 2, width * 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).reshape(x.shape[0])


class MLPGenerator(nn.Module):
    """The paper's MLP generator: 4 ReLU layers of ``hidden`` units, linear output of ``shape``."""

    def __init__(self, nz: int, shape: tuple[int, ...], hidden: int = 512) -> None:
        super().__init__()
        self.nz = nz
        self.shape = tuple(shape)
        self.main = nn.Sequential(
            nn.Linear(nz, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, math.prod(self.shape)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.nz)).reshape(z.shape[0], *self.shape)


class MLPCritic(nn.Module):
    """The paper's MLP critic: 3 ReLU layers of ``hidden`` units, then one linear score."""

    def __init__(self, shape: tuple[int, ...], hidden: int = 512) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(math.prod(shape), hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x.reshape(x.shape[0], -1)).reshape(x.shape[0])


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation, as the paper's code applies it: conv weights N(0, 0.02), norm
    weights N(1, 0.02) and bias 0. Linear layers (the MLP nets) keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_generator(cfg: ModelConfig) -> nn.Module:
    """The generator described by ``cfg``, initialised."""
    if cfg.g_arch == "dcgan":
        net: nn.Module = DCGANGenerator(
            cfg.image_size, cfg.nz, cfg.ngf, cfg.channels, cfg.n_extra_layers, cfg.g_norm,
            cfg.g_constant_filters,
        )
    elif cfg.g_arch == "mlp":
        shape = (cfg.channels, cfg.image_size, cfg.image_size)
        net = MLPGenerator(cfg.nz, shape, cfg.mlp_hidden)
    else:
        raise ValueError(f"unknown generator architecture {cfg.g_arch!r}; choose {ARCHITECTURES}")
    init_weights(net)
    return net


def build_critic(cfg: ModelConfig) -> nn.Module:
    """The critic described by ``cfg``, initialised."""
    if cfg.c_arch == "dcgan":
        net: nn.Module = DCGANCritic(
            cfg.image_size, cfg.ndf, cfg.channels, cfg.n_extra_layers, cfg.c_norm
        )
    elif cfg.c_arch == "mlp":
        net = MLPCritic((cfg.channels, cfg.image_size, cfg.image_size), cfg.mlp_hidden)
    else:
        raise ValueError(f"unknown critic architecture {cfg.c_arch!r}; choose {ARCHITECTURES}")
    init_weights(net)
    return net


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
