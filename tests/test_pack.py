"""Pack files: every image once in a stable order, bad images counted, interruption detected."""

import json

import pytest
import torch
from click.testing import CliRunner

from wgan.cli import main
from wgan.dataset import ImageFolder, batch_stream, open_source
from wgan.errors import WganError
from wgan.pack import HEADER_BYTES, PackImages, pack_source, read_header
from wgan.training import run_training

SIZE = 16


def pack(folder, out, size=SIZE, **kwargs):
    return pack_source(ImageFolder(folder, size), out, show_progress=False, **kwargs)


def test_pack_holds_every_image_once_in_source_order(small_flowers, tmp_path):
    out = tmp_path / "f.pack"
    header = pack(small_flowers, out, chunk=7, workers=2)
    source = ImageFolder(small_flowers, SIZE)
    assert header["complete"] and header["count"] == len(source) == 40 and header["bad"] == 0
    packed = open_source(out, SIZE)
    assert isinstance(packed, PackImages) and len(packed) == 40
    expected = torch.stack([source[i] for i in range(len(source))])
    assert torch.equal(packed.images, expected)
    assert out.stat().st_size == HEADER_BYTES + 40 * 3 * SIZE * SIZE

    # The same command again gives the same images in the same order.
    again = tmp_path / "g.pack"
    pack(small_flowers, again, chunk=40)
    assert out.read_bytes()[HEADER_BYTES:] == again.read_bytes()[HEADER_BYTES:]

    # One epoch of the training stream (5 batches of 8) shows each packed image exactly once.
    stream = batch_stream(packed, 8, seed=3)
    batches = [next(stream)[0] for _ in range(5)]
    rows = torch.cat(batches)
    resumed = batch_stream(packed, 8, seed=3, start=2)  # a resumed run draws the same batches
    assert all(torch.equal(next(resumed)[0], b) for b in batches[2:])
    matches = (rows[:, None] == expected[None]).flatten(2).all(2)  # [drawn, packed]
    assert matches.sum(1).tolist() == [1] * 40  # each drawn image is one packed image
    assert matches.sum(0).tolist() == [1] * 40  # each packed image is drawn once


def test_bad_images_are_left_out_and_counted(small_flowers, tmp_path):
    daisy = small_flowers / "daisy"
    photo = next(daisy.iterdir()).read_bytes()
    (daisy / "broken.jpg").write_bytes(b"not an image")
    (daisy / "half.jpg").write_bytes(photo[: len(photo) // 2])
    out = tmp_path / "f.pack"
    header = pack(small_flowers, out, chunk=5, max_bad_fraction=0.5)
    assert header["bad"] == 2 and header["count"] == 40 and header["source_records"] == 42
    assert sorted(n.rsplit("/", 1)[1] for n in header["bad_names"]) == ["broken.jpg", "half.jpg"]
    images = PackImages(out).images
    assert images.flatten(1).float().std(1).min() > 5  # no zero-filled or constant slot
    source = ImageFolder(small_flowers, SIZE)
    good = [x for x in (source[i] for i in range(len(source))) if x is not None]
    assert torch.equal(images, torch.stack(good))

    # Past the limit the pack stops, unfinished, and says why.
    with pytest.raises(WganError, match="max-bad-fraction"):
        pack(small_flowers, tmp_path / "strict.pack", chunk=5, max_bad_fraction=0.01)
    assert not read_header(tmp_path / "strict.pack")["complete"]


def test_header_stays_within_one_page_with_long_bad_names(small_flowers, tmp_path):
    from wgan.pack import HEADER_PAGE, _fresh_header, _header_bytes

    header = _fresh_header(ImageFolder(small_flowers, SIZE), draft=True)
    header["bad"] = 500
    header["bad_names"] = [f"{'x' * 290}/{i}.jpg" for i in range(20)]
    raw = _header_bytes(header)
    assert len(raw) == HEADER_PAGE and raw.endswith(b"\n")
    parsed = json.loads(raw[9:])
    assert parsed["bad"] == 500 and 5 <= len(parsed["bad_names"]) < 20
    assert parsed["bad_names"] == header["bad_names"]


class Interrupt(Exception):
    pass


def test_interrupted_pack_is_detected_then_finished(small_flowers, tmp_path):
    out = tmp_path / "f.pack"

    def stop_after_two_chunks(header):
        if header["done"] >= 16:
            raise Interrupt

    with pytest.raises(Interrupt):
        pack(small_flowers, out, chunk=8, on_chunk=stop_after_two_chunks)
    header = read_header(out)
    assert not header["complete"] and header["done"] == 16 and header["count"] == 16
    with pytest.raises(WganError, match="unfinished pack"):
        open_source(out, SIZE)

    # Run again: it goes on from record 16 and ends with the same file as an unbroken run.
    seen = []
    header = pack(small_flowers, out, chunk=8, on_chunk=lambda h: seen.append(h["done"]))
    assert seen[0] == 24 and header["complete"] and header["count"] == 40
    whole = tmp_path / "whole.pack"
    pack(small_flowers, whole, chunk=8)
    assert out.read_bytes()[HEADER_BYTES:] == whole.read_bytes()[HEADER_BYTES:]

    # A complete pack cut short is refused too.
    cut = tmp_path / "cut.pack"
    cut.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(WganError, match="cut short"):
        open_source(cut, SIZE)


def test_pack_refuses_to_clobber(small_flowers, tmp_path):
    out = tmp_path / "f.pack"
    pack(small_flowers, out)
    with pytest.raises(WganError, match="already a complete pack"):
        pack(small_flowers, out)

    # --overwrite makes a new file: a reader of the old one keeps its images.
    reader = PackImages(out)
    before = reader.images.clone()
    first, *_, last = sorted((small_flowers / "daisy").iterdir())
    first.write_bytes(last.read_bytes())  # same count, other pixels
    pack(small_flowers, out, overwrite=True)
    assert torch.equal(reader.images, before)
    assert torch.equal(PackImages(out).images[0], before[7])
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(WganError, match="not a pack file"):
        pack(small_flowers, other)
    assert other.read_text() == "keep me"
    with pytest.raises(WganError, match="--image-size is 32"):
        open_source(out, 32)


def test_cli_pack_then_train(small_flowers, tmp_path):
    out = tmp_path / "flowers.pack"
    runner = CliRunner()
    result = runner.invoke(main, ["pack", str(small_flowers), "--out", str(out), "--size", "16",
                                  "--workers", "0"])
    assert result.exit_code == 0, result.output
    header = json.loads(out.read_bytes()[9:HEADER_BYTES].decode())
    assert header["count"] == 40 and header["size"] == 16 and header["source_kind"] == "folder"
    assert "bicubic" in header["resize"] and header["jpeg_draft"] is True

    result = runner.invoke(main, ["pack", str(small_flowers), "--out", str(out), "--size", "48"])
    assert result.exit_code == 2 and "power of two" in result.output

    from tests.test_training import options

    opts = options(out, tmp_path, steps=4, workers=0)
    run_dir, ended = run_training(opts)
    stats = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert ended == "done" and stats[-1]["images"] > 0 and stats[-1]["bad_images"] == 0
    assert 0 <= stats[-1]["data_wait"] < 0.5
    assert run_dir.name.endswith("flowers-wgan-16px")


def test_pack_goes_to_the_device_when_it_fits(small_flowers, tmp_path, monkeypatch):
    out = tmp_path / "f.pack"
    pack(small_flowers, out)
    packed = PackImages(out)
    nbytes = packed.images.nbytes
    cpu = torch.device("cpu")  # stands in for a CUDA device: the same copy and gather code

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * nbytes - 2, 10**12))
    assert packed.on_device(cpu) is None  # more than half the free memory: stays on the host

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * nbytes, 10**12))
    held = packed.on_device(cpu)
    assert held is not None and torch.equal(held, packed.images)
    assert held.data_ptr() != packed.images.data_ptr()  # a copy, not the mapped file
    assert packed.on_device(cpu) is held  # copied once, however many streams ask
    assert "_device_images" not in packed.__getstate__()  # workers never receive the copy

    # The stream gathers the same batches from either copy.
    from wgan.dataset import InfiniteBatchSampler, _gather_batches

    a = _gather_batches(held, InfiniteBatchSampler(40, 8, seed=1), pin_memory=False)
    b = batch_stream(packed, 8, seed=1)
    for _ in range(6):
        assert torch.equal(next(a)[0], next(b)[0])


def test_pack_lmdb_and_csv_sources_and_read_from_workers(lsun_lmdb, small_flowers, tmp_path):
    lmdb_source = open_source(lsun_lmdb, SIZE)
    out = tmp_path / "lsun.pack"
    header = pack_source(lmdb_source, out, chunk=64, show_progress=False)
    assert header["source_kind"] == "lmdb" and header["count"] == 196
    packed = PackImages(out)
    assert torch.equal(packed.images[[0, 77, 195]],
                       torch.stack([lmdb_source[i] for i in (0, 77, 195)]))

    # Many worker processes read one pack at once, each through its own mapping.
    loader = torch.utils.data.DataLoader(packed, batch_size=49, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), packed.images)

    listed = sorted((small_flowers / "tulip").iterdir())[:5]
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("".join(f"tulip/{p.name},1\n" for p in reversed(listed)))
    csv_source = open_source(csv_path, SIZE, data_root=small_flowers)
    header = pack_source(csv_source, tmp_path / "csv.pack", show_progress=False)
    assert header["source_kind"] == "csv" and header["count"] == 5
    expected = ImageFolder(small_flowers, SIZE)
    first = expected.files.index(f"tulip/{listed[-1].name}")
    assert torch.equal(PackImages(tmp_path / "csv.pack").images[0], expected[first])  # CSV order


@pytest.mark.slow
def test_sigkilled_pack_is_refused_then_finished(flowers, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "f.pack"
    args = [sys.executable, "-m", "wgan", "pack", str(flowers), "--out", str(out), "--size",
            "16", "--workers", "0", "--chunk", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        done = 0
        while done < 640 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                done = read_header(out)["done"]
            except (WganError, FileNotFoundError):
                pass  # not there yet, or caught mid-write
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    header = read_header(out)
    assert not header["complete"] and 640 <= header["done"] < 4317
    with pytest.raises(WganError, match="unfinished pack"):
        open_source(out, 16)

    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "continuing" in result.stderr, result.stderr
    whole = tmp_path / "whole.pack"
    subprocess.run(args[:6] + [str(whole)] + args[7:], env=env, check=True, timeout=120,
                   capture_output=True)
    assert out.read_bytes()[HEADER_BYTES:] == whole.read_bytes()[HEADER_BYTES:]
    assert len(PackImages(out)) == 4317


def test_packing_again_at_another_size_states_both_sizes(small_flowers, tmp_path):
    out = tmp_path / "f.pack"
    pack(small_flowers, out)  # SIZE x SIZE
    with pytest.raises(WganError, match=rf"^{out} is a complete pack of {SIZE}x{SIZE} images with "
                                        rf"3 channels from {small_flowers}, not of 32x32 images "
                                        rf"with 3 channels from {small_flowers}; pass "
                                        r"--overwrite to replace it or choose another --out$"):
        pack(small_flowers, out, size=32)
    # Training from it at another size states both sizes too.
    with pytest.raises(WganError, match=rf"{out} holds {SIZE}x{SIZE} images with 3 channels, but "
                                        rf"--image-size is 32; train with --image-size {SIZE}"):
        open_source(out, 32)


def test_pack_out_whose_parent_is_a_file_says_so(small_flowers, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(WganError, match=r"^--out \S*afile/f.pack: its parent \S*afile is a "
                                        r"file, not a folder; choose another --out$"):
        pack(small_flowers, tmp_path / "afile" / "f.pack")
    assert (tmp_path / "afile").read_text() == "not a folder"
