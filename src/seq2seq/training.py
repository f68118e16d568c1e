"""Training: data -> split -> vocabularies -> batches -> `fit` -> a saved model directory."""

from __future__ import annotations

import contextlib
import csv
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import keras

from . import averaging, backend, modeldir
from .api import Seq2Seq
from .batches import PairBatches
from .callbacks import (
    BestModelCheckpoint,
    DevScores,
    EpochWeights,
    HistoryLogger,
    LinearDecay,
    ReleaseFreedMemory,
    TrainingCheckpoint,
    TrainingClock,
)
from .config import Config, ConfigError
from .data import Pair, Split, load_pairs, split_by_source
from .decoding import default_length_ratio, default_max_length
from .evaluation import score
from .files import CHECKPOINT_DIR, CHECKPOINT_STATE_FILE, CONFIG_FILE, HISTORY_FILE, MODEL_FILE, SPLIT_DIR, atomic_path
from .losses import MaskedAccuracy, MaskedCrossEntropy
from .model import build_model
from .optimizers import make_optimizer
from .vocab import Codec, SubwordTokenizer, Tokenizer, make_tokenizer


class ModelDirExistsError(FileExistsError):
    """Training would overwrite a model that is already there."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "backend": keras.backend.backend()}
    for package in ("seq2seq", "keras", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "numpy", "sentencepiece"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def prepare_data(config: Config) -> Split:
    """The training, dev and test pairs: a split of `data` by source sentence, or, with
    `dev_data` (and `test_data`), those files, whose sources are then removed from training."""

    def load(spec: str | None, num_samples: int | None = None) -> list[Pair]:
        if spec is None:
            return []
        return load_pairs(
            spec, num_samples, first=config.first, reverse=config.reverse, strict=config.strict, seed=config.seed
        )

    pairs = load(config.data, config.num_samples)
    if config.dev_data is None and config.test_data is None:
        return split_by_source(pairs, config.dev_fraction, config.test_fraction, seed=config.seed)
    dev, test = load(config.dev_data), load(config.test_data)
    held_out = {p.source for p in dev + test}
    train = [p for p in pairs if p.source not in held_out]
    if len(train) < len(pairs):
        _log(f"left out of training {len(pairs) - len(train)} pairs whose source is in the dev or test data")
    if not train:
        raise ConfigError("no training pairs left: every source is also in the dev or test data")
    return Split(train, dev, test)


def fit_codecs(config: Config, pairs: list[Pair]) -> tuple[Codec, Codec]:
    """Source and target tokenizers and vocabularies, from the training pairs only."""
    codecs = []
    for side in ("source", "target"):
        texts = [getattr(p, side) for p in pairs]
        tokenizer: Tokenizer
        if config.level == "subword":
            tokenizer = SubwordTokenizer.train(texts, config.vocab_size, config.subword_model, config.lowercase)
        else:
            tokenizer = make_tokenizer(config.level, lowercase=config.lowercase)
        codecs.append(Codec.fit(tokenizer, texts, max_size=config.max_vocab, min_freq=config.min_freq))
    return codecs[0], codecs[1]


def with_decoding_limits(config: Config, source: Codec, target: Codec, pairs: list[Pair]) -> Config:
    """`config` with the output limits it leaves unset taken from the training pairs (see
    decoding.OutputLimits)."""
    if config.max_length and config.max_length_ratio:
        return config
    lengths = [(len(source.tokenize(p.source)), len(target.tokenize(p.target))) for p in pairs]
    return replace(
        config,
        max_length=config.max_length or default_max_length(max(t for _, t in lengths)),
        max_length_ratio=config.max_length_ratio or default_length_ratio(lengths),
    )


def check_model_dir(model_dir: Path, overwrite: bool) -> None:
    if (model_dir / MODEL_FILE).exists() and not overwrite:
        raise ModelDirExistsError(
            f"{model_dir} already holds a trained model; pass --overwrite to replace it, --resume to continue "
            "its training, or choose another --model-dir"
        )


def monitored(config: Config) -> tuple[str, str]:
    """The dev metric that decides the best epoch, and whether higher is better."""
    if config.stop_metric == "loss":
        return "val_loss", "min"
    if not config.dev_bleu_sentences:
        raise ConfigError(f"stop_metric {config.stop_metric} needs dev_bleu_sentences > 0")
    return f"dev_{config.stop_metric}", "max"


def compile_model(model: keras.Model, config: Config) -> None:
    model.compile(
        optimizer=make_optimizer(config),
        loss=MaskedCrossEntropy(label_smoothing=config.label_smoothing),
        metrics=[MaskedAccuracy()],
    )


def train(
    config: Config,
    model_dir: str | Path,
    overwrite: bool = False,
    verbose: str | int = "auto",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> Seq2Seq:
    """Train a model as `config` says and save everything into `model_dir`.

    model.keras always holds the best epoch so far (by the dev metric), and at the end,
    with `average_epochs`, the mean of the last epochs if it scores better on dev; the
    checkpoint directory holds the last epoch with its optimizer state, for `resume`.
    """
    backend.bfloat16_training_logits()  # a wrong setting is named before any work
    model_dir = Path(model_dir)
    check_model_dir(model_dir, overwrite)
    with backend.tensorflow_not_imported():
        keras.utils.set_random_seed(config.seed)

    split = prepare_data(config)
    source, target = fit_codecs(config, split.train)
    config = replace(with_decoding_limits(config, source, target, split.train), versions=library_versions())
    scope, devices = devices_for(config)
    with scope:
        model = build_model(config, len(source), len(target))
        compile_model(model, config)
    system = Seq2Seq(config, source, target, model)
    # a previous run's checkpoint goes first (its state.json, which --resume looks for, before
    # the rest), so that a kill while the new files are written leaves nothing to resume wrongly
    (model_dir / CHECKPOINT_DIR / CHECKPOINT_STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(model_dir / CHECKPOINT_DIR, ignore_errors=True)
    (model_dir / HISTORY_FILE).unlink(missing_ok=True)
    system.save(model_dir)
    split.save(model_dir / SPLIT_DIR)
    _log(
        f"pairs: {len(split.train)} train, {len(split.dev)} dev, {len(split.test)} test; "
        f"vocabulary: {len(source)} source, {len(target)} target {config.level} tokens; "
        f"parameters: {model.count_params():,}; backend: {keras.backend.backend()}, {devices} device(s)"
    )
    return _fit(system, split, model_dir, 0, verbose, callbacks, devices=devices)


def resume(
    model_dir: str | Path,
    epochs: int | None = None,
    verbose: str | int = "auto",
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> Seq2Seq:
    """Continue an interrupted training from its last checkpoint: weights, optimizer
    state, epoch, callbacks' state, and the same batches an uninterrupted run would see.
    `epochs` raises the total number of epochs."""
    backend.bfloat16_training_logits()  # a wrong setting is named before any work
    model_dir = Path(model_dir)
    checkpoint = model_dir / CHECKPOINT_DIR
    if not (checkpoint / CHECKPOINT_STATE_FILE).is_file():
        raise FileNotFoundError(f"{model_dir}: no checkpoint to resume from ({checkpoint / CHECKPOINT_STATE_FILE})")
    system = Seq2Seq.load(model_dir)
    state = modeldir.check_checkpoint(checkpoint)
    config = system.config if epochs is None else replace(system.config, epochs=epochs)
    system.config = config
    config.save(model_dir / CONFIG_FILE)
    scope, devices = devices_for(config)
    with scope:
        system.model = backend.load_model(checkpoint / MODEL_FILE, compile=True)
    modeldir.check_sizes(
        model_dir, system.model, len(system.source), len(system.target), f"{CHECKPOINT_DIR}/{MODEL_FILE}"
    )
    _truncate_history(model_dir / HISTORY_FILE, state["epochs_done"])
    with backend.tensorflow_not_imported():
        keras.utils.set_random_seed(config.seed)
    split = Split.load(model_dir / SPLIT_DIR)
    _log(f"resuming {model_dir} after epoch {state['epochs_done']} of {config.epochs}")
    return _fit(system, split, model_dir, state["epochs_done"], verbose, callbacks, restore=state, devices=devices)


def devices_for(config: Config):
    """(context to build the model in, number of devices) for this configuration."""
    if config.data_parallel:
        return backend.use_all_devices()
    return contextlib.nullcontext(), 1


def _fit(
    system: Seq2Seq,
    split: Split,
    model_dir: Path,
    epochs_done: int,
    verbose: str | int,
    extra_callbacks: list | None,
    restore: dict | None = None,
    devices: int = 1,
) -> Seq2Seq:
    """Fit from `epochs_done` to `config.epochs`, with the callbacks that log, choose the
    best epoch, adjust the learning rate, stop early and checkpoint."""
    config, model = system.config, system.model
    batching = dict(batch_size=config.batch_size, row_multiple=devices, latent_dim=config.latent_dim)
    train_batches = PairBatches.from_pairs(
        system.source, system.target, split.train, seed=config.seed, epoch=epochs_done, **batching
    )
    dev_batches = None
    if split.dev:
        dev_batches = PairBatches.from_pairs(system.source, system.target, split.dev, shuffle=False, **batching)
    monitor, mode = monitored(config) if split.dev else ("loss", "min")
    stateful: dict[str, keras.callbacks.Callback] = {
        "best_model": BestModelCheckpoint(str(model_dir / MODEL_FILE), monitor=monitor, mode=mode, save_best_only=True)
    }
    if config.lr_patience and not config.linear_decay:  # a schedule replaces the plateau rule
        stateful["reduce_lr"] = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=config.lr_factor, patience=config.lr_patience, verbose=1
        )
    if config.patience and not config.linear_decay:  # a schedule runs to its end: its last epochs gain most
        stateful["early_stopping"] = keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=config.patience, verbose=1
        )
    averaged = config.average_epochs > 1 and bool(split.dev)
    if config.average_epochs > 1 and not split.dev:
        _log("warning: no dev split to choose between the mean of the last epochs and the best one: not averaging")
    clock = TrainingClock(config.epochs, config.time_budget, seconds_before=(restore or {}).get("seconds", 0.0))
    callbacks: list[keras.callbacks.Callback] = [ReleaseFreedMemory(), clock]
    if config.linear_decay:
        callbacks.append(LinearDecay(config.learning_rate, config.epochs, clock))
    if split.dev and config.dev_bleu_sentences:
        callbacks.append(DevScores(system, split.dev, config.dev_bleu_sentences, seed=config.seed))
    callbacks += [
        *stateful.values(),
        HistoryLogger(str(model_dir / HISTORY_FILE), append=True),
        *([EpochWeights(model_dir / CHECKPOINT_DIR, config.average_epochs, epochs_done)] if averaged else []),
        TrainingCheckpoint(model_dir / CHECKPOINT_DIR, stateful, restore=restore),
        *(extra_callbacks or []),
    ]
    try:
        with backend.tensorflow_not_imported():
            model.fit(
                train_batches,
                validation_data=dev_batches,
                epochs=config.epochs,
                initial_epoch=epochs_done,
                shuffle=False,  # PairBatches shuffles, by seed and epoch; Keras's shuffle would not resume
                callbacks=callbacks,
                verbose=verbose,
            )
            # the best epoch, as saved by the checkpoint, is the model
            best = backend.load_model(model_dir / MODEL_FILE)
            model.set_weights(best.get_weights())
            if averaged:
                _average(system, split.dev, dev_batches, model_dir, higher_is_better=mode == "max")
    except KeyboardInterrupt:
        _log(f"\ninterrupted: continue with `seq2seq train --resume --model-dir {model_dir}`")
        raise
    return system


def _average(
    system: Seq2Seq, dev: list[Pair], dev_batches: PairBatches | None, model_dir: Path, higher_is_better: bool
) -> None:
    """The mean of the last `average_epochs` epochs' weights in place of the best epoch if
    it scores better on the whole dev split (averaging.py). A damaged epoch file leaves
    the best epoch, with a warning: the training itself is done and saved."""
    try:
        averaging.keep_better_average(
            system.model,
            model_dir,
            model_dir / CHECKPOINT_DIR,
            system.config.average_epochs,
            _dev_score(system, dev, dev_batches),
            higher_is_better,
        )
    except modeldir.ModelFileError as error:
        _log(f"warning: not averaging the last epochs: {error}")


def _dev_score(system: Seq2Seq, dev: list[Pair], dev_batches: PairBatches | None) -> Callable[[], float]:
    """A function scoring the model as it is on the whole dev split by `stop_metric`:
    greedy BLEU or chrF, or the loss."""
    metric = system.config.stop_metric

    def dev_score() -> float:
        if metric == "loss":
            return float(system.model.evaluate(dev_batches, verbose=0, return_dict=True)["loss"])
        scores = score(system.translate([p.source for p in dev]), [p.target for p in dev])
        return scores.bleu if metric == "bleu" else scores.chrf

    return dev_score


def _truncate_history(path: Path, epochs_done: int) -> None:
    """Drop history rows of epochs after the checkpoint (a run killed between writing
    the history and the checkpoint would otherwise repeat them)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if rows:
        kept = [rows[0], *(row for row in rows[1:] if int(row[0]) < epochs_done)]
        with atomic_path(path) as temporary, temporary.open("w", newline="") as f:
            csv.writer(f).writerows(kept)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
