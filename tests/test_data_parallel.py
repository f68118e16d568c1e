"""Data-parallel training over two (virtual CPU) devices follows the single-device run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    from seq2seq import Config
    from seq2seq.training import train

    assert len(jax.devices()) == 2, jax.devices()
    settings = dict(data="builtin:reverse", num_samples=600, epochs=3, latent_dim=32, batch_size=32,
                    input="embedding", attention="luong", dev_bleu_sentences=0, seed=5)
    train(Config.textbook(**settings, data_parallel=sys.argv[2] == "parallel"), sys.argv[1], verbose=0)
    """
)


def _losses(model_dir) -> list[float]:
    with (model_dir / "history.csv").open() as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def test_two_devices_match_one_device(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    for mode in ("single", "parallel"):
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / mode), mode], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert "2 device(s)" in result.stderr
    single, parallel = _losses(tmp_path / "single"), _losses(tmp_path / "parallel")
    assert len(single) == len(parallel) == 3
    # same global batches, gradients averaged over the two halves: the same training up to
    # floating-point summation order
    for a, b in zip(single, parallel, strict=True):
        assert abs(a - b) <= 1e-4 * abs(a), (single, parallel)
