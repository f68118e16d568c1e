"""Scoring generated text against references: exact match, BLEU and chrF (sacrebleu)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sacrebleu


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

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

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
