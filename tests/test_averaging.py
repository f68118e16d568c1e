"""Checkpoint averaging (averaging.py, callbacks.EpochWeights): the files, the mean, and
the choice between the mean and the best epoch. Training with it, killed and resumed, is
in tests/test_resume.py."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from seq2seq import Config, Seq2Seq, averaging, backend
from seq2seq.callbacks import EpochWeights
from seq2seq.files import MODEL_FILE
from seq2seq.modeldir import ModelFileError
from seq2seq.training import build_model, compile_model, train
from seq2seq.vocab import CharTokenizer, Codec


def _model(inputs: int = 3, layers: int = 2) -> keras.Model:
    """Dense layers named alike in every model made here, so that their variables' paths match."""
    dense = [keras.layers.Dense(2 if i == 0 else 1, name=f"dense_{i}") for i in range(layers)]
    model = keras.Sequential([keras.Input((inputs,)), *dense], name="net")
    model.compile(optimizer="adam", loss="mse")
    return model


def _set(model: keras.Model, value: float) -> list[np.ndarray]:
    arrays = [np.full(v.shape, value, v.dtype) for v in model.trainable_variables]
    averaging.assign(model, arrays)
    return arrays


def _save_epochs(model: keras.Model, directory, values: dict[int, float]) -> None:
    directory.mkdir(exist_ok=True)
    for number, value in values.items():
        _set(model, value)
        averaging.save_weights(model, averaging.epoch_file(directory, number))


def test_the_mean_of_saved_epochs_is_element_wise(tmp_path):
    model = _model()
    rng = np.random.default_rng(0)
    saved = []
    for number in (1, 2, 3):
        arrays = [rng.normal(size=v.shape).astype(v.dtype) for v in model.trainable_variables]
        averaging.assign(model, arrays)
        averaging.save_weights(model, averaging.epoch_file(tmp_path, number))
        saved.append(arrays)
    assert list(averaging.saved_epochs(tmp_path)) == [1, 2, 3]
    mean = averaging.mean_weights(model, list(averaging.saved_epochs(tmp_path).values())[-2:])
    for got, second, third in zip(mean, saved[1], saved[2], strict=True):
        np.testing.assert_allclose(got, (second + third) / 2, rtol=1e-6)


def test_a_file_that_does_not_fit_the_model_is_named(tmp_path):
    model = _model()
    path = averaging.epoch_file(tmp_path, 1)
    averaging.save_weights(model, path)
    with pytest.raises(ModelFileError, match=r"epoch-001\.npz: array 0 is kernel float32 \(3, 2\), .*\(4, 2\)"):
        averaging.load_weights(_model(inputs=4), path)
    with pytest.raises(ModelFileError, match=r"epoch-001\.npz: holds 4 arrays, the model has 6 trainable variables"):
        averaging.load_weights(_model(layers=3), path)
    path.write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(ModelFileError, match=r"epoch-001\.npz: not an epoch-weights file.*; delete it"):
        averaging.load_weights(model, path)
    np.savez(path, names=np.array(["kernel"]), w0=np.array([{"code": 1}]))
    with pytest.raises(ModelFileError, match=r"epoch-001\.npz: not an epoch-weights file"):  # never unpickled
        averaging.load_weights(model, path)


def test_weights_in_another_order_are_refused(tmp_path):
    model = _model(layers=1)  # a kernel (3, 2) and a bias (2,)
    kernel, bias = (np.asarray(v) for v in model.trainable_variables)
    path = averaging.epoch_file(tmp_path, 1)
    np.savez(path, names=np.array(["bias", "kernel"]), w0=bias, w1=kernel)
    with pytest.raises(ModelFileError, match=r"array 0 is bias float32 \(2,\), the model's .*kernel \(3, 2\)"):
        averaging.load_weights(model, path)


def test_a_model_loaded_in_another_process_reads_the_files_of_training(tmp_path):
    """Keras names a loaded model's variables apart from the trained one's (other name
    scopes): the files hold the variables in the model's order, which loading keeps."""
    config = Config(level="char", latent_dim=16, embedding_dim=8)  # bidirectional, attention, tied
    codec = Codec.fit(CharTokenizer(), ["uno dos tres", "cuatro cinco"])
    model = build_model(config, len(codec), len(codec))
    compile_model(model, config)
    system = Seq2Seq(config, codec, codec, model)
    path = averaging.epoch_file(tmp_path, 1)
    averaging.save_weights(system.model, path)
    system.save(tmp_path / "model")
    loaded = Seq2Seq.load(tmp_path / "model").model
    for got, variable in zip(averaging.load_weights(loaded, path), system.model.trainable_variables, strict=True):
        np.testing.assert_array_equal(got, np.asarray(variable))


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_the_mean_replaces_the_best_epoch_only_if_it_scores_better(tmp_path, higher_is_better):
    model = _model()
    _save_epochs(model, tmp_path / "checkpoint", {1: 9.0, 2: 1.0, 3: 3.0})
    # a dev score that is best at weights of 2.0 everywhere: the mean of epochs 2 and 3
    sign = 1 if higher_is_better else -1

    def dev_score() -> float:
        return -sign * float(sum(np.abs(np.asarray(v) - 2.0).sum() for v in model.trainable_variables))

    _set(model, 3.0)  # the best epoch, as the model holds it after training
    assert averaging.keep_better_average(model, tmp_path, tmp_path / "checkpoint", 2, dev_score, higher_is_better)
    assert all(np.allclose(v, 2.0) for v in model.trainable_variables)
    saved = keras.saving.load_model(tmp_path / MODEL_FILE)
    assert all(np.allclose(w, 2.0) for w in saved.get_weights())

    (tmp_path / MODEL_FILE).unlink()
    _set(model, 2.0)  # now the best epoch scores better than the mean of all three (13/3)
    assert not averaging.keep_better_average(model, tmp_path, tmp_path / "checkpoint", 3, dev_score, higher_is_better)
    assert all(np.allclose(v, 2.0) for v in model.trainable_variables)
    assert not (tmp_path / MODEL_FILE).exists()


def test_one_saved_epoch_is_nothing_to_average(tmp_path):
    model = _model()
    _save_epochs(model, tmp_path, {4: 1.0})
    assert not averaging.keep_better_average(model, tmp_path, tmp_path, 5, lambda: pytest.fail("scored"), True)


def test_epoch_weights_keep_the_last_n_and_drop_epochs_past_the_checkpoint(tmp_path):
    model = _model()
    _save_epochs(model, tmp_path, {2: 1.0, 3: 1.0, 4: 1.0})  # epoch 4: written before a kill, no checkpoint
    (tmp_path / ".epoch-005.npz.0123abcd.tmp.npz").write_bytes(b"half")  # a kill in mid-write
    callback = EpochWeights(tmp_path, keep=2, epochs_done=3)
    callback.set_model(model)
    callback.on_train_begin()
    assert list(averaging.saved_epochs(tmp_path)) == [2, 3]
    assert not list(tmp_path.glob(".epoch-*"))
    callback.on_epoch_end(3)  # the 4th epoch, again
    callback.on_epoch_end(4)
    assert list(averaging.saved_epochs(tmp_path)) == [4, 5]


SMALL = dict(data="builtin:reverse", num_samples=300, latent_dim=8, seed=4)


def test_training_keeps_the_mean_only_when_it_scores_better_on_the_dev_split(tmp_path, capsys):
    config = Config.textbook(**SMALL, epochs=3, stop_metric="chrf", dev_bleu_sentences=20, average_epochs=2)
    system = train(config, tmp_path / "model", verbose=0)
    message = re.search(
        r"average of the last 2 epochs: ([\d.]+) on the whole dev split against ([\d.]+) for the best epoch; "
        r"(kept in model.keras|not kept)",
        capsys.readouterr().err,
    )
    assert message
    average, best, verdict = float(message[1]), float(message[2]), message[3]
    if average != best:  # printed to 2 decimals: equal ones may still differ
        assert (verdict == "kept in model.keras") == (average > best)
    epoch_files = list(averaging.saved_epochs(tmp_path / "model" / "checkpoint").values())
    assert [p.name for p in epoch_files] == ["epoch-002.npz", "epoch-003.npz"]
    saved = backend.load_model(tmp_path / "model" / MODEL_FILE)
    mean = averaging.mean_weights(saved, epoch_files)
    holds_mean = all(np.allclose(np.asarray(v), m) for v, m in zip(saved.trainable_variables, mean, strict=True))
    assert holds_mean == (verdict == "kept in model.keras")
    for a, b in zip(saved.get_weights(), system.model.get_weights(), strict=True):  # what train returns
        np.testing.assert_array_equal(a, b)


def test_without_a_dev_split_nothing_is_averaged(tmp_path, capsys):
    train(Config.textbook(**SMALL, epochs=2, dev_fraction=0.0, average_epochs=2), tmp_path / "model", verbose=0)
    assert "no dev split" in capsys.readouterr().err
    assert not averaging.saved_epochs(tmp_path / "model" / "checkpoint")
