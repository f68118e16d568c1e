"""The same code runs on TensorFlow (the textbook's stack): train, decode, compare."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow not installed")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from seq2seq import Config, Seq2Seq
    from seq2seq.decoding import stepwise_greedy
    from seq2seq.training import train
    import keras
    assert keras.backend.backend() == "tensorflow", keras.backend.backend()
    model_dir = sys.argv[1]
    settings = dict(data="builtin:reverse", num_samples=600, epochs=2, latent_dim=16)
    system = train(Config.textbook(**settings), model_dir, verbose=0)
    loaded = Seq2Seq.load(model_dir)
    sources = ["abc", "hgfe", "aabbccdd", "a"]
    ids = loaded.encode(sources)
    batched = [n_best[0][0] for n_best in loaded.generate(ids)]
    oracle = [stepwise_greedy(loaded.parts, i, loaded.max_length) for i in ids]
    print(json.dumps({"batched": batched, "oracle": oracle, "outputs": loaded.translate(sources),
                      "before_save": system.translate(sources)}))
    """
)

ATTENTION_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from seq2seq import Config, Seq2Seq
    from seq2seq.decoding import DecodingOptions, stepwise_greedy
    from seq2seq.training import train
    settings = dict(data="builtin:reverse", num_samples=600, epochs=2, latent_dim=16, input="embedding",
                    embedding_dim=8, attention="bahdanau", bidirectional=True, layers=2, dropout=0.1)
    config = Config.textbook(**settings)
    system = train(config, sys.argv[1], verbose=0)
    loaded = Seq2Seq.load(sys.argv[1])
    ids = loaded.encode(["abc", "hgfe", "aabbccdd"])
    greedy = [n_best[0][0] for n_best in loaded.generate(ids)]
    beam1 = [n_best[0][0] for n_best in loaded.generate(ids, DecodingOptions(beam=1))]
    beam = loaded.n_best(["abc"], DecodingOptions(beam=3, n_best=3))[0]
    sample = loaded.translate(["abc", "hgfe"], DecodingOptions(sample=True, seed=3))
    again = loaded.translate(["abc", "hgfe"], DecodingOptions(sample=True, seed=3))
    oracle = [stepwise_greedy(loaded.parts, i, loaded.max_length) for i in ids]
    print(json.dumps({"greedy": greedy, "oracle": oracle, "beam_scores": [s for _, s in beam],
                      "sample": sample, "again": again}))
    """
)


def test_tensorflow_backend_trains_and_decodes(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "model")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["batched"] == out["oracle"]
    assert out["outputs"] == out["before_save"]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["versions"]["backend"] == "tensorflow"


def test_tensorflow_backend_attention_beam_and_sampling(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(
        [sys.executable, "-c", ATTENTION_SCRIPT, str(tmp_path / "model")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["greedy"] == out["oracle"]
    assert out["beam_scores"] == sorted(out["beam_scores"], reverse=True)
    assert out["sample"] == out["again"]
