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
