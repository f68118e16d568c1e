from __future__ import annotations

import numpy as np
import pytest

from seq2seq.batches import PairBatches, pad, padded_length, padded_training_length, teacher_forcing
from seq2seq.files import DECODER_INPUT_IDS, SOURCE_IDS
from seq2seq.vocab import END_ID, PAD_ID, START_ID


def test_batches_name_the_model_inputs_without_importing_the_model():
    """The input names live in files.py: making batches needs no model (nor its layers)."""
    import subprocess
    import sys

    import seq2seq.model

    assert (seq2seq.model.SOURCE_IDS, seq2seq.model.DECODER_INPUT_IDS) == (SOURCE_IDS, DECODER_INPUT_IDS)
    check = "import sys, seq2seq.batches; print('seq2seq.model' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout == "False\n"


def test_teacher_forcing_shift():
    we, like, kiwis, dot = 7, 8, 9, 10
    decoder_input, decoder_target = teacher_forcing([we, like, kiwis, dot])
    assert decoder_input == [START_ID, we, like, kiwis, dot]  # <start> we like kiwis .
    assert decoder_target == [we, like, kiwis, dot, END_ID]  # we like kiwis . <end>
    # at every step t the decoder reads the true token t-1
    assert decoder_input[1:] == decoder_target[:-1]


def test_padded_lengths_are_few_and_cover():
    assert [padded_length(n) for n in (1, 8, 9, 33, 64, 65, 129)] == [4, 8, 12, 40, 64, 80, 160]
    assert all(padded_length(n) >= n for n in range(1, 500))
    assert len({padded_length(n) for n in range(1, 300)}) < 25


def test_training_lengths_are_finer_and_at_most_a_fifth_padding():
    assert [padded_training_length(n) for n in (1, 5, 8, 9, 17, 33, 64, 65, 129)] == [1, 5, 8, 10, 20, 40, 64, 80, 160]
    assert all(n <= padded_training_length(n) <= n * 5 / 4 for n in range(1, 500))
    assert len({padded_training_length(n) for n in range(1, 300)}) <= 30


def test_training_batches_pad_sources_as_finely_as_targets():
    # five-word sources padded to 8 (the decoding sizes) made 29% of a word-level
    # encoder's steps padding on spa-eng
    batches = PairBatches([[4] * 5] * 40 + [[4] * 3] * 40, [[5] * 3] * 80, batch_size=16, seed=0, batches_per_shape=1)
    source_lengths = sorted({batches[i][0][SOURCE_IDS].shape[1] for i in range(len(batches))})
    assert source_lengths == [3, 5]


def test_pad_right_pads_with_pad_id():
    out = pad([[5, 6, 7], [8]])
    assert out.dtype == np.int32 and out.shape == (2, 4)
    assert out[0, :3].tolist() == [5, 6, 7] and out[1, 0] == 8
    assert (out[0, 3:] == PAD_ID).all() and (out[1, 1:] == PAD_ID).all()


def test_batches_cover_every_pair_once_and_group_lengths():
    rng = np.random.default_rng(0)
    targets = [list(rng.integers(4, 20, size=n)) for n in rng.integers(1, 40, size=500)]
    sources = [[4 + i % 10] for i in range(500)]
    batches = PairBatches(sources, targets, batch_size=32, seed=1)
    seen = sorted(i for rows in batches.batches for i in rows)
    assert seen == list(range(500))
    inputs, expected = batches[0]
    assert inputs[SOURCE_IDS].shape[0] == inputs[DECODER_INPUT_IDS].shape[0] == expected.shape[0]
    assert inputs[DECODER_INPUT_IDS].shape == expected.shape
    # padding is a small part of each batch, thanks to length bucketing
    real = sum(batches.real_tokens() for _ in [0])
    padded = sum(batches[i][1].size for i in range(len(batches)))
    assert real / padded > 0.6
    assert batches.real_tokens() == sum(len(t) + 1 for t in targets)


def test_batches_reshuffle_each_epoch():
    targets = [[5] * (i % 7 + 1) for i in range(300)]
    batches = PairBatches([[5]] * 300, targets, batch_size=16, seed=0)
    first = [list(b) for b in batches.batches]
    batches.on_epoch_end()
    assert [list(b) for b in batches.batches] != first


def test_long_batches_are_capped_and_filled_to_a_fixed_shape():
    targets = [[5] * n for n in [3] * 40 + [30] * 40]
    batches = PairBatches([[6]] * 80, targets, batch_size=32, max_tokens=256, shuffle=False, batches_per_shape=1)
    shapes = set()
    for i in range(len(batches)):
        inputs, expected = batches[i]
        rows, length = expected.shape
        assert rows * length <= 256 or length == 8
        assert rows == batches.rows_for(length)
        shapes.add(expected.shape)
        real_rows = len(batches.batches[i])
        assert (inputs[SOURCE_IDS][real_rows:] == 0).all() and (expected[real_rows:] == 0).all()
    assert shapes == {(32, 4), (8, 32)}
    assert sum(len(b) for b in batches.batches) == 80


def test_rare_shapes_are_padded_into_at_most_max_shapes():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=(3000, 2))
    sources = [[5] * int(s) for s, _ in lengths]
    targets = [[6] * int(t) for _, t in lengths]
    free = PairBatches(sources, targets, batch_size=16, seed=3, max_shapes=None)
    capped = PairBatches(sources, targets, batch_size=16, seed=3, max_shapes=6)
    natural = {free.shape_of(rows) for rows in free.batches}
    assert len(natural) > 6 and len(capped.shapes) <= 6
    for i in range(len(capped)):
        inputs, expected = capped[i]
        shape = (inputs[SOURCE_IDS].shape[1], expected.shape[1])
        assert shape in capped.shapes
        # a batch is never cut: every real token is still there
        rows = capped.batches[i]
        assert (expected[: len(rows)] != 0).sum() == sum(len(targets[j]) + 1 for j in rows)
        assert (inputs[SOURCE_IDS][: len(rows)] != 0).sum() == sum(len(sources[j]) for j in rows)


def test_an_epoch_of_few_batches_gets_few_shapes():
    """At most one shape for every `batches_per_shape` batches of an epoch, and at least one:
    each shape compiles a training step, which costs more than padding a few batches."""
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 40, size=(320, 2))  # 20 batches of 16
    sources = [[5] * int(s) for s, _ in lengths]
    targets = [[6] * int(t) for _, t in lengths]
    natural = PairBatches(sources, targets, batch_size=16, seed=1, max_shapes=None)
    assert len({natural.shape_of(rows) for rows in natural.batches}) > 10
    for per_shape, most in ((8, 2), (5, 4), (40, 1)):
        batches = PairBatches(sources, targets, batch_size=16, seed=1, batches_per_shape=per_shape)
        assert 1 <= len(batches.shapes) <= most
        assert {batches.shape_of(rows) for rows in batches.batches} <= batches.shapes
        assert sorted(i for rows in batches.batches for i in rows) == list(range(320))
    with pytest.raises(ValueError, match="batches_per_shape"):
        PairBatches(sources, targets, batch_size=16, batches_per_shape=0)


def test_merging_shapes_pads_the_cheaper_side():
    # four shapes, (3, 3), (5, 3), (3, 5), (5, 5) (decoder targets: words + <end>), two batches each
    sources = [[5] * s for s in (3, 5, 3, 5) for _ in range(32)]
    targets = [[6] * t for t in (2, 2, 4, 4) for _ in range(32)]

    def shapes(target_cost: float) -> set[tuple[int, int]]:
        return PairBatches(
            sources, targets, batch_size=16, max_shapes=2, batches_per_shape=1, target_cost=target_cost
        ).shapes

    free = PairBatches(sources, targets, batch_size=16, max_shapes=None)
    assert {free.shape_of(rows) for rows in free.batches} == {(3, 3), (5, 3), (3, 5), (5, 5)}
    # a target position runs the output layer too: sources get the padding
    assert shapes(target_cost=8.0) == {(5, 3), (5, 5)}
    assert shapes(target_cost=0.1) == {(3, 5), (5, 5)}


def test_merging_shapes_adds_the_least_padding_first():
    # batches of 16: six of (3, 4), seven of (4, 3), one of (4, 4), two of (4, 12)
    shapes_and_batches = {(3, 4): 6, (4, 3): 7, (4, 4): 1, (4, 12): 2}
    sources = [[5] * s for (s, _), n in shapes_and_batches.items() for _ in range(16 * n)]
    targets = [[6] * (t - 1) for (_, t), n in shapes_and_batches.items() for _ in range(16 * n)]
    batches = PairBatches(sources, targets, batch_size=16, max_shapes=3, batches_per_shape=1)
    # the rarest, (4, 4), into (4, 12) would pad 8 of 12 target positions in its 16 rows
    # (128); (3, 4) into (4, 4) pads one source position in 96 rows (96), (4, 3) one
    # target position in 112 rows (112)
    assert batches.shapes == {(4, 3), (4, 4), (4, 12)}


def test_merging_shapes_weighs_the_rows_moved_when_output_size_limits_the_rows():
    # batches of at most 8 rows and 48 target positions: 4 rows at target length 12, 6 at 8
    shapes_and_batches = {(5, 4): 4, (3, 8): 3, (2, 2): 4, (3, 6): 3, (3, 12): 2}
    sources, targets = [], []
    for (source, target), n in shapes_and_batches.items():
        rows = min(8, 48 // target)
        sources += [[5] * source] * (n * rows)
        targets += [[6] * (target - 1)] * (n * rows)
    batches = PairBatches(
        sources, targets, batch_size=8, max_tokens=48, max_shapes=3, batches_per_shape=1, shuffle=False
    )
    # (3, 6)'s 24 rows join (3, 8) first; (3, 8) then holds 42 rows in 6 batches. Counted
    # as 6 batches of its 6 rows, moving them to (3, 12) would look cheaper (36 x 4 = 144)
    # than (2, 2) to (5, 4) (32 x 5 = 160); it costs 42 x 4 = 168
    assert batches.shapes == {(3, 8), (3, 12), (5, 4)}


def test_evaluation_batches_can_pad_sources_coarsely():
    batches = PairBatches([[4] * 5] * 32, [[5] * 3] * 32, batch_size=16, fine_sources=False)
    assert batches[0][0][SOURCE_IDS].shape[1] == padded_length(5) == 8


def test_target_cost_must_be_positive():
    with pytest.raises(ValueError, match="target_cost must be positive"):
        PairBatches([[4]], [[5]], batch_size=1, target_cost=0)


def test_every_epoch_keeps_to_the_shapes_when_output_size_limits_the_rows():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 80, size=(4000, 2))
    sources = [[5] * int(s) for s, _ in lengths]
    targets = [[6] * int(t) for _, t in lengths]
    batches = PairBatches(sources, targets, batch_size=64, max_tokens=1000, seed=1, max_shapes=8)
    assert len(batches.shapes) <= 8
    for _ in range(5):
        for i in range(len(batches)):
            inputs, expected = batches[i]
            assert (inputs[SOURCE_IDS].shape[1], expected.shape[1]) in batches.shapes
            assert len(batches.batches[i]) <= expected.shape[0] == batches.rows_for(expected.shape[1])
        batches.on_epoch_end()


def test_the_shapes_do_not_depend_on_the_epoch_a_run_starts_from():
    targets = [[6] * (i % 37 + 1) for i in range(2000)]
    sources = [[5] * (i % 23 + 1) for i in range(2000)]
    fresh = PairBatches(sources, targets, batch_size=16, seed=2, max_shapes=5)
    resumed = PairBatches(sources, targets, batch_size=16, seed=2, epoch=4, max_shapes=5)
    assert fresh.shapes == resumed.shapes


def _varied_pairs(count: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=(count, 2))
    return [[5] * int(s) for s, _ in lengths], [[6] * int(t) for _, t in lengths]


def test_every_epoch_has_as_many_batches_as_the_first_and_each_pair_once():
    sources, targets = _varied_pairs(3000, seed=1)
    batches = PairBatches(sources, targets, batch_size=8, max_tokens=100, seed=3)
    count = batches.count
    batches.count = None  # the cut alone: rows depend on lengths, so each shuffle gives a few more or fewer
    natural = [len(batches._make_batches(epoch)) for epoch in range(8)]
    batches.count = count
    assert natural[0] == count and min(natural) < count < max(natural), natural
    for epoch in range(8):
        made = batches._make_batches(epoch)
        assert len(made) == count
        assert sorted(np.concatenate(made).tolist()) == list(range(3000))
        assert all(len(b) <= batches.rows_for(batches.shape_of(b)[1]) for b in made)
        assert all(batches.shape_of(b) in batches.shapes for b in made)


class _Recorded(PairBatches):
    """PairBatches that record the pairs of each batch `fit` reads, epoch by epoch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[list[int]] = []

    def __getitem__(self, index: int):
        self.seen[-1].extend(self.batches[index].tolist())
        return super().__getitem__(index)

    def on_epoch_begin(self) -> None:
        self.seen.append([])


def test_fit_trains_on_every_pair_of_every_epoch_and_a_resumed_run_on_the_same_batches(recwarn):
    import keras

    sources, targets = _varied_pairs(1200, seed=1)

    def fit(epochs: int, initial_epoch: int = 0) -> list[list[int]]:
        batches = _Recorded(sources, targets, batch_size=4, max_tokens=40, max_shapes=4, seed=1, epoch=initial_epoch)
        decoder_input = keras.Input((None,), dtype="int32", name=DECODER_INPUT_IDS)
        source = keras.Input((None,), dtype="int32", name=SOURCE_IDS)
        logits = keras.layers.Dense(8)(keras.layers.Embedding(8, 4)(decoder_input))
        model = keras.Model({SOURCE_IDS: source, DECODER_INPUT_IDS: decoder_input}, logits)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(batches, epochs=epochs, initial_epoch=initial_epoch, verbose=0, shuffle=False)
        return [epoch for epoch in batches.seen if len(epoch) > 4]  # (fit first reads one batch, to build)

    whole = fit(3)
    resumed = fit(1) + fit(3, initial_epoch=1)

    assert not [w for w in recwarn if "ran out of data" in str(w.message)]
    assert len(whole) == 3 and all(sorted(epoch) == list(range(1200)) for epoch in whole)
    assert resumed == whole  # the same batches in the same order
