"""A small model trained for real: it must learn, save, load and decode consistently."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from seq2seq import Config, Seq2Seq
from seq2seq.data import Split
from seq2seq.decoding import DecodingOptions, stepwise_greedy
from seq2seq.files import HISTORY_FILE
from seq2seq.training import ModelDirExistsError, train
from seq2seq.vocab import END_ID

from .conftest import REVERSE_SETTINGS


def test_learns_to_reverse_held_out_strings(reverse_model, reverse_model_dir):
    test = Split.load(reverse_model_dir / "split").test
    train_sources = {p.source for p in Split.load(reverse_model_dir / "split").train}
    assert test and not any(p.source in train_sources for p in test)
    outputs = reverse_model.translate([p.source for p in test])
    exact = np.mean([out == p.target for out, p in zip(outputs, test, strict=True)])
    assert exact >= 0.95, f"exact match {exact:.2%} on {len(test)} held-out strings"


def test_model_dir_contents(reverse_model_dir):
    names = {p.name for p in reverse_model_dir.iterdir()}
    assert {"config.json", "source_vocab.json", "target_vocab.json", "model.keras", "split", HISTORY_FILE} <= names
    config = json.loads((reverse_model_dir / "config.json").read_text())
    assert config["versions"]["backend"] == "jax" and "keras" in config["versions"]
    with (reverse_model_dir / HISTORY_FILE).open() as f:
        history = list(csv.DictReader(f))
    assert len(history) == REVERSE_SETTINGS["epochs"]
    assert {"loss", "val_loss", "dev_bleu", "dev_chrf", "seconds"} <= set(history[0])
    # dev scores follow the training (regression: they once stayed at the first epoch's)
    # (single-word outputs: BLEU is 0 throughout, chrF and exact match tell). The best
    # epoch, which is the one kept: at this learning rate without clipping a late epoch
    # can spike (on one CPU the last epoch's dev exact match fell from 0.95 to 0.36).
    best = max(history, key=lambda row: float(row["dev_chrf"]))
    assert float(best["dev_exact"]) > float(history[0]["dev_exact"]) + 0.5
    assert float(best["dev_chrf"]) > float(history[0]["dev_chrf"]) + 30


def test_save_then_load_gives_identical_outputs(reverse_model, reverse_model_dir, tmp_path):
    inputs = ["abc", "hgfedcba", "a", "", "zzz"]  # includes unknown characters and an empty input
    reverse_model.save(tmp_path / "copy")
    (tmp_path / "copy" / "split").mkdir()
    again = Seq2Seq.load(tmp_path / "copy")
    assert again.translate(inputs) == reverse_model.translate(inputs)
    ids = reverse_model.encode(["abcdef"])
    a = reverse_model.model.predict_on_batch([np.array(ids, "int32"), np.array([[1, 5, 6]], "int32")])
    b = again.model.predict_on_batch([np.array(ids, "int32"), np.array([[1, 5, 6]], "int32")])
    np.testing.assert_array_equal(a, b)


def test_batched_compiled_greedy_equals_textbook_loop(reverse_model, reverse_model_dir):
    sources = [p.source for p in Split.load(reverse_model_dir / "split").test][:40] + ["hhhhhhhh", "abcxyz"]
    source_ids = reverse_model.encode(sources)
    batched = reverse_model.generate(source_ids, DecodingOptions(batch_size=16))
    for ids, [(out, _)] in zip(source_ids, batched, strict=True):
        assert out == stepwise_greedy(reverse_model.parts, ids, reverse_model.max_length)


def test_generation_stops_at_max_length(reverse_model):
    [[(output, _)]] = reverse_model.generate(reverse_model.encode(["abcdefgh"]), DecodingOptions(max_length=3))
    assert len(output) == 3


def test_refuses_to_overwrite_a_model(reverse_model_dir):
    with pytest.raises(ModelDirExistsError, match="--overwrite"):
        train(Config.textbook(**REVERSE_SETTINGS), reverse_model_dir, verbose=0)


def test_linear_learning_rate_decay_is_applied(tmp_path):
    settings = dict(data="builtin:reverse", num_samples=300, epochs=3, latent_dim=8, dev_bleu_sentences=0, seed=4)
    train(Config.textbook(**settings, lr_decay="linear"), tmp_path / "decay", verbose=0)
    train(Config.textbook(**settings), tmp_path / "constant", verbose=0)

    def history(name):
        with (tmp_path / name / HISTORY_FILE).open() as f:
            return list(csv.DictReader(f))

    decay, constant = history("decay"), history("constant")
    assert [float(row["learning_rate"]) for row in decay] == pytest.approx([1e-3, 2e-3 / 3, 1e-3 / 3])
    assert decay[0]["loss"] == constant[0]["loss"]  # same first epoch
    assert decay[2]["loss"] != constant[2]["loss"]  # then the smaller rate changes the training


def test_a_time_budget_brings_linear_decay_unless_another_schedule_is_chosen(tmp_path):
    settings = dict(data="builtin:reverse", num_samples=300, epochs=3, latent_dim=8, dev_bleu_sentences=0, seed=4)
    train(Config.textbook(**settings, lr_decay="auto", time_budget=60), tmp_path / "auto", verbose=0)
    with (tmp_path / "auto" / HISTORY_FILE).open() as f:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    assert rates == pytest.approx([1e-3, 2e-3 / 3, 1e-3 / 3])  # the budget is far: the epochs set the pace
    assert Config(time_budget=30).linear_decay and not Config().linear_decay
    assert not Config(time_budget=30, lr_decay="none").linear_decay and Config(lr_decay="linear").linear_decay
    assert not Config.textbook(time_budget=30).linear_decay  # the textbook's rate stays constant


def test_compiles_the_configured_optimizer():
    import keras

    from seq2seq.config import OPTIMIZERS
    from seq2seq.model import build_model
    from seq2seq.optimizers import OPTIMIZER_CLASSES, WARM_UP_CLASSES
    from seq2seq.training import compile_model

    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS) == set(WARM_UP_CLASSES)
    textbook, default = Config.textbook(latent_dim=8), Config(latent_dim=8)
    for config, kind, clip in ((textbook, keras.optimizers.RMSprop, None), (default, keras.optimizers.Adam, 5.0)):
        model = build_model(config, 10, 12)
        compile_model(model, config)
        assert type(model.optimizer) is kind
        assert float(model.optimizer.learning_rate) == pytest.approx(config.learning_rate)
        assert model.optimizer.global_clipnorm == clip


def test_default_length_ratio_lets_every_training_target_fit(reverse_model_dir):
    """The output limit computed from the training pairs never cuts one of them short."""
    from seq2seq.decoding import MIN_LENGTH_RATIO
    from seq2seq.training import default_length_ratio

    system = Seq2Seq.load(reverse_model_dir)
    pairs = Split.load(reverse_model_dir / "split").train
    tokenize = system.source.tokenizer.tokenize, system.target.tokenizer.tokenize
    ratio = default_length_ratio([(len(tokenize[0](p.source)), len(tokenize[1](p.target))) for p in pairs])
    assert ratio >= MIN_LENGTH_RATIO and system.config.max_length_ratio == ratio
    for pair in pairs:
        source, target = system.encode([pair.source])[0], system.target.encode(pair.target)
        assert len(target) <= system.output_limit(len(source), max_length=10**6), pair


def test_outputs_that_never_end_stop_at_their_batch_limit(reverse_model_dir):
    """A row that never produces <end> stops at ratio x its batch's longest source (plus a
    margin), not at max_length; without a ratio, at max_length."""
    from dataclasses import replace

    import keras

    system = Seq2Seq.load(reverse_model_dir, max_source_tokens=64)  # `long` is read whole (the default cap is 12)
    bias = system.model.get_layer("output_projection").bias
    never_end = keras.ops.convert_to_numpy(bias).copy()
    never_end[END_ID] = -1e4
    bias.assign(never_end)
    system.config = replace(system.config, max_length=200, max_length_ratio=1.5)
    short, long = "ab", "abcdefghijklmnopqrst"
    options = DecodingOptions(batch_size=1)
    lengths = [len(ids) for (ids, _), *_ in system.generate(system.encode([short, long]), options)]
    limits = [system.output_limit(len(s), 200) for s in system.encode([short, long])]
    assert lengths == limits and limits[0] < limits[1] < 200
    assert limits == [16, 40]  # ceil(1.5 * 2) + 10 = 13 and 30 + 10 = 40, rounded up to multiples of 8
    system.config = replace(system.config, max_length_ratio=None)
    assert [len(ids) for (ids, _), *_ in system.generate(system.encode([short]), options)] == [200]


def test_attention_decodes_as_translate_does():
    """`Seq2Seq.attention` gives the output `translate` gives, limits included (it ran to
    max_length, past the batch limit of ratio x source + margin), and that output's weights."""
    import keras

    from seq2seq.model import build_model
    from seq2seq.vocab import Codec, make_tokenizer

    keras.utils.set_random_seed(0)
    settings = dict(input="embedding", embedding_dim=8, latent_dim=16, attention="luong", tie_embeddings=False)
    config = Config(level="char", max_length=60, max_length_ratio=1.5, **settings)
    source = target = Codec.fit(make_tokenizer("char"), ["abcdefgh"])
    system = Seq2Seq(config, source, target, build_model(config, len(source), len(target)))
    bias = system.model.get_layer("output_projection").bias
    never_end = keras.ops.convert_to_numpy(bias).copy()
    never_end[END_ID] = -1e4  # every output runs to its limit
    bias.assign(never_end)
    for max_length, limit in ((None, 16), (8, 8)):  # ceil(1.5 x 4) + 10, rounded up to 16
        options = DecodingOptions(max_length=max_length)
        source_tokens, target_tokens, weights = system.attention("abcd", max_length=max_length)
        assert source_tokens == list("abcd") and len(target_tokens) == limit
        assert "".join(target_tokens) == system.translate(["abcd"], options)[0]
        assert weights.shape == (limit, 4)
        np.testing.assert_allclose(weights.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("lr_decay", ["linear", "none"])
def test_early_stopping_waits_for_the_end_of_a_linear_schedule(tmp_path, monkeypatch, lr_decay):
    """A linear schedule is planned to its end, where the learning rate is smallest and
    training gains most: a dip of dev BLEU half-way does not stop it (a 60-minute default
    run once stopped after 36)."""
    made = []

    class Recorded(keras.callbacks.EarlyStopping):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(keras.callbacks, "EarlyStopping", Recorded)
    settings = dict(data="builtin:reverse", num_samples=200, epochs=1, latent_dim=8, patience=1, seed=4)
    train(Config.textbook(**settings, lr_decay=lr_decay), tmp_path / "model", verbose=0)
    assert len(made) == (0 if lr_decay == "linear" else 1)
