"""Scoring generated text against references: exact match, BLEU and chrF (sacrebleu)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sacrebleu

from .batches import PairBatches
from .data import Pair
from .decoding import DecodingOptions
from .files import write_atomic

if TYPE_CHECKING:
    from .api import Seq2Seq


@dataclass
class Scores:
    """Corpus-level scores of hypotheses against one reference each."""

    sentences: int
    exact_match: float  # share of hypotheses identical to their reference, in [0, 1]
    bleu: float  # sacrebleu corpus BLEU, 0-100
    chrf: float  # sacrebleu corpus chrF, 0-100
    bleu_signature: str
    chrf_signature: str
    extra: dict[str, float] = field(default_factory=dict)
    settings: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def table(self) -> str:
        rows = [
            ("sentences", f"{self.sentences}"),
            ("exact match", f"{100 * self.exact_match:.1f}%"),
            ("BLEU", f"{self.bleu:.1f}"),
            ("chrF", f"{self.chrf:.1f}"),
            *((name, f"{value:.4g}") for name, value in self.extra.items()),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"BLEU signature: {self.bleu_signature}", f"chrF signature: {self.chrf_signature}"]
        return "\n".join(lines)


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Scores:
    """Exact match, corpus BLEU (13a tokenization, cased) and chrF, as sacrebleu computes them."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise ValueError("nothing to score: no references")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    refs = [list(references)]
    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references)
    return Scores(
        sentences=len(references),
        exact_match=exact,
        bleu=bleu.corpus_score(hypotheses, refs).score,
        chrf=chrf.corpus_score(hypotheses, refs).score,
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
    )


def teacher_forced_loss(
    system: Seq2Seq, pairs: Sequence[Pair], batch_size: int = 64, source_ids: Sequence[Sequence[int]] | None = None
) -> float:
    """Mean cross-entropy (nats) per real target token, <end> included, with the true
    previous token as decoder input (as in training, without label smoothing). One pass:
    sources padded coarsely, to compile fewer shapes. `source_ids`: the sources as
    `system.encode` gave them (cut to its max_source_tokens), else encoded so here."""
    if source_ids is None:
        source_ids = system.encode([p.source for p in pairs])
    target = system.target
    batches = PairBatches(  # as PairBatches.from_pairs makes them, from the ids
        source_ids,
        [target.encode(p.target) for p in pairs],
        batch_size=batch_size,
        shuffle=False,
        fine_sources=False,
        max_tokens=PairBatches.OUTPUT_ELEMENTS // len(target),
        target_cost=1 + len(target) / (4 * system.config.latent_dim),
    )
    total, count = 0.0, 0
    for index in range(len(batches)):
        inputs, targets = batches[index]
        logits = np.asarray(system.model.predict_on_batch(inputs), dtype="float64")
        logits -= logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        real = targets != 0
        total -= float(picked[real].sum())
        count += int(real.sum())
    return total / max(count, 1)


def evaluate(
    system: Seq2Seq,
    pairs: Sequence[Pair],
    options: DecodingOptions | None = None,
    report: Callable[[int, int], None] | None = None,
) -> tuple[Scores, list[str]]:
    """Decode the sources, score against the targets; add loss and perplexity. A source
    longer than the system's max_source_tokens is cut, and reported once (`report(index,
    tokens)`, else a warning), or refused (SourceTooLong) if the system is strict."""
    options = options or DecodingOptions()
    source_ids = system.encode([p.source for p in pairs], report)
    hypotheses = [system.target.decode(best[0][0]) for best in system.generate(source_ids, options)]
    scores = score(hypotheses, [p.target for p in pairs])
    loss = teacher_forced_loss(system, pairs, options.batch_size, source_ids)
    scores.extra.update(loss=loss, perplexity=math.exp(min(loss, 700)))
    scores.settings = {
        "decoding": "sampling" if options.sample else f"beam {options.beam}" if options.beam > 1 else "greedy",
        "length_penalty": options.length_penalty if options.beam > 1 else None,
        "max_length": system.output_limits(options).max_length,
    }
    return scores, hypotheses
