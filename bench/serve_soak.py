"""Memory soak of `seq2seq serve` on loopback: K clients send a mix of requests for T
seconds while the server's resident memory is sampled.

    python bench/serve_soak.py [--model-dir DIR] [--clients 8] [--seconds 60] [--warmup-s 10]

The mix: good requests (one text, a list), beam search with n_best, attention with tokens
(tokens alone for a model without attention), sampling with a few fixed settings,
LibreTranslate's /translate, invalid requests (a wrong type, a text past max_chars,
malformed JSON), bodies past max_body_bytes, and GETs of /v1/info and /healthz. Each kind
that decodes goes once for each text first, then the mix runs for --warmup-s (every shape
compiles then); the server's RSS (VmRSS in /proc/PID/status) is read after it and every
--sample-every-s seconds. Exits 1 if the RSS grew more than 10% after the warm-up, if any
answer had a status its kind does not allow, or if the server stopped answering. Without
--model-dir it trains a tiny word-level model on the built-in corpus builtin:numbers-en-es
(nothing downloaded; about a minute). Loopback only; the load is bounded by --seconds and --max-requests.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MAX_GROWTH = 0.10  # of the RSS after warm-up
FALLBACK_TEXTS = ["one", "two hundred", "forty five", "three thousand and six", "ninety", "seven"]
DECODING = {200, 429}  # a request that decodes: answered, or refused while the queue is full
# kind: the statuses it may be answered with ("closed": the server answered 413 and closed
# the connection before the client had sent the body, as it may for a large one)
ALLOWED = {
    "good": DECODING,
    "list": DECODING,
    "beam": DECODING,
    "attention": DECODING,
    "sample": DECODING,
    "libre": DECODING,
    "invalid": {422},
    "too_long": {422},
    "malformed": {400},
    "oversized": {413, "closed"},
    "info": {200},
    "healthz": {200},
}
MIX = ["good", "good", "good", "list", "beam", "attention", "sample", "libre", "invalid", "too_long"]
MIX += ["malformed", "oversized", "info", "healthz"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def request_of(kind: str, number: int, texts: list[str], info: dict) -> tuple[str, str, dict]:
    """(method, path, httpx keyword arguments) of request `number` of `kind`."""
    text = texts[number % len(texts)]
    limits = info["limits"]
    if kind == "good":
        return "POST", "/v1/translate", {"json": {"q": text}}
    if kind == "list":
        return "POST", "/v1/translate", {"json": {"q": [text, texts[(number + 1) % len(texts)], ""]}}
    if kind == "beam":
        beam = min(4, limits["max_beam"])
        return "POST", "/v1/translate", {"json": {"q": text, "beam": beam, "n_best": min(beam, limits["max_n_best"])}}
    if kind == "attention":
        asked = {"return_attention": True} if info["attention"] else {"return_tokens": True}
        return "POST", "/v1/translate", {"json": {"q": text, **asked}}
    if kind == "sample":  # settings are inputs of one compiled sampler: any number may come
        temperature = round(0.5 + (number % 20) / 10, 1)
        return "POST", "/v1/translate", {"json": {"q": text, "sample": {"temperature": temperature, "seed": number}}}
    if kind == "libre":
        body = {"q": text, "source": "auto", "target": info["languages"]["target"]}
        return "POST", "/translate", {"json": body}
    if kind == "invalid":
        return "POST", "/v1/translate", {"json": random.Random(number).choice([{"q": 5}, {"q": "a", "beam": 0}, {}])}
    if kind == "too_long":
        return "POST", "/v1/translate", {"json": {"q": "a" * (limits["max_chars"] + 1)}}
    if kind == "malformed":
        return "POST", "/v1/translate", {"content": b'{"q": "ab', "headers": {"content-type": "application/json"}}
    if kind == "oversized":
        content = b'{"q": "' + b"a" * limits["max_body_bytes"] + b'"}'
        return "POST", "/v1/translate", {"content": content, "headers": {"content-type": "application/json"}}
    if kind == "info":
        return "GET", "/v1/info", {}
    return "GET", "/healthz", {}


async def run_mix(
    client: httpx.AsyncClient, texts: list[str], info: dict, clients: int, seconds: float, max_requests: int
) -> dict:
    """`clients` loops sending the mix until `seconds` pass or `max_requests` are sent."""
    sent: collections.Counter = collections.Counter()
    outcomes: collections.Counter = collections.Counter()
    unexpected: collections.Counter = collections.Counter()
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def one_client(offset: int) -> None:
        number = offset
        while time.monotonic() < stop and sum(sent.values()) < max_requests:
            kind = MIX[number % len(MIX)]
            method, path, arguments = request_of(kind, number, texts, info)
            started = time.perf_counter()
            try:
                outcome: int | str = (await client.request(method, path, **arguments)).status_code
            except httpx.TransportError as error:
                outcome = "closed" if kind == "oversized" else type(error).__name__
            latencies.append(time.perf_counter() - started)
            sent[kind] += 1
            outcomes[kind, outcome] += 1
            if outcome not in ALLOWED[kind]:
                unexpected[f"{kind} {outcome}"] += 1
            number += clients

    await asyncio.gather(*(one_client(n) for n in range(clients)))
    return {"sent": sent, "outcomes": outcomes, "unexpected": unexpected, "latencies": latencies}


async def warm(client: httpx.AsyncClient, texts: list[str], info: dict, clients: int, max_requests: int) -> None:
    """Each kind that decodes once for each text (up to `max_requests`), `clients` at a
    time: what compiles for a text's length and a kind compiles now."""
    gate = asyncio.Semaphore(clients)
    kinds = [kind for kind, allowed in ALLOWED.items() if allowed == DECODING]

    async def one(number: int, kind: str) -> None:
        async with gate:
            method, path, arguments = request_of(kind, number, texts, info)
            await client.request(method, path, **arguments)

    jobs = [(number, kind) for number in range(len(texts)) for kind in kinds][:max_requests]
    await asyncio.gather(*(one(number, kind) for number, kind in jobs))


async def soak(
    url: str,
    pid: int,
    clients: int = 8,
    seconds: float = 60.0,
    warmup_s: float = 10.0,
    sample_every_s: float = 5.0,
    max_requests: int = 200_000,
    texts: list[str] | None = None,
) -> dict:
    """Each kind that decodes for each text, the mix for `warmup_s`, then the mix for
    `seconds` with the RSS of process `pid` read every `sample_every_s`; returns the report
    (growth: the last reading over the first, less 1)."""
    texts = texts or FALLBACK_TEXTS
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        info = (await client.get("/v1/info")).raise_for_status().json()
        await warm(client, texts, info, clients, max_requests)
        await run_mix(client, texts, info, clients, warmup_s, max_requests)
        samples = [(0.0, rss_mib(pid))]
        started = time.monotonic()

        async def sample() -> None:
            while True:
                await asyncio.sleep(sample_every_s)
                samples.append((round(time.monotonic() - started, 2), rss_mib(pid)))

        sampler = asyncio.create_task(sample())
        try:
            result = await run_mix(client, texts, info, clients, seconds, max_requests)
        finally:
            sampler.cancel()
        samples.append((round(time.monotonic() - started, 2), rss_mib(pid)))
        alive = (await client.get("/healthz")).status_code == 200
    baseline, last = samples[0][1], samples[-1][1]
    latencies = sorted(result["latencies"])
    return {
        "clients": clients,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "requests": sum(result["sent"].values()),
        "kinds": dict(result["sent"]),
        "outcomes": {f"{kind} {outcome}": n for (kind, outcome), n in sorted(result["outcomes"].items(), key=str)},
        "unexpected": dict(result["unexpected"]),
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
        "rss_mib": [(t, round(m, 1)) for t, m in samples],
        "rss_after_warmup_mib": round(baseline, 1),
        "rss_peak_mib": round(max(m for _, m in samples), 1),
        "growth": round(last / baseline - 1, 4),
        "alive": alive,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_tiny(model_dir: Path) -> None:
    command = [sys.executable, "-m", "seq2seq.cli", "train", "--data", "builtin:numbers-en-es"]
    command += ["--num-samples", "2000", "--level", "word", "--epochs", "3", "--latent-dim", "64"]
    command += ["--embedding-dim", "32", "--dev-bleu-sentences", "0", "--stop-metric", "loss"]
    command += ["--model-dir", str(model_dir), "--quiet", "--overwrite"]
    subprocess.run(command, check=True)


def start_server(model_dir: Path, options: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "seq2seq.cli", "serve", "--model-dir", str(model_dir), "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, *options], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"seq2seq serve exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("seq2seq serve was not ready in 10 minutes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="a trained model (default: train a tiny one)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured soak")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="the mix before the first reading")
    parser.add_argument("--sample-every-s", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound on requests per phase")
    parser.add_argument("--serve-options", default="", help="more `seq2seq serve` options, one string")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args(argv)

    work = ROOT / "runs" / "bench-serve-soak"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or work / "model"
    if args.model_dir is None and not (model_dir / "model.keras").is_file():
        train_tiny(model_dir)
    test = model_dir / "split" / "test.tsv"
    lines = test.read_text(encoding="utf-8").splitlines() if test.is_file() else []
    texts = [line.split("\t")[0] for line in lines if line.strip()][:200] or FALLBACK_TEXTS

    process, url = start_server(model_dir, ["--max-batch-sentences", "16", *args.serve_options.split()], work / "log")
    try:
        phases = dict(seconds=args.seconds, warmup_s=args.warmup_s, sample_every_s=args.sample_every_s, texts=texts)
        report = asyncio.run(soak(url, process.pid, args.clients, max_requests=args.max_requests, **phases))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    failed = []
    if report["growth"] > MAX_GROWTH:
        failed.append(f"RSS grew {100 * report['growth']:.1f}% after warm-up (at most {100 * MAX_GROWTH:g}%)")
    if report["unexpected"]:
        failed.append(f"answers no kind allows: {report['unexpected']}")
    if not report["alive"]:
        failed.append("the server stopped answering /healthz")
    print(json.dumps(report, indent=2))
    print(
        f"{report['requests']} requests from {args.clients} clients in {args.seconds:g} s; RSS "
        f"{report['rss_after_warmup_mib']:.0f} MiB after warm-up, peak {report['rss_peak_mib']:.0f} MiB, "
        f"growth {100 * report['growth']:+.1f}%",
        file=sys.stderr,
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
