"""The LSTM's recurrent loop for the JAX backend, with its backward pass written by hand.

Keras's generic RNN loop (`lax.scan` over the cell, differentiated by JAX) spends much
of a training step outside the arithmetic: in a profile of a char-level step (B=64,
H=256), transposes of the whole (B, T, 4H) input to time-major and back, selects over
whole sequences and per-step copies of stacked residuals took about a third of the
time. Here:

- one `fori_loop` reads and writes (B, T, .) arrays in place at step t, so nothing is
  transposed;
- the forward pass keeps only what the backward pass needs: h, c and the four
  activated gates of every step;
- the backward loop does one product per step (dz @ U^T); dU = sum_t h_{t-1}^T dz_t is
  one product after the loop instead of an accumulation inside it.

Char-level training ran 1.3x (before huge pages, see launch.py) and 1.1x (with them) as
fast as with Keras's loop in the last two benchmark runs (bench/run.py measures both).

`lstm(x, U, b, h0, c0, mask, reverse)` computes exactly what `keras.layers.RNN` over
`layers.ProjectedLSTMCell` computes (tests/test_layers.py compares values and
gradients). x = inputs @ W: (B, T, 4H); mask: (B, T), 1.0 for real steps; a masked step
keeps the previous h and c and outputs h. With `reverse`, steps run from T-1 to 0 and
outputs are written in the order they are made (Keras's `go_backwards`).

Both loops (forward and backward) run as compiled C++ instead (native.py, on any CPU it
builds for) when it is available and can: float32 throughout, H a multiple of 32, and
`native` allowed by the caller (not under a data-parallel distribution, which the C++ call
has no sharding rule for). Inference (the forward pass alone: encoding, decoding steps)
has its own C++ loop, which keeps each step's gates in registers and stores nothing for a
backward pass. Each has its switch, read when the loop is traced: SEQ2SEQ_NATIVE_LSTM_TRAIN
=off (training's two loops), SEQ2SEQ_NATIVE_LSTM_INFER=off, SEQ2SEQ_NATIVE=off (both). XLA's
loops below are the reference the C++ ones are tested against, and the fallback.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from . import native as native_loop


def _gates(z):
    """Pre-activations (B, 4H) in Keras's order i, f, g, o -> activated gates (B, 4H)."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    return jnp.concatenate([jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)], axis=-1)


def _runs_native(kernel: str, arrays, units: int, allowed: bool) -> bool:
    """Whether the C++ loop `kernel` ("train" or "infer", see native.enabled) runs: it is
    switched on, and takes arrays of these dtypes (it reads float32 only) and units."""
    return (
        allowed
        and all(a.dtype == jnp.float32 for a in arrays)
        and units % native_loop.UNIT_MULTIPLE == 0
        and native_loop.enabled(kernel)
    )


def panels(matrix):
    """(k, n) -> (n / 32, k, 32): the layout the C++ loop's product reads B in, 32 columns
    at a time, contiguous. A transpose XLA does once per call, outside the loop."""
    k, n = matrix.shape
    width = native_loop.UNIT_MULTIPLE
    return matrix.reshape(k, n // width, width).transpose(1, 0, 2)


def _native_forward(x, recurrent_kernel, bias, h0, c0, mask, reverse):
    batch, steps, four = x.shape
    shapes = [(batch, steps, four // 4)] * 2 + [(batch, steps, four)] + [(batch, four // 4)] * 2
    outputs = [jax.ShapeDtypeStruct(s, x.dtype) for s in shapes]
    call = jax.ffi.ffi_call(native_loop.FORWARD, outputs, vmap_method="sequential")
    hs, cs, gates, h, c = call(x, panels(recurrent_kernel), bias, h0, c0, mask.astype(x.dtype), reverse=reverse)
    return (hs, h, c), (hs, cs, gates)


def packed_units(matrix):
    """(H, 4H) in gate blocks i, f, g, o -> (H / 16, H, 64): for each 16 units, their four
    gates' columns side by side, the layout the C++ inference loop reads U in. Done by a
    C++ call, which XLA hoists out of a decoding loop (it lays U out once per decoding call
    instead of at every step; a transpose it would not)."""
    units = matrix.shape[0]
    panels = jax.ShapeDtypeStruct((units // 16, units, 64), matrix.dtype)
    return jax.ffi.ffi_call(native_loop.PACK_UNITS, panels, vmap_method="sequential")(matrix)


def _native_infer(x, recurrent_kernel, bias, h0, c0, mask, reverse):
    """The C++ inference loop: -> (outputs (B, T, H), final h, final c)."""
    batch, steps, four = x.shape
    shapes = [(batch, steps, four // 4), (batch, four // 4), (batch, four // 4)]
    outputs = [jax.ShapeDtypeStruct(s, x.dtype) for s in shapes]
    call = jax.ffi.ffi_call(native_loop.INFER, outputs, vmap_method="sequential")
    return tuple(call(x, packed_units(recurrent_kernel), bias, h0, c0, mask.astype(x.dtype), reverse=reverse))


def _forward(x, recurrent_kernel, bias, h0, c0, mask, reverse, native):
    """-> (outputs (B, T, H), final h, final c), (hs, cs (B, T, H), gates (B, T, 4H)) for
    the backward pass."""
    units = h0.shape[-1]
    if _runs_native("train", (x, recurrent_kernel, bias, h0, c0), units, native):
        return _native_forward(x, recurrent_kernel, bias, h0, c0, mask, reverse)
    steps = x.shape[1]

    def step(t, loop):
        h, c, hs, cs, gates = loop
        k = steps - 1 - t if reverse else t  # the input step read at loop step t
        z = lax.dynamic_index_in_dim(x, k, axis=1, keepdims=False) + h @ recurrent_kernel + bias
        a = _gates(z)
        i, f, g, o = a[:, :units], a[:, units : 2 * units], a[:, 2 * units : 3 * units], a[:, 3 * units :]
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        m = lax.dynamic_index_in_dim(mask, k, axis=1, keepdims=True) > 0  # (B, 1)
        h, c = jnp.where(m, h_new, h), jnp.where(m, c_new, c)
        hs = lax.dynamic_update_index_in_dim(hs, h, t, axis=1)
        cs = lax.dynamic_update_index_in_dim(cs, c, t, axis=1)
        gates = lax.dynamic_update_index_in_dim(gates, a, t, axis=1)
        return h, c, hs, cs, gates

    batch = x.shape[0]
    empty = jnp.zeros((batch, steps, units), x.dtype)
    init = (h0, c0, empty, empty, jnp.zeros((batch, steps, 4 * units), x.dtype))
    h, c, hs, cs, gates = lax.fori_loop(0, steps, step, init)
    return (hs, h, c), (hs, cs, gates)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _lstm(x, recurrent_kernel, bias, h0, c0, mask, reverse=False, native=True):
    """x (B, T, 4H), U (H, 4H), b (4H,), h0 and c0 (B, H), mask (B, T) ->
    outputs (B, T, H) in processing order, final h (B, H), final c (B, H).
    `native`: the C++ loops may run (see the module's docstring). Undifferentiated (inference),
    the C++ inference loop (the training loop's forward pass, which stores what a backward
    pass needs, was slower there than XLA's loop; the inference loop is faster than both)."""
    if _runs_native("infer", (x, recurrent_kernel, bias, h0, c0), h0.shape[-1], native):
        return _native_infer(x, recurrent_kernel, bias, h0, c0, mask, reverse)
    return _forward(x, recurrent_kernel, bias, h0, c0, mask, reverse, False)[0]


def _lstm_forward(x, recurrent_kernel, bias, h0, c0, mask, reverse, native):
    outputs, (hs, cs, gates) = _forward(x, recurrent_kernel, bias, h0, c0, mask, reverse, native)
    return outputs, (recurrent_kernel, h0, c0, mask, hs, cs, gates)


def _native_backward(recurrent_kernel, c0, mask, cs, gates, d_outputs, d_h_final, d_c_final, reverse):
    """-> dz (B, T, 4H) in input order, dh0, dc0 (B, H)."""
    shapes = [gates.shape, c0.shape, c0.shape]
    outputs = [jax.ShapeDtypeStruct(s, gates.dtype) for s in shapes]
    call = jax.ffi.ffi_call(native_loop.BACKWARD, outputs, vmap_method="sequential")
    mask = mask.astype(gates.dtype)
    return call(d_outputs, d_h_final, d_c_final, panels(recurrent_kernel.T), gates, cs, c0, mask, reverse=reverse)


def _xla_backward(recurrent_kernel, c0, mask, cs, gates, d_outputs, d_h_final, d_c_final, reverse):
    """-> dz (B, T, 4H) in input order, dh0, dc0 (B, H)."""
    steps = cs.shape[1]
    units = c0.shape[-1]
    kernel_t = recurrent_kernel.T

    def step(n, loop):
        t = steps - 1 - n  # loop steps in reverse
        k = steps - 1 - t if reverse else t
        dh_next, dc_next, dz_all = loop
        dh = dh_next + lax.dynamic_index_in_dim(d_outputs, t, axis=1, keepdims=False)
        a = lax.dynamic_index_in_dim(gates, t, axis=1, keepdims=False)
        i, f, g, o = a[:, :units], a[:, units : 2 * units], a[:, 2 * units : 3 * units], a[:, 3 * units :]
        c = lax.dynamic_index_in_dim(cs, t, axis=1, keepdims=False)
        c_prev = jnp.where(t > 0, lax.dynamic_index_in_dim(cs, jnp.maximum(t - 1, 0), axis=1, keepdims=False), c0)
        tanh_c = jnp.tanh(c)
        dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
        dz = jnp.concatenate(
            [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)],
            axis=-1,
        )
        m = lax.dynamic_index_in_dim(mask, k, axis=1, keepdims=True) > 0
        dz = jnp.where(m, dz, 0)
        dh_prev = jnp.where(m, dz @ kernel_t, dh)
        dc_prev = jnp.where(m, dc * f, dc_next)
        dz_all = lax.dynamic_update_index_in_dim(dz_all, dz, k, axis=1)
        return dh_prev, dc_prev, dz_all

    init = (d_h_final, d_c_final, jnp.zeros(gates.shape, gates.dtype))
    dh0, dc0, dz_all = lax.fori_loop(0, steps, step, init)
    return dz_all, dh0, dc0


def _lstm_backward(reverse, native, saved, cotangents):
    recurrent_kernel, h0, c0, mask, hs, cs, gates = saved
    d_outputs, d_h_final, d_c_final = cotangents
    units = h0.shape[-1]
    state = (recurrent_kernel, c0, mask, cs, gates, d_outputs, d_h_final, d_c_final, reverse)
    if _runs_native("train", (gates, recurrent_kernel, c0, *cotangents), units, native):
        dz_all, dh0, dc0 = _native_backward(*state)
    else:
        dz_all, dh0, dc0 = _xla_backward(*state)
    # dz_all is in input order; the h each step read, in processing order, lines up with it
    h_read = jnp.concatenate([h0[:, None], hs[:, :-1]], axis=1)
    if reverse:
        h_read = jnp.flip(h_read, axis=1)
    # as one 2-D product, (B*T, H)^T @ (B*T, 4H): XLA ran the same sum written as an einsum
    # over (b, t) at 250 GFLOP/s and this at 430 (B=64, T=20, H=256)
    d_kernel = h_read.reshape(-1, units).T @ dz_all.reshape(-1, 4 * units)
    d_bias = dz_all.sum(axis=(0, 1))
    return dz_all, d_kernel, d_bias, dh0, dc0, jnp.zeros_like(mask)


_lstm.defvjp(_lstm_forward, _lstm_backward)

# jit caches the compiled loop per shape: called eagerly (one decoding step at a time, outside
# a compiled function), the loop would otherwise be traced and compiled again at every call.
lstm = jax.jit(_lstm, static_argnums=(6, 7))
