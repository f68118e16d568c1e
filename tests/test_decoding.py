"""Decoders: beam search and sampling against greedy and against the model's own scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from keras import ops

from seq2seq import decoding
from seq2seq.config import Config
from seq2seq.decoding import (
    BeamSearchDecoder,
    DecodingOptions,
    GreedyDecoder,
    SamplingDecoder,
    _cut_off,
    best_ids,
    length_penalty,
    output_logits,
    sampling_settings,
    top_k_rows,
)
from seq2seq.model import build_model, inference_parts
from seq2seq.vocab import END_ID, PAD_ID, START_ID

SOURCE_VOCAB, TARGET_VOCAB, MAX_LENGTH = 12, 9, 7


def _model(attention: str, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    settings = dict(latent_dim=16, embedding_dim=8, input="embedding", attention=attention, bidirectional=True)
    config = Config.textbook(**settings)
    model = build_model(config, SOURCE_VOCAB, TARGET_VOCAB)
    # larger output weights: peaked distributions, so <end> comes and beams differ
    output = model.get_layer("output_projection")
    output.kernel.assign(ops.convert_to_numpy(output.kernel) * 8)
    return model, inference_parts(model, config)


def _sources():
    rng = np.random.default_rng(3)
    source = rng.integers(4, SOURCE_VOCAB, (6, 5)).astype("int32")
    source[1, 2:] = PAD_ID
    source[4, 3:] = PAD_ID
    return source


def _until_end(row) -> list[int]:
    out = []
    for i in row:
        if i == PAD_ID:
            break
        out.append(int(i))
        if i == END_ID:
            break
    return out


def _rescore(model, sources, hypotheses: list[list[int]], alpha: float) -> list[float]:
    """The model's own score of each hypothesis given its source row: the sum of
    log p(token | previous true tokens) over its tokens (<end> included), divided by the
    length penalty. One teacher-forced call for all: each decoder input is padded after
    its hypothesis, and later positions cannot change earlier ones."""
    decoder_input = np.full((len(hypotheses), max(map(len, hypotheses))), PAD_ID, dtype="int32")
    for row, hypothesis in enumerate(hypotheses):
        decoder_input[row, : len(hypothesis)] = [START_ID, *hypothesis[:-1]]
    logits = output_logits(model([np.asarray(sources), decoder_input]))
    log_probs = ops.convert_to_numpy(ops.log_softmax(logits, axis=-1))
    return [
        float(sum(log_probs[row, t, token] for t, token in enumerate(hypothesis)))
        / float(ops.convert_to_numpy(length_penalty(len(hypothesis), alpha)))
        for row, hypothesis in enumerate(hypotheses)
    ]


@pytest.mark.parametrize("attention", ["none", "luong", "bahdanau"])
def test_beam_of_one_equals_greedy(attention):
    _, parts = _model(attention)
    source = _sources()
    greedy = ops.convert_to_numpy(GreedyDecoder(parts, MAX_LENGTH).predict_on_batch(source))
    beam_ids, _ = BeamSearchDecoder(parts, MAX_LENGTH, beam_size=1, alpha=0.6).predict_on_batch(source)
    assert [_until_end(r) for r in np.asarray(beam_ids)[:, 0]] == [_until_end(r) for r in greedy]


@pytest.mark.parametrize("attention", ["none", "luong", "bahdanau"])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_hypotheses_are_sorted_and_scored_as_the_model_scores_them(attention, alpha):
    model, parts = _model(attention, seed=1)
    source = _sources()
    ids, scores = BeamSearchDecoder(parts, MAX_LENGTH, beam_size=4, alpha=alpha, n_best=4).predict_on_batch(source)
    ids, scores = np.asarray(ids), np.asarray(scores)
    assert ids.shape == (6, 4, MAX_LENGTH) and scores.shape == (6, 4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "n-best lists must be sorted best first"
    hypotheses = [[_until_end(ids[row, n]) for n in range(4)] for row in range(len(source))]
    for row_hypotheses in hypotheses:
        assert len({tuple(h) for h in row_hypotheses}) == 4, "beams must be distinct"
    every = [hypothesis for row_hypotheses in hypotheses for hypothesis in row_hypotheses]
    rescored = _rescore(model, np.repeat(source, 4, axis=0), every, alpha)
    assert rescored == pytest.approx(scores.reshape(-1).tolist(), abs=1e-4)


def test_beam_search_finds_at_least_the_greedy_score():
    model, parts = _model("luong", seed=2)
    source = _sources()
    greedy = ops.convert_to_numpy(GreedyDecoder(parts, MAX_LENGTH).predict_on_batch(source))
    _, scores = BeamSearchDecoder(parts, MAX_LENGTH, beam_size=5, alpha=0.0).predict_on_batch(source)
    greedy_scores = _rescore(model, source, [_until_end(row) for row in greedy], 0.0)
    assert np.all(np.asarray(scores)[:, 0] >= np.array(greedy_scores) - 1e-4)


def test_seeded_sampling_is_reproducible():
    _, parts = _model("luong")
    source = _sources()
    decoder = SamplingDecoder(parts, MAX_LENGTH)
    seed, hot = np.array([7, 0], "int32"), sampling_settings(temperature=1.5)
    first = np.asarray(decoder.predict_on_batch([source, seed, hot]))
    again = np.asarray(SamplingDecoder(parts, MAX_LENGTH).predict_on_batch([source, seed, hot]))
    other = np.asarray(decoder.predict_on_batch([source, np.array([8, 0], "int32"), hot]))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.isin(first, [START_ID]).any()


def test_sampling_from_the_single_best_token_is_greedy():
    _, parts = _model("bahdanau")
    source = _sources()
    greedy = np.asarray(GreedyDecoder(parts, MAX_LENGTH).predict_on_batch(source))
    sampler = SamplingDecoder(parts, MAX_LENGTH)  # one compiled program for every setting
    top_1 = sampler.predict_on_batch([source, np.array([1, 2], "int32"), sampling_settings(top_k=1)])
    np.testing.assert_array_equal(np.asarray(top_1), greedy)
    tiny_p = sampler.predict_on_batch([source, np.array([3, 4], "int32"), sampling_settings(top_p=1e-6)])
    np.testing.assert_array_equal(np.asarray(tiny_p), greedy)
    free = sampler.predict_on_batch([source, np.array([3, 4], "int32"), sampling_settings(temperature=3.0)])
    assert not np.array_equal(np.asarray(free), greedy)


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (1, 1.0), (5, 1.0), (40, 1.0), (0, 0.5), (5, 0.3), (3, 1e-6)])
def test_sampling_cut_offs_match_a_numpy_reference(top_k, top_p):
    """The top-k and top-p cut-offs, as runtime settings (0 and 1: off), keep exactly the
    tokens a direct NumPy reading of their definitions keeps, ties included."""
    rng = np.random.default_rng(top_k)
    logits = rng.normal(size=(6, 37)).astype("float32")
    logits[2, [4, 9, 30]] = logits[2].max() + 1  # a three-way tie for the best
    got = ops.convert_to_numpy(_cut_off(ops.convert_to_tensor(logits), ops.convert_to_tensor(top_k), top_p))
    expected = logits.copy()
    for row in expected:
        if top_k:
            row[row < np.sort(row)[::-1][min(top_k, row.size) - 1]] = -1e9
        if top_p < 1:
            ranked = np.sort(row)[::-1]
            probs = np.exp(ranked - ranked.max()) / np.exp(ranked - ranked.max()).sum()
            row[row < ranked[(np.cumsum(probs) - probs) < top_p].min()] = -1e9
    np.testing.assert_array_equal(got, expected)


def test_options_reject_contradictions():
    with pytest.raises(ValueError, match="not both"):
        DecodingOptions(beam=4, sample=True)
    with pytest.raises(ValueError, match="n_best"):
        DecodingOptions(beam=2, n_best=3)
    for wrong, message in ({"temperature": 0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"):
        with pytest.raises(ValueError, match=message):
            DecodingOptions(sample=True, **wrong)


def test_compiled_decoders_follow_weight_changes():
    """A decoder compiled once must use the model's current weights (regression: it kept
    the weights it was compiled with, so dev BLEU during training never changed)."""
    model, parts = _model("luong", seed=4)
    source = _sources()
    greedy, beam = GreedyDecoder(parts, MAX_LENGTH), BeamSearchDecoder(parts, MAX_LENGTH, beam_size=3)
    before = np.asarray(greedy.predict_on_batch(source)), np.asarray(beam.predict_on_batch(source)[1])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in model.get_weights()])
    after = np.asarray(greedy.predict_on_batch(source)), np.asarray(beam.predict_on_batch(source)[1])
    fresh = np.asarray(GreedyDecoder(parts, MAX_LENGTH).predict_on_batch(source))
    np.testing.assert_array_equal(after[0], fresh)
    assert not np.array_equal(before[0], after[0]) and not np.allclose(before[1], after[1])


@pytest.mark.parametrize("decoder_class", [GreedyDecoder, BeamSearchDecoder, SamplingDecoder])
def test_decoders_run_only_compiled(monkeypatch, decoder_class):
    """A decoder's first call compiles it: `call` sees only traced values on JAX
    (regression: Keras ran `call` op by op once to build the decoder, each op compiling
    its own program, seconds at every start of `seq2seq translate`)."""
    import jax

    _, parts = _model("luong", seed=4)
    seen = []
    original = decoder_class.call
    monkeypatch.setattr(decoder_class, "call", lambda self, inputs: seen.append(inputs) or original(self, inputs))
    decoder = decoder_class(parts, MAX_LENGTH, **({"beam_size": 3} if decoder_class is BeamSearchDecoder else {}))
    source = _sources()
    sampled = decoder_class is SamplingDecoder
    inputs = [source, np.array([1, 0], "int32"), sampling_settings()] if sampled else source
    decoder.predict_on_batch(inputs)
    assert seen and all(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(seen))


def test_best_ids_is_argmax_with_first_of_ties():
    """Greedy decoding's choice equals np.argmax, whose first index wins a tie."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 37)).astype("float32")
    logits[3, [5, 20]] = logits[3].max() + 1  # a tie: 5 comes first
    logits[7, :] = 0.5  # all equal: 0
    logits[9, -1] = 99.0  # the last index
    chosen = ops.convert_to_numpy(best_ids(ops.convert_to_tensor(logits)))
    np.testing.assert_array_equal(chosen, np.argmax(logits, axis=-1))
    assert chosen.dtype == np.int32 and chosen[3] == 5 and chosen[7] == 0 and chosen[9] == 36


# One shape for every example (4 rows of 45 columns): each new shape compiles each op again.
@settings(max_examples=60, deadline=None)
@given(
    st.tuples(
        st.integers(1, 5),
        st.sampled_from([1, 2, 3, 4, 32]),
        st.lists(st.lists(st.integers(-3, 3), min_size=45, max_size=45), min_size=4, max_size=4),
    )
)
@example((3, 2, [[1, 0, 2, 1] + [-3] * 41] * 4))  # equal values in chosen chunks out of order
def test_top_k_rows_is_top_k_with_the_lower_index_first_on_ties(case):
    """The chunked top-k gives what a stable sort does, ties (many, from small integers)
    and a last chunk shorter than the others (45 columns in chunks of 2, 4 or 32) included."""
    k, chunk, rows = case
    values = np.array(rows, dtype="float32")
    saved, decoding.TOP_K_CHUNK = decoding.TOP_K_CHUNK, chunk
    try:
        best, where = (ops.convert_to_numpy(x) for x in top_k_rows(ops.convert_to_tensor(values), k))
    finally:
        decoding.TOP_K_CHUNK = saved
    expected = np.argsort(-values, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(where, expected)
    np.testing.assert_array_equal(best, np.take_along_axis(values, expected, axis=1))


@pytest.mark.parametrize("attention", ["none", "luong"])
def test_beam_search_chooses_the_same_through_chunked_top_k(attention, monkeypatch):
    """Beam search over chunks of one column (the chunked path on this small vocabulary)
    gives the outputs and scores of the plain top_k."""
    _, parts = _model(attention, seed=4)
    source = _sources()
    plain = BeamSearchDecoder(parts, MAX_LENGTH, beam_size=4, n_best=4).predict_on_batch(source)
    monkeypatch.setattr(decoding, "TOP_K_CHUNK", 1)
    chunked = BeamSearchDecoder(parts, MAX_LENGTH, beam_size=4, n_best=4).predict_on_batch(source)
    np.testing.assert_array_equal(np.asarray(chunked[0]), np.asarray(plain[0]))
    np.testing.assert_allclose(np.asarray(chunked[1]), np.asarray(plain[1]), rtol=1e-6)


@pytest.mark.parametrize(("attention", "seed"), [("none", 2), ("luong", 7)])
def test_greedy_rows_moved_to_a_smaller_batch_decode_as_before(attention, seed):
    """When no more than a quarter of the rows is left, they finish in a smaller batch
    (with their attention context); every row's output is the one it gets alone. (Seeds
    picked so that output lengths vary: see the last assertion.)"""
    _, parts = _model(attention, seed=seed)
    rng = np.random.default_rng(5)
    source = rng.integers(4, SOURCE_VOCAB, (24, 6)).astype("int32")
    for row, length in enumerate(rng.integers(1, 7, 24)):
        source[row, length:] = PAD_ID
    max_length = 12
    moved = GreedyDecoder(parts, max_length)
    kept_whole = GreedyDecoder(parts, max_length)
    kept_whole.compact_share = 10**6  # never moves rows
    outputs = np.asarray(moved.predict_on_batch(source))
    np.testing.assert_array_equal(outputs, np.asarray(kept_whole.predict_on_batch(source)))
    alone = GreedyDecoder(parts, max_length)  # a batch of one row never moves
    expected = [_until_end(np.asarray(alone.predict_on_batch(row[None, :]))[0]) for row in source]
    assert [_until_end(row) for row in outputs] == expected
    # the second batch has work: some row runs on after no more than 24 / 4 rows are left
    steps = sorted((len(e) for e in expected), reverse=True)
    assert steps[24 // 4] < steps[0]


def test_only_decoders_whose_rows_stand_alone_move_rows_to_a_smaller_batch(monkeypatch):
    """`compacts_rows` says which decoders move rows (a second `while_loop`): plain greedy
    does; a sampler (draws depend on the row's place), a greedy decoder returning
    attention, a batch too small to split, and the teacher-forced decoder do not."""
    from seq2seq import decoding
    from seq2seq.api import _ForcedDecoder

    from .conftest import count_calls

    _, parts = _model("luong")
    source = np.tile(_sources(), (4, 1))  # 24 rows: a quarter is 6
    cases = {
        "greedy, 4 rows": (GreedyDecoder(parts, MAX_LENGTH), source[:4]),
        "greedy": (GreedyDecoder(parts, MAX_LENGTH), source),
        "greedy with attention": (GreedyDecoder(parts, MAX_LENGTH, return_attention=True), source),
        "sampling": (SamplingDecoder(parts, MAX_LENGTH), [source, np.array([1, 2], "int32"), sampling_settings()]),
        "forced": (_ForcedDecoder(parts, MAX_LENGTH), [source, np.zeros((24, MAX_LENGTH), "int32")]),
    }
    assert [type(decoder).compacts_rows for decoder, _ in cases.values()] == [True, True, True, False, False]
    loops = {}
    for name, (decoder, inputs) in cases.items():
        calls = count_calls(monkeypatch, decoding.ops, "while_loop")
        decoder.predict_on_batch(inputs)  # compiled, so the loops traced, on this first call
        loops[name] = len(calls)
        monkeypatch.undo()
    # Keras traces `call` more than once (for its output's shape, then to compile it)
    traces = loops["greedy, 4 rows"]
    assert traces and all(n % traces == 0 for n in loops.values()), loops
    assert {name: n // traces for name, n in loops.items()} == {
        "greedy, 4 rows": 1,
        "greedy": 2,
        "greedy with attention": 1,
        "sampling": 1,
        "forced": 1,
    }


def test_output_limits_are_worked_out_in_one_place():
    """`OutputLimits.of`: the options' max_length over the config's over the default, the
    config's ratio; `for_batch`: ratio x longest source + margin, rounded up, at most max_length."""
    from seq2seq.decoding import DEFAULT_MAX_LENGTH, LENGTH_MARGIN, OutputLimits

    config = Config(max_length=50, max_length_ratio=1.5)
    assert OutputLimits.of(config) == OutputLimits(50, 1.5)
    assert OutputLimits.of(config, DecodingOptions()) == OutputLimits(50, 1.5)
    assert OutputLimits.of(config, DecodingOptions(max_length=20)) == OutputLimits(20, 1.5)
    assert OutputLimits.of(Config()) == OutputLimits(DEFAULT_MAX_LENGTH, None)
    assert LENGTH_MARGIN == 10 and [OutputLimits(50, 1.5).for_batch(n) for n in (2, 4, 20, 100)] == [16, 16, 40, 50]
    assert OutputLimits(50, None).for_batch(1000) == 50
