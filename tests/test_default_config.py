"""The default configuration (`Config()`), trained for real at a tiny size.

Every default that makes the architecture and the training recipe is kept: subword
(SentencePiece unigram) tokens, learned embeddings with the target embedding tied to the
output layer, a bidirectional encoder, a Luong attention decoder with input feeding,
dropout 0.3, label smoothing 0.1, Adam with gradient clipping, the learning rate halved
after an epoch without dev-BLEU improvement and early stopping on dev BLEU, on the default
corpus (builtin:numbers-en-es). Only sizes shrink, and the learning rate rises to suit a
model that small (`SHRUNK`). The model is trained once for the module and scored on its
held-out test split (split/test.tsv).
"""

from __future__ import annotations

import json

import keras
import pytest

from seq2seq import Config, Seq2Seq, training
from seq2seq.batches import PairBatches
from seq2seq.data import Split
from seq2seq.decoding import DecodingOptions
from seq2seq.evaluation import Scores, score
from seq2seq.layers import TiedEmbedding

# The default's sizes, shrunk. vocab_size: SentencePiece needs at least the corpus's
# characters and its meta pieces (24 here); from 72 on each side's pieces are whole
# words ('▁cuarenta', '▁mil'), and the sample has no more (72 target, 64 source pieces).
# Sizes and learning rate were chosen from a grid over three seeds: each reached a test
# BLEU of 99.7 or more within 8-12 epochs (about 25 s of training on 2 cores).
SHRUNK = dict(
    num_samples=3000,
    vocab_size=72,
    embedding_dim=64,
    latent_dim=128,
    learning_rate=0.007,
    epochs=15,
    batch_size=32,
    dev_bleu_sentences=150,
)
# Settings the toolkit writes into the saved config.json itself.
FILLED_IN = {"max_length", "max_length_ratio", "versions"}

MIN_BLEU = 90.0
MIN_EXACT = 0.8
BEAM_MARGIN_BLEU = 1.0


# Each padded batch shape compiles its own training step (2-3 s for this model): the test
# pads into a few shapes instead of the trainer's 10 (one per 8 of its 85 batches), about
# 10 s of compiling in all.
FEW_SHAPES = 4


class FewShapeBatches(PairBatches):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "max_shapes": FEW_SHAPES})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("default") / "model"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "PairBatches", FewShapeBatches)
        training.train(Config(**SHRUNK), model_dir, verbose=0)
    return model_dir


@pytest.fixture(scope="module")
def split(model_dir) -> Split:
    return Split.load(model_dir / "split")


@pytest.fixture(scope="module")
def held_out(model_dir, split) -> dict[str, Scores]:
    """Greedy and beam-4 scores on the saved test split."""
    system = Seq2Seq.load(model_dir)
    sources, references = [p.source for p in split.test], [p.target for p in split.test]
    return {
        "greedy": score(system.translate(sources), references),
        "beam": score(system.translate(sources, DecodingOptions(beam=4)), references),
    }


def test_the_trained_model_is_the_default_configuration(model_dir):
    saved = json.loads((model_dir / "config.json").read_text())
    default = Config().to_dict()
    assert saved.keys() == default.keys()
    differing = {name for name in default if saved[name] != default[name]}
    assert differing - FILLED_IN == set(SHRUNK)
    assert {name: saved[name] for name in SHRUNK} == SHRUNK
    config = Config.from_dict(saved)
    assert (config.level, config.input, config.tie_embeddings, config.bidirectional, config.attention) == (
        "subword",
        "embedding",
        True,
        True,
        "luong",
    )
    assert (config.optimizer, config.label_smoothing, config.dropout, config.stop_metric) == ("adam", 0.1, 0.3, "bleu")

    # and the saved network is built that way
    model = Seq2Seq.load(model_dir).model
    names = {layer.name for layer in model.layers}
    assert {"encoder_lstm", "encoder_lstm_backward", "decoder", "attention_keys", "output_bridge"} <= names
    assert "output_projection" not in names  # tied: the target embedding is the output layer
    assert isinstance(model.get_layer("target_embedding"), TiedEmbedding)
    assert model.get_layer("decoder").input_feeding
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts and all(rate == 0.3 for rate in dropouts)


def test_learns_held_out_numbers(split, held_out):
    greedy = held_out["greedy"]
    train_sources = {p.source for p in split.train}
    assert len(split.test) >= 50 and not any(p.source in train_sources for p in split.test)
    assert greedy.bleu >= MIN_BLEU and greedy.exact_match >= MIN_EXACT, greedy.table()


@pytest.mark.parametrize("setting", ["on", "off"])
def test_learns_held_out_numbers_with_or_without_bfloat16_decoding(monkeypatch, model_dir, split, setting):
    if setting == "on" and keras.backend.backend() != "jax":
        pytest.skip("bfloat16 decoding is a JAX path")
    monkeypatch.setenv("SEQ2SEQ_BF16_DECODING", setting)
    system = Seq2Seq.load(model_dir)
    greedy = score(system.translate([p.source for p in split.test]), [p.target for p in split.test])
    assert greedy.bleu >= MIN_BLEU and greedy.exact_match >= MIN_EXACT, greedy.table()


def test_beam_search_scores_at_least_as_well_as_greedy(held_out):
    greedy, beam = held_out["greedy"], held_out["beam"]
    assert beam.bleu >= greedy.bleu - BEAM_MARGIN_BLEU, f"beam 4: {beam.bleu:.1f}, greedy: {greedy.bleu:.1f}"
    assert beam.bleu >= MIN_BLEU
