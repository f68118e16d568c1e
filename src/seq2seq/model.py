"""The Keras encoder-decoder: the training model and the inference parts rebuilt from it.

The textbook model (the defaults: one layer, no attention) reads top to bottom:

    source_ids (B, S) ─> source_projection (B, S, 4H) ─> encoder_lstm ─> h, c (B, H)
                                                                          │ initial state
    decoder_input_ids (B, T) ─> target_projection (B, T, 4H) ─> decoder_lstm (B, T, H)
                                                                          │
                                            output_projection ─> logits (B, T, V)

B is the batch, S and T the source and target timesteps, H the `latent_dim`, V the
target vocabulary. The projections compute each token's x @ W for its LSTM (see
layers.py): for one-hot tokens that is a row lookup, for embeddings a matrix product.
Id 0 is <pad>: padded source steps are masked, so the encoder's final state is the state
after the last real token. Options add layers (`layers`), a backward encoder LSTM
(`bidirectional`: H/2 per direction, concatenated), attention (attention.py), dropout
and tied target embeddings.

The same two functions, `encode` and `decode`, build the training model and, called on
the trained layers found by name, the inference parts: an encoder model and a one-step
decoder model. The output layer gives logits; the softmax is applied by the loss (more
stable) and by the decoders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers, ops

from . import backend, optimizers, row_sparse  # noqa: F401 (optimizers: registers the classes saved models name)
from .attention import AttentionDecoder, attention_keys
from .config import Config
from .files import DECODER_INPUT_IDS, SOURCE_IDS
from .layers import Bfloat16Dense, ProjectedLSTM, TiedEmbedding, TokenProjection
from .vocab import PAD_ID

OUTPUT_PROJECTION = "output_projection"
ATTENTION_DECODER = "decoder"


class LayerSource:
    """Makes new layers while building the training model; finds the trained ones by
    name when rebuilding inference parts. `get(name, make)` returns the layer."""

    def __init__(self, trained: keras.Model | None = None) -> None:
        self.trained = trained
        self.made: dict[str, layers.Layer] = {}

    def get(self, name: str, make: Callable[[str], layers.Layer] | None = None) -> layers.Layer:
        if self.trained is not None:
            return self.trained.get_layer(name)
        if name not in self.made:
            self.made[name] = make(name)
        return self.made[name]


def lstm_name(side: str, layer: int, backward: bool = False) -> str:
    """encoder_lstm, encoder_lstm_backward, encoder_lstm_2, ..., decoder_lstm, ..."""
    return f"{side}_lstm" + (f"_{layer + 1}" if layer else "") + ("_backward" if backward else "")


def token_projection(
    config: Config, found: LayerSource, side: str, vocab_size: int, units: int, ids, bfloat16: bool = False
):
    """Ids (B, T) -> x @ W (B, T, units) for the first LSTM of one side.

    onehot: W[ids], exactly one_hot(ids) @ W (the textbook's input, without one-hot arrays).
    embedding: a learned embedding (B, T, E), dropout, then @ W (E, units) (`bfloat16`:
    from bfloat16 operands, float32 sums).
    """
    if config.input == "onehot":
        return found.get(f"{side}_projection", lambda n: TokenProjection(vocab_size, units, name=n))(ids)
    embedding_class = TiedEmbedding if (side == "target" and config.tie_embeddings) else layers.Embedding
    vectors = found.get(f"{side}_embedding", lambda n: embedding_class(vocab_size, config.embedding_dim, name=n))(ids)
    vectors = found.get(f"{side}_embedding_dropout", lambda n: layers.Dropout(config.dropout, name=n))(vectors)
    projection = found.get(f"{side}_projection", lambda n: layers.Dense(units, use_bias=False, name=n))
    return (Bfloat16Dense(projection) if bfloat16 else projection)(vectors)


def encode(config: Config, found: LayerSource, source_ids, vocab_size: int):
    """Source ids (B, S) -> memory (B, S, H), [h, c] of each layer (B, H), source mask (B, S)."""
    source_mask = ops.not_equal(source_ids, PAD_ID)
    directions = 2 if config.bidirectional else 1
    units = config.latent_dim // directions
    x = token_projection(config, found, "source", vocab_size, directions * 4 * units, source_ids)
    states, outputs = [], None
    for layer in range(config.layers):
        if layer > 0:  # the layer below's outputs, projected for this layer
            x = found.get(f"encoder_dropout_{layer + 1}", lambda n: layers.Dropout(config.dropout, name=n))(outputs)
            x = found.get(
                f"encoder_projection_{layer + 1}",
                lambda n: layers.Dense(directions * 4 * units, use_bias=False, name=n),
            )(x)
        per_direction = []
        for direction in range(directions):
            backward = direction == 1
            rnn = found.get(
                lstm_name("encoder", layer, backward),
                lambda n, b=backward: ProjectedLSTM(
                    units,
                    return_sequences=True,
                    return_state=True,
                    go_backwards=b,
                    name=n,
                ),
            )
            piece = x[..., direction * 4 * units : (direction + 1) * 4 * units] if directions > 1 else x
            sequence, h, c = rnn(piece, mask=source_mask)
            per_direction.append((ops.flip(sequence, axis=1) if backward else sequence, h, c))
        if directions == 1:
            outputs, h, c = per_direction[0]
        else:
            outputs, h, c = (ops.concatenate(parts, axis=-1) for parts in zip(*per_direction, strict=True))
        states += [h, c]
    return outputs, states, source_mask


def attention_context(config: Config, found: LayerSource, memory, source_mask) -> list:
    """What the attention decoder reads at every step: [memory, keys, source mask]."""
    if config.attention == "luong-dot":
        return [memory, memory, source_mask]
    keys = found.get("attention_keys", lambda n: attention_keys(config.attention, config.latent_dim))(memory)
    return [memory, keys, source_mask]


def initial_decoder_state(config: Config, encoder_states: list) -> list:
    """The decoder starts from the encoder's final [h, c] of each layer (plus h~ = 0 with
    Luong attention's input feeding)."""
    if config.attention in ("luong", "luong-dot"):
        return [*encoder_states, ops.zeros_like(encoder_states[0])]
    return list(encoder_states)


def decode(
    config: Config,
    found: LayerSource,
    target_ids,
    context: list,
    state: list,
    vocab_size: int,
    bfloat16: bool = False,
):
    """Decoder input ids (B, T) and state -> logits (B, T, V), attention (B, T, S) or None,
    final state. `context` is [memory, keys, source mask] with attention, else [].
    `bfloat16` (the decoding step, tied embeddings): the projections, the attention
    decoder's products and the logits from bfloat16 operands with float32 sums
    (backend.bfloat16_decoding); the LSTM layers of a decoder without attention stay float32."""
    units = config.latent_dim
    x = token_projection(config, found, "target", vocab_size, 4 * units, target_ids, bfloat16)
    if config.attention == "none":
        new_state = []
        for layer in range(config.layers):
            if layer > 0:
                x = found.get(f"decoder_dropout_{layer + 1}", lambda n: layers.Dropout(config.dropout, name=n))(x)
                x = found.get(
                    f"decoder_projection_{layer + 1}", lambda n: layers.Dense(4 * units, use_bias=False, name=n)
                )(x)
            rnn = found.get(
                lstm_name("decoder", layer),
                lambda n: ProjectedLSTM(units, return_sequences=True, return_state=True, name=n),
            )
            x, h, c = rnn(x, initial_state=state[2 * layer : 2 * layer + 2])
            new_state += [h, c]
        attention = None
    else:
        decoder = found.get(
            ATTENTION_DECODER,
            lambda n: AttentionDecoder(
                units,
                config.layers,
                config.attention,
                dropout=config.dropout,
                name=n,
            ),
        )
        x, attention, *new_state = decoder(x, *context, state, bfloat16=bfloat16)
    x = found.get("output_dropout", lambda n: layers.Dropout(config.dropout, name=n))(x)
    if config.tie_embeddings:
        if units != config.embedding_dim:
            bridge = found.get("output_bridge", lambda n: layers.Dense(config.embedding_dim, name=n))
            x = (Bfloat16Dense(bridge) if bfloat16 else bridge)(x)
        logits = found.get("target_embedding")(x, reverse=True, bfloat16=bfloat16)
    else:
        logits = found.get(OUTPUT_PROJECTION, lambda n: layers.Dense(vocab_size, name=n))(x)
    return logits, attention, new_state


@keras.saving.register_keras_serializable(package="seq2seq")
class Seq2SeqModel(keras.Model):
    """The functional training model. On JAX with RMSprop, its train step updates the
    one-hot input kernels row by row (row_sparse.py): the same step, without the dense
    (V, 4H) gradient of a lookup."""

    LOOKUP_INPUTS = {"source_projection": SOURCE_IDS, "target_projection": DECODER_INPUT_IDS}

    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            state, data = args
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            if isinstance(x, list | tuple) and len(x) == len(self.inputs):  # by name, as the row-sparse step reads it
                x = {tensor.name: value for tensor, value in zip(self.inputs, x, strict=True)}
            kernels = row_sparse.row_sparse_kernels(self, x, self.LOOKUP_INPUTS) if isinstance(x, dict) else []
            if kernels:
                return row_sparse.train_step(self, state, (x, y, sample_weight), kernels)
        return super().train_step(*args)


def build_model(config: Config, source_vocab_size: int, target_vocab_size: int) -> keras.Model:
    """The training model: [source ids (B, S), decoder input ids (B, T)] -> logits (B, T, V)."""
    with backend.initialized_together():
        return _build_model(config, source_vocab_size, target_vocab_size)


def _build_model(config: Config, source_vocab_size: int, target_vocab_size: int) -> keras.Model:
    found = LayerSource()
    source_ids = keras.Input(shape=(None,), dtype="int32", name=SOURCE_IDS)
    memory, encoder_states, source_mask = encode(config, found, source_ids, source_vocab_size)
    context = attention_context(config, found, memory, source_mask) if config.attention != "none" else []
    decoder_input_ids = keras.Input(shape=(None,), dtype="int32", name=DECODER_INPUT_IDS)
    state = initial_decoder_state(config, encoder_states)
    logits, _, _ = decode(config, found, decoder_input_ids, context, state, target_vocab_size)
    return Seq2SeqModel([source_ids, decoder_input_ids], logits, name="seq2seq")


@dataclass
class InferenceParts:
    """The trained layers arranged for generating one token at a time.

    encoder: source ids (B, S) -> [*context, *state]
    step:    [previous ids (B, 1), *context, *state] -> [logits (B, V), attention (B, S), *state]

    `context` is what stays fixed while decoding a sentence ([memory, keys, source mask]
    with attention, nothing without); `state` changes every step ([h, c] per layer, and
    h~ with Luong attention). Without attention the step's attention output is empty
    (B, 0). `bfloat16_products`: whether the step's products take bfloat16 operands (decode).
    """

    encoder: keras.Model
    step: keras.Model
    num_context: int
    bfloat16_products: bool = False

    def split(self, encoded: list) -> tuple[list, list]:
        return list(encoded[: self.num_context]), list(encoded[self.num_context :])


def inference_parts(model: keras.Model, config: Config) -> InferenceParts:
    """Rebuild the encoder model and the one-step decoder model from `model`'s trained
    layers, found by name, sharing their weights."""
    found = LayerSource(model)  # every layer exists: vocabulary sizes are not needed
    source_ids = keras.Input(shape=(None,), dtype="int32", name=SOURCE_IDS)
    memory, encoder_states, source_mask = encode(config, found, source_ids, vocab_size=0)
    context = attention_context(config, found, memory, source_mask) if config.attention != "none" else []
    state = initial_decoder_state(config, encoder_states)
    encoder = keras.Model(source_ids, [*context, *state], name="encoder")

    previous = keras.Input(shape=(1,), dtype="int32", name="previous_ids")
    context_in = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"context_{i}") for i, t in enumerate(context)]
    state_in = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"state_{i}") for i, t in enumerate(state)]
    bfloat16 = backend.bfloat16_decoding() and config.tie_embeddings  # the setting checked either way
    logits, attention, new_state = decode(
        config, found, previous, context_in, state_in, vocab_size=0, bfloat16=bfloat16
    )
    attention = ops.zeros_like(logits[:, 0, :0]) if attention is None else attention[:, 0, :]
    step = keras.Model([previous, *context_in, *state_in], [logits[:, 0, :], attention, *new_state], name="step")
    return InferenceParts(encoder, step, num_context=len(context), bfloat16_products=bfloat16)
