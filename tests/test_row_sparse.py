"""Row-sparse RMSprop steps for one-hot input kernels: the same step as Keras's RMSprop."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from seq2seq import row_sparse
from seq2seq.config import Config
from seq2seq.model import DECODER_INPUT_IDS, SOURCE_IDS, Seq2SeqModel, build_model
from seq2seq.training import compile_model

from .conftest import count_calls

jax_only = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the row-sparse step is JAX's")

SOURCE_VOCAB, TARGET_VOCAB = 40, 50
CONFIG = Config.textbook(level="word", latent_dim=8, learning_rate=1e-2)


def _pairs(rows: int = 8, source_steps: int = 5, target_steps: int = 6, seed: int = 0):
    """Random ids with repeats (so rows are looked up more than once) and <pad> tails."""
    rng = np.random.default_rng(seed)
    source = rng.integers(1, SOURCE_VOCAB, (rows, source_steps))
    decoder_input = rng.integers(1, TARGET_VOCAB, (rows, target_steps))
    target = rng.integers(1, TARGET_VOCAB, (rows, target_steps))
    source[::3, -2:] = 0
    decoder_input[1::3, -3:] = target[1::3, -3:] = 0
    return {SOURCE_IDS: source.astype("int32"), DECODER_INPUT_IDS: decoder_input.astype("int32")}, target


def _models():
    """A Seq2SeqModel and, with the same weights, a plain functional model (Keras's step)."""
    model = build_model(CONFIG, SOURCE_VOCAB, TARGET_VOCAB)
    twin = build_model(CONFIG, SOURCE_VOCAB, TARGET_VOCAB)
    twin.set_weights(model.get_weights())
    reference = keras.Model(twin.inputs, twin.outputs)
    for m in (model, reference):
        compile_model(m, CONFIG)
    return model, reference


def _assert_trained_alike(model, reference, histories) -> None:
    """Same losses and accuracies, weights and optimizer state as Keras's own step."""
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(histories[0][name], histories[1][name], rtol=1e-5)
    for ours, keras_own in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(ours, keras_own, rtol=1e-5, atol=1e-6)
    for ours, keras_own in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_own), rtol=1e-5, atol=1e-7)


@jax_only
def test_row_sparse_steps_equal_keras_rmsprop(monkeypatch):
    calls = count_calls(monkeypatch, row_sparse, "rmsprop_rows")
    model, reference = _models()
    assert isinstance(model, Seq2SeqModel) and not isinstance(reference, Seq2SeqModel)
    before = model.get_layer("target_projection").get_weights()[0]
    x, y = _pairs()

    # the learning rate changes between epochs (as LinearDecay changes it): read each step
    halve = keras.callbacks.LearningRateScheduler(lambda epoch, rate: rate / 2 if epoch else rate)
    histories = [
        m.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[halve]).history
        for m in (model, reference)
    ]

    assert len(calls) == 2  # traced once, for the two kernels: the row-sparse step ran
    _assert_trained_alike(model, reference, histories)
    # Rows never looked up did not move; the others did.
    after = model.get_layer("target_projection").get_weights()[0]
    unused = sorted(set(range(TARGET_VOCAB)) - set(x[DECODER_INPUT_IDS].ravel()))
    assert unused and np.array_equal(after[unused], before[unused])
    assert not np.allclose(after[x[DECODER_INPUT_IDS][0, 0]], before[x[DECODER_INPUT_IDS][0, 0]])


@jax_only
def test_a_plan_outlived_by_its_variables_is_an_error():
    model, _ = _models()
    x, y = _pairs()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    model.get_layer("source_projection").trainable = False  # and not compiled again
    with pytest.raises(ValueError, match="compile it again"):
        row_sparse.row_sparse_kernels(model, x, Seq2SeqModel.LOOKUP_INPUTS)


@jax_only
def test_row_sparse_steps_take_inputs_as_a_list(monkeypatch):
    calls = count_calls(monkeypatch, row_sparse, "train_step")
    model, reference = _models()
    x, y = _pairs(rows=12)
    as_list = [x[SOURCE_IDS], x[DECODER_INPUT_IDS]]
    for m in (model, reference):
        m.fit(as_list, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        m.train_on_batch([ids[:4] for ids in as_list], y[:4])  # fewer positions than rows: row by row
    assert len(calls) == 2  # traced for fit and for train_on_batch: the row-sparse step ran
    for ours, keras_own in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_own), rtol=1e-5, atol=1e-7)


def _kernels(optimizer, source_steps: int = 5):
    model = build_model(CONFIG, SOURCE_VOCAB, TARGET_VOCAB)
    model.compile(optimizer=optimizer, loss="mse")
    model.optimizer.build(model.trainable_variables)
    inputs = {SOURCE_IDS: np.zeros((4, source_steps), "int32"), DECODER_INPUT_IDS: np.zeros((4, 6), "int32")}
    kernels = row_sparse.row_sparse_kernels(model, inputs, Seq2SeqModel.LOOKUP_INPUTS)
    return [k.layer.name for k in kernels]


@jax_only
def test_row_sparse_steps_only_where_exact_and_cheaper():
    assert _kernels(keras.optimizers.RMSprop()) == ["source_projection", "target_projection"]
    # A zero gradient moves weights (momentum, Adam's moments) or the step sees all rows (clipping).
    assert _kernels(keras.optimizers.RMSprop(momentum=0.9)) == []
    assert _kernels(keras.optimizers.RMSprop(global_clipnorm=1.0)) == []
    assert _kernels(keras.optimizers.Adam()) == []
    # As many positions as rows (char level): the dense step is as cheap.
    assert _kernels(keras.optimizers.RMSprop(), source_steps=10) == ["target_projection"]


@jax_only
def test_no_row_sparse_steps_under_mixed_precision():
    """Keras sums a row's gradients in bfloat16, the row-sparse step would not."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        assert _kernels(keras.optimizers.RMSprop()) == []
    finally:
        keras.config.set_dtype_policy("float32")
