"""Sweeps: one result per grid point, resumable, with plots and a report that shows them."""

from __future__ import annotations

import json
import re

import pytest

from seq2seq.cli import main
from seq2seq.config import Config, ConfigError
from seq2seq.report import knob_effects, summary
from seq2seq.sweep import capped, grid, parse_axes, point_name, run_sweep

BASE = dict(data="builtin:reverse", epochs=2, batch_size=32, dev_bleu_sentences=30, seed=2)  # the textbook model


def test_grid_and_names():
    points = grid({"num_samples": [200, 400], "latent_dim": [8, 16]})
    assert points == [
        {"num_samples": 200, "latent_dim": 8},
        {"num_samples": 200, "latent_dim": 16},
        {"num_samples": 400, "latent_dim": 8},
        {"num_samples": 400, "latent_dim": 16},
    ]
    assert point_name(points[1]) == "n200-h16"
    axes, single = parse_axes({"latent_dim": "8,16", "batch_size": "32", "num_samples": None})
    assert axes == {"latent_dim": [8, 16]} and single == {"batch_size": 32}
    with pytest.raises(ConfigError, match="--latent-dim"):
        parse_axes({"latent_dim": "8,big"})


def test_the_sweeps_cap_cuts_a_point_short_without_changing_its_schedule():
    point = capped(Config(), 12.5)
    assert point.time_budget == 12.5 and point.lr_decay == "none" and not point.linear_decay
    own_budget = capped(Config(time_budget=5), 12.5)
    assert own_budget.time_budget == 5 and own_budget.linear_decay  # its own budget, its own plan
    assert capped(Config(lr_decay="linear"), 12.5).linear_decay


def test_sweep_runs_every_point_once_and_resumes(tmp_path, capsys):
    axes = {"num_samples": [300, 600], "latent_dim": [8, 16]}
    results = run_sweep(Config.textbook(**BASE), axes, tmp_path, verbose=0)
    assert [r["point"] for r in results] == ["n300-h8", "n300-h16", "n600-h8", "n600-h16"]
    for r in results:
        assert r["epochs"] == 2 and r["training_seconds"] > 0 and r["dev_loss"] > 0
        assert r["dev_chrf"] is not None and r["parameters"] > 0
    # every point is scored on the same dev sentences, and trains on its own sample size
    devs = {(tmp_path / "points" / r["point"] / "split" / "dev.tsv").read_text() for r in results}
    assert len(devs) == 1
    assert [r["training_pairs"] for r in results] == [300, 300, 600, 600]
    assert results[0]["parameters"] < results[1]["parameters"]
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("point,num_samples,latent_dim")

    capsys.readouterr()
    again = run_sweep(Config.textbook(**BASE), axes, tmp_path, verbose=0)
    assert again == results
    assert capsys.readouterr().err.count("done already") == 4

    # a sweep.json from before a setting existed resumes (the runs used its default), and
    # one naming a since-removed setting at its only remaining value too
    settings = json.loads((tmp_path / "sweep.json").read_text())
    del settings["base"]["data_parallel"]
    settings["base"]["recurrent_matmul"] = "float32"
    (tmp_path / "sweep.json").write_text(json.dumps(settings))
    assert run_sweep(Config.textbook(**BASE), axes, tmp_path, verbose=0) == results

    with pytest.raises(ConfigError, match="different sweep"):
        run_sweep(Config.textbook(**BASE), {"num_samples": [300, 900]}, tmp_path, verbose=0)


def test_report_names_and_shows_every_plot(tmp_path):
    assert main(["sweep", "--model-dir", str(tmp_path), "--data", "builtin:reverse", "--num-samples", "300,600",
                 "--textbook", "--latent-dim", "8", "--epochs", "2", "--dev-bleu-sentences", "30",
                 "--quiet"]) == 0  # fmt: skip
    page = (tmp_path / "report.html").read_text()
    named = re.findall(r"<figure id='([a-z_]+)'>", page)
    assert set(named) == {"metric_by_knob", "learning_curves", "quality_against_time"}
    for name in named:
        figure = re.search(rf"<figure id='{name}'>(.*?)</figure>", page, re.S).group(1)
        assert "src='data:image/png;base64," in figure
        for link in re.findall(r"href='([^']+)'", figure):
            assert (tmp_path / link).is_file() and (tmp_path / link).stat().st_size > 0
    assert "Helped most — num_samples" in page
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(r["point"] in page for r in results)
    config = json.loads((tmp_path / "points" / results[0]["point"] / "config.json").read_text())
    assert (config["level"], config["input"], config["attention"]) == ("char", "onehot", "none")  # --textbook


def test_knob_effects_rank_the_knob_that_moved_the_metric_most():
    results = [
        {
            "point": f"p{n}{h}",
            "num_samples": n,
            "latent_dim": h,
            "dev_bleu": 10 + n / 100 + h / 64,
            "epochs": 1,
            "training_seconds": 60,
            "parameters": 100,
        }
        for n in (100, 1000)
        for h in (64, 128)
    ]
    effects = knob_effects(results, ["num_samples", "latent_dim"], "dev_bleu")
    assert [e["knob"] for e in effects] == ["num_samples", "latent_dim"]
    assert effects[0]["change"] == pytest.approx(9.0) and effects[0]["best"] == 1000
    lines = summary(results, ["num_samples", "latent_dim"], "dev_bleu")
    assert lines[0].startswith("Helped most — num_samples: from 100 to 1000")
    assert "Best point: p1000128" in lines[-1]
