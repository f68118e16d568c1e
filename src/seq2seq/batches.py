"""Id sequences -> padded batches for training, with the teacher-forcing shift.

Batches group sentences of similar length (length bucketing), so little of each batch is
padding, and pad to a few fixed lengths, so the backend compiles few shapes. Nothing of
the size dataset × timesteps × vocabulary is ever made: one-hot vectors, where used, are
made per batch inside the model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import keras
import numpy as np

from .data import Pair
from .files import DECODER_INPUT_IDS, SOURCE_IDS
from .vocab import END_ID, PAD_ID, START_ID, Codec


def teacher_forcing(target_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """The decoder's input and expected output for one target sentence.

    At step t the decoder reads the true token t-1 and must produce token t:
        input:  <start> we like kiwis .
        output: we like kiwis . <end>
    """
    return [START_ID, *target_ids], [*target_ids, END_ID]


# (up to this length, pad to a multiple of this); longer lengths: multiples of 32
DECODING_STEPS = ((32, 4), (64, 8), (128, 16))
TRAINING_STEPS = ((8, 1), (16, 2), (32, 4), (64, 8), (128, 16))
# Each batch shape compiles its own training step (about 3 s for the default model, at any
# size): at most MAX_SHAPES of them, and at most one for every BATCHES_PER_SHAPE batches of
# an epoch, since on a few batches a shape's compiling costs more than the padding it saves.
MAX_SHAPES = 16
BATCHES_PER_SHAPE = 8


def _round_up(length: int, steps: tuple[tuple[int, int], ...]) -> int:
    step = next((step for limit, step in steps if length <= limit), 32)
    return max(step, math.ceil(length / step) * step)


def padded_length(length: int) -> int:
    """Round the longest source of a batch to decode up to one of a few sizes: multiples
    of 4 up to 32, of 8 up to 64, of 16 up to 128, then of 32. Batches of similar lengths
    then share a compiled program (each costs compile time and memory)."""
    return _round_up(length, DECODING_STEPS)


def padded_training_length(length: int) -> int:
    """Round a training batch's longest source or target up to a finer set of sizes:
    every length up to 8, then multiples of 2 up to 16, of 4 up to 32, and so on (at most
    a fifth of a row is padding). Padding is work in every step of every epoch, while a
    shape compiles once and PairBatches caps their number; short sentences, the most
    common, get none (see CHANGELOG.md for what this saved)."""
    return _round_up(length, TRAINING_STEPS)


def pad(sequences: Sequence[Sequence[int]], length: int | None = None) -> np.ndarray:
    """(B, length) int32 array of the sequences, right-padded with <pad>."""
    length = length or padded_length(max(len(s) for s in sequences))
    out = np.full((len(sequences), length), PAD_ID, dtype="int32")
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


class PairBatches(keras.utils.PyDataset):
    """Batches of ({source ids, decoder input ids}, decoder target ids) for `fit`.

    Each epoch the pairs are shuffled, sorted by length within large pools (so batches
    hold similar lengths), cut into batches, and the batches shuffled. The order depends
    only on the seed and the epoch number, so a resumed run sees the batches an
    uninterrupted run would have seen.

    A batch holds `batch_size` pairs, or fewer when its padded target length times its
    rows would exceed `max_tokens` (long sentences with a large vocabulary: this bounds
    the memory of the output layer). Short batches are filled up with all-<pad> rows,
    which the loss ignores, so that every batch of a given length has the same shape
    and the backend compiles few programs.

    Each shape (source length, target length) compiles to a program that stays in
    memory, so there are at most `max_shapes` of them, and at most one for every
    `batches_per_shape` batches of an epoch (at least one): epoch 0's shapes are merged into
    larger ones that hold them, the merge that adds the least work first (a target
    position counting as `target_cost` source positions: it also runs the output layer),
    every epoch pads to that set (a resumed run too), and a batch is cut to the rows its
    padded shape allows. A shape that no other holds on both sides is never merged, so
    more than `max_shapes` can remain; a later batch that no shape in the set holds
    keeps its own. Sources are padded as finely as targets (`padded_training_length`)
    unless `fine_sources` is False (`padded_length`'s coarser sizes: fewer shapes, for a
    one-off pass where compiling costs more than padding).
    """

    POOL_BATCHES = 50

    def __init__(
        self,
        sources: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        max_tokens: int | None = None,
        row_multiple: int = 1,
        max_shapes: int | None = MAX_SHAPES,
        batches_per_shape: int = BATCHES_PER_SHAPE,
        target_cost: float = 1.0,
        fine_sources: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if len(sources) != len(targets):
            raise ValueError("sources and targets must have the same length")
        if not sources:
            raise ValueError("no pairs to make batches from")
        if not target_cost > 0:
            raise ValueError(f"target_cost must be positive, got {target_cost}")
        if batches_per_shape < 1:
            raise ValueError(f"batches_per_shape must be at least 1, got {batches_per_shape}")
        self.sources = list(sources)
        self.decoder_inputs, self.decoder_targets = zip(*(teacher_forcing(t) for t in targets), strict=True)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.row_multiple = row_multiple
        self.target_cost = target_cost
        self.padded_source_length = padded_training_length if fine_sources else padded_length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.shapes: set[tuple[int, int]] | None = None
        self.count: int | None = None
        first = self._make_batches(0)
        if max_shapes is not None:  # from epoch 0's batches, whatever epoch a run starts from
            self.shapes = self._fewest_shapes(first, max(1, min(max_shapes, len(first) // batches_per_shape)))
            first = self._make_batches(0)
        self.count = len(first)  # every epoch's number of batches
        self.batches = first if epoch == 0 else self._make_batches(epoch)

    def _make_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.sources)) if self.shuffle else np.arange(len(self.sources))
        pool_size = self.batch_size * self.POOL_BATCHES
        batches = []
        for start in range(0, len(order), pool_size):
            pool = order[start : start + pool_size]
            # by padded target length, then source length: little padding on either side
            keys = [(padded_training_length(len(self.decoder_targets[i])), len(self.sources[i])) for i in pool]
            pool = pool[sorted(range(len(pool)), key=keys.__getitem__)]
            batch: list[int] = []
            longest = (0, 0)  # the batch's longest source and target so far
            for i in pool:
                with_i = (max(longest[0], len(self.sources[i])), max(longest[1], len(self.decoder_targets[i])))
                if batch and len(batch) + 1 > self.rows_for(self.shape_for(*with_i)[1]):
                    batches.append(np.array(batch))
                    batch, with_i = [], (len(self.sources[i]), len(self.decoder_targets[i]))
                batch.append(i)
                longest = with_i
            batches.append(np.array(batch))
        if self.count is not None:
            batches = self._to_count(batches, self.count)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _to_count(self, batches: list[np.ndarray], count: int) -> list[np.ndarray]:
        """`batches`, split or merged until there are `count`. Keras reads a dataset's
        length once per `fit`, and cutting shuffled pools gives a few more or fewer
        batches each epoch: with fewer an epoch ended early (and warned that it ran out of
        data), with more its last batches were never trained on. The largest batch is
        halved (its shape holds both halves); the smallest is emptied into batches with
        room whose shape holds each pair (and elsewhere, should none)."""
        batches = list(batches)
        while len(batches) < count:
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            half = len(batches[largest]) // 2
            if half == 0:
                break
            batches[largest : largest + 1] = [batches[largest][:half], batches[largest][half:]]
        if len(batches) <= count:
            return batches
        longest = [self._longest(b) for b in batches]
        shapes = [self.shape_for(*lengths) for lengths in longest]
        while len(batches) > count:
            smallest = min(range(len(batches)), key=lambda i: len(batches[i]))
            moved = batches.pop(smallest)
            del longest[smallest], shapes[smallest]
            for pair in moved:
                lengths = (len(self.sources[pair]), len(self.decoder_targets[pair]))
                fits = (
                    j
                    for j, shape in enumerate(shapes)
                    if len(batches[j]) < self.rows_for(shape[1])
                    and self.shape_for(*map(max, longest[j], lengths)) == shape
                )
                j = next(fits, None)
                if j is None:
                    j = min(range(len(batches)), key=lambda i: len(batches[i]))
                batches[j] = np.append(batches[j], pair)
                longest[j] = list(map(max, longest[j], lengths))
                shapes[j] = self.shape_for(*longest[j])
        return batches

    # Largest batch output (rows x timesteps x target vocabulary), in floats: 64 MB.
    # Training holds a few arrays of this size (logits, their softmax and gradient): this,
    # with the cap on shapes, keeps word-level training on all of spa-eng (27,700 target
    # words) under 2 GB.
    OUTPUT_ELEMENTS = 2**24

    @classmethod
    def from_pairs(
        cls, source: Codec, target: Codec, pairs: Sequence[Pair], latent_dim: int = 256, **kwargs
    ) -> PairBatches:
        """Batches of text pairs, encoded by the source and target codecs, with at most
        `OUTPUT_ELEMENTS` logits per batch. When shapes are merged, a target position
        weighs 1 + V / (4 `latent_dim`) source positions: an LSTM step computes 4 x
        latent_dim gates, and a target position also the output layer's V logits (a rough
        weight: embeddings, two directions and attention are left out)."""
        kwargs.setdefault("max_tokens", cls.OUTPUT_ELEMENTS // len(target))
        kwargs.setdefault("target_cost", 1 + len(target) / (4 * latent_dim))
        return cls([source.encode(p.source) for p in pairs], [target.encode(p.target) for p in pairs], **kwargs)

    def __len__(self) -> int:
        return len(self.batches)

    def rows_for(self, target_length: int) -> int:
        """Rows of a batch whose longest target has this length (a multiple of
        `row_multiple`, for splitting batches across devices)."""
        rows = self.batch_size
        if self.max_tokens is not None:
            rows = min(rows, self.max_tokens // padded_training_length(target_length))
        return max(self.row_multiple, rows // self.row_multiple * self.row_multiple)

    def shape_for(self, source_length: int, target_length: int) -> tuple[int, int]:
        """The (source length, target length) a batch with these longest sentences is
        padded to: its own padded lengths, or the smallest allowed shape holding them."""
        shape = self.padded_source_length(source_length), padded_training_length(target_length)
        if self.shapes is None or shape in self.shapes:
            return shape
        return self._smallest_holding(shape, self.shapes) or shape

    def _longest(self, rows: np.ndarray) -> list[int]:
        """[longest source, longest target] of a batch."""
        return [max(len(self.sources[i]) for i in rows), max(len(self.decoder_targets[i]) for i in rows)]

    def shape_of(self, rows: np.ndarray) -> tuple[int, int]:
        """The (source length, target length) this batch is padded to."""
        return self.shape_for(*self._longest(rows))

    def _fewest_shapes(self, batches: list[np.ndarray], max_shapes: int) -> set[tuple[int, int]]:
        """The shapes of `batches`, merged into larger ones until at most `max_shapes`
        remain (or none can merge): each time the merge that adds the least work over all
        the rows it moves."""
        rows: Counter[tuple[int, int]] = Counter()
        for batch in batches:
            rows[self.shape_of(batch)] += len(batch)
        while len(rows) > max_shapes:
            merges = []
            for shape, n in rows.items():
                larger = self._smallest_holding(shape, set(rows) - {shape})
                if larger:
                    merges.append((n * (self._row_cost(larger) - self._row_cost(shape)), shape, larger))
            if not merges:
                break
            _, shape, larger = min(merges)
            rows[larger] += rows.pop(shape)
        return set(rows)

    def _row_cost(self, shape: tuple[int, int]) -> float:
        """The work of one row of a batch of this shape: its source positions, plus its
        target positions weighted by `target_cost`."""
        return shape[0] + self.target_cost * shape[1]

    def _smallest_holding(self, shape: tuple[int, int], shapes: set[tuple[int, int]]) -> tuple[int, int] | None:
        """The shape of `shapes` at least as long on both sides as `shape` with the least
        work in a row. Batches are cut to the rows their padded shape allows, so any
        such shape holds them."""
        holding = [(source, target) for source, target in shapes if source >= shape[0] and target >= shape[1]]
        return min(holding, key=lambda s: (self._row_cost(s), s), default=None)

    def __getitem__(self, index: int):
        rows = self.batches[index]
        source_length, length = self.shape_of(rows)
        filler = [[]] * (self.rows_for(length) - len(rows))  # all-<pad> rows
        source = pad([*(self.sources[i] for i in rows), *filler], length=source_length)
        decoder_input = pad([*(self.decoder_inputs[i] for i in rows), *filler], length=length)
        decoder_target = pad([*(self.decoder_targets[i] for i in rows), *filler], length=length)
        return {SOURCE_IDS: source, DECODER_INPUT_IDS: decoder_input}, decoder_target

    def on_epoch_end(self) -> None:
        self.epoch += 1
        if self.shuffle:
            self.batches = self._make_batches(self.epoch)

    def real_tokens(self) -> int:
        """Number of non-padding target tokens in one epoch (for throughput)."""
        return sum(len(t) for t in self.decoder_targets)
