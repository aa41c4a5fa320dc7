"""The training loop on real photos: invariants, run folder, exact resume, failures."""

import json
import os
import pickle
import re
import signal
import threading

import pytest
import torch

from wgan import checkpoint
from wgan.errors import WganError
from wgan.options import build_options
from wgan.training import Trainer, TrainingDiverged, run_training

TINY = {
    "image_size": 16, "ngf": 8, "ndf": 8, "batch_size": 8, "workers": 0, "device": "cpu",
    "tick_every": 2, "sample_every": 3, "snapshot_every": 4, "grid_size": 16,
    "warmup_critic_steps": 7, "warmup_generator_steps": 2, "warmup_every": 5,
}


def options(data, outdir, **kw):
    return build_options({**TINY, "data": str(data), "outdir": str(outdir), **kw})


def after_critic_steps(trainer, actions: dict) -> list[int]:
    """Make ``trainer`` call ``actions[n]()`` right after its n-th critic step (counting from
    1); returns the list that counts the critic steps done."""
    step = trainer.critic_step
    calls: list[int] = []

    def critic_step(real, tick):
        step(real, tick)
        calls.append(1)
        if len(calls) in actions:
            actions[len(calls)]()

    trainer.critic_step = critic_step
    return calls


def stop_with(trainer, name: str):
    """An action that asks ``trainer`` to stop as the signal ``name`` would."""
    return lambda: setattr(trainer, "stop_requested", name)


def raise_signal(sig):
    return lambda: signal.raise_signal(sig)


def test_critic_weights_stay_clipped(small_flowers, tmp_path):
    from wgan.dataset import open_source

    opts = options(small_flowers, tmp_path, steps=6)
    trainer = Trainer(opts, open_source(small_flowers, 16), tmp_path)
    seen = []

    def check(module, args):
        seen.append(max(p.abs().max().item() for p in trainer.critic.parameters()))

    trainer.critic.register_forward_pre_hook(check)
    critic_step = trainer.critic_step

    def checked_critic_step(real, tick):
        critic_step(real, tick)
        seen.append(max(p.abs().max().item() for p in trainer.critic.parameters()))

    trainer.critic_step = checked_critic_step
    trainer.train()
    # 2 warm-up steps of 7 critic steps, 3 of 5, and step 5 is a warm-up step again.
    assert trainer.counters.critic_steps == 2 * 7 + 2 * 5 + 7 + 5
    assert len(seen) > 3 * trainer.counters.critic_steps
    assert max(seen) <= 0.01
    # BatchNorm weights start near 1, so the check is not vacuous.
    bn_weight = next(m.weight for m in trainer.critic.modules()
                     if isinstance(m, torch.nn.BatchNorm2d))
    assert bn_weight.abs().max().item() == pytest.approx(0.01)


def test_run_folder_is_complete(small_flowers, tmp_path):
    run_dir, ended = run_training(options(small_flowers, tmp_path, steps=8))
    assert ended == "done" and run_dir.name == "00000-flowers-wgan-16px"
    names = {p.name for p in run_dir.iterdir()}
    for want in ["training_options.json", "log.txt", "stats.jsonl", "reals.png", "progress.png",
                 "fakes0000003.png", "fakes0000006.png", "fakes0000008.png",
                 "network-snapshot-0000004.pt", "network-snapshot-0000008.pt",
                 "training-state-0000008.pt"]:
        assert want in names, want
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [2, 4, 6, 8]
    assert all(r["images"] > 0 and r["wasserstein"] == -r["loss_critic"] for r in stats)
    saved = json.loads((run_dir / "training_options.json").read_text())
    assert saved["lr"] == 5e-5 and saved["clip"] == 0.01 and saved["optimizer"] == "rmsprop"
    assert "step 8/8" in (run_dir / "log.txt").read_text()
    # A second run never reuses the folder.
    again, _ = run_training(options(small_flowers, tmp_path, steps=1))
    assert again.name.startswith("00001-")


def same_values(a, b) -> bool:
    """Nested lists, tuples and dicts of tensors and plain values, compared exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def weights(path):
    state = checkpoint.load(path, checkpoint.STATE_FORMAT)
    return state["generator"], state["critic"], state


@pytest.mark.parametrize("extra", [{}, {"ema_decay": 0.9}])
def test_resume_is_bitwise_exact(small_flowers, tmp_path, extra):
    straight, _ = run_training(options(small_flowers, tmp_path / "a", steps=10, **extra))
    half, _ = run_training(options(small_flowers, tmp_path / "b", steps=5, **extra))
    resumed, ended = run_training(None, resume=half, resume_flags={"steps": 10})
    assert resumed == half and ended == "done"
    g1, c1, s1 = weights(straight / "training-state-0000010.pt")
    g2, c2, s2 = weights(half / "training-state-0000010.pt")
    for a, b in [(g1, g2), (c1, c2)] + ([(s1["ema"], s2["ema"])] if extra else []):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after resume"
    assert s1["counters"] == s2["counters"]
    # The global generators too: seeded from --seed, untouched by opening the data stream.
    assert same_values(s1["global_rng"], s2["global_rng"]), "global generators differ"
    stats = [json.loads(x) for x in (half / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [2, 4, 5, 6, 8, 10]  # no step missing or repeated
    times = [r["time"] for r in stats]
    assert times == sorted(times) and times[0] > 0  # training time goes on over the resume
    assert s2["train_seconds"] >= times[-1]


def test_resume_refuses_changed_model(small_flowers, tmp_path):
    run_dir, _ = run_training(options(small_flowers, tmp_path, steps=2))
    with pytest.raises(WganError, match="--ngf cannot change"):
        run_training(None, resume=run_dir, resume_flags={"ngf": 16})


def test_sigint_saves_a_state_and_stops(small_flowers, tmp_path):
    opts = options(small_flowers, tmp_path, steps=100_000, snapshot_every=0)
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    run_dir, ended = run_training(opts)
    timer.cancel()
    assert ended == "SIGINT"
    state = checkpoint.newest_state(run_dir)
    assert state is not None
    step = checkpoint.load(state, checkpoint.STATE_FORMAT)["counters"]["step"]
    assert 0 < step < 100_000


def test_nan_in_critic_stops_the_run_without_saving(small_flowers, tmp_path):
    from wgan.dataset import open_source

    opts = options(small_flowers, tmp_path, steps=20, snapshot_every=4, tick_every=4)
    trainer = Trainer(opts, open_source(small_flowers, 16), tmp_path)
    original = trainer.generator_step

    def poisoned(tick):
        original(tick)
        if trainer.counters.step == 5:
            with torch.no_grad():
                next(trainer.critic.parameters()).fill_(float("nan"))

    trainer.generator_step = poisoned
    with pytest.raises(TrainingDiverged, match=r"by generator step 8.*training-state-0000004"):
        trainer.train()
    assert [p.name for p in checkpoint.list_files(tmp_path, "training-state")] == [
        "training-state-0000004.pt"]


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_checkpoint_that_runs_code_is_refused(tmp_path, monkeypatch, writer):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    payload = {"format": checkpoint.SNAPSHOT_FORMAT, "x": Boom()}
    if writer == "pickle":
        with open(evil, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, evil)
    with pytest.raises(WganError, match=r"refusing to load .* objects such as (posix|os)\.system"
                                        r" other than tensors"):
        checkpoint.load(evil, checkpoint.SNAPSHOT_FORMAT)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("content", [b"hello\n", b"", b"PK\x03\x04 not really a zip",
                                     b"\x80\x02}q\x00."])
def test_files_that_are_not_checkpoints_are_one_clear_error(tmp_path, content):
    path = tmp_path / "notackpt.pt"
    path.write_bytes(content)
    with pytest.raises(WganError, match="cannot read checkpoint .*notackpt.pt: the file is "
                                        "damaged or not a wgan checkpoint|is not a wgan"):
        checkpoint.load(path, checkpoint.SNAPSHOT_FORMAT)


def test_user_errors_are_clear(tmp_path):
    with pytest.raises(WganError, match="--c-norm batch cannot"):
        build_options({"loss": "wgan-gp", "c_norm": "batch"})
    with pytest.raises(WganError, match="--image-size"):
        build_options({"image_size": 48})
    with pytest.raises(WganError, match="does not exist"):
        run_training(build_options({"data": str(tmp_path / "none"), "outdir": str(tmp_path)}))


def test_global_generators_are_restored_on_resume(small_flowers, tmp_path):
    import random

    import numpy as np

    trainer = Trainer(options(small_flowers, tmp_path, steps=1), None, tmp_path)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    random.gauss(0, 1)  # leaves a cached second value in Python's state
    state = trainer.state_dict()
    checkpoint.save(state, tmp_path / "s.pt")
    want = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    trainer.load_state_dict(checkpoint.load(tmp_path / "s.pt", checkpoint.STATE_FORMAT))
    got = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(1).item())
    assert got == want


def test_full_disk_keeps_the_last_state_and_says_so(small_flowers, tmp_path, monkeypatch):
    run_dir, _ = run_training(options(small_flowers, tmp_path, steps=4))
    before = (run_dir / "training-state-0000004.pt").read_bytes()

    def no_space(obj, f, *args, **kw):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(WganError, match=r"could not write .*training-state-0000004\.pt: No space "
                                        r"left on device; free some disk space"):
        checkpoint.save({"format": checkpoint.STATE_FORMAT}, run_dir / "training-state-0000004.pt")
    assert (run_dir / "training-state-0000004.pt").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    # ...and through the loop: the run stops with that one line, the old state intact.
    with pytest.raises(WganError, match="No space left on device"):
        run_training(None, resume=run_dir, resume_flags={"steps": 8})
    assert checkpoint.step_of(checkpoint.newest_state(run_dir)) == 4


@pytest.mark.parametrize("flags, message", [
    ({"nz": 0}, "--nz must be at least 1"),
    ({"ngf": 0}, "--ngf must be at least 1"),
    ({"loss": "gan", "beta1": 2.0}, r"--beta1 must be in \[0, 1\)"),
    ({"warmup_every": -1}, "--warmup-every must be 0"),
    ({"mlp_hidden": 0}, "--mlp-hidden must be at least 1"),
    ({"loss": "wgan-gp", "gp_weight": -1.0}, "--gp-weight must be 0 or more"),
    ({"n_extra_layers": -1}, "--n-extra-layers must be 0 or more"),
    ({"workers": -5}, "--workers must be -1"),
])
def test_nonsense_values_are_refused_before_anything_is_written(tmp_path, flags, message):
    with pytest.raises(WganError, match=message):
        build_options({"outdir": str(tmp_path / "runs"), **flags})
    assert not (tmp_path / "runs").exists()


def test_config_values_of_the_wrong_type_are_named(tmp_path):
    from wgan.options import load_config_file

    path = tmp_path / "c.json"
    path.write_text('{"steps": "abc"}')
    with pytest.raises(WganError, match="steps must be of type int, got 'abc'"):
        load_config_file(path)
    path.write_text('{"steps": 10, "lr": 1, "warmup": false, "c_norm": null}')
    assert load_config_file(path)["lr"] == 1


def test_outdir_inside_the_data_folder_is_refused(small_flowers):
    with pytest.raises(WganError, match="lies inside --data"):
        build_options({"data": str(small_flowers), "outdir": str(small_flowers / "runs")})


def snapshot_of(opts, data, path):
    """A network snapshot of a freshly built model for ``opts``."""
    from wgan.dataset import open_source

    trainer = Trainer(opts, open_source(data, opts.image_size), path.parent)
    checkpoint.save(trainer.snapshot_dict(), path)
    return path


@pytest.mark.parametrize("theirs, ours, named", [
    ({"ngf": 16}, {}, r"--ngf 16 \(not 8\)"),
    ({"ndf": 16, "nz": 50}, {}, r"--nz 50 \(not 100\), --ndf 16 \(not 8\)"),
    ({}, {"image_size": 32}, r"--image-size 16 \(not 32\)"),
    ({"n_extra_layers": 1}, {}, r"--n-extra-layers 1 \(not 0\)"),
    ({"g_constant_filters": True}, {}, r"--g-constant-filters \(not --no-g-constant-filters\)"),
])
def test_transfer_mismatch_names_the_option(small_flowers, tmp_path, theirs, ours, named):
    snap = snapshot_of(options(small_flowers, tmp_path, **theirs), small_flowers,
                       tmp_path / "network-snapshot-0000000.pt")
    with pytest.raises(WganError, match=rf"^--transfer: the checkpoint does not fit this model: "
                                        rf"it was made with {named}; train with the same options$"):
        run_training(options(small_flowers, tmp_path / "runs", steps=1, **ours), transfer=snap)


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(small_flowers, tmp_path):
    snap = snapshot_of(options(small_flowers, tmp_path, ngf=16), small_flowers,
                       tmp_path / "network-snapshot-0000000.pt")
    outdir = tmp_path / "runs"
    (outdir / "00000-older-run").mkdir(parents=True)
    (outdir / "00000-older-run" / "log.txt").write_text("someone else's run")
    with pytest.raises(WganError, match="--ngf 16"):
        run_training(options(small_flowers, outdir, steps=1), transfer=snap)
    assert sorted(p.name for p in outdir.iterdir()) == ["00000-older-run"]
    assert (outdir / "00000-older-run" / "log.txt").read_text() == "someone else's run"


def test_removing_an_unstarted_run_keeps_files_it_did_not_write(tmp_path):
    from wgan import rundir

    run_dir = rundir.create_run_dir(tmp_path, "x")
    (run_dir / "log.txt").write_text("log")
    (run_dir / "notes.md").write_text("mine")
    rundir.remove_unstarted(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.md"]


def test_divergence_after_the_first_step_keeps_the_folder_and_names_it(small_flowers, tmp_path,
                                                                       monkeypatch):
    original = Trainer.generator_step

    def poisoned(self, tick):
        original(self, tick)
        with torch.no_grad():
            next(self.critic.parameters()).fill_(float("nan"))

    monkeypatch.setattr(Trainer, "generator_step", poisoned)
    with pytest.raises(TrainingDiverged) as caught:
        run_training(options(small_flowers, tmp_path / "runs", steps=4, tick_every=1,
                             warmup=False))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert str(caught.value).endswith(f"the run's log and statistics are in {run_dir}")
    assert "by generator step 2 " in str(caught.value)  # the weights turn NaN after step 1
    assert {"training_options.json", "log.txt", "reals.png", "stats.jsonl"} <= {
        p.name for p in run_dir.iterdir()}


def test_a_batch_larger_than_the_data_is_warned_about_once(small_flowers, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="wgan"):
        run_dir, ended = run_training(options(small_flowers, tmp_path / "a", steps=2,
                                              batch_size=48, warmup=False, tick_every=1))
    assert ended == "done"
    warned = [r.getMessage() for r in caplog.records if "--batch-size" in r.getMessage()]
    assert warned == ["--batch-size 48 is larger than the 40 training images: every batch "
                      "repeats images"]
    assert warned[0] in (run_dir / "log.txt").read_text()
    caplog.clear()
    with caplog.at_level("WARNING", logger="wgan"):
        run_training(options(small_flowers, tmp_path / "b", steps=1, batch_size=40,
                             warmup=False))
    assert not [r for r in caplog.records if "--batch-size" in r.getMessage()]


def test_a_stop_inside_a_long_warm_up_step_resumes_exactly(small_flowers, tmp_path):
    from wgan.dataset import open_source

    # Warm-up steps of 12 critic steps (n_critic is 5), so a stop lands inside one; a state
    # after every step, so the stop's state replaces one of the same step.
    flags = {"steps": 4, "warmup_critic_steps": 12, "warmup_generator_steps": 3,
             "snapshot_every": 1}
    straight, _ = run_training(options(small_flowers, tmp_path / "a", **flags))

    run_dir = tmp_path / "b"
    run_dir.mkdir()
    trainer = Trainer(options(small_flowers, run_dir, **flags), open_source(small_flowers, 16),
                      run_dir)
    # Stop after the 7th critic step of the second generator step.
    calls = after_critic_steps(trainer, {12 + 7: stop_with(trainer, "SIGTERM")})
    assert trainer.train() == "SIGTERM"
    assert len(calls) == 12 + 7  # it did not finish the step
    saved = checkpoint.load(run_dir / "training-state-0000001.pt", checkpoint.STATE_FORMAT)
    assert saved["counters"]["step"] == 1 and saved["counters"]["critic_in_step"] == 7
    assert saved["counters"]["images"] == (12 + 7) * 8

    resumed, ended = run_training(None, resume=run_dir, resume_flags={})
    assert ended == "done"
    g1, c1, s1 = weights(straight / "training-state-0000004.pt")
    g2, c2, s2 = weights(run_dir / "training-state-0000004.pt")
    assert all(torch.equal(g1[k], g2[k]) for k in g1) and all(torch.equal(c1[k], c2[k])
                                                              for k in c1)
    assert s1["counters"] == s2["counters"]


def test_a_second_signal_stops_at_once_without_saving(small_flowers, tmp_path):
    from wgan.dataset import open_source

    trainer = Trainer(options(small_flowers, tmp_path, steps=50, warmup=False),
                      open_source(small_flowers, 16), tmp_path)
    calls = after_critic_steps(trainer, {3: raise_signal(signal.SIGINT),
                                         4: raise_signal(signal.SIGINT)})
    with pytest.raises(WganError, match="SIGINT again: stopped at once without saving; no "
                                        "training state was saved"):
        trainer.train()
    assert len(calls) == 4 and not list(tmp_path.glob("training-state-*"))
    # The handlers are the caller's again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_every_state_counts_every_image_shown(small_flowers, tmp_path):
    # States at steps that are not tick ends (3, 9) still count the images of the open tick.
    run_dir, _ = run_training(options(small_flowers, tmp_path, steps=12, tick_every=5,
                                      snapshot_every=3, keep_states=10))
    states = sorted(run_dir.glob("training-state-*.pt"))
    assert [checkpoint.step_of(p) for p in states] == [3, 6, 9, 12]
    for path in states:
        counters = checkpoint.load(path, checkpoint.STATE_FORMAT)["counters"]
        assert counters["images"] == counters["critic_steps"] * 8, (path.name, counters)
    # ...and a resume from one of them counts on from the right number (once the newer
    # states are gone: resuming an older state beside them is refused, as it would fork).
    with pytest.raises(WganError, match=r"training-state-0000003\.pt is older than the run's "
                                        r"newest state training-state-0000012\.pt"):
        run_training(None, resume=run_dir / "training-state-0000003.pt",
                     resume_flags={"steps": 12})
    for path in states[1:]:
        path.unlink()
    resumed, _ = run_training(None, resume=run_dir / "training-state-0000003.pt",
                              resume_flags={"steps": 12})
    final = checkpoint.load(run_dir / "training-state-0000012.pt", checkpoint.STATE_FORMAT)
    assert final["counters"]["images"] == final["counters"]["critic_steps"] * 8


def test_transfer_clips_an_unclipped_critic_before_any_step(small_flowers, tmp_path):
    # A WGAN-GP critic (no BatchNorm, no clip) has weights well outside [-0.01, 0.01].
    gp = {"loss": "wgan-gp", "c_norm": "none"}
    snap = snapshot_of(options(small_flowers, tmp_path, **gp), small_flowers,
                       tmp_path / "network-snapshot-0000000.pt")
    weights_in = checkpoint.load(snap, checkpoint.SNAPSHOT_FORMAT)["critic"]
    assert max(v.abs().max().item() for v in weights_in.values()) > 0.01
    run_dir, _ = run_training(options(small_flowers, tmp_path / "runs", steps=0, c_norm="none"),
                              transfer=snap)
    critic = checkpoint.load(run_dir / "network-snapshot-0000000.pt",
                             checkpoint.SNAPSHOT_FORMAT)["critic"]
    assert max(v.abs().max().item() for v in critic.values()) <= 0.01


def test_a_run_resumes_from_another_working_folder(small_flowers, tmp_path, monkeypatch):
    monkeypatch.chdir(small_flowers.parent)
    run_dir, _ = run_training(options("flowers", tmp_path / "runs", steps=2))
    saved = json.loads((run_dir / "training_options.json").read_text())
    assert saved["data"] == str(small_flowers)
    monkeypatch.chdir(tmp_path / "runs")
    _, ended = run_training(None, resume=run_dir, resume_flags={"steps": 4})
    assert ended == "done" and checkpoint.step_of(checkpoint.newest_state(run_dir)) == 4
    # A --data given on resume is saved absolute too.
    monkeypatch.chdir(small_flowers.parent)
    run_training(None, resume=run_dir, resume_flags={"steps": 5, "data": "flowers"})
    state = checkpoint.load(checkpoint.newest_state(run_dir), checkpoint.STATE_FORMAT)
    assert state["options"]["data"] == str(small_flowers)


def test_resume_says_when_the_data_changed(small_flowers, tmp_path, caplog):
    run_dir, _ = run_training(options(small_flowers, tmp_path, steps=2))
    for f in sorted((small_flowers / next(iter(sorted(p.name for p in small_flowers.iterdir()))))
                    .iterdir())[:3]:
        f.unlink()
    with caplog.at_level("WARNING", logger="wgan"):
        run_training(None, resume=run_dir, resume_flags={"steps": 3})
    assert "the data has changed: 40 images in the state resumed from, 37 now" in caplog.text


def test_resume_removes_what_a_killed_write_left(small_flowers, tmp_path):
    run_dir, _ = run_training(options(small_flowers, tmp_path, steps=2))
    stale = run_dir / ".network-snapshot-0000003.pt.12345.tmp"
    stale.write_bytes(b"half a snapshot")
    mine = run_dir / ".notes.tmp"  # not one of ours: kept
    mine.write_text("user file")
    live = run_dir / f".report.html.{os.getpid()}.tmp"  # a live process is writing it: kept
    live.write_text("<html>")
    run_training(None, resume=run_dir, resume_flags={"steps": 3})
    assert not stale.exists() and mine.exists() and live.exists()


def test_two_processes_cannot_train_in_one_run_folder(small_flowers, tmp_path):
    from wgan import rundir

    run_dir, _ = run_training(options(small_flowers, tmp_path, steps=2))
    held = rundir.RunLock(run_dir)
    try:
        with pytest.raises(WganError, match=rf"another process \(pid {os.getpid()}\) is "
                                            rf"training in {re.escape(str(run_dir))}; wait"):
            run_training(None, resume=run_dir, resume_flags={"steps": 4})
        assert checkpoint.step_of(checkpoint.newest_state(run_dir)) == 2
    finally:
        held.release()
    _, ended = run_training(None, resume=run_dir, resume_flags={"steps": 4})
    assert ended == "done"


def test_a_hangup_stops_like_sigterm_with_a_saved_state(small_flowers, tmp_path):
    from wgan.dataset import open_source

    trainer = Trainer(options(small_flowers, tmp_path, steps=50, warmup=False),
                      open_source(small_flowers, 16), tmp_path)
    calls = after_critic_steps(trainer, {3: raise_signal(signal.SIGHUP)})
    assert trainer.train() == "SIGHUP"
    assert len(calls) == 5  # the step was finished
    assert checkpoint.step_of(checkpoint.newest_state(tmp_path)) == 1


def test_a_second_signal_inside_a_state_write_still_gives_one_line(small_flowers, tmp_path,
                                                                    monkeypatch):
    from wgan.training import StopNow

    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "opt_c" in obj:  # a training state
            try:  # as when the signal lands inside torch's zip writer
                raise StopNow("SIGINT")
            except StopNow:
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(WganError, match="^SIGINT again: stopped at once without saving; no "
                                        "training state was saved$"):
        run_training(options(small_flowers, tmp_path, steps=4))
    assert not list(tmp_path.rglob("training-state-*")) and not list(tmp_path.rglob(".*.tmp"))


def test_a_signal_while_the_run_is_set_up_stops_it_with_a_state(small_flowers, tmp_path,
                                                                 monkeypatch):
    from wgan import rundir

    attach = rundir.attach_log_file

    def attach_then_signal(run_dir):
        signal.raise_signal(signal.SIGTERM)  # e.g. a scheduler, while the data is opened
        return attach(run_dir)

    monkeypatch.setattr(rundir, "attach_log_file", attach_then_signal)
    run_dir, ended = run_training(options(small_flowers, tmp_path, steps=4))
    assert ended == "SIGTERM"
    state = checkpoint.load(run_dir / "training-state-0000000.pt", checkpoint.STATE_FORMAT)
    assert state["counters"]["step"] == 0 and state["counters"]["critic_steps"] == 0
    # The handlers are the caller's again.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_stop_during_the_last_step_is_a_finished_run(small_flowers, tmp_path):
    from wgan.dataset import open_source

    trainer = Trainer(options(small_flowers, tmp_path, steps=2, warmup=False),
                      open_source(small_flowers, 16), tmp_path)
    # Stop inside the second and last generator step.
    after_critic_steps(trainer, {7: stop_with(trainer, "SIGTERM")})
    assert trainer.train() == "done"
    assert trainer.counters.step == 2
