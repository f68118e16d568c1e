"""A killed training run, resumed, ends exactly where an uninterrupted run ends.

Here the one-hot word model trained by the row-sparse RMSprop step; a small embedding
and attention model is killed and resumed by tests/test_faults.py's kill soak (the
settings of bench/kill_soak.py), which compares the best model, the checkpoint's weights
and optimizer state and the history exactly."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from seq2seq import averaging

# One-hot word inputs, trained with RMSprop by the row-sparse step (row_sparse.py), and
# the mean of the last two epochs' weights kept if its dev loss is lower (averaging.py).
ROW_SPARSE_SETTINGS = (
    "data='builtin:reverse', num_samples=400, epochs=4, latent_dim=16, batch_size=32, level='word', "
    "input='onehot', lr_patience=1, dev_bleu_sentences=20, average_epochs=2, seed=3"
)

TRAIN = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from seq2seq import Config
    from seq2seq.training import train

    class KillAfterEpoch(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == self.epoch:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as a crash or a kill -9

    kill_after = int(sys.argv[2])
    config = Config.textbook({settings})
    train(config, sys.argv[1], verbose=0, callbacks=[KillAfterEpoch(kill_after)] if kill_after else [])
    """
)
RESUME = "import sys; from seq2seq.cli import main; sys.exit(main(['train', '--resume', '--model-dir', sys.argv[1]]))"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=os.environ)


def _weights(model_dir):
    model = keras.saving.load_model(model_dir / "checkpoint" / "model.keras", compile=True, safe_mode=True)
    optimizer = [np.asarray(v) for v in model.optimizer.variables]
    return model.get_weights(), int(np.asarray(model.optimizer.iterations)), optimizer


# The same with the learning rate warmed up over 40 steps, past the kill (about 11 steps an
# epoch): the resumed run goes on with the warm-up where the killed one left it.
WARM_UP_SETTINGS = f"{ROW_SPARSE_SETTINGS}, warmup_steps=40"


@pytest.mark.parametrize("settings", [ROW_SPARSE_SETTINGS, WARM_UP_SETTINGS], ids=["row-sparse", "warm-up"])
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, settings):
    train_script = TRAIN.format(settings=settings)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _run("-c", train_script, str(whole), "0").returncode == 0

    result = _run("-c", train_script, str(killed), "3")
    assert result.returncode != 0  # killed
    state = json.loads((killed / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == 3

    result = _run("-c", RESUME, str(killed))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stderr
    assert "average of the last 2 epochs" in result.stderr  # epoch 3's weights from the killed run, 4's from this

    weights, iterations, optimizer = _weights(whole)
    resumed_weights, resumed_iterations, resumed_optimizer = _weights(killed)
    assert resumed_iterations == iterations
    for a, b in zip(weights, resumed_weights, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(optimizer, resumed_optimizer, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

    # the same epochs saved for averaging, and the same model chosen from them
    assert sorted(p.name for p in (killed / "checkpoint").glob("epoch-*")) == ["epoch-003.npz", "epoch-004.npz"]
    epoch_files = [killed / "checkpoint" / name for name in ("epoch-003.npz", "epoch-004.npz")]
    for path in epoch_files:
        with np.load(whole / "checkpoint" / path.name) as a, np.load(path) as b:
            np.testing.assert_array_equal(b["names"], a["names"])
            for key in set(a.files) - {"names"}:
                np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6)
    best = keras.saving.load_model(whole / "model.keras", compile=False, safe_mode=True)
    resumed_best = keras.saving.load_model(killed / "model.keras", compile=False, safe_mode=True)
    for a, b in zip(best.get_weights(), resumed_best.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    mean = averaging.mean_weights(resumed_best, epoch_files)
    holds_mean = all(
        np.allclose(np.asarray(v), m, rtol=1e-5, atol=1e-6)
        for v, m in zip(resumed_best.trainable_variables, mean, strict=True)
    )
    assert holds_mean == ("kept in model.keras" in result.stderr)

    with (killed / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    with (whole / "history.csv").open() as f:
        expected = list(csv.DictReader(f))
    assert [row["epoch"] for row in history] == ["0", "1", "2", "3"]
    for row, reference in zip(history, expected, strict=True):
        assert float(row["loss"]) == float(reference["loss"])
        assert float(row["dev_bleu"]) == float(reference["dev_bleu"])
        assert float(row["learning_rate"]) == float(reference["learning_rate"])


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    from seq2seq.cli import main

    assert main(["train", "--resume", "--model-dir", str(tmp_path)]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_a_checkpoint_with_a_callback_the_run_no_longer_has_resumes(tmp_path):
    """Earlier versions kept early stopping under a linear schedule, and saved its state:
    resuming such a run with today's callbacks (none for it) restores the others."""
    from seq2seq.callbacks import TrainingCheckpoint

    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), save_best_only=True)
    saved = {"early_stopping": {"wait": 2, "best": 47.5, "best_epoch": 9}, "best_model": {"best": 48.2}}
    checkpoint = TrainingCheckpoint(tmp_path, {"best_model": best}, restore={"callbacks": saved, "random_states": []})
    checkpoint.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    checkpoint.on_train_begin()
    assert best.best == 48.2
