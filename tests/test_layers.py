"""The model's LSTM is Keras's LSTM: same weights, same outputs, computed more cheaply."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

from seq2seq import recurrence
from seq2seq.layers import OneHot, ProjectedLSTM, ProjectedLSTMCell, TokenProjection

from .conftest import count_calls

jax_only = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the hand-written loop is JAX's")


VOCAB, UNITS = 11, 6


def _keras_lstm_on_one_hot(ids):
    inputs = keras.Input((None,), dtype="int32")
    lstm = layers.LSTM(UNITS, return_sequences=True, return_state=True)
    model = keras.Model(inputs, lstm(OneHot(VOCAB, mask_padding=True)(inputs)))
    return model, lstm


def _projected_lstm(ids):
    inputs = keras.Input((None,), dtype="int32")
    projection = TokenProjection(VOCAB, 4 * UNITS, mask_padding=True)
    rnn = layers.RNN(ProjectedLSTMCell(UNITS), return_sequences=True, return_state=True)
    model = keras.Model(inputs, rnn(projection(inputs)))
    return model, projection, rnn


def test_one_hot_matmul_equals_row_lookup():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, size=(3, 7)).astype("int32")
    kernel = rng.normal(size=(VOCAB, 4 * UNITS)).astype("float32")
    projection = TokenProjection(VOCAB, 4 * UNITS)
    projection.build(ids.shape)
    projection.kernel.assign(kernel)
    one_hot = ops.convert_to_numpy(OneHot(VOCAB)(ids))
    np.testing.assert_allclose(ops.convert_to_numpy(projection(ids)), one_hot @ kernel, rtol=1e-6, atol=1e-6)


def test_projected_lstm_equals_keras_lstm_on_one_hot_vectors():
    rng = np.random.default_rng(1)
    ids = rng.integers(1, VOCAB, size=(4, 9)).astype("int32")
    ids[0, 5:] = 0  # padding, masked in both
    ids[2, 2:] = 0
    reference, lstm = _keras_lstm_on_one_hot(ids)
    ours, projection, rnn = _projected_lstm(ids)
    reference(ids)
    ours(ids)
    kernel, recurrent_kernel, bias = (rng.normal(scale=0.5, size=w.shape).astype("float32") for w in lstm.weights)
    for variable, value in zip(lstm.weights, (kernel, recurrent_kernel, bias), strict=True):
        variable.assign(value)
    projection.kernel.assign(kernel)
    rnn.cell.recurrent_kernel.assign(recurrent_kernel)
    rnn.cell.bias.assign(bias)
    for expected, actual in zip(reference(ids), ours(ids), strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), atol=1e-5)


def test_initialisation_matches_keras_lstm_cell():
    cell = ProjectedLSTMCell(UNITS)
    cell.build((None, 4 * UNITS))
    bias = ops.convert_to_numpy(cell.bias)
    assert (bias[UNITS : 2 * UNITS] == 1).all() and (bias[:UNITS] == 0).all()  # forget gate bias 1
    u = ops.convert_to_numpy(cell.recurrent_kernel)
    assert u.shape == (UNITS, 4 * UNITS)
    np.testing.assert_allclose(u @ u.T, np.eye(UNITS), atol=1e-5)  # orthogonal rows


@pytest.mark.parametrize("go_backwards", [False, True])
def test_jax_recurrence_matches_keras_loop_in_values_and_gradients(go_backwards):
    """`ProjectedLSTM` runs recurrence.lstm on JAX: when training, its outputs, final states
    and the gradients of all five inputs equal Keras's own loop over the same cell (JAX
    differentiates that one), padding (masked steps) included."""
    if keras.backend.backend() != "jax":
        pytest.skip("the hand-written loop is JAX's")
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    batch, steps = 5, 7
    x = jnp.asarray(rng.normal(size=(batch, steps, 4 * UNITS)), "float32")
    h0, c0 = (jnp.asarray(rng.normal(size=(batch, UNITS)), "float32") for _ in range(2))
    mask = np.ones((batch, steps), bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    mask = jnp.asarray(mask)
    keras_loop = layers.RNN(
        ProjectedLSTMCell(UNITS), return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    ours = ProjectedLSTM(UNITS, return_sequences=True, return_state=True, go_backwards=go_backwards)
    keras_loop(x, initial_state=[h0, c0], mask=mask)
    ours(x, initial_state=[h0, c0], mask=mask)
    weights = [jnp.asarray(rng.normal(scale=0.5, size=w.shape), "float32") for w in keras_loop.weights]
    weights_per_output = [
        jnp.asarray(rng.normal(size=(batch, *shape)), "float32") for shape in [(steps, UNITS), (UNITS,), (UNITS,)]
    ]

    def loss(layer):
        def weighted_sum(x, recurrent_kernel, bias, h0, c0):
            outputs, _ = layer.stateless_call(
                [recurrent_kernel, bias], [], x, initial_state=[h0, c0], mask=mask, training=True
            )
            return sum(jnp.sum(o * w) for o, w in zip(outputs, weights_per_output, strict=True))

        return weighted_sum

    arguments = (x, *weights, h0, c0)
    expected_value, expected_grads = jax.value_and_grad(loss(keras_loop), argnums=range(5))(*arguments)
    value, grads = jax.jit(jax.value_and_grad(loss(ours), argnums=range(5)))(*arguments)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for name, expected, actual in zip(["x", "U", "b", "h0", "c0"], expected_grads, grads, strict=True):
        np.testing.assert_allclose(actual, expected, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("go_backwards", [False, True])
@jax_only
def test_jax_recurrence_serves_inference_with_keras_loop_values(monkeypatch, go_backwards):
    """Inference (encoding, decoding steps) runs recurrence.lstm too on JAX (25% faster
    greedy decoding in the benchmark's setting than Keras's loop), with the same values."""
    calls = count_calls(monkeypatch, recurrence, "lstm")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 6, 4 * UNITS)).astype("float32")
    mask = np.ones((3, 6), bool)
    mask[1, 2:] = False
    keras_loop = layers.RNN(
        ProjectedLSTMCell(UNITS), return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    ours = ProjectedLSTM(UNITS, return_sequences=True, return_state=True, go_backwards=go_backwards)
    keras_loop(x, mask=mask)
    ours(x, mask=mask)
    for variable, value in zip(ours.weights, keras_loop.weights, strict=True):
        variable.assign(value)
    calls.clear()
    for expected, actual in zip(
        keras_loop(x, mask=mask, training=False), ours(x, mask=mask, training=False), strict=True
    ):
        np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), atol=1e-5)
    assert calls, "inference must run recurrence.lstm"


@jax_only
def test_the_jax_loop_is_traced_once_per_shape_when_called_eagerly(monkeypatch):
    """Decoding one step at a time calls the loop eagerly; traced (and compiled) anew at
    every call it made the step-by-step reference decoder 10x slower."""
    traced = count_calls(monkeypatch, recurrence, "_forward")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5, 4 * 7)).astype("float32")  # a shape no other test uses
    u, b = rng.normal(size=(7, 4 * 7)).astype("float32"), np.zeros(4 * 7, "float32")
    h0 = np.zeros((3, 7), "float32")
    outputs = [recurrence.lstm(x, u, b, h0, h0, np.ones((3, 5), "float32"), False, "float32")[0] for _ in range(3)]
    assert len(traced) == 1
    np.testing.assert_array_equal(ops.convert_to_numpy(outputs[0]), ops.convert_to_numpy(outputs[2]))
