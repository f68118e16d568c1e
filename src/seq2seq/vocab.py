"""Text -> tokens -> ids and back: tokenizers, vocabularies with special tokens, codecs.

Every vocabulary starts with the same four special tokens, so their ids are fixed:

    <pad>=0  fills sequences up to the length of the longest in a batch (masked out)
    <start>=1  the decoder's first input
    <end>=2  the decoder's last output: generation stops when it is produced
    <unk>=3  stands for any token not in the vocabulary (never a KeyError)
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .data import _SURROGATES, normalize
from .files import write_atomic

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
PAD_ID, START_ID, END_ID, UNK_ID = range(4)


class Tokenizer(Protocol):
    """Splits text into tokens and joins tokens back into text."""

    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: Sequence[str]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class CharTokenizer:
    """Every character is a token, spaces included: `detokenize` is exactly `"".join`
    (of the lower-cased text, with `lowercase`)."""

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        return list(text.lower() if self.lowercase else text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "lowercase": self.lowercase}


def _combining_marks(*planes: int) -> str:
    """A regular expression's character class (without brackets) of the combining marks
    (Unicode categories Mn, Mc, Me) of these planes: Python's `\\w` holds none of them."""
    codes = itertools.chain.from_iterable(range(plane << 16, (plane + 1) << 16) for plane in planes)
    marks = [c for c in codes if unicodedata.category(chr(c))[0] == "M"]
    ranges = []
    for _, run in itertools.groupby(enumerate(marks), lambda item: item[1] - item[0]):
        run = [c for _, c in run]
        ranges.append(re.escape(chr(run[0])) + ("-" + re.escape(chr(run[-1])) if len(run) > 1 else ""))
    return "".join(ranges)


# Marks lie in planes 0, 1 and 14 (a test checks the others). Python's re matches a class
# of characters below U+10000 against a bitmap, but one reaching above through its ranges,
# one by one: tokenizing took 3-4 times as long with it. So text with no character above
# U+FFFF (most text) is tokenized with the marks of plane 0 only.
BMP_COMBINING_MARKS = _combining_marks(0)
COMBINING_MARKS = BMP_COMBINING_MARKS + _combining_marks(1, 14)


class WordTokenizer:
    """Words (with inner hyphens and apostrophes: "don't", "twenty-one") and single
    punctuation marks are tokens: "¿Qué hora es?" -> ["¿", "Qué", "hora", "es", "?"]. A
    combining mark belongs to the token before it: "हिन्दी" (vowel signs, virama) is one
    word, "❤️" (a variation selector) one token.

    `detokenize` puts the spaces back by rule: none before closing punctuation, none after
    opening punctuation. It inverts `tokenize` on ordinary sentences (words and numbers
    separated by single spaces, punctuation placed by those rules), and on any text
    `tokenize(detokenize(tokenize(text))) == tokenize(text)`.

    `marks=False` splits words at combining marks, each mark a token, as vocabularies saved
    before `marks` existed did (Codec.load reads them so).
    """

    _TOKEN = re.compile(
        rf"[\w{COMBINING_MARKS}]+(?:[-'’][\w{COMBINING_MARKS}]+)*|[^\w\s{COMBINING_MARKS}][{COMBINING_MARKS}]*"
    )
    _BMP_TOKEN = re.compile(
        rf"[\w{BMP_COMBINING_MARKS}]+(?:[-'’][\w{BMP_COMBINING_MARKS}]+)*|[^\w\s{BMP_COMBINING_MARKS}][{BMP_COMBINING_MARKS}]*"
    )
    _TOKEN_SPLITTING_MARKS = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")
    _NO_SPACE_BEFORE = set(".,!?;:%)]}»”…")
    _NO_SPACE_AFTER = set("¿¡([{«“$")

    def __init__(self, lowercase: bool = False, marks: bool = True) -> None:
        self.lowercase = lowercase
        self.marks = marks

    def tokenize(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        if not self.marks:
            return self._TOKEN_SPLITTING_MARKS.findall(text)
        if text.isascii() or max(text) < "\U00010000":
            return self._BMP_TOKEN.findall(text)
        return self._TOKEN.findall(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        out: list[str] = []
        glue_next = True
        open_quote = False
        for token in tokens:
            if token == '"':  # straight quotes alternate between opening and closing
                open_quote = not open_quote
                glue = not open_quote
                after = open_quote
            else:
                glue = token in self._NO_SPACE_BEFORE
                after = token in self._NO_SPACE_AFTER
            if self.marks and unicodedata.category(token[0])[0] == "M":
                glue = glue_next = False  # glued on, it would belong to the token before
            if out and not (glue or glue_next):
                out.append(" ")
            out.append(token)
            glue_next = after
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "word", "lowercase": self.lowercase, "marks": self.marks}


class SubwordTokenizer:
    """SentencePiece pieces (unigram or BPE), e.g. "¿Qué hora es?" -> ["▁¿", "Qué", "▁hora",
    "▁es", "?"]: frequent words stay whole, rare words are split, nothing is out of reach.

    The SentencePiece model is trained on the training texts only and saved as its own
    (protobuf) file beside the vocabulary.
    """

    def __init__(self, model_proto: bytes, lowercase: bool = False) -> None:
        import sentencepiece

        self.model_proto = model_proto
        self.lowercase = lowercase
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, model_type: str = "unigram", lowercase: bool = False
    ) -> SubwordTokenizer:
        import io

        import sentencepiece

        model = io.BytesIO()
        texts = (normalize(text) for text in texts)  # as a Codec gives texts to `tokenize`
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=(text.lower() if lowercase else text for text in texts),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            hard_vocab_limit=False,  # small corpora: as many pieces as there are, up to vocab_size
            num_threads=2,
            minloglevel=2,
        )
        return cls(model.getvalue(), lowercase=lowercase)

    def tokenize(self, text: str) -> list[str]:
        text = _SURROGATES.sub("\ufffd", text)  # SentencePiece takes UTF-8 only (a Codec normalises them away)
        return self.processor.encode(text.lower() if self.lowercase else text, out_type=str)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return self.processor.decode_pieces(list(tokens))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "subword", "lowercase": self.lowercase}


def make_tokenizer(kind: str, lowercase: bool = False) -> Tokenizer:
    """A char or word tokenizer (subword tokenizers are trained: `SubwordTokenizer.train`)."""
    if kind == "char":
        return CharTokenizer(lowercase=lowercase)
    if kind == "word":
        return WordTokenizer(lowercase=lowercase)
    raise ValueError(f"unknown tokenizer level {kind!r}; expected char or word")


class Vocabulary:
    """A list of tokens; a token's id is its position. The specials come first."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not repeat a token")
        self.tokens = list(tokens)
        self._ids = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], max_size: int | None = None, min_freq: int = 1) -> Vocabulary:
        """The most frequent tokens (ties broken alphabetically, so builds are reproducible),
        at least `min_freq` times seen, at most `max_size` tokens counting the specials."""
        counts = Counter(token for sequence in sequences for token in sequence)
        for special in SPECIALS:
            counts.pop(special, None)
        ranked = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(max_size - len(SPECIALS), 0)]
        return cls([*SPECIALS, *ranked])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of the tokens; tokens not in the vocabulary become <unk>."""
        return [self._ids.get(token, UNK_ID) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of the ids up to the first <end>, without <pad> and <start>."""
        tokens = []
        for i in ids:
            i = int(i)
            if i == END_ID:
                break
            if i in (PAD_ID, START_ID):
                continue
            tokens.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return tokens


class Codec:
    """A tokenizer and a vocabulary together: text <-> ids, one side of a model.

    Text is normalised on the way in (`data.normalize`, as `read_pairs` does to pair files),
    so text from anywhere (a built-in corpus, a request, a plot) meets the vocabulary as the
    training text did, and no caller has to remember to.
    """

    def __init__(self, tokenizer: Tokenizer, vocabulary: Vocabulary) -> None:
        self.tokenizer = tokenizer
        self.vocabulary = vocabulary
        self._spelled: dict[str, list[str]] = {}

    @classmethod
    def fit(cls, tokenizer: Tokenizer, texts: Iterable[str], max_size: int | None = None, min_freq: int = 1) -> Codec:
        """The tokens of the normalised texts, as `Vocabulary.build` picks them. For subword
        tokenizers the pieces' characters count too, so that a piece the vocabulary lacks
        can be spelled out in smaller ones (see `tokenize`)."""
        sequences = (tokenizer.tokenize(normalize(text)) for text in texts)
        if isinstance(tokenizer, SubwordTokenizer):
            sequences = ([*pieces, *(c for piece in pieces if len(piece) > 1 for c in piece)] for pieces in sequences)
        return cls(tokenizer, Vocabulary.build(sequences, max_size=max_size, min_freq=min_freq))

    def __len__(self) -> int:
        return len(self.vocabulary)

    def tokenize(self, text: str) -> list[str]:
        """The tokens of the normalised text. A subword piece not in the vocabulary (BPE
        makes pieces that training text never ends up in; `max_size` and `min_freq` drop
        some) is spelled out in the longest pieces that are, rather than lost to <unk>."""
        tokens = self.tokenizer.tokenize(normalize(text))
        if isinstance(self.tokenizer, SubwordTokenizer):
            return [part for token in tokens for part in self._spell(token)]
        return tokens

    def _spell(self, piece: str) -> list[str]:
        """`piece` if it is in the vocabulary, else its longest prefix that is (a special
        never is; a character that is not stays, for <unk>) and the rest spelled so."""
        if piece in self.vocabulary and piece not in SPECIALS:
            return [piece]
        if piece not in self._spelled:
            if len(self._spelled) >= 65536:  # SentencePiece gives unknown text whole: its pieces are not bounded
                self._spelled.clear()
            parts, start = [], 0
            while start < len(piece):
                end = next(
                    (
                        end
                        for end in range(len(piece), start, -1)
                        if piece[start:end] in self.vocabulary and piece[start:end] not in SPECIALS
                    ),
                    start + 1,
                )
                parts.append(piece[start:end])
                start = end
            self._spelled[piece] = parts
        return self._spelled[piece]

    def encode(self, text: str) -> list[int]:
        """The ids of the normalised text's tokens (<unk> for those not in the vocabulary)."""
        return self.vocabulary.encode(self.tokenize(text))

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.detokenize(self.vocabulary.decode(ids))

    def save(self, path: str | Path) -> None:
        """The vocabulary as JSON at `path`; a subword model beside it (`path` + .spm)."""
        path = Path(path)
        settings = self.tokenizer.to_dict()
        if isinstance(self.tokenizer, SubwordTokenizer):
            model_file = path.with_suffix(".spm")
            write_atomic(model_file, self.tokenizer.model_proto)
            settings["model_file"] = model_file.name
        document = {"tokenizer": settings, "tokens": self.vocabulary.tokens}
        write_atomic(path, json.dumps(document, ensure_ascii=False, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Codec:
        path = Path(path)
        document = json.loads(path.read_text(encoding="utf-8"))
        settings = dict(document["tokenizer"])
        kind = settings.pop("kind")
        if kind == "subword":
            model_proto = (path.parent / settings.pop("model_file")).read_bytes()
            tokenizer: Tokenizer = SubwordTokenizer(model_proto, **settings)
        elif kind == "word":  # saved without "marks": before it, words were split at combining marks
            tokenizer = WordTokenizer(**{"marks": False, **settings})
        else:
            tokenizer = make_tokenizer(kind, **settings)
        return cls(tokenizer, Vocabulary(document["tokens"]))
