"""Input length limits: a source longer than the model reads (`max_source_tokens`, by
default twice the longest training source) is cut with a warning naming its line, its
length and the cap, or refused with --strict / strict=True; so a huge input costs no more
time or memory than one at the cap."""

from __future__ import annotations

import io
import json
import shutil
import sys
import time

import pytest

from seq2seq.api import DEFAULT_MAX_SOURCE_TOKENS, Seq2Seq, SourceTooLong, SourceTruncated
from seq2seq.cli import main
from seq2seq.config import ConfigError
from seq2seq.data import read_pairs

from .conftest import write_text

HUGE = " ".join(["abcd"] * 60_000)  # 60,000 words; 299,999 characters, each a token of the reverse model
FAST = 10  # seconds: model loading and a compile included


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8"))


def _cap(model_dir) -> int:
    return 2 * max(len(pair.source) for pair in read_pairs(model_dir / "split" / "train.tsv"))


def test_the_default_cap_is_twice_the_longest_training_source(reverse_model_dir, reverse_model, tmp_path):
    """From the saved split; a model directory without one (or with an empty one) gets the
    fixed default; a system built in memory (as training builds it) reads everything."""
    assert reverse_model.max_source_tokens == _cap(reverse_model_dir) == 12
    old = shutil.copytree(reverse_model_dir, tmp_path / "old", ignore=shutil.ignore_patterns("split"))
    assert Seq2Seq.load(old).max_source_tokens == DEFAULT_MAX_SOURCE_TOKENS
    (old / "split").mkdir()
    (old / "split" / "train.tsv").write_text("")
    assert Seq2Seq.load(old).max_source_tokens == DEFAULT_MAX_SOURCE_TOKENS
    system = reverse_model
    assert Seq2Seq(system.config, system.source, system.target, system.model).max_source_tokens is None
    with pytest.raises(ConfigError, match="max_source_tokens: must be a positive whole number, got 0"):
        Seq2Seq(system.config, system.source, system.target, system.model, max_source_tokens=0)


def test_the_api_truncates_with_a_warning_or_refuses(reverse_model):
    """Seq2Seq.encode is the one place: translate, n_best and decode (the server's) read
    the first max_source_tokens tokens of a longer input, warned once each; strict refuses."""
    system = reverse_model
    long = "abcdefgh" * 3  # 24 tokens, the cap is 12
    with pytest.warns(SourceTruncated, match="input 2: 24 tokens, more than the 12 this model reads") as caught:
        outputs = system.translate(["ab", long])
    assert len([w for w in caught if issubclass(w.category, SourceTruncated)]) == 1
    assert caught[0].message.index == 1 and caught[0].message.length == 24 and caught[0].message.cap == 12
    assert outputs[1] == system.translate(["ab", long[:12]])[1]  # this long, the model is unsure: the same batch
    reports: list[tuple[int, int]] = []
    texts = [text for text, _ in system.n_best(["ab", long, "abc"], report=lambda *r: reports.append(r))[1]]
    assert texts == [text for text, _ in system.n_best(["ab", long[:12], "abc"])[1]]
    assert reports == [(1, 24)]
    with pytest.warns(SourceTruncated):
        decoded = system.decode([["ab"], [long]])
    assert decoded.outputs[1][0].source_tokens == list(long[:12])
    strict = Seq2Seq(system.config, system.source, system.target, system.model, max_source_tokens=4, strict=True)
    with pytest.raises(SourceTooLong, match="input 2: 24 tokens, more than the 4 this model reads") as error:
        strict.translate(["ab", long])
    assert (error.value.index, error.value.length, error.value.cap) == (1, 24, 4)
    strict.max_source_tokens = 30  # 24 tokens are within a cap of 30: read whole
    assert strict.translate([long]) == [system.target.decode(system.generate([system.source.encode(long)])[0][0][0])]
    strict.max_source_tokens = None  # ... and no cap at all reads everything
    assert strict.encode([long * 10]) == [system.source.encode(long * 10)]


def test_a_huge_line_to_translate_is_cut_fast_with_a_warning(reverse_model_dir, reverse_model, monkeypatch, capsys):
    """A 60,000-word line ran the encoder over all its 299,999 tokens; now its first 12."""
    _stdin(monkeypatch, f"abc\n{HUGE}\ndcba\n")
    started = time.perf_counter()
    assert main(["translate", "--model-dir", str(reverse_model_dir)]) == 0
    assert time.perf_counter() - started < FAST
    out, err = capsys.readouterr()
    assert out.split("\n")[:-1] == reverse_model.translate(["abc", HUGE[:12], "dcba"])
    assert err.splitlines() == [
        "seq2seq: warning: <stdin>:2: 299999 tokens, more than the 12 this model reads; translated its first 12 "
        "(--max-source-tokens N to change, --strict to refuse)"
    ]


def test_strict_refuses_a_huge_line_naming_it(reverse_model_dir, reverse_model, monkeypatch, capsys):
    """--strict: the lines before it are translated, then one line on stderr and status 2."""
    _stdin(monkeypatch, f"abc\nab\n{HUGE}\ndcba\n")
    started = time.perf_counter()
    assert main(["translate", "--model-dir", str(reverse_model_dir), "--strict"]) == 2
    assert time.perf_counter() - started < FAST
    out, err = capsys.readouterr()
    assert out.split("\n")[:-1] == reverse_model.translate(["abc", "ab"])
    assert err.splitlines() == [
        "seq2seq: error: <stdin>:3: 299999 tokens, more than the 12 this model reads; shorten it or raise "
        "--max-source-tokens (without --strict: truncated, with a warning)"
    ]


def test_the_cap_is_settable_and_many_warnings_end_in_a_count(reverse_model_dir, reverse_model, capsys):
    texts = ["abcdef", "ab", *(["abcdefgh"] * 6)]
    assert main(["translate", "--model-dir", str(reverse_model_dir), "--max-source-tokens", "3", *texts]) == 0
    out, err = capsys.readouterr()
    assert out.split("\n")[:-1] == reverse_model.translate([text[:3] for text in texts])
    warnings = err.splitlines()
    assert warnings[0].startswith("seq2seq: warning: <arguments>:1: 6 tokens, more than the 3 this model reads;")
    assert [line.split(":")[3] for line in warnings[:5]] == ["1", "3", "4", "5", "6"]  # each once, by line
    assert warnings[5:] == [
        "seq2seq: warning: <arguments>: 7 inputs longer than 3 tokens (2 more not shown), each translated its first 3"
    ]
    assert main(["translate", "--model-dir", str(reverse_model_dir), "--max-source-tokens", "0", "ab"]) == 2
    assert "max_source_tokens: must be a positive whole number, got 0" in capsys.readouterr().err
    assert main(["translate", "--model-dir", str(reverse_model_dir), "--max-source-tokens", "8", "--strict", "ab"]) == 0


def test_evaluate_scores_a_huge_source_on_its_first_tokens(reverse_model_dir, reverse_model, tmp_path, capsys):
    """The decoding and the teacher-forced loss both read the first 12 tokens; the warning
    names the pair file's line (blank and malformed lines counted)."""
    data = write_text(tmp_path / "pairs.tsv", f"abc\tcba\n\n{HUGE}\tcba\nno tab\nabcd\tdcba\n")
    output = tmp_path / "scores.json"
    started = time.perf_counter()
    assert main(["evaluate", "--model-dir", str(reverse_model_dir), "--data", str(data), "--output", str(output)]) == 0
    assert time.perf_counter() - started < FAST
    out, err = capsys.readouterr()
    assert (
        f"seq2seq: warning: {data}:3: 299999 tokens, more than the 12 this model reads; scored on its first 12 "
        "(--max-source-tokens N to change, --strict to refuse)"
    ) in err.splitlines()
    assert f"skipped {data}:4: no tab" in err
    assert json.loads(output.read_text())["sentences"] == 3
    assert f"{HUGE}\n  " in out  # the example shows the source whole

    data = write_text(tmp_path / "good.tsv", f"abc\tcba\n{HUGE}\tcba\n")
    assert main(["evaluate", "--model-dir", str(reverse_model_dir), "--data", str(data), "--strict"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seq2seq: error: {data}:2: 299999 tokens, more than the 12 this model reads; shorten it or raise "
        "--max-source-tokens (without --strict: truncated, with a warning)"
    ]
    data = write_text(tmp_path / "bad.tsv", "abc\tcba\nno tab\n")
    assert main(["evaluate", "--model-dir", str(reverse_model_dir), "--data", str(data), "--strict"]) == 2
    assert f"seq2seq: error: {data}:2: no tab" in capsys.readouterr().err


def test_evaluate_without_a_report_warns_and_encodes_once(reverse_model):
    from seq2seq.data import Pair
    from seq2seq.evaluation import evaluate

    calls: list[int] = []
    encode = reverse_model.encode

    def counting(texts, report=None):
        calls.append(len(texts))
        return encode(texts, report)

    reverse_model.encode = counting
    try:
        with pytest.warns(SourceTruncated, match="input 2: 24 tokens"):
            scores, hypotheses = evaluate(reverse_model, [Pair("abc", "cba"), Pair("abcdefgh" * 3, "x")])
    finally:
        del reverse_model.encode
    assert calls == [2] and scores.sentences == 2
    assert hypotheses[1] == reverse_model.translate(["abc", "abcdefghabcd"])[1]


def test_the_default_cap_is_cheap_on_a_large_split(tmp_path):
    """Loading reads the saved split for the default cap: 100,000 pairs take well under a
    second (the longest in characters are tokenized first), and no training source is cut."""
    import random

    from seq2seq.api import default_max_source_tokens
    from seq2seq.vocab import Codec, make_tokenizer

    rng = random.Random(0)
    words = ["palabra", "casa", "perro", "gato", "¿qué?", "hola", "mundo", "y", "a"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(100_000)]
    (tmp_path / "split").mkdir()
    write_text(tmp_path / "split" / "train.tsv", "".join(f"{line}\tx\n" for line in lines))
    for level in ("char", "word"):
        codec = Codec.fit(make_tokenizer(level), lines[:1000])
        started = time.perf_counter()
        cap = default_max_source_tokens(tmp_path, codec)
        assert time.perf_counter() - started < 1
        longest = max(len(codec.tokenize(line)) for line in lines)
        assert longest <= cap <= 2 * longest
