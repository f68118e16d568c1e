"""The speed and memory benchmark: seq2seq against the textbook recipe, in one run.

    python bench/run.py            # everything on JAX, then decoding on TensorFlow too
    python bench/run.py --quick    # small sizes, to check that it runs

Each measurement runs in its own process (bench/speed.py) so that its peak memory is
its own. Prints a Markdown table of ratios and writes every measurement to
bench/results/speed.json. Absolute times on a shared 2-core machine are noisy; the
ratios come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seq2seq.launch import huge_page_environment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from run_info import cpu_name, run_stamp  # noqa: E402  (bench/run_info.py)

RESULTS = ROOT / "bench" / "results" / "speed.json"
MEMORY_BUDGET = 12 * 2**30  # the textbook's one-hot arrays may take half of this machine's 24 GB
SEQUENTIAL = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def measure(
    *args: str,
    backend: str = "jax",
    cpu_devices: int = 1,
    xla_flags: str = "",
    huge_pages: bool | None = None,
    native: bool = True,
    optional: bool = False,
) -> dict | None:
    """Run one bench/speed.py measurement; `cpu_devices` > 1 splits the CPU into that many
    XLA devices (JAX), `xla_flags` are added to XLA_FLAGS. `huge_pages`: start the process
    with glibc's huge-page tunable (see seq2seq/launch.py); by default each side runs as it
    comes: seq2seq with it, as the `seq2seq` command starts itself, the textbook recipe as
    plain Python. `native=False` turns seq2seq's C++ LSTM loop off (native.py). An
    `optional` one that fails is reported and gives None."""
    command = [sys.executable, str(ROOT / "bench" / "speed.py"), *args]
    # no compilation cache: every measurement compiles, as a first run does
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "SEQ2SEQ_JAX_CACHE": "off"}
    env.pop("GLIBC_TUNABLES", None)
    if huge_pages is None:
        huge_pages = "textbook" not in args
    if huge_pages:
        env = huge_page_environment(env) or env
    if not native:
        env["SEQ2SEQ_NATIVE"] = "off"
    if cpu_devices > 1:
        xla_flags += f" --xla_force_host_platform_device_count={cpu_devices}"
    if xla_flags:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
    setting = f"KERAS_BACKEND={backend}, XLA_FLAGS={xla_flags.strip()}, GLIBC_TUNABLES={env.get('GLIBC_TUNABLES', '')}"
    setting += "" if native else ", SEQ2SEQ_NATIVE=off"
    print("$", " ".join(command[1:]), f"({setting})", file=sys.stderr)
    try:
        output = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE, env=env).stdout
    except subprocess.CalledProcessError as error:
        if not optional:
            raise
        print(f"failed (exit {error.returncode}), left out of the table", file=sys.stderr, flush=True)
        return None
    result = json.loads(output.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


class SavedResults(dict):
    """The measurements so far, written to RESULTS after each one: an aborted run keeps
    what it measured."""

    def __setitem__(self, key: str, value) -> None:
        super().__setitem__(key, value)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(self, indent=2) + "\n")


def largest_textbook_word_sample(budget: int) -> tuple[int, int]:
    """The most first-lines of spa-eng whose word-level one-hot arrays fit in `budget`
    bytes, and their size: the largest sample the textbook recipe can hold here."""
    from speed import CORPUS, load_textbook

    textbook = load_textbook()
    lines = CORPUS.read_text(encoding="utf-8").split("\n")

    def size(n: int) -> int:
        sources, targets = set(), set()
        longest_source = longest_target = 0
        for line in lines[:n]:
            source, target = line.split("\t")[:2]
            s, t = textbook.tokenize(source, "word"), textbook.tokenize(target, "word")
            sources.update(s)
            targets.update(t)
            longest_source, longest_target = max(longest_source, len(s)), max(longest_target, len(t) + 2)
        return textbook.array_bytes(n, longest_source, longest_target, len(sources) + 1, len(targets) + 3)

    low, high = 1000, len(lines) - 1
    while high - low > 500:
        middle = (low + high) // 2
        low, high = (middle, high) if size(middle) <= budget else (low, middle)
    return low, size(low)


# training levers measured beside the plain run: key suffix -> table label
LEVERS = {
    "xla_loop": "XLA's LSTM loop (recurrence.py) and loss instead of the C++ ones (`SEQ2SEQ_NATIVE=off`)",
    "keras_loop": "Keras's own RNN loop, differentiated by JAX (before recurrence.py)",
    "unroll8": "Keras's loop with 8 timesteps per iteration",
    "sequential": "XLA's sequential thunk scheduling (`--xla_cpu_enable_concurrency_optimized_scheduler=false`)",
    "2dev": "batch split over 2 XLA CPU devices (`--data-parallel`)",
    "2dev_1thread": "2 devices, single-threaded matrix products (`--xla_cpu_multi_thread_eigen=false`)",
    "bf16": "Keras's mixed bfloat16 policy (all layers in bfloat16)",
    "dense_updates": "dense gradients and RMSprop updates of the one-hot input kernels (before row_sparse.py)",
    "small_pages": "without glibc's huge-page tunable (which the `seq2seq` command sets: launch.py)",
}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that everything runs")
    parser.add_argument("--no-tensorflow", action="store_true", help="skip the TensorFlow decoding comparison")
    parser.add_argument(
        "--decode-train-epochs", type=int, default=10, help="epochs of training before the decoding measurements"
    )
    parser.add_argument("--no-default", action="store_true", help="skip the default configuration against PyTorch")
    parser.add_argument("--quality-minutes", type=float, default=15, help="training time of each time-to-quality run")
    args = parser.parse_args()
    quick = args.quick
    started = time.time()
    results = SavedResults()

    # the reference for useful FLOP/s: the better of a plain process and one with the tunable
    results["peak"] = measure("peak", huge_pages=False)
    results["peak_huge_pages"] = measure("peak", huge_pages=True, optional=True)
    char = ["--level", "char", "--pairs", "1000" if quick else "10000"]
    results["train_char_textbook"] = measure("train", "--impl", "textbook", *char)
    results["train_char_seq2seq"] = measure("train", "--impl", "seq2seq", *char)
    results["peak_after_train_char"] = measure("peak", "--float32-only", optional=True)
    # the allocator setting on both sides: it helps the textbook's steps too
    results["train_char_textbook_huge_pages"] = measure(
        "train", "--impl", "textbook", *char, huge_pages=True, optional=True
    )
    results["train_char_seq2seq_small_pages"] = measure(
        "train", "--impl", "seq2seq", *char, huge_pages=False, optional=True
    )
    # the same global batch split over two XLA CPU devices, one per core
    results["train_char_seq2seq_2dev"] = measure(
        "train", "--impl", "seq2seq", *char, "--data-parallel", cpu_devices=2, optional=True
    )
    # the same, each device's matrix products on one thread (no two devices competing for both cores)
    results["train_char_seq2seq_2dev_1thread"] = measure(
        "train",
        "--impl",
        "seq2seq",
        *char,
        "--data-parallel",
        cpu_devices=2,
        xla_flags="--xla_cpu_multi_thread_eigen=false",
        optional=True,
    )
    results["train_char_seq2seq_xla_loop"] = measure("train", "--impl", "seq2seq", *char, native=False, optional=True)
    results["train_char_seq2seq_keras_loop"] = measure(
        "train", "--impl", "seq2seq", *char, "--keras-loop", optional=True
    )
    results["train_char_seq2seq_unroll8"] = measure(
        "train", "--impl", "seq2seq", *char, "--keras-loop", "--scan-unroll", "8", optional=True
    )
    results["train_char_seq2seq_sequential"] = measure(
        "train", "--impl", "seq2seq", *char, xla_flags=SEQUENTIAL, optional=True
    )
    results["train_char_seq2seq_bf16"] = measure(
        "train", "--impl", "seq2seq", *char, "--dtype-policy", "mixed_bfloat16", optional=True
    )

    word_pairs, word_bytes = (2000, 0) if quick else largest_textbook_word_sample(MEMORY_BUDGET)
    word = ["--level", "word", "--pairs", str(word_pairs)]
    results["train_word_textbook"] = measure("train", "--impl", "textbook", *word, "--batches", "30", "--epochs", "1")
    results["train_word_seq2seq"] = measure("train", "--impl", "seq2seq", *word, "--epochs", "1")
    results["peak_after_train_word"] = measure("peak", "--float32-only", optional=True)
    results["train_word_textbook_huge_pages"] = measure(
        "train", "--impl", "textbook", *word, "--batches", "30", "--epochs", "1", huge_pages=True, optional=True
    )
    results["train_word_seq2seq_small_pages"] = measure(
        "train", "--impl", "seq2seq", *word, "--epochs", "1", huge_pages=False, optional=True
    )
    results["train_word_seq2seq_xla_loop"] = measure(
        "train", "--impl", "seq2seq", *word, "--epochs", "1", native=False, optional=True
    )
    results["train_word_seq2seq_dense_updates"] = measure(
        "train", "--impl", "seq2seq", *word, "--epochs", "1", "--dense-kernel-updates", optional=True
    )
    results["train_word_seq2seq_2dev"] = measure(
        "train", "--impl", "seq2seq", *word, "--epochs", "1", "--data-parallel", cpu_devices=2, optional=True
    )

    train_epochs = "1" if quick else str(args.decode_train_epochs)
    # the models are trained once (on JAX) and every backend decodes the same ones
    trained = tempfile.TemporaryDirectory(prefix="seq2seq-bench-")
    decode = ["--pairs", "1000" if quick else "10000", "--train-epochs", train_epochs, "--trained", trained.name]
    results["decode_textbook"] = measure("decode", "--impl", "textbook", *decode)
    results["decode_greedy"] = measure("decode", "--impl", "seq2seq", *decode)
    results["peak_after_decode_greedy"] = measure("peak", "--float32-only", optional=True)
    results["decode_beam5"] = measure("decode", "--impl", "seq2seq", *decode, "--beam", "5")
    if not args.no_tensorflow:
        few = ["--sentences", "20" if quick else "50"]
        results["tf_decode_textbook"] = measure(
            "decode", "--impl", "textbook", *decode, *few, backend="tensorflow", optional=True
        )
        results["tf_decode_greedy"] = measure(
            "decode", "--impl", "seq2seq", *decode, backend="tensorflow", optional=True
        )
        results["tf_decode_beam5"] = measure(
            "decode", "--impl", "seq2seq", *decode, "--beam", "5", backend="tensorflow", optional=True
        )

    quality = ["--pairs", "1000" if quick else "10000", "--minutes", "1" if quick else str(args.quality_minutes)]
    textbook_curve = measure("quality-time", "--impl", "textbook", *quality, "--epochs", "3" if quick else "100")
    best_epoch = max(textbook_curve["curve"], key=lambda point: point[2])
    target = best_epoch[2]
    # One device: data parallelism over virtual CPU devices aborted twice in XLA's
    # all-reduce (a 40 s rendezvous timeout) and trained no faster when it ran.
    ours_curve = measure("quality-time", "--impl", "seq2seq", *quality, "--epochs", "100", "--target", str(target))
    results["quality_textbook"], results["quality_seq2seq"] = textbook_curve, ours_curve
    # the same with word tokens: shorter sequences, so more sentences a second
    results["quality_seq2seq_word"] = measure(
        "quality-time", "--impl", "seq2seq", *quality, "--level", "word", "--epochs", "100", "--target", str(target)
    )

    # the configuration users train, beside the PyTorch peer (bench/default.py; needs the bench extra)
    default = None
    if not args.no_default:
        from default import default_rows, keep, results_file

        default = default_rows(quick)
        results["default"] = {key: value for key, value in default.items() if key != "table"}
        if not quick:  # this CPU's latest run of the default configuration, for bench/report.py
            keep({**results["default"], "run": run_stamp(started) + ", `make bench`"}, results_file(cpu_name()))

    results = SavedResults((key, value) for key, value in results.items() if value is not None)
    results["word_sample"] = {"pairs": word_pairs, "textbook_array_mb": round(word_bytes / 2**20)}
    results["settings"] = {"quick": quick, **{k: v for k, v in vars(args).items() if k != "quick"}}
    results["total_minutes"] = round((time.time() - started) / 60, 1)
    results["machine"] = cpu_name()
    print(table(results, best_epoch))
    if default is not None:
        print("\n## Default configuration against the PyTorch peer\n\n" + default["table"])
    return 0


def first_reaching(curve: list, target: float) -> list | None:
    """The first (epoch, seconds, chrF) point of a quality-time curve at or above `target`."""
    return next((point for point in curve if point[2] >= target), None)


def table(r: dict, textbook_best: list) -> str:
    peak = max(r[name]["gflops"] for name in ("peak", "peak_huge_pages") if name in r)
    rows = ["| measurement | textbook | seq2seq | ratio |", "|---|---|---|---|"]

    def row(label: str, textbook, ours, speedup: str = "") -> None:
        rows.append(f"| {label} | {textbook} | {ours} | {speedup} |")

    def compare(label: str, textbook: dict, ours: dict, key: str) -> None:
        row(label, f"{textbook[key]:,}", f"{ours[key]:,}", ratio(ours[key], textbook[key]))

    def levers(textbook: dict, measured: str, key: str) -> None:
        """A row for each lever measured on top of `measured` (a key of `r`)."""
        for suffix, label in LEVERS.items():
            if f"{measured}_{suffix}" in r:
                compare(f"the same, {label}", textbook, r[f"{measured}_{suffix}"], key)

    def share(gflops: float, after: str = "") -> str:
        """`gflops` as a share of the run's peak, and of the peak measured right after it
        (the machine's speed drifts within a run: this compares like with like)."""
        adjacent = r.get(f"peak_after_{after}")
        also = f"; {gflops / adjacent['gflops']:.0%} of {adjacent['gflops']} measured right after" if adjacent else ""
        return f"{gflops} ({gflops / peak:.0%}{also})"

    tc, sc = r["train_char_textbook"], r["train_char_seq2seq"]
    tw, sw = r["train_word_textbook"], r["train_word_seq2seq"]
    dt, dg, db = r["decode_textbook"], r["decode_greedy"], r["decode_beam5"]
    speed = "real_target_tokens_per_s"
    compare(f"char training, real target tokens/s ({tc['pairs']} pairs, latent 256, batch 64)", tc, sc, speed)
    both_huge = "the same, the textbook also started with glibc's huge-page tunable"
    if "train_char_textbook_huge_pages" in r:
        compare(both_huge, r["train_char_textbook_huge_pages"], sc, speed)
    levers(tc, "train_char_seq2seq", speed)
    arrays = f"{r['word_sample']['textbook_array_mb']:,} MB"
    compare(f"word training, real target tokens/s ({tw['pairs']} pairs; textbook arrays {arrays})", tw, sw, speed)
    if "train_word_textbook_huge_pages" in r:
        compare(both_huge, r["train_word_textbook_huge_pages"], sw, speed)
    levers(tw, "train_word_seq2seq", speed)
    compare(f"greedy decoding, sentences/s ({dg['sentences']} held-out)", dt, dg, "sentences_per_s")
    compare("beam-5 decoding, sentences/s (textbook: greedy)", dt, db, "sentences_per_s")
    if all(f"tf_decode_{name}" in r for name in ("textbook", "greedy", "beam5")):
        tt, tg, tb = r["tf_decode_textbook"], r["tf_decode_greedy"], r["tf_decode_beam5"]
        compare(f"TensorFlow greedy decoding, sentences/s (textbook: {tt['sentences']})", tt, tg, "sentences_per_s")
        compare("TensorFlow beam-5 decoding, sentences/s (textbook: greedy)", tt, tb, "sentences_per_s")
    compare("peak memory, char training (MB)", tc, sc, "peak_rss_mb")
    compare("peak memory, word training (MB)", tw, sw, "peak_rss_mb")
    compare("peak memory, greedy decoding (MB)", dt, dg, "peak_rss_mb")
    row(
        f"char training, useful GFLOP/s (share of the {peak} GFLOP/s matmul peak)",
        f"{share(tc['useful_gflops'])}; {tc['executed_gflops']} counting padding and one-hot products",
        share(sc["useful_gflops"], "train_char"),
    )
    if "train_char_seq2seq_2dev" in r:
        row("the same, 2 XLA CPU devices", "", share(r["train_char_seq2seq_2dev"]["useful_gflops"]))
    row("word training, useful GFLOP/s", share(tw["useful_gflops"]), share(sw["useful_gflops"], "train_word"))
    if "train_word_seq2seq_2dev" in r:
        row("the same, 2 XLA CPU devices", "", share(r["train_word_seq2seq_2dev"]["useful_gflops"]))
    row("greedy decoding, useful GFLOP/s", "", share(dg["useful_gflops"], "decode_greedy"))
    if "bfloat16_gflops" in r["peak"]:
        measured = "; ".join(
            f"{r[name]['gflops']}; {r[name]['bfloat16_gflops']} ({label})"
            for name, label in (("peak", "plain"), ("peak_huge_pages", "with the tunable"))
            if name in r
        )
        row("matrix-multiply peak, GFLOP/s (float32; bfloat16)", "", measured)
    for name, label in (("quality_seq2seq", "char"), ("quality_seq2seq_word", "word")):
        if not r.get(name):
            continue
        reached = first_reaching(r[name]["curve"], textbook_best[2])
        ours, speedup = "not reached", ""
        if reached:
            ours = f"{reached[1] / 60:.1f} min (epoch {reached[0]})"
            speedup = f"{reached[1] / textbook_best[1]:.2f} of its time"
        row(
            f"time to the textbook's best dev chrF ({textbook_best[2]}), seq2seq {label} level",
            f"{textbook_best[1] / 60:.1f} min (epoch {textbook_best[0]})",
            ours,
            speedup,
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
