"""A run folder as one self-contained HTML page: options, curves, sample grids over time.

Everything the page shows is inside the file: sample grids as base64 data URIs, curves as
inline SVG drawn here, a few lines of inline script for the slider and the hover readout. A
content security policy forbids any network access, so the page opens the same offline, from
an e-mail attachment or a shared folder. It reads a run that is still training (torn last
lines of JSON files are ignored) or one that stopped early.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgan import rundir
from wgan.checkpoint import atomic_write, make_folder
from wgan.errors import WganError

log = logging.getLogger(__name__)

FAKES_RE = re.compile(r"^fakes(\d+)\.png$")
METRIC_RE = re.compile(r"^metric-(.+)\.jsonl$")
SNAPSHOT_STEP_RE = re.compile(r"network-snapshot-(\d+)")
# Fields of a metric line that say what was measured rather than being a measurement.
METRIC_META = frozenset({"step", "seed", "num", "num_samples", "time", "timestamp", "images",
                         "kimg", "elapsed", "sec", "reals", "options"})
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
MAX_POINTS = 1500  # per curve; longer curves are thinned evenly (ends kept)


# ---------------------------------------------------------------------------------- reading


@dataclass
class Curve:
    label: str
    steps: list[float]
    values: list[float]


def read_metrics(run_dir: Path) -> dict[str, list[Curve]]:
    """``metric-<name>.jsonl`` files as curves against generator steps, one per numeric field.

    A line's step is its ``step`` field, or the number in the snapshot file name it names.
    Nested objects are flattened (``{"swd": {"16": x}}`` gives ``swd/16``). Lines with no step
    or no JSON are skipped.
    """
    out: dict[str, list[Curve]] = {}
    for path in sorted(Path(run_dir).glob("metric-*.jsonl")):
        name = METRIC_RE.match(path.name).group(1)
        series: dict[str, Curve] = {}
        for record in read_metric_records(path):
            step = metric_step(record)
            if step is None:
                continue
            for key, value in numbers(record):
                if key.split("/")[0] in METRIC_META:
                    continue
                curve = series.setdefault(key, Curve(key, [], []))
                curve.steps.append(step)
                curve.values.append(value)
        if series:
            out[name] = list(series.values())
    return out


def metric_step(record: dict[str, Any]) -> int | None:
    step = record.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    for value in record.values():
        if isinstance(value, str) and (m := SNAPSHOT_STEP_RE.search(value)):
            return int(m.group(1))
    return None


def read_metric_records(path: Path) -> list[dict[str, Any]]:
    """The complete JSON-object lines of a file (a torn or damaged line is left out)."""
    records = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.warning("skipping unreadable %s: %s", path, exc.strerror or exc)
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # note: a line being written right now, or a damaged one
        if isinstance(record, dict):
            records.append(record)
    return records


def numbers(record: dict[str, Any], prefix: str = ""):
    """(name, value) for every finite number in a record, nested keys joined by '/'."""
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from numbers(value, name + "/")
        elif (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value)):
            yield name, float(value)


def sample_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's ``fakesNNNNNNN.png`` grids as (step, path), by step."""
    grids = [(int(m.group(1)), p) for p in Path(run_dir).iterdir()
             if (m := FAKES_RE.match(p.name)) and p.is_file()]
    return sorted(grids)


def pick_evenly(items: Sequence, limit: int) -> list:
    """At most ``limit`` items spread evenly, always the first and the last."""
    if len(items) <= limit:
        return list(items)
    if limit < 2:
        return list(items[-1:])
    idx = sorted({round(i * (len(items) - 1) / (limit - 1)) for i in range(limit)})
    return [items[i] for i in idx]


def run_status(run_dir: Path, stats: list[dict], options: dict) -> str:
    """One line: finished, stopped early (and why), or still going, from the log and stats."""
    total = options.get("steps")
    step = stats[-1]["step"] if stats else 0
    of = f"generator step {step:,} of {total:,}" if isinstance(total, int) else f"step {step:,}"
    if isinstance(total, int) and step >= total:
        return f"finished: {of}"
    last_event = ""
    log_file = run_dir / "log.txt"
    if log_file.is_file():
        for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
            if any(k in line for k in ("stopped by", "diverged", "resuming", "done:", "error")):
                last_event = line
    if "stopped by" in last_event or "diverged" in last_event:
        reason = last_event.split(" ", 3)[-1] if last_event.count(" ") >= 3 else last_event
        return f"stopped early at {of} ({reason})"
    stats_file = run_dir / rundir.STATS_FILE
    if stats_file.is_file():
        age = time.time() - stats_file.stat().st_mtime
        return f"at {of}; statistics last written {_ago(age)} ago (still training, or stopped)"
    return f"no statistics yet ({of})"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------- drawing


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:,.6g}" if abs(v) >= 1000 else f"{v:.4g}"


def _thin(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    pairs = pick_evenly(pairs, MAX_POINTS)
    return [p[0] for p in pairs], [p[1] for p in pairs]


def svg_chart(chart_id: str, title: str, curves: list[Curve], xlabel: str = "generator steps",
              width: int = 530, height: int = 250) -> str:
    """An inline SVG line chart of the curves with axes, ticks, a legend and a hover readout."""
    curves = [Curve(c.label, *_thin(c.steps, c.values)) for c in curves]
    curves = [c for c in curves if c.steps]
    if not curves:
        return f'<p class="empty">{html.escape(title)}: no values yet.</p>'
    left, right, top, bottom = 64, 26, 26, 38
    pw, ph = width - left - right, height - top - bottom
    xs = [x for c in curves for x in c.steps]
    ys = [y for c in curves for y in c.values]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.06 or max(abs(y0) * 0.1, 1e-3)
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * ph

    parts = [f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>']
    for t in _nice_ticks(y0, y1):
        y = sy(t)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" '
                     'class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="ytick">{_fmt(t)}</text>')
    for t in _nice_ticks(x0, x1):
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 15}" class="xtick">{_fmt(t)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
    parts.append(f'<text x="{left + pw / 2:.0f}" y="{height - 4}" class="xlabel">'
                 f'{html.escape(xlabel)}</text>')
    data = []
    legend_x = left + pw
    for i, c in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(c.steps, c.values,
                                                                    strict=True))
        parts.append(f'<polyline points="{points}" stroke="{color}" class="curve" '
                     f'data-label="{html.escape(c.label)}"/>')
        if len(c.steps) == 1:
            parts.append(f'<circle cx="{sx(c.steps[0]):.1f}" cy="{sy(c.values[0]):.1f}" r="3" '
                         f'fill="{color}"/>')
        # The legend sits on the title's line, right-aligned, entries from the right.
        parts.append(f'<text x="{legend_x:.0f}" y="16" class="legend" fill="{color}">'
                     f'{html.escape(c.label)}</text>')
        legend_x -= 7 * len(c.label) + 16
        data.append({"label": c.label, "x": c.steps, "y": c.values})
    parts.append(f'<line class="cursor" x1="0" x2="0" y1="{top}" y2="{top + ph}" '
                 'visibility="hidden"/>')
    parts.append(f'<text class="readout" x="{left + 6}" y="{top + 14}"></text>')
    parts.append("</svg>")
    box = {"left": left, "width": pw, "x0": x0, "x1": x1, "svgWidth": width}
    parts.append(f'<script type="application/json" class="chart-data" data-for="{chart_id}">'
                 f'{_script_json({"box": box, "curves": data})}</script>')
    return "\n".join(parts)


def _script_json(data: Any) -> str:
    # note: "</" would end the script element early, whatever the JSON string says.
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def _img(path: Path, alt: str, attrs: str = "", min_width: int = 400) -> str:
    """An <img> holding the PNG file itself, shown at a whole multiple of its size."""
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])  # the PNG header's IHDR chunk
    k = max(1, min_width // max(width, 1))
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<img {attrs} alt="{html.escape(alt)}" width="{width * k}" height="{height * k}" '
            f'src="{uri}">')


# ---------------------------------------------------------------------------------- the page


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.status{color:#555;margin:0 0 12px}.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{background:#fff;border:1px solid #e3e3e3;max-width:100%;height:auto}
svg .title{font-weight:600;font-size:13px}svg .grid{stroke:#eee}svg .frame{fill:none;stroke:#999}
svg .ytick{text-anchor:end;font-size:11px;fill:#555}svg .xtick{text-anchor:middle;font-size:11px;
fill:#555}svg .xlabel{text-anchor:middle;font-size:12px;fill:#333}
svg .curve{fill:none;stroke-width:1.6}svg .legend{text-anchor:end;font-size:12px}
svg .cursor{stroke:#888;stroke-dasharray:3 3}svg .readout{font-size:11px;fill:#111}
table.options{border-collapse:collapse;font-size:13px}
table.options td{border-bottom:1px solid #eee;padding:2px 14px 2px 0;vertical-align:top}
table.options td:first-child{font-family:ui-monospace,monospace;color:#555}
.grids img,.final img,.reals img{image-rendering:pixelated;border:1px solid #ccc;
max-width:100%;height:auto}
.timeline img{display:none}.timeline img.shown{display:block}
.slider{display:flex;align-items:center;gap:12px;margin:6px 0}.slider input{flex:1}
.pair{display:flex;flex-wrap:wrap;gap:24px}.pair figure{margin:0}
figcaption{color:#555;font-size:13px}.empty{color:#777}pre{background:#f6f6f6;padding:8px;
overflow:auto;font-size:12px}
"""

SCRIPT = """
(function () {
  // Sample grids over time: the slider shows one embedded grid at a time.
  for (const box of document.querySelectorAll('.timeline')) {
    const imgs = box.querySelectorAll('img');
    const slider = box.parentNode.querySelector('input[type=range]');
    const label = box.parentNode.querySelector('.slider output');
    const show = (i) => {
      imgs.forEach((img, j) => img.classList.toggle('shown', j === i));
      label.textContent = 'step ' + Number(imgs[i].dataset.step).toLocaleString('en');
    };
    slider.addEventListener('input', () => show(Number(slider.value)));
    show(Number(slider.value));
  }
  // Charts: a vertical cursor and the values of every curve at the nearest step.
  for (const blob of document.querySelectorAll('script.chart-data')) {
    const svg = document.getElementById(blob.dataset.for);
    const data = JSON.parse(blob.textContent);
    const b = data.box, cursor = svg.querySelector('.cursor');
    const readout = svg.querySelector('.readout');
    svg.addEventListener('mousemove', (ev) => {
      const r = svg.getBoundingClientRect();
      const px = (ev.clientX - r.left) * b.svgWidth / r.width;
      const x = b.x0 + (px - b.left) / b.width * (b.x1 - b.x0);
      if (px < b.left || px > b.left + b.width) return;
      cursor.setAttribute('x1', px); cursor.setAttribute('x2', px);
      cursor.setAttribute('visibility', 'visible');
      const texts = data.curves.map((c) => {
        let k = 0;
        for (let i = 1; i < c.x.length; i++) if (Math.abs(c.x[i] - x) < Math.abs(c.x[k] - x)) k = i;
        return c.label + ' ' + c.y[k].toPrecision(5) + ' @' + c.x[k];
      });
      readout.textContent = texts.join('   ');
    });
  }
})();
"""

# note: the policy is what makes "no network" hold: the page may load nothing from anywhere.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")


def build_report(run_dir: str | Path, max_grids: int = 30) -> str:
    """The HTML text of the report of ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise WganError(f"{run_dir} is not a folder; pass a run folder such as "
                        "runs/00000-<desc>")
    options_file = run_dir / "training_options.json"
    stats = rundir.read_stats(run_dir)
    grids = sample_grids(run_dir)
    if not options_file.is_file() and not stats and not grids:
        raise WganError(f"{run_dir} is not a run folder (no training_options.json, "
                        f"{rundir.STATS_FILE} or sample grids)")
    options: dict[str, Any] = {}
    if options_file.is_file():
        try:
            options = json.loads(options_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.warning("%s is not valid JSON (%s); the report shows no options", options_file,
                        exc)
    stats = [r for r in stats if isinstance(r.get("step"), int)]
    esc = html.escape
    name = run_dir.resolve().name
    body: list[str] = [f"<h1>{esc(name)}</h1>",
                       f'<p class="status">{esc(run_status(run_dir, stats, options))}. '
                       f"Report made {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.</p>"]

    # Curves from the statistics file.
    body.append("<h2>Training curves</h2>")
    if stats:
        steps = [r["step"] for r in stats]

        def curve(key: str, label: str) -> Curve:
            pairs = [(r["step"], float(r[key])) for r in stats
                     if isinstance(r.get(key), int | float)]
            return Curve(label, [p[0] for p in pairs], [p[1] for p in pairs])

        charts = [
            svg_chart("chart-wasserstein", "Wasserstein estimate (critic, per tick)",
                      [curve("wasserstein", "wasserstein")]),
            svg_chart("chart-losses", "Losses",
                      [curve("loss_critic", "critic"), curve("loss_generator", "generator")]),
        ]
        if "sec_per_step" in stats[-1]:
            charts.append(svg_chart("chart-speed", "Seconds per generator step",
                                    [curve("sec_per_step", "s/step")]))
        body.append('<div class="charts">' + "\n".join(charts) + "</div>")
        last = stats[-1]
        body.append(f"<p>Last tick: step {steps[-1]:,}, {last.get('images', 0):,} real images "
                    f"shown, Wasserstein estimate {last.get('wasserstein', float('nan')):.5g}, "
                    f"{last.get('bad_images', 0)} unreadable images skipped.</p>")
    else:
        body.append('<p class="empty">No statistics yet: the first tick has not ended.</p>')

    # Metric curves, one chart per metric file.
    metrics = read_metrics(run_dir)
    if metrics:
        body.append("<h2>Metrics</h2>")
        body.append('<div class="charts">' + "\n".join(
            svg_chart(f"chart-metric-{i}", f"metric: {metric}", curves)
            for i, (metric, curves) in enumerate(metrics.items())) + "</div>")

    # Sample grids over time and the final samples.
    body.append("<h2>Samples from the fixed noise</h2>")
    if grids:
        shown = pick_evenly(grids, max_grids)
        final_step, final_path = grids[-1]
        body.append('<div class="pair">')
        body.append('<figure class="final">'
                    + _img(final_path, f"samples at step {final_step}", 'id="final"')
                    + f"<figcaption>Latest samples: generator step {final_step:,} "
                    f"({esc(final_path.name)})</figcaption></figure>")
        reals = run_dir / "reals.png"
        if reals.is_file():
            body.append('<figure class="reals">' + _img(reals, "real images", 'id="reals"')
                        + "<figcaption>Real training images</figcaption></figure>")
        body.append("</div>")
        note = (f" ({len(shown)} of {len(grids)} grids, evenly spaced)"
                if len(shown) < len(grids) else "")
        body.append(f"<h2>Samples over time{note}</h2>")
        body.append('<div class="grids"><div class="slider">'
                    f'<input type="range" id="grid-slider" min="0" max="{len(shown) - 1}" '
                    f'value="{len(shown) - 1}" aria-label="sample grid">'
                    '<output></output></div><div class="timeline">')
        for step, path in shown:
            body.append(_img(path, f"samples at step {step}", f'data-step="{step}"',
                             min_width=520))
        body.append("</div></div>")
    else:
        body.append('<p class="empty">No sample grids yet.</p>')

    # Options and the end of the log.
    body.append("<h2>Options</h2>")
    if options:
        rows = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(json.dumps(v))}</td></tr>"
                       for k, v in sorted(options.items()))
        body.append(f'<table class="options">{rows}</table>')
    else:
        body.append('<p class="empty">No training_options.json.</p>')
    log_file = run_dir / "log.txt"
    if log_file.is_file():
        tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        body.append("<details><summary>Last lines of log.txt</summary><pre>"
                    + esc("\n".join(tail)) + "</pre></details>")

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            '<meta name="viewport" content="width=device-width,initial-scale=1">\n'
            f"<title>{esc(name)}: WGAN run report</title>\n<style>{STYLE}</style></head>\n"
            "<body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None,
                 max_grids: int = 30) -> Path:
    """Write the report (default ``<run_dir>/report.html``); returns its path."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    if max_grids < 1:
        raise WganError(f"--max-grids must be at least 1, not {max_grids}")
    text = build_report(run_dir, max_grids)
    make_folder(out.parent, "--out", out)
    try:
        atomic_write(out, lambda f: f.write(text.encode("utf-8")))
    except OSError as exc:
        raise WganError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    log.info("report of %s written to %s (%.1f MB)", run_dir, out, len(text) / 1e6)
    return out
