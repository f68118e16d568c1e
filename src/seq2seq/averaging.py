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
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from .files import MODEL_FILE, atomic_path, remove_temporaries_matching, save_model
from .modeldir import ModelFileError

EPOCH_FILE = "epoch-{:03d}.npz"  # 1-based epoch number
_EPOCH_NAME = r"epoch-(\d{3,})\.npz"  # EPOCH_FILE's names, the epoch number as a group
_NAMES = "names"  # the variables' names (kernel, bias, ...), in order, to check a file against a model
ADVICE = "delete it to train without averaging it, or train again"


def epoch_file(directory: Path, epoch_number: int) -> Path:
    """Where the weights after epoch `epoch_number` (1-based) go."""
    return Path(directory) / EPOCH_FILE.format(epoch_number)


def saved_epochs(directory: Path) -> dict[int, Path]:
    """The epoch-weight files in `directory`, by 1-based epoch number, in order."""
    if not Path(directory).is_dir():
        return {}
    found = {}
    for path in Path(directory).iterdir():
        match = re.fullmatch(_EPOCH_NAME, path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def remove_temporaries(directory: Path) -> None:
    """The epoch files' temporaries a kill in mid-write left in `directory`."""
    remove_temporaries_matching(directory, _EPOCH_NAME, ".npz")


def save_weights(model: keras.Model, path: Path) -> None:
    """The model's trainable weights in `model.trainable_variables`' order (the order of
    the layers as the model's code builds them, the same after loading, where the
    variables' paths are not) with their names, written atomically."""
    variables = model.trainable_variables
    arrays = {f"w{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(variables)}
    with atomic_path(path) as temporary, temporary.open("wb") as f:
        np.savez(f, **{_NAMES: np.array([v.name for v in variables])}, **arrays)


def load_weights(model: keras.Model, path: Path) -> list[np.ndarray]:
    """The arrays `save_weights` wrote, one per `model.trainable_variables`, in that order,
    checked against their names, shapes and kinds: ModelFileError naming the file if they
    do not fit."""

    def refuse(reason: str) -> ModelFileError:
        return ModelFileError(f"{path}: {reason}; {ADVICE}")

    try:
        with np.load(path, allow_pickle=False) as stored:
            names = [str(name) for name in stored[_NAMES]]
            arrays = [stored[f"w{i}"] for i in range(len(names))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise refuse(f"not an epoch-weights file ({error})") from error
    variables = model.trainable_variables
    if len(arrays) != len(variables):
        raise refuse(f"holds {len(arrays)} arrays, the model has {len(variables)} trainable variables")
    for i, (name, array, variable) in enumerate(zip(names, arrays, variables, strict=True)):
        if name != variable.name or tuple(array.shape) != tuple(variable.shape) or array.dtype.kind != "f":
            raise refuse(
                f"array {i} is {name} {array.dtype} {tuple(array.shape)}, "
                f"the model's {variable.path} {tuple(variable.shape)}"
            )
    return arrays


def mean_weights(model: keras.Model, paths: list[Path]) -> list[np.ndarray]:
    """The element-wise mean of the weights in `paths`: one array per trainable variable,
    of its shape and dtype (summed in float64)."""
    total = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
    for path in paths:
        for sum_, array in zip(total, load_weights(model, path), strict=True):
            sum_ += array
    return [(sum_ / len(paths)).astype(v.dtype) for sum_, v in zip(total, model.trainable_variables, strict=True)]


def assign(model: keras.Model, arrays: list[np.ndarray]) -> None:
    """Set the trainable variables to `arrays` (in `model.trainable_variables`' order)."""
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
    digits = 2 if higher_is_better else 4  # BLEU or chrF; a loss
    print(
        f"average of the last {len(paths)} epochs: {average_score:.{digits}f} on the whole dev split against "
        f"{best_score:.{digits}f} for the best epoch; {kept} ({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return better
