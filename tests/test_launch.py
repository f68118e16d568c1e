"""glibc memory settings: the `seq2seq` command restarts itself with the huge-page tunable
(launch.py), and training gives freed heap memory back (backend.release_freed_memory)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from seq2seq import backend, callbacks, launch

needs_glibc_thp = pytest.mark.skipif(
    launch.huge_page_environment({}) is None, reason="needs Linux, glibc 2.35+ and transparent huge pages"
)


@needs_glibc_thp
def test_tunable_added_to_the_environment_kept_with_others():
    assert launch.huge_page_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    environment = launch.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert environment["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_no_restart_when_set_switched_off_or_unsupported(tmp_path, monkeypatch):
    assert launch.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert launch.huge_page_environment({"SEQ2SEQ_HUGE_PAGES": "off"}) is None
    never = tmp_path / "enabled"
    never.write_text("always madvise [never]\n")
    assert not launch.transparent_huge_pages_available(never)
    assert not launch.transparent_huge_pages_available(tmp_path / "missing")
    monkeypatch.setattr(launch, "glibc_version", lambda: (2, 31))
    assert launch.huge_page_environment({}) is None


@needs_glibc_thp
def test_command_restarts_once_then_runs_the_cli():
    """The process the CLI runs in has the tunable, and the restart does not repeat."""
    probe = (
        "import os, sys; from seq2seq import cli, launch; "
        "cli.main = lambda: print('tunables', os.environ.get('GLIBC_TUNABLES')) or 0; "
        "sys.exit(launch.main())"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", launch.SWITCH)}
    # the first process restarts as `python -m seq2seq.cli --help`: the real CLI prints its usage
    result = subprocess.run(
        [sys.executable, "-c", probe, "--help"], capture_output=True, text=True, env=environment, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: seq2seq")
    # a process that already has the tunable runs the CLI in place
    environment["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, timeout=120)
    assert result.stdout.strip() == "tunables glibc.malloc.hugetlb=1", result.stderr


@needs_glibc_thp
def test_restart_command_and_environment(monkeypatch):
    calls = []

    def execve(path, command, environment):
        calls.append((path, command, environment))
        raise SystemExit(0)  # execve never returns

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(sys, "argv", ["seq2seq", "translate", "--model-dir", "m"])
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    with pytest.raises(SystemExit):
        launch.main()
    [(path, command, environment)] = calls
    assert path == sys.executable
    assert command == [sys.executable, "-m", "seq2seq.cli", "translate", "--model-dir", "m"]
    assert environment["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_freed_memory_is_released_every_n_batches_before_validation_and_at_epoch_end(monkeypatch):
    calls = []
    monkeypatch.setattr(callbacks, "release_freed_memory", lambda: calls.append(1))
    release = callbacks.ReleaseFreedMemory(every=3)
    for batch in range(7):
        release.on_train_batch_end(batch)
    assert len(calls) == 2  # after batches 3 and 6
    release.on_test_begin()
    release.on_epoch_end(0)
    assert len(calls) == 4


def has_malloc_trim() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "malloc_trim")
    except OSError:
        return False


@pytest.mark.skipif(not has_malloc_trim(), reason="needs glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_os():
    def resident_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    pieces = [bytes(1000) for _ in range(300_000)]  # ~300 MB in malloc'd pieces
    kept = pieces[::16]  # a few survivors keep the freed space from shrinking away by itself
    del pieces
    before = resident_mb()
    backend.release_freed_memory()
    assert before - resident_mb() > 100
    del kept
