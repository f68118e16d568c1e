"""`Seq2Seq`: a trained model with its settings and vocabularies, saved as one directory.

This is the one code path from text to text used by the CLI, evaluation and the server:

    text -> tokens -> ids -> model -> ids -> tokens -> text

A model directory holds:
    config.json                       the settings, with backend and library versions
    source_vocab.json, target_vocab.json  tokenizer settings and vocabularies
    model.keras                       the training model (loaded with safe_mode)
    split/{train,dev,test}.tsv        the pairs of each part of the split
    history.csv                       loss and accuracy per epoch

A loaded model reads at most `max_source_tokens` tokens of an input (by default twice the
longest training source): a longer input is cut, with a warning, or refused (`strict`),
so no input costs more time or memory than that.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from . import backend, modeldir
from .batches import pad
from .config import Config, ConfigError
from .decoding import (  # noqa: F401 (cli)
    LENGTH_MARGIN,
    DecodingOptions,
    GreedyDecoder,
    OutputLimits,
    round_up,
    sampling_settings,
)
from .errors import UserError
from .files import CONFIG_FILE, HISTORY_FILE, MODEL_FILE, SOURCE_VOCAB_FILE, SPLIT_DIR, TARGET_VOCAB_FILE, save_model  # noqa: F401
from .model import InferenceParts, inference_parts
from .vocab import END_ID, PAD_ID, Codec


class ModelDirError(UserError, FileNotFoundError):
    """A model directory is missing a file it needs."""


# A loaded model's cap on source tokens: SOURCE_CAP_FACTOR x the longest training source,
# or DEFAULT_MAX_SOURCE_TOKENS when the saved split cannot be read.
SOURCE_CAP_FACTOR = 2
DEFAULT_MAX_SOURCE_TOKENS = 256
SOURCES_TOKENIZED = 2000  # at most, to find the longest (see default_max_source_tokens)


class SourceTooLong(UserError, ValueError):
    """An input longer than the model's `max_source_tokens`, refused (`strict`); `index` is
    its place among the texts given."""

    def __init__(self, index: int, length: int, cap: int) -> None:
        super().__init__(
            f"input {index + 1}: {length} tokens, more than the {cap} this model reads (max_source_tokens)"
        )
        self.index, self.length, self.cap = index, length, cap


class SourceTruncated(UserWarning):
    """An input cut to the model's `max_source_tokens`; `index` is its place among the texts
    given."""

    def __init__(self, index: int, length: int, cap: int) -> None:
        super().__init__(
            f"input {index + 1}: {length} tokens, more than the {cap} this model reads; read its first {cap}"
        )
        self.index, self.length, self.cap = index, length, cap


def default_max_source_tokens(model_dir: str | Path, source: Codec) -> int:
    """SOURCE_CAP_FACTOR x the longest source, in tokens, of the training pairs saved in
    `model_dir` (split/train.tsv), or DEFAULT_MAX_SOURCE_TOKENS where there are none.

    Cheap on large splits (about 0.05 s for 100,000 pairs): the file is not parsed as
    read_pairs does (training wrote it normalised), and sources are tokenized longest (in
    characters) first, until one has fewer characters than the most tokens seen (a text has
    at most a token a character, and a subword's leading one; lower-casing or NFKC can add
    a few, which the factor covers) or SOURCES_TOKENIZED were: in all but odd data the
    source of most tokens is among the longest in characters (and only a source of more
    than twice the tokens of all of those would be cut)."""
    try:
        with (Path(model_dir) / SPLIT_DIR / "train.tsv").open(encoding="utf-8", errors="replace") as file:
            sources = [line.split("\t", 1)[0] for line in file if "\t" in line]
    except OSError:
        return DEFAULT_MAX_SOURCE_TOKENS
    longest = 0
    for text in sorted(sources, key=len, reverse=True)[:SOURCES_TOKENIZED]:
        if len(text) + 1 <= longest:
            break
        longest = max(longest, len(source.tokenize(text)))
    return SOURCE_CAP_FACTOR * longest if longest else DEFAULT_MAX_SOURCE_TOKENS


@dataclass
class Output:
    """One input's result from `Seq2Seq.decode`."""

    text: str
    score: float  # normalised log-probability with beam search, else nan
    n_best: list[tuple[str, float]]
    source_tokens: list[str]
    target_tokens: list[str]  # the best output's, <end> included when it was produced
    attention: np.ndarray | None  # (target tokens, source tokens), with return_attention


@dataclass
class Decoded:
    """What `Seq2Seq.decode` gives: outputs by group, and what decoding them cost."""

    outputs: list[list[Output]]
    calls: int  # compiled decoder calls
    padding_share: float  # share of the source positions decoded that were padding


@dataclass
class DecodeStats:
    """Decoder calls and source positions (all, real) of a decoding run."""

    calls: int = 0
    positions: int = 0
    tokens: int = 0

    def count(self, batch: np.ndarray, tokens: int) -> None:
        self.calls += 1
        self.positions += batch.size
        self.tokens += tokens

    @property
    def padding_share(self) -> float:
        return 1 - self.tokens / self.positions if self.positions else 0.0


class Seq2Seq:
    """A sequence-to-sequence model ready to generate: `Seq2Seq.load(DIR).translate([...])`."""

    def __init__(
        self,
        config: Config,
        source: Codec,
        target: Codec,
        model: keras.Model,
        max_source_tokens: int | None = None,
        strict: bool = False,
    ) -> None:
        """`max_source_tokens`: the most tokens of an input read (None: all; `load` gives
        its default); a longer input is cut with a warning, or refused if `strict`."""
        self.config = config
        self.source = source
        self.target = target
        self.model = model
        self.max_source_tokens = max_source_tokens
        self.strict = strict
        self._parts: InferenceParts | None = None
        self._decoders: dict[tuple, keras.Model] = {}

    @property
    def max_source_tokens(self) -> int | None:
        return self._max_source_tokens

    @max_source_tokens.setter
    def max_source_tokens(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"max_source_tokens: must be a positive whole number, got {value!r}")
        self._max_source_tokens = value

    @classmethod
    def load(cls, model_dir: str | Path, max_source_tokens: int | None = None, strict: bool = False) -> Seq2Seq:
        """The model saved in `model_dir`. It reads at most `max_source_tokens` tokens of an
        input (default: `default_max_source_tokens`, from the saved training pairs); a
        longer input is cut with a SourceTruncated warning, or refused if `strict`."""
        model_dir = Path(model_dir)
        for name in (CONFIG_FILE, SOURCE_VOCAB_FILE, TARGET_VOCAB_FILE, MODEL_FILE):
            if not (model_dir / name).is_file():
                raise ModelDirError(f"{model_dir}: no {name}; is this a directory made by `seq2seq train`?")
        config = modeldir.check(model_dir)  # refuses damaged, newer or unsafe files before Keras reads any
        model = backend.load_model(model_dir / MODEL_FILE)
        source, target = Codec.load(model_dir / SOURCE_VOCAB_FILE), Codec.load(model_dir / TARGET_VOCAB_FILE)
        modeldir.check_sizes(model_dir, model, len(source), len(target))
        return cls(
            config,
            source,
            target,
            model,
            max_source_tokens=max_source_tokens
            if max_source_tokens is not None
            else default_max_source_tokens(model_dir, source),
            strict=strict,
        )

    def save(self, model_dir: str | Path) -> None:
        """Write settings, vocabularies and model; the split and history are written by training."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(model_dir / CONFIG_FILE)
        self.source.save(model_dir / SOURCE_VOCAB_FILE)
        self.target.save(model_dir / TARGET_VOCAB_FILE)
        with backend.tensorflow_not_imported():
            save_model(self.model, model_dir / MODEL_FILE)

    def output_limits(self, options: DecodingOptions | None = None) -> OutputLimits:
        """How long outputs may run when decoding with `options` (see `OutputLimits`)."""
        return OutputLimits.of(self.config, options)

    @property
    def max_length(self) -> int:
        return self.output_limits().max_length

    def output_limit(self, longest_source: int, max_length: int) -> int:
        """Tokens a batch's outputs may run, at most `max_length`, with this model's ratio:
        `OutputLimits.for_batch`."""
        return OutputLimits(max_length, self.config.max_length_ratio).for_batch(longest_source)

    @property
    def parts(self) -> InferenceParts:
        if self._parts is None:
            self._parts = inference_parts(self.model, self.config)
        return self._parts

    def encode(self, texts: Sequence[str], report: Callable[[int, int], None] | None = None) -> list[list[int]]:
        """Source texts -> source ids (the codec normalises them as training data was), each
        at most `max_source_tokens` long: the one place the cap applies (translate, n_best,
        decode and so the server, attention, evaluation). A longer input is refused with
        SourceTooLong if `strict`, else cut to its first `max_source_tokens` tokens and
        reported, once: `report(index, tokens)`, by default a SourceTruncated warning."""
        encoded = [self.source.encode(text) for text in texts]
        cap = self.max_source_tokens
        if cap is None:
            return encoded
        for index, ids in enumerate(encoded):
            if len(ids) > cap:
                if self.strict:
                    raise SourceTooLong(index, len(ids), cap)
                if report is None:
                    warnings.warn(SourceTruncated(index, len(ids), cap), stacklevel=2)
                else:
                    report(index, len(ids))
                encoded[index] = ids[:cap]
        return encoded

    def translate(
        self,
        texts: Sequence[str],
        options: DecodingOptions | None = None,
        report: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """One output text for each input text, in order (the best, with beam search).
        Inputs longer than `max_source_tokens`: see `encode` (and its `report`)."""
        return [hypotheses[0][0] for hypotheses in self.n_best(texts, options, report)]

    def n_best(
        self,
        texts: Sequence[str],
        options: DecodingOptions | None = None,
        report: Callable[[int, int], None] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """For each input text, `options.n_best` (output text, score) pairs, best first.
        Scores are normalised log-probabilities with beam search, else nan. Inputs longer
        than `max_source_tokens`: see `encode` (and its `report`)."""
        generated = self.generate(self.encode(texts, report), options)
        return [[(self.target.decode(ids), score) for ids, score in hypotheses] for hypotheses in generated]

    def generate(
        self, source_ids: Sequence[Sequence[int]], options: DecodingOptions | None = None
    ) -> list[list[tuple[list[int], float]]]:
        """For each source id list, n-best (target ids up to and including <end>, score).

        Inputs are sorted by length and decoded `options.batch_size` at a time, so that
        batches hold similar lengths; empty inputs give an empty output. Outputs stop at
        <end> or at the batch's limit (`OutputLimits.for_batch`).
        """
        return self._generate(source_ids, options or DecodingOptions(), DecodeStats())

    def _generate(
        self,
        source_ids: Sequence[Sequence[int]],
        options: DecodingOptions,
        stats: DecodeStats,
        limits: Sequence[int] | None = None,
    ) -> list[list[tuple[list[int], float]]]:
        """`generate`, counting calls and padding in `stats`. With `limits` (one output
        limit per input), each input's output stops at its own limit instead of its
        batch's: greedy outputs are cut to it (a greedy row's tokens depend on nothing but
        the row, so running on and cutting gives what stopping gives), and beam search,
        whose choice at the limit depends on the limit, decodes in batches of one limit each."""
        allowed = self.output_limits(options)
        results: list[list[tuple[list[int], float]]] = [[([], float("nan"))] for _ in source_ids]
        order = sorted((i for i, s in enumerate(source_ids) if s), key=lambda i: len(source_ids[i]))
        cut = limits is not None and options.beam == 1 and not options.sample
        by_limit: dict[int | None, list[int]] = {}
        for i in order:  # stays sorted by length within each limit
            by_limit.setdefault(None if limits is None or cut else limits[i], []).append(i)
        number = 0
        for limit, indices in sorted(by_limit.items(), key=lambda item: item[0] or 0):
            for start in range(0, len(indices), options.batch_size):
                rows = indices[start : start + options.batch_size]
                batch = pad([source_ids[i] for i in rows])
                longest = max(len(source_ids[i]) for i in rows)
                batch_limit = max(limits[i] for i in rows) if cut else limit or allowed.for_batch(longest)
                decoder = self._decoder(options, batch_limit)
                batch = np.pad(batch, ((0, padded_rows(len(rows), options.batch_size) - len(rows)), (0, 0)))
                stats.count(batch, sum(len(source_ids[i]) for i in rows))
                if options.sample:
                    seed = np.array([options.seed, number * allowed.max_length * 8], dtype="int32")
                    settings = sampling_settings(options.temperature, options.top_k, options.top_p)
                    outputs = decoder.predict_on_batch([batch, seed, settings])
                else:
                    outputs = decoder.predict_on_batch(batch)
                for row, i in enumerate(rows):
                    results[i] = _hypotheses(outputs, row)
                    if cut:
                        results[i] = [(ids[: limits[i]], score) for ids, score in results[i]]
                number += 1
        return results

    def alone_limits(self, source_ids: Sequence[Sequence[int]], options: DecodingOptions) -> list[int]:
        """The output limit each input gets when `generate` decodes these inputs (and no
        others): its batch's limit (0 for an empty input)."""
        allowed = self.output_limits(options)
        limits = [0] * len(source_ids)
        order = sorted((i for i, s in enumerate(source_ids) if s), key=lambda i: len(source_ids[i]))
        for start in range(0, len(order), options.batch_size):
            rows = order[start : start + options.batch_size]
            limit = allowed.for_batch(max(len(source_ids[i]) for i in rows))
            for i in rows:
                limits[i] = limit
        return limits

    def decode(
        self, groups: Sequence[Sequence[str]], options: DecodingOptions | None = None, return_attention: bool = False
    ) -> Decoded:
        """Several groups of texts (e.g. the requests a server merged) decoded together in
        as few batched calls as their output limits allow, each group getting exactly what
        `n_best(group)` gives it alone: an input runs to the limit it would have alone.
        Sampled groups are decoded one after another (a draw depends on the batch and row).

        Each output comes with its source tokens, the best output's tokens and, with
        `return_attention` (models with attention), the weights of that output, computed
        by feeding it back through the decoder (output tokens x source tokens)."""
        options = options or DecodingOptions()
        if return_attention and self.config.attention == "none":
            raise ValueError("this model has no attention (trained with --attention none)")
        stats = DecodeStats()
        encoded = [self.encode(texts) for texts in groups]
        flat = [ids for group in encoded for ids in group]
        if options.sample:
            generated = [h for group in encoded for h in self._generate(group, options, stats)]
        else:
            limits = [limit for group in encoded for limit in self.alone_limits(group, options)]
            generated = self._generate(flat, options, stats, limits)
        texts = [text for group in groups for text in group]
        attention = self.forced_attention(flat, [h[0][0] for h in generated]) if return_attention else None
        outputs = []
        for i, (text, hypotheses) in enumerate(zip(texts, generated, strict=True)):
            best = hypotheses[0][0]
            outputs.append(
                Output(
                    text=self.target.decode(best),
                    score=hypotheses[0][1],
                    n_best=[(self.target.decode(ids), score) for ids, score in hypotheses],
                    source_tokens=self.source.tokenize(text)[: len(flat[i])],  # as far as it was read
                    target_tokens=[self.target.vocabulary.tokens[t] for t in best],
                    attention=None if attention is None else attention[i],
                )
            )
        split, start = [], 0
        for group in groups:
            split.append(outputs[start : start + len(group)])
            start += len(group)
        return Decoded(split, stats.calls, stats.padding_share)

    def forced_attention(self, source_ids: Sequence[Sequence[int]], outputs: Sequence[list[int]]) -> list[np.ndarray]:
        """The attention weights (output tokens x source tokens) of each given output,
        from one teacher-forced pass of the decoder per batch of similar lengths."""
        weights = [np.zeros((len(o), len(s)), dtype="float32") for s, o in zip(source_ids, outputs, strict=True)]
        order = sorted((i for i, o in enumerate(outputs) if o and source_ids[i]), key=lambda i: len(source_ids[i]))
        size = DecodingOptions().batch_size
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            length = round_up(max(len(outputs[i]) for i in rows))
            key = ("forced", length)
            if key not in self._decoders:
                self._decoders[key] = _ForcedDecoder(self.parts, length, return_attention=True)
            filler = [[]] * (padded_rows(len(rows), size) - len(rows))
            source = pad([*(source_ids[i] for i in rows), *filler])
            target = pad([*(outputs[i] for i in rows), *filler], length=length)
            _, attention = self._decoders[key].predict_on_batch([source, target])
            attention = np.asarray(attention)
            for row, i in enumerate(rows):
                weights[i] = attention[row, : len(outputs[i]), : len(source_ids[i])]
        return weights

    def attention(self, text: str, max_length: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
        """The greedy output for one text, as `translate` gives it, with its attention
        weights: (source tokens, output tokens, weights (output tokens x source tokens)),
        through `decode`. Needs a model with attention."""
        if self.config.attention == "none":
            raise ValueError("this model has no attention (trained with --attention none)")
        if not self.source.encode(text):
            raise ValueError("nothing to attend to: the input is empty")
        decoded = self.decode([[text]], DecodingOptions(max_length=max_length), return_attention=True)
        output = decoded.outputs[0][0]
        return output.source_tokens, output.target_tokens, output.attention

    def _decoder(self, options: DecodingOptions, max_length: int):
        key = options.decoder_key(max_length)
        if key not in self._decoders:
            self._decoders[key] = options.make_decoder(self.parts, max_length)
        return self._decoders[key]


def padded_rows(rows: int, batch_size: int) -> int:
    """Pad a batch's row count to a power of two (at least 8, at most `batch_size`) so
    that few shapes are compiled."""
    size = 8
    while size < rows:
        size *= 2
    return max(min(size, batch_size), rows)


def row_buckets(batch_size: int) -> list[int]:
    """Every row count `padded_rows` gives for batches of up to `batch_size` rows."""
    return sorted({padded_rows(rows, batch_size) for rows in range(1, batch_size + 1)})


def _hypotheses(outputs, row: int) -> list[tuple[list[int], float]]:
    """The n-best (ids, score) of one row of a decoder's output."""
    if isinstance(outputs, list | tuple):  # beam search: ids (B, N, L), scores (B, N)
        ids, scores = (np.asarray(o) for o in outputs)
        return [(_until_end(ids[row, n]), float(scores[row, n])) for n in range(ids.shape[1])]
    return [(_until_end(np.asarray(outputs)[row]), float("nan"))]


def _until_end(ids: np.ndarray) -> list[int]:
    """Generated ids up to and including <end>; <pad> marks that nothing more came."""
    out = []
    for i in ids.tolist():
        if i == PAD_ID:
            break
        out.append(i)
        if i == END_ID:
            break
    return out


class _ForcedDecoder(GreedyDecoder):
    """[source ids (B, S), target ids (B, max_length)] -> (the target ids, attention): the
    decoder fed the given outputs instead of its own choices, for their attention."""

    compacts_rows = False  # the given outputs (in `draw`) are read by row

    def choose(self, logits, t, draw: list):
        (target_ids,) = draw
        return ops.take(target_ids, t, axis=1)
