"""TensorBoard events of a real short run, read back with TensorBoard's own reader."""

import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorboard")
pytest.importorskip("sklearn")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from wgan.demo import load_digits  # noqa: E402
from wgan.options import build_options  # noqa: E402
from wgan.tensorboard import TensorBoardLog  # noqa: E402
from wgan.training import run_training  # noqa: E402


def read_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0,
                                                                          "images": 0})
    events.Reload()
    return events


def stats_lines(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_events_mirror_the_run_folder_across_a_resume(tmp_path):
    flags = {"cfg": "demo", "outdir": str(tmp_path), "steps": 16, "tick_every": 2,
             "sample_every": 4, "snapshot_every": 8, "device": "cpu", "tensorboard": True,
             "warmup_generator_steps": 2, "warmup_critic_steps": 10, "desc": "digits"}
    digits = load_digits(16)
    run_dir, ended = run_training(build_options(flags), dataset=digits)
    assert ended == "done"
    first = stats_lines(run_dir)

    # Go on from the state at step 8, as after a crash before step 16's state was written:
    # steps 9-16 are trained again, and TensorBoard must show the new values only, once each.
    (run_dir / "training-state-0000016.pt").unlink()
    run_training(None, dataset=digits, resume=run_dir / "training-state-0000008.pt",
                 resume_flags={"steps": 16})
    stats = stats_lines(run_dir)
    assert [r["step"] for r in stats] == list(range(2, 17, 2))

    events = read_events(run_dir)
    tags = events.Tags()
    assert {"train/wasserstein", "train/loss_critic", "train/loss_generator",
            "train/sec_per_step", "train/images", "train/bad_images"} <= set(tags["scalars"])
    assert "train/step" not in tags["scalars"]
    for key in ("wasserstein", "loss_critic", "loss_generator", "images"):
        scalars = events.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [r["step"] for r in stats]
        assert np.allclose([s.value for s in scalars], [r[key] for r in stats], rtol=1e-6)
    # The resumed process's values replaced the first ones after step 8 (fresh timings differ).
    speed = events.Scalars("train/sec_per_step")
    assert [s.value for s in speed[4:]] == pytest.approx([r["sec_per_step"] for r in stats[4:]])
    assert [r["sec_per_step"] for r in stats[4:]] != [r["sec_per_step"] for r in first[4:]]

    # Each sample grid, at its step, pixel for pixel the PNG in the run folder.
    assert set(tags["images"]) == {"samples/fixed_noise", "samples/reals"}
    grids = events.Images("samples/fixed_noise")
    assert [g.step for g in grids] == [4, 8, 12, 16]
    for g in grids:
        shown = np.asarray(Image.open(io.BytesIO(g.encoded_image_string)).convert("L"))
        on_disk = np.asarray(Image.open(run_dir / f"fakes{g.step:07d}.png"))
        assert np.array_equal(shown, on_disk)
    assert [r.step for r in events.Images("samples/reals")] == [0]


def test_metric_lines_are_logged_once_each(tmp_path):
    board = TensorBoardLog(tmp_path)
    metric = tmp_path / "metric-swd.jsonl"
    metric.write_text(json.dumps({"snapshot": "network-snapshot-0000100.pt",
                                  "swd": {"mean": 9.5, "16": 12.0}, "num": 500}) + "\n"
                      + '{"step": 200, "swd": {"me')  # a line being written
    board.stats({"step": 100, "wasserstein": 0.5, "time": 3.0})
    with open(metric, "a") as f:
        f.write('an": 7.25, "16": 10.0}, "num": 500}\n')
    board.stats({"step": 200, "wasserstein": 0.25, "time": 6.0})
    board.metrics()  # nothing new: nothing logged twice
    board.close()

    events = read_events(tmp_path)
    assert set(events.Tags()["scalars"]) == {"train/wasserstein", "train/time",
                                             "metric/swd/swd/mean", "metric/swd/swd/16"}
    mean = events.Scalars("metric/swd/swd/mean")
    assert [(s.step, s.value) for s in mean] == [(100, 9.5), (200, 7.25)]
    assert [s.step for s in events.Scalars("train/wasserstein")] == [100, 200]
