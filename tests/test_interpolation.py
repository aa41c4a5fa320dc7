"""Latent walks between seeds: exact ends, the two paths, and the files `wgan sample` writes."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from wgan import checkpoint
from wgan.cli import main
from wgan.errors import WganError
from wgan.networks import ModelConfig, build_critic, build_generator
from wgan.sampling import generate, generate_walk, noise_for_seeds, slerp, walk_codes

CONFIG = ModelConfig(image_size=32, ngf=16, ndf=16)


def trained_like_generator() -> torch.nn.Module:
    torch.manual_seed(5)
    g = build_generator(CONFIG)
    g.train()
    with torch.no_grad():  # BatchNorm statistics away from their initial values
        for _ in range(3):
            g(torch.randn(16, 100))
    return g.eval()


@pytest.mark.parametrize("walk", ["linear", "spherical"])
def test_walk_ends_are_the_seeds_own_samples(walk):
    g = trained_like_generator()
    seeds = [3, 11, 4]
    walks = generate_walk(g, seeds, 7, walk)
    own = generate(g, noise_for_seeds(seeds, 100))
    assert walks.shape == (2, 7, 3, 32, 32)
    assert torch.equal(walks[0, 0], own[0]) and torch.equal(walks[0, -1], own[1])
    assert torch.equal(walks[1, 0], own[1]) and torch.equal(walks[1, -1], own[2])
    # The middle really moves: each frame differs from the next.
    assert all(not torch.equal(walks[0, i], walks[0, i + 1]) for i in range(6))


def test_linear_and_spherical_paths():
    a, b = noise_for_seeds([1, 2], 100)
    lin = walk_codes([1, 2], 100, 5, "linear")[0]
    sph = walk_codes([1, 2], 100, 5, "spherical")[0]
    assert torch.allclose(lin[2], (a + b) / 2, atol=1e-6)
    # Linear steps are equal in length; spherical steps turn by nearly equal angles (exactly
    # equal for codes of equal norm) that add up to the angle between the ends.
    steps = (lin[1:] - lin[:-1]).norm(dim=1)
    assert torch.allclose(steps, steps[0].expand(4), rtol=1e-4)

    def angle(u, v):
        return torch.arccos((u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))).double()

    turns = angle(sph[1:], sph[:-1])
    assert torch.allclose(turns.sum(), angle(a, b), rtol=1e-4)
    assert torch.allclose(turns, turns.mean().expand(4), rtol=0.02)
    unit = slerp(a / a.norm(), b / b.norm(), torch.linspace(0, 1, 5))
    assert torch.allclose(angle(unit[1:], unit[:-1]), angle(a, b).expand(4) / 4, rtol=1e-4)
    # The straight line cuts through low norms; the spherical walk keeps them.
    assert lin[2].norm() < 0.8 * a.norm()
    assert sph[2].norm() > 0.95 * min(a.norm(), b.norm())


def test_walk_errors_name_the_problem():
    with pytest.raises(WganError, match="two seeds"):
        walk_codes([1], 100, 5)
    with pytest.raises(WganError, match="frames"):
        walk_codes([1, 2], 100, 1)


def test_cli_writes_grid_and_animations(tmp_path):
    g = trained_like_generator()
    snap = tmp_path / "network-snapshot-0000010.pt"
    checkpoint.save({"format": checkpoint.SNAPSHOT_FORMAT, "model": CONFIG.to_dict(),
                     "generator": g.state_dict(), "critic": build_critic(CONFIG).state_dict(),
                     "step": 10, "images": 0}, snap)
    run = CliRunner().invoke
    res = run(main, ["sample", "--checkpoint", str(snap), "--interpolate", "--seeds", "7,2,9",
                     "--frames", "6", "--out", str(tmp_path / "walk")])
    assert res.exit_code == 0, res.output
    res = run(main, ["sample", "--checkpoint", str(snap), "--seeds", "7,2,9",
                     "--out", str(tmp_path / "own")])
    assert res.exit_code == 0, res.output
    own = [np.asarray(Image.open(tmp_path / "own" / f"seed{s:04d}.png")) for s in (7, 2, 9)]

    # The grid: one row per walk, its first and last tiles the seeds' own images.
    grid = np.asarray(Image.open(tmp_path / "walk" / "walk-spherical.png"))
    assert grid.shape == (2 * 34 + 2, 6 * 34 + 2, 3)

    def tile(r, c):
        return grid[2 + 34 * r:34 * (r + 1), 2 + 34 * c:34 * (c + 1)]

    assert np.array_equal(tile(0, 0), own[0]) and np.array_equal(tile(0, 5), own[1])
    assert np.array_equal(tile(1, 0), own[1]) and np.array_equal(tile(1, 5), own[2])

    # The GIF: the whole path, shared ends once (6 + 5 frames), shown 4x larger.
    with Image.open(tmp_path / "walk" / "walk-spherical.gif") as gif:
        assert gif.n_frames == 11 and gif.size == (128, 128) and gif.info["loop"] == 0

    # Lossless WebP: frames are exact, so its first and last frames are the seeds' images.
    res = run(main, ["sample", "--checkpoint", str(snap), "--interpolate", "--seeds", "7,2",
                     "--frames", "4", "--walk", "linear", "--out", str(tmp_path / "w.webp")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "w.webp") as webp:
        assert webp.n_frames == 4
        webp.seek(0)
        first = np.asarray(webp.convert("RGB"))[::4, ::4]
        webp.seek(3)
        last = np.asarray(webp.convert("RGB"))[::4, ::4]
    assert np.array_equal(first, own[0]) and np.array_equal(last, own[1])

    res = run(main, ["sample", "--checkpoint", str(snap), "--interpolate", "--seeds", "7",
                     "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and "at least two seeds" in res.output


def save_snapshot(tmp_path):
    g = trained_like_generator()
    snap = tmp_path / "network-snapshot-0000010.pt"
    checkpoint.save({"format": checkpoint.SNAPSHOT_FORMAT, "model": CONFIG.to_dict(),
                     "generator": g.state_dict(), "critic": build_critic(CONFIG).state_dict(),
                     "step": 10, "images": 0}, snap)
    return snap


def test_cli_refuses_grids_and_walks_too_large_to_hold(tmp_path):
    snap = save_snapshot(tmp_path)
    run = CliRunner().invoke
    res = run(main, ["sample", "--checkpoint", str(snap), "--seeds", "0-4096",
                     "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 1
    assert "makes 4,097 images, over the 4,096 one grid or animation holds" in res.output
    res = run(main, ["sample", "--checkpoint", str(snap), "--interpolate", "--seeds", "0-500",
                     "--frames", "10", "--out", str(tmp_path / "w.gif")])
    assert res.exit_code == 1 and "makes 5,000 images" in res.output
    res = run(main, ["sample", "--checkpoint", str(snap), "--seeds", "0-100000000",
                     "--out", str(tmp_path / "each")])
    assert res.exit_code == 1 and "split the job" in res.output
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "each").exists()


def test_cli_out_whose_parent_is_a_file_says_so(tmp_path):
    snap = save_snapshot(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    run = CliRunner().invoke
    for out, args, shown in [
        ("afile/g.png", [], "afile/g.png: its parent"),
        ("afile/each", [], "afile/each: its parent"),
        ("afile/w.gif", ["--interpolate"], "afile/w.gif: its parent"),
        ("afile", [], "afile is a file, not a folder"),
    ]:
        res = run(main, ["sample", "--checkpoint", str(snap), "--seeds", "1,2",
                         "--out", str(tmp_path / out), *args])
        assert res.exit_code == 1 and shown in res.output, res.output
        assert "is a file, not a folder; choose another --out" in res.output
        assert "File exists" not in res.output and "Not a directory" not in res.output
    assert (tmp_path / "afile").read_text() == "not a folder"
