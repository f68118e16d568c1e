"""The output layer (projection.py) computes what keras.layers.Dense computes, forward and
backward, and the model uses it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from seq2seq import native
from seq2seq.config import Config
from seq2seq.model import OUTPUT_PROJECTION, build_model
from seq2seq.projection import OutputProjection


def _layers(units: int, inputs: np.ndarray):
    """OutputProjection and Dense with the same random weights."""
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(inputs.shape[-1], units)).astype("float32"), rng.normal(size=units).astype("float32")]
    layers = OutputProjection(units), keras.layers.Dense(units)
    for layer in layers:
        layer.build(inputs.shape)
        layer.set_weights(weights)
    return layers


@pytest.mark.parametrize("shape", [(3, 5, 16), (7, 24)])
def test_values_and_gradients_equal_dense(shape):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=shape).astype("float32")
    ours, dense = _layers(37, inputs)
    np.testing.assert_allclose(ours(inputs), dense(inputs), rtol=1e-5, atol=1e-5)
    if keras.backend.backend() != "jax":
        return
    import jax

    cotangent = rng.normal(size=(*shape[:-1], 37)).astype("float32")

    def gradients(layer):
        def loss(x, kernel, bias):
            outputs, _ = layer.stateless_call([kernel, bias], [], x)
            return (outputs * cotangent).sum()

        return jax.grad(loss, argnums=(0, 1, 2))(inputs, layer.kernel.value, layer.bias.value)

    for got, expected in zip(gradients(ours), gradients(dense), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_mixed_bfloat16_policy_matches_dense():
    inputs = np.random.default_rng(2).normal(size=(4, 3, 16)).astype("float32")
    rng = np.random.default_rng(3)
    weights = [rng.normal(size=(16, 11)).astype("float32"), rng.normal(size=11).astype("float32")]
    layers = OutputProjection(11, dtype="mixed_bfloat16"), keras.layers.Dense(11, dtype="mixed_bfloat16")
    for layer in layers:
        layer.build(inputs.shape)
        layer.set_weights(weights)
    ours, dense = (keras.ops.convert_to_numpy(layer(inputs)) for layer in layers)
    assert ours.dtype == dense.dtype
    np.testing.assert_allclose(ours.astype("float32"), dense.astype("float32"), rtol=2e-2, atol=5e-2)


def test_backward_products_are_ordered_through_the_cpp_call():
    """dW waits for dx and the rest of the backward pass for dW: two `after` calls in the
    compiled gradient (and the values above are Dense's)."""
    if keras.backend.backend() != "jax" or not native.available():
        pytest.skip("the C++ call is made from JAX, with the library built")
    import jax

    from seq2seq.projection import ordered_projection

    x, kernel, bias = (np.ones(shape, "float32") for shape in [(6, 4), (4, 9), (9,)])
    gradient = jax.jit(jax.grad(lambda *a: ordered_projection()(*a).sum(), argnums=(0, 1, 2)))
    compiled = gradient.lower(x, kernel, bias).compile().as_text()
    assert compiled.count(f'custom_call_target="{native.AFTER}"') == 2
    np.testing.assert_allclose(gradient(x, kernel, bias)[1], np.full((4, 9), 6.0))


def test_after_copies_its_first_operand():
    if keras.backend.backend() != "jax" or not native.available():
        pytest.skip("the C++ call is made from JAX, with the library built")
    from seq2seq.projection import after

    value = np.arange(12, dtype="int32").reshape(3, 4)
    np.testing.assert_array_equal(after(value, np.zeros(5, "float32")), value)


def test_model_uses_it():
    model = build_model(Config.textbook(level="char", latent_dim=16), 9, 11)
    assert type(model.get_layer(OUTPUT_PROJECTION)) is OutputProjection
