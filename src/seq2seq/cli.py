"""The `seq2seq` command: train, translate, evaluate, data, serve."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .api import DEFAULT_MAX_SOURCE_TOKENS, LENGTH_MARGIN, SOURCE_CAP_FACTOR
from .config import Config, ConfigError, setting_types
from .data import BUILTIN_CORPORA, BUILTIN_PREFIX, DataError
from .decoding import DecodingOptions
from .errors import UserError
from .files import EVALUATION_FILE
from .sweep import parse_axes

# The values filled into the help texts of Config's fields (config.py holds the texts).
HELP_VALUES = {
    "builtins": ", ".join(BUILTIN_PREFIX + name for name in BUILTIN_CORPORA),
    "length_margin": LENGTH_MARGIN,
}
INTERNAL_FIELDS = {"versions"}


def add_config_options(parser: argparse.ArgumentParser, grid: bool = False) -> None:
    """One option per Config field: --latent-dim for latent_dim, flags for booleans. With
    `grid`, the sweep's knobs take comma-separated values (kept as text)."""
    from .sweep import KNOBS

    kinds = setting_types()
    for spec in dataclasses.fields(Config):
        if spec.name in INTERNAL_FIELDS:
            continue
        option = "--" + spec.name.replace("_", "-")
        kind = kinds[spec.name]
        text = spec.metadata["help"].format(**HELP_VALUES)
        if grid and spec.name in KNOBS:
            parser.add_argument(option, default=None, help=text + " (comma-separated values: a grid axis)")
            continue
        if kind is bool:  # --bidirectional / --no-bidirectional: some are on by default
            parser.add_argument(
                option,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text + f" (default: {'on' if spec.default else 'off'})",
            )
        else:
            default = f" (default: {spec.default})" if spec.default is not None else ""
            parser.add_argument(option, type=kind, default=None, help=text + default)


def add_textbook_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--textbook",
        action="store_true",
        help="the textbook's model: characters, one-hot, one layer, no attention, latent 256, batch 64, "
        "RMSprop (options given explicitly still apply)",
    )


def _config_names() -> set[str]:
    return {f.name for f in dataclasses.fields(Config)} - INTERNAL_FIELDS


def config_from_args(args: argparse.Namespace, given: dict | None = None) -> Config:
    """The settings given on the command line (or `given`), over the textbook's with --textbook."""
    if given is None:
        given = {name: getattr(args, name) for name in _config_names() if getattr(args, name) is not None}
    return (Config.textbook if getattr(args, "textbook", False) else Config)(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seq2seq", description=__doc__)
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error instead of one line (also: SEQ2SEQ_DEBUG=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a file of pairs")
    train.add_argument("--model-dir", required=True, type=Path, help="directory to write the model into")
    train.add_argument("--overwrite", action="store_true", help="replace a model already in --model-dir")
    train.add_argument(
        "--resume", action="store_true", help="continue the interrupted training in --model-dir (--epochs may raise it)"
    )
    train.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    add_textbook_option(train)
    add_config_options(train)

    translate = commands.add_parser("translate", help="generate output for input texts (arguments or stdin)")
    translate.add_argument("--model-dir", required=True, type=Path)
    translate.add_argument("text", nargs="*", help="input texts; without them, one per line from stdin (UTF-8)")
    translate.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first input that is not valid UTF-8 or is longer than --max-source-tokens, instead of "
        "warning (naming its line) and printing an empty line for it, or translating its first tokens",
    )
    add_source_limit_option(translate)
    add_decoding_options(translate)

    evaluate = commands.add_parser("evaluate", help="score a model on its held-out test split or a pair file")
    evaluate.add_argument("--model-dir", required=True, type=Path)
    evaluate.add_argument("--data", help="pair file to score on (default: the test split saved at training)")
    evaluate.add_argument("--output", type=Path, help="write the scores as JSON here (default: DIR/evaluation.json)")
    evaluate.add_argument("--examples", type=int, default=5, help="print this many examples (default: 5)")
    evaluate.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first malformed line, or source longer than --max-source-tokens, instead of skipping "
        "it or scoring on its first tokens (each with a warning)",
    )
    add_source_limit_option(evaluate)
    add_decoding_options(evaluate)

    sweep = commands.add_parser(
        "sweep", help="train every combination of several values of the knobs, then compare them"
    )
    sweep.add_argument("--model-dir", required=True, type=Path, help="directory of the sweep")
    sweep.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    add_textbook_option(sweep)
    add_config_options(sweep, grid=True)

    report = commands.add_parser("report", help="write an HTML report of a sweep")
    report.add_argument("sweep_dir", type=Path)

    plot = commands.add_parser("plot", help="draw pictures of a model and its data (PNG and SVG)")
    plot.add_argument("figure", choices=list(PLOT_FIGURES), help="which picture")
    plot.add_argument("--model-dir", required=True, type=Path)
    plot.add_argument("text", nargs="?", help="the sentence to draw (attention, onehot, teacher-forcing)")
    plot.add_argument("--side", choices=["source", "target"], default="source", help="vocabulary for onehot")
    plot.add_argument("--out", type=Path, help="file name without extension (default: DIR/plots/FIGURE)")

    add_serve_parser(commands)

    data = commands.add_parser(
        "data",
        help="write a built-in corpus (or a sample of a pair file) as TSV, or download a Tatoeba corpus",
        description="seq2seq data SPEC writes pairs as TSV; seq2seq data download NAME fetches a Tatoeba "
        "pair file into the cache (once) and prints its path, for --data PATH or --data tatoeba:NAME.",
    )
    data.add_argument(
        "spec", metavar="SPEC", help="builtin:NAME, tatoeba:NAME or a pair file; or 'download' (then NAME)"
    )
    data.add_argument(
        "name", metavar="NAME", nargs="?", help="with download: spa-eng, or LLL-eng for a manythings.org/anki file"
    )
    data.add_argument("--num-samples", type=int)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--url", help="with download: fetch from this URL instead (a mirror, or file:///PATH.zip)")
    data.add_argument("--sha256", help="with download: the archive's expected sha256 checksum")
    data.add_argument(
        "--cache-dir",
        type=Path,
        help="with download: cache directory (default: $SEQ2SEQ_DATA_DIR or ~/.cache/seq2seq/data)",
    )
    return parser


def add_source_limit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-source-tokens",
        type=int,
        metavar="N",
        help="read at most N tokens of an input: a longer one is truncated, with a warning, or refused with --strict "
        f"(default: {SOURCE_CAP_FACTOR} x the longest training source, else {DEFAULT_MAX_SOURCE_TOKENS})",
    )


class Truncations:
    """Reports inputs cut to the model's max_source_tokens on stderr, each once: the first
    few by file and line, then a count (as lines that are not UTF-8 are)."""

    SHOWN = 5

    def __init__(self, source: str, cap: int | None, what: str) -> None:
        self.source, self.cap, self.what = source, cap, what
        self.count = 0

    def report(self, line: int, tokens: int) -> None:
        self.count += 1
        if self.count <= self.SHOWN:
            print(
                f"seq2seq: warning: {self.source}:{line}: {tokens} tokens, more than the {self.cap} this model reads; "
                f"{self.what} its first {self.cap} (--max-source-tokens N to change, --strict to refuse)",
                file=sys.stderr,
            )

    def refusal(self, line: int, tokens: int) -> DataError:
        """The error `--strict` stops with."""
        return DataError(
            self.source,
            line,
            f"{tokens} tokens, more than the {self.cap} this model reads; shorten it or raise --max-source-tokens "
            "(without --strict: truncated, with a warning)",
        )

    def summary(self) -> None:
        if self.count > self.SHOWN:
            print(
                f"seq2seq: warning: {self.source}: {self.count} inputs longer than {self.cap} tokens "
                f"({self.count - self.SHOWN} more not shown), each {self.what} its first {self.cap}",
                file=sys.stderr,
            )


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding (greedy unless --beam or --sample)")
    group.add_argument("--max-length", type=int, help="longest output in tokens (default: the model's)")
    group.add_argument("--batch-size", type=int, default=64, help="inputs decoded at once (default: 64)")
    group.add_argument("--beam", type=int, default=1, help="beam search with this many hypotheses")
    group.add_argument("--length-penalty", type=float, default=0.6, help="GNMT length penalty alpha (default: 0.6)")
    group.add_argument("--n-best", type=int, default=1, help="print this many hypotheses per input, with scores")
    group.add_argument("--sample", action="store_true", help="draw each token from the softmax instead")
    group.add_argument("--temperature", type=float, default=1.0, help="softmax temperature for --sample")
    group.add_argument("--top-k", type=int, help="sample among the k most probable tokens")
    group.add_argument("--top-p", type=float, help="sample among the most probable tokens holding this probability")
    group.add_argument("--seed", type=int, default=0, help="seed for --sample (same seed, same output)")


def decoding_options(args: argparse.Namespace) -> DecodingOptions:
    try:
        return DecodingOptions(
            max_length=args.max_length,
            beam=args.beam,
            length_penalty=args.length_penalty,
            n_best=args.n_best,
            sample=args.sample,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            batch_size=args.batch_size,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A failure the user can cause (a UserError, an OSError about a file,
    a file that is not valid JSON or UTF-8) ends in one line on stderr and exit status 2;
    with --debug or SEQ2SEQ_DEBUG=1 it is raised again, traceback and all."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        if args.debug or os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0"):
            raise
        print(f"seq2seq: error: {error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


DEBUG_VARIABLE = "SEQ2SEQ_DEBUG"


def error_line(error: Exception) -> str:
    """One line saying what went wrong, where, and what to do: a UserError's message (it
    says all three), or an outside error's file and reason with a pointer to --debug."""
    if isinstance(error, UserError):
        message = str(error)
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        message = f"{error.filename}: {error.strerror}"
    elif isinstance(error, FileNotFoundError | FileExistsError):  # ours, with a message that says what to do
        message = str(error)
    elif isinstance(error, json.JSONDecodeError):
        message = f"not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
    elif isinstance(error, UnicodeDecodeError):
        message = f"a file is not valid UTF-8 (byte {error.start}: {error.reason})"
    else:
        message = str(error) or type(error).__name__
    if not isinstance(error, UserError | FileNotFoundError | FileExistsError) and not getattr(error, "filename", None):
        message += f" (run with --debug or {DEBUG_VARIABLE}=1 for the traceback)"
    return " ".join(message.split())


def run_train(args: argparse.Namespace) -> int:
    from .training import resume, train

    verbose = 2 if args.quiet or not sys.stdout.isatty() else 1
    if args.resume:
        given = {name for name in vars(args) if name in _config_names() and getattr(args, name) is not None}
        if given - {"epochs"}:
            raise ConfigError(f"--resume continues with the saved settings; only --epochs may change (got {given})")
        system = resume(args.model_dir, epochs=args.epochs, verbose=verbose)
    else:
        system = train(config_from_args(args), args.model_dir, overwrite=args.overwrite, verbose=verbose)
    print(f"model saved in {args.model_dir} ({system.model.count_params():,} parameters)")
    return 0


def run_translate(args: argparse.Namespace) -> int:
    from .api import Seq2Seq, SourceTooLong

    system = Seq2Seq.load(args.model_dir, max_source_tokens=args.max_source_tokens, strict=args.strict)
    options = decoding_options(args)
    source = "<arguments>" if args.text else "<stdin>"
    truncations = Truncations(source, system.max_source_tokens, "translated")

    def translate(texts: list[str], numbers: list[int]) -> list[str]:
        """The outputs of `texts`, lines `numbers` of the input."""

        def report(index: int, tokens: int) -> None:
            truncations.report(numbers[index], tokens)

        if options.n_best == 1:
            return system.translate(texts, options, report)
        return [
            "\n".join(f"{score:.4f}\t{text}" for text, score in hypotheses)
            for hypotheses in system.n_best(texts, options, report)
        ]

    if args.text:
        lines = _decoded((os.fsencode(text) for text in args.text), source, args.strict)
    elif sys.stdin.isatty():
        return _interactive(translate)
    else:
        lines = _decoded(sys.stdin.buffer, source, args.strict)
    size = 1024
    for first, chunk in enumerate(_chunks(lines, size)):
        numbers = [first * size + i for i, line in enumerate(chunk, start=1) if isinstance(line, str)]
        texts = [line for line in chunk if isinstance(line, str)]
        refused = None
        try:
            outputs = iter(translate(texts, numbers))
        except SourceTooLong as error:  # --strict: the lines before it still get their outputs
            refused = truncations.refusal(numbers[error.index], error.length)
            outputs = iter(translate(texts[: error.index], numbers))
            chunk = chunk[: numbers[error.index] - first * size - 1]
        for line in chunk:  # one output line per input line: an empty one for an undecodable input
            if isinstance(line, DataError) and args.strict:
                raise line  # after the outputs of the lines before it
            print(next(outputs) if isinstance(line, str) else "", flush=True)
        if refused is not None:
            raise refused
    truncations.summary()
    return 0


def _decoded(raws: Iterable[bytes], source: str, strict: bool) -> Iterator[str | DataError]:
    """Each input line decoded as UTF-8 on its own, as pair files are read (data.read_pairs):
    a line that is not valid UTF-8 is given as a DataError naming it, and is the last one
    if `strict`; else it is reported on stderr by number (the first few, then a count)."""
    bad = 0
    for number, raw in enumerate(raws, start=1):
        try:
            text = (raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw).decode("utf-8")
        except UnicodeDecodeError as error:
            reason = f"not valid UTF-8 (byte {error.start})"
            if strict:
                yield DataError(source, number, f"{reason}; convert the input to UTF-8 (without --strict: a warning)")
                return
            bad += 1
            problem = DataError(source, number, reason)
            if bad <= 5:
                print(f"seq2seq: warning: {problem}; printed an empty line for it", file=sys.stderr)
            yield problem
            continue
        yield text.rstrip("\r\n")
    if bad:
        more = f" ({bad - 5} more not shown)" if bad > 5 else ""
        print(
            f"seq2seq: warning: {source}: {bad} line(s) not valid UTF-8{more}, each given an empty output line; "
            "use --strict to stop at the first",
            file=sys.stderr,
        )


def _interactive(translate) -> int:
    from .api import SourceTooLong

    print("Type a sentence and press Enter (Ctrl-D to quit).", file=sys.stderr)
    for number in itertools.count(1):
        print("> ", end="", file=sys.stderr, flush=True)  # the prompt stays out of the output
        try:
            line = input()
        except EOFError:
            print(file=sys.stderr)
            return 0
        except UnicodeDecodeError as error:
            print(f"seq2seq: warning: not valid UTF-8 (byte {error.start}); type it again", file=sys.stderr)
            continue
        try:
            print(translate([line], [number])[0])
        except SourceTooLong as error:  # --strict
            print(
                f"seq2seq: warning: {error.length} tokens, more than the {error.cap} this model reads; type a "
                "shorter one",
                file=sys.stderr,
            )
    return 0


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_evaluate(args: argparse.Namespace) -> int:
    from .api import SPLIT_DIR, Seq2Seq, SourceTooLong
    from .data import read_numbered_pairs
    from .evaluation import evaluate

    system = Seq2Seq.load(args.model_dir, max_source_tokens=args.max_source_tokens, strict=args.strict)
    options = decoding_options(args)
    path = Path(args.data) if args.data else args.model_dir / SPLIT_DIR / "test.tsv"
    numbered = read_numbered_pairs(path, strict=args.strict)
    pairs = [pair for _, pair in numbered]
    truncations = Truncations(str(path), system.max_source_tokens, "scored on")
    try:
        scores, hypotheses = evaluate(
            system, pairs, options, report=lambda index, tokens: truncations.report(numbered[index][0], tokens)
        )
    except SourceTooLong as error:  # --strict
        raise truncations.refusal(numbered[error.index][0], error.length) from None
    truncations.summary()
    for pair, hypothesis in list(zip(pairs, hypotheses, strict=True))[: args.examples]:
        mark = "=" if hypothesis == pair.target else "≠"
        print(f"{pair.source}\n  {mark} {hypothesis}\n    (reference: {pair.target})")
    print(f"\nscores on {path} ({scores.settings['decoding']}):")
    print(scores.table())
    output = args.output or args.model_dir / EVALUATION_FILE
    scores.save(output)
    print(f"written to {output}")
    return 0


def run_data(args: argparse.Namespace) -> int:
    """Pairs as TSV on stdout; with `download NAME`, the downloaded pair file's path (notes on stderr)."""
    from .data import load_pairs

    download_options = {"NAME": args.name, "--url": args.url, "--sha256": args.sha256, "--cache-dir": args.cache_dir}
    if args.spec == "download":
        from .download import download

        if args.name is None:
            raise ConfigError(
                "data download needs a NAME, e.g. seq2seq data download spa-eng (for a file named "
                "'download', write ./download)"
            )
        if args.num_samples is not None:
            raise ConfigError("--num-samples does not go with data download; sample with seq2seq data tatoeba:NAME")
        print(download(args.name, url=args.url, sha256=args.sha256, cache_dir=args.cache_dir))
        return 0
    if misplaced := [option for option, value in download_options.items() if value is not None]:
        raise ConfigError(f"{', '.join(misplaced)}: only with data download NAME")
    for pair in load_pairs(args.spec, num_samples=args.num_samples, seed=args.seed):
        print(f"{pair.source}\t{pair.target}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from .report import write_report
    from .sweep import run_sweep as sweep

    names = _config_names()
    axes, single = parse_axes({name: getattr(args, name) for name in names})
    if not axes:
        raise ConfigError("a sweep needs at least one knob with several values, e.g. --latent-dim 64,256")
    budget = single.pop("time_budget", None)
    verbose = 2 if args.quiet or not sys.stdout.isatty() else 1
    results = sweep(config_from_args(args, single), axes, args.model_dir, time_budget=budget, verbose=verbose)
    print(f"{len(results)} points done; results in {args.model_dir}/results.csv, report {write_report(args.model_dir)}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(write_report(args.sweep_dir))
    return 0


PLOT_FIGURES = {
    "curves": "loss, accuracy and dev scores per epoch",
    "attention": "attention weights for TEXT",
    "onehot": "TEXT as one-hot vectors, timesteps x vocabulary",
    "teacher-forcing": "decoder input and target of TEXT, by timestep",
    "lengths": "lengths of the training pairs",
}


def run_plot(args: argparse.Namespace) -> int:
    from . import plots
    from .api import HISTORY_FILE, SOURCE_VOCAB_FILE, SPLIT_DIR, TARGET_VOCAB_FILE, Seq2Seq
    from .data import Split
    from .modeldir import check_vocabulary
    from .vocab import Codec

    def codec(name: str) -> Codec:
        check_vocabulary(directory / name)
        return Codec.load(directory / name)

    if args.figure in ("attention", "onehot", "teacher-forcing") and not args.text:
        raise ConfigError(f"plot {args.figure} needs a TEXT to draw")
    directory = args.model_dir
    if args.figure == "curves":
        figure = plots.training_curves(directory / HISTORY_FILE)
    elif args.figure == "attention":
        try:
            figure = plots.attention_heatmap(*Seq2Seq.load(directory).attention(args.text))
        except ValueError as error:
            raise ConfigError(str(error)) from None
    elif args.figure == "onehot":
        vocab = SOURCE_VOCAB_FILE if args.side == "source" else TARGET_VOCAB_FILE
        figure = plots.one_hot_matrix(args.text, codec(vocab))
    elif args.figure == "teacher-forcing":
        figure = plots.teacher_forcing_alignment(args.text, codec(TARGET_VOCAB_FILE))
    else:
        pairs = Split.load(directory / SPLIT_DIR).train
        source, target = codec(SOURCE_VOCAB_FILE), codec(TARGET_VOCAB_FILE)
        figure = plots.length_distribution(pairs, source, target)
    for path in plots.save(figure, args.out or directory / "plots" / args.figure):
        print(path)
    return 0


# `seq2seq serve`'s options: ServerSettings's fields (its defaults are in the help; a test
# checks they agree), kept here so that the CLI starts without importing FastAPI.
SERVE_OPTIONS: dict[str, tuple[type, str]] = {
    "host": (str, "address to listen on (default: 127.0.0.1, this machine only)"),
    "port": (int, "port to listen on (default: 8000)"),
    "api_key": (str, "require 'Authorization: Bearer KEY' on the API (default: none)"),
    "max_texts": (int, "texts in one request (default: 64)"),
    "max_chars": (int, "characters in one text (default: 1000)"),
    "max_body_bytes": (int, "bytes in one request body (default: 1000000)"),
    "body_timeout_s": (float, "seconds a client has to send a request's body; past it, 408 (default: 5.0)"),
    "max_beam": (int, "largest beam a request may ask for (default: 8)"),
    "max_n_best": (int, "most hypotheses a request may ask for (default: 8)"),
    "max_queue": (int, "texts waiting to be decoded; past it, 429 (default: 1024)"),
    "batch_window_ms": (float, "wait this long for requests to merge into a batch; 0: no batching (default: 5.0)"),
    "max_batch_sentences": (int, "texts in one batched decode call (default: 64)"),
    "max_batch_tokens": (int, "source tokens in one batched decode call (default: 8192)"),
    "timeout_s": (float, "a request's deadline in seconds, queueing and decoding; past it, 504 (default: 30.0)"),
    "warmup_max_length": (int, "compile decoders at start for sources up to this many tokens (default: 48)"),
    "source_lang": (str, "source language code for the LibreTranslate-compatible /translate (default: src)"),
    "target_lang": (str, "target language code for the LibreTranslate-compatible /translate (default: tgt)"),
}


def add_serve_parser(commands) -> None:
    serve = commands.add_parser("serve", help="serve a model: a REST API that batches requests, and a page at /")
    serve.add_argument("--model-dir", required=True, type=Path)
    for name, (kind, text) in SERVE_OPTIONS.items():
        serve.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    serve.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        default=None,
        help="allow cross-origin requests from this origin (repeatable; default: none, CORS off)",
    )
    serve.add_argument("--no-warmup", dest="warmup", action="store_false", default=None, help="ready at once")


def run_serve(args: argparse.Namespace) -> int:
    from .server import ServerSettings, serve

    names = [*SERVE_OPTIONS, "cors_origins", "warmup"]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    try:
        settings = ServerSettings(**given)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    serve(args.model_dir, settings)
    return 0


COMMANDS = {
    "train": run_train,
    "translate": run_translate,
    "evaluate": run_evaluate,
    "sweep": run_sweep,
    "report": run_report,
    "plot": run_plot,
    "serve": run_serve,
    "data": run_data,
}

if __name__ == "__main__":
    sys.exit(main())
