"""bench/default.py keeps each CPU's latest run in a file of its own; bench/report.py
shows every CPU's ratios side by side. No benchmark runs here: made-up measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import bench_module

BENCH = Path(__file__).resolve().parents[1] / "bench"


def measurements(ours: float, theirs: float) -> dict:
    """The keys bench/default.py's `run` writes, with ours / torch = ours / theirs everywhere."""
    train = {"batches": 10, "pairs": 640, "real_target_tokens": 6000, "padding_share": 0.1, "first_pass_seconds": 60.0}
    train |= {"pass_seconds": 10.0, "last_pass_loss": 5.0, "peak_rss_mb": 2000}
    decode = {"sentences": 1000, "batch_size": 64, "first_pass_seconds": 8.0, "peak_rss_mb": 800}
    results = {"sizes": {}, "quick": False}
    for side, speed in (("seq2seq", ours), ("torch", theirs)):
        results[f"train_{side}"] = train | {"pairs_per_s": speed, "real_target_tokens_per_s": 10 * speed}
        for beam in (1, 5):
            results[f"decode_beam{beam}_{side}"] = decode | {"sentences_per_s": speed / beam}
    results |= {"decode_beam1_agreement": 1.0, "decode_beam5_agreement": 1.0, "total_minutes": 8.0}
    return results


def test_each_cpu_keeps_its_latest_run_and_quality_beside_it(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    default = bench_module("default")
    assert default.results_file("Intel(R) Xeon(R) Processor (family 6, model 167), 2 cores").name == (
        "intel-r-xeon-r-processor-family-6-model-167.json"
    )
    path = tmp_path / "cpu.json"
    default.keep(measurements(300.0, 200.0) | {"run": "first"}, path)
    curve = {"curve": [[300, 60.0, 10.0], [600, 120.0, 31.0]], "dev": 300}
    default.keep({"quality_seq2seq": curve, "quality_torch": curve, "quality_run": "q"}, path)
    default.keep(measurements(400.0, 200.0) | {"run": "second"}, path)  # a later run replaces the first
    kept = json.loads(path.read_text())
    assert kept["run"] == "second" and kept["quality_run"] == "q" and kept["train_seq2seq"]["pairs_per_s"] == 400.0
    assert kept["machine"] == bench_module("run_info").cpu_name() and "table" not in kept
    assert not list(tmp_path.glob("*.partial"))


def test_the_report_shows_every_cpus_ratios_newest_first(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    report = bench_module("report")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    files = []
    for name, ours, run in (("old", 300.0, "2026-01-01"), ("new", 500.0, "2026-02-01")):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(measurements(ours, 100.0) | {"machine": f"CPU {name}", "run": run}))
    curve = {"curve": [[300, 60.0, 10.0], [600, 120.0, 31.0]], "dev": 300}
    slower = {"curve": [[300, 100.0, 20.0], [600, 200.0, 30.5]], "dev": 300}
    data = json.loads(files[0].read_text()) | {"quality_seq2seq": curve, "quality_torch": slower}
    files[0].write_text(json.dumps(data))
    files.append(tmp_path / "quality-only.json")  # no `run` yet: nothing to show for it
    files[-1].write_text(json.dumps({"machine": "CPU q", "quality_seq2seq": curve, "quality_torch": curve}))
    text = "\n".join(report.default_section(files))
    rows = [line for line in text.splitlines() if line.startswith(("| CPU new", "| CPU old"))]
    assert len(rows) == 2
    assert rows[0].startswith("| CPU new | 5.00× | 5.00× | 5.00× | not measured |")
    assert rows[1].startswith("| CPU old | 3.00× | 3.00× | 3.00× | 0.60 |")  # 120 s against 200 s to BLEU 30
    assert text.index("### CPU new") < text.index("### CPU old") and "CPU q" not in text
    assert "| greedy decoding, sentences/s (1000 held-out, batch 64) | 500.0 | 100.0 | 5.00× |" in text


@pytest.mark.parametrize(
    ("key", "result", "marker", "row"),
    [
        (
            "decode_beam1_seq2seq_float32",
            {"sentences_per_s": 240.0},
            "float32 products",
            "| greedy decoding, sentences/s with float32 products (the default here: bfloat16 operands, backend.py)"
            " | 240.0 | | 0.80× ",
        ),
        (  # a results file from before the lever covered more than the logits
            "decode_beam1_seq2seq_float32_logits",
            {"sentences_per_s": 240.0},
            "float32 logits",
            "| greedy decoding, sentences/s with float32 logits (the default here: bfloat16, backend.py)"
            " | 240.0 | | 0.80× ",
        ),
        (
            "train_seq2seq_float32_logits",
            {"pairs_per_s": 270.0},
            "float32 output product",
            "| training, pairs/s with a float32 output product (the default here: bfloat16 forward, backend.py)"
            " | 270.0 | | 0.90× of ours with it |",
        ),
    ],
)
def test_the_table_shows_a_float32_row_where_bfloat16_was_the_default(monkeypatch, key, result, marker, row):
    monkeypatch.syspath_prepend(str(BENCH))
    default = bench_module("default")
    plain = measurements(300.0, 200.0)
    assert marker not in default.table(plain)
    assert row in default.table(plain | {key: result})


@pytest.mark.parametrize(
    ("family", "model", "core"),
    [
        (26, 2, "Zen 5"),
        (25, 17, "Zen 4"),
        (25, 0x61, "Zen 4"),
        (25, 1, "Zen 3"),
        (23, 49, "Zen 2"),
        (23, 1, "Zen"),
        (6, 167, None),
    ],
)
def test_an_amd_cpu_is_named_with_its_zen_generation(family, model, core):
    assert bench_module("run_info").amd_core(family, model) == core


def test_a_new_run_replaces_the_old_runs_rows_and_keeps_the_quality(monkeypatch, tmp_path):
    """A row the earlier run wrote and this one did not (renamed since) does not stay in
    the file beside the new run's rows; the other command's results do."""
    monkeypatch.syspath_prepend(str(BENCH))
    default = bench_module("default")
    path = tmp_path / "cpu.json"
    old_run = {"run": "old", "decode_beam1_seq2seq_float32_logits": {"sentences_per_s": 1.0}}
    quality = {"quality_seq2seq": [[1, 2.0, 3.0]], "quality_torch": [], "bleu_target": 30.0, "quality_run": "q"}
    default.keep(old_run, path)
    default.keep(quality, path)
    default.keep({"run": "new", "decode_beam1_seq2seq_float32": {"sentences_per_s": 2.0}}, path)
    kept = json.loads(path.read_text())
    assert kept["run"] == "new" and "decode_beam1_seq2seq_float32_logits" not in kept
    assert {key: kept[key] for key in quality} == quality
    default.keep({**quality, "quality_run": "q2"}, path)
    assert json.loads(path.read_text())["decode_beam1_seq2seq_float32"] == {"sentences_per_s": 2.0}


def test_interleaved_runs_stand_for_each_side_by_their_median(monkeypatch):
    """Each side is measured in turns (ours, the peer's, ours, ...); the median run stands
    for the side, and the table names every run."""
    monkeypatch.syspath_prepend(str(BENCH))
    default = bench_module("default")
    order: list[str] = []
    speeds = {"seq2seq": iter([700.0, 600.0, 650.0]), "torch": iter([300.0, 380.0, 290.0])}

    results = measurements(1.0, 1.0)

    def fake_measure(measurement, *arguments, impl, jax_cache):
        order.append(impl)
        return results[f"{measurement}_{impl}"] | {"pairs_per_s": next(speeds[impl]), "arguments": list(arguments)}

    monkeypatch.setattr(default, "measure", fake_measure)
    default.interleaved(results, "train", 3, "pairs_per_s", {"seq2seq": ["a"], "torch": ["a", "b"]}, False)
    assert order == ["seq2seq", "torch"] * 3
    assert results["train_seq2seq"]["pairs_per_s"] == 650.0 and results["train_torch"]["pairs_per_s"] == 300.0
    assert results["train_torch"]["arguments"] == ["a", "b"]
    assert results["train_seq2seq_rounds"] == [700.0, 600.0, 650.0]
    row = next(line for line in default.table(results).splitlines() if line.startswith("| training, pairs/s"))
    assert "median of 3 interleaved runs: ours 700.0, 600.0, 650.0; peer 300.0, 380.0, 290.0" in row
    assert row.endswith("| 650.0 | 300.0 | 2.17× |")
    assert default.median_run([{"x": 2}, {"x": 1}], "x") == {"x": 1}  # an even count: the lower middle


def test_time_to_the_bleu_target_where_the_peer_stopped_short(monkeypatch):
    """The peer trains only as long as the target ratio needs; where it stops short of the
    BLEU target, both tables give an upper bound on the ratio, not "not reached"."""
    monkeypatch.syspath_prepend(str(BENCH))
    default = bench_module("default")
    ours = {"curve": [[300, 60.0, 20.0], [600, 120.0, 31.0]], "dev": 300}
    peer = {"curve": [[300, 100.0, 10.0], [600, 400.0, 25.0]], "dev": 300}
    reached = {"curve": [[300, 100.0, 10.0], [600, 240.0, 30.5]], "dev": 300}
    assert default.time_ratio({"quality_seq2seq": ours, "quality_torch": reached}) == "0.50"
    short = {"quality_seq2seq": ours, "quality_torch": peer}
    assert default.time_ratio(short) == "< 0.30"
    assert default.time_ratio({"quality_seq2seq": peer, "quality_torch": ours}) is None
    assert "< 0.30 of its time" in default.quality_rows(short)[0]
    summary = bench_module("report").default_summary({"CPU X": measurements(300.0, 100.0) | short})
    assert summary.splitlines()[-1].endswith("| < 0.30 |")
