"""`Seq2Seq`: a trained model with its settings and vocabularies, saved as one directory.

This is the one code path from text to text used by the CLI, evaluation and the server:

    text -> tokens -> ids -> model -> ids -> tokens -> text

A model directory holds:
    config.json                       the settings, with backend and library versions
    source_vocab.json, target_vocab.json  tokenizer settings and vocabularies
    model.keras                       the training model (loaded with safe_mode)
    split/{train,dev,test}.tsv        the pairs of each part of the split
    history.csv                       loss and accuracy per epoch
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from . import backend
from .batches import pad
from .config import Config
from .data import normalize
from .decoding import GreedyDecoder
from .model import inference_parts
from .vocab import END_ID, Codec

CONFIG_FILE = "config.json"
SOURCE_VOCAB_FILE = "source_vocab.json"
TARGET_VOCAB_FILE = "target_vocab.json"
MODEL_FILE = "model.keras"
SPLIT_DIR = "split"
HISTORY_FILE = "history.csv"


class ModelDirError(FileNotFoundError):
    """A model directory is missing a file it needs."""


class Seq2Seq:
    """A sequence-to-sequence model ready to generate: `Seq2Seq.load(DIR).translate([...])`."""

    def __init__(self, config: Config, source: Codec, target: Codec, model: keras.Model) -> None:
        self.config = config
        self.source = source
        self.target = target
        self.model = model
        self._parts = None
        self._decoders: dict[int, GreedyDecoder] = {}

    @classmethod
    def load(cls, model_dir: str | Path) -> Seq2Seq:
        model_dir = Path(model_dir)
        for name in (CONFIG_FILE, SOURCE_VOCAB_FILE, TARGET_VOCAB_FILE, MODEL_FILE):
            if not (model_dir / name).is_file():
                raise ModelDirError(f"{model_dir}: no {name}; is this a directory made by `seq2seq train`?")
        config = Config.load(model_dir / CONFIG_FILE)
        model = keras.saving.load_model(model_dir / MODEL_FILE, compile=False, safe_mode=True)
        return cls(
            config,
            Codec.load(model_dir / SOURCE_VOCAB_FILE),
            Codec.load(model_dir / TARGET_VOCAB_FILE),
            model,
        )

    def save(self, model_dir: str | Path) -> None:
        """Write settings, vocabularies and model; the split and history are written by training."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(model_dir / CONFIG_FILE)
        self.source.save(model_dir / SOURCE_VOCAB_FILE)
        self.target.save(model_dir / TARGET_VOCAB_FILE)
        with backend.tensorflow_not_imported():
            self.model.save(model_dir / MODEL_FILE)

    @property
    def max_length(self) -> int:
        return self.config.max_length or 100

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Source texts -> source ids (normalised as training data was)."""
        return [self.source.encode(normalize(text)) for text in texts]

    def translate(self, texts: Sequence[str], max_length: int | None = None, batch_size: int = 64) -> list[str]:
        """Generate one output text for each input text, in order."""
        outputs = self.generate(self.encode(texts), max_length=max_length, batch_size=batch_size)
        return [self.target.decode(ids) for ids in outputs]

    def generate(
        self, source_ids: Sequence[Sequence[int]], max_length: int | None = None, batch_size: int = 64
    ) -> list[list[int]]:
        """Target ids (up to and including <end>, if produced) for each source id list.

        Inputs are sorted by length and decoded `batch_size` at a time; empty inputs give
        empty outputs.
        """
        decoder = self._decoder(max_length or self.max_length)
        results: list[list[int]] = [[] for _ in source_ids]
        order = sorted((i for i, s in enumerate(source_ids) if s), key=lambda i: len(source_ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = pad([source_ids[i] for i in rows])
            batch = np.pad(batch, ((0, _padded_rows(len(rows), batch_size) - len(rows)), (0, 0)))
            generated = keras.ops.convert_to_numpy(decoder.predict_on_batch(batch))
            for row, i in enumerate(rows):
                results[i] = _until_end(generated[row])
        return results

    @property
    def parts(self):
        if self._parts is None:
            self._parts = inference_parts(self.model)
        return self._parts

    def _decoder(self, max_length: int) -> GreedyDecoder:
        if max_length not in self._decoders:
            self._decoders[max_length] = GreedyDecoder(self.parts, max_length)
        return self._decoders[max_length]


def _padded_rows(rows: int, batch_size: int) -> int:
    """Pad a batch's row count to a power of two (at least 8, at most `batch_size`) so
    that few shapes are compiled."""
    size = 8
    while size < rows:
        size *= 2
    return max(min(size, batch_size), rows)


def _until_end(ids: np.ndarray) -> list[int]:
    out = []
    for i in ids.tolist():
        out.append(i)
        if i == END_ID:
            break
    return out
