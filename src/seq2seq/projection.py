"""The output layer: decoder states (B, T, H) -> logits (B, T, V), a Dense layer whose
backward pass on JAX runs its two products one after the other.

At word level (V = 7,150) the output layer is most of a training step's arithmetic: the
logits x @ W, then dx = d @ W^T and dW = x^T @ d from the logits' gradient d (B*T, V).
XLA schedules operations by their data dependencies alone. Left to itself, it copied d
transposed (a pass over 10 MB) to form dW, and ran dx, dW and then RMSprop's update of W
and the LSTMs' backward loops side by side, each spread over both cores, so each ran
slower: in a profile of a word step dx and dW took 8.7 ms together, against 5.2 ms for
the two timed alone. Here:

- dW reads x^T (B*T, H), laid out before it (an optimisation barrier keeps XLA from
  folding the transpose into the product), so d is read as it is;
- dW waits for dx, and the rest of the backward pass for dW: `after` passes an operand
  through a C++ call that also takes the result to wait for (native.py builds it; XLA
  cannot see through the call, so it keeps the order).

Same values as Keras's Dense (tests/test_projection.py).
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from . import native


def after(value, result):
    """`value`, as a C++ call's copy made once `result` exists: its users wait for `result`."""
    import jax

    shape = jax.ShapeDtypeStruct(value.shape, value.dtype)
    return jax.ffi.ffi_call(native.AFTER, shape, vmap_method="sequential")(value, result)


@functools.cache
def ordered_projection():
    """(x (N, H), kernel (H, V), bias (V,)) -> x @ kernel + bias (N, V), differentiable,
    with the backward pass described above."""
    import jax
    from jax import lax

    @jax.custom_vjp
    def project(x, kernel, bias):
        return x @ kernel + bias

    def forward(x, kernel, bias):
        return project(x, kernel, bias), (x, kernel)

    def backward(saved, d):
        x, kernel = saved
        dx = d @ kernel.T
        x_t = lax.optimization_barrier(x.T)
        ordered = native.usable()  # else XLA's order
        dkernel = (after(x_t, dx) if ordered else x_t) @ d
        return (after(dx, dkernel) if ordered else dx), dkernel, d.sum(axis=0)

    project.defvjp(forward, backward)
    return project


@keras.saving.register_keras_serializable(package="seq2seq")
class OutputProjection(keras.layers.Dense):
    """keras.layers.Dense(V) over the last axis; on JAX its gradient comes from
    `ordered_projection`. Other backends, and Dense's options (activation, LoRA,
    quantisation), run Dense's own call."""

    def call(self, inputs, training=None):
        plain = self.activation is keras.activations.linear and self.use_bias and not self.lora_enabled
        if keras.backend.backend() != "jax" or not plain or self.quantization_mode:
            return super().call(inputs, training=training)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = ops.cast(self.bias, self.compute_dtype)
        rows = ops.reshape(inputs, (-1, ops.shape(inputs)[-1]))
        logits = ordered_projection()(rows, kernel, bias)
        return ops.reshape(logits, (*ops.shape(inputs)[:-1], self.units))
