"""The optimizer training uses: Keras's Adam or RMSprop, with the learning rate warmed up
linearly over the first steps (`--warmup-steps`).

Adam's first updates move every weight by about the whole learning rate (its moment
estimates rest on a few gradients), and with some seeds a fresh attention model stays on
a plateau for its first thousand steps. Starting from a small rate and raising it step
by step is the usual remedy; what it measured here is in docs/performance.md ("A
warm-up for the first plateau").
"""

from __future__ import annotations

import keras
from keras import ops

from .config import Config


class WarmUp:
    """Mixin for a Keras optimizer: step n (1, 2, ...) updates with the learning rate
    lr x min(1, n / warmup_steps), worked out inside the compiled step from the
    optimizer's step count. lr stays the optimizer's learning-rate variable, which the
    schedules (callbacks.LinearDecay, Keras's ReduceLROnPlateau) set as before: they set
    the rate the warm-up rises to. Adam's moments do not depend on the learning rate, so
    step n is plain Adam's step n at that rate (tested)."""

    def __init__(self, *args, warmup_steps: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warmup_steps = warmup_steps

    def update_step(self, gradient, variable, learning_rate):
        if self.warmup_steps:
            progress = ops.cast(self.iterations + 1, "float32") / self.warmup_steps
            learning_rate = learning_rate * ops.cast(ops.minimum(progress, 1.0), learning_rate.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="seq2seq")
class WarmUpAdam(WarmUp, keras.optimizers.Adam):
    """Adam with a linear warm-up of the learning rate (WarmUp)."""


@keras.saving.register_keras_serializable(package="seq2seq")
class WarmUpRMSprop(WarmUp, keras.optimizers.RMSprop):
    """RMSprop with a linear warm-up of the learning rate (WarmUp). Its steps are dense:
    row_sparse.py's row-by-row updates are plain RMSprop's."""


OPTIMIZER_CLASSES = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}  # config.OPTIMIZERS
WARM_UP_CLASSES = {"adam": WarmUpAdam, "rmsprop": WarmUpRMSprop}


def make_optimizer(config: Config) -> keras.optimizers.Optimizer:
    """The optimizer `config` names, at its learning rate, clipping the gradients' global
    norm to `clip_norm`; with `warmup_steps`, its warm-up subclass (plain Keras otherwise,
    so a model without warm-up loads anywhere Keras does)."""
    clipping = {"global_clipnorm": config.clip_norm or None}
    if config.warmup_steps:
        return WARM_UP_CLASSES[config.optimizer](config.learning_rate, warmup_steps=config.warmup_steps, **clipping)
    return OPTIMIZER_CLASSES[config.optimizer](config.learning_rate, **clipping)
