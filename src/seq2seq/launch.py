"""The `seq2seq` command's entry point: run the CLI in a process whose allocator suits XLA.

XLA on CPU allocates the temporaries of every training step as one block (over 100 MB
at word level) and frees it when the step ends. glibc's malloc serves blocks above
32 MB with a fresh mmap and returns them with munmap, so every step the kernel maps the
block again and faults it in 4 KB at a time: in a word-level benchmark 7.8 million page
faults in 300 steps, a fifth of the CPU time spent in the kernel.

glibc's `hugetlb` tunable (glibc 2.35 and later) asks for transparent huge pages for
those blocks, so the kernel faults them in 2 MB at a time. Tunables are read when a
process starts, so the command starts the CLI again in a process that has it:

- nothing heavy has been imported yet (the package imports Keras lazily), so this costs
  one Python start-up, tens of milliseconds;
- it is skipped where it cannot help: not Linux with glibc 2.35+, transparent huge
  pages turned off, the tunable already set, or SEQ2SEQ_HUGE_PAGES=off.

Programs that import `seq2seq` as a library can start Python with the same setting:
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python train.py`. bench/run.py measures the
difference (on the textbook's model too, which gains from it as well).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
SWITCH = "SEQ2SEQ_HUGE_PAGES"  # "off" keeps the allocator as it is
TRANSPARENT_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, OSError, ValueError):
        return None


def transparent_huge_pages_available(setting: Path = TRANSPARENT_HUGE_PAGES) -> bool:
    """True unless the kernel has transparent huge pages turned off ("[never]") or has none."""
    try:
        return "[never]" not in setting.read_text()
    except OSError:
        return False


def huge_page_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`environ` with glibc's huge-page tunable added, or None when a process started with
    it would not differ or could not use it."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if environ.get(SWITCH, "").lower() == "off" or TUNABLE in tunables:
        return None
    if sys.platform != "linux" or (glibc_version() or (0, 0)) < (2, 35) or not transparent_huge_pages_available():
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))}


def main() -> int:
    """`seq2seq ...`: the CLI, in a process started with huge pages for large blocks when
    that helps (see the module's docstring)."""
    environment = huge_page_environment(os.environ)
    if environment is not None:
        command = [sys.executable, "-m", "seq2seq.cli", *sys.argv[1:]]
        os.execve(sys.executable, command, environment)  # replaces this process; does not return
    from .cli import main as cli_main

    return cli_main()
