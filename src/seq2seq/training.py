"""Training: data -> split -> vocabularies -> batches -> `fit` -> a saved model directory."""

from __future__ import annotations

import contextlib
import platform
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import keras

from . import backend
from .api import HISTORY_FILE, MODEL_FILE, SPLIT_DIR, Seq2Seq
from .batches import PairBatches
from .config import Config
from .data import Pair, Split, load_pairs, split_by_source
from .losses import MaskedAccuracy, MaskedCrossEntropy
from .model import build_model
from .vocab import Codec, make_tokenizer


class ModelDirExistsError(FileExistsError):
    """Training would overwrite a model that is already there."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "backend": keras.backend.backend()}
    for package in ("seq2seq", "keras", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def prepare_data(config: Config) -> Split:
    pairs = load_pairs(
        config.data,
        num_samples=config.num_samples,
        first=config.first,
        reverse=config.reverse,
        strict=config.strict,
        seed=config.seed,
    )
    return split_by_source(pairs, config.dev_fraction, config.test_fraction, seed=config.seed)


def fit_codecs(config: Config, pairs: list[Pair]) -> tuple[Codec, Codec]:
    """Source and target vocabularies from the training pairs only."""
    codecs = []
    for side in ("source", "target"):
        tokenizer = make_tokenizer(config.level, lowercase=config.lowercase)
        texts = [getattr(p, side) for p in pairs]
        codecs.append(Codec.fit(tokenizer, texts, max_size=config.max_vocab, min_freq=config.min_freq))
    return codecs[0], codecs[1]


def make_batches(source: Codec, target: Codec, pairs: list[Pair], batch_size: int, shuffle: bool, seed: int):
    return PairBatches(
        [source.encode(p.source) for p in pairs],
        [target.encode(p.target) for p in pairs],
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
    )


def default_max_length(target: Codec, pairs: list[Pair]) -> int:
    """Generation limit: half again the longest training target, plus a little."""
    longest = max(len(target.tokenizer.tokenize(p.target)) for p in pairs)
    return int(longest * 1.5) + 5


def check_model_dir(model_dir: Path, overwrite: bool) -> None:
    if (model_dir / MODEL_FILE).exists() and not overwrite:
        raise ModelDirExistsError(
            f"{model_dir} already holds a trained model; pass --overwrite to replace it or choose another --model-dir"
        )


def train(config: Config, model_dir: str | Path, overwrite: bool = False, verbose: str | int = "auto") -> Seq2Seq:
    """Train a model as `config` says and save everything into `model_dir`.

    The model file is rewritten after every epoch, so an interrupted run (Ctrl-C) keeps
    the last finished epoch.
    """
    model_dir = Path(model_dir)
    check_model_dir(model_dir, overwrite)
    with backend.tensorflow_not_imported():
        keras.utils.set_random_seed(config.seed)

    split = prepare_data(config)
    source, target = fit_codecs(config, split.train)
    config = replace(
        config,
        max_length=config.max_length or default_max_length(target, split.train),
        versions=library_versions(),
    )
    model = build_model(config, len(source), len(target))
    system = Seq2Seq(config, source, target, model)
    system.save(model_dir)
    split.save(model_dir / SPLIT_DIR)

    train_batches = make_batches(source, target, split.train, config.batch_size, shuffle=True, seed=config.seed)
    dev_batches = make_batches(source, target, split.dev, config.batch_size, False, 0) if split.dev else None
    _log(
        f"pairs: {len(split.train)} train, {len(split.dev)} dev, {len(split.test)} test; "
        f"vocabulary: {len(source)} source, {len(target)} target {config.level} tokens; "
        f"parameters: {model.count_params():,}; backend: {keras.backend.backend()}"
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=MaskedCrossEntropy(),
        metrics=[MaskedAccuracy()],
    )
    callbacks = [
        keras.callbacks.CSVLogger(str(model_dir / HISTORY_FILE)),
        keras.callbacks.ModelCheckpoint(str(model_dir / MODEL_FILE)),
    ]
    try:
        with backend.tensorflow_not_imported():
            model.fit(
                train_batches, validation_data=dev_batches, epochs=config.epochs, callbacks=callbacks, verbose=verbose
            )
    except KeyboardInterrupt:
        _log(f"\ninterrupted: {model_dir / MODEL_FILE} holds the last finished epoch")
        raise
    return system


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
