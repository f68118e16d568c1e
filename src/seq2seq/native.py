"""Compiled C++ called from XLA on CPU: the LSTM's recurrent loop (csrc/lstm_loop.cc), the
training loss's softmax cross-entropy (csrc/cross_entropy.cc, used by losses.py), and a
copy that orders two operations (csrc/after.cc, used by projection.py).

XLA's own loop (recurrence.py) spends as long on the gates' elementwise work, which it
runs unvectorised, as on the product h @ U, and runs each step's product across both
cores with a hand-off per step. The C++ loop splits the batch between two threads that
never wait for each other and vectorises the elementwise work (numbers in the README).

The sources are compiled on first use, into one library, with the machine's C++ compiler
(g++, or $CXX) against the XLA FFI headers that ship with jaxlib, for this CPU
(-march=native), and kept in ~/.cache/seq2seq/native (one build per source text, jaxlib
version, compiler and CPU). When it cannot be used, recurrence.py runs XLA's loop,
losses.py Keras's ops and projection.py XLA's order, which compute the same values: no
AVX-512 on this CPU, no compiler (a warning says so), or SEQ2SEQ_NATIVE=off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SWITCH = "SEQ2SEQ_NATIVE"  # "off": XLA's loop, Keras's loss ops and XLA's order everywhere
CSRC = Path(__file__).with_name("csrc")
SOURCES = [CSRC / "lstm_loop.cc", CSRC / "cross_entropy.cc", CSRC / "after.cc"]  # one library
HEADERS = [CSRC / "split_rows.h"]
UNIT_MULTIPLE = 32  # the kernel's product works on panels of 32 columns
FORWARD, BACKWARD, INFER = "seq2seq_lstm_forward", "seq2seq_lstm_backward", "seq2seq_lstm_infer"
PACK_UNITS = "seq2seq_lstm_pack_units"
CROSS_ENTROPY = "seq2seq_softmax_cross_entropy"
AFTER = "seq2seq_after"
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-pthread"]


def cache_directory() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seq2seq" / "native"


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _build(compiler: str) -> Path:
    """Compile SOURCES unless this build is cached; returns the shared library."""
    import jax
    import jaxlib

    include = jax.ffi.include_dir()
    cpu = " ".join(sorted(cpu_flags()))
    key = hashlib.sha256(
        "\n".join([*(f.read_text() for f in SOURCES + HEADERS), jaxlib.__version__, compiler, *FLAGS, cpu]).encode()
    ).hexdigest()[:16]
    library = cache_directory() / key / "libseq2seq_native.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    # built beside its final name and renamed into place, so concurrent builds never see half a file
    with tempfile.NamedTemporaryFile(dir=library.parent, suffix=".so", delete=False) as partial:
        pass
    try:
        subprocess.run(
            [*shlex.split(compiler), *FLAGS, "-I", include, *map(str, SOURCES), "-o", partial.name],
            check=True,
            capture_output=True,
            text=True,
        )
        os.replace(partial.name, library)
    finally:
        Path(partial.name).unlink(missing_ok=True)
    return library


@functools.cache
def unavailable_reason() -> str | None:
    """None once the library is built and its calls registered with XLA; otherwise why it
    is not used (then the callers fall back: see the module's docstring)."""
    if os.environ.get(SWITCH, "").lower() == "off":
        return f"turned off ({SWITCH}=off)"
    if platform.machine().lower() not in ("x86_64", "amd64") or "avx512f" not in cpu_flags():
        return "this CPU has no AVX-512"
    import jax

    if jax.default_backend() != "cpu":
        return f"JAX runs on {jax.default_backend()}, the native loop on the CPU"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        reason = "no C++ compiler found (g++, or set CXX)"
    else:
        try:
            library = ctypes.CDLL(str(_build(compiler)))
        except (OSError, ValueError, subprocess.CalledProcessError) as error:
            details = getattr(error, "stderr", "") or str(error)
            reason = f"building {', '.join(f.name for f in SOURCES)} with {compiler} failed: {details.strip()[-2000:]}"
        else:
            jax.ffi.register_ffi_target(FORWARD, jax.ffi.pycapsule(library.LstmForward), platform="cpu")
            jax.ffi.register_ffi_target(BACKWARD, jax.ffi.pycapsule(library.LstmBackward), platform="cpu")
            jax.ffi.register_ffi_target(INFER, jax.ffi.pycapsule(library.LstmInfer), platform="cpu")
            jax.ffi.register_ffi_target(PACK_UNITS, jax.ffi.pycapsule(library.LstmPackUnits), platform="cpu")
            jax.ffi.register_ffi_target(CROSS_ENTROPY, jax.ffi.pycapsule(library.SoftmaxCrossEntropy), platform="cpu")
            jax.ffi.register_ffi_target(AFTER, jax.ffi.pycapsule(library.After), platform="cpu")
            return None
    warnings.warn(
        f"the LSTM loop and the loss run in XLA, training about 1.4-1.6x slower (char level): {reason}", stacklevel=2
    )
    return reason


def available() -> bool:
    return unavailable_reason() is None


def usable() -> bool:
    """True where XLA can make the library's calls: it is built, and no distribution splits
    arrays across devices (the calls have no sharding rule)."""
    import keras

    return keras.distribution.distribution() is None and available()
