"""The dev loss of a fresh default model after its first training steps, for several seeds
and learning-rate settings: how often a run stays on its first plateau, and what a
warm-up changes (docs/performance.md, "A warm-up for the first plateau").

    python bench/early_steps.py runs/quality/eng-spa/subword-attention-average5 \\
        --seeds 1,2,3,4 --settings 2e-3:0,3e-3:100 --steps 400,1000

It reads a trained run's split and vocabularies, so every seed sees the same data: the
seed changes the initial weights, the dropout masks and the order of the batches. Each
seed and setting trains in its own process; one JSON line per checkpoint on stdout (the
loss on the whole dev split, as `fit` reports it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path


def run_one(run_dir: Path, seed: int, learning_rate: float, warmup_steps: int, steps: list[int]) -> None:
    from seq2seq import backend

    with backend.tensorflow_not_imported():  # as training runs
        _run_one(run_dir, seed, learning_rate, warmup_steps, steps)


def _run_one(run_dir: Path, seed: int, learning_rate: float, warmup_steps: int, steps: list[int]) -> None:
    import keras

    from seq2seq.api import Seq2Seq
    from seq2seq.batches import PairBatches
    from seq2seq.data import Split
    from seq2seq.model import build_model
    from seq2seq.training import compile_model

    system = Seq2Seq.load(run_dir)
    config = replace(system.config, seed=seed, learning_rate=learning_rate, warmup_steps=warmup_steps)
    split = Split.load(run_dir / "split")
    keras.utils.set_random_seed(seed)
    model = build_model(config, len(system.source), len(system.target))
    compile_model(model, config)
    batching = dict(batch_size=config.batch_size, latent_dim=config.latent_dim)
    train = PairBatches.from_pairs(system.source, system.target, split.train, seed=seed, **batching)
    dev = PairBatches.from_pairs(system.source, system.target, split.dev, shuffle=False, **batching)

    class Steps(keras.utils.PyDataset):
        """Batches start..stop of the first epoch's order."""

        def __init__(self, start: int, stop: int) -> None:
            super().__init__()
            self.start, self.stop = start, stop

        def __len__(self) -> int:
            return self.stop - self.start

        def __getitem__(self, index: int):
            return train[self.start + index]

    done, began = 0, time.perf_counter()
    for checkpoint in steps:
        history = model.fit(Steps(done, checkpoint), epochs=1, shuffle=False, verbose=0)
        dev_loss = model.evaluate(dev, verbose=0, return_dict=True)["loss"]
        record = dict(
            run=run_dir.name,
            seed=seed,
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            steps=checkpoint,
            train_loss=round(history.history["loss"][-1], 4),
            dev_loss=round(float(dev_loss), 4),
            seconds=round(time.perf_counter() - began, 1),
        )
        print(json.dumps(record), flush=True)
        done = checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a trained model directory (its split and vocabularies are used)")
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--settings", default="2e-3:0,3e-3:100", help="LEARNING_RATE:WARMUP_STEPS, comma-separated")
    parser.add_argument("--steps", default="400,1000", help="training steps at which the dev loss is measured")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one seed and setting, in this process
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    settings = [(float(rate), int(warmup)) for rate, warmup in (s.split(":") for s in args.settings.split(","))]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.one:
        ((learning_rate, warmup_steps),), (seed,) = settings, seeds
        run_one(args.run_dir, seed, learning_rate, warmup_steps, steps)
        return 0
    for seed in seeds:
        for learning_rate, warmup_steps in settings:
            command = [sys.executable, __file__, str(args.run_dir), "--one", "--seeds", str(seed)]
            command += ["--settings", f"{learning_rate}:{warmup_steps}", "--steps", args.steps]
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
