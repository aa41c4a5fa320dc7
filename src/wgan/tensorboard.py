"""TensorBoard event files for a run (optional: needs the ``tensorboard`` extra).

The run folder stays the record; this only mirrors it into ``<run>/tensorboard/`` while
training: every numeric field of each ``stats.jsonl`` line as a scalar ``train/<field>``,
every new line of the ``metric-*.jsonl`` files as ``metric/<name>/<field>``, and each
fixed-noise sample grid as the image ``samples/fixed_noise`` (the real grid once, as
``samples/reals``). View it with ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wgan.errors import WganError

log = logging.getLogger(__name__)
SUBDIR = "tensorboard"


def require_tensorboard() -> None:
    """Fail at once, before any training, when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise WganError("--tensorboard needs the tensorboard package: pip install "
                        "'wgan[tensorboard]' (or tensorboard), or leave the flag off") from None


class TensorBoardLog:
    """Writes one run's scalars and sample grids as TensorBoard events."""

    def __init__(self, run_dir: str | Path, resume_step: int = 0) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        # note: on resume, purge_step tells TensorBoard to drop the events the crashed or
        # stopped process wrote after the state we resumed from, as stats.jsonl drops its lines.
        purge = resume_step + 1 if resume_step else None
        self.writer = SummaryWriter(log_dir=str(self.run_dir / SUBDIR), purge_step=purge)
        self.metric_lines_seen: dict[str, int] = {}
        if resume_step:
            from wgan.report import read_metric_records

            # Lines already there were logged by the process that wrote them.
            for path in sorted(self.run_dir.glob("metric-*.jsonl")):
                self.metric_lines_seen[path.name] = len(read_metric_records(path))

    def stats(self, record: dict[str, Any]) -> None:
        """One ``stats.jsonl`` line: each number except the step becomes a scalar."""
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.metrics()
        self.writer.flush()

    def metrics(self) -> None:
        """Lines added to ``metric-*.jsonl`` since the last call, as ``metric/<name>/<field>``."""
        from wgan.report import METRIC_META, METRIC_RE, metric_step, numbers, read_metric_records

        for path in sorted(self.run_dir.glob("metric-*.jsonl")):
            records = read_metric_records(path)
            seen = self.metric_lines_seen.get(path.name, 0)
            name = METRIC_RE.match(path.name).group(1)
            for record in records[seen:]:
                step = metric_step(record)
                if step is None:
                    continue
                for key, value in numbers(record):
                    if key.split("/")[0] not in METRIC_META:
                        self.writer.add_scalar(f"metric/{name}/{key}", value, step)
            self.metric_lines_seen[path.name] = len(records)

    def image(self, tag: str, grid: Image.Image, step: int) -> None:
        """A sample grid (as written to the run folder) at generator step ``step``."""
        arr = np.asarray(grid)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        self.writer.add_image(tag, arr, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
