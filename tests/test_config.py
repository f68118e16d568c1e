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
        ({"level": "byte"}, "level must be one of char, word"),
        ({"input": "dense"}, "input must be one of onehot, embedding"),
        ({"latent_dim": 0}, "latent_dim must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer"),
        ({"learning_rate": 2.0}, "learning_rate"),
        ({"max_vocab": 3}, "max_vocab"),
        ({"dev_fraction": 0.7}, "dev_fraction"),
        ({"optimizer": "sgd"}, "optimizer must be one of adam, rmsprop"),
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
    with pytest.raises(ConfigError, match=r"c\.json:2: not valid JSON"):
        Config.load(path)
