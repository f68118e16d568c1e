"""The Keras encoder-decoder: the training model and the inference parts rebuilt from it.

The training model is the textbook's, read top to bottom:

    source_ids (B, S) ──> tokens as vectors (B, S, D) ──> encoder_lstm ──> h, c (B, H)
                                                                            │ initial state
    decoder_input_ids (B, T) ──> tokens as vectors (B, T, D) ──> decoder_lstm (B, T, H)
                                                                            │
                                              output_projection ──> logits (B, T, V)

B is the batch, S and T the source and target timesteps, D the size of a token vector
(the vocabulary size for one-hot vectors, `embedding_dim` for embeddings), H the
`latent_dim`, V the target vocabulary. Id 0 is <pad>: padded source steps are masked, so
the encoder's final state is the state after the last real token.

The output layer gives logits; the softmax is applied by the loss (more stable) and by
the decoders. Inference parts are rebuilt from the trained layers by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers, ops

from .config import Config
from .vocab import PAD_ID

SOURCE_IDS = "source_ids"
DECODER_INPUT_IDS = "decoder_input_ids"
SOURCE_VECTORS = "source_vectors"
TARGET_VECTORS = "target_vectors"
ENCODER_LSTM = "encoder_lstm"
DECODER_LSTM = "decoder_lstm"
OUTPUT_PROJECTION = "output_projection"


@keras.saving.register_keras_serializable(package="seq2seq")
class OneHot(layers.Layer):
    """Token ids (B, T) -> one-hot vectors (B, T, depth), made per batch inside the model.

    With `mask_padding`, <pad> positions are masked for the layers that follow.
    """

    def __init__(self, depth: int, mask_padding: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.depth = depth
        self.mask_padding = mask_padding

    def call(self, ids):
        return ops.one_hot(ids, self.depth, dtype=self.compute_dtype)

    def compute_mask(self, ids, mask=None):
        return ops.not_equal(ids, PAD_ID) if self.mask_padding else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.depth)

    def get_config(self) -> dict:
        return {**super().get_config(), "depth": self.depth, "mask_padding": self.mask_padding}


def token_vectors(config: Config, vocab_size: int, name: str, mask_padding: bool) -> layers.Layer:
    """The layer that turns ids into vectors: one-hot (the textbook) or a learned embedding."""
    if config.input == "onehot":
        return OneHot(vocab_size, mask_padding=mask_padding, name=name)
    return layers.Embedding(vocab_size, config.embedding_dim, mask_zero=mask_padding, name=name)


def build_model(config: Config, source_vocab_size: int, target_vocab_size: int) -> keras.Model:
    """The training model: [source ids (B, S), decoder input ids (B, T)] -> logits (B, T, V)."""
    source_ids = keras.Input(shape=(None,), dtype="int32", name=SOURCE_IDS)
    source = token_vectors(config, source_vocab_size, SOURCE_VECTORS, mask_padding=True)(source_ids)
    _, h, c = layers.LSTM(config.latent_dim, return_state=True, name=ENCODER_LSTM)(source)

    decoder_input_ids = keras.Input(shape=(None,), dtype="int32", name=DECODER_INPUT_IDS)
    target = token_vectors(config, target_vocab_size, TARGET_VECTORS, mask_padding=False)(decoder_input_ids)
    decoder_lstm = layers.LSTM(config.latent_dim, return_sequences=True, return_state=True, name=DECODER_LSTM)
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

    latent_dim = model.get_layer(DECODER_LSTM).units
    previous = keras.Input(shape=(1,), dtype="int32", name="previous_ids")
    h_in = keras.Input(shape=(latent_dim,), name="h")
    c_in = keras.Input(shape=(latent_dim,), name="c")
    vectors = model.get_layer(TARGET_VECTORS)(previous)
    decoded, h_out, c_out = model.get_layer(DECODER_LSTM)(vectors, initial_state=[h_in, c_in])
    logits = model.get_layer(OUTPUT_PROJECTION)(decoded[:, 0, :])
    step = keras.Model([previous, h_in, c_in], [logits, h_out, c_out], name="decoder_step")
    return InferenceParts(encoder, step)
