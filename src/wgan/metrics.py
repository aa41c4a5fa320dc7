"""Sample quality, measured offline: sliced Wasserstein distance (no weights needed), FID and
KID (with a local FID Inception file), and the critic's Wasserstein estimate on held-out reals.

The sliced Wasserstein distance follows the description in Karras et al. 2018 (progressive
GAN): a Laplacian pyramid of every image down to 16x16, random 7x7 neighbourhoods
per image and level, descriptors normalised per channel, and the distance between the two
descriptor sets along random unit directions. One number per level and their mean, times 1e3.

Results are JSON lines in ``<run folder>/metric-<name>.jsonl`` naming the snapshot measured.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wgan import progress, rundir
from wgan.dataset import collate_skip_bad, default_cache_dir, to_model_range
from wgan.errors import WganError
from wgan.pack import PackMismatch

log = logging.getLogger(__name__)

METRICS = ("swd", "fid", "kid", "wasserstein")
METRIC_FILE = "metric-{}.jsonl"

# Default image counts: SWD as in the paper's setting; FID/KID the usual 50k, aimed at a GPU.
DEFAULT_NUM = {"swd": 8192, "fid": 50_000, "kid": 50_000, "wasserstein": 8192}
CPU_INCEPTION_WARN = 2000  # more images than this through Inception on a CPU earns a warning


# ---------------------------------------------------------------------- sliced Wasserstein


@dataclass(frozen=True)
class SwdOptions:
    """The settings of the sliced Wasserstein distance; the defaults are the paper's."""

    min_res: int = 16  # the pyramid halves from full size down to this side
    neighbourhoods: int = 128  # random neighbourhoods per image and level
    patch: int = 7  # neighbourhood side (7x7x3 = 147-d descriptors)
    directions: int = 128  # random unit directions per repeat
    repeats: int = 4
    seed: int = 0
    scale: float = 1e3  # reported values are the distance times this

    def check(self) -> None:
        for name in ("min_res", "neighbourhoods", "patch", "directions", "repeats"):
            if getattr(self, name) < 1:
                raise WganError(f"--swd-{name.replace('_', '-')} must be at least 1")
        if self.patch > self.min_res:
            raise WganError(f"--swd-patch {self.patch} is larger than --swd-min-res "
                            f"{self.min_res}")


# The 5x5 binomial kernel (outer product of 1 4 6 4 1) / 256.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Binomial 5x5 smoothing of ``[N, C, H, W]``, each channel alone, mirrored borders."""
    c = x.shape[1]
    kernel = torch.outer(_BINOMIAL, _BINOMIAL).to(x).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=c)


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zeros between the pixels, then the same kernel times 4 (it keeps the mean)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, size[0], size[1])
    up[:, :, ::2, ::2] = x
    return _blur(up) * 4.0


def laplacian_pyramid(images: torch.Tensor, min_res: int = 16) -> list[torch.Tensor]:
    """Levels of float ``[N, C, H, W]`` images, full size first; the last is the low-pass
    image at ``min_res`` (or the first side below twice that)."""
    levels = []
    g = images
    while min(g.shape[-2:]) // 2 >= min_res:
        small = _downsample(g)
        levels.append(g - _upsample(small, g.shape[-2:]))
        g = small
    levels.append(g)
    return levels


def pyramid_sides(size: int, min_res: int) -> list[int]:
    sides = [size]
    while sides[-1] // 2 >= min_res:
        sides.append((sides[-1] + 1) // 2)
    return sides


def _neighbourhoods(level: torch.Tensor, count: int, patch: int,
                    gen: torch.Generator) -> torch.Tensor:
    """``[N * count, C * patch * patch]`` descriptors at random places of ``[N, C, H, W]``."""
    n, c, h, w = level.shape
    # note: drawn on the CPU from a CPU generator, so places do not depend on the device.
    ys = torch.randint(0, h - patch + 1, (n, count, 1, 1), generator=gen).to(level.device)
    xs = torch.randint(0, w - patch + 1, (n, count, 1, 1), generator=gen).to(level.device)
    offsets = torch.arange(patch, device=level.device)
    rows = ys + offsets.view(1, 1, patch, 1)  # [N, K, P, 1]
    cols = xs + offsets.view(1, 1, 1, patch)  # [N, K, 1, P]
    which = torch.arange(n, device=level.device).view(n, 1, 1, 1)
    patches = level.permute(0, 2, 3, 1)[which, rows, cols]  # [N, K, P, P, C]
    return patches.permute(0, 1, 4, 2, 3).reshape(n * count, c * patch * patch)


def _normalise(desc: torch.Tensor, channels: int) -> torch.Tensor:
    """Each channel of a descriptor set to zero mean and unit deviation, over the whole set."""
    d = desc.view(len(desc), channels, -1)
    mean = d.mean(dim=(0, 2), keepdim=True)
    std = d.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
    return ((d - mean) / std).view(len(desc), -1)


def level_descriptors(images: torch.Tensor, level: int, opts: SwdOptions,
                      chunk: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
    """Normalised descriptors of one pyramid level for uint8 ``[N, C, H, W]`` images.

    The neighbourhoods' places depend only on the seed, the level and the image's position in
    the set, so two sets of the same size are sampled at the same places.
    """
    gen = torch.Generator().manual_seed(opts.seed * 1009 + level)
    parts = []
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(device).float()  # note: 0..255, as in the paper
        lev = laplacian_pyramid(x, opts.min_res)[level]
        parts.append(_neighbourhoods(lev, opts.neighbourhoods, opts.patch, gen))
    return _normalise(torch.cat(parts), images.shape[1])


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int, repeats: int,
                       gen: torch.Generator, block: int = 32) -> float:
    """Mean over random unit directions of the mean absolute difference between the sorted
    projections of two equally large sets ``[M, D]``."""
    assert a.shape == b.shape, f"sets must be equally large: {tuple(a.shape)} {tuple(b.shape)}"
    total, count = 0.0, 0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=gen).to(a.device)
        dirs /= dirs.norm(dim=0, keepdim=True)
        for k in range(0, directions, block):  # note: blocks keep [M, block] projections small
            d = dirs[:, k:k + block]
            pa = torch.sort(a @ d, dim=0).values
            pb = torch.sort(b @ d, dim=0).values
            total += (pa - pb).abs().mean(dim=0).sum().item()
            count += d.shape[1]
    return total / count


@dataclass
class SwdResult:
    levels: dict[int, float]  # side in pixels -> distance times scale
    mean: float


def swd(images_a: torch.Tensor, images_b: torch.Tensor, opts: SwdOptions = SwdOptions(),
        device: str | torch.device = "cpu") -> SwdResult:
    """Sliced Wasserstein distance between two equally large uint8 ``[N, C, S, S]`` sets,
    computed on ``device`` (all random draws come from seeded CPU generators)."""
    opts.check()
    if images_a.shape != images_b.shape:
        raise WganError(f"SWD compares equally large sets of equally sized images; got "
                        f"{tuple(images_a.shape)} and {tuple(images_b.shape)}")
    if images_a.shape[-1] < opts.min_res:
        raise WganError(f"images of {images_a.shape[-1]} pixels are smaller than --swd-min-res "
                        f"{opts.min_res}")
    sides = pyramid_sides(images_a.shape[-1], opts.min_res)
    levels = {}
    for i, side in enumerate(sides):
        da = level_descriptors(images_a, i, opts, device=device)
        db = level_descriptors(images_b, i, opts, device=device)
        gen = torch.Generator().manual_seed(opts.seed * 1009 + 500 + i)
        levels[side] = opts.scale * sliced_wasserstein(da, db, opts.directions, opts.repeats,
                                                       gen)
        del da, db
    return SwdResult(levels, float(np.mean(list(levels.values()))))


# ---------------------------------------------------------------------- FID and KID


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) of two Gaussians.

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2.
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def kernel_inception_distance(fa: np.ndarray, fb: np.ndarray, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with the kernel (x.y / d + 1)^3, mean and deviation over random subsets."""
    d = fa.shape[1]
    m = min(len(fa), len(fb), subset_size)
    if m < 2:
        raise WganError("KID needs at least 2 images in each set")
    rng = np.random.default_rng(seed)
    if m == len(fa) == len(fb):
        subsets = 1  # note: every subset would be the whole of both sets
    values = []
    for _ in range(subsets):
        x = fa[rng.choice(len(fa), m, replace=False)]
        y = fb[rng.choice(len(fb), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


# ---------------------------------------------------------------------- real images


def load_images(dataset, n: int, seed: int = 0, workers: int = 0) -> torch.Tensor:
    """uint8 ``[n', C, S, S]``: a seeded random choice of ``n`` images (all, if fewer), minus
    any that cannot be decoded (counted in a warning)."""
    total = len(dataset)
    if n > total:
        log.warning("only %d images in %s; using all of them instead of %d", total,
                    dataset.describe(), n)
        n = total
    order = np.random.default_rng(seed).permutation(total)[:n].tolist()
    if hasattr(dataset, "images"):  # in memory
        return dataset.images[order]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, order), batch_size=64,
                                         num_workers=workers, collate_fn=collate_skip_bad)
    parts, bad = [], 0
    for batch, skipped in progress.bar(loader, total=len(loader), desc="read images",
                                       unit="batch", leave=False):
        parts.append(batch)
        bad += skipped
    if bad:
        log.warning("%d of %d images could not be decoded and were left out", bad, n)
    good = [p for p in parts if len(p)]
    if not good:
        raise WganError(f"none of the {n} images chosen from {dataset.describe()} could be "
                        "decoded")
    return torch.cat(good)


def dataset_identity(path: str | os.PathLike) -> str:
    """A string that changes when the data at ``path`` changes (path, size, times)."""
    p = Path(path).resolve()
    target = p / "data.mdb" if (p / "data.mdb").is_file() else p
    st = target.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def chosen_files_identity(dataset, n: int, seed: int) -> str | None:
    """For sources of separate files (folders, CSV lists): a digest of the paths, sizes and
    modification times of the ``n`` files ``load_images`` chooses, so that a file rewritten
    in place invalidates the cache. ``None`` for sources that are one file (LMDB, packs),
    which ``dataset_identity`` already covers."""
    from wgan.dataset import CsvImages, ImageFolder

    if not isinstance(dataset, (ImageFolder, CsvImages)):
        return None
    digest = hashlib.sha1()
    for index in np.random.default_rng(seed).permutation(len(dataset))[:n].tolist():
        path = dataset.read(index)
        try:
            st = os.stat(path)
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def reference_features(dataset, data_path: str | os.PathLike | None, n: int, seed: int,
                       inception, workers: int = 0,
                       cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Inception features of ``n`` seeded real images, cached on disk by data and options."""
    cache_file = None
    if data_path is not None:
        key = json.dumps({"data": dataset_identity(data_path), "count": len(dataset),
                          "files": chosen_files_identity(dataset, n, seed),
                          "size": dataset.size, "channels": dataset.channels, "n": n,
                          "seed": seed, "weights": inception.sha1, "version": 2},
                         sort_keys=True)
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        cache_file = cache / "metric-stats" / (hashlib.sha1(key.encode()).hexdigest() + ".npy")
        if cache_file.is_file():
            try:
                feats = np.load(cache_file, allow_pickle=False)
                log.info("reference features from cache %s", cache_file)
                return feats
            except (OSError, ValueError):
                log.warning("ignoring unreadable cache %s", cache_file)
    feats = inception_features(inception, load_images(dataset, n, seed, workers))
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, feats, allow_pickle=False)
            os.replace(tmp, cache_file)
        except OSError as exc:
            log.warning("could not cache reference features in %s: %s", cache_file.parent, exc)
    return feats


def inception_features(inception, images: torch.Tensor) -> np.ndarray:
    if inception.device.type == "cpu" and len(images) > CPU_INCEPTION_WARN:
        log.warning("running Inception on %d images on the CPU (about 0.3 s each); a GPU or a "
                    "smaller --num is much faster", len(images))
    return inception(images)


# ---------------------------------------------------------------------- the critic's estimate


@torch.no_grad()
def critic_wasserstein(critic: nn.Module, reals: torch.Tensor, fakes: torch.Tensor,
                       batch_size: int = 64) -> float:
    """mean(critic(real)) - mean(critic(fake)) over whole sets of uint8 images.

    Batches go through a copy of the critic in training mode, as during training (BatchNorm
    normalises each batch by its own statistics); the critic itself is left untouched.
    """
    net = copy.deepcopy(critic).train()
    device = next(net.parameters()).device

    def mean_score(images: torch.Tensor) -> float:
        total = 0.0
        for start in range(0, len(images), batch_size):
            x = to_model_range(images[start:start + batch_size].to(device))
            total += net(x).float().sum().item()
        return total / len(images)

    return mean_score(reals) - mean_score(fakes)


# ---------------------------------------------------------------------- records


@dataclass
class MetricRecord:
    """One metric measured once; one JSON line in ``metric-<name>.jsonl`` (empty fields left
    out). The numbers that are measurements: ``value``, SWD's ``levels`` and KID's ``std``."""

    metric: str
    value: float
    num: int  # generated images
    snapshot: str | None = None
    step: int | None = None
    data: str | None = None
    against: str | None = None
    levels: dict[str, float] | None = None  # SWD per pyramid level, keyed by side in pixels
    std: float | None = None  # KID's deviation over subsets
    reals: int | None = None  # real images, where it can differ from num
    weights: str | None = None  # the Inception file
    options: dict[str, Any] | None = None  # SWD settings
    sec: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        out["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return out


def append_record(run_dir: str | os.PathLike, record: MetricRecord) -> Path:
    path = Path(run_dir) / METRIC_FILE.format(record.metric)
    rundir.append_jsonl(path, record.to_dict())
    return path


def format_table(records: list[MetricRecord]) -> str:
    """A plain text table: metric, value, details, images."""
    rows = [("metric", "value", "details", "images")]
    for r in records:
        if r.metric == "swd":
            detail = " ".join(f"{k}px:{v:.2f}" for k, v in r.levels.items())
        elif r.metric == "kid":
            detail = f"std {r.std:.5f}"
        else:
            detail = ""
        rows.append((r.metric, f"{r.value:.5g}", detail, str(r.num)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def parse_metrics(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise WganError(f"--metrics: unknown {', '.join(unknown) or 'empty list'}; choose from "
                        f"{', '.join(METRICS)}, comma separated")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------- measuring


@dataclass
class EvalSettings:
    """What to measure and how; shared by ``wgan eval`` and the training chore."""

    metrics: tuple[str, ...] = ("swd",)
    num: int | None = None  # images per set [default: DEFAULT_NUM per metric]
    seed: int = 0
    swd: SwdOptions = field(default_factory=SwdOptions)
    inception: str | None = None  # weights file [default: the lookup order]
    device: str = "cpu"
    workers: int = 0
    batch_size: int = 64

    def count(self, metric: str) -> int:
        return self.num if self.num is not None else DEFAULT_NUM[metric]


class Evaluator:
    """Measures fakes against one real image set, loading each kind of reference only once
    (real images per count, Inception features per count), so it can run again and again."""

    def __init__(self, dataset, data_path: str | os.PathLike | None,
                 settings: EvalSettings) -> None:
        self.dataset = dataset
        self.data_path = data_path
        self.s = settings
        self._reals: dict[int, torch.Tensor] = {}
        self._ref_feats: dict[int, np.ndarray] = {}
        self._inception = None
        if {"fid", "kid"} & set(settings.metrics):
            from wgan.inception import InceptionFeatures

            self._inception = InceptionFeatures(settings.inception, settings.device)

    def reals(self, n: int) -> torch.Tensor:
        if n not in self._reals:
            self._reals[n] = load_images(self.dataset, n, self.s.seed, self.s.workers)
        return self._reals[n]

    def reference_features(self, n: int) -> np.ndarray:
        if n not in self._ref_feats:
            self._ref_feats[n] = reference_features(self.dataset, self.data_path, n, self.s.seed,
                                                    self._inception, self.s.workers)
        return self._ref_feats[n]

    def measure(self, draw_fakes, critic: nn.Module | None = None,
                **where: Any) -> list[MetricRecord]:
        """One record per metric; ``draw_fakes(n)`` gives n uint8 images (the same n images
        for the same n); ``where`` fills the records' snapshot, step, data, against."""
        records = []
        fake_feats: dict[int, np.ndarray] = {}
        for metric in self.s.metrics:
            start = time.perf_counter()
            n = self.s.count(metric)
            if metric == "swd":
                reals = self.reals(n)
                # note: equal set sizes; the reals may be fewer than asked for.
                result = swd(reals, draw_fakes(len(reals)), self.s.swd, self.s.device)
                rec = MetricRecord("swd", result.mean, len(reals),
                                   levels={str(k): v for k, v in result.levels.items()},
                                   options=asdict(self.s.swd))
            elif metric in ("fid", "kid"):
                ref = self.reference_features(n)
                if n not in fake_feats:
                    fake_feats[n] = inception_features(self._inception, draw_fakes(n))
                fakes = fake_feats[n]
                rec = MetricRecord(metric, 0.0, len(fakes), reals=len(ref),
                                   weights=str(self._inception.path))
                if metric == "fid":
                    rec.value = frechet_distance(*gaussian_stats(ref), *gaussian_stats(fakes))
                else:
                    rec.value, rec.std = kernel_inception_distance(ref, fakes, seed=self.s.seed)
            else:
                if critic is None:
                    raise WganError("wasserstein needs a checkpoint with a critic; it cannot "
                                    "compare two image sets")
                reals = self.reals(n)
                value = critic_wasserstein(critic, reals, draw_fakes(len(reals)),
                                           self.s.batch_size)
                rec = MetricRecord("wasserstein", value, len(reals))
            for key, value in where.items():
                setattr(rec, key, value)
            rec.sec = time.perf_counter() - start
            log.info("%s %.5g (%d images, %.1f s)", metric, rec.value, rec.num, rec.sec)
            records.append(rec)
        return records


def fake_drawer(generator: nn.Module):
    """``draw(n)``: the images of seeds 0..n-1, as ``wgan sample --seeds 0-<n-1>`` draws them."""
    from wgan.sampling import generate, noise_for_seeds

    cache: dict[int, torch.Tensor] = {}

    def draw(n: int) -> torch.Tensor:
        if n not in cache:
            cache.clear()
            cache[n] = generate(generator, noise_for_seeds(range(n), generator.nz))
        return cache[n]

    return draw


def evaluate_checkpoint(checkpoint_path: str | os.PathLike, data: str | os.PathLike,
                        settings: EvalSettings) -> list[MetricRecord]:
    """Measure a snapshot (or training state) against real images; append the records to
    ``metric-<name>.jsonl`` in the checkpoint's folder."""
    from wgan import checkpoint
    from wgan.dataset import open_source
    from wgan.networks import ModelConfig, build_critic
    from wgan.training import load_generator

    checkpoint_path = Path(checkpoint_path)
    state = checkpoint.load(checkpoint_path, (checkpoint.SNAPSHOT_FORMAT,
                                              checkpoint.STATE_FORMAT))
    cfg = ModelConfig.from_dict(state["model"])
    device = torch.device(settings.device)
    generator = load_generator(checkpoint_path, device)
    critic = None
    if "wasserstein" in settings.metrics:
        critic = build_critic(cfg)
        critic.load_state_dict(state["critic"])
        critic.to(device)
    try:
        dataset = open_source(data, cfg.image_size, cfg.channels)
    except PackMismatch as exc:
        what, flag = (("image size", "--size") if exc.option == "--image-size"
                      else ("channels", "--channels"))
        raise WganError(f"{exc.holds}, but the checkpoint's {what} is {exc.want}; measure it "
                        f"against a pack made with wgan pack {flag} {exc.want}, or against the "
                        "images themselves") from None
    evaluator = Evaluator(dataset, data, settings)
    step = checkpoint.step_of(checkpoint_path)
    records = evaluator.measure(fake_drawer(generator), critic, snapshot=checkpoint_path.name,
                                step=step if step is not None else state.get("step"),
                                data=str(data))
    for rec in records:
        append_record(checkpoint_path.parent, rec)
    return records


def compare_sets(data: str | os.PathLike, against: str | os.PathLike, image_size: int,
                 channels: int, settings: EvalSettings) -> list[MetricRecord]:
    """Measure one real image set against another (reference figures; nothing is written)."""
    from wgan.dataset import open_source

    try:
        other = open_source(against, image_size, channels)
        evaluator = Evaluator(open_source(data, image_size, channels), data, settings)
    except PackMismatch as exc:
        raise WganError(f"{exc.holds}, but {exc.option} is {exc.want}; evaluate with "
                        f"{exc.option} {exc.have} or pack again with other settings") from None
    other_images: dict[int, torch.Tensor] = {}

    def draw(n: int) -> torch.Tensor:
        # note: seeded like the reference set but from a different stream.
        if n not in other_images:
            other_images[n] = load_images(other, n, settings.seed + 1, settings.workers)
        return other_images[n]

    # SWD wants equal sets: cut the larger one down.
    n_swd = settings.count("swd")
    if "swd" in settings.metrics:
        a, b = evaluator.reals(n_swd), draw(n_swd)
        m = min(len(a), len(b))
        evaluator._reals[n_swd], other_images[n_swd], other_images[m] = a[:m], b[:m], b[:m]
    return evaluator.measure(draw, None, data=str(data), against=str(against))
