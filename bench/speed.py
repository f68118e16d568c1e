"""One speed or memory measurement, run in its own process, printed as one JSON line.

    python bench/speed.py peak
    python bench/speed.py train  --impl textbook|seq2seq --level char|word --pairs N [--batches K]
    python bench/speed.py decode --impl textbook|seq2seq [--beam K] [--sentences N]
    python bench/speed.py quality-time --impl textbook|seq2seq

`bench/run.py` runs them all, in separate processes (so each reports its own peak
memory), on the same data, and prints the table. Data: the first lines of spa-eng (the
textbook's setting: the corpus is sorted by length), split by source sentence into the
training pairs and ~1,000 held-out pairs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

import seq2seq  # noqa: F401  (sets the default backend before Keras is imported)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "spa-eng" / "spa.txt"
HELD_OUT = 1000
LATENT, BATCH = 256, 64


def load_textbook():
    spec = importlib.util.spec_from_file_location("textbook", ROOT / "bench" / "textbook.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["textbook"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def bench_split(pairs: int):
    """The first `pairs` + ~1,000 lines, split by source: (train pairs, held-out pairs)."""
    from seq2seq.data import read_pairs, split_by_source

    lines = read_pairs(CORPUS)[: pairs + HELD_OUT]
    split = split_by_source(lines, dev_fraction=0.0, test_fraction=HELD_OUT / len(lines), seed=0)
    return split.train[:pairs], split.test[:HELD_OUT]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(**values) -> None:
    import keras

    print(json.dumps({**values, "backend": keras.backend.backend(), "peak_rss_mb": round(peak_rss_mb())}))


# --- useful arithmetic, counted from the model's shapes (padding not counted) -----------


def lstm_step_flops(inputs: int, units: int, lookup: bool) -> int:
    """Multiply-adds x 2 of one LSTM step: h @ U, plus x @ W unless x is one-hot (a lookup)."""
    return 2 * units * 4 * units + (0 if lookup else 2 * inputs * 4 * units)


def training_flops(source_tokens: int, target_tokens: int, target_vocab: int, units: int = LATENT) -> int:
    """Forward and backward (3 x forward) arithmetic of the textbook model on real tokens."""
    step = lstm_step_flops(0, units, lookup=True)
    forward = source_tokens * step + target_tokens * (step + 2 * units * target_vocab)
    return 3 * forward


# --- measurements ---------------------------------------------------------------------


def matmul_gflops(dtype: str) -> float:
    """Best square matrix-multiply throughput of this machine in `dtype`, as JAX/XLA runs it."""
    import jax
    import jax.numpy as jnp

    best = 0.0
    # float32 results, as a bfloat16 CPU kernel (vdpbf16ps) accumulates
    multiply = jax.jit(lambda x, y: jax.lax.dot(x, y, preferred_element_type=jnp.float32))
    for n in (1024, 2048, 4096):
        a = jnp.ones((n, n), dtype)
        multiply(a, a).block_until_ready()
        for _ in range(5):
            start = time.perf_counter()
            multiply(a, a).block_until_ready()
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best / 1e9


def measure_peak(args) -> None:
    """The float32 matrix-multiply peak (the reference for useful FLOP/s), and bfloat16's
    for comparison (AVX-512 BF16 CPUs can run it at twice the rate, if the compiler does)."""
    report(
        measurement="matmul peak",
        gflops=round(matmul_gflops("float32"), 1),
        **({} if args.float32_only else {"bfloat16_gflops": round(matmul_gflops("bfloat16"), 1)}),
    )


def measure_train(args) -> None:
    """Steady-state training throughput: one untimed pass over the measured batches (the
    backend compiles), then `--epochs` timed passes over the same batches."""
    train, _ = bench_split(args.pairs)
    if args.impl == "textbook":
        result = _train_textbook(train, args)
    else:
        result = _train_seq2seq(train, args)
    report(measurement="train", impl=args.impl, level=args.level, pairs=len(train), **result)


def _train_textbook(train, args) -> dict:
    textbook = load_textbook()
    started = time.perf_counter()
    data = textbook.vectorize([(p.source, p.target) for p in train], args.level)
    vectorize_seconds = time.perf_counter() - started
    model = textbook.build_model(data.num_encoder_tokens, data.num_decoder_tokens, LATENT)
    rows = len(train) if args.batches is None else min(len(train), args.batches * BATCH)
    x = [data.encoder_input_data[:rows], data.decoder_input_data[:rows]]
    y = data.decoder_target_data[:rows]
    fit = dict(batch_size=BATCH, verbose=0, shuffle=False)
    started = time.perf_counter()
    model.fit(x, y, epochs=1, **fit)
    first = time.perf_counter() - started
    started = time.perf_counter()
    model.fit(x, y, epochs=args.epochs, **fit)
    seconds = (time.perf_counter() - started) / args.epochs
    measured = [
        (len(textbook.tokenize(p.source, args.level)), len(textbook.tokenize(p.target, args.level)) + 1)
        for p in train[:rows]
    ]
    source_tokens, target_tokens = map(sum, zip(*measured, strict=True))
    executed = (
        3
        * rows
        * (
            data.max_encoder_seq_length * (2 * data.num_encoder_tokens * 4 * LATENT + 2 * LATENT * 4 * LATENT)
            + data.max_decoder_seq_length
            * (
                2 * data.num_decoder_tokens * 4 * LATENT
                + 2 * LATENT * 4 * LATENT
                + 2 * LATENT * data.num_decoder_tokens
            )
        )
    )
    return dict(
        measured_pairs=rows,
        batches=-(-rows // BATCH),
        source_vocab=data.num_encoder_tokens,
        target_vocab=data.num_decoder_tokens,
        array_mb=round(
            textbook.array_bytes(
                len(train),
                data.max_encoder_seq_length,
                data.max_decoder_seq_length,
                data.num_encoder_tokens,
                data.num_decoder_tokens,
            )
            / 2**20
        ),
        vectorize_seconds=round(vectorize_seconds, 2),
        first_epoch_seconds=round(first, 2),
        epoch_seconds=round(seconds, 3),
        real_target_tokens_per_s=round(target_tokens / seconds),
        useful_gflops=round(training_flops(source_tokens, target_tokens, data.num_decoder_tokens) / seconds / 1e9, 1),
        executed_gflops=round(executed / seconds / 1e9, 1),
    )


def _seq2seq_system(train, level: str, **settings):
    """The textbook's model (one-hot inputs, no attention), so both sides do the same work,
    with `settings` over it; built on all local devices with `data_parallel=True`.
    Returns (system, number of devices)."""
    from seq2seq.api import Seq2Seq
    from seq2seq.config import Config
    from seq2seq.model import build_model
    from seq2seq.training import compile_model, devices_for, fit_codecs, with_decoding_limits

    config = Config.textbook(**{"level": level, "latent_dim": LATENT, "batch_size": BATCH, **settings})
    source, target = fit_codecs(config, train)
    config = with_decoding_limits(config, source, target, train)  # as `seq2seq train` sets them
    scope, devices = devices_for(config)
    with scope:
        model = build_model(config, len(source), len(target))
        compile_model(model, config)
    return Seq2Seq(config, source, target, model), devices


def unroll_recurrent_loops(steps: int) -> None:
    """An experiment, before building it into the model: make Keras's JAX RNN loop run
    `steps` timesteps per iteration (`lax.scan(unroll=steps)`), which Keras does not expose."""
    import functools
    import types

    import jax
    from keras.src.backend.jax import rnn

    rnn.lax = types.SimpleNamespace(**{**vars(jax.lax), "scan": functools.partial(jax.lax.scan, unroll=steps)})


def _train_seq2seq(train, args) -> dict:
    import keras

    from seq2seq.batches import PairBatches
    from seq2seq.model import SOURCE_IDS

    keras.config.set_dtype_policy(args.dtype_policy)  # e.g. mixed_bfloat16: bf16 compute, float32 weights
    if args.scan_unroll > 1:
        unroll_recurrent_loops(args.scan_unroll)
    if args.keras_loop:  # the comparison for recurrence.py: Keras's own loop, differentiated by JAX
        from keras import layers

        from seq2seq.layers import ProjectedLSTM

        ProjectedLSTM.inner_loop = layers.RNN.inner_loop
    from seq2seq import row_sparse
    from seq2seq.model import Seq2SeqModel

    if args.dense_kernel_updates:  # the comparison for row_sparse.py: Keras's own train step
        Seq2SeqModel.LOOKUP_INPUTS = {}  # no kernel is row-sparse
    row_sparse_steps: list = []  # train steps traced on row_sparse.py's path
    sparse_step = row_sparse.train_step

    def counted_sparse_step(*step_args):
        row_sparse_steps.append(1)
        return sparse_step(*step_args)

    row_sparse.train_step = counted_sparse_step
    from seq2seq import recurrence

    native_loops: list = []  # LSTM loops traced on the C++ path (native.py)
    native_forward = recurrence._native_forward
    recurrence._native_forward = lambda *a: native_loops.append(1) or native_forward(*a)
    # with --data-parallel each batch is split across the local devices (XLA_FLAGS makes CPU ones)
    system, devices = _seq2seq_system(
        train,
        args.level,
        data_parallel=args.data_parallel,
        **({"optimizer": args.optimizer} if args.optimizer else {}),
    )
    measured = train if args.batches is None else train[: args.batches * BATCH]
    batches = PairBatches.from_pairs(
        system.source, system.target, measured, batch_size=BATCH, shuffle=False, row_multiple=devices
    )
    started = time.perf_counter()
    system.model.fit(batches, epochs=1, verbose=0, shuffle=False)
    first = time.perf_counter() - started
    started = time.perf_counter()
    system.model.fit(batches, epochs=args.epochs, verbose=0, shuffle=False)
    seconds = (time.perf_counter() - started) / args.epochs
    source_tokens = sum(len(source) for source in batches.sources)
    target_tokens = batches.real_tokens()
    sizes = [(inputs[SOURCE_IDS].size, targets.size) for inputs, targets in (batches[i] for i in range(len(batches)))]
    padded_sources, padded = (sum(column) for column in zip(*sizes, strict=True))
    return dict(
        measured_pairs=len(measured),
        batches=len(batches),
        source_vocab=len(system.source),
        target_vocab=len(system.target),
        devices=devices,
        dtype_policy=args.dtype_policy,
        scan_unroll=args.scan_unroll,
        loop="keras" if args.keras_loop else ("C++ (native.py)" if native_loops else "XLA (recurrence.py)"),
        input_kernel_updates="row-sparse" if row_sparse_steps else "dense",
        optimizer=system.config.optimizer,
        padding_share=round(1 - target_tokens / padded, 3),
        source_padding_share=round(1 - source_tokens / padded_sources, 3),
        first_epoch_seconds=round(first, 2),
        epoch_seconds=round(seconds, 3),
        real_target_tokens_per_s=round(target_tokens / seconds),
        useful_gflops=round(training_flops(source_tokens, target_tokens, len(system.target)) / seconds / 1e9, 1),
    )


def measure_decode(args) -> None:
    """Sentences per second on the held-out inputs, after training `--train-epochs` epochs
    (so outputs end as a trained model's do). The textbook: one predict() per step, batch
    of one; seq2seq: batched, compiled, greedy or beam search (after a first pass, the
    median of five).
    With `--trained DIR`, the models trained by a first measurement (on any backend) are
    saved there and loaded by the next ones, so every backend decodes the same model."""
    train, held_out = bench_split(args.pairs)
    sources = [p.source for p in held_out][: args.sentences]
    if args.impl == "textbook":
        result = _decode_textbook(train, sources, args)
    else:
        result = _decode_seq2seq(train, sources, args)
    report(measurement="decode", impl=args.impl, beam=args.beam, sentences=len(sources), **result)


def _decode_textbook(train, sources, args) -> dict:
    textbook = load_textbook()
    data = textbook.vectorize([(p.source, p.target) for p in train], "char")
    # Weights only: the recipe rebuilds its sampling models from fresh keras.Input layers,
    # whose generated names would clash with those of a loaded model's inputs.
    saved = Path(args.trained) / "textbook.weights.h5" if args.trained else None
    model = textbook.build_model(data.num_encoder_tokens, data.num_decoder_tokens, LATENT)
    if saved and saved.is_file():
        model.load_weights(saved)
    else:
        textbook.train(model, data, batch_size=BATCH, epochs=args.train_epochs, validation_split=0.0, verbose=0)
        if saved:
            saved.parent.mkdir(parents=True, exist_ok=True)
            model.save_weights(saved)
    encoder, decoder = textbook.inference_models(model, LATENT)
    inputs = textbook.encode_inputs(sources, data)
    textbook.decode_sequence(inputs[:1], encoder, decoder, data)  # first call builds the predict functions
    started = time.perf_counter()
    outputs = [textbook.decode_sequence(inputs[i : i + 1], encoder, decoder, data) for i in range(len(sources))]
    seconds = time.perf_counter() - started
    tokens = sum(len(o) + 1 for o in outputs)
    return dict(
        seconds=round(seconds, 2),
        sentences_per_s=round(len(sources) / seconds, 2),
        mean_output_tokens=round(tokens / len(sources), 1),
    )


def _decode_seq2seq(train, sources, args) -> dict:
    from seq2seq.api import Seq2Seq
    from seq2seq.batches import PairBatches
    from seq2seq.decoding import DecodingOptions

    saved = Path(args.trained) / "seq2seq" if args.trained else None
    if saved and (saved / "model.keras").is_file():
        system = Seq2Seq.load(saved)
    else:
        system, _ = _seq2seq_system(train, "char")
        batches = PairBatches.from_pairs(system.source, system.target, train, batch_size=BATCH)
        system.model.fit(batches, epochs=args.train_epochs, verbose=0, shuffle=False)
        if saved:
            system.save(saved)
    options = DecodingOptions(beam=args.beam, batch_size=args.decode_batch)
    source_ids = system.encode(sources)
    started = time.perf_counter()
    system.generate(source_ids, options)  # compiles each batch shape
    first = time.perf_counter() - started
    passes = []  # one pass takes ~0.2 s: the median of five
    for _ in range(5):
        started = time.perf_counter()
        outputs = system.generate(source_ids, options)
        passes.append(time.perf_counter() - started)
    seconds = sorted(passes)[len(passes) // 2]
    output_tokens = sum(len(n_best[0][0]) for n_best in outputs)
    source_tokens = sum(len(s) for s in source_ids)
    step = lstm_step_flops(0, LATENT, lookup=True)
    useful = source_tokens * step + output_tokens * (step + 2 * LATENT * len(system.target))
    return dict(
        seconds=round(seconds, 3),
        first_pass_seconds=round(first, 2),
        sentences_per_s=round(len(sources) / seconds, 1),
        mean_output_tokens=round(output_tokens / len(sources), 1),
        decode_batch=args.decode_batch,
        # greedy only: a beam's arithmetic is K rows per step, not one per output token
        useful_gflops=round(useful / seconds / 1e9, 1) if args.beam == 1 else None,
    )


def measure_quality_time(args) -> None:
    """Dev chrF after every epoch against training time (decoding for the score not
    counted), on the held-out pairs' first `--dev` sentences."""
    from seq2seq.evaluation import score

    train, held_out = bench_split(args.pairs)
    dev = held_out[: args.dev]
    curve = []
    trained = 0.0
    if args.impl == "textbook":
        textbook = load_textbook()
        data = textbook.vectorize([(p.source, p.target) for p in train], "char")
        model = textbook.build_model(data.num_encoder_tokens, data.num_decoder_tokens, LATENT)
        inputs = textbook.encode_inputs([p.source for p in dev], data)
        for epoch in range(args.epochs):
            started = time.perf_counter()
            textbook.train(model, data, batch_size=BATCH, epochs=1, validation_split=0.0, verbose=0)
            trained += time.perf_counter() - started
            encoder, decoder = textbook.inference_models(model, LATENT)
            outputs = [textbook.decode_sequence(inputs[i : i + 1], encoder, decoder, data) for i in range(len(dev))]
            curve.append((epoch + 1, round(trained, 2), round(score(outputs, [p.target for p in dev]).chrf, 2)))
            if trained > args.minutes * 60:
                break
    else:
        from seq2seq.batches import PairBatches

        system, _ = _seq2seq_system(
            train,
            args.level,
            input="embedding",
            attention="luong",
            bidirectional=True,
            optimizer="adam",  # our default; the textbook preset's RMSprop is for like-for-like speed
            learning_rate=3e-3,
        )
        batches = PairBatches.from_pairs(system.source, system.target, train, batch_size=BATCH)
        for epoch in range(args.epochs):
            started = time.perf_counter()
            system.model.fit(batches, epochs=1, verbose=0, shuffle=False)
            trained += time.perf_counter() - started
            outputs = system.translate([p.source for p in dev])
            chrf = score(outputs, [p.target for p in dev]).chrf
            curve.append((epoch + 1, round(trained, 2), round(chrf, 2)))
            if (args.target is not None and chrf >= args.target) or trained > args.minutes * 60:
                break
    report(measurement="quality-time", impl=args.impl, pairs=len(train), dev=len(dev), curve=curve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["peak", "train", "decode", "quality-time"])
    parser.add_argument("--impl", choices=["textbook", "seq2seq"], default="seq2seq")
    parser.add_argument("--level", choices=["char", "word"], default="char")
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--batches", type=int, help="measure on the first K batches only")
    parser.add_argument("--epochs", type=int, default=2, help="timed passes (train) or most epochs (quality-time)")
    parser.add_argument("--data-parallel", action="store_true", help="train: split batches across local devices")
    parser.add_argument("--dtype-policy", default="float32", help="train (seq2seq): Keras dtype policy")
    parser.add_argument("--scan-unroll", type=int, default=1, help="train (seq2seq, JAX): timesteps per loop iteration")
    parser.add_argument("--keras-loop", action="store_true", help="train (seq2seq, JAX): Keras's RNN loop instead")
    parser.add_argument("--optimizer", help="train (seq2seq): instead of the textbook's RMSprop")
    parser.add_argument(
        "--dense-kernel-updates", action="store_true", help="train (seq2seq, JAX): Keras's step, not row_sparse.py's"
    )
    parser.add_argument("--float32-only", action="store_true", help="peak: without the bfloat16 measurement")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--sentences", type=int, default=HELD_OUT)
    parser.add_argument("--train-epochs", type=int, default=5, help="training before decoding")
    parser.add_argument(
        "--trained", help="decode: directory of the trained models (trained and saved there if missing)"
    )
    parser.add_argument("--decode-batch", type=int, default=256)
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--target", type=float, help="quality-time: stop at this dev chrF")
    args = parser.parse_args()
    if not CORPUS.is_file():
        sys.exit(f"{CORPUS} not found (see ../shared/README.md)")
    {"peak": measure_peak, "train": measure_train, "decode": measure_decode, "quality-time": measure_quality_time}[
        args.what
    ](args)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
