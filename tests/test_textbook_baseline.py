"""The textbook baseline (bench/textbook.py): vectorization as keras-io defines it, training and decoding run."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

from .conftest import bench_module

textbook = bench_module("textbook")

WORDS = {"cat": "gato", "dog": "perro", "house": "casa", "red": "rojo", "big": "grande", "sun": "sol"}


def make_pairs(n: int = 200, seed: int = 0) -> list[tuple[str, str]]:
    """Tiny made-up 'translations': 1-3 words, word by word, with a final '.' or '!'."""
    rng = random.Random(seed)
    english = list(WORDS)
    pairs = []
    for _ in range(n):
        words = [rng.choice(english) for _ in range(rng.randint(1, 3))]
        mark = rng.choice(".!")
        pairs.append((" ".join(words) + mark, " ".join(WORDS[w] for w in words) + mark))
    return pairs


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return make_pairs()


@pytest.mark.parametrize("level", ["char", "word"])
def test_vectorize_matches_textbook_definition(pairs, level):
    data = textbook.vectorize(pairs, level)
    n = len(pairs)
    inputs = [textbook.tokenize(a, level) for a, _ in pairs]
    targets = [textbook.tokenize(b, level) for _, b in pairs]
    assert data.max_encoder_seq_length == max(len(t) for t in inputs)
    assert data.max_decoder_seq_length == max(len(t) for t in targets) + 2  # start and end tokens
    assert data.encoder_input_data.shape == (n, data.max_encoder_seq_length, data.num_encoder_tokens)
    assert data.decoder_input_data.shape == (n, data.max_decoder_seq_length, data.num_decoder_tokens)
    assert data.decoder_target_data.shape == data.decoder_input_data.shape
    for array in (data.encoder_input_data, data.decoder_input_data, data.decoder_target_data):
        assert array.dtype == np.float32
        # Textbook padding: every position, padding included, is a one-hot (of the pad token).
        np.testing.assert_array_equal(array.sum(axis=-1), 1.0)
    # The target is the decoder input shifted one step left; its last step is padding.
    np.testing.assert_array_equal(data.decoder_target_data[:, :-1], data.decoder_input_data[:, 1:])
    pad = data.target_token_index[data.pad_token]
    assert (data.decoder_target_data[:, -1, pad] == 1.0).all()
    assert (data.decoder_input_data[:, 0, data.target_token_index[data.start_token]] == 1.0).all()

    # Row 0 spelled out, padding included.
    reverse_input = {i: t for t, i in data.input_token_index.items()}
    encoded = [reverse_input[i] for i in data.encoder_input_data[0].argmax(-1)]
    padding = [data.pad_token] * (data.max_encoder_seq_length - len(inputs[0]))
    assert encoded == inputs[0] + padding
    decoded = [data.reverse_target_token_index[i] for i in data.decoder_input_data[0].argmax(-1)]
    padding = [data.pad_token] * (data.max_decoder_seq_length - len(targets[0]) - 2)
    assert decoded == [data.start_token, *targets[0], data.end_token, *padding]


def test_char_level_uses_textbook_tokens(pairs):
    data = textbook.vectorize(pairs, "char")
    assert (data.start_token, data.end_token, data.pad_token) == ("\t", "\n", " ")
    assert list(data.target_token_index)[:3] == ["\t", "\n", " "]  # sorted characters, as the textbook


def test_word_level_tokenizer():
    assert textbook.tokenize("Don't stop—well-known, O’Neil!", "word") == [
        "Don't",
        "stop",
        "—",
        "well-known",
        ",",
        "O’Neil",
        "!",
    ]


def test_array_bytes_matches_arrays(pairs):
    data = textbook.vectorize(pairs, "char")
    expected = data.encoder_input_data.nbytes + data.decoder_input_data.nbytes + data.decoder_target_data.nbytes
    assert (
        textbook.array_bytes(
            len(pairs),
            data.max_encoder_seq_length,
            data.max_decoder_seq_length,
            data.num_encoder_tokens,
            data.num_decoder_tokens,
        )
        == expected
    )


def test_encode_inputs_pads_and_skips_unknown(pairs):
    data = textbook.vectorize(pairs, "char")
    np.testing.assert_array_equal(textbook.encode_inputs([pairs[0][0]], data), data.encoder_input_data[:1])
    # 'Z' never occurs in the inputs: skipped, so "cZat." encodes as "cat.".
    np.testing.assert_array_equal(textbook.encode_inputs(["cZat."], data), textbook.encode_inputs(["cat."], data))


def test_load_pairs_accepts_two_or_three_columns(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("Go.\tVe.\nHi.\tHola.\tCC-BY 2.0 (France) Attribution\nRun!\tCorre.\n", encoding="utf-8")
    assert textbook.load_pairs(str(path), 2) == [("Go.", "Ve."), ("Hi.", "Hola.")]
    assert len(textbook.load_pairs(str(path), 100)) == 3


@pytest.mark.parametrize("level", ["char", "word"])
def test_train_and_decode(pairs, level):
    data = textbook.vectorize(pairs, level)
    model = textbook.build_model(data.num_encoder_tokens, data.num_decoder_tokens, latent_dim=32)
    history = textbook.train(model, data, batch_size=32, epochs=1, verbose=0)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    assert np.isfinite(history.history["loss"][-1])

    encoder_model, decoder_model = textbook.inference_models(model, latent_dim=32)
    decoded = textbook.decode_sequence(data.encoder_input_data[:1], encoder_model, decoder_model, data)
    assert isinstance(decoded, str)
    decoded = textbook.decode_sequence(textbook.encode_inputs(["red cat."], data), encoder_model, decoder_model, data)
    assert isinstance(decoded, str)


def test_weights_move_to_a_fresh_model_and_decode_the_same(pairs, tmp_path):
    """How bench/speed.py hands a trained textbook model to another process (another
    backend): weights into a freshly built model, whose sampling models then decode the
    same. (Loading the whole .keras model instead broke the recipe's rebuild: its new
    inputs' generated names clashed with the loaded ones.)"""
    data = textbook.vectorize(pairs, "char")
    trained = textbook.build_model(data.num_encoder_tokens, data.num_decoder_tokens, latent_dim=32)
    textbook.train(trained, data, batch_size=32, epochs=1, verbose=0)
    trained.save_weights(tmp_path / "textbook.weights.h5")
    fresh = textbook.build_model(data.num_encoder_tokens, data.num_decoder_tokens, latent_dim=32)
    fresh.load_weights(tmp_path / "textbook.weights.h5")
    inputs = data.encoder_input_data[:3]
    outputs = []
    for model in (trained, fresh):
        encoder_model, decoder_model = textbook.inference_models(model, latent_dim=32)
        outputs.append(
            [textbook.decode_sequence(inputs[i : i + 1], encoder_model, decoder_model, data) for i in range(3)]
        )
    assert outputs[0] == outputs[1]
