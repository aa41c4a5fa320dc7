import io

import numpy as np
import pytest
import torch
from PIL import Image

from wgan.dataset import (
    BadImage,
    CsvImages,
    ImageFolder,
    InfiniteBatchSampler,
    LmdbImages,
    collate_skip_bad,
    decode_image,
    open_source,
    to_model_range,
)
from wgan.errors import WganError


def test_decode_resizes_shorter_side_and_centre_crops(hymenoptera):
    path = next(p for p in sorted((hymenoptera / "train" / "ants").iterdir()))
    with Image.open(path) as img:
        w, h = img.size
    arr = decode_image(path, 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert w != h  # a non-square photo: the crop matters


def test_decode_centre_crop_keeps_the_middle():
    # A 300x100 image: red left third, green middle, blue right third.
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, :100, 0] = 255
    img[:, 100:200, 1] = 255
    img[:, 200:, 2] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    out = decode_image(buf.getvalue(), 16)[:, 2:-2]  # the filter reaches past the box edges
    assert out[..., 1].min() >= 250 and out[..., 0].max() <= 5 and out[..., 2].max() <= 5


def test_decode_by_content_not_name(tmp_path):
    png = tmp_path / "really_a_png.jpg"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png, format="PNG")
    out = decode_image(png, 16)
    assert tuple(out[8, 8]) == (10, 200, 30)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\0" * 50])
def test_bad_bytes_raise_bad_image(data):
    with pytest.raises(BadImage):
        decode_image(data, 16)


def test_truncated_jpeg_is_bad(flowers):
    data = next((flowers / "daisy").iterdir()).read_bytes()
    with pytest.raises(BadImage):
        decode_image(data[: len(data) // 2], 32)


def test_folder_skips_and_counts_bad_files(small_flowers):
    (small_flowers / "daisy" / "broken.jpg").write_bytes(b"garbage")
    ds = ImageFolder(small_flowers, 32)
    assert len(ds) == 41
    items = [ds[i] for i in range(len(ds))]
    assert sum(x is None for x in items) == 1
    batch, bad = collate_skip_bad(items)
    assert bad == 1 and batch.shape == (40, 3, 32, 32) and batch.dtype == torch.uint8
    assert batch.float().std() > 20  # real photos, not a constant fill


def test_csv_rows_quoting_and_confinement(tmp_path, small_flowers):
    odd = small_flowers / "rose" / 'a, "quoted" name.jpg'
    first = next((small_flowers / "rose").iterdir())
    odd.write_bytes(first.read_bytes())
    csv_path = small_flowers / "files.csv"
    csv_path.write_text('path,label\n"rose/a, ""quoted"" name.jpg",3\n' + f"rose/{first.name},0\n")
    ds = CsvImages(csv_path, 32)
    assert ds.paths[0] == 'rose/a, "quoted" name.jpg' and ds.labels == [3, 0]
    assert torch.equal(ds[0], ds[1])
    evil = tmp_path / "evil.csv"
    evil.write_text("../secret.jpg,0\n")
    with pytest.raises(WganError, match="leaves the image root"):
        CsvImages(evil, 32)
    evil.write_text("/etc/passwd,0\n")
    with pytest.raises(WganError, match="leaves the image root"):
        CsvImages(evil, 32)
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg,notanumber\n")
    with pytest.raises(WganError, match=r"bad.csv:1"):
        CsvImages(bad, 32)


def test_lmdb_read_directly(lsun_lmdb):
    import lmdb

    ds = open_source(lsun_lmdb, 32)
    assert isinstance(ds, LmdbImages) and len(ds) == 196
    env = lmdb.open(str(lsun_lmdb), readonly=True, lock=False)
    with env.begin() as txn:
        key, value = next(iter(txn.cursor()))
    env.close()
    assert ds.keys[0] == key
    assert torch.equal(ds[0], torch.from_numpy(np.array(decode_image(value, 32))).permute(2, 0, 1))


def test_missing_and_non_lmdb_paths(tmp_path):
    with pytest.raises(WganError, match="does not exist"):
        open_source(tmp_path / "nope", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WganError, match="no image files"):
        open_source(tmp_path / "empty", 32)
    with pytest.raises(WganError, match="not an LMDB"):
        LmdbImages(tmp_path / "empty", 32)


def test_sampler_covers_each_epoch_and_resumes():
    s = InfiniteBatchSampler(10, 4, seed=1)
    it = iter(s)
    batches = [next(it) for _ in range(5)]  # 20 indices = 2 epochs
    flat = [i for b in batches for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    resumed = iter(InfiniteBatchSampler(10, 4, seed=1, start=3))
    assert [next(resumed) for _ in range(2)] == batches[3:5]


def test_sampler_shards_ranks_without_overlap():
    full = iter(InfiniteBatchSampler(9, 4, seed=2))
    r0 = iter(InfiniteBatchSampler(9, 2, seed=2, rank=0, world_size=2))
    r1 = iter(InfiniteBatchSampler(9, 2, seed=2, rank=1, world_size=2))
    for _ in range(5):
        a, b, g = next(r0), next(r1), next(full)
        assert sorted(a + b) == sorted(g) and not set(a) & set(b)


def test_model_range():
    x = to_model_range(torch.tensor([0, 255, 128], dtype=torch.uint8))
    assert x.tolist()[0] == -1.0 and x.tolist()[1] == 1.0 and abs(x.tolist()[2]) < 0.01


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_lmdb_is_one_clear_error_not_a_crash(lsun_lmdb, tmp_path, keep):
    # A cut data.mdb used to kill the process with SIGBUS; run it in a child to see that.
    import subprocess
    import sys

    cut = tmp_path / "cut"
    cut.mkdir()
    data = (lsun_lmdb / "data.mdb").read_bytes()
    (cut / "data.mdb").write_bytes(data[: int(len(data) * keep) // 4096 * 4096])
    for args in (["train", "--data", str(cut), "--outdir", str(tmp_path / "runs")],
                 ["lsun", "export", str(cut), "--out", str(tmp_path / "export")]):
        done = subprocess.run([sys.executable, "-m", "wgan", *args], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1, (args, done.returncode, done.stderr[-500:])
        assert done.stderr.strip().splitlines()[-1].startswith(f"error: {cut / 'data.mdb'} is "
                                                               "truncated")


def test_csv_unclosed_quote_is_named_at_the_line_where_it_starts(tmp_path, small_flowers):
    names = sorted(p.name for p in (small_flowers / "rose").iterdir())
    csv_path = small_flowers / "files.csv"
    csv_path.write_text(f"path,label\nrose/{names[0]},0\n\"rose/{names[1]},1\n"
                        f"rose/{names[2]},2\nrose/{names[3]},3\n")
    with pytest.raises(WganError, match=r"^\S*files.csv:3: CSV error: a quoted field starts on "
                                        r"this line and is never closed; close or remove"):
        open_source(csv_path, 32)
    # A stray quote after a closed one is a CSV error at its own line too.
    csv_path.write_text(f"rose/{names[0]},0\n\n\"rose/{names[1]}\"x,1\n")
    with pytest.raises(WganError, match=r"files.csv:3: CSV error: ',' expected after '\"'"):
        open_source(csv_path, 32)
    # A path quoted across two lines still counts its lines: the bad label is on line 4.
    csv_path.write_text(f"rose/{names[0]},0\n\"rose/{names[1]}\n\",1\nrose/{names[2]},x\n")
    with pytest.raises(WganError, match=r"files.csv:4: label 'x' is not an integer"):
        open_source(csv_path, 32)


def test_undecodable_lmdb_record_is_named_by_its_key(lsun_lmdb, tmp_path, caplog):
    from tests.test_lsun import make_lmdb, read_lmdb
    from wgan import lsun

    webp = next(iter(read_lmdb(lsun_lmdb).values()))
    src = make_lmdb(tmp_path / "db", {b"good": webp, b"starts_like_jpeg": b"\xff\xd8\xffjunk",
                                      b"words": b"hello"})
    ds = open_source(src, 32)
    with caplog.at_level("WARNING", logger="wgan"):
        assert [ds[i] is None for i in range(len(ds))] == [False, True, True]
    lines = sorted(r.getMessage() for r in caplog.records)
    assert lines == [f"skipping bad image {src}[starts_like_jpeg]: cannot decode: not an image "
                     "format Pillow reads",
                     f"skipping bad image {src}[words]: cannot decode: not an image format "
                     "Pillow reads"]
    with pytest.raises(ValueError, match=r"^cannot decode: not an image format Pillow reads$"):
        lsun.check_image(b"\xff\xd8\xffjunk")
