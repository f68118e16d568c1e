"""Load benchmark of `seq2seq serve` on loopback: K concurrent clients for T seconds.

    python bench/serve.py [--model-dir DIR] [--clients 32] [--seconds 20]

Three ways of serving one sentence per request, each for --seconds:
  batching on    `seq2seq serve` with its batching window (--window-ms)
  batching off   the same server with window 0: one request per decode call
  one at a time  a loop of `Seq2Seq.translate([sentence])` in this process, no HTTP
and the bare decoder: `Seq2Seq.decode` in this process, no HTTP, of batches as large as
the server's mean batch (batching on), one sentence a group as the server merges them.
What the server reaches of it is what HTTP, JSON, the batcher and the clients cost.

It reports sentences/s and p50/p99 latency of each, the CPU time the server and the load
generator spent per request, the server's resident memory after warm-up and after the
run (batching on), checks the issue's targets and writes bench/results/serve.json.

Without --model-dir it serves the model users get: `seq2seq train` with the default
configuration on spa-eng (../shared/data/spa-eng/spa.txt) for --train-minutes, kept in
runs/bench-serve. The clients are aiohttp's: the load generator shares the machine's
cores with the server, and httpx's client spent about 5 ms of CPU a request here against
aiohttp's 0.2. Loopback only; every loop is bounded by time and by --max-requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from run_info import cpu_name, run_stamp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serve.json"
SPA = ROOT.parent / "shared" / "data" / "spa-eng" / "spa.txt"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train_default(model_dir: Path, minutes: float) -> None:
    """The default configuration (what `seq2seq train` gives users) on spa-eng, for `minutes`."""
    command = [sys.executable, "-m", "seq2seq.cli", "train", "--data", str(SPA), "--time-budget", str(minutes)]
    command += ["--model-dir", str(model_dir), "--quiet", "--overwrite"]
    subprocess.run(command, check=True)


def start_server(model_dir: Path, window_ms: float, log: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    command = [sys.executable, "-m", "seq2seq.cli", "serve", "--model-dir", str(model_dir), "--port", str(port)]
    command += ["--batch-window-ms", str(window_ms), "--max-queue", "4096"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"seq2seq serve exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url, time.monotonic()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("seq2seq serve was not ready in 10 minutes")


async def load(url: str, sentences: list[str], clients: int, seconds: float, max_requests: int) -> dict:
    """`clients` loops, each posting one sentence at a time until `seconds` pass."""
    import aiohttp  # the bench extra's: the rest of this file runs without it

    latencies: list[float] = []
    errors = 0
    batch_sizes: list[int] = []
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout) as session:

        async def one_client(number: int) -> None:
            nonlocal errors
            i = number
            while time.perf_counter() < stop and len(latencies) + errors < max_requests:
                started = time.perf_counter()
                try:
                    async with session.post("/v1/translate", json={"q": sentences[i % len(sentences)]}) as answer:
                        body = await answer.json()
                        if answer.status == 200:
                            latencies.append(time.perf_counter() - started)
                            batch_sizes.append(body["timing"]["batch_size"])
                        else:
                            errors += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    errors += 1
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return summary(latencies, elapsed, errors, statistics.mean(batch_sizes) if batch_sizes else 0.0)


def summary(latencies: list[float], elapsed: float, errors: int, mean_batch: float) -> dict:
    return {
        "sentences": len(latencies),
        "sentences_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "errors": errors,
        "mean_batch": mean_batch,
    }


def one_at_a_time(model_dir: Path, sentences: list[str], seconds: float, max_requests: int) -> dict:
    from seq2seq import Seq2Seq

    system = Seq2Seq.load(model_dir)
    for sentence in sentences[:20]:  # compile the shapes first, as the server's warm-up does
        system.translate([sentence])
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds and len(latencies) < max_requests:
        t = time.perf_counter()
        system.translate([sentences[len(latencies) % len(sentences)]])
        latencies.append(time.perf_counter() - t)
    return summary(latencies, time.perf_counter() - started, 0, 1.0)


def bare_decoder(model_dir: Path, sentences: list[str], batch: int, seconds: float, max_requests: int) -> dict:
    """`Seq2Seq.decode` of random batches of `batch` one-sentence groups, as the server's
    worker decodes a merged batch (its batch size cap, 64), without HTTP."""
    import random

    from seq2seq import Seq2Seq
    from seq2seq.decoding import DecodingOptions

    system, options, draw = Seq2Seq.load(model_dir), DecodingOptions(batch_size=64), random.Random(0)
    batches = [[[s] for s in draw.sample(sentences, batch)] for _ in range(200)]
    for groups in batches:  # compile every shape first, as the server's warm-up does
        system.decode(groups, options)
    latencies, count = [], 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds and count < max_requests:
        t = time.perf_counter()
        system.decode(batches[len(latencies) % len(batches)], options)
        latencies.append(time.perf_counter() - t)
        count += batch
    elapsed = time.perf_counter() - started
    return {**summary(latencies, elapsed, 0, float(batch)), "sentences": count, "sentences_per_s": count / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="a trained model (default: the default configuration)")
    parser.add_argument("--train-minutes", type=float, default=6.0, help="training of the default model")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement")
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound on requests per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    started = time.time()
    work = ROOT / "runs" / "bench-serve"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or work / f"default-{args.train_minutes:g}min"
    if args.model_dir is None and not (model_dir / "model.keras").is_file():
        train_default(model_dir, args.train_minutes)
    test = (model_dir / "split" / "test.tsv").read_text(encoding="utf-8").splitlines()
    sentences = [line.split("\t")[0] for line in test if line.strip()][:500]

    rows, memory = {}, {}
    for name, window in (("batching on", args.window_ms), ("batching off (window 0)", 0.0)):
        process, url, _ = start_server(model_dir, window, work / f"serve-{window:g}.log")
        try:
            asyncio.run(load(url, sentences, args.clients, min(3.0, args.seconds), args.max_requests))  # warm
            before, server_cpu, own_cpu = rss_mib(process.pid), cpu_seconds(process.pid), time.process_time()
            rows[name] = asyncio.run(load(url, sentences, args.clients, args.seconds, args.max_requests))
            after, served = rss_mib(process.pid), max(rows[name]["sentences"], 1)
            rows[name]["server_cpu_ms_per_request"] = 1000 * (cpu_seconds(process.pid) - server_cpu) / served
            rows[name]["client_cpu_ms_per_request"] = 1000 * (time.process_time() - own_cpu) / served
            if window:
                memory = {"rss_after_warmup_mib": before, "rss_after_run_mib": after}
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(120)
        print(f"{name}: {rows[name]}", file=sys.stderr)
    rows["one at a time (Seq2Seq.translate loop)"] = single = one_at_a_time(
        model_dir, sentences, args.seconds, args.max_requests
    )

    on = rows["batching on"]
    rows["bare decoder (Seq2Seq.decode, server's mean batch)"] = bare = bare_decoder(
        model_dir, sentences, max(1, round(on["mean_batch"])), args.seconds, args.max_requests
    )
    single_ms = single["p50_ms"]
    checks = {
        "speedup_vs_one_at_a_time": on["sentences_per_s"] / single["sentences_per_s"],
        "speedup_at_least_10x": on["sentences_per_s"] >= 10 * single["sentences_per_s"],
        "p99_within_2x_single_plus_window": on["p99_ms"] <= 2 * single_ms + args.window_ms,
        "zero_errors": on["errors"] == 0,
        "rss_within_10_percent": abs(memory["rss_after_run_mib"] / memory["rss_after_warmup_mib"] - 1) <= 0.10,
        "share_of_bare_decoder": on["sentences_per_s"] / bare["sentences_per_s"],
    }
    lines = [
        f"{cpu_name()}; {args.clients} concurrent clients, one sentence per request, {args.seconds:g} s each, loopback",
        "",
        "| serving | sentences/s | p50 ms | p99 ms | errors | mean batch | server CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['sentences_per_s']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['errors']} | {row['mean_batch']:.1f} | {row.get('server_cpu_ms_per_request', float('nan')):.2f} |"
        )
    lines += [
        "",
        f"RSS after warm-up {memory['rss_after_warmup_mib']:.0f} MiB, "
        f"after the run {memory['rss_after_run_mib']:.0f} MiB; "
        f"{checks['speedup_vs_one_at_a_time']:.1f}x one at a time, "
        f"{100 * checks['share_of_bare_decoder']:.0f}% of the bare decoder at the same batch size",
    ]
    print("\n".join(lines))
    cpu = cpu_name()
    with_model = {"model_dir": str(model_dir), "clients": args.clients, "seconds": args.seconds}
    result = {**with_model, "window_ms": args.window_ms, "cpu": cpu, "cores": os.cpu_count()}
    result |= {"rows": rows, "memory": memory, "checks": checks}
    result["run"] = run_stamp(started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
