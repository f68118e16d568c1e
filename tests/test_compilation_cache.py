"""JAX's compilation cache (backend.enable_compilation_cache): every compiled program is kept
in the directory SEQ2SEQ_JAX_CACHE names, however quickly it compiled; `off` keeps none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# a program that compiles in milliseconds, in a fresh process (the cache is set on import)
PROGRAM = """
import jax, jax.numpy as jnp
import seq2seq.backend
print(jax.config.jax_compilation_cache_dir)
print(float(jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.float32(0.5))))
"""


def run_program(setting: str, home: Path) -> list[str]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "SEQ2SEQ_JAX_CACHE": setting, "HOME": str(home)}
    result = subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True, capture_output=True, text=True)
    return result.stdout.split()


def test_a_quickly_compiled_program_is_kept(tmp_path):
    cache = tmp_path / "cache"
    directory, value = run_program(str(cache), tmp_path)
    assert directory == str(cache) and abs(float(value) - 1.438276) < 1e-5
    kept = [path for path in cache.iterdir() if not path.name.startswith(".")]  # not JAX's .lockfile
    assert kept, "a program compiled in milliseconds was not kept"


def test_off_keeps_nothing(tmp_path):
    directory, _ = run_program("off", tmp_path)
    assert directory == "None"
    assert not (tmp_path / ".cache" / "seq2seq" / "jax").exists()
