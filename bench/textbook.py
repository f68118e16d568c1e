"""Textbook baseline: the keras-io character-level LSTM seq2seq recipe, re-implemented faithfully.

This follows the keras-io example ``examples/nlp/lstm_seq2seq.py`` ("Character-level recurrent
sequence-to-sequence model", fchollet, last modified 2023/11/22) so that benchmarks (speed, memory,
quality) can compare our implementation against the recipe most people start from:

- vectorization: the target gets a start token ('\\t') and an end token ('\\n'); the WHOLE dataset is
  one-hot encoded up front into three float32 arrays of shape (N, max_len, num_tokens); padding
  positions hold the one-hot of the space character (not zeros), including in the targets, so the
  loss also covers the padding;
- model: encoder LSTM(return_state=True) whose states initialise a decoder
  LSTM(return_sequences=True, return_state=True), then Dense(softmax); compiled with "rmsprop",
  "categorical_crossentropy", metrics ["accuracy"]; trained with ``model.fit`` and a validation split;
- inference: encoder and decoder models rebuilt from the training model's layers by index
  (``model.layers[2]``, ``[3]``, ``[4]``) and a greedy ``decode_sequence`` that calls ``predict()``
  once per decoding step with a batch of one.

Minimal generalizations (everything else is as in the example):

- ``level="word"``: tokens are words and punctuation (regex below), start/end are "<start>"/"<end>",
  padding uses a "<pad>" token (the word-level stand-in for the space character), and decoded
  tokens are joined with spaces.
- At char level the space character is always put in both vocabularies, since it is the padding
  token (the example assumes the data contains spaces and would raise a KeyError otherwise; with
  real sentence pairs this changes nothing).
- Encoder padding starts at ``len(tokens)``; the example writes ``t + 1`` which is the same for a
  non-empty input (and would reuse a stale ``t`` for an empty one).
- ``decode_sequence`` returns the text without the trailing end token (the example keeps the '\\n').
- The example saves the model to disk and reloads it before building the inference models; we
  build them directly from the in-memory model (same layers, same indices).

This module must stay independent of the ``seq2seq`` package: do not import it here.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # after setting KERAS_BACKEND: the backend is chosen at import time

LEVELS = ("char", "word")
WORD_PATTERN = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")

# (start, end, pad) per level. The textbook uses "\t" / "\n" and pads with " ".
SPECIAL_TOKENS = {
    "char": ("\t", "\n", " "),
    "word": ("<start>", "<end>", "<pad>"),
}


def tokenize(text: str, level: str = "char") -> list[str]:
    """Split a text into characters (``level="char"``) or words and punctuation (``level="word"``)."""
    if level == "char":
        return list(text)
    if level == "word":
        return WORD_PATTERN.findall(text)
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


@dataclass
class Vectorized:
    """The textbook's vectorized dataset: vocabularies, max lengths and the three one-hot arrays."""

    level: str
    input_texts: list[str]
    target_texts: list[str]  # as given, without start/end tokens
    input_token_index: dict[str, int]
    target_token_index: dict[str, int]
    max_encoder_seq_length: int  # in tokens
    max_decoder_seq_length: int  # in tokens, counting the start and end tokens
    encoder_input_data: np.ndarray  # (N, max_encoder_seq_length, num_encoder_tokens) float32
    decoder_input_data: np.ndarray  # (N, max_decoder_seq_length, num_decoder_tokens) float32
    decoder_target_data: np.ndarray  # decoder_input_data shifted one step left, padded at the end
    reverse_target_token_index: dict[int, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reverse_target_token_index = {i: token for token, i in self.target_token_index.items()}

    @property
    def num_encoder_tokens(self) -> int:
        return len(self.input_token_index)

    @property
    def num_decoder_tokens(self) -> int:
        return len(self.target_token_index)

    @property
    def start_token(self) -> str:
        return SPECIAL_TOKENS[self.level][0]

    @property
    def end_token(self) -> str:
        return SPECIAL_TOKENS[self.level][1]

    @property
    def pad_token(self) -> str:
        return SPECIAL_TOKENS[self.level][2]


def load_pairs(path: str, num_samples: int) -> list[tuple[str, str]]:
    """Read the first ``num_samples`` lines of a tab-separated pair file, as the textbook does.

    Each line is ``input<TAB>target`` optionally followed by a third column (attribution), ignored.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    pairs = []
    for line in lines[: min(num_samples, len(lines) - 1)]:
        columns = line.split("\t")
        if len(columns) not in (2, 3):
            raise ValueError(f"expected 2 or 3 tab-separated columns, got {len(columns)}: {line!r}")
        input_text, target_text = columns[0], columns[1]
        pairs.append((input_text, target_text))
    return pairs


def array_bytes(
    num_pairs: int, max_encoder_len: int, max_decoder_len: int, num_encoder_tokens: int, num_decoder_tokens: int
) -> int:
    """Bytes taken by the three float32 one-hot arrays ``vectorize`` allocates."""
    itemsize = np.dtype("float32").itemsize
    return itemsize * num_pairs * (max_encoder_len * num_encoder_tokens + 2 * max_decoder_len * num_decoder_tokens)


def vectorize(pairs: list[tuple[str, str]], level: str = "char") -> Vectorized:
    """One-hot encode the whole dataset exactly as the textbook does (see module docstring)."""
    if level not in SPECIAL_TOKENS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    start, end, pad = SPECIAL_TOKENS[level]
    input_texts = [input_text for input_text, _ in pairs]
    target_texts = [target_text for _, target_text in pairs]
    input_seqs = []
    target_seqs = []
    # The pad token is always in both vocabularies (at char level the textbook gets " " from the data).
    input_tokens = {pad}
    target_tokens = {pad}
    for input_text, target_text in pairs:
        input_seq = tokenize(input_text, level)
        # Start token in front of the target, end token after it.
        target_seq = [start, *tokenize(target_text, level), end]
        input_seqs.append(input_seq)
        target_seqs.append(target_seq)
        input_tokens.update(input_seq)
        target_tokens.update(target_seq)

    input_token_index = {token: i for i, token in enumerate(sorted(input_tokens))}
    target_token_index = {token: i for i, token in enumerate(sorted(target_tokens))}
    num_encoder_tokens = len(input_token_index)
    num_decoder_tokens = len(target_token_index)
    max_encoder_seq_length = max(len(seq) for seq in input_seqs)
    max_decoder_seq_length = max(len(seq) for seq in target_seqs)

    encoder_input_data = np.zeros((len(pairs), max_encoder_seq_length, num_encoder_tokens), dtype="float32")
    decoder_input_data = np.zeros((len(pairs), max_decoder_seq_length, num_decoder_tokens), dtype="float32")
    decoder_target_data = np.zeros((len(pairs), max_decoder_seq_length, num_decoder_tokens), dtype="float32")

    for i, (input_seq, target_seq) in enumerate(zip(input_seqs, target_seqs, strict=True)):
        for t, token in enumerate(input_seq):
            encoder_input_data[i, t, input_token_index[token]] = 1.0
        encoder_input_data[i, len(input_seq) :, input_token_index[pad]] = 1.0
        for t, token in enumerate(target_seq):
            # decoder_target_data is ahead of decoder_input_data by one timestep
            decoder_input_data[i, t, target_token_index[token]] = 1.0
            if t > 0:
                # decoder_target_data will be ahead by one timestep and will not include the start token.
                decoder_target_data[i, t - 1, target_token_index[token]] = 1.0
        # t is the index of the end token here (target_seq always has at least start and end).
        decoder_input_data[i, t + 1 :, target_token_index[pad]] = 1.0
        decoder_target_data[i, t:, target_token_index[pad]] = 1.0

    return Vectorized(
        level=level,
        input_texts=input_texts,
        target_texts=target_texts,
        input_token_index=input_token_index,
        target_token_index=target_token_index,
        max_encoder_seq_length=max_encoder_seq_length,
        max_decoder_seq_length=max_decoder_seq_length,
        encoder_input_data=encoder_input_data,
        decoder_input_data=decoder_input_data,
        decoder_target_data=decoder_target_data,
    )


def build_model(num_encoder_tokens: int, num_decoder_tokens: int, latent_dim: int = 256) -> keras.Model:
    """The textbook training model (teacher forcing), compiled as the textbook compiles it."""
    # Define an input sequence and process it.
    encoder_inputs = keras.Input(shape=(None, num_encoder_tokens))
    encoder = keras.layers.LSTM(latent_dim, return_state=True)
    _encoder_outputs, state_h, state_c = encoder(encoder_inputs)
    # We discard `encoder_outputs` and only keep the states.
    encoder_states = [state_h, state_c]

    # Set up the decoder, using `encoder_states` as initial state. It returns full output sequences and
    # its internal states; the states are unused in training but used in inference.
    decoder_inputs = keras.Input(shape=(None, num_decoder_tokens))
    decoder_lstm = keras.layers.LSTM(latent_dim, return_sequences=True, return_state=True)
    decoder_outputs, _, _ = decoder_lstm(decoder_inputs, initial_state=encoder_states)
    decoder_dense = keras.layers.Dense(num_decoder_tokens, activation="softmax")
    decoder_outputs = decoder_dense(decoder_outputs)

    # Turns `encoder_input_data` & `decoder_input_data` into `decoder_target_data`.
    model = keras.Model([encoder_inputs, decoder_inputs], decoder_outputs)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def train(
    model: keras.Model,
    data: Vectorized,
    batch_size: int = 64,
    epochs: int = 1,
    validation_split: float = 0.2,
    validation_data: tuple | None = None,
    verbose: str | int = "auto",
    callbacks: list | None = None,
) -> keras.callbacks.History:
    """``model.fit`` as in the textbook.

    By default the last ``validation_split`` of the arrays is held out (Keras splits before shuffling).
    ``validation_data``, if given, replaces the split: ``([encoder_input, decoder_input], decoder_target)``
    arrays with the same token dimensions as ``data``.
    """
    return model.fit(
        [data.encoder_input_data, data.decoder_input_data],
        data.decoder_target_data,
        batch_size=batch_size,
        epochs=epochs,
        validation_split=0.0 if validation_data is not None else validation_split,
        validation_data=validation_data,
        verbose=verbose,
        callbacks=callbacks,
    )


def inference_models(model: keras.Model, latent_dim: int) -> tuple[keras.Model, keras.Model]:
    """Rebuild the textbook's sampling models from the training model's layers, by index."""
    encoder_inputs = model.input[0]  # input_1
    _encoder_outputs, state_h_enc, state_c_enc = model.layers[2].output  # lstm_1
    encoder_states = [state_h_enc, state_c_enc]
    encoder_model = keras.Model(encoder_inputs, encoder_states)

    decoder_inputs = model.input[1]  # input_2
    decoder_state_input_h = keras.Input(shape=(latent_dim,))
    decoder_state_input_c = keras.Input(shape=(latent_dim,))
    decoder_states_inputs = [decoder_state_input_h, decoder_state_input_c]
    decoder_lstm = model.layers[3]
    decoder_outputs, state_h_dec, state_c_dec = decoder_lstm(decoder_inputs, initial_state=decoder_states_inputs)
    decoder_states = [state_h_dec, state_c_dec]
    decoder_dense = model.layers[4]
    decoder_outputs = decoder_dense(decoder_outputs)
    decoder_model = keras.Model([decoder_inputs, *decoder_states_inputs], [decoder_outputs, *decoder_states])
    return encoder_model, decoder_model


def decode_sequence(
    input_seq: np.ndarray, encoder_model: keras.Model, decoder_model: keras.Model, data: Vectorized
) -> str:
    """Greedy decoding as in the textbook: one ``predict()`` per step on a batch of one.

    ``input_seq`` has shape (1, encoder_length, num_encoder_tokens). Stops at the end token or once more
    than ``max_decoder_seq_length`` tokens were produced. The end token is not returned.
    """
    # Encode the input as state vectors.
    states_value = encoder_model.predict(input_seq, verbose=0)

    # Generate empty target sequence of length 1, holding the start token.
    target_seq = np.zeros((1, 1, data.num_decoder_tokens))
    target_seq[0, 0, data.target_token_index[data.start_token]] = 1.0

    # Sampling loop for a batch of size 1.
    stop_condition = False
    decoded_tokens: list[str] = []
    while not stop_condition:
        output_tokens, h, c = decoder_model.predict([target_seq, *states_value], verbose=0)

        # Sample a token (argmax).
        sampled_token_index = int(np.argmax(output_tokens[0, -1, :]))
        sampled_token = data.reverse_target_token_index[sampled_token_index]
        decoded_tokens.append(sampled_token)

        # Exit condition: either hit max length or find the end token.
        if sampled_token == data.end_token or len(decoded_tokens) > data.max_decoder_seq_length:
            stop_condition = True

        # Update the target sequence (of length 1).
        target_seq = np.zeros((1, 1, data.num_decoder_tokens))
        target_seq[0, 0, sampled_token_index] = 1.0

        # Update states.
        states_value = [h, c]

    if decoded_tokens[-1] == data.end_token:
        decoded_tokens.pop()
    return ("" if data.level == "char" else " ").join(decoded_tokens)


def encode_inputs(texts: list[str], data: Vectorized) -> np.ndarray:
    """One-hot encode new input texts like ``data.encoder_input_data`` (same length, same padding).

    The textbook has no unknown token: tokens not seen in training are skipped (dropped from the input).
    Inputs longer than ``max_encoder_seq_length`` tokens are truncated, so every row has the training width.
    """
    pad_index = data.input_token_index[data.pad_token]
    encoded = np.zeros((len(texts), data.max_encoder_seq_length, data.num_encoder_tokens), dtype="float32")
    for i, text in enumerate(texts):
        tokens = [token for token in tokenize(text, data.level) if token in data.input_token_index]
        tokens = tokens[: data.max_encoder_seq_length]
        for t, token in enumerate(tokens):
            encoded[i, t, data.input_token_index[token]] = 1.0
        encoded[i, len(tokens) :, pad_index] = 1.0
    return encoded


class _EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (training plus validation)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def main(argv: list[str] | None = None) -> int:
    """Train the textbook model on a pair file, decode a few training inputs, print timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="tab-separated pair file (input, target[, attribution])")
    parser.add_argument("--num-samples", type=int, default=10000, help="first N lines of the file (textbook: 10000)")
    parser.add_argument("--level", choices=LEVELS, default="char")
    parser.add_argument("--epochs", type=int, default=1, help="textbook: 100")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=256)
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--num-decode", type=int, default=20, help="how many training inputs to decode (textbook: 20)")
    parser.add_argument("--verbose", type=int, default=2, help="model.fit verbosity")
    args = parser.parse_args(argv)

    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}")
    start = time.perf_counter()
    pairs = load_pairs(args.data, args.num_samples)
    data = vectorize(pairs, args.level)
    vectorize_seconds = time.perf_counter() - start
    nbytes = array_bytes(
        len(pairs),
        data.max_encoder_seq_length,
        data.max_decoder_seq_length,
        data.num_encoder_tokens,
        data.num_decoder_tokens,
    )
    print("Number of samples:", len(pairs))
    print("Number of unique input tokens:", data.num_encoder_tokens)
    print("Number of unique output tokens:", data.num_decoder_tokens)
    print("Max sequence length for inputs:", data.max_encoder_seq_length)
    print("Max sequence length for outputs:", data.max_decoder_seq_length)
    print(f"One-hot arrays: {nbytes / 2**20:.1f} MiB, read + vectorized in {vectorize_seconds:.2f} s")

    model = build_model(data.num_encoder_tokens, data.num_decoder_tokens, args.latent_dim)
    timer = _EpochTimer()
    history = train(
        model,
        data,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_split=args.validation_split,
        verbose=args.verbose,
        callbacks=[timer],
    )
    final = {name: round(values[-1], 4) for name, values in history.history.items()}
    print("Final metrics:", final)

    encoder_model, decoder_model = inference_models(model, args.latent_dim)
    decode_seconds = []
    num_decode = min(args.num_decode, len(pairs))
    for seq_index in range(num_decode):
        # Take one sequence (part of the training set) for trying out decoding.
        input_seq = data.encoder_input_data[seq_index : seq_index + 1]
        start = time.perf_counter()
        decoded_sentence = decode_sequence(input_seq, encoder_model, decoder_model, data)
        decode_seconds.append(time.perf_counter() - start)
        print("-")
        print("Input sentence:", data.input_texts[seq_index])
        print("Decoded sentence:", decoded_sentence)

    print("-")
    epoch_list = ", ".join(f"{s:.2f}" for s in timer.seconds)
    mean_epoch = sum(timer.seconds) / len(timer.seconds)
    print(f"Seconds per epoch: {mean_epoch:.2f} (each: {epoch_list}; the first includes compilation)")
    if decode_seconds:
        rest = decode_seconds[1:] or decode_seconds
        print(
            f"Seconds per decoded sentence: {sum(decode_seconds) / len(decode_seconds):.3f} "
            f"(first {decode_seconds[0]:.3f}, rest mean {sum(rest) / len(rest):.3f})"
        )
    print(f"Peak resident memory: {_peak_rss_mb():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
