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


def test_target_outside_the_vocabulary_is_an_error(both_paths):
    logits, y_true = _batch(2, 3, 20)
    y_true[1, 1] = 20
    with pytest.raises(Exception, match="outside the vocabulary"):
        float(MaskedCrossEntropy()(y_true, logits))


def test_training_step_runs_one_call_for_loss_and_accuracy(both_paths):
    """The accuracy asks for the loss's call (same operands, no label smoothing), so XLA
    merges the two: one pass over the logits in a compiled training step."""
    import jax

    logits, y_true = _batch(3, 4, 30)
    loss, metric = MaskedCrossEntropy(), MaskedAccuracy()

    def step(logits, y_true, metric_variables):
        value, gradient = jax.value_and_grad(lambda x: loss(y_true, x))(logits)
        return value, gradient, metric.stateless_update_state(metric_variables, y_true, logits)

    both_paths(lambda: None)  # skips where the library is not built
    variables = [v.value for v in metric.variables]
    compiled = jax.jit(step).lower(logits, y_true, variables).compile().as_text()
    assert compiled.count(f'custom_call_target="{native.CROSS_ENTROPY}"') == 1
