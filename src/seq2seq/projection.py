"""The output layer: decoder states (B, T, H) -> logits (B, T, V), a Dense layer whose
backward pass on JAX runs its two products one after the other.

At word level (V = 7,150) the output layer is most of a training step's arithmetic: the
logits x @ W, then dx = d @ W^T and dW = x^T @ d from the logits' gradient d (B*T, V).
XLA, left to itself, first copied d transposed (a pass over 10 MB) to form dW, and ran
the two backward products at once, each spread over both cores: in a profile of a word
step they took 8.7 ms together against 5.2 ms one after the other. Here dW waits for dx
(an optimisation barrier between them) and reads x^T (B*T, H), laid out before it, so d
is read as it is. Same values as Keras's Dense (tests/test_projection.py).
"""

from __future__ import annotations

import functools

import keras
from keras import ops


@functools.cache
def ordered_projection():
    """(x (N, H), kernel (H, V), bias (V,)) -> x @ kernel + bias, differentiable, with
    the backward pass described above."""
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
        dx, d, x_t = lax.optimization_barrier((dx, d, x.T))
        return dx, x_t @ d, d.sum(axis=0)

    project.defvjp(forward, backward)
    return project


@keras.saving.register_keras_serializable(package="seq2seq")
class OutputProjection(keras.layers.Dense):
    """keras.layers.Dense(V) over the last axis; on JAX its gradient comes from
    `ordered_projection`. Other backends run Dense's own call."""

    def call(self, inputs, training=None):
        plain = self.activation is keras.activations.linear and self.use_bias and not self.lora_enabled
        if keras.backend.backend() != "jax" or not plain or self.quantization_mode:
            return super().call(inputs, training=training)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = ops.cast(self.bias, self.compute_dtype)
        rows = ops.reshape(inputs, (-1, ops.shape(inputs)[-1]))
        logits = ordered_projection()(rows, kernel, bias)
        return ops.reshape(logits, (*ops.shape(inputs)[:-1], self.units))
