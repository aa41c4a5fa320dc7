import pytest
import torch

from wgan.networks import (
    DCGANCritic,
    DCGANGenerator,
    ModelConfig,
    build_critic,
    build_generator,
    count_parameters,
)


def test_paper_parameter_counts():
    cfg = ModelConfig(image_size=64, ngf=64, ndf=64, nz=100, n_extra_layers=0)
    assert count_parameters(build_generator(cfg)) == 3_576_704
    assert count_parameters(build_critic(cfg)) == 2_765_568


@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("extra", [0, 1])
def test_shapes_for_every_size(size, extra):
    cfg = ModelConfig(image_size=size, ngf=8, ndf=8, n_extra_layers=extra)
    g, c = build_generator(cfg), build_critic(cfg)
    x = g(torch.randn(3, 100))
    assert x.shape == (3, 3, size, size)
    assert x.abs().max() <= 1.0  # tanh output
    scores = c(x)
    assert scores.shape == (3,)


def test_critic_scores_are_unbounded():
    c = DCGANCritic(16, ndf=8)
    for p in c.parameters():
        torch.nn.init.constant_(p, 0.5)
    scores = c(torch.ones(2, 3, 16, 16))
    assert scores.abs().max() > 1.0  # no sigmoid or tanh at the end


@pytest.mark.parametrize("size", [8, 48, 512])
def test_bad_image_sizes_rejected(size):
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(size)


def test_dcgan_init():
    torch.manual_seed(0)
    g = build_generator(ModelConfig(image_size=64))
    convs = [m.weight for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    w = torch.cat([t.flatten() for t in convs])
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    bw = torch.cat([m.weight.flatten() for m in bns])
    assert bw.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bw.std().item() == pytest.approx(0.02, rel=0.2)


def test_variants_build_and_run():
    cfg = ModelConfig(image_size=32, ngf=16, ndf=16, g_norm="none", g_constant_filters=True,
                      c_norm="layer")
    g, c = build_generator(cfg), build_critic(cfg)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in list(g.modules())
                   + list(c.modules()))
    widths = {m.out_channels for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)}
    assert widths == {16, 3}
    assert c(g(torch.randn(2, 100))).shape == (2,)
    mlp = ModelConfig(image_size=16, g_arch="mlp", c_arch="mlp", mlp_hidden=32)
    assert build_critic(mlp)(build_generator(mlp)(torch.randn(4, 100))).shape == (4,)


def test_linear_layers_keep_the_default_initialisation():
    # The paper's code initialises only conv and BatchNorm layers; its MLPs keep PyTorch's
    # default, uniform in +-1/sqrt(fan_in) (here 1/sqrt(512) = 0.044), not N(0, 0.02).
    from wgan.networks import ModelConfig, build_critic, build_generator

    cfg = ModelConfig(image_size=16, g_arch="mlp", c_arch="mlp")
    for net in (build_generator(cfg), build_critic(cfg)):
        hidden = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][1]
        bound = 1 / hidden.in_features ** 0.5
        assert hidden.weight.abs().max() <= bound
        assert hidden.weight.abs().max() > 0.9 * bound  # uniform, so it gets near the bound
        assert hidden.bias.abs().max() > 0  # not zeroed


def test_the_generator_without_batchnorm_has_no_biases_as_in_the_papers_code():
    from wgan.networks import ModelConfig, build_generator

    net = build_generator(ModelConfig(image_size=32, g_norm="none", g_constant_filters=True,
                                      n_extra_layers=1))
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d,
                                                        torch.nn.ConvTranspose2d))]
    assert len(convs) == 5 and all(m.bias is None for m in convs)
