"""Where and on what code a benchmark ran, as every results file records it."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def amd_core(family: int, model: int) -> str | None:
    """The Zen generation of an AMD CPU family and model (AMD's model names do not say
    it); None where not known here."""
    if family == 26:
        return "Zen 5"
    if family == 25:  # Zen 4: Genoa, Raphael and Phoenix, Bergamo; the rest Zen 3
        return (
            "Zen 4"
            if model in range(0x10, 0x20) or model in range(0x60, 0x80) or model in range(0xA0, 0xB0)
            else "Zen 3"
        )
    if family == 23:
        return "Zen 2" if model >= 0x30 else "Zen"
    return None


def cpu_name() -> str:
    """The CPU's model name (with the Zen generation of an AMD CPU), family and model
    number (a virtual Intel Xeon's name does not say which one it is) and the cores this
    process may use."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():  # macOS, Windows
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    # the first processor's lines are overwritten by the others': all cores are alike here
    lines = (line.partition(":") for line in cpuinfo.read_text().splitlines())
    info = {key.strip(): value.strip() for key, _, value in lines}
    name = " ".join(info.get("model name", platform.machine()).split())
    family, model = info.get("cpu family", "?"), info.get("model", "?")
    core = (
        amd_core(int(family), int(model))
        if info.get("vendor_id") == "AuthenticAMD" and family.isdigit() and model.isdigit()
        else None
    )
    if core and core not in name:
        name = f"{name} {core}"
    return f"{name} (family {family}, model {model}), {len(os.sched_getaffinity(0))} cores"


def commit() -> str:
    """The checked-out commit, with "+ changes" when the code differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        status = ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"]
        dirty = subprocess.run(status, cwd=ROOT, capture_output=True)  # results files are not code
    except OSError:
        return "unknown"
    return head.stdout.strip() + (" + changes" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def run_stamp(started: float) -> str:
    """When a run was (from `started`, a time.time(), to now, UTC) and on what commit."""
    begin = time.strftime("%Y-%m-%d %H:%M", time.gmtime(started))
    return f"{begin}-{time.strftime('%H:%M', time.gmtime())} UTC, commit {commit()}"
