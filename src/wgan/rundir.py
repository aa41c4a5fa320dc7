"""The run folder: numbered creation, the log file, statistics lines and the progress plot."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from wgan.checkpoint import atomic_write
from wgan.errors import WganError

log = logging.getLogger(__name__)
STATS_FILE = "stats.jsonl"
METRIC_GLOB = "metric-*.jsonl"
_RUN_RE = re.compile(r"^(\d{5})-")


def create_run_dir(outdir: str | os.PathLike, desc: str) -> Path:
    """A new ``<outdir>/<NNNNN>-<desc>`` folder, numbered after the highest existing one."""
    outdir = Path(outdir)
    desc = re.sub(r"[^A-Za-z0-9._-]+", "-", desc).strip("-") or "run"
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WganError(f"cannot create output folder {outdir}: {exc.strerror or exc}") from None
    if not os.access(outdir, os.W_OK):
        raise WganError(f"output folder {outdir} is not writable; choose another --outdir")
    ids = [int(m.group(1)) for p in outdir.iterdir() if (m := _RUN_RE.match(p.name))]
    run_id = max(ids, default=-1) + 1
    while True:  # note: mkdir is atomic, so two runs starting together never share a folder
        path = outdir / f"{run_id:05d}-{desc}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            run_id += 1
        except OSError as exc:
            raise WganError(f"cannot create run folder {path}: {exc.strerror or exc}") from None


# What a run writes before its first generator step; see remove_unstarted.
_START_FILES = ("training_options.json", "log.txt", "reals.png", "stats.jsonl", ".lock")


def remove_unstarted(run_dir: Path) -> None:
    """Remove a run folder that this process created and that failed before its first step.

    Only the files a run writes at its start are removed (and TensorBoard's event files); a
    folder that holds anything else is kept, and said so.
    """
    run_dir = Path(run_dir)
    for name in _START_FILES:
        (run_dir / name).unlink(missing_ok=True)
    board = run_dir / "tensorboard"
    if board.is_dir():
        for event in board.glob("events.out.tfevents.*"):
            event.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            board.rmdir()
    try:
        run_dir.rmdir()
    except OSError:
        log.warning("kept %s: it holds files that the failed run did not write", run_dir)
        return
    log.info("removed the run folder %s: the run failed before its first step", run_dir)


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Copy the project's log messages into ``<run_dir>/log.txt`` (appending)."""
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("wgan")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # note: the file keeps INFO even when the console is quiet
    logger.addHandler(handler)
    return handler


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync, so a crash leaves whole lines only."""
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines file (a torn last line is ignored)."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_stats(run_dir: Path, record: dict[str, Any]) -> None:
    append_jsonl(Path(run_dir) / STATS_FILE, record)


def read_stats(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / STATS_FILE)


def metric_files(run_dir: Path) -> dict[str, Path]:
    """``metric-<name>.jsonl`` files of a run folder, by metric name."""
    return {p.name[len("metric-"):-len(".jsonl")]: p
            for p in sorted(Path(run_dir).glob(METRIC_GLOB))}


def truncate_stats(run_dir: Path, last_step: int) -> None:
    """Drop statistics and metric lines after generator step ``last_step`` (written after the
    state resumed from)."""
    for path in [Path(run_dir) / STATS_FILE, *metric_files(run_dir).values()]:
        if not path.is_file():
            continue
        records = [r for r in read_jsonl(path) if (r.get("step") or 0) <= last_step]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write(path, lambda f, text=text: f.write(text.encode()))


def plot_stats(run_dir: Path) -> Path | None:
    """``progress.png``: the Wasserstein estimate (the WGAN paper's key curve), both losses,
    and one panel per measured metric (``metric-<name>.jsonl``), against generator steps.
    Returns the path, or None when there is nothing to plot."""
    records = read_stats(run_dir)
    metrics = {name: rows for name, path in metric_files(run_dir).items()
               if (rows := [r for r in read_jsonl(path) if r.get("step") is not None])}
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(2 + len(metrics), 1, figsize=(7, 6 + 2.5 * len(metrics)),
                             sharex=True, squeeze=False)
    top, bottom = axes[0, 0], axes[1, 0]
    top.plot(steps, [r["wasserstein"] for r in records], color="tab:blue")
    top.set_ylabel("Wasserstein estimate")
    top.set_title(f"{run_dir.name}")
    top.grid(alpha=0.3)
    bottom.plot(steps, [r["loss_critic"] for r in records], label="critic loss")
    bottom.plot(steps, [r["loss_generator"] for r in records], label="generator loss")
    bottom.set_ylabel("loss")
    bottom.legend()
    bottom.grid(alpha=0.3)
    for ax, (name, rows) in zip(axes[2:, 0], metrics.items(), strict=True):
        ax.plot([r["step"] for r in rows], [r["value"] for r in rows], marker="o",
                color="tab:green")
        num = rows[-1].get("num")
        ax.set_ylabel(f"{name} ({num} images)" if num else name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("generator steps")
    fig.tight_layout()
    path = Path(run_dir) / "progress.png"
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (e.g. `wgan report` writing into the run folder)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the hidden ``.NAME.PID.tmp`` files that a killed process left in ``run_dir``
    (an atomic write's unfinished copy; the complete file, if any, is under its own name)."""
    removed = []
    for path in run_dir.glob(".*.tmp"):
        name, _, pid = path.name[1:].rpartition(".")[0].rpartition(".")
        if name and pid.isdigit() and path.is_file() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d unfinished temporary files left by a killed run", len(removed))
    return removed


class RunLock:
    """An exclusive lock on a run folder while a process trains in it, so that a job started
    twice cannot resume the same run at once. POSIX ``flock``: released by the kernel when the
    process ends, however it ends; a no-op where ``fcntl`` is missing."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.file = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        self.file = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            self.file = None
            raise WganError(f"another process (pid {holder}) is training in {run_dir}; wait "
                            "for it to end or stop it before resuming this run") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # note: closing the file releases the lock
            self.file = None
