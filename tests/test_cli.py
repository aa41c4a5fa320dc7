"""End to end through the real command line, on real photos and the real LSUN LMDB."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def wgan(*args, cwd=None, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.run([sys.executable, "-m", "wgan", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"wgan {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


FAST = ["--ngf", "16", "--ndf", "16", "--batch-size", "16", "--tick-every", "5",
        "--sample-every", "10", "--snapshot-every", "10", "--warmup-generator-steps", "2",
        "--warmup-critic-steps", "10"]


def check_run(run_dir, steps, size):
    names = {p.name for p in run_dir.iterdir()}
    assert {"training_options.json", "log.txt", "stats.jsonl", "reals.png", "progress.png",
            f"fakes{steps:07d}.png", f"network-snapshot-{steps:07d}.pt",
            f"training-state-{steps:07d}.pt"} <= names
    stats = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["step"] == steps and all(np.isfinite(r["wasserstein"]) for r in stats)
    with Image.open(run_dir / "reals.png") as reals:
        assert np.asarray(reals).std() > 20  # real photos in the grid
    grid = np.asarray(Image.open(run_dir / f"fakes{steps:07d}.png"))
    assert grid.shape[0] == 8 * (size + 2) + 2


def test_train_on_flowers_then_sample(flowers, tmp_path):
    proc = wgan("train", "--data", flowers, "--outdir", tmp_path, "--image-size", 32,
                "--steps", 20, "--workers", 2, *FAST)
    run_dir = tmp_path / "00000-flowers-128-wgan-32px"
    check_run(run_dir, 20, 32)
    assert "step 20/20" in proc.stderr and "W " in proc.stderr

    snapshot = run_dir / "network-snapshot-0000020.pt"
    wgan("sample", "--checkpoint", snapshot, "--seeds", "0-3,9", "--out", tmp_path / "each")
    files = sorted(p.name for p in (tmp_path / "each").iterdir())
    assert files == ["seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png",
                     "seed0009.png"]
    wgan("sample", "--checkpoint", snapshot, "--seeds", "9", "--out", tmp_path / "one")
    a = np.asarray(Image.open(tmp_path / "each" / "seed0009.png"))
    b = np.asarray(Image.open(tmp_path / "one" / "seed0009.png"))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    wgan("sample", "--checkpoint", snapshot, "--seeds", "0-63", "--out", tmp_path / "grid.png")
    # The run's own final grid uses seeds 0-63: `wgan sample` reproduces it exactly.
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid.png")),
                          np.asarray(Image.open(run_dir / "fakes0000020.png")))


def test_train_on_lsun_lmdb(lsun_lmdb, tmp_path):
    wgan("train", "--data", lsun_lmdb, "--outdir", tmp_path, "--image-size", 32, "--steps", 10,
         "--workers", 2, *FAST)
    run_dir = tmp_path / "00000-bedroom_train_lmdb-wgan-32px"
    check_run(run_dir, 10, 32)
    wgan("sample", "--checkpoint", run_dir / "network-snapshot-0000010.pt", "--seeds", "0-7",
         "--out", tmp_path / "s.png")
    assert Image.open(tmp_path / "s.png").size == (3 * 34 + 2, 3 * 34 + 2)  # 8 on a 3x3 grid


def test_dry_run_config_and_flags(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"image_size": 32, "lr": 1e-4, "n_critic": 3}))
    out = wgan("train", "--data", tmp_path, "--config", cfg, "--lr", "2e-5", "--dry-run").stdout
    opts = json.loads(out)
    assert opts["image_size"] == 32 and opts["n_critic"] == 3 and opts["lr"] == 2e-5
    assert opts["clip"] == 0.01 and opts["warmup"] is True
    gp = json.loads(wgan("train", "--cfg", "wgan-gp", "--dry-run").stdout)
    assert (gp["loss"], gp["optimizer"], gp["lr"], gp["beta1"], gp["beta2"], gp["clip"],
            gp["c_norm"]) == ("wgan-gp", "adam", 1e-4, 0.0, 0.9, 0.0, "layer")


def test_errors_are_one_line(tmp_path):
    for args, expect in [
        (["train", "--data", tmp_path / "missing", "--outdir", tmp_path], "does not exist"),
        (["train", "--image-size", "48", "--dry-run"], "--image-size"),
        (["train", "--resume", tmp_path, "--transfer", tmp_path / "x.pt"], "cannot be used"),
        (["sample", "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "o"],
         "does not exist"),
        (["sample", "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "s.jpg"],
         "grids are written as PNG"),
        (["sample", "--checkpoint", tmp_path / "none.pt", "--columns", "0", "--out", "g.png"],
         "--columns must be at least 1"),
        (["lsun", "download", "--url", "notaurl", "--out", tmp_path / "dl"],
         "give an http:// or https:// address"),
    ]:
        proc = wgan(*args, check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], lines
        assert "Traceback" not in proc.stderr


def test_help_is_complete():
    out = wgan("train", "--help").stdout
    for flag in ["--image-size", "--batch-size", "--steps", "--n-critic", "--lr", "--clip",
                 "--warmup / --no-warmup", "--seed", "--device", "--sample-every",
                 "--snapshot-every", "--config", "--resume", "--transfer", "--dry-run"]:
        assert flag in out, flag
    for command in ["train", "sample", "demo"]:
        assert wgan(command, "--help").returncode == 0
