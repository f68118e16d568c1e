"""Pairs of texts: read them from files, normalise them, split them, or generate them.

A pair file has one pair per line: `source<TAB>target`, optionally followed by more
columns (the Tatoeba/Anki export adds an attribution column), which are ignored.
Built-in corpora are named `builtin:NAME` and are generated, so nothing is downloaded.
`tatoeba:NAME` (spa-eng, fra-eng, ...) is a Tatoeba/Anki pair file, downloaded once into a cache
(see download.py).
"""

from __future__ import annotations

import random
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .errors import UserError
from .files import atomic_path

BUILTIN_PREFIX = "builtin:"

# Runs of whitespace (str.isspace): spaces that are not U+0020 (no-break, narrow no-break,
# thin, ...), tabs, line and paragraph separators, NEL, the ASCII separators \x1c-\x1f.
_WHITESPACE = re.compile(r"\s+")
# Invisible characters: zero-width space/joiners, word joiner, byte-order mark.
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
# Lone surrogates: bytes that were not UTF-8, kept by errors="surrogateescape" (os.fsdecode,
# sys.argv); such text cannot be written as UTF-8 (nor given to SentencePiece).
_SURROGATES = re.compile("[\ud800-\udfff]")
# Byte-order marks of UTF-16 (and UTF-32: its little-endian mark starts with UTF-16's).
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


class DataError(UserError, ValueError):
    """A line of a pair file cannot be used; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


def normalize(text: str) -> str:
    """Text as vocabularies see it: lone surrogates (undecodable bytes kept by
    errors="surrogateescape") made U+FFFD, invisible characters (zero-width space and
    joiners, word joiner, byte-order mark) removed, every run of whitespace (odd spaces,
    tabs, line separators) made one plain space, none at either end, Unicode NFC.

    The result is NFC, encodes as UTF-8, holds no whitespace but single U+0020 spaces
    between other characters, and is its own normalisation.
    """
    text = _SURROGATES.sub("\ufffd", text)
    text = _ZERO_WIDTH.sub("", text)
    text = _WHITESPACE.sub(" ", text).strip(" ")
    # last: removing an invisible character can bring a letter and its accent together
    return unicodedata.normalize("NFC", text)


def parse_line(raw: bytes, path: str | Path, line: int) -> Pair | None:
    """One line of a pair file as a Pair; None for a blank line; DataError if malformed."""
    if b"\x00" in raw:  # UTF-8 text has none; UTF-16 text and binary files do
        raise DataError(path, line, f"a NUL byte (byte {raw.index(0)}): a binary or UTF-16 file? Pair files are UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, line, f"not valid UTF-8 (byte {error.start})") from None
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    columns = text.split("\t")
    if len(columns) < 2:
        raise DataError(path, line, "no tab: expected 'source<TAB>target'")
    source, target = normalize(columns[0]), normalize(columns[1])
    if not source:
        raise DataError(path, line, "empty source side")
    if not target:
        raise DataError(path, line, "empty target side")
    return Pair(source, target)


def read_pairs(
    path: str | Path,
    strict: bool = False,
    report: Callable[[str], None] | None = None,
) -> list[Pair]:
    """Read a pair file. Malformed lines stop with DataError if `strict`, else are skipped.

    Skipped lines are reported through `report` (stderr by default): the first few by
    file and line, then a count. Lines end at LF, CRLF or a lone CR; a UTF-8 byte-order
    mark at the start is ignored, a UTF-16 one is an error.
    """
    return [pair for _, pair in read_numbered_pairs(path, strict, report)]


def read_numbered_pairs(
    path: str | Path,
    strict: bool = False,
    report: Callable[[str], None] | None = None,
) -> list[tuple[int, Pair]]:
    """`read_pairs`, each pair with its line number, for messages about it."""
    report = report or _to_stderr
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pair file")
    pairs: list[tuple[int, Pair]] = []
    skipped: list[DataError] = []
    with path.open("rb") as file:
        for number, raw in enumerate(_lines(file), start=1):
            if number == 1:
                if raw.startswith(_UTF16_BOMS):
                    raise DataError(path, 1, "a UTF-16 byte-order mark: the file is UTF-16; convert it to UTF-8")
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                pair = parse_line(raw, path, number)
            except DataError as error:
                if strict:
                    raise
                skipped.append(error)
                continue
            if pair is not None:
                pairs.append((number, pair))
    if skipped:
        for error in skipped[:5]:
            report(f"skipped {error}")
        more = f" ({len(skipped) - 5} more not shown)" if len(skipped) > 5 else ""
        report(f"{path}: skipped {len(skipped)} malformed line(s){more}; use --strict to stop at the first")
    if not pairs:
        raise DataError(path, None, "no usable pairs in the file")
    return pairs


def _lines(file: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a file opened in binary mode, without their ends. A line ends at LF,
    CRLF or a lone CR (old Mac files, or a mix), as Python's universal newlines count them:
    a CR-only file is not one long line whose CRs end up inside the target texts."""
    for raw in file:  # split at LF only
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if b"\r" in raw:
            yield from raw.split(b"\r")
        else:
            yield raw


def write_pairs(pairs: Iterable[Pair], path: str | Path) -> None:
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8", newline="\n") as out:
        for pair in pairs:
            out.write(f"{pair.source}\t{pair.target}\n")


def load_pairs(
    spec: str,
    num_samples: int | None = None,
    first: bool = False,
    reverse: bool = False,
    strict: bool = False,
    seed: int = 0,
) -> list[Pair]:
    """Pairs from a file, a `builtin:NAME` corpus or a `tatoeba:NAME` download, sampled and oriented as asked.

    `num_samples` takes that many pairs: a reproducible random sample (by `seed`) or,
    with `first`, the first ones. `reverse` swaps source and target.
    """
    from .download import TATOEBA_PREFIX, download

    if spec.startswith(BUILTIN_PREFIX):
        pairs = builtin_corpus(spec.removeprefix(BUILTIN_PREFIX), seed=seed)
    elif spec.startswith(TATOEBA_PREFIX):  # read from the cache, downloaded first if missing
        pairs = read_pairs(download(spec.removeprefix(TATOEBA_PREFIX)), strict=strict)
    else:
        pairs = read_pairs(spec, strict=strict)
    if num_samples is not None and num_samples < len(pairs):
        if first:
            pairs = pairs[:num_samples]
        else:
            chosen = sorted(random.Random(seed).sample(range(len(pairs)), num_samples))
            pairs = [pairs[i] for i in chosen]
    if reverse:
        pairs = [Pair(p.target, p.source) for p in pairs]
    return pairs


@dataclass(frozen=True)
class Split:
    train: list[Pair]
    dev: list[Pair]
    test: list[Pair]

    PARTS = ("train", "dev", "test")

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for part in self.PARTS:
            write_pairs(getattr(self, part), directory / f"{part}.tsv")

    @classmethod
    def load(cls, directory: str | Path) -> Split:
        directory = Path(directory)
        parts = {}
        for part in cls.PARTS:
            path = directory / f"{part}.tsv"
            parts[part] = read_pairs(path, strict=True) if path.stat().st_size else []
        return cls(**parts)


def split_by_source(pairs: list[Pair], dev_fraction: float, test_fraction: float, seed: int = 0) -> Split:
    """Split into train/dev/test so that all pairs with the same source land in one part.

    Many sources have several translations; splitting pairs instead of sources would put
    test sentences in the training data.
    """
    sources = sorted({p.source for p in pairs})
    random.Random(seed).shuffle(sources)
    n_test = round(len(sources) * test_fraction)
    n_dev = round(len(sources) * dev_fraction)
    if len(sources) >= 3:  # keep every requested part non-empty on small data
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_dev = max(n_dev, 1 if dev_fraction > 0 else 0)
    part_of = {s: "test" for s in sources[:n_test]}
    part_of.update({s: "dev" for s in sources[n_test : n_test + n_dev]})
    parts: dict[str, list[Pair]] = {"train": [], "dev": [], "test": []}
    for pair in pairs:
        parts[part_of.get(pair.source, "train")].append(pair)
    if not parts["train"]:
        raise ConfigError(
            f"no training pairs left after the split ({len(pairs)} pairs, {len(sources)} distinct sources); "
            "use more data or smaller dev/test fractions"
        )
    return Split(**parts)


# --- built-in generated corpora ------------------------------------------------------


def numbers_en_es(seed: int = 0, size: int = 30_000) -> list[Pair]:
    """Numbers written out in English and in Spanish, e.g. 'three hundred and forty-two'
    -> 'trescientos cuarenta y dos'. All numbers below 1,000 plus a random sample (by
    `seed`) of larger ones below one million, `size` in all."""
    from num2words import num2words

    small = list(range(1000))
    large = random.Random(seed).sample(range(1000, 1_000_000), max(size - len(small), 0))
    return [Pair(num2words(n, lang="en"), num2words(n, lang="es")) for n in small + large]


def dates_en_es(seed: int = 0, size: int = 20_000) -> list[Pair]:
    """Dates written in English and Spanish, e.g. 'Thursday, March 4, 2021' ->
    'jueves, 4 de marzo de 2021', in Babel's long and full formats."""
    import datetime

    from babel.dates import format_date

    rng = random.Random(seed)
    start = datetime.date(1900, 1, 1).toordinal()
    days = rng.sample(range(start, start + 200 * 365), size)
    pairs = []
    for day in days:
        date = datetime.date.fromordinal(day)
        style = rng.choice(("long", "full"))
        pairs.append(Pair(format_date(date, style, locale="en"), format_date(date, style, locale="es")))
    return pairs


def reverse_strings(seed: int = 0, size: int = 5_000) -> list[Pair]:
    """Short random lower-case strings and the same strings reversed: a task small
    enough to learn in seconds, used by the tests."""
    rng = random.Random(seed)
    alphabet = "abcdefgh"
    pairs = {}
    while len(pairs) < size:
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
        pairs[word] = Pair(word, word[::-1])
    return list(pairs.values())


BUILTIN_CORPORA: dict[str, Callable[..., list[Pair]]] = {
    "numbers-en-es": numbers_en_es,
    "dates-en-es": dates_en_es,
    "reverse": reverse_strings,
}


def builtin_corpus(name: str, seed: int = 0) -> list[Pair]:
    try:
        make = BUILTIN_CORPORA[name]
    except KeyError:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_CORPORA)
        raise ConfigError(f"unknown built-in corpus {BUILTIN_PREFIX}{name}; known: {known}") from None
    return make(seed=seed)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)
