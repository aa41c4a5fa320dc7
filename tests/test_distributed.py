"""Several training processes on PyTorch's engine: torchrun, Gloo on 127.0.0.1, DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_training import options
from wgan import checkpoint
from wgan.dataset import ImageFolder
from wgan.training import Trainer, run_training

# Batch-size-independent networks (no BatchNorm) in fp32, so that two processes with half
# the batch each compute what one process computes with the whole batch.
SAME = {"image_size": 16, "ngf": 8, "ndf": 8, "batch_size": 8, "workers": 0, "device": "cpu",
        "precision": "fp32", "g_norm": "none", "c_norm": "none", "warmup": False,
        "n_critic": 2, "tick_every": 2, "sample_every": 0, "snapshot_every": 4, "steps": 4,
        "lr": 1e-3}


def torchrun(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": str(Path(__file__).parents[1]) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def single_process(data, outdir, **kw):
    trainer = Trainer(options(data, outdir, **{**SAME, **kw}), ImageFolder(data, 16), outdir)
    trainer.train()
    return trainer


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["wgan", "wgan-gp"])  # the penalty pairs real k with fake k
def test_two_processes_equal_one_with_the_same_global_batch(small_flowers, tmp_path, loss):
    torchrun(str(Path(__file__).with_name("ddp_worker.py")), str(small_flowers),
             str(tmp_path), repr({**SAME, "loss": loss}))
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")

    # The replicas never drift: bitwise the same weights on both ranks.
    for net in ("generator", "critic"):
        for name, value in rank0[net].items():
            assert torch.equal(value, rank1[net][name]), f"{net}.{name} differs between ranks"
    assert rank0["counters"]["images"] == 4 * 2 * 8  # global images, counted once

    # One process with the whole batch computes the same, up to summation order.
    (tmp_path / "one").mkdir()
    one = single_process(small_flowers, tmp_path / "one", loss=loss)
    for name, value in one.generator.state_dict().items():
        torch.testing.assert_close(rank0["generator"][name], value, rtol=1e-4, atol=1e-5)
    # ...and not what one process computes with half the batch.
    (tmp_path / "half").mkdir()
    half = single_process(small_flowers, tmp_path / "half", batch_size=4, loss=loss)
    assert any(not torch.allclose(rank0["generator"][n], v, rtol=1e-4, atol=1e-5)
               for n, v in half.generator.state_dict().items())


@pytest.mark.slow
def test_torchrun_cli_writes_one_run_folder_and_resumes_in_one_process(small_flowers,
                                                                         tmp_path):
    flags = []
    for name, value in SAME.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else [
            flag, str(value)]
    outdir = tmp_path / "runs"
    # --gpus N launches `torchrun --nproc-per-node N -m wgan train ...` (here on CPUs).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run([sys.executable, "-m", "wgan", "train", "--gpus", "2", "--data",
                           str(small_flowers), "--outdir", str(outdir), *flags], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    launching = next(line for line in done.stderr.splitlines() if line.startswith("launching"))
    assert "torch.distributed.run" in launching and "--gpus" not in launching
    assert "no CUDA device in use: --gpus 2 runs 2 processes on the CPU (Gloo)" in done.stderr
    runs = list(outdir.iterdir())
    assert len(runs) == 1, runs
    run_dir = runs[0]
    stats = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4]
    assert stats[-1]["images"] == 4 * 2 * 8
    assert (run_dir / "log.txt").read_text().count("run folder") == 1

    # Resume with one process and the same global batch: it goes on as one process would.
    done = subprocess.run([sys.executable, "-m", "wgan", "train", "--resume", str(run_dir),
                           "--steps", "8"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = checkpoint.load(run_dir / "training-state-0000008.pt", checkpoint.STATE_FORMAT)

    straight, _ = run_training(options(small_flowers, tmp_path / "straight",
                                       **{**SAME, "steps": 8}))
    want = checkpoint.load(straight / "training-state-0000008.pt", checkpoint.STATE_FORMAT)
    assert resumed["counters"] == want["counters"]
    for name, value in want["generator"].items():
        torch.testing.assert_close(resumed["generator"][name], value, rtol=1e-4, atol=1e-5)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_a_signal_to_the_launcher_stops_every_process_with_a_saved_state(small_flowers,
                                                                           tmp_path, sig):
    flags = []
    for name, value in {**SAME, "steps": 100_000, "snapshot_every": 0}.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else [
            flag, str(value)]
    outdir = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        launcher = subprocess.Popen([sys.executable, "-m", "wgan", "train", "--gpus", "2",
                                     "--data", str(small_flowers), "--outdir", str(outdir),
                                     *flags], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 180
        while not list(outdir.glob("*/stats.jsonl")) and time.monotonic() < deadline:
            assert launcher.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert list(outdir.glob("*/stats.jsonl")), "training did not start"
        assert len(processes_mentioning(str(outdir))) >= 3  # launcher, torchrun, 2 workers
        launcher.send_signal(getattr(signal, sig))
        launcher.wait(timeout=180)
        # note: after a SIGKILL the launcher is gone at once; its children stop on their own.
        deadline = time.monotonic() + 120
        while processes_mentioning(str(outdir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = processes_mentioning(str(outdir))
    finally:
        for pid in [launcher.pid, *processes_mentioning(str(outdir))]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    err = log.read_text()
    if sig == "SIGKILL":
        assert launcher.returncode == -signal.SIGKILL
    else:
        assert launcher.returncode == 0, err[-3000:]
    assert "--resume" in err  # the workers' last line
    # Nothing is left running, and the workers saved a state before they stopped.
    assert left == []
    states = list(outdir.glob("*/training-state-*.pt"))
    assert len(states) == 1, states
    step = checkpoint.load(states[0], checkpoint.STATE_FORMAT)["counters"]["step"]
    assert 2 <= step < 100_000


def test_gpus_refuses_an_uneven_batch_before_starting_any_process(small_flowers, tmp_path):
    from click.testing import CliRunner

    from wgan.cli import main

    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["train", "--gpus", "3", "--batch-size", "16", "--data",
                                       str(small_flowers), "--outdir", str(out)])
    assert result.exit_code != 0
    assert "--batch-size 16 must be a multiple of --gpus 3" in result.output
    assert result.output.count("must be a multiple") == 1
    assert "torch.distributed.run" not in result.output and not out.exists()


def test_gpus_checks_a_resumed_run_before_starting_any_process(small_flowers, tmp_path):
    from click.testing import CliRunner

    from wgan.cli import main

    run_dir, _ = run_training(options(small_flowers, tmp_path, **{**SAME, "steps": 2}))
    result = CliRunner().invoke(main, ["train", "--resume", str(run_dir), "--gpus", "3"])
    assert result.exit_code != 0
    assert "--batch-size 8 must be a multiple of --gpus 3" in result.output
    assert "torch.distributed.run" not in result.output
    # A run another process trains in is refused in one line, before torchrun too.
    from wgan.rundir import RunLock

    held = RunLock(run_dir)
    try:
        result = CliRunner().invoke(main, ["train", "--resume", str(run_dir), "--gpus", "2"])
    finally:
        held.release()
    assert result.exit_code != 0 and "is training in" in result.output
    assert "torch.distributed.run" not in result.output
