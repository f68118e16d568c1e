"""The LSTM, split into the part that can run over all timesteps at once and the part that cannot.

A Keras `LSTM(H)` computes, at every timestep t, for input vector x_t (size D):

    z_t = x_t @ W + h_{t-1} @ U + b          W: (D, 4H)  U: (H, 4H)  b: (4H,)
    i, f, g, o = split(z_t, 4)               (Keras's gate order)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)

x_t @ W does not depend on the previous step, so it is computed for every timestep before
the loop: one large matrix product, or, when x_t is a one-hot vector, a row lookup, since
one_hot(id) @ W == W[id]. The recurrent loop (`ProjectedLSTM`: a `keras.layers.RNN` over
`ProjectedLSTMCell`, whose loop on JAX is recurrence.py's) then only does h @ U.
With the same weights, the result equals `keras.layers.LSTM` on one-hot vectors
(tests/test_layers.py proves it).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping

import keras
from keras import layers, ops

from . import backend
from .vocab import PAD_ID


@keras.saving.register_keras_serializable(package="seq2seq")
class OneHot(layers.Layer):
    """Token ids (B, T) -> one-hot vectors (B, T, depth): the textbook's input, kept as the
    reference form (the model uses the equivalent `TokenProjection`) and for pictures."""

    def __init__(self, depth: int, mask_padding: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.depth = depth
        self.mask_padding = mask_padding

    def call(self, ids):
        return ops.one_hot(ids, self.depth, dtype=self.compute_dtype)

    def compute_mask(self, ids, mask=None):
        return ops.not_equal(ids, PAD_ID) if self.mask_padding else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.depth)

    def get_config(self) -> dict:
        return {**super().get_config(), "depth": self.depth, "mask_padding": self.mask_padding}


_LOOKUP_TAPS: contextvars.ContextVar[Mapping | None] = contextvars.ContextVar("lookup_taps", default=None)


@contextlib.contextmanager
def lookup_taps(taps: Mapping) -> Iterator[None]:
    """While tracing inside this block, the `TokenProjection` named k returns
    stop_gradient(kernel)[ids] + taps[k] (taps[k]: zeros of shape (B, T, units)), so the
    gradient of the loss reaches taps[k] (the lookup's output) instead of the kernel.
    row_sparse.py updates the kernel from it, row by row."""
    token = _LOOKUP_TAPS.set(taps)
    try:
        yield
    finally:
        _LOOKUP_TAPS.reset(token)


@keras.saving.register_keras_serializable(package="seq2seq")
class TokenProjection(layers.Layer):
    """one_hot(ids) @ kernel, computed as the row lookup kernel[ids].

    ids (B, T) -> (B, T, units). With `mask_padding`, <pad> positions are masked for the
    layers that follow (so an encoder's final state is the state after the last real token).
    """

    def __init__(self, vocab_size: int, units: int, mask_padding: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.units = units
        self.mask_padding = mask_padding

    def build(self, input_shape) -> None:
        # Initialised as Keras initialises an LSTM's input kernel.
        self.kernel = self.add_weight(shape=(self.vocab_size, self.units), initializer="glorot_uniform", name="kernel")

    def call(self, ids):
        tap = (_LOOKUP_TAPS.get() or {}).get(self.name)
        kernel = self.kernel.value if tap is None else ops.stop_gradient(self.kernel.value)
        if keras.backend.backend() == "jax":  # ids come from the vocabulary: skip the bounds check
            rows = kernel.at[ops.cast(ids, "int32")].get(mode="promise_in_bounds")
        else:
            rows = ops.take(kernel, ops.cast(ids, "int32"), axis=0)
        return rows if tap is None else rows + tap

    def compute_mask(self, ids, mask=None):
        return ops.not_equal(ids, PAD_ID) if self.mask_padding else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.units)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "units": self.units,
            "mask_padding": self.mask_padding,
        }


def product(x, kernel, bfloat16: bool = False):
    """x (..., K) @ kernel (K, N); from bfloat16 operands with float32 sums and result when
    `bfloat16` (the decoding step, on JAX: backend.bfloat16_decoding)."""
    if bfloat16:
        return backend.matmul_bfloat16(x, ops.convert_to_tensor(kernel))
    return ops.matmul(x, kernel)


def dense(layer: layers.Dense, x, bfloat16: bool = False):
    """layer(x); with `bfloat16`, its product from bfloat16 operands with float32 sums."""
    if not bfloat16:
        return layer(x)
    y = product(x, layer.kernel, bfloat16=True)
    return layer.activation(y + layer.bias if layer.use_bias else y)


class Bfloat16Dense(layers.Layer):
    """A trained Dense layer called through `dense(..., bfloat16=True)`: for the decoding
    step's functional model (built at inference, never saved). (..., K) -> (..., units)."""

    def __init__(self, layer: layers.Dense, **kwargs) -> None:
        super().__init__(name=f"{layer.name}_bfloat16", **kwargs)
        self.layer = layer

    def call(self, x):
        return dense(self.layer, x, bfloat16=True)

    def compute_output_spec(self, x):
        return keras.KerasTensor((*x.shape[:-1], self.layer.units), dtype="float32")


@keras.saving.register_keras_serializable(package="seq2seq")
class ProjectedLSTMCell(layers.Layer):
    """One LSTM step whose input was projected beforehand.

    inputs: x_t @ W, (B, 4H); states: [h, c], each (B, H) -> h_t (B, H), [h_t, c_t].
    Holds U and b, initialised as Keras's LSTMCell initialises them (orthogonal U, forget
    gate bias 1).
    """

    def __init__(self, units: int, **kwargs) -> None:
        drop_removed_matmul_dtype(kwargs)
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape) -> None:
        units = self.units
        self.recurrent_kernel = self.add_weight(
            shape=(units, 4 * units), initializer="orthogonal", name="recurrent_kernel"
        )

        def bias_initializer(shape, dtype=None):
            return ops.concatenate([ops.zeros((units,)), ops.ones((units,)), ops.zeros((2 * units,))])

        self.bias = self.add_weight(shape=(4 * units,), initializer=bias_initializer, name="bias")

    def call(self, inputs, states, training=False, bfloat16=False):
        h, c = states
        z = inputs + product(h, self.recurrent_kernel, bfloat16) + self.bias
        i, f, g, o = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
        return h, [h, c]

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


def drop_removed_matmul_dtype(kwargs: dict) -> None:
    """Model files written before the bfloat16 option was removed name `matmul_dtype`."""
    matmul_dtype = kwargs.pop("matmul_dtype", "float32")
    if matmul_dtype != "float32":
        raise ValueError(f"matmul_dtype {matmul_dtype!r} is no longer supported: retrain with float32")


@keras.saving.register_keras_serializable(package="seq2seq")
class ProjectedLSTM(layers.RNN):
    """`keras.layers.RNN(ProjectedLSTMCell(units))`, whose loop on the JAX backend is
    `recurrence.lstm` (same values; no transposes to time-major, a faster backward pass,
    compiled C++ where available); other backends run Keras's loop. Weights and saved files
    are those of the plain RNN."""

    def __init__(self, cell, **kwargs) -> None:
        drop_removed_matmul_dtype(kwargs)
        if isinstance(cell, int):
            cell = ProjectedLSTMCell(cell)
        super().__init__(cell, **kwargs)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if (
            keras.backend.backend() != "jax"
            or self.unroll
            or self.zero_output_for_mask  # recurrence.lstm repeats h at masked steps
            or not isinstance(self.cell, ProjectedLSTMCell)
        ):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        from .recurrence import lstm

        h0, c0 = initial_state
        real = ops.ones(ops.shape(sequences)[:2], sequences.dtype) if mask is None else ops.cast(mask, sequences.dtype)
        outputs, h, c = lstm(
            sequences,
            self.cell.recurrent_kernel.value,
            self.cell.bias.value,
            h0,
            c0,
            real,
            self.go_backwards,
            keras.distribution.distribution() is None,  # the C++ loop has no sharding rule
        )
        return h, outputs, [h, c]


@keras.saving.register_keras_serializable(package="seq2seq")
class TiedEmbedding(layers.Embedding):
    """An embedding whose matrix also serves as the output layer (weight tying).

    ids (B, T) -> vectors (B, T, E); with `reverse=True`, vectors (B, T, E) -> logits
    (B, T, V) = vectors @ embeddings^T, from bfloat16 operands with float32 sums when
    `bfloat16` is also True (decoding, on JAX: backend.bfloat16_decoding), or in training
    with backend.bfloat16_training_logits (float32 gradients).
    """

    def call(self, inputs, reverse=False, bfloat16=False, training=None):
        if reverse and bfloat16:
            return backend.matmul_bfloat16(inputs, ops.transpose(self.embeddings))
        if reverse and training and backend.bfloat16_training_logits():
            return backend.matmul_bfloat16_forward(inputs, ops.transpose(self.embeddings))
        if reverse:
            return ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, inputs.dtype)))
        return super().call(inputs)

    def compute_output_spec(self, inputs, reverse=False, bfloat16=False, training=None):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)


@keras.saving.register_keras_serializable(package="seq2seq")
class OutputProjection(layers.Dense):
    """A plain Dense: the class name model files of version 0.1 stored for the output layer."""
