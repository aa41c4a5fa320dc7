"""Saving and loading snapshots and training states, crash-safely and without unpickling code.

Two kinds of file:
- ``network-snapshot-<step>.pt``: the model config and weights, enough for ``wgan sample``.
- ``training-state-<step>.pt``: everything needed to resume bit for bit.
Both hold only tensors, numbers, strings, lists and dicts, and are read with
``torch.load(weights_only=True)``, which refuses files that would run code.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from wgan.errors import WganError

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = "wgan-snapshot/1"
STATE_FORMAT = "wgan-training-state/1"
_STEP_RE = re.compile(r"^(network-snapshot|training-state)-(\d+)\.pt$")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write via ``write(file)`` to a temporary name, fsync, then rename over ``path``.

    A crash at any moment leaves either the old complete file or the new complete one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_folder(folder: str | os.PathLike, option: str, target: str | os.PathLike | None = None,
                ) -> None:
    """Create ``folder`` (and its parents) for the output given by ``option``.

    A part of the path that is a regular file is named as such; the operating system says
    "File exists" or "Not a directory" there, which reads as if the output were the problem.
    ``target`` is the output file inside ``folder``, when there is one.
    """
    folder = Path(folder)
    shown = target if target is not None else folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.is_file()), None)
        if blocker is None:
            raise WganError(f"{option} {shown}: {folder} cannot be created; choose another "
                            f"{option}") from None
        where = "" if blocker == Path(shown) else f": its parent {blocker}"
        raise WganError(f"{option} {shown}{where} is a file, not a folder; choose another "
                        f"{option}") from None
    except OSError as exc:
        raise WganError(f"{option} {shown}: cannot create the folder {folder}: "
                        f"{exc.strerror or exc}") from None


def save(obj: dict[str, Any], path: str | os.PathLike) -> None:
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except OSError as exc:
        raise WganError(f"could not write {path}: {exc.strerror or exc}; free some disk space "
                        "or choose another --outdir") from None


def load(path: str | os.PathLike, expect: str | tuple[str, ...]) -> dict[str, Any]:
    """Load a file written by ``save`` and check its format tag; refuse anything else."""
    path = Path(path)
    if not path.is_file():
        raise WganError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol": said below
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(exc))
        what = f" such as {found.group(1)}" if found else ""
        raise WganError(f"refusing to load {path}: it holds objects{what} other than tensors "
                        "and plain data; only load files wgan wrote") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, UnicodeDecodeError, zipfile.BadZipFile):
        # note: torch.load on bytes that are not a checkpoint fails in many ways.
        raise WganError(f"cannot read checkpoint {path}: the file is damaged or not a wgan "
                        "checkpoint") from None
    expect = (expect,) if isinstance(expect, str) else expect
    if not isinstance(obj, dict) or obj.get("format") not in expect:
        raise WganError(f"{path} is not a wgan {' or '.join(expect)} file")
    return obj


def step_of(path: Path) -> int | None:
    m = _STEP_RE.match(path.name)
    return int(m.group(2)) if m else None


def list_files(run_dir: str | os.PathLike, kind: str) -> list[Path]:
    """``kind`` files (network-snapshot or training-state) in a run folder, oldest first."""
    found = [p for p in Path(run_dir).glob(f"{kind}-*.pt") if step_of(p) is not None]
    return sorted(found, key=step_of)


def newest_state(run_dir: str | os.PathLike) -> Path | None:
    states = list_files(run_dir, "training-state")
    return states[-1] if states else None


def prune(run_dir: str | os.PathLike, kind: str, keep: int) -> None:
    for old in list_files(run_dir, kind)[:-keep]:
        old.unlink(missing_ok=True)


def find_state(path: str | os.PathLike) -> Path:
    """A training state file, or the newest complete one in a run folder."""
    p = Path(path)
    if p.is_dir():
        states = list_files(p, "training-state")
        if not states:
            raise WganError(f"no training-state-*.pt in {p}; nothing to resume from")
        for state in reversed(states):
            try:
                load(state, STATE_FORMAT)
            except WganError as exc:
                # note: renames are atomic, so this is damage from outside (disk, copying).
                log.warning("skipping %s: %s", state.name, exc)
                continue
            return state
        raise WganError(f"none of the {len(states)} training states in {p} can be read; "
                        "nothing to resume from")
    if not p.is_file():
        raise WganError(f"--resume {p}: no such run folder or training state")
    return p
