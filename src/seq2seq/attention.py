"""Attention: the decoder looks back at every encoder output at every step.

Without attention the decoder sees the input only through the encoder's final (h, c).
With attention, at each step the decoder scores every encoder output (the "memory",
one vector per source token), turns the scores into weights with a softmax over the
real (non-padding) source positions, and reads the weighted sum ("context").

    luong      score(h, m_j) = h · (m_j W)           (Luong et al. 2015, "general")
    luong-dot  score(h, m_j) = h · m_j               (Luong et al. 2015, "dot")
    bahdanau   score(s, m_j) = v · tanh(s W_q + m_j W_k)   (Bahdanau et al. 2015, additive)

Luong attention is computed from the decoder's new top state h_t, and the attentional
vector h~_t = tanh(W_c [context; h_t]) is fed into the next step's input ("input
feeding"). Bahdanau attention is computed from the previous state s_{t-1}, and the
context is part of the LSTM's input at step t. Both emit tanh(W_c [context; h_t]).

The part of the score that depends only on the memory (m_j W, m_j W_k) is computed once
per sentence by the `attention_keys` layer, outside the decoding loop.

Shapes: B batch, S source steps, T target steps, H `latent_dim`, A attention size (= H).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from .layers import ProjectedLSTMCell, dense, drop_removed_matmul_dtype

NEGATIVE = -1e9  # score of padded positions: zero weight after the softmax


def attention_keys(kind: str, units: int) -> layers.Layer | None:
    """The per-sentence part of the score: memory (B, S, H) -> keys (B, S, A), or None
    for dot attention, whose keys are the memory itself."""
    if kind == "luong-dot":
        return None
    return layers.Dense(units, use_bias=False, name="attention_keys")


@keras.saving.register_keras_serializable(package="seq2seq")
class AttentionDecoder(layers.Layer):
    """Stacked LSTM cells with attention, unrolled over the target with `keras.ops.scan`.

    call(inputs, memory, keys, source_mask, initial_state):
        inputs        (B, T, 4H)  target tokens projected for the first LSTM (x @ W)
        memory        (B, S, H)   encoder outputs
        keys          (B, S, A)   `attention_keys(memory)` (the memory itself for dot)
        source_mask   (B, S)      True at real source tokens
        initial_state list of 2 * layers tensors (B, H): h and c of each layer, from the
                      encoder; Luong adds h~ (B, H), zeros at the start
    returns [outputs (B, T, H), attention weights (B, T, S), *final_state].

    Decoding one step is calling it on one timestep (T = 1) with the state so far.
    """

    def __init__(
        self,
        units: int,
        num_layers: int,
        kind: str,
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        drop_removed_matmul_dtype(kwargs)
        super().__init__(**kwargs)
        self.units = units
        self.num_layers = num_layers
        self.kind = kind
        self.dropout = dropout
        self.cells = [ProjectedLSTMCell(units, name=f"cell_{i + 1}") for i in range(num_layers)]
        # input of layers 2..N: the layer below's h, projected
        self.layer_inputs = [
            layers.Dense(4 * units, use_bias=False, name=f"input_{i + 2}") for i in range(num_layers - 1)
        ]
        # Luong feeds h~_{t-1}, Bahdanau feeds the context, into the first layer
        self.feed = layers.Dense(4 * units, use_bias=False, name="feed")
        self.combine = layers.Dense(units, activation="tanh", use_bias=False, name="combine")
        if kind == "bahdanau":
            self.query = layers.Dense(units, use_bias=False, name="query")
            self.score_vector = layers.Dense(1, use_bias=False, name="score")
        # variational dropout between stacked layers: one mask per sentence, made before the loop
        self.seed_generator = keras.random.SeedGenerator() if dropout > 0 and num_layers > 1 else None

    @property
    def input_feeding(self) -> bool:
        return self.kind != "bahdanau"

    def state_size(self) -> int:
        """Number of state tensors carried from step to step."""
        return 2 * self.num_layers + (1 if self.input_feeding else 0)

    def build(self, *args, **kwargs) -> None:
        units = self.units
        for cell in self.cells:
            cell.build((None, 4 * units))
        for layer_input in self.layer_inputs:
            layer_input.build((None, units))
        self.feed.build((None, units))
        self.combine.build((None, 2 * units))
        if self.kind == "bahdanau":
            self.query.build((None, units))
            self.score_vector.build((None, None, units))

    def attend(self, query, memory, keys, source_mask):
        """query (B, H) -> context (B, H), weights (B, S)."""
        if self.kind == "bahdanau":
            energy = ops.tanh(keys + ops.expand_dims(self.query(query), 1))  # (B, S, A)
            scores = ops.squeeze(self.score_vector(energy), -1)
        else:
            scores = ops.squeeze(ops.matmul(keys, ops.expand_dims(query, -1)), -1)  # (B, S)
        scores = ops.where(source_mask, scores, ops.cast(NEGATIVE, scores.dtype))
        weights = ops.softmax(scores, axis=-1)
        context = ops.squeeze(ops.matmul(ops.expand_dims(weights, 1), memory), 1)
        return context, weights

    def step(self, projected, memory, keys, source_mask, state, dropout_masks, bfloat16=False):
        """One target token: projected (B, 4H), state tuple -> output (B, H), weights, state.
        `bfloat16`: the products from bfloat16 operands, float32 sums (layers.product)."""
        lstm_state = list(state[: 2 * self.num_layers])
        if self.input_feeding:
            feed = state[-1]  # h~_{t-1}
        else:
            feed, weights = self.attend(lstm_state[-2], memory, keys, source_mask)  # context from s_{t-1}
        x = projected + dense(self.feed, feed, bfloat16)
        for i, cell in enumerate(self.cells):
            if i > 0:
                below = lstm_state[2 * i - 2]
                if dropout_masks is not None:
                    below = below * dropout_masks[i - 1]
                x = dense(self.layer_inputs[i - 1], below, bfloat16)
            h, (h, c) = cell(x, lstm_state[2 * i : 2 * i + 2], bfloat16=bfloat16)
            lstm_state[2 * i : 2 * i + 2] = [h, c]
        if self.input_feeding:
            context, weights = self.attend(h, memory, keys, source_mask)
        else:
            context = feed
        output = dense(self.combine, ops.concatenate([context, h], axis=-1), bfloat16)
        new_state = (*lstm_state, output) if self.input_feeding else tuple(lstm_state)
        return output, weights, new_state

    def call(self, inputs, memory, keys, source_mask, initial_state, training=False, bfloat16=False):
        keys = memory if keys is None else keys
        source_mask = ops.cast(source_mask, "bool")
        dropout_masks = None
        if training and self.dropout > 0 and self.num_layers > 1:
            batch = ops.shape(inputs)[0]
            keep = 1.0 - self.dropout
            dropout_masks = [
                ops.cast(keras.random.uniform((batch, self.units), seed=self.seed_generator) < keep, inputs.dtype)
                / keep
                for _ in range(self.num_layers - 1)
            ]

        # The loop carries the state plus the step's output and attention weights, and
        # also emits that carry: Keras's scan on TensorFlow needs its outputs shaped as
        # its carry.
        def step(carry, projected):
            output, weights, state = self.step(
                projected, memory, keys, source_mask, carry[:-2], dropout_masks, bfloat16
            )
            carry = (*state, output, ops.cast(weights, output.dtype))
            return carry, carry

        batch = ops.shape(inputs)[0]
        start = (*initial_state, ops.zeros((batch, self.units)), ops.zeros((batch, ops.shape(memory)[1])))
        final, emitted = ops.scan(step, start, ops.transpose(inputs, (1, 0, 2)))
        outputs, weights = (ops.transpose(x, (1, 0, 2)) for x in emitted[-2:])
        return [outputs, weights, *final[:-2]]

    def compute_output_spec(self, inputs, memory, keys, source_mask, initial_state, training=False, bfloat16=False):
        batch, steps = inputs.shape[0], inputs.shape[1]
        state = [keras.KerasTensor((batch, self.units), dtype=self.compute_dtype) for _ in initial_state]
        return [
            keras.KerasTensor((batch, steps, self.units), dtype=self.compute_dtype),
            keras.KerasTensor((batch, steps, memory.shape[1]), dtype=self.compute_dtype),
            *state,
        ]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "num_layers": self.num_layers,
            "kind": self.kind,
            "dropout": self.dropout,
        }
