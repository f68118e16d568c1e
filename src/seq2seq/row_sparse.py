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
precision), and fewer looked-up positions than rows (word level, not char level) unless
the table is decayed lazily (below).

Lazy decay. The pass v[u] <- rho v[u] reads and writes all of v, about 1 ms a step for
each word table of the benchmark, which touches a few hundred rows. For tables of at
least LAZY_DECAY_MIN_ROWS rows the step state holds v / s instead, with the scale
s = rho^(i mod P) after i steps (P = LAZY_DECAY_PERIOD): then an untouched row's stored
value needs no write at all, a looked-up row stores its new v / s, and only every P-th
step, where s returns to 1, decays the untouched rows (rho^P in one pass). Keras's
variables always hold v itself: the model converts when Keras's JAX trainer reads its
state from the variables and when it writes it back (`Seq2SeqModel._get_jax_state`,
`jax_state_sync`), so checkpoints, resuming and callbacks see Keras's own RMSprop state.
Which tables are lazy, with which rho and period, is decided once per optimizer, so that
the traced step and those conversions always agree; a lazy table is updated row by row
in every step (Keras's step would misread its state).
"""

from __future__ import annotations

import re
import warnings
import weakref
from dataclasses import dataclass

import keras

from .layers import TokenProjection, lookup_taps

LAZY_DECAY_MIN_ROWS = 1024  # smaller tables (characters) are cheap to decay in full
LAZY_DECAY_PERIOD = 32  # steps between full passes; s >= rho^31, 0.04 for rho = 0.9
LAZY_DECAY_MIN_SCALE = 2.0**-31  # a smaller rho^(period - 1) decays every step (and s > 0)


@dataclass(frozen=True)
class RowSparseKernel:
    """A TokenProjection whose kernel a step updates row by row, with where its kernel and
    RMSprop velocity sit in the trainer's state lists."""

    layer: TokenProjection
    input_name: str  # the model input holding the ids it looks up
    kernel_index: int  # in model.trainable_variables
    velocity_index: int  # in optimizer.variables
    iterations_index: int  # of optimizer.iterations in optimizer.variables
    rho: float
    decay_period: int  # > 1: lazy decay, the step state holds v / rho^(iterations mod decay_period)

    @property
    def lazy(self) -> bool:
        return self.decay_period > 1


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


# optimizer -> (layer_inputs, kernels): decided once, so that the traced step and the
# trainer's hooks agree even if a setting changes later (a callback that sets rho: the
# lookup tables keep the rho they were planned with)
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _converts_lazy_state(model: keras.Model) -> bool:
    """True if `model` converts lazily decayed velocities where Keras's JAX trainer reads
    and writes its state (Seq2SeqModel does)."""
    model_type = type(model)
    return all(
        hasattr(keras.Model, name) and getattr(model_type, name) is not getattr(keras.Model, name)
        for name in ("_get_jax_state", "jax_state_sync")
    )


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
    lazy_period = LAZY_DECAY_PERIOD if _converts_lazy_state(model) else 1
    if not 0 < optimizer.rho <= 1 or optimizer.rho ** (lazy_period - 1) < LAZY_DECAY_MIN_SCALE:
        lazy_period = 1
    kernels = []
    for layer_name, input_name in layer_inputs.items():
        layer = next((layer for layer in model.layers if layer.name == layer_name), None)
        if not isinstance(layer, TokenProjection) or not layer.trainable:
            continue
        if layer.compute_dtype != layer.kernel.dtype:  # e.g. mixed_bfloat16: Keras sums the rows in bfloat16
            continue
        velocity = optimizer._velocities[optimizer._get_variable_index(layer.kernel)]
        kernels.append(
            RowSparseKernel(
                layer,
                input_name,
                _index_of(layer.kernel, model.trainable_variables),
                _index_of(velocity, optimizer.variables),
                _index_of(optimizer.iterations, optimizer.variables),
                float(optimizer.rho),
                lazy_period if layer.vocab_size >= LAZY_DECAY_MIN_ROWS else 1,
            )
        )
    # Keras's optimizer still steps the other variables, and refuses a step with none
    return kernels if len(kernels) < len(model.trainable_variables) else []


def row_sparse_kernels(model: keras.Model, inputs: dict, layer_inputs: dict[str, str]) -> list[RowSparseKernel]:
    """The kernels to update row by row in a step on `inputs` ({input name: ids (B, T)}).

    layer_inputs: {TokenProjection name: name of the model input it looks up}. A lazily
    decayed kernel is always among them: its state is scaled, which Keras's step would
    misread, so a step without its input is an error."""
    kernels = _eligible_kernels(model, layer_inputs)
    missing = [k.input_name for k in kernels if k.lazy and k.input_name not in inputs]
    if missing:
        raise ValueError(f"a training step needs the inputs {missing} by name; got {sorted(inputs)}")
    return [
        k
        for k in kernels
        if k.input_name in inputs
        # as many positions as rows (char level): no saving
        and (k.lazy or inputs[k.input_name].size < k.layer.vocab_size)
    ]


def velocity_scale(iterations, rho: float, period: int, dtype="float32"):
    """s = rho^(iterations mod period): a lazy kernel's state holds velocity / s."""
    import jax.numpy as jnp

    phase = (jnp.asarray(iterations) % period).astype(dtype)
    return jnp.asarray(rho, dtype) ** phase


def convert_lazy_velocities(model: keras.Model, optimizer_values: list, layer_inputs: dict[str, str], to_state: bool):
    """Keras's RMSprop velocities -> the step state's (to_state), or back: `optimizer_values`
    lists the values of optimizer.variables. Returns a new list."""
    lazy = [k for k in _eligible_kernels(model, layer_inputs) if k.lazy]
    values = list(optimizer_values)
    for k in lazy:
        velocity = values[k.velocity_index]
        scale = velocity_scale(values[k.iterations_index], k.rho, k.decay_period, velocity.dtype)
        values[k.velocity_index] = velocity / scale if to_state else velocity * scale
    return values


def rmsprop_rows(
    kernel, velocity, ids, row_gradients, learning_rate, rho: float, epsilon: float, iterations=None, period: int = 1
):
    """One RMSprop step for a lookup table, from the gradients of the looked-up rows.

    kernel, velocity: (V, D); ids: (B, T) int; row_gradients: (B, T, D), the gradient of
    the loss with respect to kernel[ids]. Returns the new (kernel, velocity). With
    `iterations` (the steps done before this one) and a `period` > 1, velocity is the
    lazily decayed state, RMSprop's v / velocity_scale(iterations, rho, period); else v."""
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
    lazy = iterations is not None and period > 1
    if lazy:
        scale, next_scale = (velocity_scale(i, rho, period, kernel.dtype) for i in (iterations, iterations + 1))
    else:
        scale = next_scale = jnp.ones((), kernel.dtype)
    stored = velocity.at[rows].get(mode="fill", fill_value=0)
    row_velocity = rho * (stored * scale) + (1 - rho) * jnp.square(gradient)
    increment = learning_rate * gradient / jnp.sqrt(row_velocity + epsilon)
    kernel = kernel.at[rows].add(-increment, mode="drop")
    velocity = velocity.at[rows].set(row_velocity / next_scale, mode="drop")

    def decay_untouched(velocity):
        # Written after the scatter, as a select, so XLA updates v in place (decaying
        # first made it copy the whole of v).
        looked_up = jnp.zeros(vocab_size, bool).at[rows].set(True, mode="drop")
        return jnp.where(looked_up[:, None], velocity, (rho * scale) * velocity)

    if not lazy:
        return kernel, decay_untouched(velocity)
    # The scale returns to 1 every `period` steps: then the untouched rows decay.
    wrapped = (iterations + 1) % period == 0
    return kernel, jax.lax.cond(wrapped, decay_untouched, lambda velocity: velocity, velocity)


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
    iterations = [optimizer_variables[k.iterations_index] for k in kernels]  # before the step counts itself

    skipped = sorted(k.kernel_index for k in kernels)
    gradients = [None if i in skipped else g for i, g in enumerate(gradients)]
    with warnings.catch_warnings():  # Keras warns of variables given no gradient: silence it for these only
        paths = [model.trainable_variables[i].path for i in skipped]
        warnings.filterwarnings("ignore", message=re.escape(f"Gradients do not exist for variables {paths} "))
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, gradients, trainable)
    trainable, optimizer_variables = list(trainable), list(optimizer_variables)
    for k, steps_done in zip(kernels, iterations, strict=True):
        trainable[k.kernel_index], optimizer_variables[k.velocity_index] = rmsprop_rows(
            trainable[k.kernel_index],
            optimizer_variables[k.velocity_index],
            x[k.input_name],
            tap_gradients[k.layer.name],
            learning_rate,
            k.rho,
            optimizer.epsilon,
            steps_done,
            k.decay_period,
        )
    logs, metrics_variables = model._update_metrics_variables(
        metrics_variables, unscaled_loss, x, y, y_pred, sample_weight
    )
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)
