"""The C++ softmax cross-entropy (csrc/cross_entropy.cc, called by losses.py) computes what
the loss's and the accuracy's Keras ops compute, and a training step runs it once."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from seq2seq import losses, native
from seq2seq.losses import MaskedAccuracy, MaskedCrossEntropy
from seq2seq.vocab import PAD_ID

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the C++ call is made from JAX")


@pytest.fixture
def both_paths(monkeypatch):
    """Runs f() with the C++ call and with the Keras ops; returns both results."""
    reason = native.unavailable_reason()
    if reason is not None and "failed" not in reason:
        pytest.skip(f"the C++ library is not available here: {reason}")
    assert reason is None

    def run(f):
        assert losses.runs_native(np.zeros((1, 1), "float32"))
        ours = f()
        with monkeypatch.context() as patch:
            patch.setattr(losses, "runs_native", lambda logits: False)
            reference = f()
        return ours, reference

    return run


def _batch(batch: int, steps: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.normal(size=(batch, steps, vocab))).astype("float32")
    y_true = rng.integers(1, vocab, size=(batch, steps)).astype("int32")
    y_true[0, steps // 2 :] = PAD_ID  # a padded tail
    if batch > 2:
        y_true[2] = PAD_ID  # a row of padding only
    return logits, y_true


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize(("batch", "steps", "vocab"), [(3, 4, 8), (5, 3, 16), (4, 5, 37), (7, 9, 7150)])
def test_loss_and_gradient_match_keras_ops(both_paths, batch, steps, vocab, label_smoothing):
    """Vocabularies shorter than, equal to and not a multiple of one 16-float vector, and
    the benchmark's word vocabulary; padding, a row of padding only."""
    import jax

    logits, y_true = _batch(batch, steps, vocab)
    loss = MaskedCrossEntropy(label_smoothing=label_smoothing)
    (value, gradient), (reference_value, reference_gradient) = both_paths(
        lambda: jax.value_and_grad(lambda x: loss(y_true, x))(logits)
    )
    assert float(value) == pytest.approx(float(reference_value), rel=2e-6)
    np.testing.assert_allclose(gradient, reference_gradient, atol=2e-8, rtol=1e-5)
    assert not np.asarray(gradient)[y_true == PAD_ID].any()


def test_gradient_scales_with_any_cotangent(both_paths):
    """Per-token cotangents other than ones (sample weights, loss scaling) scale each row's
    kept gradient."""
    import jax

    logits, y_true = _batch(4, 5, 23, seed=5)
    cotangent = np.random.default_rng(6).normal(size=y_true.shape).astype("float32")
    loss = MaskedCrossEntropy(label_smoothing=0.1)
    ours, reference = both_paths(lambda: jax.vjp(lambda x: loss.call(y_true, x), logits)[1](cotangent)[0])
    np.testing.assert_allclose(ours, reference, atol=2e-8, rtol=1e-5)


@pytest.mark.parametrize("offset", [1e4, -1e4])
def test_extreme_and_infinite_logits_match_keras_ops(both_paths, offset):
    import jax

    logits, y_true = _batch(3, 4, 40, seed=7)
    logits += offset
    logits[1, :, ::3] = -np.inf  # words ruled out (never a target below)
    y_true[1] = np.where(y_true[1] % 3 == 0, y_true[1] + 1, y_true[1])
    loss = MaskedCrossEntropy()
    (value, gradient), (reference_value, reference_gradient) = both_paths(
        lambda: jax.value_and_grad(lambda x: loss(y_true, x))(logits)
    )
    assert np.isfinite(float(value))
    assert float(value) == pytest.approx(float(reference_value), rel=1e-5)
    np.testing.assert_allclose(gradient, reference_gradient, atol=1e-7, rtol=1e-5)


def test_bfloat16_logits_take_the_same_path(both_paths):
    """Under a mixed-precision policy the logits are bfloat16: the loss and the accuracy
    cast them to float32 and still make the C++ call."""
    import jax.numpy as jnp

    logits, y_true = _batch(3, 4, 40, seed=8)
    logits = jnp.asarray(logits, dtype="bfloat16")

    def loss_and_accuracy():
        metric = MaskedAccuracy()
        metric.update_state(y_true, logits)
        return float(MaskedCrossEntropy()(y_true, logits)), float(metric.correct)

    calls = []
    original = losses.native_cross_entropy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(losses, "native_cross_entropy", lambda: lambda *a: calls.append(1) or original(*a))
        ours, reference = both_paths(loss_and_accuracy)
    assert len(calls) == 2  # the loss's and the accuracy's, on the C++ path only
    assert ours[0] == pytest.approx(reference[0], rel=1e-5) and ours[1] == reference[1]


def test_accuracy_matches_keras_ops_with_ties(both_paths):
    logits, y_true = _batch(4, 6, 40, seed=3)
    logits[1, 0] = 0.0  # every word ties with the target: counted right, as by the Keras ops
    logits[1, 1, y_true[1, 1]] = logits[1, 1].max()  # the target ties with the largest
    logits[1, 2, y_true[1, 2]] = logits[1, 2].max() + 1.0  # right
    logits[1, 3, y_true[1, 3]] = logits[1, 3].min()  # wrong

    def accuracy():
        metric = MaskedAccuracy()
        metric.update_state(y_true, logits)
        return float(metric.correct), float(metric.total)

    ours, reference = both_paths(accuracy)
    assert ours == reference
    assert ours[0] >= 3  # the three rows made right above


def test_batch_of_padding_only_gives_zero_loss_and_gradient(both_paths):
    import jax

    logits, _ = _batch(2, 3, 20)
    y_true = np.zeros((2, 3), "int32")
    (value, gradient), (reference_value, _) = both_paths(
        lambda: jax.value_and_grad(lambda x: MaskedCrossEntropy()(y_true, x))(logits)
    )
    assert float(value) == float(reference_value) == 0.0
    assert not np.asarray(gradient).any()


def test_nan_in_a_real_row_makes_the_loss_nan(both_paths):
    logits, y_true = _batch(2, 3, 20)
    logits[1, 1, 5] = np.nan
    ours, reference = both_paths(lambda: float(MaskedCrossEntropy()(y_true, logits)))
    assert np.isnan(ours) and np.isnan(reference)


@pytest.mark.parametrize("bad_id", [20, -1, 2.5])
def test_target_outside_the_vocabulary_is_an_error(both_paths, bad_id):
    logits, y_true = _batch(2, 3, 20)
    y_true = y_true.astype("float32")
    y_true[1, 1] = bad_id
    both_paths(lambda: None)  # skips where the library is not built
    with pytest.raises(Exception, match="outside the vocabulary"):
        float(losses.native_cross_entropy()(logits, y_true, 0.0)[0].sum())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_training_step_runs_one_call_for_loss_and_accuracy(both_paths, label_smoothing):
    """The accuracy asks for the loss's call (same operands and label smoothing), so XLA
    merges the two: one pass over the logits in a compiled training step."""
    import jax

    logits, y_true = _batch(3, 4, 30)
    loss = MaskedCrossEntropy(label_smoothing=label_smoothing)
    metric = MaskedAccuracy(label_smoothing=label_smoothing)

    def step(logits, y_true, metric_variables):
        value, gradient = jax.value_and_grad(lambda x: loss(y_true, x))(logits)
        return value, gradient, metric.stateless_update_state(metric_variables, y_true, logits)

    both_paths(lambda: None)  # skips where the library is not built
    variables = [v.value for v in metric.variables]
    compiled = jax.jit(step).lower(logits, y_true, variables).compile().as_text()
    assert compiled.count(f'custom_call_target="{native.CROSS_ENTROPY}"') == 1
