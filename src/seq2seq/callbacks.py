"""What happens at the end of every epoch besides Keras's own callbacks: timing and the
time budget, dev-set BLEU/chrF, the checkpoint that makes a run resumable, and giving
freed memory back."""

from __future__ import annotations

import io
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keras

from . import averaging
from .backend import release_freed_memory
from .data import Pair
from .evaluation import score
from .files import CHECKPOINT_STATE_FILE, MODEL_FILE, remove_temporaries, save_model, write_atomic

if TYPE_CHECKING:
    from .api import Seq2Seq


class ReleaseFreedMemory(keras.callbacks.Callback):
    """`backend.release_freed_memory()` every `every` batches, before validation and at
    each epoch's end (before the dev scores and saves, where peak memory was)."""

    def __init__(self, every: int = 100) -> None:
        super().__init__()
        self.every = every

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if (batch + 1) % self.every == 0:
            release_freed_memory()

    def on_test_begin(self, logs=None) -> None:
        release_freed_memory()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        release_freed_memory()


class TrainingClock(keras.callbacks.Callback):
    """Adds `seconds` (training time so far, over all runs of a resumed training) to the
    epoch logs, prints the time remaining, and stops training when `budget_minutes` are
    spent (after the current batch)."""

    def __init__(self, epochs: int, budget_minutes: float | None = None, seconds_before: float = 0.0) -> None:
        super().__init__()
        self.epochs = epochs
        self.budget = budget_minutes * 60 if budget_minutes else None
        self.seconds_before = seconds_before
        self.started = time.perf_counter()

    def on_train_begin(self, logs=None) -> None:
        self.started = time.perf_counter()
        self.first_epoch: int | None = None

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self.budget is not None and self.elapsed() >= self.budget:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        elapsed = self.elapsed()
        if logs is not None:
            logs["seconds"] = round(elapsed, 2)
        done_here = epoch + 1 - self.first_epoch
        per_epoch = (time.perf_counter() - self.started) / done_here
        remaining = per_epoch * (self.epochs - epoch - 1)
        if self.budget is not None:
            remaining = min(remaining, max(self.budget - elapsed, 0))
        stop = " (time budget spent)" if self.model.stop_training and self.budget else ""
        print(
            f"epoch {epoch + 1}/{self.epochs}: {_minutes(elapsed)} so far, about {_minutes(remaining)} left{stop}",
            file=sys.stderr,
            flush=True,
        )


class LinearDecay(keras.callbacks.Callback):
    """Lowers the learning rate linearly towards zero over the training, set at the start
    of every epoch: base x (1 - progress), where progress is the share of the epochs done
    or, with a time budget, of the time spent, whichever is further. Budgeted training
    ends with a small learning rate, however many epochs fit."""

    def __init__(self, base: float, epochs: int, clock: TrainingClock) -> None:
        super().__init__()
        self.base = base
        self.epochs = epochs
        self.clock = clock

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        progress = epoch / self.epochs
        if self.clock.budget:
            progress = max(progress, self.clock.elapsed() / self.clock.budget)
        self.model.optimizer.learning_rate.assign(self.base * max(1.0 - progress, 0.02))

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class DevScores(keras.callbacks.Callback):
    """Decodes a sample of the dev split after every epoch (greedy, compiled) and adds
    `dev_bleu`, `dev_chrf` and `dev_exact` to the epoch logs, next to the loss."""

    def __init__(self, system: Seq2Seq, pairs: list[Pair], sentences: int, seed: int = 0) -> None:
        super().__init__()
        self.system = system
        self.pairs = pairs if len(pairs) <= sentences else random.Random(seed).sample(pairs, sentences)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        hypotheses = self.system.translate([p.source for p in self.pairs])
        scores = score(hypotheses, [p.target for p in self.pairs])
        if logs is not None:
            logs.update(dev_bleu=round(scores.bleu, 2), dev_chrf=round(scores.chrf, 2), dev_exact=scores.exact_match)


class BestModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's ModelCheckpoint (use with save_best_only), writing the model through
    `files.save_model`: a kill or a failed write while saving leaves the previous best
    (and a temporary file, removed when training starts again)."""

    def on_train_begin(self, logs=None) -> None:
        remove_temporaries(self.filepath)

    def _save_model(self, epoch: int, batch: int | None, logs: dict | None) -> None:
        path = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            save_model(self.model, path)


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras's CSVLogger, the same rows, but the whole file is written again (atomically,
    through `files.write_atomic`) after every epoch instead of appended to: a kill or a
    failed write leaves the history of the epochs before, never half a row."""

    def on_train_begin(self, logs=None) -> None:
        remove_temporaries(self.filename)
        text = ""
        if self.append and Path(self.filename).is_file():
            with open(self.filename, encoding="utf-8", newline="") as f:
                text = f.read()
        self.append_header = not text
        self.csv_file = io.StringIO(newline="")  # kept as written: csv's \r\n, as CSVLogger's file has
        self.csv_file.write(text)
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        super().on_epoch_end(epoch, logs)
        write_atomic(self.filename, self.csv_file.getvalue())

    def on_train_end(self, logs=None) -> None:
        self.writer = None


class EpochWeights(keras.callbacks.Callback):
    """Saves the trainable weights after every epoch (DIR/epoch-NNN.npz, `averaging`),
    keeping the last `keep`. At the start it removes the files of epochs after
    `epochs_done`: a run killed after writing them but before its checkpoint leaves them,
    and the resumed run writes them again."""

    def __init__(self, directory: Path, keep: int, epochs_done: int = 0) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.keep = keep
        self.epochs_done = epochs_done

    def on_train_begin(self, logs=None) -> None:
        averaging.remove_temporaries(self.directory)
        for number, path in averaging.saved_epochs(self.directory).items():
            if number > self.epochs_done:
                path.unlink()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        averaging.save_weights(self.model, averaging.epoch_file(self.directory, epoch + 1))
        for number, old in averaging.saved_epochs(self.directory).items():
            if number <= epoch + 1 - self.keep:
                old.unlink()


class TrainingCheckpoint(keras.callbacks.Callback):
    """After every epoch, everything needed to resume: the model with its optimizer state
    (DIR/model.keras) and the progress (DIR/state.json: epochs done, training seconds,
    the state of the callbacks that count epochs, and the dropout random generators,
    which Keras does not save). Files are replaced atomically, so a run killed at any
    moment leaves the last complete checkpoint.

    On resume, pass the saved state as `restore`: it is put back into the callbacks after
    their own `on_train_begin` has reset them (this callback must come after them).
    """

    # attributes of Keras callbacks that carry over from epoch to epoch
    STATE = {
        keras.callbacks.EarlyStopping: ("wait", "best", "best_epoch"),
        keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
        keras.callbacks.ModelCheckpoint: ("best",),
    }

    def __init__(self, directory: Path, callbacks: dict[str, keras.callbacks.Callback], restore: dict | None = None):
        super().__init__()
        self.directory = Path(directory)
        self.callbacks = callbacks
        self.restore = restore

    def on_train_begin(self, logs=None) -> None:
        for name in (MODEL_FILE, CHECKPOINT_STATE_FILE):  # left by a kill in mid-write
            remove_temporaries(self.directory / name)
        if not self.restore:
            return
        for name, values in self.restore.get("callbacks", {}).items():
            if name not in self.callbacks:  # early stopping under a linear schedule, saved by an earlier version
                continue
            for attribute, value in values.items():
                setattr(self.callbacks[name], attribute, _from_json_number(value))
        for variable, value in zip(_random_states(self.model), self.restore.get("random_states", []), strict=True):
            variable.assign(value)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        save_model(self.model, self.directory / MODEL_FILE)
        state = {
            "epochs_done": epoch + 1,
            "seconds": (logs or {}).get("seconds", 0.0),
            "callbacks": {name: self._state_of(callback) for name, callback in self.callbacks.items()},
            "random_states": [keras.ops.convert_to_numpy(v).tolist() for v in _random_states(self.model)],
        }
        write_atomic(self.directory / CHECKPOINT_STATE_FILE, json.dumps(state, indent=2) + "\n")

    def _state_of(self, callback: keras.callbacks.Callback) -> dict:
        attributes = next(names for kind, names in self.STATE.items() if isinstance(callback, kind))
        return {name: _to_json_number(getattr(callback, name)) for name in attributes}


def _random_states(model: keras.Model) -> list:
    """The state variables of the model's random generators (dropout), in layer order."""
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def _to_json_number(value):
    value = float(value) if not isinstance(value, int) else value
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _from_json_number(value):
    return float(value) if value in ("inf", "-inf") else value


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
