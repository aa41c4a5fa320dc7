"""The HTML report: parsing a run folder, and the page of a real short run in headless Chromium."""

import base64
import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wgan.cli import main
from wgan.errors import WganError
from wgan.report import Curve, build_report, pick_evenly, read_metrics, svg_chart, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ------------------------------------------------------------------------- fast unit tests


def test_pick_evenly_keeps_both_ends():
    items = list(range(101))
    assert pick_evenly(items, 5) == [0, 25, 50, 75, 100]
    assert pick_evenly(items, 1) == [100]
    assert pick_evenly(items[:3], 40) == [0, 1, 2]


def test_metric_lines_become_curves(tmp_path):
    lines = [
        {"snapshot": "runs/x/network-snapshot-0000500.pt", "swd": {"16": 30.0, "mean": 20.5},
         "num": 1000},
        {"step": 1000, "swd": {"16": 25.0, "mean": 18.0}, "num": 1000},
        {"note": "no step: skipped", "swd": {"mean": 1.0}},
    ]
    text = "".join(json.dumps(x) + "\n" for x in lines) + '{"step": 1500, "swd": {"me'  # torn
    (tmp_path / "metric-swd.jsonl").write_text(text)
    (tmp_path / "metric-kid.jsonl").write_text('{"step": 7, "kid": 0.25, "ok": true}\n')
    metrics = read_metrics(tmp_path)
    assert list(metrics) == ["kid", "swd"]
    assert [(c.label, c.steps, c.values) for c in metrics["kid"]] == [("kid", [7], [0.25])]
    swd = {c.label: (c.steps, c.values) for c in metrics["swd"]}
    assert swd == {"swd/16": ([500, 1000], [30.0, 25.0]), "swd/mean": ([500, 1000], [20.5, 18.0])}


def test_chart_maps_values_into_the_plot_and_escapes_labels():
    svg = svg_chart("c", "W <estimate>", [Curve("a&b", [0, 10, 20], [1.0, 3.0, 2.0])])
    assert "W &lt;estimate&gt;" in svg and "a&amp;b" in svg and "<estimate>" not in svg
    points = re.search(r'<polyline points="([^"]+)"', svg).group(1).split()
    xy = [tuple(map(float, p.split(","))) for p in points]
    # x increases left to right; the highest value is drawn highest (smallest y).
    assert xy[0][0] < xy[1][0] < xy[2][0]
    assert xy[1][1] < xy[2][1] < xy[0][1]


def test_not_a_run_folder(tmp_path):
    with pytest.raises(WganError, match="not a run folder"):
        build_report(tmp_path)
    with pytest.raises(WganError, match="not a folder"):
        build_report(tmp_path / "missing")
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "not a run folder" in res.output


# ------------------------------------------------------------------------- a real short run


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """24 generator steps on scikit-learn's real handwritten digits, a grid every 4 steps."""
    pytest.importorskip("sklearn")
    from wgan.demo import load_digits
    from wgan.options import build_options
    from wgan.training import run_training

    outdir = tmp_path_factory.mktemp("runs")
    opts = build_options({"cfg": "demo", "outdir": str(outdir), "steps": 24, "tick_every": 2,
                          "sample_every": 4, "snapshot_every": 12, "device": "cpu",
                          "warmup_generator_steps": 2, "warmup_critic_steps": 10,
                          "desc": "digits"})
    run_dir, ended = run_training(opts, dataset=load_digits(opts.image_size))
    assert ended == "done"
    with open(run_dir / "metric-swd.jsonl", "w") as f:
        for step, value in ((12, 80.5), (24, 61.25)):
            f.write(json.dumps({"snapshot": f"network-snapshot-{step:07d}.pt",
                                "swd": {"mean": value}}) + "\n")
    return run_dir


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


@pytest.mark.slow
def test_report_embeds_everything_and_loads_nothing(short_run, tmp_path):
    out = tmp_path / "shared" / "report.html"
    res = CliRunner().invoke(main, ["report", str(short_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    # Nothing to fetch: no URL outside data: URIs, and a policy that forbids fetching.
    assert not re.search(r"(src|href)=\"(?!data:)", page)
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page
    pngs = embedded_pngs(page)
    grids = sorted(short_run.glob("fakes*.png"))
    assert [g.name for g in grids] == [f"fakes{s:07d}.png" for s in (4, 8, 12, 16, 20, 24)]
    # The final grid, the reals, then every grid on the slider: the files' own bytes.
    assert pngs == ([grids[-1].read_bytes(), (short_run / "reals.png").read_bytes()]
                    + [g.read_bytes() for g in grids])
    stats = [json.loads(x) for x in (short_run / "stats.jsonl").read_text().splitlines()]
    assert "finished: generator step 24 of 24" in page
    assert f"Wasserstein estimate {stats[-1]['wasserstein']:.5g}" in page
    # The Wasserstein curve has one point per tick.
    blob = re.search(r'data-for="chart-wasserstein">(.*?)</script>', page).group(1)
    curve = json.loads(blob)["curves"][0]
    assert curve["x"] == [r["step"] for r in stats]
    assert curve["y"] == [r["wasserstein"] for r in stats]
    assert 'data-for="chart-metric-0"' in page and "metric: swd" in page

    # A limit on grids keeps the first and the last.
    page = build_report(short_run, max_grids=3)
    steps = re.findall(r'data-step="(\d+)"', page)
    assert steps == ["4", "12", "24"] and "3 of 6 grids" in page


@pytest.mark.slow
def test_report_of_a_run_still_training(short_run, tmp_path):
    # The folder as it looks mid-run: later grids not yet written, a half-written stats line.
    run = tmp_path / "00000-digits"
    run.mkdir()
    for name in ("training_options.json", "reals.png", "fakes0000004.png", "fakes0000008.png"):
        shutil.copy(short_run / name, run / name)
    lines = (short_run / "stats.jsonl").read_text().splitlines()[:5]
    (run / "stats.jsonl").write_text("\n".join(lines) + '\n{"step": 12, "wasse')
    page = write_report(run).read_text()
    assert (run / "report.html").is_file()
    assert "generator step 10 of 24" in page and "still training" in page
    assert re.findall(r'data-step="(\d+)"', page) == ["4", "8"]
    # Stopped early by a signal: the log says so.
    (run / "log.txt").write_text("2026-01-01 00:00:00,000 WARNING stopped by SIGINT at generator "
                                 "step 10; resume with: wgan train --resume x\n")
    assert "stopped early at generator step 10 of 24" in build_report(run)


# ------------------------------------------------------------------------- in a real browser

PROBE = """<script>
window.__errors = [];
addEventListener('error', (e) => __errors.push(
  String(e.message || (e.target.src || '').slice(0, 60) || e)), true);
addEventListener('load', () => {
  const box = (el) => { const r = el.getBoundingClientRect();
                        return [r.left, r.top, r.width, r.height]; };
  const slider = document.getElementById('grid-slider');
  const shown = () => [...document.querySelectorAll('.timeline img')]
    .filter((i) => getComputedStyle(i).display !== 'none').map((i) => i.dataset.step);
  const before = shown();
  slider.value = 0; slider.dispatchEvent(new Event('input'));
  const after = shown(), label = document.querySelector('.slider output').textContent;
  slider.value = slider.max; slider.dispatchEvent(new Event('input'));
  // Hover over the middle of the Wasserstein chart's plot area.
  const chart = document.getElementById('chart-wasserstein'), r = chart.getBoundingClientRect();
  chart.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + 0.55 * r.width,
                                                   clientY: r.top + r.height / 2}));
  const readout = chart.querySelector('.readout').textContent;
  const result = {
    errors: __errors, before, after, label, readout,
    images: [...document.images].map((i) => ({id: i.id, step: i.dataset.step || null,
      complete: i.complete, w: i.naturalWidth, h: i.naturalHeight})),
    curves: [...document.querySelectorAll('polyline')].map((p) => ({
      label: p.dataset.label, n: p.points.numberOfItems, box: box(p)})),
    final: box(document.getElementById('final')),
    wasserstein: box(document.getElementById('chart-wasserstein')),
  };
  const pre = document.createElement('pre');
  pre.id = 'probe'; pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>"""


def chromium(*args, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--window-size=1200,1800", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(short_run, tmp_path):
    page = write_report(short_run, tmp_path / "report.html")

    # The page with a probe script that reads the DOM after load and writes what it found.
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    proc = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(),
                    tmp_path=tmp_path)
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the probe did not run:\n{proc.stderr[-2000:]}"
    found = json.loads(html.unescape(match.group(1)))
    assert found["errors"] == []
    assert "CONSOLE" not in proc.stderr, proc.stderr  # no console message, no CSP refusal
    grids = sorted(short_run.glob("fakes*.png"))
    with Image.open(grids[-1]) as final:
        size = final.size
    # Every image decoded, at the size of its file.
    assert len(found["images"]) == 2 + len(grids)
    assert all(i["complete"] and (i["w"], i["h"]) == size for i in found["images"])
    # The slider starts on the newest grid and moves to the first.
    assert found["before"] == ["24"] and found["after"] == ["4"] and found["label"] == "step 4"
    # Five curves (W, two losses, speed, one metric), each with its points, drawn with area.
    curves = {c["label"]: c for c in found["curves"]}
    assert set(curves) == {"wasserstein", "critic", "generator", "s/step", "swd/mean"}
    assert curves["wasserstein"]["n"] == 12 and curves["swd/mean"]["n"] == 2
    assert curves["wasserstein"]["box"][2] > 300 and curves["wasserstein"]["box"][3] > 50
    # Hovering shows the value of the tick nearest the pointer.
    stats = {r["step"]: r["wasserstein"] for r in
             map(json.loads, (short_run / "stats.jsonl").read_text().splitlines())}
    name, value, at = found["readout"].split()
    step = int(at.lstrip("@"))
    assert name == "wasserstein" and 6 <= step <= 18
    assert float(value) == pytest.approx(stats[step], rel=1e-4)

    # The screenshot of the plain page shows the final grid pixel for pixel and the curve.
    shot = tmp_path / "shot.png"
    proc = chromium(f"--screenshot={shot}", page.as_uri(), tmp_path=tmp_path)
    assert shot.is_file(), proc.stderr[-2000:]
    assert "CONSOLE" not in proc.stderr, proc.stderr
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    x, y, w, h = (round(v) for v in found["final"])
    shown = pixels[y + 1:y + h - 1, x + 1:x + w - 1]  # inside the 1-pixel border
    with Image.open(grids[-1]) as final:
        expected = np.asarray(final.convert("RGB").resize(shown.shape[1::-1], Image.NEAREST))
    assert np.abs(shown - expected).mean() < 2.0
    x, y, w, h = (round(v) for v in curves["wasserstein"]["box"])
    plot = pixels[y:y + h + 1, x:x + w + 1]
    blue = (np.abs(plot - [31, 119, 180]).sum(axis=2) < 60).sum()
    assert blue > w  # the line's pixels, at least one per column it spans
