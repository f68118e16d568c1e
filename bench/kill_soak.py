"""Kill soak: `seq2seq train` killed with SIGKILL at random moments, then resumed, must end
with exactly the weights of a run never interrupted.

    python bench/kill_soak.py [--trials 20] [--seed 0] [--max-kills 3] [--work DIR] [--out FILE]

One uninterrupted run first (the reference; its timing is the kill window). Then each
trial starts `seq2seq train` in its own directory and kills it (SIGKILL: no clean-up, as a
crash, an OOM kill or a power cut) at a random moment, seeded: 20% of the kills anywhere
in a run (start-up, data, vocabularies, the first files), 30% anywhere in its training
(from its "pairs: ..." or "resuming ..." line: the first epoch with its compiling, dev
scores and saves), 50% anywhere after its first epoch's checkpoint (the later epochs and
their saves, the end), each phase as long as the reference's. After a
kill it runs `seq2seq train --resume` when a checkpoint exists, or the first command again
with --overwrite when the kill came before the first checkpoint; each of those is killed
again at random (half the time, at most --max-kills kills per trial) until one finishes.
A first run that ends before its kill moment is run again from the start with another
moment, so that every trial has a kill.
A finished trial must match the reference exactly (np.array_equal, no tolerance): the
best model (model.keras), the last checkpoint's weights and optimizer state
(checkpoint/model.keras), the epoch weights kept for averaging, and every column of
history.csv but the training time.

Prints one line per trial and a summary (trials, kills, resumes, restarts, kills that
came in mid-write, leaving a temporary file beside the file being written, all equal?),
writes it as JSON to --out, and exits 1 if any trial failed. The settings (SETTINGS) run
about 10 s per uninterrupted run on 2 CPU cores once JAX's compilation cache is warm
(most of it start-up); batches of 128 make 3 an epoch, so few shapes to compile.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "kill_soak.json"

# A small model with what a resume must restore: embedding, Luong attention, dropout, the
# plateau rule, dev BLEU and the epoch weights to average, on the default corpus, at
# character level (--textbook)
SETTINGS = [
    *("--textbook", "--data", "builtin:numbers-en-es", "--num-samples", "400", "--epochs", "4"),
    *("--latent-dim", "16", "--batch-size", "128", "--input", "embedding", "--embedding-dim", "8"),
    *("--attention", "luong", "--dropout", "0.1", "--lr-patience", "1", "--dev-bleu-sentences", "20"),
    *("--average-epochs", "2", "--seed", "3", "--quiet"),
]


def train_command(model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seq2seq", "train", "--model-dir", str(model_dir), *extra]


@dataclass
class Run:
    command: str  # train, restart (train --overwrite after a kill), resume, or again (see `trial`)
    killed: bool
    returncode: int
    seconds: float
    kill_after: float | None
    phase: str  # kill_after counts from the start of this phase (PHASES)


@dataclass
class Trial:
    number: int
    runs: list[Run] = field(default_factory=list)
    mid_write: list[str] = field(default_factory=list)  # the temporaries each kill in mid-write left
    temporaries_left: int = 0  # after the trial finished (training removes its own on starting again)
    equal: bool = False
    problem: str = ""

    def count(self, command: str) -> int:
        return sum(run.command == command for run in self.runs)

    @property
    def kills(self) -> int:
        return sum(run.killed for run in self.runs)


# Kills are timed from one of three moments of a run: its start, when it says its training
# starts (data, vocabularies and model ready), and when Keras prints its first epoch's
# summary line ("12/12 - 0s - ...", after every callback of that epoch: the dev scores,
# the best model, the history and the checkpoint are written); each phase's share of the kills.
PHASES = {"run": None, "training": rb"^(pairs: |resuming )", "epochs": rb"^\d+/\d+ - "}
SHARES = {"run": 0.2, "training": 0.3, "epochs": 0.5}


@dataclass
class Outcome:
    killed: bool
    returncode: int
    seconds: dict[str, float]  # from the start of each phase it reached to its end (or the kill)


def run(command: list[str], log: Path, kill_after: float | None = None, phase: str = "run") -> Outcome:
    """Run `command` (stdout and stderr appended to `log`); SIGKILL it `kill_after` seconds
    into `phase` (see PHASES) if it is still running then."""
    offset = log.stat().st_size if log.exists() else 0
    started = {"run": time.perf_counter()}
    killed = False
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            now = time.perf_counter()
            if len(started) < len(PHASES):
                written = log.read_bytes()[offset:]
                for name, marker in PHASES.items():
                    if name not in started and re.search(marker, written, re.MULTILINE):
                        started[name] = now
            if kill_after is not None and phase in started and now >= started[phase] + kill_after:
                process.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
        returncode = process.wait()
    ended = time.perf_counter()
    return Outcome(killed, returncode, {name: ended - moment for name, moment in started.items()})


@dataclass
class Window:
    """How long each phase of an uninterrupted run lasts, in seconds: a kill comes at a
    random moment of a phase chosen by SHARES."""

    seconds: dict[str, float]

    def draw(self, rng: random.Random) -> tuple[float, str]:
        """(seconds into the phase, the phase)."""
        phase = rng.choices(list(SHARES), weights=list(SHARES.values()))[0]
        return round(rng.uniform(0.0, self.seconds[phase]), 3), phase


def reference(work: Path) -> tuple[Path, Window]:
    """An uninterrupted run: its model directory, and the kill window its timing gives."""
    model_dir = work / "reference"
    outcome = run(train_command(model_dir, "--overwrite", *SETTINGS), work / "reference.log")
    if outcome.returncode != 0 or set(outcome.seconds) != set(PHASES):
        raise SystemExit(f"the uninterrupted run failed (exit {outcome.returncode}); see {work / 'reference.log'}")
    return model_dir, Window(outcome.seconds)


def trial(
    number: int,
    rng: random.Random,
    work: Path,
    expected: Path,
    window: Window,
    max_kills: int,
    plan: list[tuple[float, str]] | None = None,
) -> Trial:
    """Kill and resume one training until it finishes, then compare it with `expected`.

    A trial has at least one kill: a first run that ends before its kill moment (the
    phases of a run vary in length) is run again from the start, with a new moment.
    `plan` gives the kills, (seconds, phase) each, instead of drawing them."""
    model_dir, log = work / f"trial-{number:02d}", work / f"trial-{number:02d}.log"
    result, name = Trial(number), "train"
    command = train_command(model_dir, *SETTINGS)
    plan = list(plan) if plan is not None else None
    while True:
        if plan is not None:
            kill_after, phase = plan.pop(0) if plan else (None, "run")
        else:
            kill = result.kills == 0 or (result.kills < max_kills and rng.random() < 0.5)
            kill_after, phase = window.draw(rng) if kill else (None, "run")
        before = set(temporaries(model_dir))
        outcome = run(command, log, kill_after, phase)
        seconds = round(outcome.seconds["run"], 2)
        result.runs.append(Run(name, outcome.killed, outcome.returncode, seconds, kill_after, phase))
        if not outcome.killed:
            if result.kills == 0 and outcome.returncode == 0 and len(result.runs) < 5:
                name, command = "again", train_command(model_dir, "--overwrite", *SETTINGS)
                continue  # finished before its kill: once more, killed at another moment
            break
        if left := sorted(set(temporaries(model_dir)) - before):
            result.mid_write.append(", ".join(str(path.relative_to(model_dir)) for path in left))
        if (model_dir / "checkpoint" / "state.json").is_file():
            name, command = "resume", train_command(model_dir, "--resume", "--quiet")
        else:  # killed before the first checkpoint: nothing to resume, start again
            name, command = "restart", train_command(model_dir, "--overwrite", *SETTINGS)
    result.temporaries_left = len(temporaries(model_dir))
    if outcome.returncode != 0:
        result.problem = f"{name} exited with {outcome.returncode}; see {log}"
    else:
        result.problem = differences(expected, model_dir)
    result.equal = not result.problem
    return result


def temporaries(model_dir: Path) -> list[Path]:
    """Files `files.atomic_path` was writing when a kill came (.NAME.RANDOM.tmpSUFFIX)."""
    return [path for path in model_dir.rglob(".*.tmp*") if path.is_file()]


def differences(expected: Path, actual: Path) -> str:
    """What differs between two finished model directories ('' when nothing): weights of
    the best model, weights and optimizer state of the last checkpoint, the epoch weights
    kept for averaging, the history."""
    import keras
    import numpy as np

    import seq2seq.training  # noqa: F401 (registers the model's classes, losses and metrics with Keras)

    problems = []
    for name in ("model.keras", "checkpoint/model.keras"):
        a = keras.saving.load_model(expected / name, compile=True, safe_mode=True)
        b = keras.saving.load_model(actual / name, compile=True, safe_mode=True)
        pairs = list(zip(a.get_weights(), b.get_weights(), strict=True))
        if name.startswith("checkpoint"):
            pairs += list(zip(a.optimizer.variables, b.optimizer.variables, strict=True))
        unequal = sum(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)
        if unequal:
            problems.append(f"{name}: {unequal} of {len(pairs)} arrays differ")
    epoch_files = sorted(p.name for p in (expected / "checkpoint").glob("epoch-*.npz"))
    actual_files = sorted(p.name for p in (actual / "checkpoint").glob("epoch-*.npz"))
    if actual_files != epoch_files:
        problems.append(f"checkpoint/ holds the epoch weights {actual_files}, expected {epoch_files}")
    else:
        for name in epoch_files:
            with np.load(expected / "checkpoint" / name) as a, np.load(actual / "checkpoint" / name) as b:
                if a.files != b.files or any(not np.array_equal(a[key], b[key]) for key in a.files):
                    problems.append(f"checkpoint/{name} differs")
    history, expected_history = _history(actual), _history(expected)
    if history != expected_history:
        problems.append(f"history.csv differs ({len(history)} rows, expected {len(expected_history)})")
    return "; ".join(problems)


def _history(model_dir: Path) -> list[dict]:
    with (model_dir / "history.csv").open(newline="", encoding="utf-8") as f:
        return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(f)]


def soak(trials: int, seed: int, max_kills: int, work: Path, report=print) -> dict:
    """Run the reference and `trials` trials in `work`; the summary as a dictionary."""
    expected, window = reference(work)
    phases = ", ".join(
        f"{SHARES[name]:.0%} in its {name} ({seconds:.1f} s)" for name, seconds in window.seconds.items()
    )
    report(f"uninterrupted run: {window.seconds['run']:.1f} s; kills come at random moments: {phases}")
    rng = random.Random(seed)
    results = []
    for number in range(1, trials + 1):
        result = trial(number, rng, work, expected, window, max_kills)
        results.append(result)
        steps = ", ".join(
            f"{run.command} killed {run.kill_after} s into its {run.phase}" if run.killed else f"{run.command} finished"
            for run in result.runs
        )
        report(f"trial {number}: {steps}; {'equal' if result.equal else 'FAILED: ' + result.problem}")
    summary = {
        "trials": trials,
        "seed": seed,
        "window": asdict(window),
        "kills": sum(r.kills for r in results),
        "resumes": sum(r.count("resume") for r in results),
        "restarts": sum(r.count("restart") for r in results),
        "finished_before_their_kill": sum(r.count("again") for r in results),
        "kills_mid_write": sum(len(r.mid_write) for r in results),
        "temporaries_left": sum(r.temporaries_left for r in results),
        "equal": sum(r.equal for r in results),
        "all_equal": all(r.equal for r in results),
        "trial_details": [asdict(r) for r in results],
    }
    report(
        f"kill soak: {summary['trials']} trials, {summary['kills']} kills, {summary['resumes']} resumes, "
        f"{summary['restarts']} restarts (killed before the first checkpoint), {summary['kills_mid_write']} kills "
        f"in mid-write (a temporary file left, {summary['temporaries_left']} still there at the end), "
        f"{summary['finished_before_their_kill']} runs that ended before their kill (run again); final weights, "
        "optimizer state and history equal to the "
        f"uninterrupted run's in {summary['equal']}/{trials} trials"
        + (": all equal" if summary["all_equal"] else ": FAILED")
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--max-kills", type=int, default=3, help="most kills in one trial")
    parser.add_argument("--work", type=Path, help="directory for the runs (default: a temporary one, deleted)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the summary as JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        summary = soak(args.trials, args.seed, args.max_kills, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="kill-soak-") as work:
            summary = soak(args.trials, args.seed, args.max_kills, Path(work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if summary["all_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
