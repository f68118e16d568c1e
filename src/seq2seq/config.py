"""One dataclass of settings, validated on creation and saved beside the model as JSON."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

LEVELS = ("char", "word", "subword")
INPUTS = ("onehot", "embedding")
ATTENTIONS = ("none", "luong", "luong-dot", "bahdanau")
SUBWORD_MODELS = ("unigram", "bpe")
STOP_METRICS = ("bleu", "chrf", "loss")
LR_DECAYS = ("none", "linear")
OPTIMIZERS = ("adam", "rmsprop")


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

    # data
    data: str = "builtin:numbers-en-es"
    num_samples: int | None = None
    first: bool = False
    reverse: bool = False
    strict: bool = False
    dev_fraction: float = 0.05
    test_fraction: float = 0.05
    dev_data: str | None = None
    test_data: str | None = None
    # tokens
    level: str = "subword"
    lowercase: bool = False
    max_vocab: int | None = None
    min_freq: int = 1
    vocab_size: int = 8000
    subword_model: str = "unigram"
    # model
    input: str = "embedding"
    embedding_dim: int = 256
    latent_dim: int = 384
    layers: int = 1
    bidirectional: bool = True
    attention: str = "luong"
    dropout: float = 0.3
    tie_embeddings: bool = True
    # training
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    label_smoothing: float = 0.1
    clip_norm: float = 5.0
    patience: int | None = 3
    stop_metric: str = "bleu"
    lr_patience: int | None = 1
    lr_factor: float = 0.5
    lr_decay: str = "none"
    dev_bleu_sentences: int = 500
    time_budget: float | None = None
    data_parallel: bool = False
    seed: int = 0
    # decoding
    max_length: int | None = None
    # a batch's outputs also stop after ratio x its longest source + LENGTH_MARGIN tokens
    max_length_ratio: float | None = None
    # written by the toolkit, not by users
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _choice("level", self.level, LEVELS)
        _choice("input", self.input, INPUTS)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("subword_model", self.subword_model, SUBWORD_MODELS)
        _choice("stop_metric", self.stop_metric, STOP_METRICS)
        _choice("lr_decay", self.lr_decay, LR_DECAYS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _positive("layers", self.layers)
        _positive("vocab_size", self.vocab_size)
        for name in ("dropout", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.bidirectional and self.latent_dim % 2:
            raise ConfigError(
                f"--bidirectional splits latent_dim between two directions: it must be even, got {self.latent_dim}"
            )
        if self.tie_embeddings and self.input != "embedding":
            raise ConfigError("tie_embeddings needs input 'embedding' (one-hot inputs have no embedding to tie)")
        if self.clip_norm < 0:
            raise ConfigError(f"clip_norm must be positive (or 0 for no clipping), got {self.clip_norm}")
        for name in ("patience", "lr_patience"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"time_budget must be a positive number of minutes, got {self.time_budget}")
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"lr_factor must be in (0, 1), got {self.lr_factor}")
        if not isinstance(self.dev_bleu_sentences, int) or self.dev_bleu_sentences < 0:
            raise ConfigError(f"dev_bleu_sentences must be a non-negative integer, got {self.dev_bleu_sentences!r}")
        _positive("latent_dim", self.latent_dim)
        _positive("embedding_dim", self.embedding_dim)
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("min_freq", self.min_freq)
        if self.num_samples is not None:
            _positive("num_samples", self.num_samples)
        if self.max_vocab is not None and self.max_vocab < 5:
            raise ConfigError(f"max_vocab must be at least 5 (4 special tokens + 1), got {self.max_vocab}")
        if self.max_length is not None:
            _positive("max_length", self.max_length)
        if self.max_length_ratio is not None and not self.max_length_ratio > 0:
            raise ConfigError(f"max_length_ratio must be positive, got {self.max_length_ratio}")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        for name in ("dev_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 0.5:
                raise ConfigError(f"{name} must be in [0, 0.5), got {value}")

    @classmethod
    def textbook(cls, **settings: Any) -> Config:
        """The textbook's settings (`TEXTBOOK`) with `settings` over them."""
        return cls(**{**TEXTBOOK, **settings})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
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
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from error
        try:
            return cls.from_dict(values)
        except (ConfigError, TypeError) as error:
            raise ConfigError(f"{path}: {error}") from error


def setting_types() -> dict[str, type]:
    """The plain type of each setting: int for `int | None`, and so on."""
    types_ = {}
    for name, hint in typing.get_type_hints(Config).items():
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        types_[name] = hint
    return types_


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
