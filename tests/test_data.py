from __future__ import annotations

import pytest

from seq2seq.config import ConfigError
from seq2seq.data import (
    DataError,
    Pair,
    Split,
    builtin_corpus,
    load_pairs,
    normalize,
    read_pairs,
    split_by_source,
)

from .conftest import write_text


def test_normalize_unicode_and_odd_spaces():
    decomposed = "Qu\u0065\u0301 pasa"  # e + combining acute
    assert normalize(decomposed) == "Qu\u00e9 pasa"
    assert normalize("a\u00a0b\u202fc\u2009d") == "a b c d"
    assert normalize("\ufeffho\u200bla  \u200d mundo ") == "hola mundo"


def test_reads_two_and_three_column_files(tmp_path):
    path = write_text(tmp_path / "pairs.tsv", "Go.\tVe.\nHi.\tHola.\tCC-BY 2.0 (France) Attribution: tatoeba.org\n\n")
    assert read_pairs(path) == [Pair("Go.", "Ve."), Pair("Hi.", "Hola.")]


def test_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"\xef\xbb\xbfGo.\tVe.\r\nHi.\tHola.\r\n")
    assert read_pairs(path) == [Pair("Go.", "Ve."), Pair("Hi.", "Hola.")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"no tab here", "no tab"),
        (b"\tHola.", "empty source"),
        (b"Hi.\t \xc2\xa0", "empty target"),
        (b"Caf\xe9\tCaf\xc3\xa9", "not valid UTF-8"),
    ],
)
def test_malformed_line_is_named_by_file_and_line(tmp_path, line, reason):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"Go.\tVe.\n" + line + b"\nHi.\tHola.\n")
    with pytest.raises(DataError) as error:
        read_pairs(path, strict=True)
    assert str(error.value).startswith(f"{path}:2: ")
    assert reason in str(error.value)
    assert error.value.line == 2

    messages: list[str] = []
    assert read_pairs(path, report=messages.append) == [Pair("Go.", "Ve."), Pair("Hi.", "Hola.")]
    assert any(f"{path}:2:" in m for m in messages)
    assert any("skipped 1 malformed line" in m for m in messages)


def test_skip_report_is_bounded(tmp_path):
    path = write_text(tmp_path / "bad.tsv", "x\n" * 20 + "Go.\tVe.\n")
    messages: list[str] = []
    read_pairs(path, report=messages.append)
    assert len(messages) == 6
    assert "skipped 20 malformed line(s) (15 more not shown)" in messages[-1]


def test_file_without_pairs_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="no usable pairs"):
        read_pairs(write_text(tmp_path / "empty.tsv", "\n\n"))
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_pairs(tmp_path / "nope.tsv")


def test_sampling_is_reproducible_and_first_takes_the_head(tmp_path):
    path = write_text(tmp_path / "p.tsv", "".join(f"s{i}\tt{i}\n" for i in range(100)))
    assert load_pairs(str(path), num_samples=10, seed=1) == load_pairs(str(path), num_samples=10, seed=1)
    assert load_pairs(str(path), num_samples=10, seed=1) != load_pairs(str(path), num_samples=10, seed=2)
    assert load_pairs(str(path), num_samples=3, first=True) == [Pair(f"s{i}", f"t{i}") for i in range(3)]
    assert load_pairs(str(path), num_samples=3, first=True, reverse=True)[0] == Pair("t0", "s0")


def test_split_groups_by_source_and_is_reproducible():
    pairs = [Pair(f"s{i % 40}", f"t{i}") for i in range(200)]  # each source has 5 translations
    split = split_by_source(pairs, dev_fraction=0.1, test_fraction=0.1, seed=3)
    parts = [{p.source for p in part} for part in (split.train, split.dev, split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(parts[2]) == 4 and len(split.test) == 20
    assert sorted(split.train + split.dev + split.test, key=str) == sorted(pairs, key=str)
    assert split_by_source(pairs, 0.1, 0.1, seed=3) == split


def test_split_round_trips_through_files(tmp_path):
    split = split_by_source([Pair(f"s{i}", f"t{i}") for i in range(30)], 0.1, 0.1)
    split.save(tmp_path)
    assert Split.load(tmp_path) == split


def test_split_needs_training_pairs():
    with pytest.raises(ConfigError, match="no training pairs"):
        split_by_source([Pair("a", "b"), Pair("c", "d")], 0.45, 0.45)


def test_builtin_corpora_are_reproducible():
    numbers = builtin_corpus("numbers-en-es", seed=0)
    assert Pair("three hundred and forty-two", "trescientos cuarenta y dos") in numbers
    assert numbers == builtin_corpus("numbers-en-es", seed=0)
    assert len({p.source for p in numbers}) == len(numbers)
    dates = builtin_corpus("dates-en-es", seed=1)
    assert dates[:5] == builtin_corpus("dates-en-es", seed=1)[:5]
    assert all(p.target[0].isalnum() for p in dates[:20])
    assert all(p.target == p.source[::-1] for p in builtin_corpus("reverse"))
    with pytest.raises(ConfigError, match="builtin:nope.*known: builtin:numbers-en-es"):
        builtin_corpus("nope")
