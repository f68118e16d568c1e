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


class SyncAfterFirstBatch(keras.callbacks.Callback):
    """Reading `self.model` makes Keras's JAX trainer write its state to the variables
    mid-epoch, and read it back before the next step."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            assert self.model is not None


@jax_only
def test_lazily_decayed_steps_equal_keras_rmsprop(monkeypatch):
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_MIN_ROWS", 0)  # lazy for these small tables too
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_PERIOD", 4)
    lazy_calls = []
    rows = row_sparse.rmsprop_rows
    monkeypatch.setattr(row_sparse, "rmsprop_rows", lambda *args: lazy_calls.append(args[-1] > 1) or rows(*args))
    model, reference = _models()
    # 3 steps an epoch: the state is written back and read again after steps 1, 3, 4, 6, 7
    # and 9 (phases 1, 3, 0, 2, 3, 1), and the period ends after steps 4 and 8
    x, y = _pairs(rows=12)
    histories = [
        m.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[SyncAfterFirstBatch()]).history
        for m in (model, reference)
    ]

    assert lazy_calls == [True, True]
    _assert_trained_alike(model, reference, histories)


@jax_only
def test_lazy_decay_keeps_the_rho_it_was_traced_with(monkeypatch):
    """The lookup tables keep the rho they were planned with, in the traced step and in the
    conversions alike (Keras's step here keeps its own, traced once for one batch shape)."""
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_MIN_ROWS", 0)
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_PERIOD", 4)
    model, reference = _models()
    x, y = _pairs(rows=12)
    for m in (model, reference):
        m.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        m.optimizer.rho = 0.5
        m.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for ours, keras_own in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_own), rtol=1e-5, atol=1e-7)


@jax_only
def test_a_plan_outlived_by_its_variables_is_an_error(monkeypatch):
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_MIN_ROWS", 0)
    model, _ = _models()
    x, y = _pairs()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    model.get_layer("source_projection").trainable = False  # and not compiled again
    with pytest.raises(ValueError, match="compile it again"):
        row_sparse.row_sparse_kernels(model, x, Seq2SeqModel.LOOKUP_INPUTS)


@jax_only
def test_lazily_decayed_steps_take_inputs_as_a_list(monkeypatch):
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_MIN_ROWS", 0)
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_PERIOD", 4)
    calls = count_calls(monkeypatch, row_sparse, "train_step")
    model, reference = _models()
    x, y = _pairs(rows=12)
    as_list = [x[SOURCE_IDS], x[DECODER_INPUT_IDS]]
    for m in (model, reference):
        m.fit(as_list, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        m.train_on_batch(as_list, y)
    assert len(calls) == 2  # traced for fit and for train_on_batch: the row-sparse step ran
    for ours, keras_own in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_own), rtol=1e-5, atol=1e-7)


@jax_only
def test_an_interrupted_step_after_a_mid_epoch_sync_keeps_rmsprops_state(monkeypatch):
    """Keras writes the state back again when a step fails (fit's `finally`): the velocities
    must not be converted twice."""
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_MIN_ROWS", 0)
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_PERIOD", 4)
    model, reference = _models()
    x, y = _pairs(rows=12)
    for m in (model, reference):
        m.make_train_function()
        step, steps = m.train_function, []

        def interrupted(state, data, step=step, steps=steps):
            steps.append(1)
            if len(steps) == 2:  # the step after the callback's sync, before Keras holds a new state
                raise KeyboardInterrupt
            return step(state, data)

        m.train_function = interrupted
        with pytest.raises(KeyboardInterrupt):
            m.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[SyncAfterFirstBatch()])
    assert int(np.asarray(model.optimizer.iterations)) == 1  # a phase other than 0
    for ours, keras_own in zip(model.optimizer.variables, reference.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_own), rtol=1e-5, atol=1e-7)


@jax_only
def test_lazy_decay_writes_untouched_rows_only_when_the_period_ends(monkeypatch):
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=(6, 2)), "float32")
    ids = jnp.asarray([[1, 1, 4]], "int32")
    untouched = np.array([0, 2, 3, 5])
    eager = lazy = (kernel, jnp.asarray(rng.uniform(0.1, 1.0, size=(6, 2)), "float32"))  # scale 1 at step 0
    for step in range(7):
        gradients = jnp.asarray(rng.normal(size=(1, 3, 2)), "float32")
        eager = row_sparse.rmsprop_rows(*eager, ids, gradients, 0.01, 0.9, 1e-7)
        state_before = lazy[1]
        lazy = row_sparse.rmsprop_rows(*lazy, ids, gradients, 0.01, 0.9, 1e-7, jnp.int32(step), 3)
        period_ended = (step + 1) % 3 == 0
        assert np.array_equal(lazy[1][untouched], state_before[untouched]) != period_ended
        np.testing.assert_allclose(lazy[0], eager[0], rtol=1e-6)
        np.testing.assert_allclose(lazy[1] * row_sparse.velocity_scale(step + 1, 0.9, 3), eager[1], rtol=1e-6)


def _kernels(optimizer, source_steps: int = 5):
    model = build_model(CONFIG, SOURCE_VOCAB, TARGET_VOCAB)
    model.compile(optimizer=optimizer, loss="mse")
    model.optimizer.build(model.trainable_variables)
    inputs = {SOURCE_IDS: np.zeros((4, source_steps), "int32"), DECODER_INPUT_IDS: np.zeros((4, 6), "int32")}
    kernels = row_sparse.row_sparse_kernels(model, inputs, Seq2SeqModel.LOOKUP_INPUTS)
    return [k.layer.name + (" (lazy)" if k.lazy else "") for k in kernels]


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
def test_lazy_decay_only_for_large_tables_and_slow_decay(monkeypatch):
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_MIN_ROWS", TARGET_VOCAB)
    assert _kernels(keras.optimizers.RMSprop()) == ["source_projection", "target_projection (lazy)"]
    # A lazy table's state is scaled, which Keras's step would misread: row by row always.
    assert _kernels(keras.optimizers.RMSprop(), source_steps=20) == ["target_projection (lazy)"]
    monkeypatch.setattr(row_sparse, "LAZY_DECAY_MIN_ROWS", 0)
    assert _kernels(keras.optimizers.RMSprop(), source_steps=20) == [
        "source_projection (lazy)",
        "target_projection (lazy)",
    ]
    # rho^(period - 1) would underflow towards 0: decay every step.
    assert _kernels(keras.optimizers.RMSprop(rho=0.1)) == ["source_projection", "target_projection"]
    # Mixed precision: Keras sums a row's gradients in bfloat16, the row-sparse step would not.
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        assert _kernels(keras.optimizers.RMSprop()) == []
    finally:
        keras.config.set_dtype_policy("float32")
