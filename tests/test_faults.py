"""Faults (issue 23): every file a run writes is replaced whole or not at all; a full disk
or a read-only model directory ends in one clear line and loses nothing; a training
killed at random moments and resumed ends with an uninterrupted run's weights."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pytest

from seq2seq import Config, Seq2Seq, averaging, files
from seq2seq.callbacks import BestModelCheckpoint, HistoryLogger, TrainingCheckpoint
from seq2seq.cli import main
from seq2seq.data import Pair, Split
from seq2seq.evaluation import Scores
from seq2seq.files import CHECKPOINT_DIR, CONFIG_FILE, HISTORY_FILE, MODEL_FILE, atomic_path, write_atomic
from seq2seq.sweep import write_results
from seq2seq.training import _truncate_history, build_model, compile_model
from seq2seq.vocab import CharTokenizer, Codec, SubwordTokenizer, WordTokenizer

from .conftest import bench_module

ROOT = Path(__file__).resolve().parents[1]


# --- the writers: WRITERS[name](directory, version) prepares what version 1 or 2 of its --
# files is made of and returns the function that writes them


TEXTS = ["uno dos tres", "cuatro cinco seis", "siete ocho nueve diez", "once doce trece catorce quince"]


def _keras_model(version: int) -> keras.Model:
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="adam", loss="mse")
    model.set_weights([np.full_like(w, version) for w in model.get_weights()])
    return model


def _seq2seq(version: int) -> Seq2Seq:
    config = Config.textbook(latent_dim=4 + version, epochs=1, level="char")
    source = target = Codec.fit(CharTokenizer(), TEXTS)
    model = build_model(config, len(source), len(target))
    compile_model(model, config)
    return Seq2Seq(config, source, target, model)


def _history(directory: Path, version: int):
    logger = HistoryLogger(str(directory / HISTORY_FILE), append=True)

    def write():
        logger.on_train_begin()
        logger.on_epoch_end(version - 1, {"loss": 1.0 / version, "val_loss": 2.0 / version})

    return write


def _truncated_history(directory: Path, version: int):
    path = directory / HISTORY_FILE
    if version == 1:  # three epochs, as a run killed after its history row and before its checkpoint
        return lambda: path.write_text("epoch,loss\r\n0,3.0\r\n1,2.0\r\n2,1.0\r\n", encoding="utf-8")
    return lambda: _truncate_history(path, 1)  # resuming after epoch 1


def _report(directory: Path, version: int):
    from seq2seq.report import write_report

    history = "epoch,loss,val_loss,dev_bleu,dev_chrf,seconds\r\n0,3.0,3.0,1.0,10.0,1.0\r\n1,2.0,2.0,2.0,20.0,2.0\r\n"
    results = []
    for latent_dim in (16, 32):
        point = f"h{latent_dim}"
        (directory / "points" / point).mkdir(parents=True, exist_ok=True)
        (directory / "points" / point / HISTORY_FILE).write_text(history, encoding="utf-8")
        results.append(
            {
                "point": point,
                "latent_dim": latent_dim,
                "dev_loss": 2.0,
                "dev_bleu": 2.0 + version + latent_dim / 16,
                "dev_chrf": 20.0,
                "epochs": 2,
                "training_seconds": 2.0,
                "parameters": 1000 * latent_dim,
                "training_pairs": 100,
            }
        )
    (directory / "results.json").write_text(json.dumps(results), encoding="utf-8")
    (directory / "sweep.json").write_text(json.dumps({"base": {}, "axes": {"latent_dim": [16, 32]}}), encoding="utf-8")
    return lambda: write_report(directory)


def _plot(directory: Path, version: int):
    from matplotlib.figure import Figure

    from seq2seq import plots

    figure = Figure()
    figure.add_subplot().plot([0, 1, 2], [0, version, 0])
    return lambda: plots.save(figure, directory / "plots" / "curve")


def _best_model(directory: Path, version: int):
    model = _keras_model(version)

    def write():  # a new run's callback: no best value yet, so it saves
        checkpoint = BestModelCheckpoint(str(directory / MODEL_FILE), monitor="loss", mode="min", save_best_only=True)
        checkpoint.set_model(model)
        checkpoint.on_train_begin()
        checkpoint.on_epoch_end(version - 1, {"loss": 1.0})

    return write


def _training_checkpoint(directory: Path, version: int):
    checkpoint = TrainingCheckpoint(directory / CHECKPOINT_DIR, {})
    checkpoint.set_model(_keras_model(version))
    return lambda: checkpoint.on_epoch_end(version - 1, {"seconds": float(version)})


def _scores(version: int) -> Scores:
    return Scores(version, exact_match=0.5, bleu=10.0 * version, chrf=20.0, bleu_signature="", chrf_signature="")


def _subword(version: int) -> Codec:
    return Codec.fit(SubwordTokenizer.train(TEXTS[: 2 + version], vocab_size=30), TEXTS[: 2 + version])


def _split(version: int) -> Split:
    return Split([Pair(t, t[::-1]) for t in TEXTS * version], [Pair("a", "b")] * version, [Pair("c", "d")])


WRITERS = {
    "config.json": lambda d, v: lambda: Config.textbook(seed=v).save(d / CONFIG_FILE),
    "vocabulary": lambda d, v: lambda: Codec.fit(WordTokenizer(), TEXTS[:v]).save(d / "source_vocab.json"),
    "subword vocabulary and .spm": lambda d, v: partial(_subword(v).save, d / "target_vocab.json"),
    "split files": lambda d, v: lambda: _split(v).save(d / "split"),
    "model directory (Seq2Seq.save)": lambda d, v: partial(_seq2seq(v).save, d),
    "model.keras (files.save_model)": lambda d, v: partial(files.save_model, _keras_model(v), d / MODEL_FILE),
    "epoch weights (averaging.save_weights)": lambda d, v: partial(
        averaging.save_weights, _keras_model(v), averaging.epoch_file(d, 1)
    ),
    "best model (BestModelCheckpoint)": _best_model,
    "checkpoint (TrainingCheckpoint)": _training_checkpoint,
    "history.csv (HistoryLogger)": _history,
    "history.csv truncated on resume": _truncated_history,
    "sweep results.json and results.csv": lambda d, v: (
        lambda: write_results([{"point": f"p{i}", "dev_bleu": float(v)} for i in range(v)], d)
    ),
    "sweep report and its plots": _report,
    "plots": _plot,
    "scores (evaluate --output)": lambda d, v: lambda: _scores(v).save(d / "scores.json"),
}


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if ".tmp" in p.name]


def _fail(kind: str):
    """A stand-in for os.fsync or os.replace that fails as a full disk or a refused rename would."""

    def fail(*args, **kwargs):
        if kind == "disk full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(args[0]), None, str(args[1]))

    return fail


FAULTS = {"disk full (fsync)": ("fsync", "disk full"), "rename refused (os.replace)": ("replace", "refused")}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_failed_write_keeps_the_previous_version(tmp_path, monkeypatch, writer, fault):
    WRITERS[writer](tmp_path, 1)()
    write = WRITERS[writer](tmp_path, 2)
    before = _tree(tmp_path)
    function, kind = FAULTS[fault]
    with monkeypatch.context() as patch:
        patch.setattr(os, function, _fail(kind))
        with pytest.raises(OSError) as raised:
            write()
    assert _tree(tmp_path) == before  # every file as it was: none replaced, none half-written
    assert _temporaries(tmp_path) == []
    # the error names the file it could not write, not the temporary
    named = Path(raised.value.filename)
    assert named.parent.is_relative_to(tmp_path) and not named.name.startswith("."), raised.value
    assert str(named.relative_to(tmp_path)) in before or not named.exists()

    write()  # and without the fault the new version replaces the old
    assert _tree(tmp_path) != before
    assert _temporaries(tmp_path) == []


# A write that stops part way: the file size limit (RLIMIT_FSIZE) makes every write past
# LIMIT bytes fail with EFBIG, in a process of its own (the limit is per process, and
# pytest's own output files would hit it too).
LIMIT = 16
PARTIAL_WRITES = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from tests.test_faults import WRITERS, _temporaries, _tree

    directory, results = Path(sys.argv[1]), {}
    for number, (name, write) in enumerate(WRITERS.items()):
        here = directory / str(number)
        here.mkdir()
        write(here, 1)()
        write = write(here, 2)
        before = _tree(here)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write instead of a killed process
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (SIZE_LIMIT, hard))
        try:
            write()
            error = None
        except OSError as raised:
            error = [raised.errno, raised.filename]
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        results[name] = dict(error=error, intact=_tree(here) == before, temporaries=len(_temporaries(here)))
    print(json.dumps(results))
    """
).replace("SIZE_LIMIT", str(LIMIT))


@pytest.fixture(scope="module")
def partial_writes(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("partial")
    result = subprocess.run(
        [sys.executable, "-c", PARTIAL_WRITES, str(directory), str(ROOT)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_write_stopped_part_way_keeps_the_previous_version(partial_writes, writer):
    outcome = partial_writes[writer]
    assert outcome["error"] is not None, "the write went through despite the size limit"
    code, filename = outcome["error"]
    assert code == errno.EFBIG
    assert filename and not Path(filename).name.startswith("."), filename  # the real file, not the temporary
    assert outcome["intact"]
    assert outcome["temporaries"] == 0


def test_atomic_path_permissions_and_names(tmp_path):
    old_umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.json", "{}")
        assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644  # not mkstemp's 0600
        (tmp_path / "private.json").write_text("{}")
        (tmp_path / "private.json").chmod(0o600)
        write_atomic(tmp_path / "private.json", '{"a": 1}')
        assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600  # kept
    finally:
        os.umask(old_umask)
    with atomic_path(tmp_path / "model.keras") as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".model.keras.")
        assert temporary.suffix == ".keras"  # Keras saves only to names that end in .keras
        temporary.write_bytes(b"x")
    # an error in the writer itself passes through unchanged, the temporary goes
    with pytest.raises(ValueError), atomic_path(tmp_path / "new.json") as temporary:
        raise ValueError("not a file error")
    assert (tmp_path / "new.json").read_text() == "{}" and _temporaries(tmp_path) == []
    # an error about another file keeps its name
    with pytest.raises(FileNotFoundError) as raised, atomic_path(tmp_path / "new.json"):
        (tmp_path / "elsewhere.txt").read_text()
    assert raised.value.filename == str(tmp_path / "elsewhere.txt")
    # no directory to write into: the error names the file
    with pytest.raises(FileNotFoundError) as raised:
        write_atomic(tmp_path / "missing" / "x.json", "{}")
    assert raised.value.filename == str(tmp_path / "missing" / "x.json")


def test_training_removes_temporaries_a_kill_left(tmp_path):
    left = [tmp_path / ".model.keras.0123abcd.tmp.keras", tmp_path / "checkpoint" / ".state.json.89abcdef.tmp.json"]
    other = [tmp_path / ".model.keras.notours.tmp.keras", tmp_path / "model.keras.0123abcd.tmp.keras"]
    for path in left + other:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    assert files.remove_temporaries(tmp_path / MODEL_FILE) == [left[0]]
    assert files.remove_temporaries(tmp_path / "checkpoint" / "state.json") == [left[1]]
    assert all(path.exists() for path in other)
    assert files.remove_temporaries(tmp_path / "absent" / "x.json") == []


# --- whole runs: the kill soak's settings ------------------------------------------------


@pytest.fixture(scope="module")
def soak():
    return bench_module("kill_soak")


@pytest.fixture(scope="module")
def finished(soak, tmp_path_factory):
    """An uninterrupted run of the kill soak's settings: (its model directory, its timing)."""
    return soak.reference(tmp_path_factory.mktemp("reference"))


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


def _cli(*args: str, prefix: str = "", wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    script = f"import sys\n{prefix}\nfrom seq2seq.cli import main\nsys.exit(main(sys.argv[1:]))"
    command = [*(wrap or []), sys.executable, "-c", script, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("seq2seq: error:")]


def test_kill_soak_trials_end_as_an_uninterrupted_run(soak, finished, tmp_path):
    """Two trials of bench/kill_soak.py (it runs 20 at random moments by default), one kill
    each at a set moment: the first shortly after its first epoch's checkpoint, so it
    resumes, the second a second into its training (building, compiling), so it starts
    again; both end with the uninterrupted run's weights, optimizer state and history."""
    expected, window = finished
    plans = {1: [(0.3, "epochs")], 2: [(1.0, "training")]}
    results = [soak.trial(n, None, tmp_path, expected, window, max_kills=1, plan=plan) for n, plan in plans.items()]
    assert [run.killed for result in results for run in result.runs] == [True, False, True, False]
    assert results[0].runs[1].command == "resume"
    for result in results:
        assert result.equal, (result.runs, result.problem)
        assert result.temporaries_left == 0


FULL_DISK = "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); " + (
    "resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))"
)


def test_full_disk_ends_in_one_line_and_keeps_the_best_model(finished, tmp_path):
    """More epochs on a disk that takes no file as large as a model: the first save of a
    better model fails; the error names model.keras, and the best model before stays."""
    model_dir = _copy(finished[0], tmp_path)
    before = _tree(model_dir)
    limit = (model_dir / MODEL_FILE).stat().st_size // 2  # the settings, history and state fit
    result = _cli(
        "train", "--resume", "--epochs", "6", "--model-dir", str(model_dir), prefix=FULL_DISK.format(limit=limit)
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert _error_lines(result.stderr) == [f"seq2seq: error: {model_dir / MODEL_FILE}: File too large"]
    assert "Traceback" not in result.stderr
    after = _tree(model_dir)
    assert after[MODEL_FILE] == before[MODEL_FILE]
    assert after[f"{CHECKPOINT_DIR}/{MODEL_FILE}"] == before[f"{CHECKPOINT_DIR}/{MODEL_FILE}"]
    assert _temporaries(model_dir) == []
    Seq2Seq.load(model_dir).translate(["uno"])  # loadable, and it decodes


def test_no_space_left_ends_in_one_line_and_keeps_the_best_model(finished, tmp_path, monkeypatch, capsys):
    """The same with ENOSPC, as a full file system reports it (raised by the writes here)."""
    model_dir = _copy(finished[0], tmp_path)
    before = _tree(model_dir)
    real_replace = os.replace

    def replace(source, destination, *args, **kwargs):
        if Path(destination).name == MODEL_FILE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["train", "--resume", "--epochs", "6", "--model-dir", str(model_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"seq2seq: error: {model_dir / MODEL_FILE}: No space left on device"]
    monkeypatch.undo()
    after = _tree(model_dir)
    assert after[MODEL_FILE] == before[MODEL_FILE]
    assert _temporaries(model_dir) == []
    Seq2Seq.load(model_dir)


def _read_only_runner() -> tuple[list[str], str]:
    """How to run a process that a directory without write permission stops: as root,
    permission bits do not stop writes (CAP_DAC_OVERRIDE), so the process runs in a new
    user namespace (`unshare --user`): the same files and user, no capabilities over them."""
    if os.geteuid() != 0:
        return [], "an ordinary user"
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--user", "true"], capture_output=True).returncode == 0:
        return [unshare, "--user"], "unshare --user"
    return [], "monkeypatch"


def _make_read_only(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)


def _make_writable(directory: Path) -> None:
    for path in [directory, *directory.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


@pytest.mark.parametrize("command", ["resume", "overwrite"])
def test_read_only_model_directory_ends_in_one_line_and_loses_nothing(finished, tmp_path, monkeypatch, capsys, command):
    model_dir = _copy(finished[0], tmp_path)
    before = _tree(model_dir)
    args = ["train", "--model-dir", str(model_dir), "--quiet"]
    args += (
        ["--resume", "--epochs", "6"] if command == "resume" else ["--overwrite", *bench_module("kill_soak").SETTINGS]
    )
    wrap, how = _read_only_runner()
    _make_read_only(model_dir)
    try:
        if how == "monkeypatch":  # root without user namespaces: refuse the writes here
            real_open = os.open

            def refusing_open(path, flags, *rest, **kwargs):
                if flags & os.O_CREAT and Path(path).is_relative_to(model_dir):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(path, flags, *rest, **kwargs)

            monkeypatch.setattr(os, "open", refusing_open)
            status, stderr = main(args), capsys.readouterr().err
            monkeypatch.undo()
        else:
            result = _cli(*args, wrap=wrap)
            status, stderr = result.returncode, result.stderr
    finally:
        _make_writable(model_dir)
    assert status == 2, stderr[-3000:]
    # resuming writes the settings first; training anew removes the old checkpoint first
    first = model_dir / (CONFIG_FILE if command == "resume" else f"{CHECKPOINT_DIR}/state.json")
    assert _error_lines(stderr) == [f"seq2seq: error: {first}: Permission denied"], how
    assert "Traceback" not in stderr
    assert _tree(model_dir) == before
    Seq2Seq.load(model_dir)
