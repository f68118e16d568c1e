"""The training loss and metric: per real target token, <pad> positions left out."""

from __future__ import annotations

import keras
from keras import ops

from .vocab import PAD_ID


def target_logit(y_true, logits):
    """logits (B, T, V), ids (B, T) -> logits[b, t, y_true[b, t]] (B, T)."""
    is_target = ops.equal(ops.arange(ops.shape(logits)[-1], dtype="int32"), ops.expand_dims(y_true, -1))
    return ops.sum(ops.where(is_target, logits, ops.zeros_like(logits)), axis=-1)


@keras.saving.register_keras_serializable(package="seq2seq")
class MaskedCrossEntropy(keras.losses.Loss):
    """Mean cross-entropy over the non-<pad> targets of a batch.

    y_true: target ids (B, T); logits: (B, T, V). Without label smoothing, equal to
    Keras's `SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)`. With
    `label_smoothing` e, the target distribution is (1 - e) on the true token plus e
    spread evenly over the vocabulary.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "masked_cross_entropy", **kwargs) -> None:
        kwargs.setdefault("reduction", "sum")
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, logits):
        logits = ops.cast(logits, "float32")
        y_true = ops.cast(y_true, "int32")
        # -log p(y) = logsumexp(logits) - logits[y]. logits[y] is read through a mask, not
        # a gather, whose gradient zeroes a (B, T, V) array and scatters into it.
        target = target_logit(y_true, logits)
        nll = ops.logsumexp(logits, axis=-1) - target
        if self.label_smoothing:  # the vocabulary's mean -log p is logsumexp(logits) - mean(logits)
            nll = nll - self.label_smoothing * (ops.mean(logits, axis=-1) - target)
        real = ops.cast(ops.not_equal(y_true, PAD_ID), "float32")
        # Each token's share of the batch mean; the "sum" reduction adds the shares up.
        return nll * real / ops.maximum(ops.sum(real), 1.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="seq2seq")
class MaskedAccuracy(keras.metrics.Metric):
    """Share of non-<pad> target tokens whose most probable prediction is right.

    `label_smoothing` is accepted (and ignored) so that files saved with it still load."""

    def __init__(self, name: str = "accuracy", label_smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, logits, sample_weight=None) -> None:
        y_true = ops.cast(y_true, "int32")
        logits = ops.cast(logits, "float32")  # as the loss casts them (mixed precision)
        real = ops.not_equal(y_true, PAD_ID)
        # right when the target's logit is the largest (a max is much cheaper than an
        # argmax on CPU; a target tied for the largest counts as right)
        hit = ops.logical_and(real, target_logit(y_true, logits) >= ops.max(logits, axis=-1))
        self.correct.assign_add(ops.sum(ops.cast(hit, self.dtype)))
        self.total.assign_add(ops.sum(ops.cast(real, self.dtype)))

    def result(self):
        return self.correct / ops.maximum(self.total, 1.0)

    def reset_state(self) -> None:
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
