"""The model directory's file names, the model's input names, and writing files so a kill
never leaves half of one.

The names live here, apart from the modules that use them, so that a module that only
names a file or an input (batches, callbacks, sweeps) need not import the model."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

CONFIG_FILE = "config.json"
SOURCE_VOCAB_FILE = "source_vocab.json"
TARGET_VOCAB_FILE = "target_vocab.json"
MODEL_FILE = "model.keras"
SPLIT_DIR = "split"
HISTORY_FILE = "history.csv"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.json"  # in CHECKPOINT_DIR, beside its MODEL_FILE
EVALUATION_FILE = "evaluation.json"  # written by `seq2seq evaluate`, read by `seq2seq serve`

# The training model's inputs, by name: batches are dictionaries with these keys.
SOURCE_IDS = "source_ids"
DECODER_INPUT_IDS = "decoder_input_ids"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is flushed to disk and renamed over `path`.

    The temporary name ends with `path`'s suffix (Keras saves only to names ending in
    .keras) and starts with a dot. It gets the permissions a new file would (mkstemp's are
    0600), or those of the file it replaces. On any error the temporary file is removed,
    `path` keeps its last good version, and an OSError about the temporary file or about
    no file (a failed write: disk full, file too large) names `path` instead.
    """
    path = Path(path)
    try:
        temporary = _new_temporary(path)
    except OSError as error:
        if error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error
    try:
        yield temporary
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None and _about(error, temporary):
            raise OSError(error.errno, error.strerror, str(path)) from error  # same errno, so same subclass
        raise
    _fsync_directory(path.parent)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` through `atomic_path`."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def save_model(model, path: str | Path) -> None:
    """`model.save(path)` (a Keras model) through `atomic_path`."""
    with atomic_path(path) as temporary:
        model.save(temporary, overwrite=True)


def remove_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries `atomic_path` left beside `path` when a kill stopped it in
    mid-write (.NAME.RANDOM.tmpSUFFIX); returns them. For the writer of `path`, before it
    writes: another one's temporary may be in use."""
    path = Path(path)
    return remove_temporaries_matching(path.parent, re.escape(path.name), path.suffix)


def remove_temporaries_matching(directory: str | Path, name_pattern: str, suffix: str) -> list[Path]:
    """`remove_temporaries` for every file of `directory` whose name matches the regular
    expression `name_pattern` and ends with `suffix` (a writer of numbered files)."""
    directory = Path(directory)
    name = re.compile(rf"\.{name_pattern}\.[0-9a-f]{{8}}\.tmp{re.escape(suffix)}")
    if not directory.is_dir():
        return []
    removed = [candidate for candidate in directory.iterdir() if name.fullmatch(candidate.name)]
    for temporary in removed:
        temporary.unlink(missing_ok=True)
    return removed


def _new_temporary(path: Path) -> Path:
    """A new empty file .NAME.RANDOM.tmpSUFFIX beside `path`, created with the usual permissions."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary


def _about(error: OSError, temporary: Path) -> bool:
    """Whether `error` is about the temporary file or names no file (a failed write)."""
    return error.filename is None or os.fspath(error.filename) == os.fspath(temporary)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system allows it
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
