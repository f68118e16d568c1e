"""Shared fixtures: one small model trained for real once per test session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest

from seq2seq import Config, Seq2Seq
from seq2seq.training import train

# Reversing short strings: learnable to 100% held-out exact match in about 15 s.
REVERSE_SETTINGS = dict(
    data="builtin:reverse", num_samples=3000, epochs=15, latent_dim=64, batch_size=32, learning_rate=5e-3
)


@pytest.fixture(scope="session")
def reverse_model_dir(tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("reverse") / "model"
    train(Config.textbook(**REVERSE_SETTINGS), model_dir, verbose=0)
    return model_dir


@pytest.fixture(scope="session")
def reverse_model(reverse_model_dir) -> Seq2Seq:
    return Seq2Seq.load(reverse_model_dir)


def write_text(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def count_calls(monkeypatch, module, name: str) -> list:
    """Wrap `module.<name>` so that each call appends to the returned list."""
    calls: list = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args: calls.append(1) or original(*args))
    return calls


def bench_module(name: str):
    """bench/NAME.py as a module, loaded once (bench/ is not a package; its scripts import
    their neighbours)."""
    import importlib.util
    import sys

    if f"bench_{name}" in sys.modules:
        return sys.modules[f"bench_{name}"]
    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))  # report.py imports its neighbours
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", bench / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))
    return module
