"""bench/early_steps.py: the dev loss after the first steps of a fresh model, per seed and
learning-rate setting, on a trained run's split and vocabularies."""

from __future__ import annotations

import json
import math

from .conftest import bench_module


def test_reports_the_dev_loss_at_each_checkpoint_of_each_setting(reverse_model_dir, capsys):
    early_steps = bench_module("early_steps")
    early_steps.run_one(reverse_model_dir, seed=2, learning_rate=5e-3, warmup_steps=0, steps=[2, 5])
    early_steps.run_one(reverse_model_dir, seed=2, learning_rate=5e-3, warmup_steps=4, steps=[2, 5])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["warmup_steps"], r["steps"]) for r in records] == [(0, 2), (0, 5), (4, 2), (4, 5)]
    assert all(math.isfinite(r["dev_loss"]) and r["dev_loss"] > 0 for r in records)
    plain, warmed = records[0], records[2]
    assert plain["seed"] == warmed["seed"] == 2 and plain["learning_rate"] == 5e-3
    # the same data and initial weights: only the warm-up's smaller first steps differ
    assert warmed["train_loss"] != plain["train_loss"] and warmed["dev_loss"] != plain["dev_loss"]
