import pytest
import torch

from wgan.errors import WganError
from wgan.networks import ModelConfig, build_generator
from wgan.sampling import generate, noise_for_seeds, parse_seeds


def test_parse_seeds():
    assert parse_seeds("0-3,10,7-8") == [0, 1, 2, 3, 10, 7, 8]
    for bad in ("a", "5-2", "1-", ""):
        with pytest.raises(WganError):
            parse_seeds(bad)


def trained_like_generator() -> torch.nn.Module:
    torch.manual_seed(3)
    g = build_generator(ModelConfig(image_size=32, ngf=16))
    # Move BatchNorm's running statistics away from their initial values, as training does.
    g.train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(16, 100))
    return g


def test_same_seed_same_image_whatever_the_batch():
    g = trained_like_generator()
    alone = generate(g, noise_for_seeds([42], 100))
    among = generate(g, noise_for_seeds(list(range(30, 60)), 100))
    assert torch.equal(alone[0], among[42 - 30])
    other = generate(g, noise_for_seeds([41, 42], 100))
    assert torch.equal(other[1], alone[0])
    assert not torch.equal(other[0], other[1])


def test_sampling_changes_nothing_in_the_model():
    g = trained_like_generator()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    g.train()
    generate(g, noise_for_seeds(range(20), 100))
    assert g.training  # mode restored
    after = g.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_seed_ranges_over_the_limit_are_refused_before_any_list_is_built():
    with pytest.raises(WganError, match=r"--seeds 0-100000000 asks for 100,000,001 images, "
                                        r"over the 100,000 one command draws; split the job, "
                                        r"e.g. --seeds 0-99999 then --seeds 100000-199999"):
        parse_seeds("0-100000000")
    with pytest.raises(WganError, match="asks for 11 images, over the 10"):
        parse_seeds("5,0-9", limit=10)
    assert parse_seeds("0-99999") == list(range(100_000))


def test_one_png_per_seed_is_drawn_in_bounded_chunks(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from wgan import sampling

    g = trained_like_generator()
    seeds = [9, 3, 4, 5, 6, 7, 8]
    whole = generate(g, noise_for_seeds(seeds, 100))
    sizes = []
    real_generate = sampling.generate

    def spy(generator, z, desc=None):
        sizes.append(len(z))
        return real_generate(generator, z, desc)

    monkeypatch.setattr(sampling, "generate", spy)
    sampling.save_seed_images(g, seeds, tmp_path, chunk=3)
    assert sizes == [3, 3, 1]
    for s, want in zip(seeds, whole, strict=True):
        got = np.asarray(Image.open(tmp_path / f"seed{s:04d}.png"))
        assert np.array_equal(got, want.permute(1, 2, 0).numpy())
