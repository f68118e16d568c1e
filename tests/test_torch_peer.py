"""The PyTorch peer of the benchmark (bench/torch_peer.py) is the default model: with the
weights of a Keras default-config model it gives the same logits, loss and outputs."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

torch = pytest.importorskip("torch", reason="torch is an optional bench dependency (pip install -e '.[bench]')")

from seq2seq.config import Config  # noqa: E402
from seq2seq.decoding import BeamSearchDecoder, GreedyDecoder  # noqa: E402
from seq2seq.losses import MaskedCrossEntropy  # noqa: E402
from seq2seq.model import build_model, inference_parts  # noqa: E402

from .conftest import bench_module  # noqa: E402

VOCAB = 23
# the default configuration at small sizes: tied embeddings with the bridge (latent != embedding)
CONFIG = Config(embedding_dim=6, latent_dim=10)


peer_module = bench_module("torch_peer")


@pytest.fixture(scope="module")
def models():
    """(Keras model, peer with the Keras model's weights)."""
    import keras

    keras.utils.set_random_seed(1)
    model = build_model(CONFIG, VOCAB, VOCAB)
    # non-zero biases, so that a bias copied to the wrong place shows
    for variable in model.weights:
        if variable.path.endswith("bias"):
            variable.assign(np.random.default_rng(2).normal(0, 0.5, variable.shape).astype("float32"))
    peer = peer_module.Peer(
        peer_module.PeerConfig(VOCAB, VOCAB, CONFIG.embedding_dim, CONFIG.latent_dim, CONFIG.dropout)
    )
    peer_module.load_keras_weights(peer, peer_module.keras_weights(model))
    peer.eval()
    return model, peer


def _batch(rows: int = 5, seed: int = 0):
    """Source ids (rows, 7) and decoder input and target ids (rows, 6), right-padded, of different lengths."""
    rng = np.random.default_rng(seed)
    source = np.zeros((rows, 7), dtype="int32")
    inputs = np.zeros((rows, 6), dtype="int32")
    targets = np.zeros((rows, 6), dtype="int32")
    for row in range(rows):
        n, m = rng.integers(1, 8), rng.integers(1, 6)
        source[row, :n] = rng.integers(4, VOCAB, n)
        ids = rng.integers(4, VOCAB, m)
        inputs[row, : m + 1] = [1, *ids]
        targets[row, : m + 1] = [*ids, 2]
    return source, inputs, targets


def test_logits_and_loss_match(models):
    model, peer = models
    source, inputs, targets = _batch()
    ours = np.array(model([source, inputs], training=False))  # a writable copy, for torch.from_numpy
    with torch.no_grad():
        theirs = peer(torch.from_numpy(source).long(), torch.from_numpy(inputs).long()).numpy()
    assert theirs.shape == ours.shape == (5, 6, VOCAB)
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)

    loss = torch.nn.CrossEntropyLoss(ignore_index=0, label_smoothing=CONFIG.label_smoothing)
    their_loss = float(loss(torch.from_numpy(ours).reshape(-1, VOCAB), torch.from_numpy(targets).long().reshape(-1)))
    our_loss = float(np.sum(MaskedCrossEntropy(label_smoothing=CONFIG.label_smoothing).call(targets, ours)))
    assert their_loss == pytest.approx(our_loss, rel=1e-5)


def test_greedy_and_beam_outputs_match(models):
    model, peer = models
    source, _, _ = _batch(rows=4, seed=3)
    parts = inference_parts(model, CONFIG)
    ours = np.asarray(GreedyDecoder(parts, 8).predict_on_batch(source))
    theirs = peer.greedy(torch.from_numpy(source).long(), 8).numpy()
    np.testing.assert_array_equal(theirs, ours)

    our_ids, our_scores = BeamSearchDecoder(parts, 8, beam_size=3).predict_on_batch(source)
    their_ids, their_scores = peer.beam_search(torch.from_numpy(source).long(), 8, beam=3)
    np.testing.assert_array_equal(their_ids.numpy(), np.asarray(our_ids)[:, 0])
    np.testing.assert_allclose(their_scores.numpy(), np.asarray(our_scores)[:, 0], rtol=1e-4, atol=1e-4)


def test_training_step_lowers_the_loss():
    peer = peer_module.Peer(peer_module.PeerConfig(VOCAB, VOCAB, 6, 10, dropout=0.0, learning_rate=1e-2))
    trainer = peer_module.Trainer(peer)
    source, inputs, targets = _batch(rows=8)
    first = trainer.train_step(source, inputs, targets)
    for _ in range(20):
        last = trainer.train_step(source, inputs, targets)
    assert last < first
