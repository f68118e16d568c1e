"""bfloat16 products with float32 sums: the decoding step's (backend.bfloat16_decoding:
projections, the attention decoder's gates, the tied logits), in the decoders only, and
training's output product (backend.bfloat16_training_logits). Forced on here, so they
run on every CPU (emulated where the CPU has no bfloat16 instructions)."""

from __future__ import annotations

import keras
import ml_dtypes
import numpy as np
import pytest
from keras import ops

from seq2seq import backend
from seq2seq.config import Config
from seq2seq.errors import UserError
from seq2seq.layers import ProjectedLSTMCell, TiedEmbedding, dense
from seq2seq.model import build_model, inference_parts

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="bfloat16 products are a JAX path")


def _rounded(x: np.ndarray) -> np.ndarray:
    return x.astype(ml_dtypes.bfloat16).astype(np.float32)


SWITCHES = [
    ("SEQ2SEQ_BF16_DECODING", backend.bfloat16_decoding),
    ("SEQ2SEQ_BF16_TRAINING", backend.bfloat16_training_logits),
]


@pytest.mark.parametrize(("variable", "switch"), SWITCHES)
@pytest.mark.parametrize(("setting", "expected"), [("on", True), ("off", False), (" OFF ", False)])
def test_the_switches(monkeypatch, variable, switch, setting, expected):
    monkeypatch.setenv(variable, setting)
    assert switch() is expected


@pytest.mark.parametrize(("variable", "switch"), SWITCHES)
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "amx_bf16", "amx_tile"}, True),  # Intel Xeon with AMX
        ({"avx2", "avx512f", "avx512_bf16"}, True),  # AMD Zen 4 and 5
        ({"avx2", "avx512f"}, False),
        ({"avx2", "fma"}, False),
        ({"asimd", "bf16"}, False),  # ARM: not measured
    ],
)
def test_by_default_on_where_the_cpu_has_bfloat16_matrix_instructions(monkeypatch, variable, switch, flags, expected):
    import jax

    from seq2seq import native

    monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(native, "cpu_flags", lambda: frozenset(flags))
    assert switch() is (expected and jax.default_backend() == "cpu")


@pytest.mark.parametrize(("variable", "switch"), SWITCHES)
@pytest.mark.parametrize("setting", ["yes", "1"])
def test_a_wrong_setting_is_named(monkeypatch, variable, switch, setting):
    monkeypatch.setenv(variable, setting)
    with pytest.raises(UserError, match=f"{variable} must be on, off or auto, not '{setting}'"):
        switch()


def test_logits_are_the_float32_sums_of_rounded_operands():
    rng = np.random.default_rng(0)
    layer = TiedEmbedding(300, 48)
    layer.build((None, None))
    embeddings = rng.normal(size=(300, 48)).astype("float32")
    layer.embeddings.assign(embeddings)
    vectors = rng.normal(size=(2, 3, 48)).astype("float32")

    exact = ops.convert_to_numpy(layer(vectors, reverse=True))
    fast = ops.convert_to_numpy(layer(vectors, reverse=True, bfloat16=True))
    reference = np.einsum("bte,ve->btv", _rounded(vectors).astype(np.float64), _rounded(embeddings).astype(np.float64))

    assert fast.dtype == np.float32 and fast.shape == (2, 3, 300)
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(exact, vectors @ embeddings.T, rtol=1e-5, atol=1e-4)
    assert np.abs(fast - exact).max() > 1e-3  # the operands were rounded: not the float32 product


def test_the_step_products_are_the_float32_sums_of_rounded_operands():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 20)).astype("float32")
    h, c = (rng.normal(size=(3, 6)).astype("float32") for _ in range(2))
    layer = keras.layers.Dense(24, activation="tanh")
    layer.build((None, 20))
    cell = ProjectedLSTMCell(6)
    cell.build((None, 24))

    fast = ops.convert_to_numpy(dense(layer, x, bfloat16=True))
    kernel, bias = (ops.convert_to_numpy(w) for w in (layer.kernel, layer.bias))
    np.testing.assert_allclose(fast, np.tanh(_rounded(x) @ _rounded(kernel) + bias), rtol=1e-5, atol=1e-5)
    assert np.abs(fast - ops.convert_to_numpy(layer(x))).max() > 1e-4
    np.testing.assert_array_equal(ops.convert_to_numpy(dense(layer, x)), ops.convert_to_numpy(layer(x)))

    projected = rng.normal(size=(3, 24)).astype("float32")
    fast_h, (_, fast_c) = cell(projected, [h, c], bfloat16=True)
    recurrent, cell_bias = (ops.convert_to_numpy(w) for w in (cell.recurrent_kernel, cell.bias))
    i, f, g, o = np.split(projected + _rounded(h) @ _rounded(recurrent) + cell_bias, 4, axis=-1)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    reference_c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(ops.convert_to_numpy(fast_c), reference_c, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(fast_h), sigmoid(o) * np.tanh(reference_c), atol=1e-5)
    exact_h, _ = cell(projected, [h, c])
    assert np.abs(ops.convert_to_numpy(fast_h) - ops.convert_to_numpy(exact_h)).max() > 1e-5


def test_only_the_decoding_step_uses_them(monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_BF16_DECODING", "on")
    keras.utils.set_random_seed(0)
    config = Config(latent_dim=16, embedding_dim=8, vocab_size=40)
    model = build_model(config, 40, 40)
    parts = inference_parts(model, config)
    assert parts.bfloat16_products
    embedding = model.get_layer("target_embedding")
    assert embedding.name == "target_embedding" and isinstance(embedding, TiedEmbedding)

    source = np.array([[5, 6, 7, 8]], dtype="int32")
    previous = ops.convert_to_tensor(np.array([[1]], dtype="int32"))
    training_logits = ops.convert_to_numpy(model([source, np.array([[1]], dtype="int32")]))[0, 0]
    context, state = parts.split(list(parts.encoder(source)))
    step_logits = ops.convert_to_numpy(parts.step([previous, *context, *state])[0])[0]

    # the same network, the step's logits from rounded operands
    np.testing.assert_allclose(step_logits, training_logits, rtol=0.05, atol=0.05)
    assert not np.array_equal(step_logits, training_logits)
    monkeypatch.setenv("SEQ2SEQ_BF16_DECODING", "off")
    exact_step = inference_parts(model, config)
    assert not exact_step.bfloat16_products
    exact_logits, _, *exact_state = exact_step.step([previous, *context, *state])
    np.testing.assert_allclose(ops.convert_to_numpy(exact_logits)[0], training_logits, rtol=1e-5, atol=1e-5)
    # the state too (the gates and the attention output): it does not pass through the logits
    _, _, *fast_state = parts.step([previous, *context, *state])
    for fast, exact in zip(fast_state, exact_state, strict=True):
        fast, exact = ops.convert_to_numpy(fast), ops.convert_to_numpy(exact)
        np.testing.assert_allclose(fast, exact, atol=0.05)
        assert not np.array_equal(fast, exact)


def test_an_untied_output_layer_keeps_float32(monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_BF16_DECODING", "on")
    config = Config(latent_dim=16, embedding_dim=8, vocab_size=40, tie_embeddings=False)
    assert not inference_parts(build_model(config, 40, 40), config).bfloat16_products


def test_the_training_product_has_float32_gradients():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 24)).astype("float32")
    y = rng.normal(size=(24, 50)).astype("float32")
    g = rng.normal(size=(2, 3, 50)).astype("float32")  # the loss's gradient with respect to the logits

    def loss(x, y):
        return jnp.sum(g * backend.matmul_bfloat16_forward(x, y))

    forward = np.asarray(backend.matmul_bfloat16_forward(x, y))
    dx, dy = jax.grad(loss, argnums=(0, 1))(x, y)

    reference = np.einsum("btk,kn->btn", _rounded(x).astype(np.float64), _rounded(y).astype(np.float64))
    np.testing.assert_allclose(forward, reference, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dx), g @ y.T, rtol=1e-5, atol=1e-5)  # not rounded: float32
    np.testing.assert_allclose(np.asarray(dy), np.einsum("btk,btn->kn", x, g), rtol=1e-5, atol=1e-5)


def test_only_training_mode_uses_the_training_switch(monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_BF16_TRAINING", "on")
    keras.utils.set_random_seed(0)
    config = Config(latent_dim=16, embedding_dim=8, vocab_size=40, dropout=0.0)
    model = build_model(config, 40, 40)
    inputs = [np.array([[5, 6, 7, 8]], dtype="int32"), np.array([[1, 9, 10]], dtype="int32")]

    training = ops.convert_to_numpy(model(inputs, training=True))
    evaluation = ops.convert_to_numpy(model(inputs, training=False))  # evaluate's loss: exact
    monkeypatch.setenv("SEQ2SEQ_BF16_TRAINING", "off")
    exact = ops.convert_to_numpy(model(inputs, training=True))

    np.testing.assert_array_equal(evaluation, exact)
    np.testing.assert_allclose(training, exact, rtol=0.05, atol=0.05)
    assert not np.array_equal(training, exact)


def test_training_with_the_bfloat16_product_learns(monkeypatch, tmp_path):
    import csv

    from seq2seq.files import HISTORY_FILE
    from seq2seq.training import train

    settings = dict(data="builtin:reverse", num_samples=600, epochs=4, latent_dim=32, embedding_dim=32, seed=3)
    settings |= dict(level="char", dev_bleu_sentences=0, stop_metric="loss", learning_rate=5e-3, dropout=0.0)
    runs = {}
    for setting in ("on", "off"):
        monkeypatch.setenv("SEQ2SEQ_BF16_TRAINING", setting)
        train(Config(**settings), tmp_path / setting, verbose=0)
        with (tmp_path / setting / HISTORY_FILE).open() as f:
            runs[setting] = [float(row["loss"]) for row in csv.DictReader(f)]
    on, off = runs["on"], runs["off"]
    assert on[-1] < 0.9 * on[0], on  # it learns
    assert on != off  # through the rounded product
    assert on[-1] == pytest.approx(off[-1], rel=0.05)  # as well as float32 does
