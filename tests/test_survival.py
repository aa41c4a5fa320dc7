"""Runs that survive: SIGKILL at any moment, bad images of every kind, divergence roll-back."""

import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_training import options
from wgan import checkpoint
from wgan.dataset import ImageFolder
from wgan.training import Trainer, TrainingDiverged, run_training


def newest_step(run_dir):
    newest = checkpoint.newest_state(run_dir)
    return checkpoint.step_of(newest) if newest else 0


@pytest.mark.slow
def test_sigkill_always_leaves_a_resumable_state(small_flowers, tmp_path):
    rng = random.Random(1234)
    args = [sys.executable, "-m", "wgan", "train", "--data", str(small_flowers), "--outdir",
            str(tmp_path), "--image-size", "16", "--ngf", "8", "--ndf", "8", "--batch-size", "8",
            "--workers", "0", "--steps", "100000", "--snapshot-every", "2", "--tick-every", "2",
            "--sample-every", "0", "--no-warmup", "--keep-states", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "00000-flowers-wgan-16px"
    last_step = 0
    try:
        for _ in range(3):
            # Wait for a state newer than the last one, then kill at a random moment.
            deadline = time.time() + 60
            while newest_step(run_dir) <= last_step and time.time() < deadline:
                time.sleep(0.1)
            time.sleep(rng.uniform(0.2, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            state_path = checkpoint.newest_state(run_dir)
            state = checkpoint.load(state_path, checkpoint.STATE_FORMAT)  # complete and loadable
            assert state["counters"]["step"] > last_step
            last_step = state["counters"]["step"]
            records = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
            assert records  # whole lines only: every line parses
            proc = subprocess.Popen(args[:4] + ["--resume", str(run_dir)], env=env,
                                    stderr=subprocess.DEVNULL)
        # The last resumed process goes on past the state it resumed from.
        resumed_from = state["counters"]["step"]
        deadline = time.time() + 60
        while time.time() < deadline:
            newest = newest_step(run_dir)
            if newest > resumed_from:
                break
            time.sleep(0.2)
        assert newest > resumed_from
    finally:
        proc.kill()
        proc.wait()


def bad_files(folder):
    """One file of each bad kind, next to real photos."""
    jpeg = next((folder / "daisy").iterdir()).read_bytes()
    (folder / "daisy" / "empty.jpg").write_bytes(b"")
    (folder / "daisy" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "daisy" / "text.png").write_bytes(b"this is not an image\n" * 10)
    Image.new("RGB", (4, 4), (255, 0, 0)).save(folder / "daisy" / "tiny.png")
    # A decompression bomb: a small PNG that claims 20000x20000 pixels.
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    (folder / "daisy" / "bomb.png").write_bytes(buf.getvalue())
    return {"empty.jpg", "truncated.jpg", "text.png", "tiny.png", "bomb.png"}


def test_every_bad_kind_is_skipped_and_counted(small_flowers, tmp_path, caplog):
    names = bad_files(small_flowers)
    ds = ImageFolder(small_flowers, 16)
    bad = {ds.files[i].split("/")[-1] for i in range(len(ds)) if ds[i] is None}
    assert bad == names
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(n in logged for n in names)

    run_dir, ended = run_training(options(small_flowers, tmp_path, steps=12,
                                          max_bad_fraction=0.5))
    stats = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert ended == "done" and stats[-1]["bad_images"] >= len(names)
    log_text = (run_dir / "log.txt").read_text()
    assert log_text.count("bomb.png") == 1  # logged once, however often it is drawn


def test_too_many_bad_images_stop_the_run(small_flowers, tmp_path):
    from wgan.errors import WganError

    names = bad_files(small_flowers)
    with pytest.raises(WganError, match="could not be decoded.*--max-bad-fraction"):
        run_training(options(small_flowers, tmp_path / "runs", steps=50, max_bad_fraction=0.01))
    # The message sends the user to log.txt, so the run folder stays even before step 1.
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert any(n in (run_dir / "log.txt").read_text() for n in names)


def test_divergence_roll_back(small_flowers, tmp_path):
    opts = options(small_flowers, tmp_path, steps=12, snapshot_every=4, tick_every=4,
                   on_divergence="rollback")
    trainer = Trainer(opts, ImageFolder(small_flowers, 16), tmp_path)
    original = trainer.generator_step
    poisoned_once = []

    def poisoned(tick):
        original(tick)
        if trainer.counters.step == 5 and not poisoned_once:
            poisoned_once.append(True)
            with torch.no_grad():
                next(trainer.critic.parameters()).fill_(float("nan"))

    trainer.generator_step = poisoned
    assert trainer.train() == "done"
    assert trainer.rollbacks == 1 and trainer.counters.step == 12
    stats = [json.loads(x)["step"] for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert stats == [4, 8, 12]
    final = checkpoint.load(tmp_path / "training-state-0000012.pt", checkpoint.STATE_FORMAT)
    assert all(torch.isfinite(v).all() for v in final["critic"].values())


def test_divergence_stops_without_roll_back_by_default(small_flowers, tmp_path):
    opts = options(small_flowers, tmp_path, steps=8, snapshot_every=0)
    trainer = Trainer(opts, ImageFolder(small_flowers, 16), tmp_path)
    with torch.no_grad():
        next(trainer.critic.parameters()).fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="nothing was saved"):
        trainer.train()
    assert checkpoint.newest_state(tmp_path) is None
    assert np.all([not p.name.startswith("network-snapshot") for p in tmp_path.iterdir()])


def test_bad_images_at_the_start_do_not_crash_the_reals_grid(small_flowers, tmp_path):
    # Make most photos undecodable, so the first grid-sized draw can be entirely bad.
    files = sorted(p for p in small_flowers.rglob("*") if p.is_file())
    for p in files[: len(files) - 2]:
        p.write_bytes(b"not an image")
    run_dir, ended = run_training(options(small_flowers, tmp_path, steps=2, grid_size=4,
                                          batch_size=2, max_bad_fraction=1.0))
    assert ended == "done"
    reals = Image.open(run_dir / "reals.png")
    assert reals.size[0] > 0


def test_resume_falls_back_past_a_damaged_newest_state(small_flowers, tmp_path, caplog):
    run_dir, _ = run_training(options(small_flowers, tmp_path, steps=8, snapshot_every=4))
    newest = run_dir / "training-state-0000008.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # damaged from outside
    assert checkpoint.find_state(run_dir) == run_dir / "training-state-0000004.pt"
    assert "skipping training-state-0000008.pt" in caplog.text
    run_dir2, ended = run_training(None, resume=run_dir, resume_flags={"steps": 8})
    assert ended == "done" and run_dir2 == run_dir
    assert checkpoint.load(newest, checkpoint.STATE_FORMAT)["counters"]["step"] == 8
    run_training(None, resume=run_dir, resume_flags={"steps": 6})
    assert "already at generator step 8, at or past --steps 6" in caplog.text
