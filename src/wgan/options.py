"""One resolved options object per training run, the preset table, and config-file merging.

Precedence, lowest first: field defaults, the preset named by ``cfg``, a JSON config file,
then explicit command-line flags. ``resolve`` fills in every derived value (learning rate,
optimizer, clip, device, precision) so the saved ``training_options.json`` says exactly what ran.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wgan.errors import WganError
from wgan.loss import LOSSES
from wgan.networks import (
    ARCHITECTURES,
    CRITIC_NORMS,
    GENERATOR_NORMS,
    ModelConfig,
    check_image_size,
)


def opt(help: str, type: Any = None, choices: tuple | None = None, flag: str | None = None,
        cli: bool = True) -> dict:
    """Field metadata from which the command line's options are built."""
    return {"help": help, "type": type, "choices": choices, "flag": flag, "cli": cli}


@dataclass
class TrainOptions:
    # Data and output.
    data: str | None = field(default=None, metadata=opt(
        "Training images: a folder (searched recursively), a CSV list of path,label rows, "
        "an LSUN LMDB folder, or a pack file made by wgan pack (fastest).", type=str))
    data_root: str | None = field(default=None, metadata=opt(
        "Folder that CSV paths are relative to [default: the CSV's folder].", type=str))
    allow_outside_root: bool = field(default=False, metadata=opt(
        "Trust CSV paths that leave the image root (absolute paths, '..').",
        flag="--allow-outside-root/--no-allow-outside-root"))
    outdir: str = field(default="runs", metadata=opt("Folder that holds the numbered run folders."))
    desc: str | None = field(default=None, metadata=opt(
        "Run folder description [default: data, loss and size].", type=str))
    cfg: str = field(default="paper", metadata=opt(
        "Preset of options (see README); flags and --config override it.", choices=None))

    # Model.
    image_size: int = field(default=64, metadata=opt("Image side in pixels: 16, 32, 64, 128, 256."))
    channels: int = field(default=3, metadata=opt("Image channels: 3 (RGB) or 1 (grey).",
                                                  choices=(1, 3)))
    nz: int = field(default=100, metadata=opt("Latent code size."))
    ngf: int = field(default=64, metadata=opt("Generator width."))
    ndf: int = field(default=64, metadata=opt("Critic width."))
    n_extra_layers: int = field(default=0, metadata=opt("Extra 3x3 conv layers in both nets."))
    g_arch: str = field(default="dcgan", metadata=opt("Generator architecture.",
                                                      choices=ARCHITECTURES))
    c_arch: str = field(default="dcgan", metadata=opt("Critic architecture.",
                                                      choices=ARCHITECTURES))
    g_norm: str = field(default="batch", metadata=opt("Generator normalisation.",
                                                      choices=GENERATOR_NORMS))
    c_norm: str | None = field(default=None, metadata=opt(
        "Critic normalisation [default: batch; layer for wgan-gp].", type=str,
        choices=CRITIC_NORMS))
    g_constant_filters: bool = field(default=False, metadata=opt(
        "Same width in every generator layer.",
        flag="--g-constant-filters/--no-g-constant-filters"))
    mlp_hidden: int = field(default=512, metadata=opt("Units per layer of the MLP nets."))

    # Algorithm.
    loss: str = field(default="wgan", metadata=opt("Objective: the paper's clipped WGAN, "
                                                   "WGAN-GP, or the standard GAN loss.",
                                                   choices=LOSSES))
    batch_size: int = field(default=64, metadata=opt("Images per batch (critic and generator)."))
    steps: int = field(default=100_000, metadata=opt("Generator steps to train for."))
    n_critic: int | None = field(default=None, metadata=opt(
        "Critic steps per generator step [default: 5; 1 for gan, as DCGAN trains].", type=int))
    warmup: bool | None = field(default=None, metadata=opt(
        "The paper's critic warm-up: 100 critic steps for each of the first 25 generator steps "
        "and every 500th [default: on for wgan].", type=bool, flag="--warmup/--no-warmup"))
    warmup_critic_steps: int = field(default=100, metadata=opt("Critic steps in warm-up."))
    warmup_generator_steps: int = field(default=25, metadata=opt(
        "Generator steps at the start that get warm-up critic steps."))
    warmup_every: int = field(default=500, metadata=opt(
        "Also warm up before every this many-th generator step (0: never)."))
    optimizer: str | None = field(default=None, metadata=opt(
        "Optimizer [default: rmsprop for wgan, adam otherwise].", type=str,
        choices=("rmsprop", "adam")))
    lr: float | None = field(default=None, metadata=opt(
        "Learning rate of both nets [default: 5e-5 wgan, 1e-4 wgan-gp, 2e-4 gan].", type=float))
    beta1: float | None = field(default=None, metadata=opt(
        "Adam beta1 [default: 0 wgan-gp, 0.5 gan].", type=float))
    beta2: float | None = field(default=None, metadata=opt(
        "Adam beta2 [default: 0.9 wgan-gp, 0.999 gan].", type=float))
    clip: float | None = field(default=None, metadata=opt(
        "Clip critic weights to [-clip, clip] [default: 0.01 for wgan, off otherwise].",
        type=float))
    gp_weight: float = field(default=10.0, metadata=opt("Gradient penalty weight (wgan-gp)."))
    ema_decay: float = field(default=0.0, metadata=opt(
        "Decay of an EMA copy of the generator used for samples and snapshots (0: off)."))
    seed: int = field(default=0, metadata=opt("Random seed."))

    # Speed.
    device: str = field(default="auto", metadata=opt("auto, cpu, cuda or cuda:N."))
    precision: str = field(default="auto", metadata=opt(
        "Compute precision: auto (bf16 where supported, else fp16 on GPUs, fp32 on CPUs), "
        "fp32, bf16, fp16.",
        choices=("auto", "fp32", "bf16", "fp16")))
    channels_last: bool = field(default=True, metadata=opt(
        "Channels-last memory format for conv nets.", flag="--channels-last/--no-channels-last"))
    compile: bool = field(default=False, metadata=opt(
        "torch.compile the networks (minutes of compiling first; falls back to eager when "
        "the compiler is missing; not with wgan-gp's double backward).",
        flag="--compile/--no-compile"))
    workers: int = field(default=-1, metadata=opt(
        "Data loader worker processes (-1: one per CPU core, up to 8)."))

    # Run folder chores.
    tick_every: int = field(default=50, metadata=opt(
        "Generator steps per tick: one stats line and one console line."))
    sample_every: int = field(default=500, metadata=opt("Generator steps between sample grids."))
    snapshot_every: int = field(default=5000, metadata=opt(
        "Generator steps between snapshots and training states."))
    keep_states: int = field(default=3, metadata=opt("Training states to keep (newest)."))
    grid_size: int = field(default=64, metadata=opt("Images in each sample grid."))
    max_bad_fraction: float = field(default=0.01, metadata=opt(
        "Stop when more than this share of images read so far could not be decoded."))
    sync_bn: bool = field(default=False, metadata=opt(
        "With several GPUs, BatchNorm statistics over the global batch (SyncBatchNorm).",
        flag="--sync-bn/--no-sync-bn"))
    on_divergence: str = field(default="stop", metadata=opt(
        "When a loss turns NaN or infinite: stop, or roll back to the last training state "
        "with fresh noise (at most --max-rollbacks times).", choices=("stop", "rollback")))
    max_rollbacks: int = field(default=3, metadata=opt("Roll-backs allowed in one process."))
    tensorboard: bool = field(default=False, metadata=opt(
        "Also write TensorBoard events (scalars, sample grids) to <run>/tensorboard; needs "
        "the tensorboard extra.", flag="--tensorboard/--no-tensorboard"))

    # Quality metrics measured during training (see docs/metrics.md).
    metrics: str | None = field(default=None, metadata=opt(
        "Metrics to measure while training, comma separated: swd, wasserstein, fid, kid "
        "[default: none].", type=str))
    metric_every: int | None = field(default=None, metadata=opt(
        "Generator steps between measurements, 0: only at the end [default: "
        "--snapshot-every].", type=int))
    metric_num: int = field(default=1024, metadata=opt(
        "Images per set for metrics measured while training."))

    # Filled in by resolve().
    resolved_device: str = field(default="", metadata=opt("", cli=False))

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            image_size=self.image_size, channels=self.channels, nz=self.nz, ngf=self.ngf,
            ndf=self.ndf, n_extra_layers=self.n_extra_layers, g_arch=self.g_arch,
            c_arch=self.c_arch, g_norm=self.g_norm, c_norm=self.c_norm or "batch",
            g_constant_filters=self.g_constant_filters, mlp_hidden=self.mlp_hidden,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The preset table: each entry overrides the defaults above.
PRESETS: dict[str, dict[str, Any]] = {
    # The WGAN paper: DCGAN generator and critic, RMSProp 5e-5, clip 0.01, n_critic 5.
    "paper": {},
    # The paper's counterpart with the standard GAN loss (DCGAN: Adam 2e-4, beta1 0.5).
    "paper-gan": {"loss": "gan"},
    # Generator without BatchNorm and with a constant number of filters (the paper's Fig. 5).
    "paper-nobn": {"g_norm": "none", "g_constant_filters": True},
    "paper-nobn-gan": {"g_norm": "none", "g_constant_filters": True, "loss": "gan"},
    # 4-layer ReLU MLP generator with 512 units (the paper's Fig. 6).
    "paper-mlp": {"g_arch": "mlp", "mlp_hidden": 512},
    "paper-mlp-gan": {"g_arch": "mlp", "mlp_hidden": 512, "loss": "gan"},
    # WGAN-GP as in Gulrajani et al.'s Algorithm 1 (Adam 1e-4, betas 0 and 0.9, LayerNorm critic).
    "wgan-gp": {"loss": "wgan-gp"},
    # WGAN-GP with DCGAN's beta1 of 0.5.
    "wgan-gp-dcgan": {"loss": "wgan-gp", "beta1": 0.5},
    # The CPU demo on handwritten digits (see README).
    "demo": {
        "image_size": 16, "channels": 1, "ngf": 32, "ndf": 32, "steps": 5000,
        "tick_every": 100, "sample_every": 500, "snapshot_every": 1000, "workers": 0,
    },
}

LOSS_DEFAULTS = {
    "wgan": {"optimizer": "rmsprop", "lr": 5e-5, "clip": 0.01, "warmup": True, "c_norm": "batch",
             "n_critic": 5},
    "wgan-gp": {"optimizer": "adam", "lr": 1e-4, "beta1": 0.0, "beta2": 0.9, "clip": 0.0,
                "warmup": False, "c_norm": "layer", "n_critic": 5},
    "gan": {"optimizer": "adam", "lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "clip": 0.0,
            "warmup": False, "c_norm": "batch", "n_critic": 1},
}


def option_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainOptions) if f.metadata.get("cli", True)]


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Options from a JSON file (for example a run's training_options.json)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise WganError(f"config file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise WganError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WganError(f"config file {path} must hold a JSON object of option names")
    fields = {f.name: f for f in dataclasses.fields(TrainOptions)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise WganError(f"config file {path}: unknown options {', '.join(unknown)}")
    data.pop("resolved_device", None)
    for name, value in data.items():
        f = fields[name]
        kind = f.metadata["type"] or type(f.default)
        if kind is bool or f.metadata["flag"]:
            ok = isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok and not (value is None and f.default is None):
            raise WganError(f"config file {path}: {name} must be of type {kind.__name__}, got "
                            f"{value!r}")
    return data


def build_options(flags: dict[str, Any], config: dict[str, Any] | None = None) -> TrainOptions:
    """Merge preset, config file and explicit flags (``None`` = not given) and resolve."""
    config = config or {}
    given = {k: v for k, v in flags.items() if v is not None}
    cfg = given.get("cfg", config.get("cfg", "paper"))
    if cfg not in PRESETS:
        raise WganError(f"unknown --cfg {cfg!r}; choose from {', '.join(PRESETS)}")
    merged = {**PRESETS[cfg], **config, **given, "cfg": cfg}
    opts = resolve(TrainOptions(**merged))
    check_unused_flags(given, opts)
    return opts


def check_unused_flags(given: dict[str, Any], o: TrainOptions) -> None:
    """Refuse a model flag given on the command line that the chosen architectures ignore.

    Only flags given explicitly, and with a value other than the default, are refused: a
    config file (often a run's saved training_options.json) holds every option.
    """
    # (ignored option, why: the architecture options that make it so)
    ignored: list[tuple[str, str]] = []
    if o.g_arch == "mlp":
        why = "--g-arch mlp (the MLP generator does not use it)"
        # note: --g-constant-filters is refused by resolve(), from a config file too.
        ignored += [(name, why) for name in ("ngf", "g_norm")]
    if o.c_arch == "mlp":
        why = "--c-arch mlp (the MLP critic does not use it)"
        ignored += [(name, why) for name in ("ndf", "c_norm")]
    if o.g_arch == "mlp" and o.c_arch == "mlp":
        ignored.append(("n_extra_layers", "--g-arch mlp and --c-arch mlp (MLPs do not use it)"))
    if "mlp" not in (o.g_arch, o.c_arch):
        ignored.append(("mlp_hidden", f"--g-arch {o.g_arch} and --c-arch {o.c_arch} (only MLP "
                                      "networks use it)"))
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    for name, why in ignored:
        if name in given and given[name] != defaults[name]:
            flag = "--" + name.replace("_", "-")
            raise WganError(f"{flag} {given[name]} has no effect with {why}; drop {flag} or "
                            "change the architecture")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve(o: TrainOptions) -> TrainOptions:
    """Validate ``o`` and fill in every derived value; raise WganError naming a bad option."""
    try:
        check_image_size(o.image_size)
    except ValueError as exc:
        raise WganError(f"--image-size: {exc}") from None
    if o.loss not in LOSSES:
        raise WganError(f"--loss must be one of {', '.join(LOSSES)}, got {o.loss!r}")
    defaults = LOSS_DEFAULTS[o.loss]
    for name, value in defaults.items():
        if getattr(o, name) is None:
            setattr(o, name, value)
    if o.optimizer == "adam":
        o.beta1 = 0.5 if o.beta1 is None else o.beta1
        o.beta2 = 0.999 if o.beta2 is None else o.beta2
    if o.loss == "wgan-gp" and o.c_norm == "batch":
        raise WganError("--c-norm batch cannot be used with --loss wgan-gp: the gradient "
                        "penalty is per sample and BatchNorm mixes samples; use --c-norm layer "
                        "or none")
    if o.loss == "wgan-gp" and o.clip > 0:
        raise WganError(f"--clip {o.clip} cannot be used with --loss wgan-gp: weight clipping and "
                        "a gradient penalty are alternatives; drop --clip, or use --loss wgan "
                        "to clip")
    if o.g_arch == "mlp" and o.g_constant_filters:
        raise WganError("--g-constant-filters cannot be used with --g-arch mlp: the MLP generator "
                        "has no convolution filters; drop one of the two options")
    checks = [
        ("batch_size", o.batch_size >= 1, "at least 1"),
        ("steps", o.steps >= 0, "0 or more"),
        ("n_critic", o.n_critic >= 1, "at least 1"),
        ("lr", o.lr > 0, "positive"),
        ("clip", o.clip >= 0, "0 (off) or positive"),
        ("ema_decay", 0 <= o.ema_decay < 1, "in [0, 1)"),
        ("tick_every", o.tick_every >= 1, "at least 1"),
        ("sample_every", o.sample_every >= 0, "0 (off) or more"),
        ("snapshot_every", o.snapshot_every >= 0, "0 (only at the end) or more"),
        ("keep_states", o.keep_states >= 1, "at least 1"),
        ("grid_size", o.grid_size >= 1, "at least 1"),
        ("max_bad_fraction", 0 <= o.max_bad_fraction <= 1, "in [0, 1]"),
        ("warmup_critic_steps", o.warmup_critic_steps >= 1, "at least 1"),
        ("warmup_generator_steps", o.warmup_generator_steps >= 0, "0 or more"),
        ("warmup_every", o.warmup_every >= 0, "0 (never) or more"),
        ("nz", o.nz >= 1, "at least 1"),
        ("ngf", o.ngf >= 1, "at least 1"),
        ("ndf", o.ndf >= 1, "at least 1"),
        ("n_extra_layers", o.n_extra_layers >= 0, "0 or more"),
        ("mlp_hidden", o.mlp_hidden >= 1, "at least 1"),
        ("gp_weight", o.gp_weight >= 0, "0 or more"),
        ("beta1", o.beta1 is None or 0 <= o.beta1 < 1, "in [0, 1)"),
        ("beta2", o.beta2 is None or 0 <= o.beta2 < 1, "in [0, 1)"),
        ("workers", o.workers >= -1, "-1 (automatic) or more"),
    ]
    for name, ok, want in checks:
        if not ok:
            flag = "--" + name.replace("_", "-")
            raise WganError(f"{flag} must be {want}, got {getattr(o, name)}")
    if o.metrics is not None:
        from wgan.metrics import parse_metrics

        o.metrics = ",".join(parse_metrics(o.metrics)) or None
    if o.metrics and "wasserstein" in o.metrics.split(",") and o.sync_bn:
        raise WganError("--metrics wasserstein cannot run during training with --sync-bn (its "
                        "critic would wait for the other processes); measure the snapshots "
                        "with wgan eval --metrics wasserstein instead")
    if o.metric_every is None:
        o.metric_every = o.snapshot_every
    if o.metric_every < 0 or o.metric_num < 2:
        raise WganError("--metric-every must be 0 (only at the end) or more, and --metric-num "
                        "at least 2")
    if o.channels not in (1, 3):
        raise WganError(f"--channels must be 1 or 3, got {o.channels}")

    device = resolve_device(o.device)
    o.resolved_device = str(device)
    if o.precision == "auto":
        # note: fp16 (with loss scaling) only on GPUs that lack bf16; CPUs without it use fp32.
        if bf16_supported(device):
            o.precision = "bf16"
        else:
            o.precision = "fp16" if device.type == "cuda" else "fp32"
    elif o.precision == "bf16" and not bf16_supported(device):
        raise WganError(f"--precision bf16 is not supported on {device}; use fp32"
                        + (" or fp16" if device.type == "cuda" else ""))
    elif o.precision == "fp16" and device.type != "cuda":
        raise WganError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    o.workers = resolve_workers(o.workers)
    if o.data and Path(o.data).is_dir():
        data, outdir = Path(o.data).resolve(), Path(o.outdir).resolve()
        if outdir == data or data in outdir.parents:
            raise WganError(f"--outdir {o.outdir} lies inside --data {o.data}: the run's own "
                            "images would become training data; choose an --outdir outside it")
    if o.desc is None:
        name = Path(o.data).resolve().name if o.data else "data"
        name = name.removesuffix(".csv").removesuffix(".pack") or "data"
        o.desc = f"{name}-{o.loss}-{o.image_size}px"
    return o


def resolve_workers(workers: int) -> int:
    """``workers``, or for a negative value one per CPU core this process may use, up to 8."""
    if workers >= 0:
        return workers
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise WganError(f"--device {name!r} is not a device name; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WganError(f"--device {name}: CUDA is not available in this PyTorch build or machine")
    return device
