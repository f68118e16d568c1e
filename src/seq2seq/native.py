"""Compiled C++ called from XLA on CPU: the LSTM's recurrent loops (csrc/lstm_loop.cc):
training's forward and backward loops, the inference loop, and the layout of U it reads.

XLA's own loop (recurrence.py) spends as long on the gates' elementwise work, which it
runs unvectorised, as on the product h @ U, and runs each step's product across both
cores with a hand-off per step. The C++ loops split the batch between two threads that
never wait for each other and vectorise the elementwise work (numbers in the README).

The source is portable C++ (GCC/Clang vector extensions, no intrinsics), compiled on first
use with the machine's C++ compiler (g++, or $CXX) against the XLA FFI headers that ship
with jaxlib, for this CPU: -march=native on x86-64 (AVX-512, AVX2 or SSE2 code as the CPU
has), -mcpu=native on ARM64 (NEON). SEQ2SEQ_NATIVE_MARCH replaces that flag (e.g.
"-march=x86-64-v3": an AVX2 build, testable on an AVX-512 machine). Builds are kept in
~/.cache/seq2seq/native, one per source text, jaxlib version, compiler, flags and CPU.

Switches (read when a loop is traced): SEQ2SEQ_NATIVE=off turns all of it off,
SEQ2SEQ_NATIVE_LSTM_TRAIN=off the training loops (forward and backward),
SEQ2SEQ_NATIVE_LSTM_INFER=off the inference loop. recurrence.py then runs XLA's loops,
which compute the same values; so it does where there is no compiler or the build fails
(a warning says so), and where JAX runs on an accelerator (no warning: the loops are CPU code).
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

SWITCH = "SEQ2SEQ_NATIVE"  # "off": XLA's loops everywhere
TRAIN_SWITCH = "SEQ2SEQ_NATIVE_LSTM_TRAIN"  # "off": XLA's training loops (forward and backward)
INFER_SWITCH = "SEQ2SEQ_NATIVE_LSTM_INFER"  # "off": XLA's loop for inference
KERNEL_SWITCHES = {"train": TRAIN_SWITCH, "infer": INFER_SWITCH}
MARCH = "SEQ2SEQ_NATIVE_MARCH"  # replaces the target flag (-march=native / -mcpu=native)
CSRC = Path(__file__).with_name("csrc")
SOURCES = [CSRC / "lstm_loop.cc"]  # one library
HEADERS = [CSRC / "split_rows.h"]
UNIT_MULTIPLE = 32  # the kernel's product works on panels of 32 columns
FORWARD, BACKWARD, INFER = "seq2seq_lstm_forward", "seq2seq_lstm_backward", "seq2seq_lstm_infer"
PACK_UNITS = "seq2seq_lstm_pack_units"
FLAGS = ["-O3", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-pthread"]


def _is_off(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() == "off"


def target_flags() -> list[str]:
    """The compiler's target flags: $SEQ2SEQ_NATIVE_MARCH if set, else this CPU's own ISA
    (GCC and Clang spell it -march=native on x86-64, -mcpu=native on ARM and POWER)."""
    chosen = os.environ.get(MARCH, "").strip()
    if chosen:
        return shlex.split(chosen)
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return ["-march=native"]
    if machine.startswith(("aarch64", "arm", "ppc", "powerpc")):
        return ["-mcpu=native"]
    return []  # elsewhere the compiler's default target: the vector code still builds


def cache_directory() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seq2seq" / "native"


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86, ARM
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _build(compiler: str, target: list[str]) -> Path:
    """Compile SOURCES for `target` (flags) unless this build is cached; returns the shared library."""
    import jax
    import jaxlib

    include = jax.ffi.include_dir()
    flags = [*FLAGS, *target]
    cpu = " ".join([platform.machine(), *sorted(cpu_flags())])
    texts = [f.read_text() for f in SOURCES + HEADERS]
    key = hashlib.sha256("\n".join([*texts, jaxlib.__version__, compiler, *flags, cpu]).encode()).hexdigest()[:16]
    library = cache_directory() / key / "libseq2seq_native.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    # built beside its final name and renamed into place, so concurrent builds never see half a file
    with tempfile.NamedTemporaryFile(dir=library.parent, suffix=".so", delete=False) as partial:
        pass
    try:
        subprocess.run(
            [*shlex.split(compiler), *flags, "-I", include, *map(str, SOURCES), "-o", partial.name],
            check=True,
            capture_output=True,
            text=True,
        )
        os.replace(partial.name, library)
    finally:
        Path(partial.name).unlink(missing_ok=True)
    return library


def _load(compiler: str) -> ctypes.CDLL:
    """The library built for this CPU; for the compiler's default target where the compiler
    does not take this CPU's flag (not every Clang takes -mcpu=native)."""
    target = target_flags()
    try:
        return ctypes.CDLL(str(_build(compiler, target)))
    except subprocess.CalledProcessError:
        if not target or os.environ.get(MARCH, "").strip():
            raise
        return ctypes.CDLL(str(_build(compiler, [])))


@functools.cache
def unavailable_reason() -> str | None:
    """None once the library is built and its calls registered with XLA; otherwise why it
    is not used (then recurrence.py runs XLA's loops: see the module's docstring)."""
    if _is_off(SWITCH):
        return f"turned off ({SWITCH}=off)"
    import jax

    if jax.default_backend() != "cpu":
        return f"JAX runs on {jax.default_backend()}, the native loops on the CPU"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        reason = "no C++ compiler found (g++, or set CXX)"
    else:
        try:
            library = _load(compiler)
        except (OSError, ValueError, subprocess.CalledProcessError) as error:
            details = getattr(error, "stderr", "") or str(error)
            reason = f"building {', '.join(f.name for f in SOURCES)} with {compiler} failed: {details.strip()[-2000:]}"
        else:
            for target, symbol in [
                (FORWARD, library.LstmForward),
                (BACKWARD, library.LstmBackward),
                (INFER, library.LstmInfer),
                (PACK_UNITS, library.LstmPackUnits),
            ]:
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(symbol), platform="cpu")
            _loaded.append(library)
            return None
    warnings.warn(f"the LSTM loops run in XLA (slower training and decoding): {reason}", stacklevel=2)
    return reason


_loaded: list[ctypes.CDLL] = []  # the library once registered


def vector_floats() -> int | None:
    """The float32 lanes of the vectors the built library uses (16 for AVX-512, 8 for AVX2,
    4 for SSE2 and NEON); None when it is not available."""
    return _loaded[0].seq2seq_vector_floats() if available() else None


def available() -> bool:
    return unavailable_reason() is None


def enabled(kernel: str) -> bool:
    """Whether the C++ loop for `kernel` ("train": forward and backward loops; "infer": the
    inference loop) may run: the library is available and the kernel's switch is not off."""
    return not _is_off(KERNEL_SWITCHES[kernel]) and available()


def usable() -> bool:
    """True where XLA can make the library's calls: it is built, and no distribution splits
    arrays across devices (the calls have no sharding rule)."""
    import keras

    return keras.distribution.distribution() is None and available()
