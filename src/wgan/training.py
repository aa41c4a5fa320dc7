"""The training loop: Algorithm 1 of the WGAN paper (and its variants) around a small state.

One generator step = ``schedule.critic_steps(step)`` critic steps (each followed at once by
weight clipping), then one generator step against the clipped critic. Chores (statistics,
sample grids, snapshots, training states) run between generator steps.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import random
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wgan import checkpoint, images, rundir
from wgan.dataset import batch_stream, to_model_range
from wgan.distributed import SINGLE, STOP_SIGNALS, World, all_reduce_sum, any_rank
from wgan.errors import WganError
from wgan.loss import (
    CriticSchedule,
    clip_weights_,
    gan_critic_loss,
    gan_generator_loss,
    gradient_penalty,
    wasserstein_estimate,
    wgan_critic_loss,
    wgan_generator_loss,
)
from wgan.networks import ModelConfig, build_critic, build_generator
from wgan.options import TrainOptions
from wgan.sampling import generate, noise_for_seeds

log = logging.getLogger(__name__)


class TrainingDiverged(WganError):
    """A loss or weight became NaN or infinite."""


class TooManyBadImages(WganError):
    """More images failed to decode than ``max_bad_fraction`` allows."""


@dataclass
class Counters:
    """Progress of a run; saved in every training state."""

    step: int = 0  # generator steps done
    critic_steps: int = 0
    images: int = 0  # real images shown to the critic
    batches: int = 0  # batches drawn from the data stream (its resume position)
    bad_images: int = 0
    # Critic steps already done toward the next generator step: non-zero only in a state
    # saved by a stop in the middle of a long (warm-up) step, which a resume completes.
    critic_in_step: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class TickStats:
    """Sums over the current tick, kept on the device and read once per tick."""

    wasserstein: torch.Tensor | float = 0.0
    loss_critic: torch.Tensor | float = 0.0
    loss_generator: torch.Tensor | float = 0.0
    critic_steps: int = 0
    generator_steps: int = 0
    images: int = 0  # real images read by this process (summed over ranks at the tick's end)
    bad_images: int = 0
    data_wait: float = 0.0
    start: float = field(default_factory=time.perf_counter)


class CriticPair(nn.Module):
    """The critic on a real and a fake batch (and WGAN-GP's penalty) in one forward call.

    BatchNorm sees the real and the fake batch separately, as in the paper's code; one
    forward per backward is also what DistributedDataParallel needs to average gradients.
    """

    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        real_scores = self.critic(real)
        fake_scores = self.critic(fake)
        penalty = None if alpha is None else gradient_penalty(self.critic, real, fake,
                                                              alpha=alpha)
        return real_scores, fake_scores, penalty


def make_optimizer(params, opts: TrainOptions) -> torch.optim.Optimizer:
    foreach = {"foreach": True}
    if opts.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=opts.lr, **foreach)
    return torch.optim.Adam(params, lr=opts.lr, betas=(opts.beta1, opts.beta2), **foreach)


def global_rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's global generators, as tensors and plain data.

    The loop draws its own noise from ``Trainer.noise`` and the data order is a function of
    the seed, so these matter only to user code (custom layers, augmentations); they are
    restored anyway so that nothing random differs after a resume.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


class StopNow(BaseException):
    """A second stop signal: leave at once (a BaseException, so nothing catches it on the
    way up by accident)."""


class Trainer:
    """Owns the networks, optimizers, counters and RNG of one run."""

    def __init__(self, opts: TrainOptions, dataset, run_dir: Path, world: World = SINGLE) -> None:
        self.opts = opts
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.world = world
        if opts.batch_size % world.size:
            raise WganError(f"--batch-size {opts.batch_size} must be a multiple of the "
                            f"{world.size} training processes")
        self.local_batch = opts.batch_size // world.size
        self.device = torch.device(opts.resolved_device)
        if world.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", world.local_rank)
        self.model_config: ModelConfig = opts.model_config()
        self.schedule = CriticSchedule(
            opts.n_critic, bool(opts.warmup), opts.warmup_critic_steps,
            opts.warmup_generator_steps, opts.warmup_every,
        )

        # Build the networks from the seed; the global generators, which only user code
        # (custom layers, augmentations) draws from, start from it too.
        torch.manual_seed(opts.seed)
        random.seed(opts.seed)
        np.random.seed(opts.seed % 2**32)
        conv = self.model_config.g_arch == "dcgan" or self.model_config.c_arch == "dcgan"
        self.memory_format = (torch.channels_last if opts.channels_last and conv
                              else torch.contiguous_format)
        self.set_networks(build_generator(self.model_config), build_critic(self.model_config))

        # Mixed precision: weights, optimizer state and the clip stay fp32.
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.precision)
        fp16 = opts.precision == "fp16"
        self.scaler_c = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=fp16)

        self.noise = torch.Generator(self.device).manual_seed(opts.seed)
        self.fixed_noise = noise_for_seeds(range(opts.grid_size), opts.nz)
        self.counters = Counters()
        self.stop_requested: str | None = None
        self.last_state: Path | None = None
        self.rollbacks = 0
        # Seconds of training before this process began (summed over resumes), and when
        # this process began training.
        self._seconds_before = 0.0
        self._start_time: float | None = None
        self.evaluator = None  # built at the first measurement
        self.last_measured: int | None = None
        self.tensorboard = None  # a wgan.tensorboard.TensorBoardLog when --tensorboard is on

    def set_networks(self, generator: nn.Module, critic: nn.Module) -> None:
        """Install the two networks (on the device, in the memory format) and fresh optimizers."""
        self.generator = generator.to(self.device, memory_format=self.memory_format)
        self.critic = critic.to(self.device, memory_format=self.memory_format)
        self.ema = None
        if self.opts.ema_decay > 0:
            self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.opt_g = make_optimizer(self.generator.parameters(), self.opts)
        self.opt_c = make_optimizer(self.critic.parameters(), self.opts)
        self.critic_params = list(self.critic.parameters())
        # The modules that train: DDP wrappers across processes, the networks themselves in one.
        self.critic_pair: nn.Module = CriticPair(self.critic)
        self.generator_train: nn.Module = self.generator
        if self.world.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            if self.opts.sync_bn:
                if self.device.type != "cuda":
                    raise WganError("--sync-bn needs CUDA devices; on CPUs use --c-norm layer "
                                    "or none (and --g-norm none) for batch-size-independent "
                                    "networks")
                # note: converted in place of the modules; state dict keys stay the same.
                self.generator = nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
                self.critic = nn.SyncBatchNorm.convert_sync_batchnorm(self.critic)
                self.critic_pair = CriticPair(self.critic)

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.critic_pair = DDP(self.critic_pair, device_ids=ids)
            self.generator_train = DDP(self.generator, device_ids=ids)
        self.critic_score: nn.Module = self.critic
        if self.opts.compile:
            self._compile()
        if self.opts.clip > 0:
            # note: clip the fresh critic too, so that no forward pass ever sees weights
            # outside [-c, c] (the paper's code clamps before every critic step).
            clip_weights_(self.critic_params, self.opts.clip)

    def _compile(self) -> None:
        """torch.compile the training modules, or say why not and stay eager."""
        if self.opts.loss == "wgan-gp":
            log.warning("--compile: the gradient penalty's double backward cannot be compiled; "
                        "training eagerly")
            return
        try:
            import torch._dynamo  # noqa: F401
            import torch._inductor  # noqa: F401
        except ImportError as exc:
            log.warning("--compile: the compiler is not available (%s); training eagerly", exc)
            return
        # note: the first steps compile (slow); failures at that point fall back to eager
        # through torch._dynamo's suppress_errors.
        torch._dynamo.config.suppress_errors = True
        self.critic_pair = torch.compile(self.critic_pair)
        self.generator_train = torch.compile(self.generator_train)
        self.critic_score = torch.compile(self.critic)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": checkpoint.STATE_FORMAT,
            "options": self.opts.to_dict(),
            "model": self.model_config.to_dict(),
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_c": self.opt_c.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_c": self.scaler_c.state_dict(),
            "counters": self.counters.to_dict(),
            "noise_rng": self.noise.get_state(),
            "global_rng": global_rng_state(),
            "fixed_noise": self.fixed_noise,
            "train_seconds": self.train_seconds(),
            "data_count": len(self.dataset) if self.dataset is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["model"] != self.model_config.to_dict():
            raise WganError("the training state was made for a different model; resume with the "
                            "options saved in its run folder")
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise WganError("the training state has no EMA generator; resume without "
                                "--ema-decay")
            self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_c.load_state_dict(state["scaler_c"])
        self.counters = Counters(**state["counters"])
        self.noise.set_state(state["noise_rng"])
        if "global_rng" in state:
            set_global_rng_state(state["global_rng"])
        self.fixed_noise = state["fixed_noise"]
        self._seconds_before = float(state.get("train_seconds", 0.0))
        if self._start_time is not None:
            self._start_time = time.perf_counter()

    def load_weights(self, snapshot: dict[str, Any]) -> None:
        """Weights only (``--transfer``): counters, optimizers and RNG start fresh."""
        try:
            self.generator.load_state_dict(snapshot["generator"])
            self.critic.load_state_dict(snapshot["critic"])
        except (KeyError, RuntimeError) as exc:
            differ = model_differences(snapshot.get("model"), self.model_config)
            if differ:
                raise WganError(f"--transfer: the checkpoint does not fit this model: it was made "
                                f"with {', '.join(differ)}; train with the same options") from None
            raise WganError(f"--transfer: the checkpoint does not fit this model "
                            f"({str(exc).splitlines()[0][:160]}); match its size options") from None
        if self.ema is not None:
            self.ema.load_state_dict(self.generator.state_dict())

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _local_share(self, draw: torch.Tensor, n: int) -> torch.Tensor:
        """This rank's first ``n`` rows of a draw made for the whole global batch.

        note: every rank draws the global batch's noise from the same generator, so the
        noise stream (and a resumed run) does not depend on the number of processes.
        """
        start = self.world.rank * self.local_batch
        return draw[start:start + n]

    def _latent(self, n: int) -> torch.Tensor:
        z = torch.randn(self.opts.batch_size, self.opts.nz, 1, 1, device=self.device,
                        generator=self.noise)
        return self._local_share(z, n)

    def _real(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        real = to_model_range(batch)
        return real.contiguous(memory_format=self.memory_format) if real.dim() == 4 else real

    def critic_step(self, real: torch.Tensor, tick: TickStats) -> None:
        """One critic update on a real batch and as many fakes, then the clip."""
        n = real.shape[0]

        # Draw fakes without building the generator's graph.
        with torch.no_grad(), self._autocast():
            fake = self.generator(self._latent(n))

        # Score both (and the penalty's interpolates) and update the critic.
        alpha = None
        if self.opts.loss == "wgan-gp":
            alpha = torch.rand(self.opts.batch_size, device=self.device, generator=self.noise)
            alpha = self._local_share(alpha, n)
        with self._autocast():
            real_scores, fake_scores, penalty = self.critic_pair(real, fake, alpha)
        if self.opts.loss == "gan":
            loss = gan_critic_loss(real_scores, fake_scores)
        else:
            loss = wgan_critic_loss(real_scores, fake_scores)
            if penalty is not None:
                loss = loss + self.opts.gp_weight * penalty
        self.opt_c.zero_grad(set_to_none=True)
        self.scaler_c.scale(loss).backward()
        self.scaler_c.step(self.opt_c)
        self.scaler_c.update()

        # Clip the critic's weights right after its update, BatchNorm's included.
        if self.opts.clip > 0:
            clip_weights_(self.critic_params, self.opts.clip)

        # note: accumulated on the device; read once per tick, so no sync here.
        with torch.no_grad():
            tick.wasserstein = tick.wasserstein + wasserstein_estimate(real_scores, fake_scores)
            tick.loss_critic = tick.loss_critic + loss.detach()
        tick.critic_steps += 1

    def generator_step(self, tick: TickStats) -> None:
        """One generator update on a full batch against the (clipped) critic."""
        self.critic.requires_grad_(False)
        try:
            with self._autocast():
                fake = self.generator_train(self._latent(self.local_batch))
                fake_scores = self.critic_score(fake)
            if self.opts.loss == "gan":
                loss = gan_generator_loss(fake_scores)
            else:
                loss = wgan_generator_loss(fake_scores)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(loss).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        finally:
            self.critic.requires_grad_(True)
        if self.ema is not None:
            self.update_ema()
        with torch.no_grad():
            tick.loss_generator = tick.loss_generator + loss.detach()
        tick.generator_steps += 1

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema = decay * ema + (1 - decay) * weights; buffers (BN statistics) are copied."""
        ema_params = list(self.ema.parameters())
        torch._foreach_lerp_(ema_params, list(self.generator.parameters()),
                             1.0 - self.opts.ema_decay)
        for e, b in zip(self.ema.buffers(), self.generator.buffers(), strict=True):
            e.copy_(b)

    # ------------------------------------------------------------------ loop

    def _next_batch(self, stream, tick: TickStats) -> torch.Tensor:
        """The next non-empty real batch; counts the images skipped as undecodable."""
        while True:
            t0 = time.perf_counter()
            batch, bad = next(stream)
            tick.data_wait += time.perf_counter() - t0
            self.counters.batches += 1
            tick.bad_images += bad
            if bad and not self.world.enabled:
                self._check_bad(self.counters.images + tick.images + len(batch),
                                self.counters.bad_images + tick.bad_images)
            if len(batch):
                tick.images += len(batch)
                return self._real(batch)

    def _check_bad(self, good: int, bad: int) -> None:
        """Stop once more than ``max_bad_fraction`` of the images read were undecodable."""
        read = good + bad
        if read >= min(1000, len(self.dataset)) and bad > self.opts.max_bad_fraction * read:
            raise TooManyBadImages(
                f"{bad} of {read} images read could not be decoded, over --max-bad-fraction "
                f"{self.opts.max_bad_fraction}; see log.txt for the files, fix or remove them, "
                "or raise the limit")

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.stop_requested is not None:
            raise StopNow(name)
        self.stop_requested = name
        log.warning("%s received: finishing the current step and saving a training state "
                    "(send it again to stop at once without saving)", name)

    def _stream(self):
        o = self.opts
        return batch_stream(self.dataset, self.local_batch, o.seed, start=self.counters.batches,
                            workers=o.workers, pin_memory=self.device.type == "cuda",
                            rank=self.world.rank, world_size=self.world.size, device=self.device)

    def _stop_within_step(self, done: int, total: int) -> bool:
        """Whether to stop after ``done`` of a long step's ``total`` critic steps.

        A warm-up generator step has 100 critic steps by default (half a minute at 64x64 on a
        CPU), longer than schedulers wait after SIGTERM, so such steps may stop part way: the
        state records how far it got. Under torchrun the ranks agree every 10 critic steps
        (the same ones on every rank, as they run the same schedule); one process looks at
        every step.
        """
        if total <= self.opts.n_critic or done >= total:
            return False
        if self.world.enabled and done % 10:
            return False
        return self._should_stop()

    def _should_stop(self) -> bool:
        # note: under torchrun a signal reaches the ranks at different steps; agreeing here
        # (one tiny all-reduce per generator step) makes them all stop after the same step.
        if self.world.enabled:
            stop = any_rank(self.stop_requested is not None, self.world, self.device)
            if stop and self.stop_requested is None:
                self.stop_requested = "SIGTERM"
            return stop
        return self.stop_requested is not None

    def train(self) -> str:
        """Train until ``opts.steps``; returns 'done' or the name of the signal that stopped it."""
        o = self.opts
        stream = self._stream()
        if self.counters.step == 0 and self.world.is_main:
            self._save_reals()
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        self._start_time = time.perf_counter()
        tick = TickStats()
        try:
            stop = self._should_stop()
            while self.counters.step < o.steps and not stop:
                c = self.counters
                total = self.schedule.critic_steps(c.step)
                while c.critic_in_step < total and not stop:
                    self.critic_step(self._next_batch(stream, tick), tick)
                    c.critic_steps += 1
                    c.critic_in_step += 1
                    stop = self._stop_within_step(c.critic_in_step, total)
                if stop:
                    break  # part way through a long step; the state says how far
                c.critic_in_step = 0
                self.generator_step(tick)
                self.counters.step += 1
                step = self.counters.step
                stop = self._should_stop()
                # note: a tick also ends where a state is saved, so that the state's counters
                # include every image shown so far.
                snapshot_due = bool(o.snapshot_every) and step % o.snapshot_every == 0
                if step % o.tick_every == 0 or step == o.steps or stop or snapshot_due:
                    try:
                        self._end_tick(tick)
                    except TrainingDiverged:
                        if not self._roll_back():
                            raise
                        stream = self._stream()
                    tick = TickStats()
                    if self.counters.step != step:
                        continue  # rolled back: no chores for the abandoned step
                if o.sample_every and step % o.sample_every == 0:
                    self.save_samples()
                if snapshot_due:
                    self.save_checkpoints()
                if o.metrics and o.metric_every and step % o.metric_every == 0:
                    self.measure()
            if tick.generator_steps:
                self._end_tick(tick)
            elif tick.critic_steps:
                self._fold_tick(tick)
            # Final samples and state, unless this very step already wrote them.
            if not (self.run_dir / self._fakes_name()).exists():
                self.save_samples()
            if self.counters.critic_in_step:
                self.save_state()  # part way through a step: newer than any state of this step
            elif (self.last_state is None
                  or checkpoint.step_of(self.last_state) != self.counters.step):
                self.save_checkpoints()
            # note: a stop that came during the last step changes nothing: the run is done.
            finished = self.counters.step >= o.steps and not self.counters.critic_in_step
            if (o.metrics and (finished or self.stop_requested is None)
                    and self.last_measured != self.counters.step):
                self.measure()
        except BaseException as exc:
            # note: a StopNow raised inside a write (torch.save's zip writer) can come out
            # wrapped in the writer's own error; the atomic write has removed its copy.
            stop = exc
            while stop is not None and not isinstance(stop, StopNow):
                stop = stop.__context__
            if stop is None:
                raise
            where = f"the newest training state is {self.last_state}" if self.last_state else (
                "no training state was saved")
            raise WganError(f"{stop} again: stopped at once without saving; {where}") from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            del stream  # note: ends the DataLoader's worker processes
        return "done" if finished else self.stop_requested or "done"

    def _fold_tick(self, tick: TickStats) -> None:
        """Count a tick's images without a stats line (it holds no generator step)."""
        values = torch.tensor([float(tick.images), float(tick.bad_images)], dtype=torch.float64,
                              device=self.device)
        values = all_reduce_sum(values, self.world).cpu()
        self.counters.images += int(values[0])
        self.counters.bad_images += int(values[1])

    def train_seconds(self) -> float:
        """Seconds spent training this run so far, over all its resumes."""
        if self._start_time is None:
            return self._seconds_before
        return self._seconds_before + time.perf_counter() - self._start_time

    def _roll_back(self) -> bool:
        """Reload the last good state with fresh noise; False when that is not allowed."""
        o = self.opts
        if o.on_divergence != "rollback" or self.last_state is None:
            return False
        if self.rollbacks >= o.max_rollbacks:
            log.error("diverged again after %d roll-backs; giving up", self.rollbacks)
            return False
        spent = self.train_seconds()
        self.load_state_dict(checkpoint.load(self.last_state, checkpoint.STATE_FORMAT))
        self._seconds_before = spent  # the clock goes on: the abandoned steps took time too
        self.rollbacks += 1
        # note: the same noise would replay the same divergence, so draw different noise.
        self.noise.manual_seed(o.seed + 1_000_003 * self.rollbacks)
        if self.world.is_main:
            rundir.truncate_stats(self.run_dir, self.counters.step)
        log.warning("loss diverged; rolled back to %s (roll-back %d of %d)", self.last_state,
                    self.rollbacks, o.max_rollbacks)
        return True

    def _end_tick(self, tick: TickStats) -> None:
        """Read the tick's sums (one device sync), check them, log and write one stats line."""
        c = self.counters
        n_c, n_g = max(tick.critic_steps, 1), max(tick.generator_steps, 1)
        sums = [tick.wasserstein, tick.loss_critic, tick.loss_generator,
                float(tick.images), float(tick.bad_images)]
        values = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device)
                              for v in sums])
        # Sum over ranks: losses are averaged over them, image counts added up.
        values = all_reduce_sum(values, self.world).cpu()
        w, lc, lg = (values[:3] / torch.tensor([n_c, n_c, n_g]) / self.world.size).tolist()
        c.images += int(values[3])
        c.bad_images += int(values[4])
        if self.world.enabled and tick.bad_images:
            self._check_bad(c.images, c.bad_images)
        if not all(math.isfinite(v) for v in (w, lc, lg)):
            where = f"; the last good state is {self.last_state}" if self.last_state else ""
            raise TrainingDiverged(f"training diverged by generator step {c.step} (critic loss "
                                   f"{lc}, generator loss {lg}); nothing was saved{where}; "
                                   f"the run's log and statistics are in {self.run_dir}")
        elapsed = time.perf_counter() - tick.start
        record = {
            "step": c.step,
            "images": c.images,
            "critic_steps": c.critic_steps,
            "wasserstein": w,
            "loss_critic": lc,
            "loss_generator": lg,
            "sec_per_step": elapsed / n_g,
            "data_wait": tick.data_wait / max(elapsed, 1e-9),
            "bad_images": c.bad_images,
            "time": self.train_seconds(),
            "mem_cpu_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if self.device.type == "cuda":
            record["mem_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        if not self.world.is_main:
            return
        rundir.append_stats(self.run_dir, record)
        if self.tensorboard is not None:
            self.tensorboard.stats(record)
        mem = record.get("mem_gpu_mb", record["mem_cpu_mb"])
        log.info("step %*d/%d  kimg %8.1f  W %9.5f  loss_c %9.5f  loss_g %9.5f  "
                 "s/step %6.3f  wait %3.0f%%  mem %5.0fMB  bad %d",
                 len(str(self.opts.steps)), c.step, self.opts.steps, c.images / 1000, w, lc, lg,
                 record["sec_per_step"], 100 * record["data_wait"], mem, c.bad_images)

    # ------------------------------------------------------------------ chores

    def _save_reals(self) -> None:
        """A grid of real images; skipped (with a warning) when none decode among many tried."""
        stream = batch_stream(self.dataset, self.opts.grid_size, self.opts.seed + 1)
        good, tried = [], 0
        while sum(len(b) for b in good) < self.opts.grid_size and tried < 10:
            batch, _ = next(stream)
            good.append(batch)
            tried += 1
        del stream
        batch = torch.cat(good)[: self.opts.grid_size]
        if not len(batch):
            log.warning("no image among the first %d drawn could be decoded; reals.png not "
                        "written", tried * self.opts.grid_size)
            return
        grid = images.grid(batch)
        images.save_png(grid, self.run_dir / "reals.png")
        if self.tensorboard is not None:
            self.tensorboard.image("samples/reals", grid, 0)

    def sample_generator(self) -> nn.Module:
        return self.ema if self.ema is not None else self.generator

    def sampling_net(self) -> nn.Module:
        net = self.sample_generator()
        if self.memory_format is torch.channels_last:
            # note: a contiguous copy computes exactly what `wgan sample` computes from the
            # snapshot; channels-last kernels round differently in the last bit.
            net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
        return net

    def save_samples(self) -> None:
        if not self.world.is_main:
            return
        fakes = generate(self.sampling_net(), self.fixed_noise)
        grid = images.grid(fakes)
        images.save_png(grid, self.run_dir / self._fakes_name())
        if self.tensorboard is not None:
            self.tensorboard.image("samples/fixed_noise", grid, self.counters.step)

    def _fakes_name(self) -> str:
        return f"fakes{self.counters.step:07d}.png"

    def snapshot_dict(self) -> dict[str, Any]:
        return {
            "format": checkpoint.SNAPSHOT_FORMAT,
            "model": self.model_config.to_dict(),
            "generator": self.sample_generator().state_dict(),
            "critic": self.critic.state_dict(),
            "step": self.counters.step,
            "images": self.counters.images,
        }

    def save_checkpoints(self) -> None:
        """A network snapshot and a full training state for the current step; old states pruned."""
        step = self.counters.step
        if self.world.is_main:
            checkpoint.save(self.snapshot_dict(),
                            self.run_dir / f"network-snapshot-{step:07d}.pt")
        self.save_state()
        if self.world.is_main:
            rundir.plot_stats(self.run_dir)

    def save_state(self) -> None:
        """The full training state for the current step (replacing one of the same step, which
        is older); old states pruned."""
        state_path = self.run_dir / f"training-state-{self.counters.step:07d}.pt"
        if self.world.is_main:
            checkpoint.save(self.state_dict(), state_path)
            checkpoint.prune(self.run_dir, "training-state", self.opts.keep_states)
        self.last_state = state_path  # note: only once it is there

    def measure(self) -> None:
        """Measure ``opts.metrics`` for the current generator; one line per metric in
        ``metric-<name>.jsonl`` and a fresh progress plot."""
        from wgan.metrics import EvalSettings, Evaluator, append_record, fake_drawer

        o = self.opts
        if not self.world.is_main:
            return  # note: the other ranks wait for rank 0 at the next step's collectives
        if self.evaluator is None:
            settings = EvalSettings(tuple(o.metrics.split(",")), o.metric_num, o.seed,
                                    device=o.resolved_device, batch_size=o.batch_size)
            self.evaluator = Evaluator(self.dataset, o.data, settings)
        step = self.counters.step
        snapshot = f"network-snapshot-{step:07d}.pt"
        with torch.random.fork_rng(devices=[]):  # note: training's random streams stay as they are
            records = self.evaluator.measure(
                fake_drawer(self.sampling_net()), self.critic, step=step, data=o.data,
                snapshot=snapshot if (self.run_dir / snapshot).exists() else None)
        for rec in records:
            append_record(self.run_dir, rec)
        self.last_measured = step
        rundir.plot_stats(self.run_dir)
        if self.tensorboard is not None:
            self.tensorboard.metrics()



def model_differences(saved: Any, config: ModelConfig) -> list[str]:
    """``--ngf 16 (not 64)`` for each model option where a checkpoint's stored model differs
    from ``config``; empty when the checkpoint stores no model."""
    if not isinstance(saved, dict):
        return []
    ours = config.to_dict()
    out = []
    for name, value in ours.items():
        if name in saved and saved[name] != value:
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                out.append(f"{flag if saved[name] else '--no-' + flag[2:]} (not "
                           f"{flag if value else '--no-' + flag[2:]})")
            else:
                out.append(f"{flag} {saved[name]} (not {value})")
    return out


def find_resume_state(resume: str | Path) -> Path:
    """The state ``--resume`` names: a file, or a run folder's newest readable state. A file
    older than the newest state in its folder is refused: the run would fork, and a later
    resume of the folder would pick the abandoned branch."""
    state_path = checkpoint.find_state(resume)
    if Path(resume).is_file():
        check_newest(state_path)
    return state_path


def check_newest(state_path: Path) -> None:
    newest = checkpoint.newest_state(state_path.parent)
    if newest is not None and checkpoint.step_of(newest) > (checkpoint.step_of(state_path) or 0):
        raise WganError(f"{state_path.name} is older than the run's newest state {newest.name}: "
                        f"resuming from it would leave two histories in {state_path.parent}. "
                        "Resume the run folder itself, or move the newer training-state files "
                        "out of it first (or start a new run from it with --transfer)")


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The generator of a snapshot or training state, in eval mode."""
    data = checkpoint.load(path, (checkpoint.SNAPSHOT_FORMAT, checkpoint.STATE_FORMAT))
    cfg = ModelConfig.from_dict(data["model"])
    generator = build_generator(cfg)
    weights = data.get("ema") or data["generator"]
    try:
        generator.load_state_dict(weights)
    except RuntimeError as exc:
        raise WganError(f"{path}: weights do not match the model they claim "
                        f"({str(exc).splitlines()[0][:160]})") from None
    return generator.to(device).eval()



# Options that may change when a run resumes; anything else would make it a different run.
RESUMABLE = frozenset({
    "steps", "workers", "tick_every", "sample_every", "snapshot_every", "keep_states",
    "max_bad_fraction", "data", "data_root", "allow_outside_root", "device", "on_divergence",
    "max_rollbacks", "sync_bn", "compile", "precision", "channels_last", "tensorboard",
    "metrics", "metric_every", "metric_num",
})


def resume_options(state_path: Path, flags: dict[str, Any]) -> tuple[TrainOptions, dict]:
    """The options saved in a training state, with the flags that may change applied."""
    from wgan.options import resolve

    state = checkpoint.load(state_path, checkpoint.STATE_FORMAT)
    saved = dict(state["options"])
    saved.pop("resolved_device", None)
    for name, value in flags.items():
        if value is None or value == saved.get(name):
            continue
        if name not in RESUMABLE:
            flag = "--" + name.replace("_", "-")
            raise WganError(f"{flag} cannot change when resuming (the run used "
                            f"{saved.get(name)!r}); start a new run with --transfer instead")
        saved[name] = value
    return resolve(TrainOptions(**saved)), state


def run_training(
    opts: TrainOptions | None,
    dataset=None,
    resume: str | Path | None = None,
    transfer: str | Path | None = None,
    resume_flags: dict[str, Any] | None = None,
    world: World = SINGLE,
) -> tuple[Path, str]:
    """Train a run end to end; returns its folder and how it ended ('done' or a signal name).

    ``dataset`` defaults to opening ``opts.data``. With ``resume`` (a run folder or training
    state) the saved options are used and the run goes on in its own folder. In a world of
    several processes every rank calls this; only rank 0 writes the run folder. A stop signal
    that arrives while the run is being set up stops it before its first step, with a state.
    """
    early: list[str] = []

    def note_early(signum, frame) -> None:
        early.append(signal.Signals(signum).name)
        log.warning("%s received while starting: stopping once the run is set up", early[-1])

    previous = {s: signal.signal(s, note_early) for s in STOP_SIGNALS}
    try:
        return _run_training(opts, dataset, resume, transfer, resume_flags, world, early)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run_training(opts, dataset, resume, transfer, resume_flags, world: World,
                  early: list[str]) -> tuple[Path, str]:
    from wgan.dataset import open_source
    from wgan.distributed import broadcast_object

    if not world.is_main:
        logging.getLogger("wgan").setLevel(logging.WARNING)

    state = lock = None
    try:
        if resume is not None:
            folder = Path(resume) if Path(resume).is_dir() else Path(resume).parent
            # note: locked before the state is chosen, so a process that is still saving
            # its last state cannot make this one pick the one before.
            lock = rundir.RunLock(folder) if world.is_main and folder.is_dir() else None
            state_path = find_resume_state(resume)
            opts, state = resume_options(state_path, resume_flags or {})
            run_dir = state_path.parent
        # note: saved absolute, so that a resume from another working folder finds the data.
        opts = dataclasses.replace(
            opts, data=str(Path(opts.data).absolute()) if opts.data else opts.data,
            data_root=str(Path(opts.data_root).absolute()) if opts.data_root else None)
        if opts.tensorboard:
            from wgan.tensorboard import require_tensorboard

            require_tensorboard()
        if dataset is None:
            if not opts.data:
                raise WganError("--data is required: a folder of images, a CSV list, an LMDB "
                                "folder or a pack file")
            dataset = open_source(opts.data, opts.image_size, opts.channels, opts.data_root,
                                  opts.allow_outside_root)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    created = None  # the run folder this call made, removed again if no step is ever done
    if state is None:
        run_dir = None
        if world.is_main:
            run_dir = created = rundir.create_run_dir(opts.outdir, opts.desc)
            rundir.write_json(run_dir / "training_options.json", opts.to_dict())
            lock = rundir.RunLock(run_dir)
        run_dir = broadcast_object(run_dir, world)
    handler = rundir.attach_log_file(run_dir) if world.is_main else logging.NullHandler()
    trainer = None
    unfinished = True  # the folder goes if this stays True and no step was done
    try:
        trainer = Trainer(opts, dataset, run_dir, world)
        if state is not None:
            trainer.load_state_dict(state)
            trainer.last_state = state_path
            if world.is_main:
                rundir.truncate_stats(run_dir, trainer.counters.step)
                rundir.remove_stale_temporaries(run_dir)
            if state.get("data_count") not in (None, len(dataset)) and world.is_main:
                log.warning("the data has changed: %d images in the state resumed from, %d "
                            "now; the batches from here on differ from the run's original plan",
                            state["data_count"], len(dataset))
            log.info("resuming %s at generator step %d", run_dir, trainer.counters.step)
            if trainer.counters.step >= opts.steps:
                log.warning("the run is already at generator step %d, at or past --steps %d: "
                            "nothing to train; raise --steps to go on", trainer.counters.step,
                            opts.steps)
        else:
            log.info("run folder %s", run_dir)
            if transfer is not None:
                trainer.load_weights(checkpoint.load(
                    transfer, (checkpoint.SNAPSHOT_FORMAT, checkpoint.STATE_FORMAT)))
                log.info("weights transferred from %s", transfer)
                if opts.clip > 0:  # the source may be unclipped (e.g. a WGAN-GP critic)
                    clip_weights_(trainer.critic_params, opts.clip)
        log.info("%d training images from %s; %s on %s, %s", len(dataset), dataset.describe(),
                 opts.loss, trainer.device, opts.precision)
        if opts.batch_size > len(dataset) and world.is_main:
            # note: the sampler runs on into the next shuffled pass, so such batches still work.
            log.warning("--batch-size %d is larger than the %d training images: every batch "
                        "repeats images", opts.batch_size, len(dataset))
        if world.enabled:
            log.info("%d processes, %d images per process and step", world.size,
                     trainer.local_batch)
        if opts.tensorboard and world.is_main:
            from wgan.tensorboard import TensorBoardLog

            trainer.tensorboard = TensorBoardLog(run_dir, trainer.counters.step)
            log.info("TensorBoard events in %s/tensorboard", run_dir)
        if early:
            trainer.stop_requested = early[0]
        ended = trainer.train()
        if ended != "done":
            log.warning("stopped by %s at generator step %d; resume with: wgan train --resume %s",
                        ended, trainer.counters.step, run_dir)
        else:
            log.info("done: %d generator steps; samples and snapshots in %s",
                     trainer.counters.step, run_dir)
        unfinished = False
        return run_dir, ended
    except TooManyBadImages:
        unfinished = False  # note: kept, as its message sends the user to log.txt
        raise
    finally:
        if trainer is not None and trainer.tensorboard is not None:
            trainer.tensorboard.close()
        logging.getLogger("wgan").removeHandler(handler)
        handler.close()
        if lock is not None:
            lock.release()
        if unfinished and created is not None and (trainer is None or trainer.counters.step == 0):
            rundir.remove_unstarted(created)
