"""The `seq2seq` command end to end, in a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from seq2seq.cli import main

from .conftest import write_text


def run(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seq2seq.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_train_translate_evaluate_end_to_end(tmp_path):
    data = write_text(tmp_path / "pairs.tsv", "".join(f"{w}\t{w[::-1]}\n" for w in _words(400)))
    model_dir = tmp_path / "model"
    result = run(
        "train", "--data", str(data), "--model-dir", str(model_dir), "--epochs", "2",
        "--latent-dim", "16", "--batch-size", "32", "--num-samples", "300", "--seed", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Epoch 2/2" in result.stdout and "model saved" in result.stdout
    config = json.loads((model_dir / "config.json").read_text())
    assert config["num_samples"] == 300 and config["latent_dim"] == 16 and config["seed"] == 1

    result = run("translate", "--model-dir", str(model_dir), "abc", "dcba")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2

    result = run("translate", "--model-dir", str(model_dir), stdin="abc\n\nbad\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""  # one output line per input line, in order

    result = run("evaluate", "--model-dir", str(model_dir), "--examples", "2")
    assert result.returncode == 0, result.stderr
    assert "exact match" in result.stdout and "BLEU signature: nrefs:1" in result.stdout
    scores = json.loads((model_dir / "evaluation.json").read_text())
    assert scores["sentences"] == len((model_dir / "split" / "test.tsv").read_text().splitlines())


def test_malformed_file_strict_names_file_and_line(tmp_path, capsys):
    data = write_text(tmp_path / "bad.tsv", "a\tb\nno tab\n")
    assert main(["train", "--data", str(data), "--model-dir", str(tmp_path / "m"), "--strict"]) == 2
    assert f"seq2seq: error: {data}:2: no tab" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_bad_settings_and_missing_model_are_clear_errors(tmp_path, capsys):
    assert main(["train", "--data", "builtin:reverse", "--model-dir", str(tmp_path), "--level", "byte"]) != 0
    assert main(["translate", "--model-dir", str(tmp_path / "nothing"), "x"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["train", "--data", "builtin:nope", "--model-dir", str(tmp_path / "m")]) == 2
    assert "unknown built-in corpus" in capsys.readouterr().err


def test_a_wrong_bfloat16_decoding_setting_is_one_line(reverse_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_BF16_DECODING", "yes")
    assert main(["translate", "--model-dir", str(reverse_model_dir), "abc"]) == 2
    assert capsys.readouterr().err == "seq2seq: error: SEQ2SEQ_BF16_DECODING must be on, off or auto, not 'yes'\n"


def test_a_wrong_bfloat16_training_setting_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEQ2SEQ_BF16_TRAINING", "yes")
    assert main(["train", "--data", "builtin:reverse", "--model-dir", str(tmp_path / "m"), "--epochs", "1"]) == 2
    assert capsys.readouterr().err == "seq2seq: error: SEQ2SEQ_BF16_TRAINING must be on, off or auto, not 'yes'\n"
    assert not (tmp_path / "m").exists()


def test_refuses_to_overwrite_and_keeps_the_model(reverse_model_dir, capsys):
    before = (reverse_model_dir / "model.keras").read_bytes()
    assert main(["train", "--data", "builtin:reverse", "--model-dir", str(reverse_model_dir), "--epochs", "1"]) == 2
    assert "already holds a trained model" in capsys.readouterr().err
    assert (reverse_model_dir / "model.keras").read_bytes() == before


def test_data_command_writes_a_builtin_corpus(capsys):
    assert main(["data", "builtin:numbers-en-es", "--num-samples", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(line.count("\t") == 1 for line in lines)


def test_help_lists_the_four_knobs():
    out = run("train", "--help").stdout
    for option in ("--num-samples", "--latent-dim", "--epochs", "--batch-size"):
        assert option in out


def test_defaults_are_the_best_settings_and_switches_turn_off():
    from seq2seq.cli import build_parser, config_from_args
    from seq2seq.config import Config

    parse = build_parser().parse_args
    defaults = config_from_args(parse(["train", "--model-dir", "m"]))
    assert defaults == Config() and defaults.bidirectional and defaults.attention == "luong"
    off = config_from_args(parse(["train", "--model-dir", "m", "--no-bidirectional", "--no-tie-embeddings"]))
    assert not off.bidirectional and not off.tie_embeddings
    textbook = config_from_args(parse(["train", "--model-dir", "m", "--textbook", "--latent-dim", "64"]))
    assert (textbook.level, textbook.input, textbook.attention, textbook.latent_dim) == ("char", "onehot", "none", 64)
    assert not textbook.bidirectional and textbook.dropout == 0
    assert (defaults.optimizer, textbook.optimizer) == ("adam", "rmsprop")  # the textbook compiles with "rmsprop"
    adam = config_from_args(parse(["train", "--model-dir", "m", "--textbook", "--optimizer", "adam"]))
    assert adam.optimizer == "adam"


def _words(n: int) -> list[str]:
    import random

    rng = random.Random(0)
    return ["".join(rng.choice("abcd") for _ in range(rng.randint(2, 5))) for _ in range(n)]


def test_translate_prompts_on_a_terminal(reverse_model_dir):
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "seq2seq.cli", "translate", "--model-dir", str(reverse_model_dir)],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(terminal)
    os.write(controller, b"abc\n")
    os.write(controller, b"\x04")  # Ctrl-D: end of input
    out, err = process.communicate(timeout=300)
    os.close(controller)
    assert process.returncode == 0, err
    assert "Type a sentence" in err
    assert out.strip() == "cba"  # the reverse model reverses its input


def test_every_setting_is_an_option_with_the_help_beside_its_field():
    import dataclasses

    from seq2seq.cli import HELP_VALUES, build_parser
    from seq2seq.config import Config

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    options = {a.dest: a for a in commands.choices["train"]._actions}
    for spec in dataclasses.fields(Config):
        if spec.name != "versions":
            assert options[spec.name].help.startswith(spec.metadata["help"].format(**HELP_VALUES)), spec.name
    assert "builtin:reverse" in options["data"].help and "{" not in options["max_length_ratio"].help
