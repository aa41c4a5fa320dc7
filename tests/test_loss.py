import torch

from wgan.loss import (
    CriticSchedule,
    clip_weights_,
    gan_critic_loss,
    wasserstein_estimate,
    wgan_critic_loss,
    wgan_generator_loss,
)


def test_paper_warmup_schedule():
    s = CriticSchedule(n_critic=5, warmup=True)
    got = {step: s.critic_steps(step) for step in range(0, 1600)}
    hundred = {step for step, n in got.items() if n == 100}
    assert hundred == set(range(25)) | {500, 1000, 1500}
    assert all(n == 5 for step, n in got.items() if step not in hundred)


def test_warmup_off_is_constant():
    s = CriticSchedule(n_critic=3, warmup=False)
    assert {s.critic_steps(step) for step in range(2000)} == {3}


def test_wgan_loss_signs():
    real = torch.tensor([2.0, 4.0])  # mean 3
    fake = torch.tensor([-1.0, 0.0])  # mean -0.5
    assert wgan_critic_loss(real, fake).item() == -3.5  # mean(fake) - mean(real)
    assert wasserstein_estimate(real, fake).item() == 3.5  # mean(real) - mean(fake)
    assert wgan_generator_loss(fake).item() == 0.5  # -mean(fake)


def test_critic_descent_raises_the_estimate():
    w = torch.zeros(2, requires_grad=True)
    real, fake = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    before = wasserstein_estimate(real @ w, fake @ w).item()
    wgan_critic_loss(real @ w, fake @ w).backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
    assert wasserstein_estimate(real @ w, fake @ w).item() > before


def test_gan_loss_is_sigmoid_cross_entropy():
    real, fake = torch.tensor([0.3]), torch.tensor([-0.2])
    want = -torch.log(torch.sigmoid(real)) - torch.log(1 - torch.sigmoid(fake))
    assert torch.allclose(gan_critic_loss(real, fake), want.squeeze())


def test_clip_clamps_every_tensor():
    params = [torch.randn(10, 10) for _ in range(3)] + [torch.tensor([5.0, -5.0, 0.001])]
    clip_weights_(params, 0.01)
    for p in params:
        assert p.abs().max().item() <= 0.01
    assert params[-1].tolist()[2] == torch.tensor(0.001).item()
