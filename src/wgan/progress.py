"""Progress bars for long offline jobs (sampling many seeds, export, indexing, packing, metrics).

A bar is drawn only when stderr is a terminal and the command line was not given ``--quiet``;
in logs, pipes and CI it stays silent, so files hold no carriage-return noise. Training does
not use bars: it writes one status line per tick instead.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable

from tqdm import tqdm

# note: set once by the command line (`wgan --quiet`), read by every bar; library callers that
# never touch it get bars on a terminal only.
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def enabled() -> bool:
    """Whether a bar would be drawn now."""
    stream = sys.stderr
    return not _quiet and hasattr(stream, "isatty") and stream.isatty()


def bar(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None,
        unit: str = "it", disable: bool = False, **kwargs) -> tqdm:
    """A ``tqdm`` bar on stderr, disabled (but still iterable and updatable) when not wanted."""
    disable = disable or not enabled()
    size = {} if disable else _size()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                mininterval=0.5, **size, **kwargs)


def _size() -> dict[str, int]:
    """ncols and nrows for a terminal that reports a size of 0 x 0 (a bare pseudo-terminal):
    tqdm would hide its bar there."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return {}  # not a real file descriptor: let tqdm decide
    return {} if size.columns and size.lines else {"ncols": 80, "nrows": 24}
