"""The default configuration (`Config()`) against a PyTorch peer of the same model
(bench/torch_peer.py): training and decoding speed, memory and time to quality on spa-eng.

    python bench/default.py prepare [--reverse] [--work DIR]     # split, codecs, batch order (cached)
    python bench/default.py train  --impl seq2seq|torch [--batches N] [--passes P]
    python bench/default.py fit-model [--batches N]             # ours, trained a little, for decoding
    python bench/default.py decode --impl seq2seq|torch [--beam K] [--sentences N] [--model-batches N]
    python bench/default.py quality-time --impl seq2seq|torch --reverse --minutes M [--eval-every K]
    python bench/default.py run [--quick]                       # all but quality-time, both sides: a table
    python bench/default.py quality [--quick] [--minutes M]     # quality-time, both sides, spa->eng

Every measurement but `run` and `quality` runs in its own process and prints one JSON
line (peak memory is the process's own); `run` and `quality` start them in subprocesses
and print a Markdown table of ratios, ours / torch (`run` measures training and decoding
three times per side, in turns, and keeps each side's median run). Both sides read the
same data: the pairs split by source sentence (`split_by_source`, the `Config()`
fractions), the same SentencePiece codecs (`training.fit_codecs`, fitted once by
`prepare`), and the same batches: `prepare` writes the order of PairBatches' batches,
and the peer pads the very same id arrays from it (`prepare` checks they are equal).
Decoding measures one model on both sides: ours, trained for a few hundred batches (so
outputs end), its weights copied into the peer, so the outputs should agree (`run`
reports the share that does). The peer's process never imports Keras or JAX, nor ours
torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from run_info import cpu_name, run_stamp

import seq2seq  # noqa: F401  (sets the default backend before Keras is imported)
from seq2seq.config import Config
from seq2seq.data import Pair, Split, normalize
from seq2seq.vocab import END_ID, PAD_ID, START_ID, Codec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
CORPUS = ROOT.parent / "shared" / "data" / "spa-eng" / "spa.txt"
WORK = Path(tempfile.gettempdir()) / "seq2seq-bench-default"
HELD_OUT = 1000  # decoding inputs, from the test split
DECODE_BATCH = 64  # `seq2seq translate --batch-size`'s default
BLEU_TARGET = 30.0
TIME_RATIO_TARGET = 0.4  # issue 20: time to BLEU_TARGET at most 0.4 of the peer's
RESULTS = ROOT / "bench" / "results" / "default"  # one file per CPU: its latest run and quality rows
FILES = ("config.json", "source_vocab.json", "target_vocab.json", "ids.npz", "prepared.json")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(**values) -> None:
    print(json.dumps({**values, "peak_rss_mb": round(peak_rss_mb())}), flush=True)


def work_dir(args) -> Path:
    return Path(args.work) if args.work else WORK / ("spa-eng" if args.reverse else "eng-spa")


# --- the shared data: prepared once, read by both sides ----------------------------------


def prepare(work: Path, reverse: bool, pairs: int | None, plan_epochs: int) -> None:
    """Split spa-eng, fit the codecs, and write the encoded pairs and `plan_epochs` epochs
    of PairBatches' batch order into `work` (kept: a second call with the same settings
    does nothing)."""
    from seq2seq.batches import BATCHES_PER_SHAPE, MAX_SHAPES

    settings = {
        "corpus": str(CORPUS),
        "reverse": reverse,
        "pairs": pairs,
        "plan_epochs": plan_epochs,
        # PairBatches' caps on shapes: a change to them prepares the batches again
        "max_shapes": MAX_SHAPES,
        "batches_per_shape": BATCHES_PER_SHAPE,
    }
    marker = work / "prepared.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["plan_epochs"] >= plan_epochs and {**done, "plan_epochs": plan_epochs} == settings:
            return
    from seq2seq.batches import PairBatches
    from seq2seq.data import load_pairs, split_by_source
    from seq2seq.training import fit_codecs, with_decoding_limits

    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    config = Config(data=str(CORPUS), reverse=reverse, num_samples=pairs)
    loaded = load_pairs(config.data, config.num_samples, reverse=config.reverse, seed=config.seed)
    split = split_by_source(loaded, config.dev_fraction, config.test_fraction, seed=config.seed)
    source, target = fit_codecs(config, split.train)
    config = with_decoding_limits(config, source, target, split.train)
    config.save(work / "config.json")
    source.save(work / "source_vocab.json")
    target.save(work / "target_vocab.json")
    split.save(work / "split")
    batches = PairBatches.from_pairs(
        source, target, split.train, batch_size=config.batch_size, seed=config.seed, latent_dim=config.latent_dim
    )
    targets = [t[:-1] for t in batches.decoder_targets]  # without the <end> teacher forcing added
    arrays = {**_ragged("source", batches.sources), **_ragged("target", targets)}
    for epoch in range(plan_epochs):
        if epoch:
            batches.on_epoch_end()
        arrays[f"rows_{epoch}"] = np.concatenate(batches.batches).astype("int32")
        arrays[f"counts_{epoch}"] = np.array([len(b) for b in batches.batches], dtype="int32")
        shapes = [batches.shape_of(b) for b in batches.batches]
        arrays[f"shapes_{epoch}"] = np.array([(s, t, batches.rows_for(t)) for s, t in shapes], dtype="int32")
    np.savez(work / "ids.npz", **arrays)
    # the peer's arrays are PairBatches' arrays (checked on the last epoch's first batches)
    data = SharedData.load(work)
    for index, (x, y) in enumerate(data.batches(plan_epochs - 1)):
        expected = batches[index]
        got = ({"source_ids": x, "decoder_input_ids": y[0]}, y[1])
        for ours, theirs in zip(
            (expected[0]["source_ids"], expected[0]["decoder_input_ids"], expected[1]),
            (got[0]["source_ids"], got[0]["decoder_input_ids"], got[1]),
            strict=True,
        ):
            if not np.array_equal(ours, theirs):
                raise AssertionError(f"batch {index}: the peer's arrays differ from PairBatches'")
        if index == 20:
            break
    marker.write_text(json.dumps(settings))
    print(
        f"prepared {work} in {time.perf_counter() - started:.0f} s: {len(split.train)} train, {len(split.dev)} dev, "
        f"{len(split.test)} test pairs; vocabularies {len(source)}, {len(target)}",
        file=sys.stderr,
    )


def _ragged(name: str, sequences) -> dict[str, np.ndarray]:
    lengths = np.array([len(s) for s in sequences], dtype="int64")
    flat = np.fromiter((i for s in sequences for i in s), dtype="int32", count=int(lengths.sum()))
    return {f"{name}_ids": flat, f"{name}_offsets": np.concatenate([[0], np.cumsum(lengths)])}


def _unragged(arrays, name: str) -> list[list[int]]:
    flat, offsets = arrays[f"{name}_ids"].tolist(), arrays[f"{name}_offsets"].tolist()
    return [flat[a:b] for a, b in itertools.pairwise(offsets)]


def _pad(sequences: list[list[int]], length: int) -> np.ndarray:
    out = np.full((len(sequences), length), PAD_ID, dtype="int32")
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


@dataclass
class SharedData:
    """What `prepare` wrote: settings, codecs, split, encoded training pairs, batch order."""

    work: Path
    config: Config
    source: Codec
    target: Codec
    split: Split
    sources: list[list[int]]
    targets: list[list[int]]
    plans: dict

    @classmethod
    def load(cls, work: Path) -> SharedData:
        arrays = np.load(work / "ids.npz")
        plans = {name: arrays[name] for name in arrays.files if name.startswith(("rows_", "counts_", "shapes_"))}
        return cls(
            work,
            Config.load(work / "config.json"),
            Codec.load(work / "source_vocab.json"),
            Codec.load(work / "target_vocab.json"),
            Split.load(work / "split"),
            _unragged(arrays, "source"),
            _unragged(arrays, "target"),
            plans,
        )

    @property
    def epochs(self) -> int:
        return sum(name.startswith("rows_") for name in self.plans)

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]:
        """PairBatches' batches of `epoch`, in order: source ids (B, S), (decoder input ids,
        decoder target ids) (B, T), padded with all-<pad> rows as PairBatches pads them."""
        rows, counts, shapes = (self.plans[f"{name}_{epoch}"] for name in ("rows", "counts", "shapes"))
        starts = np.concatenate([[0], np.cumsum(counts)])
        for index, (source_length, target_length, size) in enumerate(shapes.tolist()):
            chosen = rows[starts[index] : starts[index + 1]].tolist()
            filler: list[list[int]] = [[]] * (size - len(chosen))
            source = _pad([*(self.sources[i] for i in chosen), *filler], source_length)
            decoder_input = _pad([*([START_ID, *self.targets[i]] for i in chosen), *filler], target_length)
            decoder_target = _pad([*([*self.targets[i], END_ID] for i in chosen), *filler], target_length)
            yield source, (decoder_input, decoder_target)

    def batch_count(self, epoch: int = 0) -> int:
        return len(self.plans[f"counts_{epoch}"])

    def dev_sample(self, sentences: int) -> list[Pair]:
        """The dev pairs BLEU is measured on: a seeded sample, as training's DevScores takes it."""
        dev = self.split.dev
        return dev if len(dev) <= sentences else random.Random(self.config.seed).sample(dev, sentences)


def counted(decoder_targets: list[np.ndarray]) -> tuple[int, int, int]:
    """(real pairs, real target tokens, padded target positions) of these batches' targets."""
    pairs = sum(int((t != PAD_ID).any(axis=1).sum()) for t in decoder_targets)
    tokens = sum(int((t != PAD_ID).sum()) for t in decoder_targets)
    return pairs, tokens, sum(t.size for t in decoder_targets)


# --- ours ------------------------------------------------------------------------------


def our_model(data: SharedData):
    """The default model, built and compiled as `seq2seq train` builds it."""
    import keras

    from seq2seq.model import build_model
    from seq2seq.training import compile_model

    keras.utils.set_random_seed(data.config.seed)
    model = build_model(data.config, len(data.source), len(data.target))
    compile_model(model, data.config)
    return model


class OurBatches:
    """PairBatches as `seq2seq train` makes them (epoch 0), moved on an epoch at a time;
    `some` gives a PyDataset of some of an epoch's batches, for `fit`."""

    def __init__(self, data: SharedData) -> None:
        from seq2seq.batches import PairBatches

        config = data.config
        self.batches = PairBatches.from_pairs(
            data.source, data.target, data.split.train, batch_size=config.batch_size, seed=config.seed,
            latent_dim=config.latent_dim,
        )  # fmt: skip

    def at(self, epoch: int) -> None:
        """Move on to `epoch` (PairBatches reorders its batches at each epoch's end)."""
        while self.batches.epoch < epoch:
            self.batches.on_epoch_end()

    def some(self, epoch: int, indices: range):
        import keras

        self.at(epoch)
        batches = self.batches

        class Some(keras.utils.PyDataset):
            def __len__(self) -> int:
                return len(indices)

            def __getitem__(self, index: int):
                return batches[indices[index]]

        return Some()


def our_fit(model, batches) -> float:
    """One pass over `batches` with `fit` (and the callback `seq2seq train` uses to keep
    memory down); returns the mean loss."""
    from seq2seq.callbacks import ReleaseFreedMemory

    history = model.fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[ReleaseFreedMemory()])
    return float(history.history["loss"][-1])


# --- the measurements ----------------------------------------------------------------------


def measure_train(args) -> None:
    """Steady-state training: one untimed pass over the first `--batches` batches of epoch 0
    (ours compiles each batch shape), then `--passes` timed passes over the same batches."""
    data = SharedData.load(work_dir(args))
    count = min(args.batches, data.batch_count())
    targets = [y[1] for _, y in _take(data.batches(0), count)]
    pairs, tokens, padded = counted(targets)
    if args.impl == "seq2seq":
        model = our_model(data)
        batches = OurBatches(data).some(0, range(count))

        def one_pass() -> float:
            return our_fit(model, batches)

        from seq2seq import backend

        extra: dict = {"bf16_training": backend.bfloat16_training_logits()}
    else:
        import torch

        peer = make_peer(data, args.compile)
        trainer = _trainer(peer)

        def one_pass() -> float:
            losses = [trainer.train_step(x, *y) for x, y in _take(data.batches(0), count)]
            return float(np.mean(losses))

        extra = {"threads": torch.get_num_threads(), "torch_compile": args.compile}
    started = time.perf_counter()
    one_pass()
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.passes):
        loss = one_pass()
    seconds = (time.perf_counter() - started) / args.passes
    report(
        measurement="train",
        impl=args.impl,
        batches=count,
        pairs=pairs,
        real_target_tokens=tokens,
        padding_share=round(1 - tokens / padded, 3),
        first_pass_seconds=round(first, 2),
        pass_seconds=round(seconds, 3),
        pairs_per_s=round(pairs / seconds, 1),
        real_target_tokens_per_s=round(tokens / seconds),
        last_pass_loss=round(loss, 4),
        **extra,
        **versions(args.impl),
    )


def _take(iterator, count: int):
    for index, item in enumerate(iterator):
        if index == count:
            return
        yield item


def model_dir(work: Path, batches: int) -> Path:
    return work / f"model-{batches}"


def fit_model(args) -> None:
    """Ours, trained for `--batches` batches in the shared order, saved (with its weights
    by name, for the peer) for the decoding measurements."""
    from torch_peer import keras_weights

    from seq2seq.api import Seq2Seq

    data = SharedData.load(work_dir(args))
    model = our_model(data)
    batches = OurBatches(data)
    started, left, epoch = time.perf_counter(), args.batches, 0
    while left > 0:
        count = min(left, data.batch_count(epoch))
        loss = our_fit(model, batches.some(epoch, range(count)))
        left, epoch = left - count, epoch + 1
    target = model_dir(work_dir(args), args.batches)
    Seq2Seq(data.config, data.source, data.target, model).save(target)
    np.savez(target / "weights.npz", **keras_weights(model))
    report(measurement="fit-model", batches=args.batches, seconds=round(time.perf_counter() - started, 1), loss=loss)


def measure_decode(args) -> None:
    """Sentences per second, text to text, on the first `--sentences` test inputs, in batches
    of 64 sorted by length (as `seq2seq translate`): a first pass (ours compiles each batch
    shape), then the median of `--passes`. Writes the outputs beside the model."""
    work = work_dir(args)
    data = SharedData.load(work)
    trained = model_dir(work, args.model_batches)
    if not (trained / "weights.npz").is_file():
        command = [sys.executable, __file__, "fit-model", "--work", str(work), "--batches", str(args.model_batches)]
        subprocess.run(command, check=True, stdout=sys.stderr)
    texts = [p.source for p in data.split.test[: args.sentences]]
    extra: dict = {}
    if args.impl == "seq2seq":
        from seq2seq.api import Seq2Seq
        from seq2seq.decoding import DecodingOptions

        system = Seq2Seq.load(trained)
        extra["bf16_products"] = system.parts.bfloat16_products
        options = DecodingOptions(beam=args.beam, batch_size=DECODE_BATCH)

        def translate() -> list[list[int]]:
            generated = system.generate(system.encode(texts), options)  # what `translate` does, with the ids kept
            return [n_best[0][0] for n_best in generated]
    else:
        import torch
        from torch_peer import generate, load_keras_weights

        peer = make_peer(data, args.compile)
        load_keras_weights(peer, dict(np.load(trained / "weights.npz")))
        limit = data.config.max_length or 100

        def translate() -> list[list[int]]:
            ids = [data.source.encode(normalize(text)) for text in texts]
            return generate(peer, ids, limit, data.config.max_length_ratio, args.beam, DECODE_BATCH)

        extra = {"threads": torch.get_num_threads(), "torch_compile": args.compile}

    def text_to_text() -> tuple[list[list[int]], list[str]]:
        ids = translate()
        return ids, [data.target.decode(o) for o in ids]

    started = time.perf_counter()
    ids, outputs = text_to_text()
    first = time.perf_counter() - started
    passes = []
    for _ in range(args.passes):
        started = time.perf_counter()
        ids, outputs = text_to_text()
        passes.append(time.perf_counter() - started)
    seconds = statistics.median(passes)
    precision = "-bf16" if extra.get("bf16_products") else ""
    written = trained / f"outputs-{args.impl}-beam{args.beam}{precision}.txt"
    written.write_text("".join(f"{o}\n" for o in outputs), encoding="utf-8")
    report(
        measurement="decode",
        impl=args.impl,
        beam=args.beam,
        sentences=len(texts),
        batch_size=DECODE_BATCH,
        model_batches=args.model_batches,
        first_pass_seconds=round(first, 2),
        seconds=round(seconds, 3),
        sentences_per_s=round(len(texts) / seconds, 1),
        mean_output_tokens=round(sum(len(o) for o in ids) / len(texts), 1),  # <end> included
        outputs=str(written),
        **extra,
        **versions(args.impl),
    )


def measure_quality_time(args) -> None:
    """Train from scratch for `--minutes` (training time; the evaluations are not counted),
    scoring dev BLEU (greedy, sacrebleu, `--dev` sentences) every `--eval-every` batches
    and at each epoch's end; stop early at `--target`. The curve: (batches, seconds, BLEU)."""
    import sacrebleu

    data = SharedData.load(work_dir(args))
    dev = data.dev_sample(args.dev)
    references = [[p.target for p in dev]]
    if args.impl == "seq2seq":
        from seq2seq.api import Seq2Seq

        model = our_model(data)
        system = Seq2Seq(data.config, data.source, data.target, model)
        batches = OurBatches(data)

        def before(epoch: int) -> None:
            batches.at(epoch)  # reordering the batches is not counted: the peer's order was made by `prepare`

        def train(epoch: int, indices: range) -> None:
            our_fit(model, batches.some(epoch, indices))

        def translate() -> list[str]:
            return system.translate([p.source for p in dev])
    else:
        from torch_peer import generate

        peer = make_peer(data, args.compile)
        trainer = _trainer(peer)

        def before(epoch: int) -> None:
            pass

        def train(epoch: int, indices: range) -> None:
            for index, (x, y) in enumerate(data.batches(epoch)):
                if index >= indices.stop:
                    break
                if index >= indices.start:
                    trainer.train_step(x, *y)

        def translate() -> list[str]:
            ids = [data.source.encode(normalize(p.source)) for p in dev]
            outputs = generate(peer, ids, data.config.max_length or 100, data.config.max_length_ratio)
            return [data.target.decode(o) for o in outputs]

    curve: list[tuple[int, float, float]] = []
    trained, done, stop = 0.0, 0, False
    for epoch in range(data.epochs):
        total = data.batch_count(epoch)
        before(epoch)
        for start in range(0, total, args.eval_every):
            indices = range(start, min(start + args.eval_every, total))
            started = time.perf_counter()
            train(epoch, indices)  # the last chunk of an epoch may be short: it is scored at the epoch's end
            trained += time.perf_counter() - started
            done += len(indices)
            bleu = sacrebleu.metrics.BLEU().corpus_score(translate(), references).score
            curve.append((done, round(trained, 1), round(bleu, 2)))
            print(f"{args.impl}: {done} batches, {trained:.0f} s, dev BLEU {bleu:.2f}", file=sys.stderr, flush=True)
            if trained >= args.minutes * 60 or (args.target is not None and bleu >= args.target):
                stop = True
                break
        if stop:
            break
    report(
        measurement="quality-time",
        impl=args.impl,
        reverse=data.config.reverse,
        dev=len(dev),
        minutes=args.minutes,
        ran_out_of_batch_order=not stop,
        curve=curve,
        **versions(args.impl),
    )


def make_peer(data: SharedData, compile_step: bool):
    import torch
    from torch_peer import Peer, PeerConfig

    config = data.config
    torch.manual_seed(config.seed)
    peer = Peer(
        PeerConfig(
            len(data.source),
            len(data.target),
            config.embedding_dim,
            config.latent_dim,
            config.dropout,
            config.learning_rate,
            config.clip_norm,
            config.label_smoothing,
        )
    )
    if compile_step:
        peer.compile_step(dynamic=True)
    return peer


def _trainer(peer):
    from torch_peer import Trainer

    return Trainer(peer)


def versions(impl: str) -> dict:
    if impl == "torch":
        import torch

        return {"torch": torch.__version__}
    import jax
    import keras

    return {"keras": keras.__version__, "jax": jax.__version__, "backend": keras.backend.backend()}


# --- drivers: both sides in subprocesses, then a table ------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does (`run`'s full and --quick sizes)."""

    train_batches: int
    train_passes: int
    rounds: int  # training and decoding: measurements of each side, in turns (ours, the peer's, ...)
    model_batches: int
    sentences: int
    decode_passes: int


FULL = Sizes(train_batches=100, train_passes=1, rounds=3, model_batches=600, sentences=HELD_OUT, decode_passes=3)
QUICK = Sizes(train_batches=10, train_passes=1, rounds=1, model_batches=60, sentences=100, decode_passes=1)


def measure(
    *args: str,
    impl: str = "seq2seq",
    jax_cache: bool = False,
    huge_pages: bool = True,
    switches: dict[str, str] | None = None,
) -> dict:
    """Run one measurement of this file in its own process; its JSON line as a dict. Ours
    starts as the `seq2seq` command starts itself (glibc's huge-page tunable, launch.py),
    unless `huge_pages` is False; `switches` set environment variables (a lever's switch)."""
    from seq2seq.launch import huge_page_environment

    command = [sys.executable, __file__, *args, *(["--impl", impl] if args[0] in MEASUREMENTS else [])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("GLIBC_TUNABLES", None)
    env.update(switches or {})
    if impl == "seq2seq":
        if huge_pages:
            env = huge_page_environment(env) or env
        if not jax_cache:  # every measurement compiles, as a first run does
            env["SEQ2SEQ_JAX_CACHE"] = "off"
    print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
    output = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE, env=env).stdout
    result = json.loads(output.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def interleaved(results: dict, name: str, rounds: int, key: str, sides: dict[str, list[str]], jax_cache: bool) -> None:
    """Measure `name` (train, decode_beam1, ...) for each side `rounds` times, in turns,
    with each side's arguments; the run with the median `key` stands for the side, and
    every run's `key` is kept in NAME_SIDE_rounds. The machine's speed drifts by tens of
    percent over minutes, so one measurement of each side, minutes apart, gave ratios that
    swung (docs/performance.md)."""
    measurement = name.split("_")[0]
    runs: dict[str, list[dict]] = {impl: [] for impl in sides}
    for _ in range(rounds):
        for impl, arguments in sides.items():
            runs[impl].append(measure(measurement, *arguments, impl=impl, jax_cache=jax_cache))
    for impl, done in runs.items():
        results[f"{name}_{impl}"] = median_run(done, key)
        results[f"{name}_{impl}_rounds"] = [run[key] for run in done]


def median_run(runs: list[dict], key: str) -> dict:
    """The run whose `key` is the median (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda run: run[key])
    return ordered[(len(ordered) - 1) // 2]


def agreement(a: dict, b: dict) -> float:
    """Share of inputs whose outputs are the same text in two decode measurements."""
    first, second = (Path(r["outputs"]).read_text(encoding="utf-8").splitlines() for r in (a, b))
    return sum(x == y for x, y in zip(first, second, strict=True)) / len(first)


def default_rows(quick: bool, work: str | None = None, compile_peer: bool = False, jax_cache: bool = False) -> dict:
    """Every measurement but quality-time, for both sides (English -> Spanish): the results
    by name and their Markdown table under "table"."""
    if importlib.util.find_spec("torch") is None:
        sys.exit("the PyTorch peer needs torch: pip install -e '.[bench]'")
    sizes = QUICK if quick else FULL
    started = time.time()
    where = ["--work", str(work or WORK / "eng-spa")]
    measure("prepare", *where, impl="seq2seq", jax_cache=jax_cache)
    peer = ["--compile"] if compile_peer else []
    results: dict = {"sizes": vars(sizes), "quick": quick}
    train = [*where, "--batches", str(sizes.train_batches), "--passes", str(sizes.train_passes)]
    sides = {"seq2seq": train, "torch": [*train, *peer]}
    interleaved(results, "train", sizes.rounds, "pairs_per_s", sides, jax_cache)
    # the launcher's lever (launch.py), measured on the model users train
    results["train_seq2seq_small_pages"] = measure("train", *train, jax_cache=jax_cache, huge_pages=False)
    # training's bfloat16 output product (backend.bfloat16_training_logits), where the default turns it on
    if results["train_seq2seq"].get("bf16_training"):
        results["train_seq2seq_float32_logits"] = measure(
            "train", *train, jax_cache=jax_cache, switches={"SEQ2SEQ_BF16_TRAINING": "off"}
        )
    results["fit_model"] = measure("fit-model", *where, "--batches", str(sizes.model_batches), jax_cache=jax_cache)
    decode = [*where, "--model-batches", str(sizes.model_batches), "--sentences", str(sizes.sentences)]
    decode += ["--passes", str(sizes.decode_passes)]
    for beam in (1, 5):
        arguments = [*decode, "--beam", str(beam)]
        sides = {"seq2seq": arguments, "torch": [*arguments, *peer]}
        interleaved(results, f"decode_beam{beam}", sizes.rounds, "sentences_per_s", sides, jax_cache)
        results[f"decode_beam{beam}_agreement"] = agreement(
            results[f"decode_beam{beam}_seq2seq"], results[f"decode_beam{beam}_torch"]
        )
        # decoding's lever (backend.bfloat16_decoding), measured where the default turns it on
        if results[f"decode_beam{beam}_seq2seq"].get("bf16_products"):
            results[f"decode_beam{beam}_seq2seq_float32"] = measure(
                "decode", *decode, "--beam", str(beam), jax_cache=jax_cache, switches={"SEQ2SEQ_BF16_DECODING": "off"}
            )
    results["total_minutes"] = round((time.time() - started) / 60, 1)
    results["machine"] = cpu_name()
    results["table"] = table(results) + f"\n\n{results['machine']}; {results['total_minutes']} min in all"
    return results


def spread(r: dict, name: str) -> str:
    """ "; median of N interleaved runs: ours a, b, c; peer d, e, f", or "" for one run each."""
    rounds = len(r.get(f"{name}_seq2seq_rounds", []))
    if rounds < 2:
        return ""
    ours, peer = (", ".join(f"{x:,}" for x in r[f"{name}_{impl}_rounds"]) for impl in ("seq2seq", "torch"))
    return f"; median of {rounds} interleaved runs: ours {ours}; peer {peer}"


def table(r: dict) -> str:
    """Markdown rows: measurement, seq2seq, PyTorch, ours / torch."""
    peer = "PyTorch, torch.compile'd step" if r["train_torch"].get("torch_compile") else "PyTorch"
    rows = [f"| default configuration | seq2seq | {peer} | ours / torch |", "|---|---|---|---|"]

    def compare(label: str, ours: dict, theirs: dict, key: str, unit: str = "") -> None:
        rows.append(f"| {label} | {ours[key]:,}{unit} | {theirs[key]:,}{unit} | {ours[key] / theirs[key]:.2f}× |")

    ts, tt = r["train_seq2seq"], r["train_torch"]
    batches = f"{ts['batches']} batches of 64, {ts['padding_share']:.0%} padding"
    compare(f"training, pairs/s ({batches}){spread(r, 'train')}", ts, tt, "pairs_per_s")
    compare("training, real target tokens/s", ts, tt, "real_target_tokens_per_s")
    compare("training, first pass, compiling included (s; lower is better)", ts, tt, "first_pass_seconds")
    rows.append(f"| training, mean loss of the timed pass | {ts['last_pass_loss']} | {tt['last_pass_loss']} | |")
    if "train_seq2seq_small_pages" in r:
        small = r["train_seq2seq_small_pages"]["pairs_per_s"]
        rows.append(
            f"| training, pairs/s without glibc's huge-page tunable (which the `seq2seq` command sets: launch.py)"
            f" | {small:,} | | {small / ts['pairs_per_s']:.2f}× of ours with it |"
        )
    if "train_seq2seq_float32_logits" in r:
        exact = r["train_seq2seq_float32_logits"]
        rows.append(
            "| training, pairs/s with a float32 output product (the default here: bfloat16 forward, backend.py)"
            f" | {exact['pairs_per_s']:,} | | {exact['pairs_per_s'] / ts['pairs_per_s']:.2f}× of ours with it |"
        )
    for beam, name in ((1, "greedy"), (5, "beam-5")):
        ours, theirs = r[f"decode_beam{beam}_seq2seq"], r[f"decode_beam{beam}_torch"]
        label = f"{name} decoding, sentences/s ({ours['sentences']} held-out, batch {ours['batch_size']})"
        label += spread(r, f"decode_beam{beam}")
        compare(label, ours, theirs, "sentences_per_s")
        compare(
            f"{name} decoding, first pass, compiling included (s; lower is better)", ours, theirs, "first_pass_seconds"
        )
        share = r[f"decode_beam{beam}_agreement"]
        rows.append(f"| {name} outputs identical (same weights) | {share:.1%} | | |")
        levers = {  # results before 2026-12-07 measured the logits alone
            "float32": "float32 products (the default here: bfloat16 operands, backend.py)",
            "float32_logits": "float32 logits (the default here: bfloat16, backend.py)",
        }
        for suffix, what in levers.items():
            if f"decode_beam{beam}_seq2seq_{suffix}" in r:
                exact = r[f"decode_beam{beam}_seq2seq_{suffix}"]["sentences_per_s"]
                rows.append(
                    f"| {name} decoding, sentences/s with {what}"
                    f" | {exact:,} | | {exact / ours['sentences_per_s']:.2f}× of ours with them |"
                )
    compare("peak memory, training (MB)", ts, tt, "peak_rss_mb")
    compare("peak memory, greedy decoding (MB)", r["decode_beam1_seq2seq"], r["decode_beam1_torch"], "peak_rss_mb")
    compare("peak memory, beam-5 decoding (MB)", r["decode_beam5_seq2seq"], r["decode_beam5_torch"], "peak_rss_mb")
    if "quality_seq2seq" in r:
        rows += quality_rows(r)
    return "\n".join(rows)


def first_reaching(curve: list, target: float) -> list | None:
    """The first (batches, seconds, BLEU) point of a curve at or above `target`."""
    return next((point for point in curve if point[2] >= target), None)


def time_ratio(r: dict) -> str | None:
    """Ours / the peer's time to the BLEU target: "0.55", "< 0.35" where the peer stopped
    short of it (its time is longer than it trained), or None where ours did not reach it."""
    target = r.get("bleu_target", BLEU_TARGET)
    ours, theirs = (first_reaching(r[f"quality_{side}"]["curve"], target) for side in ("seq2seq", "torch"))
    if ours is None:
        return None
    if theirs is None:
        return f"< {ours[1] / r['quality_torch']['curve'][-1][1]:.2f}"
    return f"{ours[1] / theirs[1]:.2f}"


def quality_rows(r: dict) -> list[str]:
    ours, theirs = r["quality_seq2seq"], r["quality_torch"]
    target = r.get("bleu_target", BLEU_TARGET)
    cells = []
    for result in (ours, theirs):
        point = first_reaching(result["curve"], target)
        best = max(result["curve"], key=lambda p: p[2])
        cells.append(
            f"{point[1] / 60:.1f} min ({point[0]} batches)"
            if point
            else f"not reached in {result['curve'][-1][1] / 60:.1f} min (best {best[2]})"
        )
    ours_cell, theirs_cell = cells
    ratio = time_ratio(r)
    ratio = f"{ratio} of its time" if ratio else ""
    label = f"time to dev BLEU {target} (spa→eng, {ours['dev']} dev sentences, greedy; lower is better)"
    return [f"| {label} | {ours_cell} | {theirs_cell} | {ratio} |"]


def quality(args) -> dict:
    """quality-time for both sides, Spanish -> English, and the row of time to BLEU `--target`."""
    where = ["--work", str(work_dir(args))]
    measure("prepare", *where, "--reverse", "--plan-epochs", str(args.plan_epochs), jax_cache=args.jax_cache)
    common = [*where, "--eval-every", str(args.eval_every), "--dev", str(args.dev)]
    common += ["--target", str(args.target)]
    ours = measure("quality-time", *common, "--minutes", str(args.minutes), jax_cache=args.jax_cache)
    # The peer trains until the target or until it has trained long enough to decide the
    # issue's ratio (ours / theirs <= TIME_RATIO_TARGET), not the whole budget.
    reached = first_reaching(ours["curve"], args.target)
    peer_minutes = args.minutes if reached is None else min(args.minutes, reached[1] / TIME_RATIO_TARGET / 60 + 1)
    peer = ["--minutes", f"{peer_minutes:.1f}", *(["--compile"] if args.compile else [])]
    results = {
        "quality_seq2seq": ours,
        "quality_torch": measure("quality-time", *common, *peer, impl="torch"),
        "bleu_target": args.target,
    }
    results["table"] = "\n".join(
        ["| default configuration | seq2seq | PyTorch | ours / torch |", "|---|---|---|---|", *quality_rows(results)]
    )
    return results


MEASUREMENTS = {"train": measure_train, "decode": measure_decode, "quality-time": measure_quality_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["prepare", "fit-model", *MEASUREMENTS, "run", "quality"])
    parser.add_argument("--impl", choices=["seq2seq", "torch"], default="seq2seq")
    parser.add_argument("--work", help=f"directory of the shared data and models (default: under {WORK})")
    parser.add_argument("--reverse", action="store_true", help="Spanish -> English (the corpus is English<TAB>Spanish)")
    parser.add_argument("--pairs", type=int, help="prepare: a random sample of this many pairs (default: all)")
    parser.add_argument("--plan-epochs", type=int, default=1, help="prepare: epochs of batch order to write")
    parser.add_argument("--batches", type=int, default=FULL.train_batches, help="train, fit-model: batches")
    parser.add_argument("--passes", type=int, default=1, help="train, decode: timed passes")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--sentences", type=int, default=HELD_OUT)
    parser.add_argument("--model-batches", type=int, default=FULL.model_batches, help="decode: training of the model")
    parser.add_argument("--minutes", type=float, default=30, help="quality-time: training time")
    parser.add_argument("--eval-every", type=int, default=300, help="quality-time: batches between dev scores")
    parser.add_argument("--dev", type=int, default=300, help="quality-time: dev sentences scored")
    parser.add_argument("--target", type=float, help=f"quality-time: stop at this dev BLEU (quality: {BLEU_TARGET})")
    parser.add_argument("--compile", action="store_true", help="torch: the decoder step through torch.compile")
    parser.add_argument("--quick", action="store_true", help="run, quality: small sizes, to check that it runs")
    parser.add_argument("--jax-cache", action="store_true", help="run, quality: keep JAX's compilation cache on")
    parser.add_argument(
        "--results",
        nargs="?",
        const="",
        help="run, quality: also keep every measurement in this JSON file, beside the other command's "
        f"(without PATH: this CPU's file in {RESULTS.relative_to(ROOT)}/)",
    )
    args = parser.parse_args()
    if not CORPUS.is_file():
        sys.exit(f"{CORPUS} not found (see ../shared/README.md)")
    if args.what == "prepare":
        prepare(work_dir(args), args.reverse, args.pairs, args.plan_epochs)
        print(json.dumps({"measurement": "prepare", "work": str(work_dir(args))}))
        return
    if args.what == "fit-model":
        fit_model(args)
        return
    if args.what in MEASUREMENTS:
        MEASUREMENTS[args.what](args)
        return
    started = time.time()
    if args.what == "run":
        results = default_rows(args.quick, args.work, args.compile, args.jax_cache)
    else:
        args.reverse = True
        if args.quick:
            args.minutes, args.eval_every, args.dev = (
                min(args.minutes, 1.5),
                min(args.eval_every, 50),
                min(args.dev, 100),
            )
        args.target = BLEU_TARGET if args.target is None else args.target
        # enough batch order for the time, at a generous rate; a side that runs out says so
        args.plan_epochs = max(args.plan_epochs, 2 if args.quick else 1 + int(args.minutes // 2))
        results = quality(args)
    print(results["table"])
    if args.results is not None:
        results["run" if args.what == "run" else "quality_run"] = run_stamp(started) + f", `{shlex.join(sys.argv)}`"
        path = Path(args.results) if args.results else results_file(cpu_name())
        keep(results, path)
        print(f"kept in {path}", file=sys.stderr)


def results_file(cpu: str) -> Path:
    """This CPU's file in RESULTS: its name without the core count, in lower case and dashes."""
    name = cpu.rsplit(",", 1)[0].lower()
    return RESULTS / ("-".join("".join(c if c.isalnum() else " " for c in name).split()) + ".json")


QUALITY_KEYS = frozenset({"quality_seq2seq", "quality_torch", "bleu_target", "quality_run"})


def keep(results: dict, path: Path) -> None:
    """Write `results` into `path` in place of the same command's earlier results, keeping
    the other command's (`run` and `quality` fill one file), atomically. A key the earlier
    run wrote and this one did not (a row since renamed or not measured) goes."""
    kept = json.loads(path.read_text()) if path.is_file() else {}
    quality = bool(QUALITY_KEYS & results.keys())
    kept = {key: value for key, value in kept.items() if (key in QUALITY_KEYS) != quality}
    kept.update(results)
    kept["machine"] = cpu_name()
    kept.pop("table", None)  # bench/report.py makes it from the measurements
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(kept, indent=2) + "\n")
    partial.replace(path)


if __name__ == "__main__":
    main()
