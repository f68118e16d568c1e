from __future__ import annotations

import json

import pytest

from seq2seq.config import Config, ConfigError


def test_defaults_round_trip(tmp_path):
    config = Config(latent_dim=32, level="word")
    config.save(tmp_path / "c.json")
    assert Config.load(tmp_path / "c.json") == config


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"level": "byte"}, "level: must be one of char, word"),
        ({"input": "dense"}, "input: must be one of onehot, embedding"),
        ({"latent_dim": 0}, "latent_dim: must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size: expected an integer, got 2.5"),
        ({"learning_rate": 2.0}, "learning_rate"),
        ({"max_vocab": 3}, "max_vocab"),
        ({"dev_fraction": 0.7}, "dev_fraction"),
        ({"optimizer": "sgd"}, "optimizer: must be one of adam, rmsprop"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        Config(**settings)


def test_a_config_saved_before_a_setting_existed_loads_with_its_default(tmp_path):
    values = Config(latent_dim=32).to_dict()
    del values["optimizer"]  # saved before --optimizer: those models trained with Adam
    (tmp_path / "c.json").write_text(json.dumps(values))
    assert Config.load(tmp_path / "c.json").optimizer == "adam"


def test_unknown_and_malformed_files_name_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"latent_dim": 8, "hidden": 3}))
    with pytest.raises(ConfigError, match=r"c\.json: unknown settings: hidden"):
        Config.load(path)
    path.write_text("{\n  oops\n}")
    with pytest.raises(ConfigError, match=r"c\.json:2:3: not valid JSON"):
        Config.load(path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # wrong types: named by field, with what was expected and what came
        ({"latent_dim": "abc"}, "latent_dim: expected an integer, got 'abc'"),
        ({"latent_dim": 64.0}, "latent_dim: expected an integer, got 64.0"),
        ({"epochs": True}, "epochs: expected an integer, got True"),
        ({"bidirectional": 1}, "bidirectional: expected true or false, got 1"),
        ({"dropout": "0.1"}, "dropout: expected a number, got '0.1'"),
        ({"num_samples": "5"}, r"num_samples: expected an integer \(or null\), got '5'"),
        ({"data": 3}, "data: expected a string, got 3"),
        ({"learning_rate": float("nan")}, "learning_rate: expected a finite number"),
        ({"versions": ["1.0"]}, "versions: expected an object of strings"),
        # out of range
        ({"latent_dim": -64}, "latent_dim: must be a positive integer, got -64"),
        ({"embedding_dim": 0}, "embedding_dim: must be a positive integer, got 0"),
        ({"patience": 0}, "patience: must be a positive integer, got 0"),
        ({"dropout": 1.0}, r"dropout: must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout: must be in \[0, 1\), got -0.1"),
        ({"latent_dim": 63}, "latent_dim: .* must be even, got 63"),
        # unknown choices: the allowed values are the Literal's
        ({"attention": "dot"}, "attention: must be one of none, luong, luong-dot, bahdanau; got 'dot'"),
        ({"level": None}, "level: must be one of char, word, subword; got None"),
        ({"stop_metric": "accuracy"}, "stop_metric: must be one of bleu, chrf, loss"),
        # unknown keys
        ({"latent_dim": 8, "hidden": 3}, "unknown settings: hidden"),
    ],
)
def test_from_dict_names_the_field_and_why(values, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(values)


def test_from_dict_refuses_what_is_not_an_object():
    with pytest.raises(ConfigError, match="expected a JSON object of settings, got a list"):
        Config.from_dict([1, 2])


def test_a_wrong_type_in_a_file_names_the_file_and_field(tmp_path):
    # was "not all arguments converted during string formatting" (latent_dim % 2 on a string)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**Config().to_dict(), "latent_dim": "abc"}))
    with pytest.raises(ConfigError, match=r"config\.json: latent_dim: expected an integer, got 'abc'$"):
        Config.load(path)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match=r"config\.json: not valid UTF-8"):
        Config.load(path)


def test_choices_come_from_the_literal_types():
    from seq2seq.config import OPTIMIZERS, choices, setting_types

    assert choices("attention") == ("none", "luong", "luong-dot", "bahdanau")
    assert choices("optimizer") == OPTIMIZERS == ("adam", "rmsprop")
    assert choices("latent_dim") == ()
    kinds = setting_types()
    assert (kinds["level"], kinds["num_samples"], kinds["dropout"], kinds["first"]) == (str, int, float, bool)


def test_every_option_has_help_beside_its_field():
    import dataclasses

    from seq2seq.config import setting_help

    for spec in dataclasses.fields(Config):
        if spec.name != "versions":
            assert setting_help(spec.name).strip(), spec.name
