"""Checkpoint averaging: the mean of the last epochs' weights, kept when it does better on dev.

After every epoch `callbacks.EpochWeights` saves the model's trainable weights as
DIR/checkpoint/epoch-NNN.npz (the last `average_epochs` of them). When training ends,
their element-wise mean is scored on the whole dev split beside the best epoch (the one
model.keras holds), by the same measure (`stop_metric`), and replaces model.keras only if
it scores better. Weights late in a training with a falling learning rate sit around a
minimum, and their mean tends to sit nearer its middle than any of them.

Files are plain NumPy arrays, read with `allow_pickle=False` (no code runs on load).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from .files import MODEL_FILE, atomic_path, save_model
from .modeldir import ModelFileError

EPOCH_FILE = "epoch-{:03d}.npz"  # 1-based epoch number
_EPOCH_NAME = re.compile(r"epoch-(\d{3,})\.npz")


def epoch_file(directory: Path, epoch_number: int) -> Path:
    return Path(directory) / EPOCH_FILE.format(epoch_number)


def saved_epochs(directory: Path) -> dict[int, Path]:
    """The epoch-weight files in `directory`, by 1-based epoch number, in order."""
    if not Path(directory).is_dir():
        return {}
    found = {}
    for path in Path(directory).iterdir():
        match = _EPOCH_NAME.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def save_weights(model: keras.Model, path: Path) -> None:
    """The model's trainable weights, in `model.trainable_variables`' order, written atomically."""
    with atomic_path(path) as temporary, temporary.open("wb") as f:
        np.savez(f, *(keras.ops.convert_to_numpy(v) for v in model.trainable_variables))


def load_weights(model: keras.Model, path: Path) -> list[np.ndarray]:
    """The arrays `save_weights` wrote, checked against the model's trainable variables
    (ModelFileError naming the file if they do not fit)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    except (OSError, ValueError, KeyError) as error:
        raise ModelFileError(f"{path}: not an epoch-weights file ({error})") from error
    variables = model.trainable_variables
    if len(arrays) != len(variables):
        raise ModelFileError(f"{path}: holds {len(arrays)} arrays, the model has {len(variables)} trainable variables")
    for array, variable in zip(arrays, variables, strict=True):
        if tuple(array.shape) != tuple(variable.shape):
            raise ModelFileError(f"{path}: {variable.path} has shape {tuple(array.shape)}, the model {variable.shape}")
    return arrays


def mean_weights(model: keras.Model, paths: list[Path]) -> list[np.ndarray]:
    """The element-wise mean of the weights in `paths` (float64 sums, the variables' dtype out)."""
    total = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
    for path in paths:
        for sum_, array in zip(total, load_weights(model, path), strict=True):
            sum_ += array
    return [(sum_ / len(paths)).astype(v.dtype) for sum_, v in zip(total, model.trainable_variables, strict=True)]


def assign(model: keras.Model, arrays: list[np.ndarray]) -> None:
    for variable, array in zip(model.trainable_variables, arrays, strict=True):
        variable.assign(array)


def keep_better_average(
    model: keras.Model,
    model_dir: Path,
    directory: Path,
    last: int,
    dev_score: Callable[[], float],
    higher_is_better: bool,
) -> bool:
    """Score the model as it is (the best epoch) and the mean of the last `last` saved
    epochs with `dev_score`; if the mean scores better, it becomes the model and
    model.keras. Returns whether it did; the model keeps its weights otherwise."""
    paths = list(saved_epochs(directory).values())[-last:]
    if len(paths) < 2:
        return False
    started = time.perf_counter()
    best = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    best_score = dev_score()
    assign(model, mean_weights(model, paths))
    average_score = dev_score()
    better = average_score > best_score if higher_is_better else average_score < best_score
    if better:
        save_model(model, Path(model_dir) / MODEL_FILE)
    else:
        assign(model, best)
    kept = "kept in model.keras" if better else "not kept"
    print(
        f"average of the last {len(paths)} epochs: {average_score:.2f} on the whole dev split against "
        f"{best_score:.2f} for the best epoch; {kept} ({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return better
