"""Generating target ids from source ids, a whole batch at a time, compiled by the backend.

Each decoder is a small Keras model wrapped around the inference parts: its `call` runs
the encoder once, then a `keras.ops.while_loop` of decoder steps. Keras compiles `call`
(with `jax.jit` on JAX, `tf.function` on TensorFlow) the first time it sees an input
shape, so the whole loop runs as one compiled program with no Python per step.

    GreedyDecoder       the most probable token at each step (the textbook's inference)
    SamplingDecoder     a token drawn from the softmax (temperature, top-k, top-p), seeded
    BeamSearchDecoder   the K best partial outputs at each step, GNMT length penalty

`stepwise_greedy` is the textbook's loop (one call per token, batch of one), kept as the
reference the tests compare against.

`OutputLimits` says how many tokens outputs may run, for every caller that decodes: the
API and the CLI, evaluation, the dev scores of training, the server.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from . import backend
from .config import Config
from .model import InferenceParts
from .vocab import END_ID, PAD_ID, START_ID

NEGATIVE = -1e9  # log-probability of what must not be chosen


def output_logits(logits):
    """Logits (B, V) with <pad> and <start> ruled out: they are never outputs."""
    never = ops.logical_or(ops.arange(logits.shape[-1]) == PAD_ID, ops.arange(logits.shape[-1]) == START_ID)
    return ops.where(never, ops.cast(NEGATIVE, logits.dtype), logits)


def best_ids(logits):
    """logits (B, V) -> the index of each row's largest logit (B,), int32; the first on a
    tie, as argmax. Computed as a max and then the smallest index holding it: XLA on CPU
    runs argmax as a (value, index) reduction it does not vectorise, and this ran 3-4x
    faster (B=256: 28 against 92 us at V=90, 1.1 against 4.1 ms at V=7,150)."""
    vocab = logits.shape[-1]
    is_best = logits == ops.max(logits, axis=-1, keepdims=True)
    first = ops.min(ops.where(is_best, ops.arange(vocab, dtype="int32"), vocab), axis=-1)
    return ops.minimum(first, vocab - 1)  # a row of NaNs has no largest logit: keep the id in range


class _Decoder(keras.Model):
    def __init__(self, parts: InferenceParts, max_length: int, **kwargs) -> None:
        super().__init__(**kwargs)
        # Attributes, so that Keras tracks their weights: a compiled decoder then reads
        # the current weights at every call (not the ones it saw when compiled).
        self.encoder = parts.encoder
        self.step_model = parts.step
        self.num_context = parts.num_context
        self.max_length = max_length
        # Its layers are built and it has no weights of its own: built, Keras does not run
        # `call` op by op once before compiling it (each op its own program: seconds).
        self.built = True

    def encode(self, source_ids) -> tuple[list, list]:
        encoded = self.encoder(source_ids)
        encoded = list(encoded) if isinstance(encoded, list | tuple) else [encoded]
        return encoded[: self.num_context], encoded[self.num_context :]

    def step(self, previous, context: list, state: list):
        """previous ids (B,) -> logits (B, V) of possible outputs, attention (B, S), new state."""
        logits, attention, *state = self.step_model([ops.expand_dims(previous, 1), *context, *state])
        return output_logits(ops.cast(logits, "float32")), attention, state


class GreedyDecoder(_Decoder):
    """source ids (B, S) -> target ids (B, max_length), and with `return_attention` the
    attention weights (B, max_length, S) (zero-width without attention).

    Each sequence stops at <end>, or after `max_length` tokens; positions after a
    sequence's <end> hold <pad>. The loop ends when every sequence has stopped.

    A batch runs until its longest output ends, its finished rows idle. So when no more
    than a quarter of the rows is left, those rows move to a batch a quarter the size
    and finish there (greedy choices depend on nothing but the row, so the outputs are
    the same). In the decoding benchmark (1,000 inputs, B=256; separate runs): 0.074-0.078
    s a pass against 0.083-0.088 (one run of three 0.099), and with the C++ inference
    loop 0.069-0.072. The smaller batch is compiled too: the first pass takes longer.
    """

    compact_share = 4  # rows left (1 / share of the batch) that move to a smaller batch
    # Whether rows left may move to a smaller batch: only when a row's choice depends on
    # nothing but its own state (a sampler's draw depends on the row's place in the batch).
    compacts_rows = True

    def __init__(self, parts: InferenceParts, max_length: int, return_attention: bool = False, **kwargs) -> None:
        super().__init__(parts, max_length, **kwargs)
        self.return_attention = return_attention

    def choose(self, logits, t, draw: list):
        """The next ids (B,) from logits (B, V) at step t; `draw`: the inputs after the
        source ids (a sampler's seed and settings)."""
        return best_ids(logits)

    def call(self, inputs):
        source_ids, *draw = inputs if isinstance(inputs, list | tuple) else (inputs,)
        context, state = self.encode(source_ids)
        batch, source_length = ops.shape(source_ids)[0], ops.shape(source_ids)[1]
        output = ops.full((batch, self.max_length), PAD_ID, dtype="int32")
        attention_width = source_length if self.num_context else 0
        attention = ops.zeros((batch, self.max_length, attention_width))
        previous = ops.full((batch,), START_ID, dtype="int32")
        finished = ops.zeros((batch,), dtype="bool")

        def not_done(t, previous, finished, output, attention, *state):
            return ops.logical_and(t < self.max_length, ops.logical_not(ops.all(finished)))

        def step_with(context):
            def step(t, previous, finished, output, attention, *state):
                logits, weights, state = self.step(previous, context, list(state))
                token = ops.where(finished, PAD_ID, self.choose(logits, t, draw))
                output = ops.slice_update(output, (0, t), ops.expand_dims(token, 1))
                if self.return_attention:
                    weights = ops.expand_dims(ops.cast(weights, "float32"), 1)
                    attention = ops.slice_update(attention, (0, t, 0), weights)
                finished = ops.logical_or(finished, token == END_ID)
                return (t + 1, token, finished, output, attention, *state)

            return step

        start = (ops.convert_to_tensor(0, dtype="int32"), previous, finished, output, attention, *state)
        kept = (source_ids.shape[0] or 0) // self.compact_share  # 0 when the batch size is not static
        # the attention returned follows the row too: it is kept whole
        if not self.compacts_rows or self.return_attention or kept < 2:
            _, _, _, output, attention, *_ = ops.while_loop(not_done, step_with(context), start)
            return (output, attention) if self.return_attention else output

        def many_left(t, previous, finished, *rest):
            left = ops.sum(ops.cast(ops.logical_not(finished), "int32"))
            return ops.logical_and(not_done(t, previous, finished, *rest), left > kept)

        t, *rows = ops.while_loop(many_left, step_with(context), start)
        unfinished_first = ops.argsort(ops.cast(rows[1], "int32"))[:kept]  # rows[1]: finished
        small = [ops.take(x, unfinished_first, axis=0) for x in rows]
        small_context = [ops.take(x, unfinished_first, axis=0) for x in context]
        _, _, _, small_output, *_ = ops.while_loop(not_done, step_with(small_context), (t, *small))
        return ops.scatter_update(rows[2], ops.expand_dims(unfinished_first, 1), small_output)


class SamplingDecoder(GreedyDecoder):
    """[source ids (B, S), seed (2,) int32, settings (3,) float32] -> target ids (B,
    max_length), each token drawn from softmax(logits / temperature), restricted to the
    top_k most probable tokens and/or the smallest set whose probability reaches top_p.
    The settings are inputs (`sampling_settings`), so one compiled program serves them
    all. Same seed and settings, same output."""

    compacts_rows = False  # a row's draws depend on its place in the batch

    def choose(self, logits, t, draw: list):
        seed, settings = draw
        logits = ops.cast(logits, "float32") / settings[0]
        top_k, top_p = ops.cast(settings[1], "int32"), settings[2]
        cut = ops.logical_or(top_k > 0, top_p < 1)  # the sort only when a cut-off asks for it
        logits = ops.cond(cut, lambda: _cut_off(logits, top_k, top_p), lambda: logits)
        step_seed = ops.stack([seed[0], seed[1] + t])
        return backend.sample_categorical(logits, step_seed)


def sampling_settings(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """A SamplingDecoder's settings input: (temperature, top_k or 0, top_p or 1)."""
    return np.array([temperature, top_k or 0, 1.0 if top_p is None else top_p], dtype="float32")


def _cut_off(logits, top_k, top_p):
    """Logits (B, V) outside the `top_k` best (0: all) and outside the smallest set whose
    probability reaches `top_p` (1: all), after the top-k cut, set to NEGATIVE."""
    vocab = logits.shape[-1]
    ranked = ops.top_k(logits, vocab)[0]  # descending
    k = ops.where(top_k > 0, ops.minimum(top_k, vocab), vocab)
    kth_best = ops.take(ranked, k - 1, axis=1)[:, None]
    logits = ops.where(logits < kth_best, NEGATIVE, logits)
    ranked = ops.where(ranked < kth_best, NEGATIVE, ranked)
    probs = ops.softmax(ranked, axis=-1)
    keep = ops.logical_or((ops.cumsum(probs, axis=-1) - probs) < top_p, top_p >= 1)  # mass before each token
    cutoff = ops.min(ops.where(keep, ranked, np.float32(np.inf)), axis=-1, keepdims=True)
    return ops.where(logits < cutoff, NEGATIVE, logits)


TOP_K_CHUNK = 32  # columns a chunk in top_k_rows


def top_k_rows(values, k: int):
    """values (R, N) -> the k largest of each row (R, k), largest first, and their column
    indices (R, k), the lower index first on ties: what `ops.top_k` gives.

    XLA's CPU runs top_k as a partial sort of each row, about 1 ns a value (R=320, N=8,001,
    k=5: 3.0 ms on an AMD Zen 5). Here each row's columns are cut into chunks of TOP_K_CHUNK;
    the k largest values lie in the k chunks with the largest maxima, so top_k runs over
    the chunks' maxima, then k rounds of max over those k chunks' values (beam 5 decoding
    1.6x faster; docs/performance.md). The chosen chunks are sorted by position, so ties
    resolve as top_k's do."""
    width = values.shape[-1]
    chunk = TOP_K_CHUNK
    full = width // chunk * chunk
    if full // chunk < 2 * k:  # few columns: top_k is quick
        return ops.top_k(values, k)
    maxima = ops.max(ops.reshape(values[:, :full], (-1, full // chunk, chunk)), axis=-1)
    if full < width:  # the last, shorter chunk
        maxima = ops.concatenate([maxima, ops.max(values[:, full:], axis=-1, keepdims=True)], axis=1)
    chosen = ops.sort(ops.top_k(maxima, k)[1], axis=-1)  # (R, k) chunk numbers
    columns = ops.reshape(ops.expand_dims(chosen, -1) * chunk + ops.arange(chunk, dtype=chosen.dtype), (-1, k * chunk))
    picked = ops.take_along_axis(values, ops.minimum(columns, width - 1), axis=1)
    picked = ops.where(columns < width, picked, ops.cast(-np.inf, values.dtype))  # past the last column
    best, where = _largest(picked, k)
    return best, ops.take_along_axis(columns, where, axis=1)


def _largest(values, k: int):
    """top_k of a few columns as k rounds of `best_ids`: XLA's CPU ran top_k of (320, 160)
    as a full sort of each row, 4.8 ms (Zen 5)."""
    positions = ops.arange(values.shape[-1], dtype="int32")
    best, where = [], []
    for _ in range(k):
        first = ops.expand_dims(best_ids(values), -1)
        best.append(ops.take_along_axis(values, first, axis=1))
        where.append(first)
        values = ops.where(positions == first, ops.cast(-np.inf, values.dtype), values)
    return ops.concatenate(best, axis=-1), ops.concatenate(where, axis=-1)


def length_penalty(length, alpha: float):
    """GNMT's length normalisation: ((5 + length) / 6) ** alpha (1 when alpha is 0)."""
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, alpha)


class BeamSearchDecoder(_Decoder):
    """source ids (B, S) -> [target ids (B, n_best, max_length), scores (B, n_best)].

    Keeps the `beam_size` best hypotheses of each sentence at every step, ranked by
    log-probability / length_penalty(length) (`alpha`), where a finished hypothesis
    keeps its length and score. A sentence is done when its `n_best` best hypotheses
    have produced <end>; the loop ends when every sentence is done or at `max_length`.
    Outputs are sorted best first; scores are the normalised log-probabilities.
    """

    def __init__(
        self, parts: InferenceParts, max_length: int, beam_size: int, alpha: float = 0.6, n_best: int = 1, **kwargs
    ) -> None:
        super().__init__(parts, max_length, **kwargs)
        if not 1 <= n_best <= beam_size:
            raise ValueError(f"n_best must be between 1 and the beam size {beam_size}, got {n_best}")
        self.beam_size = beam_size
        self.alpha = alpha
        self.n_best = n_best

    def call(self, source_ids):
        k, length = self.beam_size, self.max_length
        context, state = self.encode(source_ids)
        context = [ops.repeat(c, k, axis=0) for c in context]  # (B * K, ...)
        state = [ops.repeat(s, k, axis=0) for s in state]
        batch = ops.shape(source_ids)[0]
        tokens = ops.full((batch, k, length), PAD_ID, dtype="int32")
        # only the first beam is live at the start, so the K beams do not repeat each other
        scores = ops.concatenate([ops.zeros((batch, 1)), ops.full((batch, k - 1), NEGATIVE)], axis=1)
        lengths = ops.zeros((batch, k), dtype="int32")
        finished = ops.zeros((batch, k), dtype="bool")
        done = ops.zeros((batch,), dtype="bool")
        previous = ops.full((batch * k,), START_ID, dtype="int32")
        beam_rows = ops.expand_dims(ops.arange(batch, dtype="int32") * k, 1)  # (B, 1)

        def not_done(t, previous, tokens, scores, lengths, finished, done, *state):
            return ops.logical_and(t < length, ops.logical_not(ops.all(done)))

        def step(t, previous, tokens, scores, lengths, finished, done, *state):
            logits, _, state = self.step(previous, context, list(state))
            # Each hypothesis's n = min(K, V) most probable next tokens: the K best of a
            # sentence are among their K * n. log_softmax as ops.log_softmax computes it.
            n = min(k, logits.shape[-1])
            best_logits, next_ids = top_k_rows(logits, n)  # (B * K, n)
            most = best_logits[:, :1]
            log_probs = best_logits - most - ops.log(ops.sum(ops.exp(logits - most), axis=-1, keepdims=True))
            log_probs, next_ids = ops.reshape(log_probs, (-1, k, n)), ops.reshape(next_ids, (-1, k, n))
            # a finished hypothesis (or any of a done sentence) continues only with <pad>, at no cost
            frozen = ops.logical_or(finished, ops.expand_dims(done, 1))
            pad_only = ops.where(ops.arange(n) == 0, 0.0, NEGATIVE)
            log_probs = ops.where(ops.expand_dims(frozen, -1), pad_only, log_probs)
            next_ids = ops.where(ops.expand_dims(frozen, -1), PAD_ID, next_ids)
            candidates = ops.expand_dims(scores, -1) + log_probs  # (B, K, n)
            candidate_lengths = ops.where(frozen, lengths, t + 1)
            ranked = candidates / ops.expand_dims(length_penalty(candidate_lengths, self.alpha), -1)
            _, best = ops.top_k(ops.reshape(ranked, (-1, k * n)), k)  # (B, K), best first
            origin = best // n
            token = ops.cast(ops.take_along_axis(ops.reshape(next_ids, (-1, k * n)), best, axis=1), "int32")
            scores = ops.take_along_axis(ops.reshape(candidates, (-1, k * n)), best, axis=1)
            was_frozen = ops.take_along_axis(frozen, origin, axis=1)
            lengths = ops.where(was_frozen, ops.take_along_axis(candidate_lengths, origin, axis=1), t + 1)
            finished = ops.logical_or(ops.take_along_axis(finished, origin, axis=1), token == END_ID)
            tokens = ops.take_along_axis(tokens, ops.expand_dims(origin, -1), axis=1)
            tokens = ops.slice_update(tokens, (0, 0, t), ops.expand_dims(token, -1))
            done = ops.logical_or(done, ops.all(finished[:, : self.n_best], axis=1))
            rows = ops.reshape(beam_rows + ops.cast(origin, "int32"), (-1,))
            state = [ops.take(s, rows, axis=0) for s in state]
            return (t + 1, ops.reshape(token, (-1,)), tokens, scores, lengths, finished, done, *state)

        start = (ops.convert_to_tensor(0, dtype="int32"), previous, tokens, scores, lengths, finished, done, *state)
        _, _, tokens, scores, lengths, *_ = ops.while_loop(not_done, step, start)
        normalised = scores / length_penalty(lengths, self.alpha)
        return tokens[:, : self.n_best], normalised[:, : self.n_best]


def stepwise_greedy(parts: InferenceParts, source_ids, max_length: int) -> list[int]:
    """The textbook's decoding loop for one unpadded sentence: encode, then call the step
    model once per token with a batch of one. Slow; kept as the reference for tests."""
    encoded = parts.encoder(ops.convert_to_tensor(np.asarray(source_ids, dtype="int32")[None, :]))
    context, state = parts.split(encoded if isinstance(encoded, list | tuple) else [encoded])
    previous = START_ID
    output: list[int] = []
    for _ in range(max_length):
        logits, _, *state = parts.step([ops.convert_to_tensor(np.array([[previous]], dtype="int32")), *context, *state])
        previous = int(np.argmax(ops.convert_to_numpy(output_logits(logits))[0]))
        output.append(previous)
        if previous == END_ID:
            break
    return output


@dataclass(frozen=True)
class DecodingOptions:
    """How to generate: greedy (the default), beam search (`beam` > 1) or sampling."""

    max_length: int | None = None  # None: the model's
    beam: int = 1
    length_penalty: float = 0.6  # GNMT alpha, beam search only
    n_best: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise ValueError(f"beam must be at least 1, got {self.beam}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.sample and self.beam > 1:
            raise ValueError("choose sampling or beam search, not both")
        if self.n_best > max(self.beam, 1) and not self.sample:
            raise ValueError(f"n_best ({self.n_best}) cannot exceed the beam size ({self.beam})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def make_decoder(self, parts: InferenceParts, max_length: int) -> _Decoder:
        if self.sample:
            return SamplingDecoder(parts, max_length)
        if self.beam > 1:
            return BeamSearchDecoder(parts, max_length, self.beam, self.length_penalty, self.n_best)
        return GreedyDecoder(parts, max_length)

    def decoder_key(self, max_length: int) -> tuple:
        """Options that change the compiled decoder (the seed, the sampling settings and
        the batch size do not)."""
        if self.sample:
            return ("sample", max_length)
        if self.beam > 1:
            return ("beam", max_length, self.beam, self.length_penalty, self.n_best)
        return ("greedy", max_length)


# --- output limits ---------------------------------------------------------------------

DEFAULT_MAX_LENGTH = 100  # for a config without max_length (`seq2seq train` always sets one)
LENGTH_MARGIN = 10  # an output may run ratio x (source tokens) + LENGTH_MARGIN tokens
LIMIT_MULTIPLE = 8  # limits are rounded up to this, so few decoders are compiled
MIN_LENGTH_RATIO = 1.5  # the fitted ratio's floor (see default_length_ratio)


@dataclass(frozen=True)
class OutputLimits:
    """How many tokens a batch's outputs may run: `max_length`, and with a `ratio` no more
    than ratio x its longest source + LENGTH_MARGIN (rounded up to LIMIT_MULTIPLE). A
    compiled loop runs until its last row ends, so a row that never produces <end> would
    otherwise keep the whole batch going to `max_length`.

    The one place the limits are worked out: `of` for decoding, `default_max_length` and
    `default_length_ratio` for the values training saves in the config.
    """

    max_length: int
    ratio: float | None = None

    @classmethod
    def of(cls, config: Config, options: DecodingOptions | None = None) -> OutputLimits:
        """The limits of a model with `config`, decoding with `options`: the options'
        max_length over the config's (DEFAULT_MAX_LENGTH without either), the config's ratio."""
        max_length = (options.max_length if options else None) or config.max_length or DEFAULT_MAX_LENGTH
        return cls(max_length, config.max_length_ratio)

    def for_batch(self, longest_source: int) -> int:
        """The limit of a batch whose longest source has `longest_source` tokens."""
        if self.ratio is None:
            return self.max_length
        return min(self.max_length, round_up(math.ceil(self.ratio * longest_source) + LENGTH_MARGIN))


def round_up(length: int, multiple: int = LIMIT_MULTIPLE) -> int:
    return -(-length // multiple) * multiple


def default_max_length(longest_target: int) -> int:
    """Generation limit: half again the longest training target, plus a little."""
    return int(longest_target * 1.5) + 5


def default_length_ratio(lengths: Sequence[tuple[int, int]]) -> float:
    """Output tokens per source token (see `OutputLimits`) within which every training
    target fits, given (source, target) token counts, and at least MIN_LENGTH_RATIO: an
    output that has not ended by then is almost surely repeating itself."""
    return max([MIN_LENGTH_RATIO] + [(target - LENGTH_MARGIN) / max(1, source) for source, target in lengths])
