from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from seq2seq import backend
from seq2seq.config import Config
from seq2seq.layers import OneHot
from seq2seq.losses import MaskedAccuracy, MaskedCrossEntropy
from seq2seq.model import build_model, inference_parts
from seq2seq.training import compile_model
from seq2seq.vocab import PAD_ID

SOURCE_VOCAB, TARGET_VOCAB = 20, 15

# every kind of model: attention, depth, direction, input, tying
VARIANTS = [
    dict(attention="none", layers=1, bidirectional=False, input="onehot"),  # the textbook
    dict(attention="none", layers=2, bidirectional=True, input="embedding"),
    dict(attention="luong", layers=1, bidirectional=False, input="onehot"),
    dict(attention="luong", layers=2, bidirectional=True, input="embedding", tie_embeddings=True),
    dict(attention="luong-dot", layers=1, bidirectional=True, input="embedding"),
    dict(attention="bahdanau", layers=2, bidirectional=True, input="embedding", dropout=0.2),
]


def _config(**settings) -> Config:
    return Config.textbook(**{"latent_dim": 16, "embedding_dim": 8, **settings})


def _ids(seed=0):
    rng = np.random.default_rng(seed)
    source = rng.integers(4, SOURCE_VOCAB, (3, 7)).astype("int32")
    source[0, 4:] = PAD_ID
    source[2, 6:] = PAD_ID
    target = rng.integers(4, TARGET_VOCAB, (3, 5)).astype("int32")
    return source, target


def _teacher_forced_by_steps(parts, source, target):
    context, state = parts.split(parts.encoder(source))
    logits = []
    for t in range(target.shape[1]):
        step_logits, attention, *state = parts.step([ops.convert_to_tensor(target[:, t : t + 1]), *context, *state])
        logits.append(ops.convert_to_numpy(step_logits))
    return np.stack(logits, axis=1), ops.convert_to_numpy(attention)


@pytest.mark.parametrize("settings", VARIANTS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_one_step_at_a_time_equals_teacher_forcing(settings):
    config = _config(**settings)
    model = build_model(config, SOURCE_VOCAB, TARGET_VOCAB)
    source, target = _ids()
    logits = ops.convert_to_numpy(model([source, target]))
    assert logits.shape == (3, 5, TARGET_VOCAB)
    stepped, attention = _teacher_forced_by_steps(inference_parts(model, config), source, target)
    np.testing.assert_allclose(stepped, logits, atol=1e-5)
    if config.attention != "none":
        assert attention.shape == (3, 7)
        np.testing.assert_allclose(attention.sum(-1), 1, atol=1e-5)
        assert np.all(attention[0, 4:] == 0)  # padded source positions get no weight


@pytest.mark.parametrize("settings", VARIANTS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_padded_source_positions_do_not_change_outputs(settings):
    model = build_model(_config(**settings), SOURCE_VOCAB, TARGET_VOCAB)
    source, target = _ids()
    logits = ops.convert_to_numpy(model([source, target]))
    longer = np.concatenate([source, np.zeros((3, 5), "int32")], axis=1)  # more padding
    np.testing.assert_allclose(ops.convert_to_numpy(model([longer, target])), logits, atol=1e-5)


@pytest.mark.parametrize("settings", VARIANTS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_saved_model_loads_safely_and_identically(settings, tmp_path):
    """backend.load_model skips the weights' initializers: every weight is the saved one."""
    model = build_model(_config(**settings), SOURCE_VOCAB, TARGET_VOCAB)
    source, target = _ids()
    model.save(tmp_path / "m.keras")
    loaded = backend.load_model(tmp_path / "m.keras")
    for ours, saved in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(ours), ops.convert_to_numpy(saved), err_msg=saved.path)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded([source, target])), ops.convert_to_numpy(model([source, target]))
    )


def test_a_checkpoint_loads_as_keras_loads_it(tmp_path):
    """With its optimizer (compile=True), what backend.load_model loads equals Keras's own
    loading: weights, optimizer state and dropout's seed states alike."""
    config = _config(**VARIANTS[-1])  # dropout: seed states
    model = build_model(config, SOURCE_VOCAB, TARGET_VOCAB)
    compile_model(model, config)
    source, target = _ids()
    model.train_on_batch([source, target[:, :-1]], target[:, 1:])  # optimizer state that is not zeros
    model.save(tmp_path / "m.keras")
    keras.utils.set_random_seed(1)  # seed states are drawn when a model is made, not loaded
    loaded = backend.load_model(tmp_path / "m.keras", compile=True)
    keras.utils.set_random_seed(1)
    by_keras = keras.saving.load_model(tmp_path / "m.keras", compile=True, safe_mode=True)
    for variables in (lambda m: m.variables, lambda m: m.optimizer.variables):
        assert len(variables(loaded)) == len(variables(by_keras))
        for ours, theirs in zip(variables(loaded), variables(by_keras), strict=True):
            np.testing.assert_array_equal(ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs), err_msg=ours.path)


def test_weights_initialized_together_are_the_same_draws():
    """backend.initialized_together draws every weight in one compiled program: the same
    values as Keras drawing them one by one, for each kind of initializer a model uses."""

    def small_model() -> keras.Model:
        inputs = keras.Input((None,), dtype="int32")
        embedded = keras.layers.Embedding(SOURCE_VOCAB, 8)(inputs)  # uniform
        hidden = keras.layers.LSTM(16)(embedded)  # glorot uniform, orthogonal, zeros and ones
        outputs = keras.layers.Dense(4, kernel_initializer="he_normal", bias_initializer="ones")(hidden)
        return keras.Model(inputs, keras.layers.Dropout(0.1)(outputs))  # and a seed state

    keras.utils.set_random_seed(3)
    with backend.initialized_together():
        together = small_model()
    keras.utils.set_random_seed(3)
    one_by_one = small_model()
    assert len(together.variables) == len(one_by_one.variables) == 8
    for ours, theirs in zip(together.variables, one_by_one.variables, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs), rtol=1e-6, atol=1e-7)
        assert np.any(ops.convert_to_numpy(ours) != 0) or "bias" in ours.path


def test_textbook_model_has_the_textbook_layers():
    model = build_model(_config(), SOURCE_VOCAB, TARGET_VOCAB)
    names = [layer.name for layer in model.layers]
    for name in ("source_ids", "source_projection", "encoder_lstm", "decoder_input_ids", "decoder_lstm"):
        assert name in names
    assert "output_projection" in names
    parts = inference_parts(model, _config())
    assert parts.num_context == 0
    assert parts.encoder.get_layer("encoder_lstm") is model.get_layer("encoder_lstm")


def test_bidirectional_and_layers_change_the_model():
    counts = {
        (bi, n): build_model(_config(bidirectional=bi, layers=n), SOURCE_VOCAB, TARGET_VOCAB).count_params()
        for bi, n in itertools.product([False, True], [1, 2])
    }
    assert counts[(False, 2)] > counts[(False, 1)]
    assert counts[(True, 1)] != counts[(False, 1)]


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


def test_label_smoothing_targets_a_smoothed_distribution():
    rng = np.random.default_rng(1)
    y_true = np.array([[4, 5, 0]], dtype="int32")
    logits = rng.normal(size=(1, 3, 8)).astype("float32")
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    expected = float(keras_loss(np.eye(8)[y_true[0, :2]][None], logits[:, :2]))
    assert float(MaskedCrossEntropy(label_smoothing=0.1)(y_true, logits)) == pytest.approx(expected, rel=1e-5)


def test_accuracy_counts_real_tokens_only():
    y_true = np.array([[4, 5, 0, 0]], dtype="int32")
    logits = np.zeros((1, 4, 6), "float32")
    logits[0, 0, 4] = 1  # right
    logits[0, 1, 3] = 1  # wrong
    logits[0, 2, 0] = 1  # padding, "right" but not counted
    metric = MaskedAccuracy()
    metric.update_state(y_true, logits)
    assert float(metric.result()) == pytest.approx(0.5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_gradient_matches_keras(label_smoothing):
    """The loss reads the target's logit through a mask (no gather): its gradient is
    Keras's cross-entropy gradient, zero at padding."""
    if keras.backend.backend() != "jax":
        pytest.skip("gradients taken with JAX")
    import jax

    rng = np.random.default_rng(2)
    y_true = np.array([[4, 5, 2, 0], [6, 2, 0, 0]], dtype="int32")
    logits = rng.normal(size=(2, 4, 8)).astype("float32")
    real = y_true != PAD_ID
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)

    def reference(logits):  # Keras's loss on the real tokens only
        return keras_loss(np.eye(8, dtype="float32")[y_true[real]], logits[real])

    ours = jax.grad(lambda x: MaskedCrossEntropy(label_smoothing=label_smoothing)(y_true, x))(logits)
    np.testing.assert_allclose(ours, jax.grad(reference)(logits), atol=1e-6)
    assert not np.asarray(ours)[~real].any()
