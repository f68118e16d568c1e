"""The learning-rate warm-up (optimizers.py): each step is the plain optimizer's step at
the warmed-up rate, the setting survives saving, and it is checked like every setting."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from seq2seq.config import Config, ConfigError
from seq2seq.optimizers import OPTIMIZER_CLASSES, WarmUp, make_optimizer


@pytest.mark.parametrize("kind", sorted(OPTIMIZER_CLASSES))
def test_each_step_is_the_plain_step_at_the_warmed_up_rate(kind):
    """Step n of the warm-up optimizer equals step n of the plain one whose rate is set to
    lr x min(1, n / warmup_steps) before it: the rate rises over 4 steps, then stays."""
    rate, warmup = 0.01, 4
    generator = np.random.default_rng(0)
    start = generator.normal(size=(3, 5)).astype("float32")
    gradients = [generator.normal(size=(3, 5)).astype("float32") for _ in range(7)]
    warmed = make_optimizer(Config(optimizer=kind, learning_rate=rate, warmup_steps=warmup, clip_norm=0.0))
    plain = make_optimizer(Config(optimizer=kind, learning_rate=rate, clip_norm=0.0))
    assert isinstance(warmed, WarmUp) and not isinstance(plain, WarmUp)
    warmed_weights, plain_weights = keras.Variable(start), keras.Variable(start)
    moved = []
    for step, gradient in enumerate(gradients, start=1):
        before = keras.ops.convert_to_numpy(warmed_weights)
        warmed.apply_gradients([(keras.ops.convert_to_tensor(gradient), warmed_weights)])
        plain.learning_rate = rate * min(1.0, step / warmup)
        plain.apply_gradients([(keras.ops.convert_to_tensor(gradient), plain_weights)])
        after = keras.ops.convert_to_numpy(warmed_weights)
        np.testing.assert_allclose(after, keras.ops.convert_to_numpy(plain_weights), rtol=1e-5, atol=1e-7)
        moved.append(float(np.abs(after - before).max()))
    assert moved[0] < moved[3] / 2  # the first step is a small one
    assert float(keras.ops.convert_to_numpy(warmed.learning_rate)) == pytest.approx(rate)  # the variable stays the peak


def test_warm_up_survives_serialization():
    optimizer = make_optimizer(Config(warmup_steps=300))
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer) and restored.warmup_steps == 300
    assert restored.global_clipnorm == optimizer.global_clipnorm


def test_warmup_steps_is_checked():
    with pytest.raises(ConfigError, match="warmup_steps"):
        Config(warmup_steps=-1)
    with pytest.raises(ConfigError, match="warmup_steps"):
        Config.from_dict({"warmup_steps": 1.5})
    assert Config.textbook().warmup_steps == 0  # the textbook's rate is constant from the first step
