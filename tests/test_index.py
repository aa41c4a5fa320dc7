"""CSV image lists: every image once, quoting, stable order, reproducible samples."""

from __future__ import annotations

import csv
import shutil

import pytest

from wgan.dataset import CsvImages
from wgan.errors import WganError
from wgan.index import build_index, list_images, sample_indices


def read_rows(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture
def tree(small_flowers):
    """40 flower photos in 5 folders, plus awkward names and files that are not images."""
    root = small_flowers
    first = sorted((root / "daisy").iterdir())[0]
    shutil.copy(first, root / "daisy" / "with, comma.jpg")
    shutil.copy(first, root / "daisy" / 'with "quote".JPG')
    (root / "odd\nfolder").mkdir()
    shutil.copy(first, root / "odd\nfolder" / "new\nline.jpeg")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(first.read_bytes())
    (root / "no_suffix").write_bytes(first.read_bytes())
    (root / "text.jpg").write_text("not an image either")
    return root


def test_csv_lists_every_image_once_with_quoting(tree, tmp_path):
    out = tmp_path / "files.csv"
    summary = build_index(tree, out, progress=False)
    rows = read_rows(out)
    assert rows[0] == ["path", "label"]
    paths = [r[0] for r in rows[1:]]
    expected = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")
                      if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg")
                      and not p.name.startswith("."))
    assert sorted(paths) == expected and len(paths) == len(set(paths)) == 44
    assert summary.listed == 44
    assert str(summary) == "listed 44 images"  # no sample was asked for: none is reported
    assert "daisy/with, comma.jpg" in paths and 'daisy/with "quote".JPG' in paths
    assert "odd\nfolder/new\nline.jpeg" in paths
    assert all(r[1] == "0" for r in rows[1:])

    # The training reader sees the same list, and it decodes.
    ds = CsvImages(out, 32, root=tree)
    assert ds.paths == paths
    assert ds[paths.index("daisy/with, comma.jpg")] is not None

    # Stable: the same folder gives the same bytes.
    build_index(tree, tmp_path / "again.csv", progress=False)
    assert (tmp_path / "again.csv").read_bytes() == out.read_bytes()


def test_check_content_goes_by_bytes(tree):
    paths = list_images(tree, check_content=True, progress=False)
    assert "no_suffix" in paths and "text.jpg" not in paths and "notes.txt" not in paths
    assert len(paths) == 44  # 43 real images with suffixes, text.jpg out, no_suffix in


def test_label_by_folder(tree, tmp_path):
    build_index(tree, tmp_path / "f.csv", label_by_folder=True, progress=False)
    labels = {r[0].split("/")[0]: int(r[1]) for r in read_rows(tmp_path / "f.csv")[1:]}
    assert labels == {"daisy": 0, "dandelion": 1, "odd\nfolder": 2, "rose": 3, "sunflower": 4,
                      "text.jpg": 0, "tulip": 5}


def test_sample_is_seeded_and_close_to_fraction(tree, tmp_path):
    kw = dict(sample_fraction=0.25, progress=False)
    s1 = build_index(tree, tmp_path / "a.csv", sample_csv=tmp_path / "s1.csv", seed=7, **kw)
    build_index(tree, tmp_path / "b.csv", sample_csv=tmp_path / "s2.csv", seed=7, **kw)
    build_index(tree, tmp_path / "c.csv", sample_csv=tmp_path / "s3.csv", seed=8, **kw)
    one, two, three = (read_rows(tmp_path / f"s{i}.csv")[1:] for i in (1, 2, 3))
    assert one == two and one != three
    assert s1.sampled == len(one) == 11  # round(0.25 * 44)
    assert str(s1) == "listed 44 images, sampled 11"
    listed = read_rows(tmp_path / "a.csv")[1:]
    assert all(row in listed for row in one) and len({r[0] for r in one}) == 11

    idx = sample_indices(1_000_000, 0.1, seed=3)
    assert len(idx) == 100_000 and len(set(idx.tolist())) == 100_000
    assert (sample_indices(1_000_000, 0.1, seed=3) == idx).all()


def test_index_errors(tmp_path):
    with pytest.raises(WganError, match="nope does not exist; pass the folder"):
        build_index(tmp_path / "nope", tmp_path / "f.csv", progress=False)
    (tmp_path / "a.txt").write_text("a file")
    with pytest.raises(WganError, match="a.txt is not a folder; pass the folder"):
        build_index(tmp_path / "a.txt", tmp_path / "f.csv", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WganError, match="no images found"):
        build_index(tmp_path / "empty", tmp_path / "f.csv", progress=False)
    with pytest.raises(WganError, match="--sample-fraction"):
        build_index(tmp_path, tmp_path / "f.csv", sample_fraction=1.5,
                    sample_csv=tmp_path / "s.csv")
    with pytest.raises(WganError, match="go together"):
        build_index(tmp_path, tmp_path / "f.csv", sample_fraction=0.1)
    with pytest.raises(WganError, match="same file as --csv"):
        build_index(tmp_path, tmp_path / "f.csv", sample_fraction=0.5,
                    sample_csv=tmp_path / "." / "f.csv")


def test_plain_and_quoted_writers_agree(tmp_path):
    from wgan.index import write_csv

    plain = ["a.jpg", "b c/d e.png", "ü/ñ.webp", "x/y/z.JPG"]
    write_csv(tmp_path / "fast.csv", plain, 3)
    write_csv(tmp_path / "slow.csv", plain, [3] * 4)  # per-row labels take the csv module
    assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "slow.csv").read_bytes()
    assert read_rows(tmp_path / "fast.csv")[1:] == [[p, "3"] for p in plain]


def test_list_used_from_elsewhere_needs_its_root(tree, tmp_path):
    build_index(tree, tmp_path / "files.csv", progress=False)
    with pytest.raises(WganError, match="--data-root"):
        CsvImages(tmp_path / "files.csv", 32)  # paths are relative to tree, not tmp_path
    assert len(CsvImages(tmp_path / "files.csv", 32, root=tree)) == 44


def test_csv_whose_parent_is_a_file_says_so(tree, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(WganError, match=r"^--csv \S*afile/files.csv: its parent \S*afile is a "
                                        r"file, not a folder; choose another --csv$"):
        build_index(tree, tmp_path / "afile" / "files.csv", progress=False)
    with pytest.raises(WganError, match=r"--sample-csv \S*afile/deeper/s.csv: its parent "
                                        r"\S*afile is a file, not a folder"):
        build_index(tree, tmp_path / "files.csv", sample_fraction=0.5,
                    sample_csv=tmp_path / "afile" / "deeper" / "s.csv", progress=False)
    assert (tmp_path / "afile").read_text() == "not a folder"
