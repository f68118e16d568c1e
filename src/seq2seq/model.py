"""The Keras encoder-decoder: the training model and the inference parts rebuilt from it.

The training model is the textbook's, read top to bottom:

    source_ids (B, S) ─> source_projection (B, S, 4H) ─> encoder_lstm ─> h, c (B, H)
                                                                          │ initial state
    decoder_input_ids (B, T) ─> target_projection (B, T, 4H) ─> decoder_lstm (B, T, H)
                                                                          │
                                            output_projection ─> logits (B, T, V)

B is the batch, S and T the source and target timesteps, H the `latent_dim`, V the
target vocabulary. The projections compute each token's x @ W for its LSTM (see
layers.py): for one-hot tokens that is a row lookup, for embeddings a matrix product.
Id 0 is <pad>: padded source steps are masked, so the encoder's final state is the state
after the last real token.

The output layer gives logits; the softmax is applied by the loss (more stable) and by
the decoders. Inference parts are rebuilt from the trained layers by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from .config import Config
from .layers import ProjectedLSTMCell, TokenProjection

SOURCE_IDS = "source_ids"
DECODER_INPUT_IDS = "decoder_input_ids"
ENCODER_LSTM = "encoder_lstm"
DECODER_LSTM = "decoder_lstm"
OUTPUT_PROJECTION = "output_projection"
SOURCE, TARGET = "source", "target"


def token_projection(config: Config, vocab_size: int, side: str, mask_padding: bool) -> list[layers.Layer]:
    """Layers turning ids (B, T) into an LSTM's projected inputs x @ W (B, T, 4H).

    onehot: W[ids], exactly one_hot(ids) @ W (the textbook's input, without one-hot arrays).
    embedding: a learned embedding (B, T, E), then @ W (E, 4H).
    """
    units = 4 * config.latent_dim
    if config.input == "onehot":
        return [TokenProjection(vocab_size, units, mask_padding=mask_padding, name=f"{side}_projection")]
    return [
        layers.Embedding(vocab_size, config.embedding_dim, mask_zero=mask_padding, name=f"{side}_embedding"),
        layers.Dense(units, use_bias=False, name=f"{side}_projection"),
    ]


def trained_projection(model: keras.Model, side: str) -> list[layers.Layer]:
    """The token projection layers of one side of a trained model, found by name."""
    names = {layer.name for layer in model.layers}
    return [model.get_layer(name) for name in (f"{side}_embedding", f"{side}_projection") if name in names]


def apply(layer_list: list[layers.Layer], x):
    for layer in layer_list:
        x = layer(x)
    return x


def build_model(config: Config, source_vocab_size: int, target_vocab_size: int) -> keras.Model:
    """The training model: [source ids (B, S), decoder input ids (B, T)] -> logits (B, T, V)."""
    source_ids = keras.Input(shape=(None,), dtype="int32", name=SOURCE_IDS)
    source = apply(token_projection(config, source_vocab_size, SOURCE, mask_padding=True), source_ids)
    encoder_lstm = layers.RNN(ProjectedLSTMCell(config.latent_dim), return_state=True, name=ENCODER_LSTM)
    _, h, c = encoder_lstm(source)

    decoder_input_ids = keras.Input(shape=(None,), dtype="int32", name=DECODER_INPUT_IDS)
    target = apply(token_projection(config, target_vocab_size, TARGET, mask_padding=False), decoder_input_ids)
    decoder_lstm = layers.RNN(
        ProjectedLSTMCell(config.latent_dim), return_sequences=True, return_state=True, name=DECODER_LSTM
    )
    decoded, _, _ = decoder_lstm(target, initial_state=[h, c])

    logits = layers.Dense(target_vocab_size, name=OUTPUT_PROJECTION)(decoded)
    return keras.Model([source_ids, decoder_input_ids], logits, name="seq2seq")


@dataclass
class InferenceParts:
    """The trained layers arranged for generating one token at a time.

    encoder: source ids (B, S) -> initial decoder state [h (B, H), c (B, H)]
    step:    [previous token ids (B, 1), h, c] -> [logits (B, V), h, c]
    """

    encoder: keras.Model
    step: keras.Model


def inference_parts(model: keras.Model) -> InferenceParts:
    """Rebuild the textbook's encoder model and one-step decoder model from `model`'s
    layers, found by name, sharing their weights."""
    source_ids = model.get_layer(SOURCE_IDS).output
    _, h, c = model.get_layer(ENCODER_LSTM).output
    encoder = keras.Model(source_ids, [h, c], name="encoder")

    latent_dim = model.get_layer(DECODER_LSTM).cell.units
    previous = keras.Input(shape=(1,), dtype="int32", name="previous_ids")
    h_in = keras.Input(shape=(latent_dim,), name="h")
    c_in = keras.Input(shape=(latent_dim,), name="c")
    projected = apply(trained_projection(model, TARGET), previous)
    decoded, h_out, c_out = model.get_layer(DECODER_LSTM)(projected, initial_state=[h_in, c_in])
    logits = model.get_layer(OUTPUT_PROJECTION)(decoded[:, 0, :])
    step = keras.Model([previous, h_in, c_in], [logits, h_out, c_out], name="decoder_step")
    return InferenceParts(encoder, step)
