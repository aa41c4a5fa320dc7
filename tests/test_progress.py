"""Progress bars: drawn on a terminal, silent in pipes and logs and with --quiet."""

import io
import os
import pty
import subprocess
import sys

import pytest
import torch

from wgan import checkpoint, progress
from wgan.networks import ModelConfig, build_critic, build_generator
from wgan.sampling import generate


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def quiet_reset():
    yield
    progress.set_quiet(False)


def test_bar_only_on_a_terminal_and_not_quiet(monkeypatch, quiet_reset):
    g = build_generator(ModelConfig(image_size=16, channels=1, ngf=8))
    z = torch.randn(40, 100)
    for stream, quiet, drawn in ((FakeTerminal(), False, True), (FakeTerminal(), True, False),
                                 (io.StringIO(), False, False)):
        monkeypatch.setattr(sys, "stderr", stream)
        progress.set_quiet(quiet)
        images = generate(g, z, desc="sampling")
        assert images.shape == (40, 1, 16, 16)
        assert ("sampling: 100%" in stream.getvalue() and "40/40" in stream.getvalue()) == drawn
    # Without a description (training's sample grids) there is never a bar.
    monkeypatch.setattr(sys, "stderr", stream := FakeTerminal())
    progress.set_quiet(False)
    generate(g, z)
    assert stream.getvalue() == ""


@pytest.mark.slow
def test_cli_bar_on_a_real_terminal(tmp_path):
    cfg = ModelConfig(image_size=16, channels=1, ngf=8, ndf=8)
    snap = tmp_path / "network-snapshot-0000001.pt"
    checkpoint.save({"format": checkpoint.SNAPSHOT_FORMAT, "model": cfg.to_dict(),
                     "generator": build_generator(cfg).state_dict(),
                     "critic": build_critic(cfg).state_dict(), "step": 1, "images": 0}, snap)

    def run(*flags) -> str:
        """stderr of `wgan [flags] sample ...` written to a pseudo-terminal."""
        main_fd, child_fd = pty.openpty()
        cmd = [sys.executable, "-m", "wgan", *flags, "sample", "--checkpoint", str(snap),
               "--seeds", "0-39", "--out", str(tmp_path / "out")]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=child_fd,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        os.close(child_fd)
        chunks = []
        while True:
            try:
                data = os.read(main_fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(main_fd)
        assert proc.wait(timeout=120) == 0
        return b"".join(chunks).decode(errors="replace")

    shown = run()
    # One bar: seeds are drawn and written a chunk at a time.
    assert "sampling: 100%" in shown and "40/40" in shown and "writing" not in shown
    assert run("--quiet") == ""
    piped = subprocess.run([sys.executable, "-m", "wgan", "sample", "--checkpoint", str(snap),
                            "--seeds", "0-39", "--out", str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""
