"""The LSUN pipeline: download through a loopback HTTP server, unzip, export, hostile inputs."""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import threading
import zipfile
from pathlib import Path

import lmdb
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wgan import lsun
from wgan.cli import main
from wgan.errors import WganError
from wgan.index import sniff_image

from .conftest import SHARED_DATA

ZIP = SHARED_DATA / "lsun-bedroom-64" / "bedroom_train_lmdb.zip"


class FileServer(http.server.ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) on 127.0.0.1 with Range support and scripted faults.

    ``cuts`` is a list of byte counts: the n-th response stops after that many body bytes
    and closes the connection (None: send all). ``honour_range=False`` ignores Range headers.
    ``extra_length`` adds to the announced size, to play a server that lies;
    ``send_length=False`` announces no size at all and ends each body by closing.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.cuts: list[int | None] = []
        self.honour_range = True
        self.extra_length = 0
        self.etag = '"v1"'
        self.send_length = True
        self.ranges: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        srv: FileServer = self.server
        data = srv.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if_range = self.headers.get("If-Range")
        if m and srv.honour_range and if_range in (None, srv.etag):
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if srv.send_length:
            self.send_header("Content-Length", str(len(body) + srv.extra_length))
        else:
            self.close_connection = True
        self.send_header("ETag", srv.etag)
        self.end_headers()
        cut = srv.cuts.pop(0) if srv.cuts else None
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)
        if srv.extra_length:
            self.close_connection = True


@pytest.fixture
def lsun_zip() -> bytes:
    if not ZIP.exists():
        pytest.skip(f"real test data {ZIP} is absent (it lives in ../shared/data)")
    return ZIP.read_bytes()


@pytest.fixture
def server(lsun_zip):
    srv = FileServer({"bedroom_train_lmdb.zip": lsun_zip})
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fetch(server, out, **kw):
    return lsun.download_category("bedroom", "train", out, base_url=server.url, progress=False,
                                  retry_wait=0, timeout=10, **kw)


# --- download -------------------------------------------------------------------------------

def test_download_cut_midway_resumes_to_identical_file(server, lsun_zip, tmp_path):
    half = len(lsun_zip) // 2
    server.cuts = [half]
    with pytest.raises(WganError, match="run the same command again"):
        fetch(server, tmp_path, retries=0)
    final = tmp_path / "bedroom_train_lmdb.zip"
    part = tmp_path / "bedroom_train_lmdb.zip.part"
    assert not final.exists()  # never a truncated file under the final name
    assert part.stat().st_size == half

    path = fetch(server, tmp_path, retries=0)
    assert path == final and final.read_bytes() == lsun_zip
    assert server.ranges == [None, f"bytes={half}-"]  # the second request resumed
    assert not part.exists()

    # A complete file is not downloaded again.
    assert fetch(server, tmp_path) == final and len(server.ranges) == 2


def test_download_retries_broken_connections(server, lsun_zip, tmp_path):
    server.cuts = [1000, 50_000, None]
    path = fetch(server, tmp_path, retries=3)
    assert path.read_bytes() == lsun_zip
    assert server.ranges == [None, "bytes=1000-", "bytes=51000-"]


def test_download_restarts_when_server_ignores_range(server, lsun_zip, tmp_path):
    server.cuts = [12345]
    server.honour_range = False
    path = fetch(server, tmp_path, retries=1)
    assert path.read_bytes() == lsun_zip
    assert server.ranges == [None, "bytes=12345-"]


def test_download_starts_over_when_file_changed(server, lsun_zip, tmp_path):
    server.cuts = [5000]
    with pytest.raises(WganError):
        fetch(server, tmp_path, retries=0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bedroom_train_lmdb/data.mdb", os.urandom(20_000))
    changed = buf.getvalue()
    server.files["bedroom_train_lmdb.zip"], server.etag = changed, '"v2"'
    assert fetch(server, tmp_path, retries=0).read_bytes() == changed  # not a splice
    assert server.ranges == [None, "bytes=5000-"]


def test_download_complete_part_gets_416(server, lsun_zip, tmp_path):
    (tmp_path / "bedroom_train_lmdb.zip.part").write_bytes(lsun_zip)
    url = f"{server.url}/bedroom_train_lmdb.zip"
    (tmp_path / ".bedroom_train_lmdb.zip.part.json").write_text(
        json.dumps({"url": url, "validator": '"v1"'}))
    assert fetch(server, tmp_path).read_bytes() == lsun_zip


def test_download_short_of_announced_size_fails(server, tmp_path):
    server.extra_length = 10  # announces 10 bytes more than it ever sends
    server.honour_range = False
    with pytest.raises(WganError, match="stopped"):
        fetch(server, tmp_path, retries=1)
    assert not (tmp_path / "bedroom_train_lmdb.zip").exists()


def test_download_without_announced_size_checks_the_zip(server, lsun_zip, tmp_path):
    # A server that sends no Content-Length and closes early looks like a finished download.
    server.send_length = False
    server.cuts = [len(lsun_zip) // 3]
    with pytest.raises(WganError, match=r"\.part \(\d+ bytes\) is not a complete zip archive: "
                                        "run the same command again"):
        fetch(server, tmp_path, retries=0)
    assert not (tmp_path / "bedroom_train_lmdb.zip").exists()
    # The rerun resumes the .part and gets the whole archive.
    assert fetch(server, tmp_path, retries=0).read_bytes() == lsun_zip
    assert server.ranges == [None, f"bytes={len(lsun_zip) // 3}-"]


def test_download_errors(server, tmp_path):
    with pytest.raises(WganError, match="HTTP 404"):
        lsun.download_category("tower", "val", tmp_path, base_url=server.url, progress=False)
    with pytest.raises(WganError, match="--category"):
        lsun.category_url("../x", "train")
    for bad in ("notaurl/bedroom_train_lmdb.zip", "file:///etc/passwd"):
        with pytest.raises(WganError, match="give an http:// or https:// address"):
            lsun.download(bad, tmp_path, progress=False)
    assert lsun.category_url("bedroom", "val") == \
        "http://dl.yf.io/lsun/scenes/bedroom_val_lmdb.zip"


# --- unzip ----------------------------------------------------------------------------------

def test_unzip_real_archive(lsun_zip, tmp_path):
    (tmp_path / "a.zip").write_bytes(lsun_zip)
    lsun.unzip(tmp_path / "a.zip", tmp_path / "out", progress=False)
    with zipfile.ZipFile(io.BytesIO(lsun_zip)) as z:
        data = z.read("bedroom_train_lmdb/data.mdb")
    assert (tmp_path / "out" / "bedroom_train_lmdb" / "data.mdb").read_bytes() == data
    # A re-run skips what is there and leaves it intact.
    lsun.unzip(tmp_path / "a.zip", tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "bedroom_train_lmdb" / "data.mdb").read_bytes() == data


@pytest.mark.parametrize("member", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil.txt",
                                    "C:/evil.txt", "link"])
def test_unzip_refuses_members_outside(tmp_path, member):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("fine.txt", b"fine")
        if member == "link":
            info = zipfile.ZipInfo("link")
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "../../etc")
        else:
            z.writestr(zipfile.ZipInfo(member), b"evil")
    with pytest.raises(WganError, match="nothing was extracted"):
        lsun.unzip(bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "fine.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_unzip_not_a_zip(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(WganError, match="x.zip"):
        lsun.unzip(tmp_path / "x.zip", tmp_path / "out")


# --- export ---------------------------------------------------------------------------------

def read_lmdb(path: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        records = dict(txn.cursor())
    env.close()
    return records


def test_export_bytes_unchanged_and_named_by_format(lsun_lmdb, tmp_path):
    records = read_lmdb(lsun_lmdb)
    summary = lsun.export(lsun_lmdb, tmp_path / "out", progress=False)
    assert (summary.written, summary.skipped, summary.bad, summary.rejected) == (196, 0, 0, 0)
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert len(files) == 196
    for f in files:
        key = f.stem.encode()
        assert f.read_bytes() == records[key]
        assert f.relative_to(tmp_path / "out").parts[:3] == tuple(f.stem[:3])
        assert f.suffix == ".webp" and sniff_image(f.read_bytes()[:16]) == "webp"

    # A re-run skips everything; a file cut short is written again.
    files[0].write_bytes(files[0].read_bytes()[:10])
    again = lsun.export(lsun_lmdb, tmp_path / "out", progress=False)
    assert (again.written, again.skipped) == (1, 195)
    assert files[0].read_bytes() == records[files[0].stem.encode()]


@pytest.mark.parametrize("fmt,ext,kind", [("jpeg", ".jpg", "jpeg"), ("png", ".png", "png")])
def test_export_reencodes_flat_with_limit(lsun_lmdb, tmp_path, fmt, ext, kind):
    summary = lsun.export(lsun_lmdb, tmp_path, flat=True, limit=7, fmt=fmt, progress=False)
    files = sorted(tmp_path.iterdir())
    assert summary.written == 7 and len(files) == 7
    for f in files:
        assert f.suffix == ext and sniff_image(f.read_bytes()[:16]) == kind
        assert Image.open(f).size == (64, 64)


def make_lmdb(path: Path, records: dict[bytes, bytes]) -> Path:
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for k, v in records.items():
            txn.put(k, v)
    env.close()
    return path


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def test_export_hostile_keys_and_bad_records(lsun_lmdb, tmp_path):
    webp = next(iter(read_lmdb(lsun_lmdb).values()))
    src = make_lmdb(tmp_path / "db", {
        b"good_webp": webp,
        b"good_jpeg": encoded("JPEG"),
        b"good.png.named": encoded("PNG"),
        b"../escape": webp,
        b"a/b": webp,
        b"/abs": webp,
        b".hidden": webp,
        b"..": webp,
        b"\xff\xfenot-ascii": webp,
        b"empty": b"",
        b"truncated": webp[: len(webp) // 2],
        b"text": b"this is not an image at all",
    })
    out = tmp_path / "sandbox" / "out"
    summary = lsun.export(src, out, progress=False)
    assert (summary.written, summary.bad, summary.rejected) == (3, 3, 6)
    everything = sorted(p.relative_to(tmp_path / "sandbox").as_posix()
                        for p in (tmp_path / "sandbox").rglob("*") if p.is_file())
    assert everything == ["out/g/o/o/good.png.named.png", "out/g/o/o/good_jpeg.jpg",
                          "out/g/o/o/good_webp.webp"]
    assert (out / "g/o/o/good_webp.webp").read_bytes() == webp
    assert not (tmp_path / "escape.webp").exists()


def test_export_in_worker_processes_matches(lsun_lmdb, tmp_path):
    one = lsun.export(lsun_lmdb, tmp_path / "one", limit=150, progress=False)
    two = lsun.export(lsun_lmdb, tmp_path / "two", limit=150, workers=2, progress=False)
    assert one == two and one.written == 150

    def tree(root):
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert tree(tmp_path / "one") == tree(tmp_path / "two") and len(tree(tmp_path / "one")) == 150


def test_export_missing_and_non_lmdb(tmp_path):
    with pytest.raises(WganError, match=f"{tmp_path / 'nope'} does not exist"):
        lsun.export(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "plain").mkdir()
    with pytest.raises(WganError, match=f"{tmp_path / 'plain'} is not an LMDB"):
        lsun.export(tmp_path / "plain", tmp_path / "out")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "data.mdb").write_bytes(b"garbage" * 1000)
    with pytest.raises(WganError, match="fake is not a readable LMDB"):
        lsun.export(tmp_path / "fake", tmp_path / "out")


# --- the whole pipeline through the command line ---------------------------------------------

def wgan(*args, check=True):
    from .test_cli import wgan as run

    return run(*args, check=check)


@pytest.mark.slow
def test_pipeline_end_to_end(server, lsun_zip, lsun_lmdb, tmp_path):
    data = tmp_path / "data"
    server.cuts = [100_000]  # the first connection breaks; the command resumes by itself
    said = wgan("lsun", "download", "--category", "bedroom", "--set", "train", "--out", data,
                "--url", server.url, "--unzip").stderr
    zip_path = data / "bedroom_train_lmdb.zip"
    assert [x for x in said.splitlines() if "downloaded" in x] == [
        f"downloaded {zip_path} ({len(lsun_zip)} bytes)"]
    assert zip_path.read_bytes() == lsun_zip
    # A second run says once that the file is already there, and nothing else about it.
    again = wgan("lsun", "download", "--category", "bedroom", "--set", "train", "--out", data,
                 "--url", server.url)
    assert [x for x in (again.stdout + again.stderr).splitlines() if "downloaded" in x] == [
        f"{zip_path} is already downloaded; delete it to download again"]
    assert server.ranges == [None, "bytes=100000-"]
    unzipped = data / "bedroom_train_lmdb"
    assert (unzipped / "data.mdb").read_bytes() == (lsun_lmdb / "data.mdb").read_bytes()

    out = wgan("lsun", "export", unzipped, "--out", data / "images").stdout
    assert "written 196, skipped 0 (already there), bad 0, rejected keys 0" in out
    out = wgan("index", data / "images", "--csv", data / "files.csv", "--sample-fraction",
               "0.1", "--sample-csv", data / "files_sample.csv", "--seed", "1").stdout
    assert "listed 196 images, sampled 20" in out
    rows = read_lmdb(lsun_lmdb)
    listed = [r.split(",")[0] for r in (data / "files.csv").read_text().splitlines()[1:]]
    assert sorted(Path(p).stem.encode() for p in listed) == sorted(rows)

    from .test_cli import FAST, check_run

    wgan("train", "--data", data / "files_sample.csv", "--data-root", data / "images",
         "--outdir", tmp_path / "runs", "--image-size", 32, "--steps", 10, *FAST)
    check_run(tmp_path / "runs" / "00000-files_sample-wgan-32px", 10, 32)


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.txt", b"evil")
    (tmp_path / "plain").mkdir()
    for args, expect in [
        (["lsun", "export", tmp_path / "missing", "--out", tmp_path / "o"], "missing does not"),
        (["lsun", "export", tmp_path / "plain", "--out", tmp_path / "o"], "plain is not an LMDB"),
        (["index", tmp_path / "missing", "--csv", tmp_path / "f.csv"], "missing does not exist"),
        (["lsun", "unzip", bad, "--out", tmp_path / "o"], "'../evil.txt' would be written"),
    ]:
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], lines
    assert not (tmp_path / "evil.txt").exists()


# --- reading the LMDB directly -----------------------------------------------------------------

def test_key_list_exact_cached_outside_data_and_cwd(tmp_path, monkeypatch, lsun_lmdb):
    from wgan.dataset import KeyList, lmdb_keys

    odd = [b"a", b"ends-with-nul\x00", b"\x00\x01\xff", b"x" * 500, b"zz/../.."]
    src = make_lmdb(tmp_path / "db", {k: b"v" for k in odd})
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path)), set(os.listdir(src))
    keys = lmdb_keys(src, cache_dir=tmp_path / "cache")
    assert isinstance(keys, KeyList) and list(keys) == sorted(odd)
    assert (set(os.listdir(tmp_path)) - {"cache"}, set(os.listdir(src))) == before
    cached = list((tmp_path / "cache" / "lmdb-keys").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npz"
    assert list(lmdb_keys(src, cache_dir=tmp_path / "cache")) == sorted(odd)  # from the cache
    assert keys[-1] == b"zz/../.." and keys[1:3] == sorted(odd)[1:3]

    # The real, read-only LSUN folder: keys in stored order, each a 40-hex SHA-1.
    real = lmdb_keys(lsun_lmdb, cache_dir=tmp_path / "cache")
    assert list(real) == list(read_lmdb(lsun_lmdb))
    assert all(re.fullmatch(rb"[0-9a-f]{40}", k) for k in real)


def test_lmdb_workers_on_read_only_folder(tmp_path, lsun_lmdb):
    import torch

    from wgan.dataset import LmdbImages, batch_stream, decode_image

    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "data.mdb").write_bytes((lsun_lmdb / "data.mdb").read_bytes())
    folder.chmod(0o555)
    (folder / "data.mdb").chmod(0o444)
    try:
        ds = LmdbImages(folder, 16)
        assert ds._env is None  # opened lazily, in the process that reads
        batch, bad = next(batch_stream(ds, 8, seed=0, workers=2))
        assert batch.shape == (8, 3, 16, 16) and bad == 0
        records = read_lmdb(lsun_lmdb)
        first = torch.from_numpy(decode_image(records[ds.keys[0]], 16).copy()).permute(2, 0, 1)
        assert torch.equal(ds[0], first)
        assert sorted(os.listdir(folder)) == ["data.mdb"]  # no lock file was made
    finally:
        folder.chmod(0o755)


def cursor_keys(path: Path) -> list[bytes]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        keys = list(txn.cursor().iternext(values=False))
    env.close()
    return keys


def test_leaf_page_reader_matches_cursor(tmp_path, lsun_lmdb):
    from wgan.lmdb_pages import read_leaf_keys

    # Random keys of 1 to 511 bytes put in random order, values inline and on overflow pages,
    # enough to make a tree three levels deep.
    rng = np.random.default_rng(1)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for _ in range(6000):
            key = rng.integers(0, 256, int(rng.integers(1, 512)), dtype=np.uint8).tobytes()
            txn.put(key, bytes(int(rng.integers(0, 9000))))
    stat = env.stat()
    env.close()
    assert stat["depth"] >= 3 and stat["overflow_pages"] > 0
    keys = read_leaf_keys(tmp_path / "db" / "data.mdb", stat)
    assert keys is not None and list(keys) == cursor_keys(tmp_path / "db")

    env = lmdb.open(str(lsun_lmdb), readonly=True, lock=False)
    stat = env.stat()
    env.close()
    assert list(read_leaf_keys(lsun_lmdb / "data.mdb", stat)) == cursor_keys(lsun_lmdb)

    # What it cannot vouch for, it leaves to the cursor.
    assert read_leaf_keys(lsun_lmdb / "data.mdb", {**stat, "entries": 195}) is None
    (tmp_path / "junk.mdb").write_bytes(bytes(range(256)) * 64)
    assert read_leaf_keys(tmp_path / "junk.mdb", stat) is None


def test_key_listing_falls_back_to_cursor(tmp_path, monkeypatch, lsun_lmdb):
    import wgan.dataset
    from wgan.dataset import LmdbImages, lmdb_keys

    fast = list(lmdb_keys(lsun_lmdb, tmp_path / "c1"))
    monkeypatch.setattr(wgan.dataset, "read_leaf_keys", lambda *args: None)
    assert list(lmdb_keys(lsun_lmdb, tmp_path / "c2")) == fast == cursor_keys(lsun_lmdb)

    make_lmdb(tmp_path / "empty", {})
    with pytest.raises(WganError, match="holds no records"):
        LmdbImages(tmp_path / "empty", 32, cache_dir=tmp_path / "c")


def test_export_detail_lines_agree_with_the_summary(lsun_lmdb, tmp_path, caplog):
    webp = next(iter(read_lmdb(lsun_lmdb).values()))
    records = {b"good": webp, b"../up": webp, b"a/b": webp, b"empty": b""}
    records.update({f"text{i}".encode(): b"not an image" for i in range(6)})
    src = make_lmdb(tmp_path / "db", records)
    with caplog.at_level("WARNING", logger="wgan"):
        summary = lsun.export(src, tmp_path / "out", progress=False, max_examples=3)
    assert (summary.written, summary.bad, summary.rejected) == (1, 7, 2)
    lines = [r.getMessage() for r in caplog.records]
    bad = [x for x in lines if x.startswith("bad record")]
    rejected = [x for x in lines if x.startswith("rejected key")]
    assert len(bad) == 3 and len(rejected) == 2
    assert "... and 4 more bad records (7 in all)" in lines
    assert not [x for x in lines if "more rejected" in x]  # both were shown
