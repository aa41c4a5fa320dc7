"""The ``wgan`` command line: parse, validate, dispatch. The work lives in the package."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from wgan import __version__
from wgan.errors import WganError
from wgan.options import PRESETS, build_options, load_config_file, option_fields

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
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
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
@_guard
def train(config_file, resume, transfer, dry_run, **kwargs) -> None:
    """Train a WGAN (Algorithm 1 of Arjovsky et al., 2017) on real images.

    Each run gets a new numbered folder under --outdir with training_options.json, log.txt,
    stats.jsonl, reals.png, sample grids fakesNNNNNNN.png, progress.png, network snapshots
    and training states.
    """
    from wgan.training import run_training

    flags = _flags(kwargs)
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
        run_training(None, resume=resume, resume_flags=flags)
        return
    config = load_config_file(config_file) if config_file else None
    opts = build_options(flags, config)
    if dry_run:
        click.echo(json.dumps(opts.to_dict(), indent=2, sort_keys=True))
        return
    run_training(opts, transfer=transfer)


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
@click.option("--seeds", default="0-63", show_default=True,
              help="Seeds to draw, e.g. 0-63 or 1,5,9. Each seed always gives the same image.")
@click.option("--out", required=True, type=click.Path(),
              help="A folder for one PNG per seed, or a file ending in .png for one grid.")
@click.option("--columns", type=int, default=None, help="Grid columns [default: square].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@_guard
def sample(checkpoint_path, seeds, out, columns, device) -> None:
    """Draw images from a trained generator."""
    from wgan import images
    from wgan.options import resolve_device
    from wgan.sampling import generate, noise_for_seeds, parse_seeds
    from wgan.training import load_generator

    seed_list = parse_seeds(seeds)
    generator = load_generator(checkpoint_path, resolve_device(device))
    fakes = generate(generator, noise_for_seeds(seed_list, generator.nz))
    out_path = Path(out)
    try:
        if out_path.suffix.lower() == ".png":
            out_path.parent.mkdir(parents=True, exist_ok=True)
            images.save_png(images.grid(fakes, columns), out_path)
            click.echo(f"wrote a grid of {len(seed_list)} images to {out_path}")
        else:
            out_path.mkdir(parents=True, exist_ok=True)
            for s, img in zip(seed_list, fakes, strict=True):
                images.save_png(images.to_pil(img), out_path / f"seed{s:04d}.png")
            click.echo(f"wrote {len(seed_list)} images to {out_path}/")
    except OSError as exc:
        raise WganError(f"cannot write to {out_path}: {exc.strerror or exc}") from None


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
    path = lsun_mod.download_category(category, set_name, out, retries=retries, **kw)
    click.echo(f"downloaded {path}")
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


if __name__ == "__main__":
    main()
