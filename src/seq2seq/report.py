"""A sweep's report: one self-contained HTML page with its plots, its results and a
computed summary of which knob helped most."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .files import write_atomic
from .plots import SWEEP_METRICS, primary_metric
from .sweep import PLOTS, write_plots

REPORT_FILE = "report.html"


def knob_effects(results: Sequence[Mapping], knobs: Sequence[str], metric: str) -> list[dict]:
    """For each knob: the mean metric at each of its values (averaged over the other
    knobs' values), the change from its smallest to its largest value, and its best
    value. Largest change first."""
    higher_is_better = SWEEP_METRICS[metric][2]
    scored = [r for r in results if r.get(metric) is not None]
    effects = []
    for knob in knobs:
        values = sorted({r[knob] for r in scored})
        if len(values) < 2:
            continue
        means = {v: float(np.mean([r[metric] for r in scored if r[knob] == v])) for v in values}
        best = (max if higher_is_better else min)(means, key=means.get)
        effects.append({"knob": knob, "means": means, "change": means[values[-1]] - means[values[0]], "best": best})
    return sorted(effects, key=lambda effect: -abs(effect["change"]))


def summary(results: Sequence[Mapping], knobs: Sequence[str], metric: str) -> list[str]:
    """Sentences saying which knob helped most, and the best point."""
    label, higher = SWEEP_METRICS[metric][1], SWEEP_METRICS[metric][2]
    lines = []
    effects = knob_effects(results, knobs, metric)
    for rank, effect in enumerate(effects):
        values = sorted(effect["means"])
        low, high = values[0], values[-1]
        direction = "larger" if (effect["best"] == high) else "smaller" if effect["best"] == low else "a middle"
        text = (
            f"{effect['knob']}: from {low} to {high}, mean {label} {effect['means'][low]:.2f} → "
            f"{effect['means'][high]:.2f} ({effect['change']:+.2f}); best at {effect['best']} ({direction} value)"
        )
        lines.append(("Helped most — " if rank == 0 else "") + text + ".")
    scored = [r for r in results if r.get(metric) is not None]
    if scored:
        best = max(scored, key=lambda r: r[metric] if higher else -r[metric])
        minutes = (best.get("training_seconds") or 0) / 60
        lines.append(
            f"Best point: {best['point']}, {label} {best[metric]:.2f} after {best['epochs']} epochs "
            f"({minutes:.1f} training minutes, {best['parameters']:,} parameters)."
        )
    return lines


def write_report(sweep_dir: str | Path) -> Path:
    """Write DIR/report.html for a finished (or partly finished) sweep."""
    sweep_dir = Path(sweep_dir)
    results_file = sweep_dir / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{sweep_dir}: no results.json; run `seq2seq sweep --model-dir {sweep_dir}` first")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    knobs = list(json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))["axes"])
    metric = primary_metric(results)
    files = write_plots(sweep_dir, results, knobs)
    page = _page(sweep_dir, results, knobs, metric, files)
    path = sweep_dir / REPORT_FILE
    write_atomic(path, page)
    return path


def _page(sweep_dir: Path, results: list[dict], knobs: list[str], metric: str, files: dict[str, list[Path]]) -> str:
    escape = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>seq2seq sweep: {escape(sweep_dir.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "img{max-width:100%}figure{margin:1.5em 0}</style></head><body>",
        f"<h1>Sweep {escape(sweep_dir.name)}</h1>",
        f"<p>{len(results)} points, knobs: {escape(', '.join(knobs))}; measured by {SWEEP_METRICS[metric][1]}.</p>",
        "<h2>Summary</h2><ul>",
        *(f"<li>{escape(line)}</li>" for line in summary(results, knobs, metric)),
        "</ul><h2>Plots</h2>",
    ]
    for name, paths in files.items():
        png = next(p for p in paths if p.suffix == ".png")
        links = " ".join(f"<a href='{escape(str(p.relative_to(sweep_dir)))}'>{p.suffix[1:]}</a>" for p in paths)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(
            f"<figure id='{name}'><img alt='{escape(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{escape(name)}: {escape(PLOTS[name])} ({links})</figcaption></figure>"
        )
    columns = [*knobs, "dev_bleu", "dev_chrf", "dev_loss", "epochs", "training_seconds", "parameters"]
    parts.append("<h2>Results</h2><table><tr><th>point</th>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>")
    for r in results:
        cells = "".join(f"<td>{escape(str(r.get(c, '')))}</td>" for c in columns)
        parts.append(f"<tr><td>{escape(r['point'])}</td>{cells}</tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)
