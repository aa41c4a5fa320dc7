"""`wgan eval` and `wgan train --metrics` end to end through the real command line."""

import json

import pytest

from tests.test_cli import FAST, wgan
from wgan import inception

pytestmark = pytest.mark.slow


def table(stdout):
    """{metric: value} from the printed table."""
    rows = [line.split() for line in stdout.strip().splitlines()]
    assert rows[0][:2] == ["metric", "value"]
    return {r[0]: float(r[1]) for r in rows[1:]}


def test_eval_two_image_sets(flowers, hymenoptera):
    quick = ["--image-size", 32, "--num", 32, "--swd-repeats", 1]
    near = table(wgan("eval", "--data", flowers, "--against", flowers, *quick).stdout)
    far = table(wgan("eval", "--data", flowers, "--against", hymenoptera, *quick).stdout)
    assert 0 < near["swd"] < far["swd"]
    again = table(wgan("eval", "--data", flowers, "--against", hymenoptera, *quick).stdout)
    assert again == far


def test_train_with_swd_then_eval_snapshot(flowers, tmp_path):
    wgan("train", "--data", flowers, "--outdir", tmp_path, "--image-size", 16, "--steps", 20,
         "--workers", 0, *FAST, "--metrics", "swd,wasserstein", "--metric-every", 10,
         "--metric-num", 32)
    run_dir = tmp_path / "00000-flowers-128-wgan-16px"
    lines = [json.loads(x) for x in (run_dir / "metric-swd.jsonl").read_text().splitlines()]
    assert [(r["step"], r["snapshot"], r["num"]) for r in lines] == [
        (10, "network-snapshot-0000010.pt", 32), (20, "network-snapshot-0000020.pt", 32)]
    assert all(r["value"] > 0 and set(r["levels"]) == {"16"} for r in lines)
    wasserstein = (run_dir / "metric-wasserstein.jsonl").read_text().splitlines()
    assert len(wasserstein) == 2
    assert (run_dir / "progress.png").stat().st_size > 0
    # The HTML report charts the measurements, not the settings that come with them.
    from wgan.report import read_metrics

    curves = read_metrics(run_dir)
    assert {c.label for c in curves["swd"]} == {"value", "levels/16"}
    assert [c.steps for c in curves["swd"]] == [[10, 20], [10, 20]]
    assert {c.label for c in curves["wasserstein"]} == {"value"}

    # Measuring the last snapshot again on the same images gives the training-time value.
    snapshot = run_dir / "network-snapshot-0000020.pt"
    proc = wgan("eval", "--checkpoint", snapshot, "--data", flowers, "--num", 32)
    assert table(proc.stdout)["swd"] == pytest.approx(lines[-1]["value"], rel=1e-4)
    after = [json.loads(x) for x in (run_dir / "metric-swd.jsonl").read_text().splitlines()]
    assert len(after) == 3 and after[-1]["data"] == str(flowers)
    assert after[-1]["snapshot"] == snapshot.name
    assert after[-1]["value"] == pytest.approx(lines[-1]["value"], rel=1e-9)


def test_fid_with_a_missing_weights_file_names_it(flowers, tmp_path, monkeypatch):
    monkeypatch.setenv(inception.ENV_VAR, str(tmp_path / "none.pt"))
    proc = wgan("eval", "--data", flowers, "--against", flowers, "--metrics", "swd,fid",
                check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert f"$WGAN_INCEPTION={tmp_path / 'none.pt'}: no such file; give" in proc.stderr
    monkeypatch.delenv(inception.ENV_VAR)
    proc = wgan("eval", "--data", flowers, "--against", flowers, "--metrics", "fid",
                "--inception", tmp_path / "none.pt", check=False)
    assert proc.returncode == 1 and "pip" not in proc.stderr
    assert f"--inception {tmp_path / 'none.pt'}: no such file; give" in proc.stderr


def test_eval_refuses_sizes_the_networks_do_not_support(flowers):
    proc = wgan("eval", "--data", flowers, "--against", flowers, "--image-size", 48,
                check=False)
    assert proc.returncode == 2
    assert "Invalid value for --image-size: image size must be a power of two from 16 to " \
           "256, got 48" in proc.stderr


def test_eval_pack_size_mismatch_says_what_to_do_for_eval(small_flowers, tmp_path):
    pack = tmp_path / "f16.pack"
    wgan("pack", small_flowers, "--out", pack, "--size", 16, "--workers", 0)
    proc = wgan("eval", "--data", pack, "--against", small_flowers, "--image-size", 32,
                check=False)
    assert proc.returncode == 1 and "train with" not in proc.stderr
    assert f"{pack} holds 16x16 images with 3 channels, but --image-size is 32; evaluate " \
           "with --image-size 16 or pack again" in proc.stderr
    wgan("train", "--data", pack, "--outdir", tmp_path, "--image-size", 16, "--steps", 1,
         "--workers", 0, *FAST, "--desc", "run")
    snapshot = tmp_path / "00000-run" / "network-snapshot-0000001.pt"
    pack32 = tmp_path / "f32.pack"
    wgan("pack", small_flowers, "--out", pack32, "--size", 32, "--workers", 0)
    proc = wgan("eval", "--checkpoint", snapshot, "--data", pack32, "--num", 8, check=False)
    assert proc.returncode == 1 and "train with" not in proc.stderr
    assert f"{pack32} holds 32x32 images with 3 channels, but the checkpoint's image size is " \
           "16; measure it against a pack made with wgan pack --size 16" in proc.stderr


def test_fid_and_kid_from_the_command_line(flowers, hymenoptera, tmp_path):
    if inception.package_file() is None:
        pytest.skip("the FID Inception weights are not installed")
    proc = wgan("eval", "--data", flowers, "--against", hymenoptera, "--metrics", "fid,kid",
                "--num", 4, "--image-size", 32)
    values = table(proc.stdout)
    # note: four images each give a rough FID; KID is unbiased, so near zero and either sign.
    assert values["fid"] > 50 and abs(values["kid"]) < 1
    assert len(list((tmp_path / "cache" / "metric-stats").glob("*.npy"))) == 1
