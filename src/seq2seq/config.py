"""One dataclass of settings, validated on creation and saved beside the model as JSON."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import UserError
from .files import write_atomic

# The settings that take one of a few values: the values allowed are the Literal's.
Level = Literal["char", "word", "subword"]
Input = Literal["onehot", "embedding"]
Attention = Literal["none", "luong", "luong-dot", "bahdanau"]
SubwordModel = Literal["unigram", "bpe"]
StopMetric = Literal["bleu", "chrf", "loss"]
LrDecay = Literal["auto", "none", "linear"]
Optimizer = Literal["adam", "rmsprop"]
OPTIMIZERS = typing.get_args(Optimizer)  # optimizers.OPTIMIZER_CLASSES has one class for each


# The textbook's model and settings (`seq2seq train --textbook`): characters as one-hot
# vectors, one LSTM layer each side, no attention, latent 256, batch 64, RMSprop at
# learning rate 1e-3 (Keras's "rmsprop"), and none of the regularisation, gradient
# clipping or schedules the defaults add.
TEXTBOOK = dict(
    level="char",
    input="onehot",
    latent_dim=256,
    layers=1,
    bidirectional=False,
    attention="none",
    dropout=0.0,
    label_smoothing=0.0,
    tie_embeddings=False,
    batch_size=64,
    optimizer="rmsprop",
    learning_rate=1e-3,
    clip_norm=0.0,
    stop_metric="loss",
    patience=None,
    lr_patience=None,
    lr_decay="none",
    warmup_steps=0,
)


class ConfigError(UserError, ValueError):
    """A setting has a value the toolkit cannot use."""


@dataclass
class Config:
    """Everything that decides what a model is and how it was trained.

    The data knobs (`num_samples`, `first`, `reverse`, split fractions) decide which pairs
    are used; the token knobs decide the vocabularies; the model knobs decide the network;
    the training knobs decide the optimisation. The textbook's four knobs for improving
    results are `num_samples`, `latent_dim`, `epochs` and `batch_size`.

    The defaults are the settings that scored best on spa-eng within an hour of training
    on two CPU cores (README, "Results"); `TEXTBOOK` holds the textbook's.
    """

    # Each setting is one `seq2seq train` option (--latent-dim for latent_dim) with the
    # help text in its metadata; {builtins} and {length_margin} are filled in by the CLI.
    # data
    data: str = field(
        default="builtin:numbers-en-es",
        metadata={"help": "pair file (source<TAB>target per line) or builtin:NAME ({builtins})"},
    )
    num_samples: int | None = field(
        default=None, metadata={"help": "use this many pairs (random sample by --seed; see --first)"}
    )
    first: bool = field(
        default=False, metadata={"help": "with --num-samples, take the first pairs instead of a random sample"}
    )
    reverse: bool = field(
        default=False,
        metadata={"help": "swap source and target (e.g. Spanish->English from an English<TAB>Spanish file)"},
    )
    strict: bool = field(default=False, metadata={"help": "stop at the first malformed line instead of skipping it"})
    dev_fraction: float = field(default=0.05, metadata={"help": "share of source sentences held out for validation"})
    test_fraction: float = field(default=0.05, metadata={"help": "share of source sentences held out for testing"})
    dev_data: str | None = field(
        default=None,
        metadata={
            "help": "pair file to validate on instead of a share of --data (pairs with its sources leave training)"
        },
    )
    test_data: str | None = field(
        default=None,
        metadata={"help": "pair file to test on instead of a share of --data (pairs with its sources leave training)"},
    )
    # tokens
    level: Level = field(
        default="subword",
        metadata={"help": "tokens: characters, words (and punctuation), or subword pieces (sentencepiece)"},
    )
    lowercase: bool = field(default=False, metadata={"help": "lower-case text before tokenization"})
    max_vocab: int | None = field(
        default=None, metadata={"help": "largest vocabulary per side, special tokens included"}
    )
    min_freq: int = field(default=1, metadata={"help": "drop tokens seen fewer times in training (they become <unk>)"})
    vocab_size: int = field(
        default=8000, metadata={"help": "sentencepiece vocabulary size per side, with --level subword"}
    )
    subword_model: SubwordModel = field(
        default="unigram", metadata={"help": "sentencepiece model type, with --level subword"}
    )
    # model
    input: Input = field(
        default="embedding", metadata={"help": "tokens as one-hot vectors (the textbook) or a learned embedding"}
    )
    embedding_dim: int = field(default=256, metadata={"help": "embedding size, with --input embedding"})
    latent_dim: int = field(default=384, metadata={"help": "size of the LSTM states h and c"})
    layers: int = field(default=1, metadata={"help": "stacked LSTM layers in the encoder and in the decoder"})
    bidirectional: bool = field(
        default=True, metadata={"help": "encoder reads the input both ways (latent_dim/2 per direction)"}
    )
    attention: Attention = field(
        default="luong",
        metadata={"help": "decoder attends to the encoder outputs: Luong (general or dot, input feeding) or Bahdanau"},
    )
    dropout: float = field(
        default=0.3, metadata={"help": "dropout rate on embeddings, between layers and before the output layer"}
    )
    tie_embeddings: bool = field(
        default=True, metadata={"help": "share the target embedding with the output layer (needs --input embedding)"}
    )
    # training
    epochs: int = field(default=30, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=64, metadata={"help": "pairs per training step"})
    optimizer: Optimizer = field(default="adam", metadata={"help": "adam, or rmsprop (the textbook's)"})
    learning_rate: float = field(default=2e-3, metadata={"help": "the optimizer's learning rate"})
    warmup_steps: int = field(
        default=0, metadata={"help": "raise the learning rate linearly over the first N training steps (0: none)"}
    )
    label_smoothing: float = field(
        default=0.1, metadata={"help": "spread this share of each target's probability over the vocabulary"}
    )
    clip_norm: float = field(default=5.0, metadata={"help": "clip the gradients' global norm to this (0: no clipping)"})
    patience: int | None = field(
        default=3,
        metadata={
            "help": "stop after this many epochs without improvement of --stop-metric on dev "
            "(not with a linear --lr-decay, which runs to its end)"
        },
    )
    stop_metric: StopMetric = field(
        default="bleu", metadata={"help": "dev metric deciding the best epoch (kept in model.keras) and early stopping"}
    )
    lr_patience: int | None = field(
        default=1, metadata={"help": "halve (--lr-factor) the learning rate after this many epochs without improvement"}
    )
    lr_factor: float = field(default=0.5, metadata={"help": "learning-rate reduction factor, with --lr-patience"})
    lr_decay: LrDecay = field(
        default="auto",
        metadata={
            "help": "linear: lower the learning rate towards zero over the epochs (or the --time-budget), "
            "in place of the reduction on plateau; none: keep it (halved on a plateau with --lr-patience); "
            "auto: linear with --time-budget, else none"
        },
    )
    average_epochs: int = field(
        default=1,
        metadata={
            "help": "at the end, average the weights of the last N epochs and keep the mean in model.keras "
            "if it scores better on the whole dev split than the best epoch (1: off)"
        },
    )
    dev_bleu_sentences: int = field(
        default=500, metadata={"help": "dev sentences decoded after every epoch for BLEU/chrF (0: none)"}
    )
    time_budget: float | None = field(default=None, metadata={"help": "stop training after this many minutes"})
    data_parallel: bool = field(
        default=False, metadata={"help": "split every batch across all local devices (see README for several machines)"}
    )
    seed: int = field(default=0, metadata={"help": "seed for sampling, splitting, initialisation and shuffling"})
    # decoding
    max_length: int | None = field(
        default=None, metadata={"help": "longest output generated, in tokens (default: from the training data)"}
    )
    # a batch's outputs also stop after ratio x its longest source + LENGTH_MARGIN tokens
    max_length_ratio: float | None = field(
        default=None,
        metadata={
            "help": "outputs also stop after this many tokens per source token of their batch's longest "
            "input, plus {length_margin} (default: from the training data)"
        },
    )
    # written by the toolkit, not by users (no option)
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every field's type first (so a range check never meets a string), then its
        range; a ConfigError names the field and says what it must be."""
        hints = _type_hints()
        for spec in dataclasses.fields(self):
            _check_type(spec.name, getattr(self, spec.name), hints[spec.name])
        for name in (
            "layers",
            "vocab_size",
            "latent_dim",
            "embedding_dim",
            "epochs",
            "batch_size",
            "min_freq",
            "average_epochs",
        ):
            _positive(name, getattr(self, name))
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps: must be a non-negative integer, got {self.warmup_steps}")
        for name in ("num_samples", "patience", "lr_patience", "max_length"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        for name in ("dropout", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.bidirectional and self.latent_dim % 2:
            raise ConfigError(
                f"latent_dim: --bidirectional splits it between two directions: it must be even, got {self.latent_dim}"
            )
        if self.tie_embeddings and self.input != "embedding":
            raise ConfigError("tie_embeddings: needs input 'embedding' (one-hot inputs have no embedding to tie)")
        if self.clip_norm < 0:
            raise ConfigError(f"clip_norm: must be positive (or 0 for no clipping), got {self.clip_norm}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"time_budget: must be a positive number of minutes, got {self.time_budget}")
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"lr_factor: must be in (0, 1), got {self.lr_factor}")
        if self.dev_bleu_sentences < 0:
            raise ConfigError(f"dev_bleu_sentences: must be a non-negative integer, got {self.dev_bleu_sentences}")
        if self.max_vocab is not None and self.max_vocab < 5:
            raise ConfigError(f"max_vocab: must be at least 5 (4 special tokens + 1), got {self.max_vocab}")
        if self.max_length_ratio is not None and not self.max_length_ratio > 0:
            raise ConfigError(f"max_length_ratio: must be positive, got {self.max_length_ratio}")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate: must be in (0, 1), got {self.learning_rate}")
        for name in ("dev_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 0.5:
                raise ConfigError(f"{name}: must be in [0, 0.5), got {value}")

    @property
    def linear_decay(self) -> bool:
        """Whether the learning rate falls linearly over the training: asked for, or `auto`
        with a time budget, where the plateau rule rarely fires in time (docs/performance.md)."""
        return self.lr_decay == "linear" or (self.lr_decay == "auto" and self.time_budget is not None)

    @classmethod
    def textbook(cls, **settings: Any) -> Config:
        """The textbook's settings (`TEXTBOOK`) with `settings` over them."""
        return cls(**{**TEXTBOOK, **settings})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Settings read from a file: every key must be a setting, every value of its type
        and in its range (ConfigError naming the first field that is not)."""
        if not isinstance(values, dict):
            raise ConfigError(f"expected a JSON object of settings, got {_json_kind(values)}")
        known = {f.name for f in dataclasses.fields(cls)}
        if "recurrent_matmul" in values:  # removed: float32 was its default and is now the only format
            if values["recurrent_matmul"] != "float32":
                raise ConfigError(f"recurrent_matmul {values['recurrent_matmul']!r}: removed (float32 only)")
            values = {name: value for name, value in values.items() if name != "recurrent_matmul"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not valid UTF-8 (byte {error.start})") from error
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}") from error
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error


def setting_help(name: str) -> str:
    """The help text of a setting's `seq2seq train` option (with {placeholders} unfilled)."""
    return next(spec.metadata["help"] for spec in dataclasses.fields(Config) if spec.name == name)


def choices(name: str) -> tuple[str, ...]:
    """The values a choice setting (typed `Literal[...]`) allows; () for other settings."""
    hint = _type_hints()[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


def setting_types() -> dict[str, type]:
    """The plain type of each setting: int for `int | None`, str for a Literal of strings."""
    types_ = {}
    for name, hint in _type_hints().items():
        hint = _without_none(hint)
        if typing.get_origin(hint) is Literal:
            hint = type(typing.get_args(hint)[0])
        types_[name] = hint
    return types_


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _without_none(hint: Any) -> Any:
    """`X` for `X | None` (and `Optional[X]`), else `hint`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_type(name: str, value: Any, hint: Any) -> None:
    """ConfigError unless `value` is of the type `hint` (a setting's annotation) allows."""
    plain = _without_none(hint)
    if value is None and plain is not hint:
        return
    or_null = " (or null)" if plain is not hint else ""
    if typing.get_origin(plain) is Literal:
        allowed = typing.get_args(plain)
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")
    elif typing.get_origin(plain) is dict:  # versions: names to version strings
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{name}: expected an object of strings, got {value!r}")
    elif plain is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected {_EXPECTED[float]}{or_null}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    elif (plain is bool) != isinstance(value, bool) or not isinstance(value, plain):  # True is no integer, 1 no flag
        raise ConfigError(f"{name}: expected {_EXPECTED[plain]}{or_null}, got {value!r}")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name}: must be a positive integer, got {value!r}")


def _json_kind(value: Any) -> str:
    kinds = {list: "a list", str: "a string", bool: "true or false", type(None): "null"}
    return kinds.get(type(value), "a number")
