"""The variants beyond clipping: WGAN-GP, the GAN loss, the EMA generator, the paper's presets."""

import json

import pytest
import torch
from torch import nn

from tests.test_training import options
from wgan import checkpoint, loss
from wgan.dataset import ImageFolder
from wgan.errors import WganError
from wgan.loss import gradient_penalty
from wgan.options import PRESETS, build_options
from wgan.training import Trainer, run_training


class LinearCritic(nn.Module):
    """D(x) = <w, x> + b over all of a sample's pixels and channels."""

    def __init__(self, shape, w):
        super().__init__()
        self.shape = shape
        self.linear = nn.Linear(w.numel(), 1)
        with torch.no_grad():
            self.linear.weight.copy_(w.reshape(1, -1))

    def forward(self, x):
        return self.linear(x.reshape(x.shape[0], -1)).squeeze(1)


def test_penalty_is_zero_for_a_unit_norm_linear_critic():
    shape = (3, 8, 8)
    w = torch.randn(shape)
    real, fake = torch.randn(16, *shape), torch.randn(16, *shape)

    unit = LinearCritic(shape, w / w.norm())
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)

    # The same weight normalised per pixel (over channels only) has a norm of sqrt(64) per
    # sample, so a per-sample norm over all pixels must see it: (8 - 1)^2 = 49.
    per_pixel = LinearCritic(shape, w / w.norm(dim=0, keepdim=True))
    assert gradient_penalty(per_pixel, real, fake).item() == pytest.approx(49.0, rel=1e-5)


def test_penalty_is_fp32_under_autocast():
    critic = LinearCritic((3, 4, 4), torch.randn(3, 4, 4) / 7)
    real, fake = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    want = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gradient_penalty(critic, real.bfloat16(), fake.bfloat16(),
                               torch.Generator().manual_seed(0))
    assert got.dtype == torch.float32
    # Only the inputs' rounding to bf16 differs, not the computation.
    assert got.item() == pytest.approx(want.item(), rel=2e-2)


def test_wgan_gp_with_batchnorm_critic_is_refused():
    with pytest.raises(WganError, match="--c-norm batch.*--loss wgan-gp"):
        build_options({"loss": "wgan-gp", "c_norm": "batch"})
    opts = build_options({"cfg": "wgan-gp"})
    assert (opts.c_norm, opts.clip, opts.optimizer, opts.lr, opts.beta1, opts.beta2) == (
        "layer", 0.0, "adam", 1e-4, 0.0, 0.9)


def test_ema_matches_its_closed_form(small_flowers, tmp_path):
    decay = 0.9
    opts = options(small_flowers, tmp_path, steps=1, ema_decay=decay, warmup=False)
    trainer = Trainer(opts, ImageFolder(small_flowers, 16), tmp_path)
    start = [p.detach().clone() for p in trainer.generator.parameters()]
    history = []
    for _ in range(4):
        with torch.no_grad():
            for p in trainer.generator.parameters():
                p.add_(torch.randn_like(p))
        history.append([p.detach().clone() for p in trainer.generator.parameters()])
        trainer.update_ema()
    # ema_k = decay^k ema_0 + (1 - decay) sum_i decay^(k - i) w_i
    k = len(history)
    for j, e in enumerate(trainer.ema.parameters()):
        want = decay**k * start[j]
        for i, weights in enumerate(history, start=1):
            want = want + (1 - decay) * decay ** (k - i) * weights[j]
        torch.testing.assert_close(e, want, rtol=1e-5, atol=1e-6)
    # Buffers (BatchNorm statistics) are copied, not averaged.
    for e, b in zip(trainer.ema.buffers(), trainer.generator.buffers(), strict=True):
        assert torch.equal(e, b)


def test_ema_is_used_for_samples_and_snapshots(small_flowers, tmp_path):
    run_dir, _ = run_training(options(small_flowers, tmp_path, steps=4, ema_decay=0.5))
    state = checkpoint.load(run_dir / "training-state-0000004.pt", checkpoint.STATE_FORMAT)
    snap = checkpoint.load(run_dir / "network-snapshot-0000004.pt", checkpoint.SNAPSHOT_FORMAT)
    for name, value in snap["generator"].items():
        assert torch.equal(value, state["ema"][name])
    assert any(not torch.equal(state["ema"][n], state["generator"][n])
               for n in state["generator"] if n.endswith("weight"))


@pytest.mark.parametrize("cfg", ["paper-mlp", "paper-nobn", "paper-mlp-gan", "paper-nobn-gan",
                                 "wgan-gp"])
def test_presets_train_on_photos(cfg, small_flowers, tmp_path):
    # Each net gets only the size options it uses (the others would be refused).
    mlp = {"mlp_hidden": 32, "ngf": None} if PRESETS[cfg].get("g_arch") == "mlp" else {}
    opts = options(small_flowers, tmp_path, cfg=cfg, steps=3, warmup=False, **mlp)
    trainer = Trainer(opts, ImageFolder(small_flowers, 16), tmp_path)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    assert trainer.train() == "done"
    after = list(trainer.generator.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    stats = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["step"] == 3
    if PRESETS[cfg].get("g_norm") == "none":
        assert not any(isinstance(m, nn.BatchNorm2d) for m in trainer.generator.modules())
    if PRESETS[cfg].get("g_arch") == "mlp":
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in trainer.generator.modules())


@pytest.mark.parametrize("objective", ["wgan", "wgan-gp", "gan"])
def test_only_the_gan_loss_uses_sigmoid_cross_entropy(objective, small_flowers, tmp_path,
                                                      monkeypatch):
    calls = []
    original = torch.nn.functional.binary_cross_entropy_with_logits
    sigmoid = torch.sigmoid

    def spy_bce(*args, **kw):
        calls.append("bce")
        return original(*args, **kw)

    def spy_sigmoid(*args, **kw):
        calls.append("sigmoid")
        return sigmoid(*args, **kw)

    monkeypatch.setattr(loss.F, "binary_cross_entropy_with_logits", spy_bce)
    monkeypatch.setattr(torch, "sigmoid", spy_sigmoid)
    opts = options(small_flowers, tmp_path, loss=objective, steps=2, warmup=False)
    trainer = Trainer(opts, ImageFolder(small_flowers, 16), tmp_path)
    trainer.train()
    if objective == "gan":
        # Two terms per critic step (real and fake) and one per generator step.
        assert calls.count("bce") == 2 * trainer.counters.critic_steps + 2
    else:
        assert calls == []


def test_critic_steps_per_generator_step_follow_the_loss():
    assert build_options({}).n_critic == 5
    assert build_options({"loss": "wgan-gp"}).n_critic == 5
    assert build_options({"cfg": "paper-gan"}).n_critic == 1  # DCGAN alternates 1:1
    assert build_options({"cfg": "paper-gan", "n_critic": 2}).n_critic == 2


@pytest.mark.parametrize("flags, message", [
    ({"loss": "wgan-gp", "clip": 0.01},
     "--clip 0.01 cannot be used with --loss wgan-gp: weight clipping and a gradient penalty "
     "are alternatives"),
    ({"cfg": "wgan-gp", "clip": 0.05}, "--clip 0.05 cannot be used with --loss wgan-gp"),
    ({"g_arch": "mlp", "g_constant_filters": True},
     "--g-constant-filters cannot be used with --g-arch mlp"),
    ({"cfg": "paper-mlp", "g_constant_filters": True},
     "--g-constant-filters cannot be used with --g-arch mlp"),
])
def test_options_that_would_be_ignored_are_refused(flags, message):
    with pytest.raises(WganError, match=message):
        build_options(flags)


def test_the_alternatives_alone_still_resolve():
    assert build_options({"loss": "wgan-gp", "clip": 0.0}).clip == 0.0
    assert build_options({"loss": "wgan", "clip": 0.05}).clip == 0.05
    assert build_options({"g_constant_filters": True}).g_constant_filters is True
    assert build_options({"g_arch": "mlp"}).g_constant_filters is False


@pytest.mark.parametrize("flags, message", [
    ({"g_arch": "mlp", "ngf": 32}, r"^--ngf 32 has no effect with --g-arch mlp \(the MLP "
                                   r"generator does not use it\); drop --ngf or change the "
                                   r"architecture$"),
    ({"cfg": "paper-mlp", "g_norm": "none"}, "--g-norm none has no effect with --g-arch mlp"),
    ({"c_arch": "mlp", "ndf": 32}, "--ndf 32 has no effect with --c-arch mlp"),
    ({"c_arch": "mlp", "c_norm": "layer"}, "--c-norm layer has no effect with --c-arch mlp"),
    ({"mlp_hidden": 32}, r"--mlp-hidden 32 has no effect with --g-arch dcgan and --c-arch dcgan "
                         r"\(only MLP networks use it\)"),
    ({"g_arch": "mlp", "c_arch": "mlp", "n_extra_layers": 1},
     "--n-extra-layers 1 has no effect with --g-arch mlp and --c-arch mlp"),
])
def test_model_flags_the_architecture_ignores_are_refused(flags, message):
    with pytest.raises(WganError, match=message):
        build_options(flags)


def test_model_flags_that_are_used_or_left_at_their_default_pass():
    assert build_options({"cfg": "paper-mlp", "ndf": 32, "mlp_hidden": 64}).ndf == 32
    assert build_options({"g_arch": "mlp", "ngf": 64}).g_arch == "mlp"  # the default: harmless
    assert build_options({"c_arch": "mlp", "n_extra_layers": 1}).n_extra_layers == 1
    # A config file (a run's saved options hold every field) is not checked this way.
    saved = build_options({"cfg": "paper-mlp"}).to_dict()
    saved.pop("resolved_device")
    assert build_options({}, {**saved, "ngf": 16}).ngf == 16
