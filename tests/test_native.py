"""The C++ LSTM loop (native.py, csrc/lstm_loop.cc) computes what XLA's loop computes, on
whatever CPU runs the suite, and in the x86-64 builds for lesser CPUs (AVX2, SSE2) too."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from seq2seq import native, recurrence

from .conftest import count_calls

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the C++ loop is called from JAX")


def _require_native():
    """Skips where the C++ loop is not meant to run (turned off, no compiler, JAX not on the
    CPU); any CPU builds it, and a build that fails is a failure."""
    reason = native.unavailable_reason()
    if reason is not None and "failed" not in reason:
        pytest.skip(f"the C++ loop is not available here: {reason}")
    assert reason is None


def _inputs(batch: int, steps: int, units: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, 4 * units)).astype("float32")
    kernel = (rng.normal(size=(units, 4 * units)) / np.sqrt(units)).astype("float32")
    bias = rng.normal(scale=0.1, size=4 * units).astype("float32")
    h0, c0 = (rng.normal(scale=0.5, size=(batch, units)).astype("float32") for _ in range(2))
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    mask = (np.arange(steps)[None] < lengths[:, None]).astype("float32")
    if batch > 2:
        mask[2] = 0.0  # a row with no real step at all keeps its initial state
    weights = [rng.normal(size=s).astype("float32") for s in [(batch, steps, units), (batch, units), (batch, units)]]
    return (x, kernel, bias, h0, c0), mask, weights


@pytest.fixture
def native_calls(monkeypatch) -> dict:
    """How many times the C++ loops (training's forward and backward, inference) are traced."""
    calls = {"forward": 0, "backward": 0, "infer": 0}
    for name, key in [("_native_forward", "forward"), ("_native_backward", "backward"), ("_native_infer", "infer")]:
        original = getattr(recurrence, name)

        def counted(*args, _original=original, _key=key):
            calls[_key] += 1
            return _original(*args)

        monkeypatch.setattr(recurrence, name, counted)
    return calls


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("batch", "steps", "units"), [(13, 7, 32), (1, 5, 64), (70, 3, 32), (2, 1, 96)])
def test_native_loop_matches_xla_loop_in_values_and_gradients(native_calls, batch, steps, units, reverse):
    """Odd batches (threads' halves of different sizes, a block of fewer than 8 rows),
    padding, a fully masked row, both directions: outputs, final states and the gradients
    of all five inputs agree with XLA's loop to float32 rounding."""
    _require_native()
    import jax

    arguments, mask, weights = _inputs(batch, steps, units)

    def run(native_allowed: bool):
        def outputs(*args):
            return recurrence._lstm(*args, mask, reverse, native_allowed)

        values, pullback = jax.vjp(outputs, *arguments)  # the training path: the custom VJP's forward rule
        return values, pullback(tuple(weights))

    (native_values, native_grads), (xla_values, xla_grads) = run(True), run(False)
    assert native_calls == {"forward": 1, "backward": 1, "infer": 0}, "the C++ loop must have run"
    for name, expected, actual in zip(["outputs", "h", "c"], xla_values, native_values, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=name)
    for name, expected, actual in zip(["x", "U", "b", "h0", "c0"], xla_grads, native_grads, strict=True):
        scale = float(np.max(np.abs(expected)))
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_training_and_inference_each_run_their_native_loop(native_calls):
    """A model's training step runs the C++ training loops (units a multiple of 32); its
    predictions (inference: encoding and decoding steps) the C++ inference loop."""
    _require_native()
    from seq2seq.layers import ProjectedLSTM

    inputs = keras.Input((None, 4 * 32))
    model = keras.Model(inputs, ProjectedLSTM(32, return_sequences=True)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(4, 6, 128)).astype("float32")
    model.predict(x, verbose=0)
    assert native_calls == {"forward": 0, "backward": 0, "infer": 1}
    model.fit(x, np.zeros((4, 6, 32), "float32"), epochs=1, verbose=0)
    assert native_calls["forward"] >= 1 and native_calls["backward"] >= 1


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    ("batch", "steps", "units"),
    [(13, 7, 32), (1, 5, 64), (70, 3, 32), (2, 1, 96), (9, 4, 32), (15, 3, 64), (18, 2, 32)],
)
def test_native_inference_matches_xla_loop(native_calls, batch, steps, units, reverse):
    """The inference loop (blocks of 6 rows and every smaller rest, padding, a fully
    masked row, both directions) gives XLA's outputs and final states."""
    _require_native()
    arguments, mask, _ = _inputs(batch, steps, units, seed=batch)
    native_values = recurrence._lstm(*arguments, mask, reverse, True)
    xla_values = recurrence._lstm(*arguments, mask, reverse, False)
    assert native_calls == {"forward": 0, "backward": 0, "infer": 1}
    for name, expected, actual in zip(["outputs", "h", "c"], xla_values, native_values, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_units_not_multiple_of_32_and_distributions_use_xlas_loop(native_calls):
    """The C++ product works on 32 columns at a time, and its call has no sharding rule."""
    _require_native()
    from seq2seq.layers import ProjectedLSTM

    for units in (8, 48):
        inputs = keras.Input((None, 4 * units))
        model = keras.Model(inputs, ProjectedLSTM(units)(inputs))
        model.compile(optimizer="sgd", loss="mse")
        model.fit(np.ones((2, 3, 4 * units), "float32"), np.zeros((2, units), "float32"), epochs=1, verbose=0)
    assert native_calls == {"forward": 0, "backward": 0, "infer": 0}
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1]))
    try:
        inputs = keras.Input((None, 128))
        model = keras.Model(inputs, ProjectedLSTM(32)(inputs))
        model.compile(optimizer="sgd", loss="mse")
        model.fit(np.ones((2, 3, 128), "float32"), np.zeros((2, 32), "float32"), epochs=1, verbose=0)
    finally:
        keras.distribution.set_distribution(None)
    assert native_calls == {"forward": 0, "backward": 0, "infer": 0}


def test_a_failed_build_falls_back_to_xla_with_a_warning(monkeypatch, tmp_path):
    """No usable compiler: the reason is given once, as a warning, and XLA's loop runs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no cached build to fall back on
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    monkeypatch.delenv(native.SWITCH, raising=False)
    native.unavailable_reason.cache_clear()
    try:
        with pytest.warns(UserWarning, match="LSTM loops run in XLA.*building lstm_loop.cc with false failed"):
            assert not native.available()
        assert "failed" in native.unavailable_reason()
        assert not native.enabled("train") and not native.enabled("infer")
    finally:
        native.unavailable_reason.cache_clear()


def test_the_switch_turns_the_native_loop_off(monkeypatch):
    monkeypatch.setenv(native.SWITCH, "off")
    native.unavailable_reason.cache_clear()
    try:
        assert native.unavailable_reason() == f"turned off ({native.SWITCH}=off)"
        assert not native.enabled("train") and not native.enabled("infer")
    finally:
        native.unavailable_reason.cache_clear()


@pytest.mark.parametrize("switch", [native.TRAIN_SWITCH, native.INFER_SWITCH])
def test_each_kernel_has_its_own_switch(native_calls, monkeypatch, switch):
    """SEQ2SEQ_NATIVE_LSTM_TRAIN=off gives training XLA's loops and leaves inference's C++
    loop on; SEQ2SEQ_NATIVE_LSTM_INFER=off the other way round. Read when a loop is traced."""
    _require_native()
    import jax

    monkeypatch.setenv(switch, "off")
    arguments, mask, weights = _inputs(3, 2, 32)
    recurrence._lstm(*arguments, mask, False, True)  # inference
    _, pullback = jax.vjp(lambda *a: recurrence._lstm(*a, mask, False, True), *arguments)
    pullback(tuple(weights))  # training
    trained = switch != native.TRAIN_SWITCH
    assert native_calls == {"forward": int(trained), "backward": int(trained), "infer": int(not trained)}
    assert native.enabled("train") == trained and native.enabled("infer") == (not trained)


def _expected_vector_floats() -> int:
    """What the library built for this CPU vectorises with (native.py's target flags)."""
    if os.environ.get(native.MARCH):
        pytest.skip(f"{native.MARCH} chooses the build")
    flags = native.cpu_flags()
    if platform.machine().lower() in ("x86_64", "amd64"):
        return 16 if "avx512f" in flags else 8 if "avx" in flags else 4
    return 4  # NEON's 128-bit vectors (and the 16-byte fallback elsewhere)


def test_the_library_is_built_for_this_cpu():
    """-march=native / -mcpu=native: the widest vectors this CPU has."""
    _require_native()
    assert native.vector_floats() == _expected_vector_floats()
    arm = platform.machine().lower().startswith(("aarch64", "arm"))
    assert native.target_flags() == (["-mcpu=native"] if arm else ["-march=native"])


# Run in a fresh process (the FFI targets are registered once per process) for another build:
# training's loops (values and gradients) and the inference loop against XLA's, with odd
# batches (remainder blocks of every blocking), two panels, both directions and a NaN.
_OTHER_BUILD = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from seq2seq import native, recurrence

    assert native.unavailable_reason() is None, native.unavailable_reason()
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, steps, units, reverse in [(13, 3, 64, False), (7, 2, 32, True)]:
        x = rng.normal(size=(batch, steps, 4 * units)).astype("float32")
        kernel = (rng.normal(size=(units, 4 * units)) / np.sqrt(units)).astype("float32")
        bias = rng.normal(scale=0.1, size=4 * units).astype("float32")
        h0, c0 = (rng.normal(scale=0.5, size=(batch, units)).astype("float32") for _ in range(2))
        mask = np.ones((batch, steps), "float32")
        mask[1, -1:] = 0.0
        mask[2] = 0.0
        arguments = (x, kernel, bias, h0, c0)
        shapes = [(batch, steps, units), (batch, units), (batch, units)]
        weights = tuple(rng.normal(size=s).astype("float32") for s in shapes)  # cotangents

        def train(allowed):
            values, pullback = jax.vjp(lambda *a: recurrence._lstm(*a, mask, reverse, allowed), *arguments)
            return [*values, *pullback(weights)]

        def infer(allowed):
            return recurrence._lstm(*arguments, mask, reverse, allowed)

        for run in (train, infer):
            for got, want in zip(run(True), run(False)):
                got, want = np.asarray(got), np.asarray(want)
                worst = max(worst, float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want))))))
    x[0, 1, 5] = np.nan
    nan = [np.isnan(np.asarray(o)) for o in recurrence._lstm(x, kernel, bias, h0, c0, mask, False, True)]
    xla = [np.isnan(np.asarray(o)) for o in recurrence._lstm(x, kernel, bias, h0, c0, mask, False, False)]
    json.dump({"floats": native.vector_floats(), "worst": worst,
               "nans": all(np.array_equal(a, b) for a, b in zip(nan, xla)) and bool(nan[0].any())}, sys.stdout)
    """
)
_OTHER_TARGETS = {  # flags -> the vector width in floats they give
    "x86_64": [("-march=x86-64-v3", 8), ("-march=x86-64", 4)],  # AVX2 + FMA, SSE2
    "aarch64": [("-march=armv8-a", 4)],  # NEON without the CPU's extras
}.get(platform.machine().lower(), [])


@pytest.mark.parametrize(("march", "floats"), _OTHER_TARGETS)
def test_builds_for_lesser_cpus_match_xlas_loop(march, floats):
    """SEQ2SEQ_NATIVE_MARCH builds for another target: the AVX2 and SSE2 code paths (their
    own vector widths and blocking) run, and agree with XLA, on a machine with more."""
    _require_native()
    environment = {**os.environ, native.MARCH: march, "JAX_PLATFORMS": "cpu"}
    for switch in native.KERNEL_SWITCHES.values():
        environment.pop(switch, None)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_BUILD], env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["floats"] == floats
    assert result["worst"] < 1e-4
    assert result["nans"]


def _train_default_model(seed: int) -> tuple[float, list]:
    """A few steps of the default architecture (bidirectional encoder, so two LSTMs that
    XLA may run at once, attention, two layers) with 32 units per direction."""
    from seq2seq.config import Config
    from seq2seq.model import build_model

    keras.utils.set_random_seed(seed)
    config = Config(latent_dim=64, embedding_dim=16, layers=2)
    model = build_model(config, 20, 15)
    rng = np.random.default_rng(seed)
    source = rng.integers(1, 20, size=(16, 9)).astype("int32")
    target = rng.integers(1, 15, size=(16, 7)).astype("int32")
    source[:5, 6:] = 0  # padding
    target[3:9, 4:] = 0
    model.compile(optimizer="rmsprop", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit([source, target[:, :-1]], target[:, 1:], batch_size=8, epochs=2, verbose=0, shuffle=False)
    return history.history["loss"][-1], [w.numpy() if hasattr(w, "numpy") else w for w in model.get_weights()]


def test_the_default_model_trains_the_same_with_either_loop(native_calls, monkeypatch):
    _require_native()
    native_loss, native_weights = _train_default_model(seed=5)
    # traced once per direction (the second layer's LSTMs have the same shapes: jit reuses the trace)
    trained = {"forward": 2, "backward": 2}
    assert {key: native_calls[key] for key in trained} == trained
    import jax

    monkeypatch.setattr(native, "available", lambda: False)
    jax.clear_caches()  # recurrence.lstm is jitted: without this the same traces would run again
    xla_traced = count_calls(monkeypatch, recurrence, "_xla_backward")
    xla_loss, xla_weights = _train_default_model(seed=5)
    assert xla_traced and {key: native_calls[key] for key in trained} == trained, "the second run must be XLA's loop"
    np.testing.assert_allclose(native_loss, xla_loss, rtol=1e-4)
    for expected, actual in zip(xla_weights, native_weights, strict=True):
        np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_a_forward_with_inputs_other_than_float32_takes_xlas_loop(native_calls):
    """The C++ loop reads float32 only: a bfloat16 bias beside float32 inputs failed at
    run time ("Wrong buffer dtype") before the check covered every input."""
    _require_native()
    import jax
    import jax.numpy as jnp

    (x, kernel, bias, h0, c0), mask, _ = _inputs(4, 3, 32)

    def total(x, bias):
        return recurrence._lstm(x, kernel, bias, h0, c0, mask, False, True)[0].sum()

    grads = jax.grad(total, argnums=(0, 1))(x, jnp.asarray(bias, "bfloat16"))
    # the forward loop reads the bias; the backward one does not (its inputs are all float32
    # here, and both loops save the same residuals, so either backward may follow)
    assert native_calls["forward"] == 0
    assert np.all(np.isfinite(np.asarray(grads[0])))


def test_inference_lays_u_out_once_per_loop_not_per_step():
    """In a decoding loop, U's layout for the inference loop (a C++ call XLA can hoist;
    XLA left a transpose inside the loop, about 40 us of a 390-us step) happens before
    the loop, and is the layout `packed_units` documents."""
    _require_native()
    import jax

    (x, kernel, bias, h0, c0), mask, _ = _inputs(4, 1, 32)
    units = kernel.shape[0]
    unit_panels = kernel.reshape(units, 4, units // 16, 16).transpose(2, 0, 1, 3).reshape(units // 16, units, 64)
    np.testing.assert_array_equal(recurrence.packed_units(kernel), unit_panels)

    def decode(x, kernel, bias, h0, c0, mask):
        def step(_, state):
            return recurrence._lstm(x, kernel, bias, *state, mask, False, True)[1:]

        return jax.lax.fori_loop(0, 5, step, (h0, c0))

    compiled = jax.jit(decode).lower(x, kernel, bias, h0, c0, mask).compile().as_text()
    computations = compiled.split("\n\n")
    loop_body = [c for c in computations if native.INFER in c]
    assert len(loop_body) == 1 and native.PACK_UNITS not in loop_body[0]
    assert any(native.PACK_UNITS in c for c in computations)


def test_native_inference_keeps_nans():
    """A NaN input or state gives NaN outputs, as XLA's loop does (the vectorised tanh's
    clamp turned NaN into -7.9, so diverged weights decoded to finite nonsense)."""
    _require_native()
    (x, kernel, bias, h0, c0), mask, _ = _inputs(3, 4, 32)
    x[0, 1, 5] = np.nan
    c0[1, :] = np.nan
    native_values = recurrence._lstm(x, kernel, bias, h0, c0, mask, False, True)
    xla_values = recurrence._lstm(x, kernel, bias, h0, c0, mask, False, False)
    for expected, actual in zip(xla_values, native_values, strict=True):
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    assert np.isnan(native_values[0]).any()
