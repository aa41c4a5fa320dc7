"""Training on several processes with PyTorch's own engine: torchrun, process groups, DDP.

Under ``torchrun`` (or ``wgan train --gpus N``) every process runs the same training loop on
its share of each global batch; DistributedDataParallel averages the gradients, so every rank
holds the same weights after every update (and the clip, applied to identical weights, keeps
them identical). Only rank 0 writes the run folder. One process is a world of size 1, where
everything here is a no-op.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from wgan.errors import WganError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str) -> World:
    """Join the process group torchrun set up (NCCL for CUDA, Gloo for the CPU)."""
    if not launched_by_torchrun():
        return SINGLE
    try:
        rank = int(os.environ["RANK"])
        size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise WganError("WORLD_SIZE is set but RANK is missing or not a number: launch "
                        "with torchrun, which sets both") from None
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return World(rank, size, local_rank)


def shutdown(world: World, finished: bool = False) -> None:
    """Leave the process group. With ``finished`` (the run ended normally) wait for every
    rank first: a rank that tears Gloo down while rank 0 still writes the last files can
    abort in the library's destructors."""
    if world.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks (in place; the tensor itself in a world of one)."""
    if world.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (so that all ranks stop together)."""
    if not world.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj, world: World):
    """Rank 0's ``obj`` on every rank."""
    if not world.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# Signals that make a run finish its step (or critic step), save a state and stop: Ctrl-C,
# a scheduler's or `kill`'s SIGTERM, and the hangup of a closed terminal. The launcher of
# ``--gpus N`` passes them on.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Seconds torchrun gives the workers to finish their step and save a state after a stop
# signal, before it kills them (its own default is 30; a warm-up step on a CPU takes longer).
SHUTDOWN_TIMEOUT = 600


def check_launch(opts, nproc: int) -> None:
    """Refuse, before any process starts, what every worker would refuse (``opts`` are the
    run's ``TrainOptions``); say so when the processes will share the CPU."""
    if opts.batch_size % nproc:
        raise WganError(f"--batch-size {opts.batch_size} must be a multiple of --gpus {nproc}: "
                        "it is the global batch, split evenly between the processes")
    if opts.device == "cpu" or not torch.cuda.is_available():
        log.warning("no CUDA device in use: --gpus %d runs %d processes on the CPU (Gloo)",
                    nproc, nproc)
    elif nproc > torch.cuda.device_count():
        raise WganError(f"--gpus {nproc}: this machine has {torch.cuda.device_count()} GPUs")


def _die_with_parent() -> None:
    """In the torchrun child, before it starts: on Linux, have the kernel send it SIGTERM when
    this launcher dies (even by SIGKILL), so that it stops its workers, who save a state."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``wgan <argv>`` in ``nproc`` processes on this machine through torchrun.

    A stop signal to this process (Ctrl-C, SIGTERM, SIGHUP) is passed on to torchrun, which
    passes it on to the workers; each finishes its step and saves a training state, and this
    process waits for all of them. torchrun runs in a session of its own so that a Ctrl-C in
    the terminal reaches it once, through here, not twice.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "wgan", *argv]
    env = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT), **os.environ}
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    stopped: list[int] = []

    def forward(signum, frame) -> None:
        if stopped:
            log.warning("already stopping: waiting for the training processes to save their "
                        "state")
            return
        log.warning("%s: asking the %d training processes to save a state and stop",
                    signal.Signals(signum).name, nproc)
        stopped.append(signum)
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped and code == 1:
        # note: torchrun reports a forwarded signal as a failure (a SignalException
        # traceback, exit 1) even when every worker saved its state and exited cleanly.
        log.warning("stopped by %s; the training processes' last lines above name the run "
                    "folder to resume", signal.Signals(stopped[0]).name)
        return 0
    return code
