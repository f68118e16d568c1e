"""The textbook recipe's row of the quality table.

The recipe as published (bench/textbook.py): the first 10,000 pairs (the corpus is sorted
by length, so these are the shortest), characters, latent 256, batch 64, rmsprop, greedy
decoding with one predict() per step. Here "the first 10,000" are taken from our training
split, so the test split is the same as every other row's, and training stops after 100
epochs (the textbook's number) or the time budget. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from speed import CORPUS, load_textbook  # bench/ is this script's directory

import seq2seq  # noqa: F401  (sets the default backend before Keras is imported)
from seq2seq.config import Config
from seq2seq.evaluation import score
from seq2seq.training import prepare_data


def main() -> None:
    import keras

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", choices=["eng-spa", "spa-eng"], required=True)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    textbook = load_textbook()
    split = prepare_data(Config(data=str(CORPUS), reverse=args.direction == "spa-eng", seed=1))
    train_pairs = [(p.source, p.target) for p in split.train[: args.num_samples]]
    data = textbook.vectorize(train_pairs, "char")
    model = textbook.build_model(data.num_encoder_tokens, data.num_decoder_tokens, 256)

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if time.perf_counter() - self.start > args.minutes * 60:
                self.model.stop_training = True

    budget = Budget()
    started = time.perf_counter()
    history = textbook.train(model, data, batch_size=64, epochs=args.epochs, verbose=2, callbacks=[budget])
    minutes = (time.perf_counter() - started) / 60
    encoder, decoder = textbook.inference_models(model, 256)

    def translate(texts):
        inputs = textbook.encode_inputs(texts, data)
        return [textbook.decode_sequence(inputs[i : i + 1], encoder, decoder, data) for i in range(len(texts))]

    started = time.perf_counter()
    hypotheses = translate([p.source for p in split.test])
    decode_seconds = time.perf_counter() - started
    scores = score(hypotheses, [p.target for p in split.test])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hypotheses.txt").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    record = {
        "settings": f"bench/textbook.py recipe: first {args.num_samples} training pairs, char, latent 256, "
        f"batch 64, rmsprop, up to {args.epochs} epochs / {args.minutes} min",
        "decoding": "greedy (textbook loop)",
        "bleu": round(scores.bleu, 1),
        "chrf": round(scores.chrf, 1),
        "exact_match": round(scores.exact_match, 3),
        "test_sentences": scores.sentences,
        "training_minutes": round(minutes, 1),
        "epochs": len(history.history["loss"]),
        "decode_seconds": round(decode_seconds, 1),
        "script": f"python bench/quality.py {args.direction}/textbook",
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
