"""The pictures: inspected as figure objects (axes, lines, images, labels), no training."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Annotation

from seq2seq.data import Pair
from seq2seq.plots import (
    INPUT_ROW,
    TARGET_ROW,
    attention_heatmap,
    length_distribution,
    one_hot_matrix,
    save,
    teacher_forcing_alignment,
    training_curves,
    visible_token,
)
from seq2seq.vocab import SPECIALS, UNK, UNK_ID, CharTokenizer, Codec, WordTokenizer

HISTORY_COLUMNS = [
    "epoch",
    "accuracy",
    "dev_bleu",
    "dev_chrf",
    "dev_exact",
    "learning_rate",
    "loss",
    "seconds",
    "val_accuracy",
    "val_loss",
]
HISTORY_ROWS = [  # as Keras's CSVLogger writes them: epochs counted from 0
    [0, 0.31, 1.5, 20.1, 0.0, 0.001, 2.4, 3.5, 0.35, 2.2],
    [1, 0.52, 7.25, 31.4, 0.05, 0.001, 1.7, 6.9, 0.50, 1.8],
    [2, 0.70, 15.0, 44.0, 0.10, 0.0005, 1.1, 10.2, 0.61, 1.6],
]


def column(name: str) -> list[float]:
    return [row[HISTORY_COLUMNS.index(name)] for row in HISTORY_ROWS]


@pytest.fixture
def history_csv(tmp_path):
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HISTORY_COLUMNS)
        writer.writerows(HISTORY_ROWS)
    return path


@pytest.fixture
def words() -> Codec:
    return Codec.fit(WordTokenizer(), ["we like kiwis .", "they like apples .", "we eat kiwis"])


def lines_by_label(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def by_gid(artists, prefix: str) -> dict[int, object]:
    """Artists whose gid is `prefix:t`, by t."""
    return {int(a.get_gid().split(":")[1]): a for a in artists if (a.get_gid() or "").startswith(prefix + ":")}


# --- training curves ------------------------------------------------------------------


def test_training_curves_draw_every_column_per_epoch(history_csv):
    figure = training_curves(history_csv)
    assert isinstance(figure, Figure)
    axes = {ax.get_title(): ax for ax in figure.axes}
    assert list(axes) == ["loss", "accuracy", "dev scores", "learning rate"]
    epochs = [1, 2, 3]  # 1-based, from Keras's 0-based epoch column
    assert lines_by_label(axes["loss"]) == {
        "train": (epochs, column("loss")),
        "validation": (epochs, column("val_loss")),
    }
    assert lines_by_label(axes["accuracy"]) == {
        "train": (epochs, column("accuracy")),
        "validation": (epochs, column("val_accuracy")),
    }
    assert lines_by_label(axes["dev scores"]) == {
        "BLEU": (epochs, column("dev_bleu")),
        "chrF": (epochs, column("dev_chrf")),
    }
    assert lines_by_label(axes["learning rate"]) == {"learning rate": (epochs, column("learning_rate"))}
    assert axes["learning rate"].get_yscale() == "log"
    for title in ("loss", "accuracy", "dev scores"):
        ax = axes[title]
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
        assert tick_texts(ax.get_legend().get_texts()) == [line.get_label() for line in ax.get_lines()]
    assert "3 epochs" in figure.get_suptitle() and "0.2 min" in figure.get_suptitle()  # 10.2 s


def test_training_curves_from_rows_without_optional_columns():
    rows = [
        {"epoch": "0", "loss": "2.0", "accuracy": "0.4"},
        {"epoch": "1", "loss": "1.5", "accuracy": "NA"},  # CSVLogger's missing value
    ]
    figure = training_curves(rows)
    assert [ax.get_title() for ax in figure.axes] == ["loss", "accuracy"]
    loss, accuracy = figure.axes
    assert lines_by_label(loss) == {"train": ([1, 2], [2.0, 1.5])}
    (line,) = accuracy.get_lines()
    assert line.get_ydata()[0] == 0.4 and math.isnan(line.get_ydata()[1])


def test_training_curves_need_rows():
    with pytest.raises(ValueError, match="no rows"):
        training_curves([])
    with pytest.raises(ValueError, match="none of the columns"):
        training_curves([{"epoch": 0, "seconds": 1.0}])


# --- attention ------------------------------------------------------------------------


def test_attention_heatmap_shows_the_weights_with_tokens_as_ticks():
    source = ["h", "i", " ", "y", "o"]
    output = ["o", "l", "a", "<end>"]
    rng = np.random.default_rng(0)
    weights = rng.random((len(output), len(source)))
    weights /= weights.sum(axis=1, keepdims=True)
    figure = attention_heatmap(source, output, weights)
    ax = figure.axes[0]
    assert len(figure.axes) == 2  # the heatmap and its colorbar
    (image,) = ax.get_images()
    np.testing.assert_array_equal(np.asarray(image.get_array()), weights)
    assert tick_texts(ax.get_xticklabels()) == ["h", "i", "␣", "y", "o"]
    assert tick_texts(ax.get_yticklabels()) == output
    assert "source" in ax.get_xlabel() and "output" in ax.get_ylabel()


def test_attention_heatmap_rejects_transposed_weights():
    with pytest.raises(ValueError, match="expected"):
        attention_heatmap(["a", "b", "c"], ["x", "y"], np.zeros((3, 2)))


# --- one-hot matrix -------------------------------------------------------------------


def test_one_hot_matrix_is_one_row_of_the_identity_per_token(words):
    text = "we like kiwis ."
    ids = words.encode(text)
    size = len(words)
    figure = one_hot_matrix(text, words)
    ax = figure.axes[0]
    (image,) = ax.get_images()
    matrix = np.asarray(image.get_array())
    assert matrix.shape == (4, size)  # timesteps x vocabulary
    np.testing.assert_array_equal(matrix, np.eye(size)[ids])
    assert (matrix.sum(axis=1) == 1).all()
    assert matrix.argmax(axis=1).tolist() == ids
    assert tick_texts(ax.get_yticklabels()) == ["we", "like", "kiwis", "."]
    assert tick_texts(ax.get_xticklabels()) == words.vocabulary.tokens  # small vocabulary: every column named
    assert tick_texts(ax.get_xticklabels())[: len(SPECIALS)] == list(SPECIALS)
    assert f"V = {size}" in figure.get_suptitle() and "timesteps × vocabulary" in figure.get_suptitle()


def test_one_hot_matrix_marks_unknown_tokens(words):
    figure = one_hot_matrix("we like mangos", words)
    ax = figure.axes[0]
    matrix = np.asarray(ax.get_images()[0].get_array())
    assert matrix[2].argmax() == UNK_ID
    assert tick_texts(ax.get_yticklabels())[2] == f"mangos ({UNK})"


def test_one_hot_matrix_of_characters_shows_spaces():
    chars = Codec.fit(CharTokenizer(), ["hi you", "hey"])
    figure = one_hot_matrix("hi y", chars)
    ax = figure.axes[0]
    assert tick_texts(ax.get_yticklabels()) == ["h", "i", "␣", "y"]
    assert np.asarray(ax.get_images()[0].get_array()).argmax(axis=1).tolist() == chars.encode("hi y")


def test_one_hot_matrix_of_a_large_vocabulary_names_only_used_columns():
    many = Codec.fit(WordTokenizer(), [" ".join(f"w{i}" for i in range(80))])
    text = "w3 w70 w3"
    ids = many.encode(text)
    figure = one_hot_matrix(text, many)
    ax = figure.axes[0]
    np.testing.assert_array_equal(np.asarray(ax.get_images()[0].get_array()), np.eye(len(many))[ids])
    used = sorted(set(ids))
    assert list(ax.get_xticks()) == used
    assert tick_texts(ax.get_xticklabels()) == [many.vocabulary.tokens[i] for i in used]
    assert f"V = {len(many)}" in figure.get_suptitle()


# --- teacher forcing ------------------------------------------------------------------


def test_teacher_forcing_alignment_shifts_the_target_right_by_one(words):
    figure = teacher_forcing_alignment("we like kiwis .", words)
    ax = figure.axes[0]
    inputs = by_gid(ax.texts, "input")
    targets = by_gid(ax.texts, "target")
    assert [inputs[t].get_text() for t in sorted(inputs)] == ["<start>", "we", "like", "kiwis", "."]
    assert [targets[t].get_text() for t in sorted(targets)] == ["we", "like", "kiwis", ".", "<end>"]
    for t in inputs:  # same timestep, input row above target row
        assert inputs[t].get_position() == (t, INPUT_ROW) and targets[t].get_position() == (t, TARGET_ROW)
    arrows = by_gid([a for a in ax.texts if isinstance(a, Annotation)], "shift")
    assert sorted(arrows) == [1, 2, 3, 4]
    for t, arrow in arrows.items():  # from target t up to input t+1, which holds the same token
        (x_from, y_from), (x_to, y_to) = arrow.xyann, arrow.xy
        assert round(x_from) == t and y_from < y_to and round(x_to) == t + 1
        assert targets[t].get_text() == inputs[t + 1].get_text()
    cells = {gid: p for p in ax.patches if isinstance(p, Rectangle) and (gid := p.get_gid())}
    for t in range(1, 5):  # target t and input t+1 share a colour; target t and input t do not
        assert cells[f"target-cell:{t}"].get_facecolor() == cells[f"input-cell:{t + 1}"].get_facecolor()
        assert cells[f"target-cell:{t}"].get_facecolor() != cells[f"input-cell:{t}"].get_facecolor()


def test_teacher_forcing_alignment_of_characters():
    chars = Codec.fit(CharTokenizer(), ["no sí"])
    ax = teacher_forcing_alignment("sí no", chars).axes[0]
    inputs = by_gid(ax.texts, "input")
    assert [inputs[t].get_text() for t in sorted(inputs)] == ["<start>", "s", "í", "␣", "n", "o"]
    assert visible_token(" ") == "␣"


# --- lengths --------------------------------------------------------------------------


def bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]


def test_length_distribution_in_characters():
    pairs = [Pair("a" * n, "b" * (2 * n)) for n in (1, 2, 2, 3, 3, 3, 10)]
    figure = length_distribution(pairs)
    source, target = figure.axes
    assert sum(bar_heights(source)) == sum(bar_heights(target)) == len(pairs)
    assert max(bar_heights(source)) == 3  # three sources of length 3
    lengths = np.array([1, 2, 2, 3, 3, 3, 10])
    mean, p99 = (line.get_xdata()[0] for line in source.get_lines())
    assert mean == pytest.approx(lengths.mean()) and p99 == pytest.approx(np.percentile(lengths, 99))
    assert target.get_lines()[0].get_xdata()[0] == pytest.approx(2 * lengths.mean())
    assert tick_texts(source.get_legend().get_texts())[0].startswith("mean")
    assert "characters" in source.get_xlabel() and "characters" in target.get_xlabel()


def test_length_distribution_in_tokens_with_codecs(words):
    pairs = [("we like kiwis .", "nos gustan los kiwis ."), ("we eat", "comemos")]
    figure = length_distribution(pairs, source_codec=words)
    source, target = figure.axes
    assert sum(bar_heights(source)) == 2
    assert source.get_lines()[0].get_xdata()[0] == pytest.approx((4 + 2) / 2)  # tokens
    assert target.get_lines()[0].get_xdata()[0] == pytest.approx((22 + 7) / 2)  # no target codec: characters
    assert "tokens" in source.get_xlabel() and "characters" in target.get_xlabel()


# --- saving ---------------------------------------------------------------------------


def test_save_writes_png_and_svg(tmp_path, words):
    figure = one_hot_matrix("we like kiwis .", words)
    written = save(figure, tmp_path / "pictures" / "one_hot.v1")
    assert written == [tmp_path / "pictures" / "one_hot.v1.png", tmp_path / "pictures" / "one_hot.v1.svg"]
    png, svg = (path.read_bytes() for path in written)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert b"<svg" in svg[:1000] and svg.rstrip().endswith(b"</svg>")


def test_the_sweep_yardstick_is_a_score_that_ranks_the_points():
    from seq2seq.plots import primary_metric

    weak = [{"dev_bleu": 0.2, "dev_chrf": 14.0, "dev_loss": 1.8}, {"dev_bleu": 0.0, "dev_chrf": 3.0, "dev_loss": 2.8}]
    assert primary_metric(weak) == "dev_chrf"
    assert primary_metric([{**r, "dev_bleu": r["dev_bleu"] * 100} for r in weak]) == "dev_bleu"
    assert primary_metric([{"dev_bleu": None, "dev_chrf": None, "dev_loss": 2.0}]) == "dev_loss"
