"""Which Keras backend runs (JAX or TensorFlow), and the one place that reaches into
Keras's private API (its optimizer's, trainer's and variables' internals)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np

from .errors import UserError


def name() -> str:
    return keras.backend.backend()


@contextmanager
def tensorflow_not_imported() -> Iterator[None]:
    """Keep Keras from importing TensorFlow on other backends.

    When saving a model or setting seeds, Keras asks whether TensorFlow is available (to
    check `isinstance(x, tf.TensorShape)` and the like), which imports it whenever it is
    installed: about 400 MB of memory and seconds of start-up for nothing. If TensorFlow
    has not been imported, no object can be a TensorFlow object, so inside this block
    Keras is told it is unavailable. Keras's own state is restored on exit.
    """
    if name() == "tensorflow" or "tensorflow" in sys.modules:
        yield
        return
    try:
        from keras.src.utils.module_utils import tensorflow as lazy_tensorflow
    except ImportError:  # Keras reorganised its internals: nothing to avoid, just proceed
        yield
        return
    previous = lazy_tensorflow._available
    lazy_tensorflow._available = False
    try:
        yield
    finally:
        lazy_tensorflow._available = previous


def sample_categorical(logits, seed):
    """One token id per row of `logits` (B, V), drawn from softmax(logits), reproducibly
    from `seed`: an int32 tensor of shape (2,), which may be computed inside a compiled
    loop (Keras's own random functions take only Python ints or a SeedGenerator there)."""
    if name() == "jax":
        import jax

        key = jax.random.wrap_key_data(seed.astype("uint32"), impl="threefry2x32")
        return jax.random.categorical(key, logits, axis=-1).astype("int32")
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.cast(tf.random.stateless_categorical(logits, 1, seed=tf.cast(seed, "int32"))[:, 0], "int32")
    raise NotImplementedError(f"sampling is not implemented for the {name()} backend")


BFLOAT16_MATRIX_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # /proc/cpuinfo names


def _bfloat16_switch(variable: str) -> bool:
    """An on|off|auto switch for a bfloat16 product (only JAX runs them). auto (unset):
    on where it was measured to pay: a CPU with bfloat16 matrix instructions, AMX (Intel
    Xeon, the (B, E) @ (E, V) product about 4x faster than float32) or AVX512-BF16 (AMD
    Zen 5: greedy decoding 1.8x, training 1.1x; docs/performance.md)."""
    setting = os.environ.get(variable, "auto").strip().lower()
    if setting not in ("on", "off", "auto"):
        raise UserError(f"{variable} must be on, off or auto, not {setting!r}")
    if name() != "jax" or setting == "off":
        return False
    if setting == "on":
        return True
    import jax

    from .native import cpu_flags

    return jax.default_backend() == "cpu" and bool(BFLOAT16_MATRIX_FLAGS & cpu_flags())


def bfloat16_decoding() -> bool:
    """Whether the decoding step's products (with tied embeddings: the projections, the
    attention decoder's gates and the logits) take bfloat16 operands, summed in float32.
    SEQ2SEQ_BF16_DECODING=on|off|auto (_bfloat16_switch)."""
    return _bfloat16_switch("SEQ2SEQ_BF16_DECODING")


def bfloat16_training_logits() -> bool:
    """Whether training computes the tied output layer's logits from bfloat16 operands
    (float32 sums; the backward pass stays float32: matmul_bfloat16_forward; evaluation's
    losses stay float32). SEQ2SEQ_BF16_TRAINING=on|off|auto (_bfloat16_switch)."""
    return _bfloat16_switch("SEQ2SEQ_BF16_TRAINING")


def matmul_bfloat16(x, y):
    """x (..., K) @ y (K, N) from bfloat16 operands with float32 sums and result (JAX)."""
    import jax.numpy as jnp

    return jnp.matmul(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


def matmul_bfloat16_forward(x, y):
    """matmul_bfloat16 whose gradients are the float32 ones of x @ y: for the output
    (..., N) gradient g, dx = g @ y^T (..., K) and dy = x^T g (K, N) summed over the
    leading axes. (JAX's own gradient of the bfloat16 product measured slower than float32.)"""
    return _matmul_bfloat16_forward()(x, y)


@functools.cache
def _matmul_bfloat16_forward():
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def product(x, y):
        return matmul_bfloat16(x, y)

    def forward(x, y):
        return matmul_bfloat16(x, y), (x, y)

    def backward(residuals, g):
        x, y = residuals
        leading = tuple(range(x.ndim - 1))
        return jnp.matmul(g, y.T), jnp.tensordot(x, g, axes=(leading, leading))

    product.defvjp(forward, backward)
    return product


def use_all_devices():
    """Data parallelism over every local device (and, on JAX, every host started with
    `jax.distributed.initialize`): each batch is split across devices, gradients are
    averaged. Returns (a context to build and train the model in, the number of devices),
    whose batches must divide evenly."""
    if name() == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices)
    if name() == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return strategy.scope(), strategy.num_replicas_in_sync
    raise NotImplementedError(f"data parallelism is not implemented for the {name()} backend")


def enable_compilation_cache() -> None:
    """Keep JAX's compiled programs on disk, so a second run with the same shapes starts
    in seconds instead of compiling each (several seconds per batch shape). The cache is
    ~/.cache/seq2seq/jax (at most 1 GB, least recently used dropped), or the directory in
    SEQ2SEQ_JAX_CACHE; SEQ2SEQ_JAX_CACHE=off turns it off."""
    if name() != "jax":
        return
    import jax

    setting = os.environ.get("SEQ2SEQ_JAX_CACHE", "")
    if setting.lower() == "off" or jax.config.jax_compilation_cache_dir:
        return
    directory = Path(setting) if setting else Path.home() / ".cache" / "seq2seq" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_compilation_cache_max_size", 2**30)


@contextmanager
def _initializers_deferred(defer) -> Iterator[list]:
    """Inside this block, a new variable whose initializer `defer(initializer)` accepts
    starts as zeros made on the host (no program compiled) and is listed, with its
    initializer, in the list the block yields. It patches Keras's Variable class for the
    block: no other thread may make variables meanwhile."""
    from keras.src.backend.common.variables import Variable

    make = Variable._initialize_with_initializer
    deferred: list = []

    def zeros_for_now(variable, initializer) -> None:
        if not defer(initializer):
            return make(variable, initializer)
        variable._initialize(variable._convert_to_tensor(np.zeros(variable.shape, dtype=variable.dtype)))
        deferred.append((variable, initializer))

    Variable._initialize_with_initializer = zeros_for_now
    try:
        yield deferred
    finally:
        Variable._initialize_with_initializer = make


def load_model(path: Path, compile: bool = False) -> keras.Model:
    """The Keras model saved at `path`, read with `safe_mode` (no code runs on load).

    Every weight is read from the file, so the weights' initializers are not run: on JAX
    each one (a random draw, a QR decomposition) compiles its own program per weight shape,
    seconds of start-up for values that are thrown away. Weights made by Keras's
    initializer classes start as zeros instead; anything else (a dropout layer's seed
    state) is made as usual."""
    with _initializers_deferred(lambda initializer: isinstance(initializer, keras.initializers.Initializer)):
        return keras.saving.load_model(path, compile=compile, safe_mode=True)


@contextmanager
def initialized_together() -> Iterator[None]:
    """Variables made inside this block are initialized when it ends, all in one compiled
    program (JAX; elsewhere as usual). Run one by one, each initializer compiles its own
    program per weight shape: seconds at every model build. Each initializer keeps its own
    seed, so the values are the same draws."""
    if name() != "jax":
        yield
        return
    import jax

    with _initializers_deferred(callable) as deferred:
        yield
    if deferred:
        draw = jax.jit(lambda: [initializer(v.shape, dtype=v.dtype) for v, initializer in deferred])
        for (variable, _), value in zip(deferred, draw(), strict=True):
            variable.assign(value)


def release_freed_memory() -> None:
    """Hand the heap memory glibc holds free back to the OS (`malloc_trim`). Compiling a
    batch shape frees a few hundred MB in small pieces that glibc would otherwise keep,
    so resident memory ratchets up shape by shape. Does nothing without glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


# on import: training, decoding and the API import this module, so what they compile is cached
enable_compilation_cache()


def rmsprop_velocity(optimizer, variable):
    """The RMSprop velocity Keras keeps for `variable` (private: `_velocities`)."""
    return optimizer._velocities[optimizer._get_variable_index(variable)]


def update_metrics_variables(model, metrics_variables, loss, x, y, y_pred, sample_weight):
    """Keras's JAX trainer's metric update, for a train step written outside Keras
    (private: `_update_metrics_variables`) -> (logs, metrics_variables)."""
    return model._update_metrics_variables(metrics_variables, loss, x, y, y_pred, sample_weight)
