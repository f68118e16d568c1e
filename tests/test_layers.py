"""The model's LSTM is Keras's LSTM: same weights, same outputs, computed more cheaply."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from seq2seq.layers import OneHot, ProjectedLSTMCell, TokenProjection

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
