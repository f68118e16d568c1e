"""Every failure a user can cause ends in one line on stderr and exit status 2 (issue 23):
a damaged, edited, newer or unsafe model directory, bad bytes on stdin; --debug and
SEQ2SEQ_DEBUG=1 show the traceback instead."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from seq2seq import modeldir
from seq2seq.cli import error_line, main
from seq2seq.modeldir import ModelFileError


@pytest.fixture
def model_dir(reverse_model_dir, tmp_path) -> Path:
    """A copy of the session's small trained model (conftest.py), free to damage."""
    return Path(shutil.copytree(reverse_model_dir, tmp_path / "model"))


def translate(model_dir: Path, *args: str) -> int:
    return main(["translate", "--model-dir", str(model_dir), *args, "abc"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seq2seq: error: "), err
    assert "Traceback" not in err
    return lines[0]


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def rewrite_model_config(path: Path, edit) -> None:
    """model.keras with its config.json changed by `edit` (the weights kept as they are)."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    edit(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


# --- the reported cases, through the command ------------------------------------------


def test_a_wrong_type_in_config_json_names_file_and_field(model_dir, capsys):
    # was "error: ...config.json: not all arguments converted during string formatting"
    edit_json(model_dir / "config.json", latent_dim="abc")
    assert translate(model_dir) == 2
    line = one_error_line(capsys)
    assert f"{model_dir / 'config.json'}: latent_dim: expected an integer, got 'abc'; fix the file" in line


def test_a_vocabulary_that_is_not_json_names_file_line_and_column(model_dir, capsys):
    # was a traceback (JSONDecodeError)
    (model_dir / "target_vocab.json").write_text('{"tokenizer": {"kind": "char"},\n "tokens": [oops]}')
    assert translate(model_dir) == 2
    line = one_error_line(capsys)
    assert f"{model_dir / 'target_vocab.json'}: line 2, column 13: not valid JSON" in line


def test_a_lambda_layer_in_model_keras_is_refused_and_runs_nothing(model_dir, tmp_path, capsys):
    # was a traceback (KeyError: 'name'); a Lambda carries Python code that loading would run
    import keras

    marker = tmp_path / "lambda-ran"
    function = eval(f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]")  # the path in its code
    layer = keras.layers.Lambda(function, name="injected")
    serialized = keras.saving.serialize_keras_object(layer)
    assert json.dumps(serialized).count("__lambda__")  # the function travels as bytecode

    rewrite_model_config(model_dir / "model.keras", lambda config: config["config"]["layers"].append(serialized))
    assert translate(model_dir) == 2
    line = one_error_line(capsys)
    assert "model.keras: refusing to load layer 'injected': class Lambda" in line
    assert "sources you trust" in line
    assert not marker.exists()


def test_a_class_from_another_module_is_refused_by_name(model_dir, capsys):
    def inject(config):
        config["config"]["layers"].append({"module": "os", "class_name": "system", "config": {"name": "x"}})

    rewrite_model_config(model_dir / "model.keras", inject)
    assert translate(model_dir) == 2
    assert "class system from module 'os': only keras and seq2seq are allowed" in one_error_line(capsys)


def test_a_model_keras_that_is_not_a_zip(model_dir, capsys):
    (model_dir / "model.keras").write_bytes(b"\x89HDF\r\n\x1a\n not a zip")
    assert translate(model_dir) == 2
    assert "model.keras: not a Keras model file (not a zip archive)" in one_error_line(capsys)


@pytest.mark.parametrize("name", ["source_vocab.json", "target_vocab.json"])
def test_a_vocabulary_of_another_size_than_the_model_names_both_files(model_dir, capsys, name):
    """A vocabulary with one token more than the model's table (a sound file, from another
    model or edited): refused when loading, instead of ids indexing past the table."""
    vocabulary = json.loads((model_dir / name).read_text())
    size = len(vocabulary["tokens"])
    vocabulary["tokens"].append("zz")
    (model_dir / name).write_text(json.dumps(vocabulary))
    assert translate(model_dir) == 2
    line = one_error_line(capsys)
    assert f"{model_dir / name}: {size + 1} tokens, but model.keras has {size} " in line
    assert "(the files come from different models); fix the file, or train the model again" in line


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda state: '{"epochs_done": 2,\n oops}', r"state\.json: line 2, column 2: not valid JSON"),
        (lambda state: json.dumps([state]), r"state\.json: expected a JSON object, got a list"),
        (lambda state: json.dumps({**state, "epochs_done": "2"}), r"state\.json: epochs_done: expected a whole number"),
        (lambda state: json.dumps({**state, "callbacks": None}), r"state\.json: callbacks: expected an object"),
        (lambda state: json.dumps({**state, "seconds": True}), r"state\.json: seconds: expected a number"),
        (
            lambda state: json.dumps({k: v for k, v in state.items() if k != "seconds"}),
            r"state\.json: seconds: missing",
        ),
    ],
)
def test_resume_refuses_a_damaged_checkpoint_by_name_and_writes_nothing(model_dir, capsys, damage, message):
    state_file = model_dir / "checkpoint" / "state.json"
    state_file.write_text(damage(json.loads(state_file.read_text())))
    before = {path: path.read_bytes() for path in model_dir.rglob("*") if path.is_file()}
    assert main(["train", "--resume", "--model-dir", str(model_dir)]) == 2
    line = one_error_line(capsys)
    assert re.search(message, line) and str(state_file) in line and "train again without --resume" in line, line
    assert {path: path.read_bytes() for path in model_dir.rglob("*") if path.is_file()} == before


def test_resume_refuses_code_in_the_checkpoints_model_file(model_dir, capsys):
    (model_dir / "checkpoint" / "model.keras").write_bytes(b"not a zip")
    assert main(["train", "--resume", "--model-dir", str(model_dir)]) == 2
    assert str(model_dir / "checkpoint" / "model.keras") in one_error_line(capsys)


def test_undecodable_stdin_lines_are_reported_by_number(reverse_model_dir, monkeypatch, capsys):
    # were translated silently (replacement characters)
    stdin = b"abc\n\xff\xfebad\nba\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    assert main(["translate", "--model-dir", str(reverse_model_dir)]) == 0
    out, err = capsys.readouterr()
    assert out.split("\n")[:-1] == ["cba", "", "ab"]  # output line N still answers input line N
    assert "<stdin>:2: not valid UTF-8 (byte 0)" in err and "--strict" in err

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    assert main(["translate", "--model-dir", str(reverse_model_dir), "--strict"]) == 2
    out, err = capsys.readouterr()
    assert out == "cba\n"  # the lines before it, then the error
    assert "seq2seq: error: <stdin>:2: not valid UTF-8 (byte 0); convert the input to UTF-8" in err


def test_undecodable_arguments_are_reported_by_number(reverse_model_dir, capsys):
    bad = os.fsdecode(b"ab\xff")  # how Python hands over an argument that is not UTF-8
    assert main(["translate", "--model-dir", str(reverse_model_dir), "abc", bad]) == 0
    out, err = capsys.readouterr()
    assert out == "cba\n\n" and "<arguments>:2: not valid UTF-8 (byte 2)" in err


def test_translate_help_says_what_happens_to_bad_bytes():
    from seq2seq.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = " ".join(commands.choices["translate"].format_help().split())
    assert "--strict" in help_text and "not valid UTF-8" in help_text


# --- --debug and SEQ2SEQ_DEBUG ----------------------------------------------------------


def test_debug_shows_the_traceback(model_dir, monkeypatch):
    (model_dir / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a zip archive"):
        main(["--debug", "translate", "--model-dir", str(model_dir), "abc"])
    monkeypatch.setenv("SEQ2SEQ_DEBUG", "1")
    with pytest.raises(ModelFileError):
        translate(model_dir)
    monkeypatch.setenv("SEQ2SEQ_DEBUG", "0")
    assert translate(model_dir) == 2


def test_in_a_process_one_line_and_with_debug_the_traceback(model_dir):
    edit_json(model_dir / "config.json", dropout=1.5)
    command = [sys.executable, "-m", "seq2seq.cli", "translate", "--model-dir", str(model_dir), "abc"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [line for line in result.stderr.splitlines() if line.startswith("seq2seq: error: ")]
    assert len(errors) == 1 and "config.json: dropout: must be in [0, 1), got 1.5" in errors[0]
    assert "Traceback" not in result.stderr

    result = subprocess.run([*command[:3], "--debug", *command[3:]], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ModelFileError" in result.stderr


def test_outside_errors_are_one_line_too():
    assert (
        error_line(PermissionError(13, "Permission denied", "/data/pairs.tsv")) == "/data/pairs.tsv: Permission denied"
    )
    assert error_line(FileNotFoundError("pairs.tsv: no such pair file")) == "pairs.tsv: no such pair file"
    try:
        json.loads("{\n x")
    except json.JSONDecodeError as error:
        line = error_line(error)
    assert line.startswith("not valid JSON at line 2, column 2") and "--debug" in line
    assert "\n" not in error_line(OSError("two\nlines"))


# --- the model directory's checks, one by one ---------------------------------------------


def test_a_sound_model_directory_passes(reverse_model_dir):
    config = modeldir.check(reverse_model_dir)
    assert config.level == "char" and config.versions["backend"]


def test_a_directory_from_a_newer_seq2seq_says_so(model_dir, capsys):
    config = json.loads((model_dir / "config.json").read_text())
    config["versions"]["seq2seq"] = "99.0.0"
    config["a_setting_from_the_future"] = 1  # not reported as unknown: the version explains it
    (model_dir / "config.json").write_text(json.dumps(config))
    assert translate(model_dir) == 2
    line = one_error_line(capsys)
    assert "written by seq2seq 99.0.0, newer than this one" in line and "upgrade seq2seq" in line


def test_config_json_that_is_not_json_names_line_and_column(model_dir):
    (model_dir / "config.json").write_text('{\n  "latent_dim": 64,\n  oops\n}')
    with pytest.raises(ModelFileError, match=r"config\.json: line 3, column 3: not valid JSON"):
        modeldir.check(model_dir)


VOCABULARY = {"tokenizer": {"kind": "word", "lowercase": False}, "tokens": ["<pad>", "<start>", "<end>", "<unk>", "a"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v["tokens"].__setitem__(slice(0, 2), ["<start>", "<pad>"]), r"tokens\[0\]: expected '<pad>'"),
        (lambda v: v["tokens"].append("a"), r"tokens\[5\]: 'a' repeats tokens\[4\]"),
        (lambda v: v["tokens"].append(7), r"tokens\[5\]: expected a string, got 7"),
        (lambda v: v.__setitem__("tokens", "abc"), "tokens: expected a list of strings, got a string"),
        (lambda v: v.__setitem__("tokens", ["<pad>", "<start>"]), "tokens: 2 tokens, fewer than the special"),
        (lambda v: v.pop("tokens"), "tokens: missing"),
        (lambda v: v.__setitem__("extra", 1), "extra: unexpected key"),
        (lambda v: v["tokenizer"].__setitem__("kind", "byte"), "tokenizer.kind: must be one of char, word, subword"),
        (lambda v: v["tokenizer"].__setitem__("kind", "char"), "tokenizer.kind: 'char', but config.json's level"),
        (lambda v: v["tokenizer"].__setitem__("lowercase", "yes"), "tokenizer.lowercase: expected true or false"),
        (lambda v: v["tokenizer"].__setitem__("strip", True), "tokenizer.strip: unexpected key"),
        (lambda v: v.__setitem__("tokenizer", {"kind": "subword"}), "tokenizer.model_file: missing"),
        (
            lambda v: v.__setitem__("tokenizer", {"kind": "subword", "model_file": "../../etc/passwd"}),
            "tokenizer.model_file: expected a file name beside the vocabulary",
        ),
        (lambda v: v.__setitem__("tokenizer", {"kind": "subword", "model_file": "x.spm"}), "no file 'x.spm'"),
    ],
)
def test_vocabulary_checks(tmp_path, change, message):
    vocabulary = json.loads(json.dumps(VOCABULARY))
    change(vocabulary)
    path = tmp_path / "source_vocab.json"
    path.write_text(json.dumps(vocabulary))
    level = "word" if vocabulary["tokenizer"]["kind"] in ("word", "char") else "subword"
    with pytest.raises(ModelFileError, match=message):
        modeldir.check_vocabulary(path, level=level)


def _subword_model() -> bytes:
    from seq2seq.vocab import SubwordTokenizer

    texts = [f"{a} {b} hola mundo" for a in ("uno", "dos", "tres", "cuatro") for b in ("gato", "perro", "casa")]
    return SubwordTokenizer.train(texts * 5, vocab_size=40).model_proto


def test_a_sound_vocabulary_passes(tmp_path):
    path = tmp_path / "source_vocab.json"
    path.write_text(json.dumps(VOCABULARY))
    modeldir.check_vocabulary(path, level="word")
    (tmp_path / "source_vocab.spm").write_bytes(_subword_model())
    path.write_text(json.dumps({**VOCABULARY, "tokenizer": {"kind": "subword", "model_file": "source_vocab.spm"}}))
    modeldir.check_vocabulary(path, level="subword")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda model: b"garbage", "not a SentencePiece model"),
        (lambda model: model[: len(model) // 2], "not a SentencePiece model"),
        (lambda model: b"", "a SentencePiece model without pieces"),
    ],
)
def test_a_damaged_subword_model_is_refused_by_name(tmp_path, damage, message):
    """A .spm file that is not a SentencePiece model, cut short or empty: refused with its
    path, when the model directory is checked (before anything loads)."""
    (tmp_path / "source_vocab.spm").write_bytes(damage(_subword_model()))
    path = tmp_path / "source_vocab.json"
    path.write_text(json.dumps({**VOCABULARY, "tokenizer": {"kind": "subword", "model_file": "source_vocab.spm"}}))
    with pytest.raises(ModelFileError, match=rf"source_vocab\.spm: {message}.*train the model again"):
        modeldir.check_vocabulary(path, level="subword")


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"class_name": "__lambda__", "config": {"code": "..."}}, "a Python lambda"),
        ({"module": "keras.layers", "class_name": "TorchModuleWrapper", "config": {}}, "class TorchModuleWrapper"),
        ({"module": "keras.layers", "class_name": "TFSMLayer", "config": {}}, "class TFSMLayer"),
        ({"module": "keras.utils", "class_name": "function", "config": "get_file"}, "keras.utils.get_file: not part"),
        ({"module": "subprocess", "class_name": "Popen", "config": {}}, "module 'subprocess'"),
        ({"module": "seq2seq.layers", "class_name": "Evil", "registered_name": "seq2seq>Evil"}, "seq2seq>Evil"),
        ({"module": "seq2seq.layers", "class_name": "Dense", "registered_name": None}, "not one of seq2seq's"),
        ({"module": None, "class_name": "Dense", "config": {}}, "class Dense: it names no module"),
        ({"module": "builtins", "class_name": "function", "config": "evil>run"}, "class evil>run"),
    ],
)
def test_model_config_objects_that_are_refused(model_dir, node, message):
    rewrite_model_config(model_dir / "model.keras", lambda config: config["config"]["layers"].append(node))
    with pytest.raises(ModelFileError, match=message):
        modeldir.check_model_file(model_dir / "model.keras")


def test_a_zip_without_a_keras_config(model_dir):
    with zipfile.ZipFile(model_dir / "model.keras", "w") as archive:
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(ModelFileError, match="no config.json inside"):
        modeldir.check_model_file(model_dir / "model.keras")
