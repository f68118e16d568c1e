"""Generating target ids from source ids, a whole batch at a time, compiled by the backend.

A decoder is a small Keras model wrapped around the inference parts: its `call` runs the
encoder once, then a `keras.ops.while_loop` of decoder steps. Keras compiles `call`
(with `jax.jit` on JAX, `tf.function` on TensorFlow) the first time it sees an input
shape, so the whole loop runs as one compiled program with no Python per step.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .model import InferenceParts
from .vocab import END_ID, PAD_ID, START_ID


class GreedyDecoder(keras.Model):
    """source ids (B, S) -> target ids (B, max_length): the most probable token at each
    step, until every sequence has produced <end> or `max_length` tokens.

    Positions after a sequence's <end> hold <pad>.
    """

    def __init__(self, parts: InferenceParts, max_length: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.parts = parts
        self.max_length = max_length

    def call(self, source_ids):
        state = self.parts.encoder(source_ids)
        batch = ops.shape(source_ids)[0]
        output = ops.full((batch, self.max_length), PAD_ID, dtype="int32")
        previous = ops.full((batch,), START_ID, dtype="int32")
        finished = ops.zeros((batch,), dtype="bool")

        def not_done(t, previous, finished, output, *state):
            return ops.logical_and(t < self.max_length, ops.logical_not(ops.all(finished)))

        def step(t, previous, finished, output, *state):
            logits, *state = self.parts.step([ops.expand_dims(previous, 1), *state])
            token = ops.cast(ops.argmax(logits, axis=-1), "int32")
            token = ops.where(finished, PAD_ID, token)
            output = ops.slice_update(output, (0, t), ops.expand_dims(token, 1))
            finished = ops.logical_or(finished, token == END_ID)
            return (t + 1, token, finished, output, *state)

        loop_vars = (ops.convert_to_tensor(0, dtype="int32"), previous, finished, output, *state)
        return ops.while_loop(not_done, step, loop_vars)[3]


def stepwise_greedy(parts: InferenceParts, source_ids: np.ndarray, max_length: int) -> list[int]:
    """The textbook's decoding loop for one unpadded sentence: encode, then call the step
    model once per token with a batch of one. Slow; kept as the reference for tests."""
    state = parts.encoder(ops.convert_to_tensor(np.asarray(source_ids, dtype="int32")[None, :]))
    previous = START_ID
    output: list[int] = []
    for _ in range(max_length):
        logits, *state = parts.step([ops.convert_to_tensor(np.array([[previous]], dtype="int32")), *state])
        previous = int(np.argmax(ops.convert_to_numpy(logits)[0]))
        output.append(previous)
        if previous == END_ID:
            break
    return output
