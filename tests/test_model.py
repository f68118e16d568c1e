from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from seq2seq.config import Config
from seq2seq.layers import OneHot
from seq2seq.losses import MaskedAccuracy, MaskedCrossEntropy
from seq2seq.model import ENCODER_LSTM, build_model, inference_parts
from seq2seq.vocab import PAD_ID


def test_one_hot_shapes_and_mask():
    ids = np.array([[5, 2, 0, 0], [1, 3, 4, 0]], dtype="int32")
    layer = OneHot(6, mask_padding=True)
    vectors = ops.convert_to_numpy(layer(ids))
    assert vectors.shape == (2, 4, 6)
    assert (vectors.sum(-1) == 1).all()
    assert vectors[0, 1, 2] == 1 and vectors[1, 2, 4] == 1
    mask = ops.convert_to_numpy(layer.compute_mask(ids))
    assert mask.tolist() == [[True, True, False, False], [True, True, True, False]]
    assert OneHot(6).compute_mask(ids) is None


@pytest.mark.parametrize("input_kind", ["onehot", "embedding"])
def test_padded_source_positions_do_not_change_the_encoder_state(input_kind):
    config = Config(latent_dim=8, input=input_kind, embedding_dim=4)
    model = build_model(config, source_vocab_size=10, target_vocab_size=12)
    encoder = inference_parts(model).encoder
    short = np.array([[5, 6, 7]], dtype="int32")
    padded = np.array([[5, 6, 7, 0, 0, 0]], dtype="int32")
    for a, b in zip(encoder(short), encoder(padded), strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), atol=1e-6)


def test_model_shapes_and_inference_parts_share_weights():
    model = build_model(Config(latent_dim=8), source_vocab_size=10, target_vocab_size=12)
    logits = model([np.ones((3, 5), "int32"), np.ones((3, 7), "int32")])
    assert tuple(logits.shape) == (3, 7, 12)
    parts = inference_parts(model)
    assert parts.encoder.get_layer(ENCODER_LSTM) is model.get_layer(ENCODER_LSTM)
    logits, h, c = parts.step([np.ones((3, 1), "int32"), np.zeros((3, 8), "float32"), np.zeros((3, 8), "float32")])
    assert tuple(logits.shape) == (3, 12) and tuple(h.shape) == tuple(c.shape) == (3, 8)


def test_loss_ignores_padding_and_matches_keras():
    rng = np.random.default_rng(0)
    y_true = np.array([[4, 5, 2, 0, 0], [6, 2, 0, 0, 0]], dtype="int32")
    logits = rng.normal(size=(2, 5, 8)).astype("float32")
    ours = float(MaskedCrossEntropy()(y_true, logits))
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD_ID)
    assert ours == pytest.approx(float(keras_loss(y_true, logits)), rel=1e-5)
    changed = logits.copy()
    changed[y_true == PAD_ID] = rng.normal(size=(int((y_true == PAD_ID).sum()), 8))
    assert float(MaskedCrossEntropy()(y_true, changed)) == pytest.approx(ours, rel=1e-6)


def test_accuracy_counts_real_tokens_only():
    y_true = np.array([[4, 5, 0, 0]], dtype="int32")
    logits = np.zeros((1, 4, 6), "float32")
    logits[0, 0, 4] = 1  # right
    logits[0, 1, 3] = 1  # wrong
    logits[0, 2, 0] = 1  # padding, "right" but not counted
    metric = MaskedAccuracy()
    metric.update_state(y_true, logits)
    assert float(metric.result()) == pytest.approx(0.5)
