"""Sweeps: train every point of a grid of settings and compare them.

The textbook's advice for improving results is to change the amount of training data,
the size of the hidden layers, the number of epochs and the batch size. A sweep trains
one model per combination of the values given for the knobs (epochs are not an axis:
every epoch of every point is recorded, so they are a curve), on one split made once
for the whole sweep, so every point is scored on the same dev sentences.

    DIR/sweep.json            the base settings and the grid
    DIR/data/{train,dev,test}.tsv   the split shared by all points
    DIR/points/NAME/          a model directory per point (+ result.json when done)
    DIR/results.{csv,json}    one row per point
    DIR/plots/                metric per knob, learning curves, quality against time

A sweep that is run again skips finished points and resumes an interrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from .config import Config, ConfigError, setting_types
from .data import Split
from .files import CHECKPOINT_DIR, CHECKPOINT_STATE_FILE, HISTORY_FILE, SPLIT_DIR, atomic_path, write_atomic
from .plots import read_history

# Settings that may take several values (comma-separated on the command line).
KNOBS = ("num_samples", "latent_dim", "batch_size", "learning_rate", "embedding_dim", "layers", "dropout")
SHORT = {
    "num_samples": "n",
    "latent_dim": "h",
    "batch_size": "b",
    "learning_rate": "lr",
    "embedding_dim": "e",
    "layers": "l",
    "dropout": "d",
}
RESULT_FILE = "result.json"


def point_name(settings: dict) -> str:
    """A directory name for a grid point, e.g. n2000-h64-b32."""
    return "-".join(f"{SHORT[k]}{v}" for k, v in settings.items())


def grid(axes: dict[str, list]) -> list[dict]:
    """Every combination of the axes' values, in order (the last axis varies fastest)."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[n] for n in names))]


def _settings(config: Config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k != "versions"}


def prepare(base: Config, axes: dict[str, list], sweep_dir: Path) -> Split:
    """Write (or, when resuming, check) the sweep's settings and its shared split."""
    from .training import prepare_data

    description = {"base": _settings(base), "axes": axes}
    settings_file = sweep_dir / "sweep.json"
    if settings_file.exists():
        previous = json.loads(settings_file.read_text(encoding="utf-8"))
        # settings added since the sweep started take their defaults, as its runs did; a
        # base this version cannot read stays as it is, and differs
        with contextlib.suppress(ConfigError, TypeError):
            previous["base"] = _settings(Config.from_dict(previous.get("base", {})))
        if previous != description:
            raise ConfigError(
                f"{sweep_dir} holds a different sweep (see {settings_file}); choose another directory to start anew"
            )
        return Split.load(sweep_dir / "data")
    if any(axis not in KNOBS for axis in axes):
        raise ConfigError(f"sweeps vary {', '.join(KNOBS)}; got {', '.join(axes)}")
    # one split of all the data, before any point samples its training pairs
    split = prepare_data(replace(base, num_samples=None))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    split.save(sweep_dir / "data")
    write_atomic(settings_file, json.dumps(description, indent=2) + "\n")
    return split


def point_config(base: Config, settings: dict, sweep_dir: Path) -> Config:
    data = sweep_dir / "data"
    return replace(
        base,
        **settings,
        data=str(data / "train.tsv"),
        dev_data=str(data / "dev.tsv"),
        test_data=str(data / "test.tsv") if (data / "test.tsv").stat().st_size else None,
        reverse=False,  # the shared split is already in the sweep's direction
    )


def capped(config: Config, minutes: float) -> Config:
    """`config` cut short to at most `minutes` of training. The cap is the sweep's, not
    the point's plan: a point that would keep its learning rate without a budget keeps it
    (`--lr-decay auto` follows the point's own budget)."""
    lr_decay = "none" if config.lr_decay == "auto" and config.time_budget is None else config.lr_decay
    return replace(config, time_budget=min(config.time_budget or minutes, minutes), lr_decay=lr_decay)


def run_sweep(
    base: Config, axes: dict[str, list], sweep_dir: str | Path, time_budget: float | None = None, verbose=2
) -> list[dict]:
    """Train every grid point not finished yet, then write results and plots. With
    `time_budget` (minutes for the whole sweep), points are cut short so that it ends
    in time, and points that no longer fit are left for a later run."""
    from .training import resume, train

    sweep_dir = Path(sweep_dir)
    prepare(base, axes, sweep_dir)
    points = grid(axes)
    started = time.perf_counter()
    durations: list[float] = []
    for number, settings in enumerate(points, start=1):
        name = point_name(settings)
        point_dir = sweep_dir / "points" / name
        if (point_dir / RESULT_FILE).exists():
            _log(f"point {number}/{len(points)} {name}: done already")
            continue
        spent = (time.perf_counter() - started) / 60
        if time_budget is not None and spent >= time_budget:
            _log(f"point {number}/{len(points)} {name}: not run, the sweep's {time_budget} min are spent")
            continue
        left = _remaining(durations, len(points) - number + 1)
        _log(f"point {number}/{len(points)} {name}: sweep at {spent:.1f} min{left}")
        point_started = time.perf_counter()
        config = point_config(base, settings, sweep_dir)
        if time_budget is not None:
            config = capped(config, time_budget - spent)
        if (point_dir / CHECKPOINT_DIR / CHECKPOINT_STATE_FILE).exists():
            resume(point_dir, verbose=verbose)
        else:
            train(config, point_dir, overwrite=True, verbose=verbose)
        result = {"point": name, **settings, **summarize(point_dir)}
        write_atomic(point_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")
        durations.append(time.perf_counter() - point_started)
    results = collect(sweep_dir, points)
    write_results(results, sweep_dir)
    write_plots(sweep_dir, results, list(axes))
    return results


def summarize(point_dir: Path) -> dict:
    """A finished point's numbers: best dev scores, training time, size."""
    from .api import Seq2Seq

    history = read_history(point_dir / HISTORY_FILE)
    system = Seq2Seq.load(point_dir)

    def best(column: str, pick) -> float | None:
        values = [row[column] for row in history if column in row and row[column] == row[column]]
        return round(pick(values), 4) if values else None

    return {
        "dev_loss": best("val_loss", min),
        "dev_bleu": best("dev_bleu", max),
        "dev_chrf": best("dev_chrf", max),
        "epochs": len(history),
        "training_seconds": round(history[-1].get("seconds", float("nan")), 1) if history else None,
        "parameters": system.model.count_params(),
        "training_pairs": sum(1 for _ in (point_dir / SPLIT_DIR / "train.tsv").open(encoding="utf-8")),
    }


def collect(sweep_dir: Path, points: list[dict]) -> list[dict]:
    results = []
    for settings in points:
        path = sweep_dir / "points" / point_name(settings) / RESULT_FILE
        if path.exists():
            results.append(json.loads(path.read_text(encoding="utf-8")))
    return results


def write_results(results: list[dict], sweep_dir: Path) -> None:
    write_atomic(sweep_dir / "results.json", json.dumps(results, indent=2) + "\n")
    if not results:
        return
    with atomic_path(sweep_dir / "results.csv") as temporary, temporary.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)


PLOTS = {
    "metric_by_knob": "the metric of every point against each knob",
    "learning_curves": "the metric after every epoch, one line per point",
    "quality_against_time": "the metric against training time, one line per point",
}


def write_plots(sweep_dir: Path, results: list[dict], knobs: list[str]) -> dict[str, list[Path]]:
    """The sweep's figures as PNG and SVG in DIR/plots; returns the files of each."""
    from . import plots

    if not results:
        return {}
    metric = plots.primary_metric(results)
    histories = {r["point"]: read_history(sweep_dir / "points" / r["point"] / HISTORY_FILE) for r in results}
    figures = {
        "metric_by_knob": plots.metric_by_knob(results, knobs, metric),
        "learning_curves": plots.sweep_curves(histories, metric, against="epoch"),
        "quality_against_time": plots.sweep_curves(histories, metric, against="minutes"),
    }
    return {name: plots.save(figure, sweep_dir / "plots" / name) for name, figure in figures.items()}


def parse_axes(values: dict[str, str | None]) -> tuple[dict[str, list], dict[str, object]]:
    """Comma-separated option values -> (grid axes with several values, single values)."""
    kinds = setting_types()
    axes, single = {}, {}
    for name, text in values.items():
        if text is None:
            continue
        kind = kinds[name]
        try:
            parsed = [kind(part) for part in str(text).split(",") if part.strip()]
        except ValueError as error:
            raise ConfigError(f"--{name.replace('_', '-')}: {error}") from None
        if len(parsed) > 1:
            axes[name] = parsed
        elif parsed:
            single[name] = parsed[0]
    return axes, single


def _remaining(durations: list[float], points_left: int) -> str:
    if not durations:
        return ""
    return f", about {sum(durations) / len(durations) * points_left / 60:.1f} min left"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
