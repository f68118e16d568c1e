"""Quality on spa-eng: train named configurations, score them on the held-out test split.

Each row of the README's results table is one configuration here, trained with a time
budget on this machine and scored with sacrebleu on the test split made at training time
(grouped by source sentence, never seen in training), greedy and with beam search.

    python bench/quality.py --list
    python bench/quality.py spa-eng/subword-attention eng-spa/subword-attention
    python bench/quality.py --all

Results are appended to bench/results/quality.jsonl (one JSON object per row and
decoding) and the table is printed from that file: `python bench/quality.py --table`.
Model directories go to runs/quality/NAME.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from run_info import cpu_name

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "spa-eng" / "spa.txt"
RESULTS = ROOT / "bench" / "results" / "quality.jsonl"
RUNS = ROOT / "runs" / "quality"

# Every configuration starts from `seq2seq train`'s defaults (the best one: subword
# vocabulary, bidirectional encoder, Luong attention, tied embeddings, dropout, label
# smoothing, learning-rate reduction and early stopping on dev BLEU) and changes only what
# its name says. The textbook's knobs stay visible.
COMMON = "--latent-dim 384 --batch-size 64 --dev-bleu-sentences 500"
SEED = 1  # every row's seed unless --seed says otherwise
NO_ATTENTION = "--attention none"
WORD = "--level word --max-vocab 16000"

# name -> (train arguments, minutes of training). The comparison rows get the textbook
# row's budget (8 minutes, alone on the machine); the best configuration gets the
# issue's 60.
CONFIGURATIONS: dict[str, tuple[str, float]] = {
    "char": (f"--level char {NO_ATTENTION}", 8),
    "char-attention": ("--level char", 8),
    "word": (f"{WORD} {NO_ATTENTION}", 8),
    "word-attention": (WORD, 8),
    "subword": (NO_ATTENTION, 8),
    "subword-attention": ("", 60),
    "subword-attention-30min": ("", 30),  # issue 20: half the budget, the 60-minute row's BLEU
    "subword-attention-30min-lr3e-3": ("--learning-rate 0.003", 30),  # issue 20: a faster first epoch
    "subword-attention-30min-linear": ("--lr-decay linear", 30),  # issue 20: a schedule made for the budget
    "subword-attention-average5": ("--average-epochs 5", 60),  # issue 20: the mean of the last epochs' weights
    # issue 20: a higher rate, warmed up (docs/performance.md)
    "subword-attention-warmup100-lr3e-3": ("--learning-rate 0.003 --warmup-steps 100", 60),
}
DIRECTIONS = {"eng-spa": "", "spa-eng": "--reverse"}
BEAM = 5


def seq2seq(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "seq2seq", *args]
    print("$", shlex.join(command), flush=True)
    return subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE)


def run(name: str, train_model: bool = True, seed: int = SEED) -> None:
    """Train row `name` with `seed` (unless `train_model` is false: a finished or resumed
    run), then score it on the test split, greedy and with beam search."""
    direction, configuration = name.split("/")
    arguments, minutes = CONFIGURATIONS[configuration]
    model_dir = RUNS / direction / (configuration if seed == SEED else f"{configuration}-seed{seed}")
    options = shlex.split(f"{DIRECTIONS[direction]} {arguments} {COMMON} --seed {seed}")
    command = ["train", "--data", str(CORPUS), *options, "--time-budget", str(minutes)]
    command += ["--model-dir", str(model_dir), "--overwrite", "--quiet"]
    train = shlex.join(command)
    started = time.time()
    if train_model:
        seq2seq(*command)
    history = [json.loads(line) for line in _history_as_json(model_dir / "history.csv")]
    for beam in (1, BEAM):
        output = model_dir / f"evaluation-beam{beam}.json"
        seq2seq("evaluate", "--model-dir", str(model_dir), "--beam", str(beam), "--output", str(output))
        scores = json.loads(output.read_text())
        _append(
            {
                "row": name,
                "direction": direction,
                "configuration": configuration,
                "seed": seed,
                "machine": cpu_name(),
                "settings": train,
                "decoding": "greedy" if beam == 1 else f"beam {beam}",
                "bleu": round(scores["bleu"], 1),
                "chrf": round(scores["chrf"], 1),
                "exact_match": round(scores["exact_match"], 3),
                "test_sentences": scores["sentences"],
                "training_minutes": round(float(history[-1]["seconds"]) / 60, 1),
                "epochs": len(history),
                "wall_minutes": round((time.time() - started) / 60, 1),
                "script": f"python bench/quality.py {name}" + ("" if seed == SEED else f" --seed {seed}"),
            }
        )


def run_textbook(direction: str) -> None:
    """The textbook recipe (bench/textbook.py: first-10,000-style sample, char level,
    latent 256, batch 64, rmsprop) trained on a 10,000-pair sample of our training split,
    scored on our test split, greedy (its decoding)."""
    model_dir = RUNS / direction / "textbook"
    command = [sys.executable, str(ROOT / "bench" / "textbook_quality.py"), "--direction", direction]
    command += ["--out", str(model_dir), "--minutes", "8"]
    print("$", shlex.join(command), flush=True)
    result = json.loads(subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE).stdout.splitlines()[-1])
    _append({"row": f"{direction}/textbook", "direction": direction, "configuration": "textbook", **result})


def _history_as_json(path: Path):
    import csv

    with path.open() as f:
        for row in csv.DictReader(f):
            yield json.dumps(row)


def _append(record: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def table() -> str:
    """The latest result of each row and decoding, as a Markdown table."""
    latest: dict[tuple[str, int, str], dict] = {}
    for line in RESULTS.read_text().splitlines():
        record = json.loads(line)
        latest[(record["row"], record.get("seed", SEED), record["decoding"])] = record
    lines = [
        "| direction | configuration | decoding | test BLEU | test chrF | training min | epochs | reproduce |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = ["textbook", *CONFIGURATIONS]

    def position(key: tuple[str, str]) -> tuple:
        direction, configuration = key[0].split("/")
        return list(DIRECTIONS).index(direction), order.index(configuration), key[1], "beam" in key[2]

    for (_, seed, decoding), r in sorted(latest.items(), key=lambda item: position(item[0])):
        configuration = r["configuration"] + ("" if seed == SEED else f" (seed {seed})")
        lines.append(
            f"| {r['direction']} | {configuration} | {decoding} | {r['bleu']} | {r['chrf']} | "
            f"{r['training_minutes']} | {r['epochs']} | `{r['script']}` |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="*", help="DIRECTION/CONFIGURATION, e.g. spa-eng/subword-attention")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--no-train", action="store_true", help="score the rows' existing models (e.g. after --resume)")
    parser.add_argument(
        "--seed", type=int, default=SEED, help=f"the rows' seed (default: {SEED}; others get their own model directory)"
    )
    args = parser.parse_args()
    names = [f"{d}/{c}" for d in DIRECTIONS for c in [*CONFIGURATIONS, "textbook"]]
    if args.list:
        print("\n".join(names))
        return 0
    if args.table:
        print(table())
        return 0
    if not CORPUS.is_file():
        print(f"skipped: {CORPUS} not found (see ../shared/README.md)", file=sys.stderr)
        return 0
    os.environ.setdefault("KERAS_BACKEND", "jax")
    for name in names if args.all else args.rows:
        if name.endswith("/textbook"):
            run_textbook(name.split("/")[0])
        else:
            run(name, train_model=not args.no_train, seed=args.seed)
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
