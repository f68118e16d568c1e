"""Write docs/performance.md from the benchmarks' results files.

    python bench/report.py --cpu "AMD EPYC (Zen 4), 2 cores" --run "2026-12-04, commit 2b24c1e"
    python bench/report.py          # when the results name their machine ("machine" field)

Reads bench/results/speed.json (written by `make bench`, i.e. bench/run.py) and, where
they exist, bench/results/default/*.json (the default configuration against the PyTorch
peer, one file per CPU: `python bench/default.py run --results`, then `quality --results`) and
bench/results/serve.json (`python bench/serve.py`), and writes the generated part of
docs/performance.md: the run's header (the CPU, the command, where the numbers come
from), the main table against the textbook recipe, the table of levers (each measured
beside the plain row in the same run), the default configuration's table and the
serving table. Everything after the END marker in an existing docs/performance.md
(hand-written prose) is kept as it is.

The CPU is `--cpu`, else the results' "machine" field when they have one: a speed.json
written before bench/run.py recorded its machine does not say where it ran, and a
number without its CPU is not worth printing, so the script stops if neither names it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from run import LEVERS, first_reaching  # noqa: E402  (bench/run.py: the lever labels)

SPEED = ROOT / "bench" / "results" / "speed.json"
DEFAULT = ROOT / "bench" / "results" / "default"  # a file per CPU
SERVE = ROOT / "bench" / "results" / "serve.json"
OUT = ROOT / "docs" / "performance.md"
END = "<!-- end of the part bench/report.py writes; what follows is kept when it runs again -->"

# levers measured in earlier runs whose code has since been removed: key suffix -> label
REMOVED_LEVERS = {
    "bf16mm": "bfloat16 operands in the h @ U products, float32 sums (`--recurrent-matmul bfloat16`)",
    "bf16mm_sequential": "bfloat16 h @ U products and XLA's sequential thunk scheduling together",
    "eager_decay": "every row's RMSprop velocity decayed every step (the plain row: lazily, every 32 steps)",
    "xla_loss": "the loss and accuracy in XLA's ops (the plain row: one C++ pass, csrc/cross_entropy.cc)",
    "dense_output": "XLA's backward pass of the output layer (the plain row: ordered, projection.py)",
}
# settings the plain rows of older runs record, whose code has since been removed
REMOVED_SETTINGS = ("loss", "output_backward", "lazy_decay_min_rows")
# what the plain seq2seq training rows record about the code that ran them
SETTINGS = {
    "loop": "LSTM loop",
    "loss": "loss",
    "output_backward": "output layer's backward pass",
    "input_kernel_updates": "input-kernel updates",
    "lazy_decay_min_rows": "lazy RMSprop velocity decay",
    "recurrent_matmul": "h @ U products",
    "optimizer": "optimizer",
    "padding_share": "target padding",
    "source_padding_share": "source padding",
}


def number(value: float) -> str:
    return f"{value:,}"


def shown_setting(key: str, value) -> str:
    if key == "lazy_decay_min_rows":
        return f"tables of {value:,} rows or more" if value < 2**62 else "off"
    return f"{value:.1%}" if isinstance(value, float) else str(value)


def provenance(path: Path) -> str:
    """Which committed version of `path` this is: "as committed in HASH (DATE)", or that
    the file differs from its last commit."""
    relative = path.relative_to(ROOT)
    try:
        last = subprocess.run(
            ["git", "log", "-1", "--format=%h %cs", "--", str(relative)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        changed = subprocess.run(["git", "status", "--porcelain", "--", str(relative)], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "(not in a git checkout)"
    if not last or changed:
        return "(not committed as read)"
    return f"as committed in {last[0]} ({last[1]})"


def speed_tables(r: dict) -> tuple[str, str, str]:
    """The main table, the levers' table and the list of settings the plain rows ran with."""
    peak = max(r[name]["gflops"] for name in ("peak", "peak_huge_pages") if name in r)
    rows = ["| measurement | textbook | seq2seq | seq2seq / textbook |", "|---|---|---|---|"]

    def row(label: str, textbook="", ours="", ratio="") -> None:
        rows.append(f"| {label} | {textbook} | {ours} | {ratio} |")

    def compare(label: str, textbook: dict, ours: dict, key: str) -> None:
        row(label, number(textbook[key]), number(ours[key]), f"{ours[key] / textbook[key]:,.1f}×")

    def share(gflops: float | None, after: str = "") -> str:
        if gflops is None:
            return ""
        adjacent = r.get(f"peak_after_{after}")
        also = (
            f"; {gflops / adjacent['gflops']:.0%} of the {adjacent['gflops']} measured right after" if adjacent else ""
        )
        return f"{gflops} ({gflops / peak:.0%} of the peak{also})"

    speed = "real_target_tokens_per_s"
    tc, sc, tw, sw = (r[f"train_{level}_{impl}"] for level in ("char", "word") for impl in ("textbook", "seq2seq"))
    for level, textbook, ours in (("char", tc, sc), ("word", tw, sw)):
        sizes = f"the first {ours['pairs']:,} pairs of spa-eng, latent 256, batch 64"
        if level == "word" and "word_sample" in r:
            sizes += f"; the textbook's one-hot arrays {r['word_sample']['textbook_array_mb']:,} MB"
        compare(f"{level} training, real target tokens/s ({sizes})", textbook, ours, speed)
        row(f"{level} training, seconds an epoch", textbook["epoch_seconds"], ours["epoch_seconds"])
        if f"train_{level}_textbook_huge_pages" in r:
            both = r[f"train_{level}_textbook_huge_pages"]
            compare("the same, the textbook also with glibc's huge-page tunable", both, ours, speed)
        executed = textbook.get("executed_gflops")
        counted = f"; {executed} counting padding and one-hot products" if executed else ""
        theirs = share(textbook["useful_gflops"]) + counted
        row(f"{level} training, useful GFLOP/s", theirs, share(ours["useful_gflops"], f"train_{level}"))
    dt, dg, db = r["decode_textbook"], r["decode_greedy"], r["decode_beam5"]
    compare(f"greedy decoding, sentences/s ({dg['sentences']:,} held-out inputs)", dt, dg, "sentences_per_s")
    compare("beam-5 decoding, sentences/s (textbook: its greedy loop)", dt, db, "sentences_per_s")
    row("greedy decoding, useful GFLOP/s", "", share(dg.get("useful_gflops"), "decode_greedy"))
    if all(f"tf_decode_{name}" in r for name in ("textbook", "greedy", "beam5")):
        tt, tg, tb = r["tf_decode_textbook"], r["tf_decode_greedy"], r["tf_decode_beam5"]
        compare(
            f"TensorFlow greedy decoding, sentences/s (textbook: {tt['sentences']} inputs)", tt, tg, "sentences_per_s"
        )
        compare("TensorFlow beam-5 decoding, sentences/s (textbook: its greedy loop)", tt, tb, "sentences_per_s")
    compare("peak RSS, char training (MB)", tc, sc, "peak_rss_mb")
    compare("peak RSS, word training (MB)", tw, sw, "peak_rss_mb")
    compare("peak RSS, greedy decoding (MB)", dt, dg, "peak_rss_mb")
    measured = "; ".join(
        f"{r[name]['gflops']} ({label})" for name, label in (("peak", "plain"), ("peak_huge_pages", "with the tunable"))
        if name in r
    )  # fmt: skip
    row("float32 matrix-multiply peak, GFLOP/s", "", measured)
    if r.get("quality_textbook"):
        best = max(r["quality_textbook"]["curve"], key=lambda point: point[2])
        for name, level in (("quality_seq2seq", "char"), ("quality_seq2seq_word", "word")):
            if not r.get(name):
                continue
            reached = first_reaching(r[name]["curve"], best[2])
            ours = f"{reached[1] / 60:.1f} min (epoch {reached[0]})" if reached else "not reached"
            ratio = f"{reached[1] / best[1]:.2f} of its time" if reached else ""
            dev = f"{r[name]['dev']} dev sentences"
            label = f"time to the textbook's best dev chrF ({best[2]}, {dev}), seq2seq {level} level"
            row(label, f"{best[1] / 60:.1f} min (epoch {best[0]})", ours, ratio)

    levers = [
        "| level | the plain row, changed to | seconds an epoch: plain → changed | tokens/s: plain → changed | ratio |"
    ]
    levers.append("|---|---|---|---|---|")
    for level, plain in (("char", sc), ("word", sw)):
        prefix = f"train_{level}_seq2seq_"
        for key in (key for key in r if key.startswith(prefix)):
            suffix, lever = key[len(prefix) :], r[key]
            if suffix in LEVERS:
                label = LEVERS[suffix]
            elif suffix in REMOVED_LEVERS:
                label = f"{REMOVED_LEVERS[suffix]} *(removed since)*"
            else:
                label = f"`{suffix}`"
            levers.append(
                f"| {level} | {label} | {plain['epoch_seconds']} → {lever['epoch_seconds']} "
                f"| {number(plain[speed])} → {number(lever[speed])} | {lever[speed] / plain[speed]:.2f}× |"
            )
    settings = []
    for key, label in SETTINGS.items():
        values = [ours[key] for ours in (sc, sw) if key in ours]
        if not values:
            continue
        shown = [shown_setting(key, value) for value in values]
        settings.append(f"{label}: " + (shown[0] if len(set(shown)) == 1 else f"{shown[0]} (char), {shown[1]} (word)"))
    return "\n".join(rows), "\n".join(levers), "; ".join(settings)


def default_table(results: dict) -> str:
    """bench/default.py's table of the default configuration against the PyTorch peer."""
    from default import table  # numpy and part of seq2seq: only when there is something to show

    return table(results)


def ratio(results: dict, measurement: str, key: str) -> float:
    return results[f"{measurement}_seq2seq"][key] / results[f"{measurement}_torch"][key]


def default_summary(by_cpu: dict[str, dict]) -> str:
    """One row per CPU: ours / torch for what issue 20 sets targets on."""
    from default import TIME_RATIO_TARGET, time_ratio

    lines = [
        "| CPU | training pairs/s | greedy sentences/s | beam-5 sentences/s | time to dev BLEU 30 |",
        "|---|---:|---:|---:|---:|",
        f"| target (ours / PyTorch) | ≥ 2× | ≥ 5× | ≥ 3× | ≤ {TIME_RATIO_TARGET} |",
    ]
    for cpu, r in by_cpu.items():
        to_target = "not measured"
        if "quality_seq2seq" in r:
            to_target = time_ratio(r) or "not reached"
        lines.append(
            f"| {cpu} | {ratio(r, 'train', 'pairs_per_s'):.2f}× | {ratio(r, 'decode_beam1', 'sentences_per_s'):.2f}× "
            f"| {ratio(r, 'decode_beam5', 'sentences_per_s'):.2f}× | {to_target} |"
        )
    return "\n".join(lines)


def default_section(files: list[Path]) -> list[str]:
    """The summary across CPUs, then each CPU's latest run in full, newest first."""
    by_cpu = {}
    for path in files:
        results = json.loads(path.read_text(encoding="utf-8"))
        if "train_seq2seq" in results:  # a `quality` run alone has no table of its own
            by_cpu[results["machine"]] = results | {"source": path}
    by_cpu = dict(sorted(by_cpu.items(), key=lambda item: item[1].get("run", ""), reverse=True))
    if not by_cpu:
        return [
            "Not measured in a recorded run yet: `python bench/default.py run --results` (needs `pip",
            "install -e '.[bench]'` and the spa-eng corpus in `../shared`) measures `seq2seq train`'s",
            "default model against the same model written in PyTorch (`bench/torch_peer.py`) and keeps",
            "the run in bench/results/default/, one file per CPU; this script then adds its table here.",
        ]
    lines = [
        "`python bench/default.py run --results`, then `python bench/default.py quality --results`",
        "(needs `pip install -e '.[bench]'`): `seq2seq train`'s default model against the same model",
        "written in PyTorch (`bench/torch_peer.py`), on the same split, SentencePiece codecs and",
        "batches; decoding compares one model's weights on both sides. Each CPU keeps its latest run",
        "in bench/results/default/. Ours / PyTorch, on each CPU:",
        "",
        default_summary(by_cpu),
    ]
    for cpu, r in by_cpu.items():
        source = r.pop("source")
        stamps = "; ".join(f"{name} {r[key]}" for name, key in (("run", "run"), ("quality", "quality_run")) if key in r)
        lines += ["", f"### {cpu}", "", f"From {source.relative_to(ROOT)} {provenance(source)}; {stamps}:"]
        lines += ["", default_table(r)]
    return lines


def serve_section(serve: dict) -> list[str]:
    """bench/serve.py's table: sentences/s and latency of each way of serving, and its checks."""
    lines = [
        "## Serving under load",
        "",
        f"`python bench/serve.py` on **{serve['cpu']}**: {serve['clients']} concurrent clients on loopback, one",
        f"sentence a request, {serve['seconds']:g} s a row, batching window {serve['window_ms']:g} ms; from",
        f"{SERVE.relative_to(ROOT)} {provenance(SERVE)}" + (f", run {serve['run']}" if "run" in serve else "") + ".",
        "",
        "| serving | sentences/s | p50 ms | p99 ms | errors | mean batch | server CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in serve["rows"].items():
        cpu_ms = row.get("server_cpu_ms_per_request")
        lines.append(
            f"| {name} | {row['sentences_per_s']:,.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} "
            f"| {row['mean_batch']:.1f} | {'' if cpu_ms is None else f'{cpu_ms:.2f}'} |"
        )
    memory, checks = serve["memory"], serve["checks"]
    lines += [
        "",
        f"Batching on: {checks['speedup_vs_one_at_a_time']:.1f}× one at a time"
        + (
            f", {checks['share_of_bare_decoder']:.0%} of the bare decoder at the same batch size"
            if "share_of_bare_decoder" in checks
            else ""
        )
        + f"; RSS {memory['rss_after_warmup_mib']:,.0f} MiB after warm-up, {memory['rss_after_run_mib']:,.0f} MiB"
        + " after the run.",
    ]
    return lines


def generate(
    speed: dict,
    cpu: str,
    run: str | None,
    default_files: list[Path],
    serve: dict | None = None,
) -> str:
    if speed.get("settings", {}).get("quick"):
        sys.exit(f"{SPEED} holds a --quick run (sizes too small to compare): run `make bench` first")
    main, levers, settings = speed_tables(speed)
    plain = [speed[f"train_{level}_seq2seq"] for level in ("char", "word")]
    removed = ""
    if any(key in row for key in REMOVED_SETTINGS for row in plain):
        removed = (
            " The loss, the output layer's backward pass and lazy decay name code removed since (today:"
            " the loss in XLA's ops, XLA's backward pass, every velocity row decayed every step)."
        )
    where = f"{SPEED.relative_to(ROOT)} {provenance(SPEED)}"
    minutes = f", {speed['total_minutes']} minutes in all" if "total_minutes" in speed else ""
    lines = [
        "# Performance",
        "",
        "<!-- written by `python bench/report.py` from bench/results/: run it again after `make bench` -->",
        "",
        "Regenerate the tables: `make bench` (or `python bench/run.py`), then `python bench/report.py",
        '--cpu "CPU, cores"` (`--cpu` only where the results do not name their machine). The',
        "prose after the tables is kept when it runs.",
        "",
        f"**The last full run**: `make bench` on **{cpu}**" + (f", {run}" if run else "") + f"{minutes}; every",
        f"number below is from {where}. The same run measures both sides on the same backend",
        "(JAX): seq2seq as the `seq2seq` command runs, the textbook recipe (`bench/textbook.py`:",
        "one-hot arrays of the whole dataset, Keras `fit`, one `predict()` per decoding step) as",
        "plain Python. Training is RMSprop at 1e-3 on both sides; real target tokens leave out",
        "padding. Useful GFLOP/s count the matrix products the model needs on real tokens (h @ U",
        "and the output layer, forward and backward; one-hot inputs as the row lookups they are,",
        "gates not counted), as a share of a float32 matrix-multiply peak measured in the same",
        "run (and again right after the measurement, as the clock drifts). Time to quality trains",
        "seq2seq with Adam, its default. Each ratio comes from one measurement on each side;",
        "repeats of one measurement on these shared 2-core machines have differed by as much as",
        '40% (`git show 3f2ebb4:README.md`, "Runs vary"), so ratios near 1 decide nothing.',
        "",
        "## Against the textbook recipe",
        "",
        main,
        "",
        f"The plain seq2seq training rows ran with: {settings}.{removed}",
        "",
        "## Levers, each measured beside the plain row",
        "",
        "Each row is one training run in the same `make bench` run, with one thing changed from the plain",
        "seq2seq row of its level; the ratio is the changed row's tokens/s over the plain row's",
        "(above 1: the change was faster). Rows marked *removed since* are history: their code",
        "was removed after this run because it measured no gain. The bfloat16 h @ U products",
        "were the change; lazy velocity decay, the C++ loss and the ordered output layer were",
        "in the plain rows, and today's code does what those changed rows did. A row labelled by",
        "its key alone has no label in bench/run.py's `LEVERS`. What each lever does and why:",
        "[Levers](#levers).",
        "",
        levers,
        "",
        "## The default configuration against PyTorch",
        "",
    ]
    lines += default_section(default_files)
    if serve is not None:
        lines += ["", *serve_section(serve)]
    return "\n".join(lines) + "\n\n" + END + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu", help='the CPU the run was on, e.g. "AMD EPYC (Zen 4), 2 cores" (default: the results\')'
    )
    parser.add_argument("--run", help='when and on what code the run was, e.g. "2026-12-04, commit 2b24c1e"')
    parser.add_argument("--out", type=Path, default=OUT, help=f"the file to write (default: {OUT.relative_to(ROOT)})")
    args = parser.parse_args()
    if not SPEED.is_file():
        sys.exit(f"{SPEED} not found: run `make bench` first")
    speed = json.loads(SPEED.read_text(encoding="utf-8"))
    cpu = args.cpu or speed.get("machine")
    if not cpu:
        sys.exit(f'{SPEED.relative_to(ROOT)} does not name its CPU: say which with --cpu "NAME, N cores"')
    serve = json.loads(SERVE.read_text(encoding="utf-8")) if SERVE.is_file() else None
    text = generate(speed, cpu, args.run, sorted(DEFAULT.glob("*.json")), serve)
    if args.out.is_file():
        kept = args.out.read_text(encoding="utf-8").partition(END)[2]
        text += kept.lstrip("\n") and "\n" + kept.lstrip("\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
