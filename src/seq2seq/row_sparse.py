"""Training steps that update one-hot input kernels row by row (JAX, RMSprop).

`TokenProjection` computes one_hot(ids) @ W as the lookup W[ids]: a word-level batch reads
a few hundred rows of a (V, 4H) kernel (V = 7,140 in the benchmark). Differentiating the
lookup gives a dense (V, 4H) gradient, zero outside those rows, which XLA fills with zeros,
scatters into, and RMSprop then reads in full, with the kernel and its velocity.

RMSprop without momentum leaves a row whose gradient is zero where it is and only decays
its velocity (v <- rho v + (1 - rho) 0^2 = rho v). So the same step, exactly, is:

    v[r] <- rho v[r] + (1 - rho) g_r^2          the rows r the batch looked up
    W[r] <- W[r] - lr g_r / sqrt(v[r] + eps)
    v[u] <- rho v[u]                            every other row u: one pass over v

where g_r is the gradient of the rows, summed over the positions that looked each one up.
It is taken at the lookup's output (layers.lookup_taps), never as a (V, 4H) array. Keras's
RMSprop updates every other variable as usual; tests/test_row_sparse.py checks the result
against Keras's own step.

Used only where it is exact and pays: JAX, Keras's RMSprop with no momentum, centring,
clipping, weight decay or moving average, one device, float32 lookups (not mixed
precision), and fewer looked-up positions than rows (word level, not char level).
Keras's optimizer internals are reached through backend.py.
"""

from __future__ import annotations

import re
import warnings
import weakref
from dataclasses import dataclass

import keras

from . import backend
from .layers import TokenProjection, lookup_taps


@dataclass(frozen=True)
class RowSparseKernel:
    """A TokenProjection whose kernel a step updates row by row, with where its kernel and
    RMSprop velocity sit in the trainer's state lists."""

    layer: TokenProjection
    input_name: str  # the model input holding the ids it looks up
    kernel_index: int  # in model.trainable_variables
    velocity_index: int  # in optimizer.variables
    rho: float


def _index_of(variable, variables) -> int:
    return next(i for i, v in enumerate(variables) if v is variable)  # Variable.__eq__ is elementwise


def plain_rmsprop(optimizer) -> bool:
    """True for Keras's RMSprop with nothing that makes a zero gradient move a weight."""
    return (
        type(optimizer) is keras.optimizers.RMSprop
        and not optimizer.momentum
        and not optimizer.centered
        and not (optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue)
        and not optimizer.use_ema
        and optimizer.loss_scale_factor is None
        and not optimizer.gradient_accumulation_steps
        and not optimizer.weight_decay
    )


# optimizer -> (layer_inputs, kernels): decided once per optimizer and inputs, not at every step
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _eligible_kernels(model: keras.Model, layer_inputs: dict[str, str]) -> list[RowSparseKernel]:
    """Every kernel a step may update row by row, whatever the batch."""
    optimizer = model.optimizer
    if keras.backend.backend() != "jax" or optimizer is None or not optimizer.built:
        return []
    planned_inputs, kernels = _PLANS.get(optimizer, (None, None))
    if planned_inputs != layer_inputs:
        kernels = _plan(model, layer_inputs)
        _PLANS[optimizer] = (dict(layer_inputs), kernels)
    for k in kernels:
        if not (k.layer.trainable and model.trainable_variables[k.kernel_index] is k.layer.kernel):
            raise ValueError("the model's trainable variables changed since it was compiled: compile it again")
    return kernels


def _plan(model: keras.Model, layer_inputs: dict[str, str]) -> list[RowSparseKernel]:
    optimizer = model.optimizer
    if keras.distribution.distribution() is not None or not plain_rmsprop(optimizer):
        return []
    kernels = []
    for layer_name, input_name in layer_inputs.items():
        layer = next((layer for layer in model.layers if layer.name == layer_name), None)
        if not isinstance(layer, TokenProjection) or not layer.trainable:
            continue
        if layer.compute_dtype != layer.kernel.dtype:  # e.g. mixed_bfloat16: Keras sums the rows in bfloat16
            continue
        velocity = backend.rmsprop_velocity(optimizer, layer.kernel)
        kernels.append(
            RowSparseKernel(
                layer,
                input_name,
                _index_of(layer.kernel, model.trainable_variables),
                _index_of(velocity, optimizer.variables),
                float(optimizer.rho),
            )
        )
    # Keras's optimizer still steps the other variables, and refuses a step with none
    return kernels if len(kernels) < len(model.trainable_variables) else []


def row_sparse_kernels(model: keras.Model, inputs: dict, layer_inputs: dict[str, str]) -> list[RowSparseKernel]:
    """The kernels to update row by row in a step on `inputs` ({input name: ids (B, T)}).

    layer_inputs: {TokenProjection name: name of the model input it looks up}."""
    return [
        k
        for k in _eligible_kernels(model, layer_inputs)
        # as many positions as rows (char level): no saving
        if k.input_name in inputs and inputs[k.input_name].size < k.layer.vocab_size
    ]


def rmsprop_rows(kernel, velocity, ids, row_gradients, learning_rate, rho: float, epsilon: float):
    """One RMSprop step for a lookup table, from the gradients of the looked-up rows.

    kernel, velocity: (V, D); ids: (B, T) int; row_gradients: (B, T, D), the gradient of
    the loss with respect to kernel[ids]. Returns the new (kernel, velocity)."""
    import jax
    import jax.numpy as jnp

    vocab_size = kernel.shape[0]
    learning_rate = jnp.asarray(learning_rate).astype(kernel.dtype)  # as Keras casts it
    ids = ids.reshape(-1).astype("int32")
    positions = ids.shape[0]
    # Distinct ids, padded with vocab_size (out of range: its reads are 0 and its writes dropped).
    rows, position_row = jnp.unique(ids, size=positions, fill_value=vocab_size, return_inverse=True)
    gradient = jax.ops.segment_sum(
        row_gradients.reshape(positions, -1).astype(kernel.dtype), position_row.reshape(-1), num_segments=positions
    )
    stored = velocity.at[rows].get(mode="fill", fill_value=0)
    row_velocity = rho * stored + (1 - rho) * jnp.square(gradient)
    increment = learning_rate * gradient / jnp.sqrt(row_velocity + epsilon)
    kernel = kernel.at[rows].add(-increment, mode="drop")
    velocity = velocity.at[rows].set(row_velocity, mode="drop")
    # Decayed after the scatter, as a select, so XLA updates v in place (decaying first
    # made it copy the whole of v).
    looked_up = jnp.zeros(vocab_size, bool).at[rows].set(True, mode="drop")
    return kernel, jnp.where(looked_up[:, None], velocity, rho * velocity)


def train_step(model: keras.Model, state, data, kernels: list[RowSparseKernel]):
    """Keras's JAX train step (keras/src/backend/jax/trainer.py), with `kernels` updated by
    `rmsprop_rows` from their lookups' output gradients, and Keras's RMSprop for the rest."""
    import jax
    import jax.numpy as jnp

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    taps = {k.layer.name: jnp.zeros((*x[k.input_name].shape, k.layer.units), k.layer.compute_dtype) for k in kernels}

    def loss(trainable, taps):
        with lookup_taps(taps):
            return model.compute_loss_and_updates(
                trainable,
                non_trainable,
                metrics_variables,
                x,
                y,
                sample_weight,
                training=True,
                optimizer_variables=optimizer_variables,
            )

    (_, aux), (gradients, tap_gradients) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(trainable, taps)
    unscaled_loss, y_pred, non_trainable, metrics_variables = aux
    with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_variables, strict=True))):
        learning_rate = jnp.asarray(optimizer.learning_rate)  # before the step, as Keras reads it

    skipped = sorted(k.kernel_index for k in kernels)
    gradients = [None if i in skipped else g for i, g in enumerate(gradients)]
    with warnings.catch_warnings():  # Keras warns of variables given no gradient: silence it for these only
        paths = [model.trainable_variables[i].path for i in skipped]
        warnings.filterwarnings("ignore", message=re.escape(f"Gradients do not exist for variables {paths} "))
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, gradients, trainable)
    trainable, optimizer_variables = list(trainable), list(optimizer_variables)
    for k in kernels:
        trainable[k.kernel_index], optimizer_variables[k.velocity_index] = rmsprop_rows(
            trainable[k.kernel_index],
            optimizer_variables[k.velocity_index],
            x[k.input_name],
            tap_gradients[k.layer.name],
            learning_rate,
            k.rho,
            optimizer.epsilon,
        )
    logs, metrics_variables = backend.update_metrics_variables(
        model, metrics_variables, unscaled_loss, x, y, y_pred, sample_weight
    )
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)
