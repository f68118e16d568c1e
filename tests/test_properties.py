"""Property-based tests (hypothesis) of what reads text: the pair reader, normalisation,
tokenizers and codecs, given arbitrary Unicode (combining marks, right-to-left text,
emoji, lone surrogates from errors="surrogateescape"), byte-order marks, NUL bytes, CR,
CRLF and mixed newlines, empty sides and random bytes.

A pair file either reads, its malformed lines skipped and reported by file and line, or
stops with a DataError naming the file (and the line): never another exception. Each
round-trip test says in its docstring what the tokenizer promises.
"""

from __future__ import annotations

import json
import random
import sys
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seq2seq.data import DataError, Pair, normalize, read_numbered_pairs, read_pairs
from seq2seq.vocab import (
    COMBINING_MARKS,
    SPECIALS,
    UNK,
    CharTokenizer,
    Codec,
    SubwordTokenizer,
    WordTokenizer,
    make_tokenizer,
)

EXAMPLES = settings(max_examples=200, deadline=None, database=None)
FEW_EXAMPLES = settings(max_examples=80, deadline=None, database=None)

# Characters that have broken text handling somewhere: controls, newlines, byte-order
# mark, invisible and odd spaces, line separators, combining marks (Latin, Devanagari,
# Arabic, Hebrew), variation selector, emoji and their modifiers, right-to-left letters
# and override, lone surrogates (as errors="surrogateescape" gives undecodable bytes).
AWKWARD = [
    *"\x00\x01\x1b\x7f\t\x0b\x0c\x1c\x1f\x85",
    *"\ufeff\u200b\u200c\u200d\u2060\u00a0\u2009\u202f\u3000\u2028\u2029\u2000\u2001",
    *"\u0301\u0308\u0327\u093f\u094d\u0940\u064e\u0652\u05b8\u05bc\u20dd\ufe0f",
    *"\U0001f600\U0001f3fd\U0001f1ea\U0001f1f8\u2764\u05d0\u05e9\u0627\u0644\u202e\u202c",
    *"\ufb01\uff21\u2460\u1e9b\u0130\u00df",
    "\udc80",
    "\udcff",
    "\ud800",
]
any_char = st.one_of(st.characters(), st.sampled_from(AWKWARD), st.sampled_from(" \t\r\n"))
any_text = st.lists(any_char, max_size=40).map("".join)


def _is_whitespace_free(text: str) -> bool:
    return not any(c.isspace() for c in text.replace(" ", ""))


# --- normalisation ---------------------------------------------------------------------


@EXAMPLES
@given(any_text)
@example("e\u200b\u0301")  # removing the zero-width space brought e and its accent together: not NFC
@example("a\u2028b\x85c\x1fd\r\ne")  # line separators, NEL and CRLF stayed inside the text
@example("\udcff caf\u00e9")  # a lone surrogate: the text could not be written as UTF-8
@example("\u2000x\u2001")  # NFC makes these spaces other spaces
def test_normalize_keeps_its_promises(text):
    """normalize's docstring: the result is NFC, encodes as UTF-8, holds no whitespace but
    single plain spaces between other characters, no invisible characters, and is its own
    normalisation."""
    clean = normalize(text)
    assert unicodedata.is_normalized("NFC", clean)
    clean.encode("utf-8")  # no lone surrogate
    assert _is_whitespace_free(clean)
    assert "  " not in clean and clean == clean.strip(" ")
    assert not any(c in clean for c in "\u200b\u200c\u200d\u2060\ufeff")
    assert normalize(clean) == clean


def test_normalize_regressions():
    """The bugs the properties found, as plain cases."""
    assert normalize("e\u200b\u0301") == "\u00e9"
    assert normalize("a\u2028b\u2029c\x85d\x1ce\rf\ng") == "a b c d e f g"
    assert normalize("x\udcffy") == "x\ufffdy"


# --- the pair reader -------------------------------------------------------------------

NEWLINES = ["\n", "\r\n", "\r"]
# A line's text: anything but a newline (they separate the lines), often with a tab.
line_char = st.one_of(
    st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]),
    st.sampled_from([*AWKWARD[:-1], "\t", "\t", " "]),
)
line_text = st.lists(line_char, max_size=20).map("".join).filter(lambda t: "\r" not in t and "\n" not in t)


def _expected(raw: bytes) -> Pair | str | None:
    """What the reader should make of one line's bytes (without its newline): a Pair, None
    for a blank line, or why it is malformed (a word of the message)."""
    if b"\x00" in raw:
        return "NUL"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "UTF-8"
    if not text.strip():
        return None
    columns = text.split("\t")
    if len(columns) < 2:
        return "tab"
    source, target = normalize(columns[0]), normalize(columns[1])
    if not source:
        return "source"
    if not target:
        return "target"
    return Pair(source, target)


@st.composite
def pair_files(draw):
    """(file bytes, each line's bytes): lines of text joined by LF, CRLF or CR (mixed),
    with or without a byte-order mark and a final newline; undecodable bytes come from
    lone surrogates written with errors="surrogateescape"."""
    texts = draw(st.lists(line_text, min_size=1, max_size=12))
    lines = [text.encode("utf-8", "surrogateescape") for text in texts]
    ends = draw(st.lists(st.sampled_from(NEWLINES), min_size=len(lines), max_size=len(lines)))
    if not draw(st.booleans()):
        ends[-1] = ""
    for i in range(len(lines) - 1):  # CR, then an empty line ended by LF: that is a CRLF
        if ends[i] == "\r" and not lines[i + 1] and ends[i + 1].startswith("\n"):
            ends[i + 1] = "\r"
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    data = bom + b"".join(line + end.encode() for line, end in zip(lines, ends, strict=True))
    lines[0] = (bom + lines[0]).removeprefix(b"\xef\xbb\xbf")  # the file's mark, or the line's own
    return data, lines


@EXAMPLES
@given(pair_files())
@example((b"a\tb\rc\td\r", [b"a\tb", b"c\td"]))  # CR newlines: one long line, 'b\rc' read as a target
@example((b"a\tb\r\nc\td\re\tf\n", [b"a\tb", b"c\td", b"e\tf"]))  # mixed newlines
@example((b"\x00a\x00\t\x00b\x00", [b"\x00a\x00\t\x00b\x00"]))  # UTF-16 text without a mark: NULs in pairs
def test_pair_files_read_line_by_line(tmp_path_factory, case):
    """Each line is read on its own, numbered as editors number lines (LF, CRLF and lone CR
    end one): good lines give their pairs in order, a malformed one is skipped and reported
    by file and line, or with `strict` stops the reading with a DataError naming them."""
    data, lines = case
    path = tmp_path_factory.getbasetemp() / "pairs.tsv"
    path.write_bytes(data)
    expected = {number: _expected(raw) for number, raw in enumerate(lines, start=1)}
    good = [(n, e) for n, e in expected.items() if isinstance(e, Pair)]
    bad = [(n, e) for n, e in expected.items() if isinstance(e, str)]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-16 mark: the whole file refused
        with pytest.raises(DataError, match="UTF-16"):
            read_pairs(path)
        return
    reports: list[str] = []
    if good:
        assert read_numbered_pairs(path, report=reports.append) == good
    else:
        with pytest.raises(DataError, match="no usable pairs") as error:
            read_pairs(path, report=reports.append)
        assert error.value.path == str(path)
    skipped = [line for line in reports if line.startswith("skipped ")]
    assert [line.split(":")[1] for line in skipped] == [str(n) for n, _ in bad[:5]]
    assert all(f"{path}:{n}:" in line and reason in line for line, (n, reason) in zip(skipped, bad, strict=False))
    if bad:
        assert f"skipped {len(bad)} malformed line(s)" in reports[-1]
        with pytest.raises(DataError) as error:
            read_pairs(path, strict=True)
        assert (error.value.path, error.value.line) == (str(path), bad[0][0])
    elif good:
        assert read_pairs(path, strict=True) == [pair for _, pair in good]


bytes_of_text_files = st.lists(
    st.sampled_from([b"\t", b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xfe", b"\xc3", b"\xa9", b"a", b"\xef\xbb\xbf"]),
    max_size=60,
).map(b"".join)


@EXAMPLES
@given(st.one_of(st.binary(max_size=400), bytes_of_text_files), st.booleans())
@example("hola\tola\nadios\tbye\n".encode("utf-16"), False)  # a UTF-16 file
@example("hola\tola\nadios\tbye\n".encode("utf-16-le"), True)  # without its mark: NULs in the pairs
@example(b"\xef\xbb\xbf", False)  # a byte-order mark alone
@example(b"", True)
def test_any_bytes_read_or_fail_with_a_data_error(tmp_path_factory, data, strict):
    """Random bytes (a binary file given as pairs) read as pairs or stop with a DataError
    naming the file: never another exception."""
    path = tmp_path_factory.getbasetemp() / "binary.tsv"
    path.write_bytes(data)
    reports: list[str] = []
    try:
        pairs = read_pairs(path, strict=strict, report=reports.append)
    except DataError as error:
        assert error.path == str(path) and str(error).startswith(f"{path}:")
        return
    assert pairs and all(p.source and p.target and "\x00" not in p.source + p.target for p in pairs)
    assert all(f"{path}:" in line for line in reports)


def test_a_utf16_file_is_refused_whole(tmp_path):
    """A UTF-16 file read as pairs whose texts were full of NULs (its lines after the first
    decode as UTF-8); without a byte-order mark, every line is skipped for its NULs."""
    path = tmp_path / "utf16.tsv"
    path.write_bytes("hola\thello\nadios\tbye\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"utf16.tsv:1: a UTF-16 byte-order mark"):
        read_pairs(path, report=lambda _: None)
    path.write_bytes("hola\thello\nadios\tbye\n".encode("utf-16-le"))
    reports: list[str] = []
    with pytest.raises(DataError, match="no usable pairs"):
        read_pairs(path, report=reports.append)
    assert "utf16.tsv:2: a NUL byte" in reports[1]


def test_a_very_long_line_reads(tmp_path):
    path = tmp_path / "long.tsv"
    words = " ".join(["palabra"] * 200_000)
    path.write_text(f"{words}\tword\ncorta\tshort\n", encoding="utf-8")
    pairs = read_pairs(path)
    assert len(pairs) == 2 and len(pairs[0].source) == len(words)


# --- tokenizers and codecs -------------------------------------------------------------


@EXAMPLES
@given(any_text, st.lists(any_text, max_size=4), st.booleans())
@example("caf\u00e9 \U0001f600\u05e9\u05c1", ["caf\u00e9"], False)
@example("\udcff", ["x"], False)
def test_char_codec_round_trips_in_its_vocabulary(text, training, lowercase):
    """Char level promises `detokenize` is `"".join`: decode(encode(x)) is x normalised
    (lower-cased with `lowercase`), each character the vocabulary lacks given as <unk>."""
    codec = Codec.fit(CharTokenizer(lowercase=lowercase), [*training, text[: len(text) // 2]])
    clean = normalize(text).lower() if lowercase else normalize(text)
    expected = "".join(c if c in codec.vocabulary and c not in SPECIALS else UNK for c in clean)
    assert codec.decode(codec.encode(text)) == expected
    assert len(codec.tokenize(text)) == len(codec.encode(text))


@EXAMPLES
@given(any_text, st.booleans())
@example("\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e", False)  # Hindi: cut at each vowel sign
@example("\u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627", False)  # Arabic with harakat
@example("$ \u0301a", False)  # a word starting with a mark after opening punctuation
@example("(\u0301", False)
@example("a\U0001d167b \U0001d167 \u2764\ufe0f\U0001f600", False)  # marks above U+FFFF
def test_word_tokens_survive_detokenizing(text, lowercase):
    """Word level promises tokenize(detokenize(tokenize(x))) == tokenize(x) for any text,
    and that no word is cut at a combining mark."""
    tokenizer = WordTokenizer(lowercase=lowercase)
    tokens = tokenizer.tokenize(normalize(text))
    assert tokenizer.tokenize(tokenizer.detokenize(tokens)) == tokens
    clean, position = normalize(text).lower() if lowercase else normalize(text), 0
    for token in tokens:  # a mark starts a token only where no character holds it
        start = clean.index(token, position)
        if unicodedata.category(token[0])[0] == "M":
            assert start == 0 or clean[start - 1] == " "
        position = start + len(token)


WORDS = [
    "hola",
    "qu\u00e9",
    "ni\u00f1o",
    "don't",
    "twenty-one",
    "Stra\u00dfe",
    "\u0130stanbul",
    "42",
    "\u0939\u093f\u0928\u094d\u0926\u0940",  # Hindi
    "\u092d\u093e\u0937\u093e",
    "\u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627",  # Arabic with harakat
    "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd",  # Hebrew with niqqud
    "\u65e5\u672c\u8a9e",
    "\u0b95\u0bca\u0bb4\u0bc1",  # Tamil
    "q\u0307x",  # a letter whose accent has no precomposed form
    "\u2764\ufe0f",  # an emoji with its variation selector
]


@st.composite
def ordinary_sentences(draw):
    """Words separated by single spaces, commas after some, an opening mark before and a
    closing one after (as WordTokenizer's rules place them)."""
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6))
    commas = draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    body = " ".join(
        w + ("," if comma and i < len(words) - 1 else "")
        for i, (w, comma) in enumerate(zip(words, commas, strict=True))
    )
    opening, closing = draw(
        st.sampled_from([("", ""), ("\u00bf", "?"), ("\u00a1", "!"), ("(", ")"), ('"', '"'), ("", ".")])
    )
    return normalize(f"{opening}{body}{closing}")


@EXAMPLES
@given(ordinary_sentences(), st.booleans())
@example("\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e", False)
def test_word_codec_round_trips_ordinary_sentences(sentence, lowercase):
    """Word level promises `detokenize` inverts `tokenize` on ordinary sentences: words (in
    any script, accents and vowel signs included) and numbers separated by single spaces,
    punctuation placed by its rules. Through a codec fitted on them, nothing is <unk>."""
    tokenizer = WordTokenizer(lowercase=lowercase)
    expected = sentence.lower() if lowercase else sentence
    assert tokenizer.detokenize(tokenizer.tokenize(sentence)) == expected
    codec = Codec.fit(tokenizer, [sentence])
    assert codec.decode(codec.encode(sentence)) == expected


def test_old_word_vocabularies_still_split_at_marks(tmp_path):
    """A word vocabulary saved before `marks` split words at combining marks: it is read
    so (its tokens are those pieces), a new one records marks=True and joins them."""
    from seq2seq.modeldir import ModelFileError, check_vocabulary

    hindi = "\u0939\u093f\u0928\u094d\u0926\u0940"
    old = {"tokenizer": {"kind": "word", "lowercase": False}, "tokens": [*SPECIALS, *hindi]}
    (tmp_path / "old.json").write_text(json.dumps(old), encoding="utf-8")
    check_vocabulary(tmp_path / "old.json")
    codec = Codec.load(tmp_path / "old.json")
    assert codec.tokenize(hindi) == list(hindi) and 3 not in codec.encode(hindi)
    new = Codec.fit(make_tokenizer("word"), [hindi])
    new.save(tmp_path / "new.json")
    check_vocabulary(tmp_path / "new.json")
    assert Codec.load(tmp_path / "new.json").tokenize(hindi) == [hindi]
    bad = {**old, "tokenizer": {"kind": "word", "marks": "yes"}}
    (tmp_path / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ModelFileError, match="tokenizer.marks: expected true or false"):
        check_vocabulary(tmp_path / "bad.json")


def test_combining_marks_lie_where_the_class_looks():
    """COMBINING_MARKS is built from planes 0, 1 and 14 only: every mark is there."""
    import re

    marks = re.compile(f"[{COMBINING_MARKS}]")
    every = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c))[0] == "M"]
    assert all(marks.match(c) for c in every)
    assert sum(1 for c in map(chr, range(0x3000)) if marks.match(c)) == sum(1 for c in every if ord(c) < 0x3000)


# Subword: a tiny SentencePiece model per kind, fitted once on generated text.
SUBWORD_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyz\u00e1\u00e9\u00f1\u00fc\u05d0\u05d1\u05e9\u0915\u093f\u094d\u0924\u65e5\u672c"
)


def _training_texts() -> list[str]:
    rng = random.Random(0)
    words = ["".join(rng.choice(SUBWORD_ALPHABET) for _ in range(rng.randint(1, 7))) for _ in range(80)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(400)]
    return [*texts, SUBWORD_ALPHABET]  # every character at least once


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def subword_codec(request) -> Codec:
    tokenizer = SubwordTokenizer.train(_training_texts(), vocab_size=80, model_type=request.param)
    return Codec.fit(tokenizer, _training_texts())


subword_text = st.lists(st.sampled_from(SUBWORD_ALPHABET + "   "), min_size=1, max_size=30).map("".join)


@EXAMPLES
@given(text=subword_text)
@example(text="iefbfbjifcff gghabdi")
def test_subword_codec_round_trips_text_of_its_characters(subword_codec, text):
    """Subword level promises "nothing is out of reach": text made of characters of the
    training text (and left alone by SentencePiece's NFKC) decodes to itself normalised.
    BPE made pieces (\"▁ag\") that no training text ended up in, so the vocabulary lacked
    them and they became <unk>; now such a piece is spelled out in pieces it has."""
    clean = normalize(text)
    assert unicodedata.is_normalized("NFKC", clean)
    ids = subword_codec.encode(text)
    assert 3 not in ids  # <unk>
    assert subword_codec.decode(ids) == clean


@EXAMPLES
@given(any_text)
@example("\udcff")  # SentencePiece raised RuntimeError on a lone surrogate
@example("<pad> <unk>")
def test_codecs_take_any_text(subword_codec, text):
    """Any text, at every level: the codec's ids are in its vocabulary, as many as its
    tokens, and decode to text; no exception."""
    for codec in (subword_codec, Codec.fit(CharTokenizer(), ["abc"]), Codec.fit(WordTokenizer(), ["a b"])):
        ids = codec.encode(text)
        assert len(ids) == len(codec.tokenize(text)) and all(0 <= i < len(codec) for i in ids)
        assert isinstance(codec.decode(ids), str)
    assert isinstance(subword_codec.tokenizer.tokenize(text), list)  # the tokenizer alone too


@FEW_EXAMPLES
@given(st.lists(any_text, min_size=1, max_size=5), st.sampled_from(["char", "word"]))
@example(["\udcff x"], "char")  # a surrogate in the vocabulary: not writable as UTF-8
def test_fitted_vocabularies_save_and_load(tmp_path_factory, texts, level):
    """A vocabulary fitted on any text is written as UTF-8 JSON and read back the same."""
    codec = Codec.fit(make_tokenizer(level), texts)
    path = tmp_path_factory.getbasetemp() / f"{level}.json"
    codec.save(path)
    loaded = Codec.load(path)
    assert loaded.vocabulary.tokens == codec.vocabulary.tokens
    assert all(loaded.encode(text) == codec.encode(text) for text in texts)


def test_subword_vocabularies_hold_the_characters_of_their_pieces(subword_codec):
    """Every character of the training text is in the vocabulary, so spelling a piece out
    always ends in known pieces."""
    pieces = [t for t in subword_codec.vocabulary.tokens if t not in SPECIALS]
    assert all(c in subword_codec.vocabulary for piece in pieces for c in piece)


def test_a_piece_the_vocabulary_lacks_is_spelled_out():
    """A vocabulary of characters only (as `max_size` can leave one): the pieces of a text
    are spelled out in them instead of becoming <unk>."""
    from seq2seq.vocab import Vocabulary

    tokenizer = SubwordTokenizer.train(["abc abc abd abd"] * 30, vocab_size=20, model_type="bpe")
    assert any(len(piece) > 1 for piece in tokenizer.tokenize("abc abd"))
    codec = Codec(tokenizer, Vocabulary([*SPECIALS, "\u2581", "a", "b", "c", "d"]))
    assert set(codec.tokenize("abc abd")) <= {"\u2581", "a", "b", "c", "d"}
    assert codec.decode(codec.encode("abc abd")) == "abc abd"


def test_a_path_given_as_a_directory_or_missing_is_an_oserror(tmp_path):
    """Not a pair file at all: an OSError naming it (the CLI prints it in one line)."""
    for path in (tmp_path, tmp_path / "missing.tsv"):
        with pytest.raises(FileNotFoundError, match=str(path)):
            read_pairs(path)
