"""Pictures of the data, of what the model reads, and of its training.

Every function returns a `matplotlib.figure.Figure` (no pyplot, no global state): inspect
it, or write it with `save(figure, "runs/x/curves")` as PNG and SVG.

    training_curves          loss, accuracy and dev BLEU/chrF per epoch, from history.csv
    attention_heatmap        attention weights: output tokens x source tokens
    one_hot_matrix           a sentence as timesteps x vocabulary one-hot vectors
    teacher_forcing_alignment  decoder input (<start> w1 w2 ...) above decoder target (w1 w2 ... <end>)
    length_distribution      histograms of source and target lengths, mean and 99th percentile
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .batches import teacher_forcing
from .data import Pair, normalize
from .files import atomic_path
from .vocab import UNK, UNK_ID, Codec

# history.csv columns drawn by `training_curves`: panel title -> [(column, line label)].
HISTORY_PANELS: dict[str, list[tuple[str, str]]] = {
    "loss": [("loss", "train"), ("val_loss", "validation")],
    "accuracy": [("accuracy", "train"), ("val_accuracy", "validation")],
    "dev scores": [("dev_bleu", "BLEU"), ("dev_chrf", "chrF")],
    "learning rate": [("learning_rate", "learning rate")],
}

# Columns of the one-hot matrix are all labelled up to this vocabulary size; above it,
# only the columns of the sentence's tokens are.
MAX_LABELLED_COLUMNS = 60

_WHITESPACE_SHOWN_AS = {" ": "␣", "\t": "⇥", "\n": "↵"}


def visible_token(token: str) -> str:
    """A token as a tick label: whitespace made visible (a space becomes '␣')."""
    return "".join(_WHITESPACE_SHOWN_AS.get(char, char) for char in token)


def save(figure: Figure, path_stem: str | Path, formats: Sequence[str] = ("png", "svg"), dpi: int = 150) -> list[Path]:
    """Write the figure as `path_stem.png`, `path_stem.svg` (one file per format), creating
    the directory if needed. Returns the paths written."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = path_stem.parent / f"{path_stem.name}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else None  # reproducible SVG files
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=fmt, dpi=dpi, metadata=metadata)
        written.append(path)
    return written


# --- training curves ------------------------------------------------------------------


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The rows of a Keras CSVLogger file as floats ("NA" and empty cells become nan)."""
    with Path(path).open(newline="", encoding="utf-8") as lines:
        return [{key: _to_float(value) for key, value in row.items()} for row in csv.DictReader(lines)]


def training_curves(history: str | Path | Iterable[Mapping[str, float | str]]) -> Figure:
    """Loss and accuracy (train and validation) per epoch, and dev BLEU/chrF and the
    learning rate when the history has them, one panel each.

    `history` is a model directory's history.csv (a path) or its rows. Keras counts epochs
    from 0; the x axis counts them from 1.
    """
    if isinstance(history, str | Path):
        rows = read_history(history)
    else:
        rows = [{key: _to_float(value) for key, value in row.items()} for row in history]
    if not rows:
        raise ValueError("the history has no rows (no finished epoch)")
    columns = set(rows[0])
    # Keras counts epochs from 0 (a resumed run continues the count); a row without one is the next epoch
    epochs = np.array([row["epoch"] + 1 if "epoch" in row else n for n, row in enumerate(rows, start=1)])
    panels = {
        title: [(column, label) for column, label in lines if column in columns]
        for title, lines in HISTORY_PANELS.items()
    }
    panels = {title: lines for title, lines in panels.items() if lines}
    if not panels:
        raise ValueError(f"the history has none of the columns {[c for ls in HISTORY_PANELS.values() for c, _ in ls]}")

    figure = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, lines) in zip(axes, panels.items(), strict=True):
        for column, label in lines:
            ax.plot(epochs, [row.get(column, math.nan) for row in rows], marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(title if len(lines) > 1 else lines[0][1])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if title == "learning rate":
            ax.set_yscale("log")
        else:
            ax.legend()
    seconds = rows[-1].get("seconds", math.nan)
    duration = f", {seconds / 60:.1f} min of training" if not math.isnan(seconds) else ""
    figure.suptitle(f"training: {len(rows)} epochs{duration}")
    return figure


def _to_float(value: float | str | None) -> float:
    if value is None or value in ("", "NA"):
        return math.nan
    return float(value)


# --- attention ------------------------------------------------------------------------


def attention_heatmap(source_tokens: Sequence[str], output_tokens: Sequence[str], weights: np.ndarray) -> Figure:
    """Attention weights (len(output_tokens), len(source_tokens)) as an image: row t is how
    much output token t looked at each source token (a row sums to 1). The arguments are
    what `Seq2Seq.attention(text)` returns."""
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(output_tokens), len(source_tokens)):
        raise ValueError(
            f"weights have shape {weights.shape}; expected (output tokens, source tokens) = "
            f"({len(output_tokens)}, {len(source_tokens)})"
        )
    figure = Figure(
        figsize=(max(4.0, 0.32 * len(source_tokens) + 2.5), max(3.0, 0.32 * len(output_tokens) + 1.8)),
        layout="constrained",
    )
    ax = figure.subplots()
    image = ax.imshow(weights, cmap="viridis", vmin=0, aspect="auto", interpolation="nearest")
    source_labels = [visible_token(t) for t in source_tokens]
    ax.set_xticks(range(len(source_tokens)), labels=source_labels, rotation=_label_rotation(source_labels))
    ax.set_yticks(range(len(output_tokens)), labels=[visible_token(t) for t in output_tokens])
    ax.set_xlabel("source tokens (encoder timesteps)")
    ax.set_ylabel("output tokens (decoder timesteps)")
    ax.set_title("attention weights")
    figure.colorbar(image, ax=ax, label="weight")
    return figure


def _label_rotation(labels: Sequence[str]) -> int:
    """Upright labels for single characters, vertical ones for words."""
    return 90 if any(len(label) > 1 for label in labels) else 0


# --- one-hot vectors --------------------------------------------------------------------


def one_hot_matrix(text: str, codec: Codec, max_labelled_columns: int = MAX_LABELLED_COLUMNS) -> Figure:
    """A sentence as the model's one-hot input: rows are timesteps (the tokens of the text
    as the codec splits it, after the same normalisation as the model's input), columns
    are vocabulary ids, a dark cell where token t has id v.

    The bottom axis names the tokens of the columns, the top axis their ids: every column
    up to `max_labelled_columns` vocabulary entries, else only the columns used.
    """
    text = normalize(text)  # for the title: the codec normalises what it splits itself
    tokens = codec.tokenize(text)
    ids = codec.encode(text)
    if not ids:
        raise ValueError("the text has no tokens")
    vocabulary = codec.vocabulary.tokens
    size = len(vocabulary)
    matrix = np.eye(size, dtype=np.int8)[ids]  # (timesteps, vocabulary): row t = one_hot(ids[t])

    small = size <= max_labelled_columns
    width = 0.24 * size + 2.5 if small else 12.0
    figure = Figure(figsize=(max(5.0, width), max(2.5, 0.3 * len(ids) + 2.0)), layout="constrained")
    ax = figure.subplots()
    ax.imshow(matrix, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    if not small:  # a column is narrower than a pixel: mark the ones as well
        ax.scatter(ids, range(len(ids)), marker="s", s=16, color="black")
    columns = list(range(size)) if small else sorted(set(ids))
    column_labels = [visible_token(vocabulary[i]) for i in columns]
    ax.set_xticks(columns, labels=column_labels, rotation=_label_rotation(column_labels))
    ids_axis = ax.secondary_xaxis("top")
    ids_axis.set_xticks(columns, labels=[str(i) for i in columns], rotation=90 if size > 10 else 0)
    ids_axis.set_xlabel("id")
    row_labels = [
        f"{visible_token(token)} ({UNK})" if i == UNK_ID and token != UNK else visible_token(token)
        for token, i in zip(tokens, ids, strict=True)
    ]
    ax.set_yticks(range(len(ids)), labels=row_labels)
    ax.set_ylabel("timestep (token)")
    ax.set_xlabel("vocabulary entry")
    if small:  # cell borders, so that the matrix reads as a table of vectors
        ax.set_xticks(np.arange(-0.5, size, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, len(ids), 1), minor=True)
        ax.grid(which="minor", color="0.85", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    figure.suptitle(f"one-hot matrix of {_shorten(text)!r}\ntimesteps × vocabulary (T = {len(ids)}, V = {size})")
    return figure


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- teacher forcing --------------------------------------------------------------------

INPUT_ROW, TARGET_ROW, HEADER_ROW = 1.0, 0.0, 1.75  # y of the rows in `teacher_forcing_alignment`


def teacher_forcing_alignment(target_text: str, codec: Codec) -> Figure:
    """The decoder's input above its expected output, by timestep, for one target text:

        timestep   1        2     3      ...
        input      <start>  w1    w2     ...
        target     w1       w2    w3     ... <end>

    An arrow and a shared colour join target t to input t+1: in training, the decoder reads
    the true token t when it must produce token t+1.

    Cell texts have the gids "input:t" and "target:t" (t from 1), at x = t and y =
    INPUT_ROW / TARGET_ROW; their boxes "input-cell:t" and "target-cell:t"; arrows
    "shift:t" (from target t to input t+1).
    """
    ids = codec.encode(target_text)
    decoder_input, decoder_target = teacher_forcing(ids)
    vocabulary = codec.vocabulary.tokens
    rows = {
        "input": (INPUT_ROW, [vocabulary[i] for i in decoder_input]),
        "target": (TARGET_ROW, [vocabulary[i] for i in decoder_target]),
    }
    steps = len(decoder_input)
    longest = max(len(visible_token(vocabulary[i])) for i in decoder_input + decoder_target)
    cell_width = max(0.55, 0.11 * longest + 0.25)  # inches
    figure = Figure(figsize=(cell_width * steps + 2.0, 2.6), layout="constrained")
    ax = figure.subplots()
    colours = [figure.get_facecolor()] + [f"C{k % 10}" for k in range(steps)]  # pair k: target k, input k+1
    for name, (y, tokens) in rows.items():
        ax.text(0.4, y, f"decoder {name}", ha="right", va="center", fontweight="bold")
        for t, token in enumerate(tokens, start=1):
            pair = t - 1 if name == "input" else t  # input t+1 shows the same token as target t
            ax.add_patch(
                Rectangle(
                    (t - 0.45, y - 0.3),
                    0.9,
                    0.6,
                    facecolor=colours[pair] if pair < steps else "none",
                    alpha=0.25,
                    edgecolor="0.4",
                    gid=f"{name}-cell:{t}",
                )
            )
            ax.text(t, y, visible_token(token), ha="center", va="center", gid=f"{name}:{t}")
    for t in range(1, steps + 1):
        ax.text(t, HEADER_ROW, str(t), ha="center", va="center", color="0.3", gid=f"timestep:{t}")
    ax.text(0.4, HEADER_ROW, "timestep", ha="right", va="center", color="0.3")
    for t in range(1, steps):
        ax.annotate(
            "",
            xy=(t + 1 - 0.2, INPUT_ROW - 0.3),
            xytext=(t + 0.2, TARGET_ROW + 0.3),
            xycoords="data",
            arrowprops={"arrowstyle": "->", "color": "0.3", "shrinkA": 0, "shrinkB": 0},
            gid=f"shift:{t}",
        )
    ax.set_xlim(-1.6, steps + 0.6)
    ax.set_ylim(-0.5, HEADER_ROW + 0.4)
    ax.axis("off")
    ax.set_title("teacher forcing: the decoder input is the target shifted right by one")
    return figure


# --- lengths ----------------------------------------------------------------------------


def length_distribution(
    pairs: Iterable[Pair | tuple[str, str]],
    source_codec: Codec | None = None,
    target_codec: Codec | None = None,
) -> Figure:
    """Histograms of source and target lengths, in tokens on a side whose codec is given,
    else in characters, with the mean and the 99th percentile marked."""
    sides: dict[str, list[str]] = {"source": [], "target": []}
    for pair in pairs:
        source, target = (pair.source, pair.target) if isinstance(pair, Pair) else pair
        sides["source"].append(source)
        sides["target"].append(target)
    if not sides["source"]:
        raise ValueError("no pairs")
    figure = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, (side, texts), codec in zip(axes, sides.items(), (source_codec, target_codec), strict=True):
        lengths = np.array([len(codec.tokenize(t)) if codec else len(t) for t in texts])
        unit = "tokens" if codec else "characters"
        ax.hist(lengths, bins=_length_bins(lengths), color="C0" if side == "source" else "C1", alpha=0.8)
        mean, p99 = float(lengths.mean()), float(np.percentile(lengths, 99))
        ax.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.1f}")
        ax.axvline(p99, color="black", linestyle=":", label=f"99th percentile {p99:.0f}")
        ax.set_title(f"{side} ({len(lengths)} texts, longest {lengths.max()})")
        ax.set_xlabel(f"length ({unit})")
        ax.set_ylabel("texts")
        ax.legend()
    return figure


def _length_bins(lengths: np.ndarray) -> np.ndarray | str:
    """One bar per length while there are at most 100 of them, else numpy's choice."""
    low, high = int(lengths.min()), int(lengths.max())
    if high - low <= 100:
        return np.arange(low, high + 2) - 0.5
    return "auto"


# --- sweeps ----------------------------------------------------------------------------

# result column -> (history column, label, higher is better)
SWEEP_METRICS = {
    "dev_bleu": ("dev_bleu", "dev BLEU", True),
    "dev_chrf": ("dev_chrf", "dev chrF", True),
    "dev_loss": ("val_loss", "dev loss", False),
}
LOG_SCALE_KNOBS = {"num_samples", "learning_rate"}


def primary_metric(results: Sequence[Mapping]) -> str:
    """The sweep's yardstick: dev BLEU when it says something, else chrF, else the loss.
    Below 1 point (weak models: a few matching words by chance) a score ranks nothing."""
    for metric in ("dev_bleu", "dev_chrf"):
        if max((r.get(metric) or 0) for r in results) >= 1:
            return metric
    return "dev_loss"


def metric_by_knob(results: Sequence[Mapping], knobs: Sequence[str], metric: str) -> Figure:
    """One panel per knob: the metric of every point against the knob's value, and the
    mean over the other knobs' values as a line."""
    label = SWEEP_METRICS[metric][1]
    figure = Figure(figsize=(4.2 * len(knobs), 3.6), layout="constrained")
    for axes, knob in zip(figure.subplots(1, len(knobs), squeeze=False)[0], knobs, strict=True):
        points = [(r[knob], r[metric]) for r in results if r.get(metric) is not None]
        axes.scatter([x for x, _ in points], [y for _, y in points], color="0.5", s=18, label="points")
        values = sorted({x for x, _ in points})
        means = [float(np.mean([y for x, y in points if x == value])) for value in values]
        axes.plot(values, means, marker="o", label="mean")
        if knob in LOG_SCALE_KNOBS:
            axes.set_xscale("log")
        axes.set_xlabel(knob)
        axes.set_ylabel(label)
        axes.set_title(f"{label} by {knob}")
        axes.legend()
    return figure


def sweep_curves(histories: Mapping[str, Sequence[Mapping]], metric: str, against: str = "epoch") -> Figure:
    """The metric of every point after every epoch (`against="epoch"`) or against the
    training time so far (`against="minutes"`): one line per point."""
    column, label, _ = SWEEP_METRICS[metric]
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.subplots()
    for name, rows in histories.items():
        rows = [row for row in rows if column in row and row[column] == row[column]]
        xs = [row["epoch"] + 1 for row in rows] if against == "epoch" else [row["seconds"] / 60 for row in rows]
        axes.plot(xs, [row[column] for row in rows], marker=".", label=name)
    axes.set_xlabel("epoch" if against == "epoch" else "training minutes")
    axes.set_ylabel(label)
    axes.set_title(f"{label} per epoch" if against == "epoch" else f"{label} against training time")
    if len(histories) <= 16:
        axes.legend(fontsize="small", ncols=2)
    return figure
