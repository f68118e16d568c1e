from __future__ import annotations

import numpy as np
import pytest

from seq2seq.vocab import (
    END_ID,
    PAD_ID,
    SPECIALS,
    START_ID,
    UNK_ID,
    CharTokenizer,
    Codec,
    Vocabulary,
    WordTokenizer,
    make_tokenizer,
)

SENTENCES = [
    "Go.",
    "¿Qué hora es?",
    "I don't know, Tom.",
    'She said: "we like kiwis!"',
    "¡Hola, mundo!",
    "It costs $5 (more or less).",
    "twenty-one thousand, three hundred and five",
]


@pytest.mark.parametrize("sentence", SENTENCES)
def test_char_round_trip(sentence):
    tokenizer = CharTokenizer()
    assert tokenizer.tokenize(sentence) == list(sentence)
    assert tokenizer.detokenize(tokenizer.tokenize(sentence)) == sentence


@pytest.mark.parametrize("sentence", SENTENCES)
def test_word_round_trip(sentence):
    tokenizer = WordTokenizer()
    assert tokenizer.detokenize(tokenizer.tokenize(sentence)) == sentence


def test_word_tokens_split_punctuation_and_keep_inner_marks():
    assert WordTokenizer().tokenize("¿Qué hora es?") == ["¿", "Qué", "hora", "es", "?"]
    assert WordTokenizer().tokenize("I don't, twenty-one.") == ["I", "don't", ",", "twenty-one", "."]
    assert WordTokenizer(lowercase=True).tokenize("Tom IS here") == ["tom", "is", "here"]


@pytest.mark.parametrize("level", ["char", "word"])
def test_lowercase_is_honoured_at_every_level_and_saved(level, tmp_path):
    """--lowercase at char level was ignored: `make_tokenizer` gave a plain CharTokenizer."""
    codec = Codec.fit(make_tokenizer(level, lowercase=True), ["Hola Tom", "ADIÓS"])
    assert all(token == token.lower() for token in codec.vocabulary.tokens[len(SPECIALS) :])
    assert codec.encode("HOLA tom") == codec.encode("hola tom") and UNK_ID not in codec.encode("HOLA tom")
    codec.save(tmp_path / "v.json")
    loaded = Codec.load(tmp_path / "v.json")
    assert loaded.tokenizer.to_dict() == {
        "kind": level,
        "lowercase": True,
        **({"marks": True} if level == "word" else {}),
    }
    assert loaded.encode("Adiós") == codec.encode("adiós")
    assert make_tokenizer(level).tokenize("Tom") != make_tokenizer(level, lowercase=True).tokenize("Tom")


def test_char_vocabularies_saved_without_lowercase_load_as_cased(tmp_path):
    """Vocabularies saved before char tokenizers took `lowercase` load as they were made."""
    (tmp_path / "v.json").write_text(
        '{"tokenizer": {"kind": "char"}, "tokens": ["<pad>", "<start>", "<end>", "<unk>"]}'
    )
    tokenizer = Codec.load(tmp_path / "v.json").tokenizer
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.tokenize("Ab") == ["A", "b"]


def test_vocabulary_specials_frequency_and_limits():
    sequences = [list("aaabbc"), list("ab")]
    vocab = Vocabulary.build(sequences)
    assert vocab.tokens[:4] == list(SPECIALS)
    assert (PAD_ID, START_ID, END_ID, UNK_ID) == (0, 1, 2, 3)
    assert vocab.tokens[4:] == ["a", "b", "c"]  # by frequency
    assert Vocabulary.build(sequences, max_size=5).tokens[4:] == ["a"]
    assert Vocabulary.build(sequences, min_freq=2).tokens[4:] == ["a", "b"]


def test_unknown_tokens_become_unk_never_keyerror():
    vocab = Vocabulary.build([["hola", "mundo"]])
    assert vocab.encode(["hola", "adiós"]) == [vocab.encode(["hola"])[0], UNK_ID]
    assert vocab.decode([vocab.encode(["hola"])[0], UNK_ID]) == ["hola", "<unk>"]
    assert vocab.decode([999]) == ["<unk>"]


def test_decode_stops_at_end_and_drops_pad_and_start():
    vocab = Vocabulary.build([["a", "b"]])
    a, b = vocab.encode(["a", "b"])
    assert vocab.decode([START_ID, a, PAD_ID, b, END_ID, a]) == ["a", "b"]


def test_vocabulary_rejects_bad_token_lists():
    with pytest.raises(ValueError, match="start with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="repeat"):
        Vocabulary([*SPECIALS, "a", "a"])


def test_codec_round_trip_through_json(tmp_path):
    codec = Codec.fit(WordTokenizer(lowercase=True), ["Hola, mundo.", "Adiós, mundo."])
    codec.save(tmp_path / "v.json")
    loaded = Codec.load(tmp_path / "v.json")
    assert loaded.vocabulary.tokens == codec.vocabulary.tokens
    assert loaded.tokenizer.to_dict() == {"kind": "word", "lowercase": True, "marks": True}
    ids = loaded.encode("Hola, mundo cruel.")
    assert ids[-2] == UNK_ID
    assert loaded.decode([*ids, END_ID]) == "hola, mundo <unk>."


def test_subword_round_trip_and_save(tmp_path):
    from seq2seq.vocab import SubwordTokenizer

    texts = [f"{a} {b}." for a in ("Tom", "Mary", "We", "They") for b in ("like kiwis", "run", "are here", "sing")]
    tokenizer = SubwordTokenizer.train(texts * 5, vocab_size=40, model_type="unigram")
    for text in [*texts, "Tom sings kiwis here.", "¿Qué?"]:
        pieces = tokenizer.tokenize(text)
        assert tokenizer.detokenize(pieces) == text
    codec = Codec.fit(tokenizer, texts)
    codec.save(tmp_path / "v.json")
    assert (tmp_path / "v.spm").is_file()
    loaded = Codec.load(tmp_path / "v.json")
    assert loaded.encode("Tom like kiwis.") == codec.encode("Tom like kiwis.")
    assert loaded.decode(codec.encode("Mary run.")) == "Mary run."
    bpe = SubwordTokenizer.train(texts * 5, vocab_size=40, model_type="bpe")
    assert bpe.detokenize(bpe.tokenize("They sing.")) == "They sing."


UNNORMALISED = {  # text as it may come (NFD accents, odd and invisible spaces) -> as normalised
    "Adio\u0301s,\u00a0mundo\u200b  cruel. ": "Adiós, mundo cruel.",
    "\ufeff¿Que\u0301\u202fhora\tes?": "¿Qué hora es?",
}


@pytest.mark.parametrize("level", ["char", "word"])
def test_codecs_normalise_text_so_no_caller_can_forget(level):
    """`Codec` normalises text on the way in (as `read_pairs` does), so text that never went
    through a pair file (a request, a built-in corpus, a plot) meets the vocabulary as
    training text did."""
    from seq2seq.data import normalize

    assert all(normalize(raw) == clean for raw, clean in UNNORMALISED.items())
    codec = Codec.fit(make_tokenizer(level), UNNORMALISED.values())
    for raw, clean in UNNORMALISED.items():
        assert codec.encode(raw) == codec.encode(clean) and UNK_ID not in codec.encode(raw)
        assert codec.tokenize(raw) == codec.tokenizer.tokenize(clean)
    fitted_raw = Codec.fit(make_tokenizer(level), UNNORMALISED)
    assert fitted_raw.vocabulary.tokens == codec.vocabulary.tokens


def test_subword_codecs_normalise_text_too():
    from seq2seq.vocab import SubwordTokenizer

    tokenizer = SubwordTokenizer.train([*UNNORMALISED] * 20, vocab_size=30)
    assert "\u200b" not in "".join(
        tokenizer.processor.id_to_piece(i) for i in range(tokenizer.processor.get_piece_size())
    )
    codec = Codec.fit(tokenizer, UNNORMALISED)
    for raw, clean in UNNORMALISED.items():
        assert codec.encode(raw) == codec.encode(clean)
        assert codec.decode([*codec.encode(raw), END_ID]) == clean


def test_batches_of_pairs_not_read_from_a_file_are_normalised():
    """Built-in corpora do not pass through `read_pairs`: their batches are normalised too."""
    from seq2seq.batches import PairBatches
    from seq2seq.data import Pair

    raw, clean = [Pair(text, text) for text in UNNORMALISED], [Pair(text, text) for text in UNNORMALISED.values()]
    codec = Codec.fit(make_tokenizer("char"), UNNORMALISED.values())
    batches = [PairBatches.from_pairs(codec, codec, pairs, batch_size=2, shuffle=False) for pairs in (raw, clean)]
    assert len(batches[0]) == len(batches[1]) == 1
    (raw_inputs, raw_targets), (inputs, targets) = batches[0][0], batches[1][0]
    np.testing.assert_array_equal(raw_targets, targets)
    for name, ids in inputs.items():
        np.testing.assert_array_equal(raw_inputs[name], ids)
