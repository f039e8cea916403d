"""Fit the hybrid matcher's frozen coefficients (bot/knowledge/calibration.py).

On the shop's eval set ONLY (bot/knowledge/evalsets/shop/eval.yaml), pooled
with and without the shop's synonyms. Prints the ranking weights (grid search
on top-1 accuracy) and the confidence coefficients (class-balanced logistic
regression); paste them into calibration.py. Rerun:

    .venv/bin/python bench/kb_fit.py
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.knowledge.calibration import balanced_weights, fit_logistic  # noqa: E402
from bot.knowledge.encoder import BUILTIN, load_encoder  # noqa: E402
from bot.knowledge.evaluation import load_dataset  # noqa: E402
from bot.knowledge.lexical import LexicalIndex, Synonyms  # noqa: E402
from bot.knowledge.loader import parse  # noqa: E402
from bot.knowledge.semantic import SemanticIndex  # noqa: E402

SHOP = Path(__file__).resolve().parent.parent / "bot" / "knowledge" / "evalsets" / "shop"


def features(with_synonyms: bool) -> dict[str, np.ndarray]:
    """Per message × entry: lexical, question and answer scores; per message: unknown share."""
    entries, _threshold, synonyms = parse(SHOP / "knowledge.yaml")
    lexical = LexicalIndex(entries, Synonyms(synonyms if with_synonyms else []))
    encoder = load_encoder(BUILTIN)
    assert encoder is not None
    semantic = SemanticIndex(encoder, entries)
    ids = [e.id for e in entries]
    cases = load_dataset(SHOP / "eval.yaml")
    shape = (len(cases), len(entries))
    lex, question, answer = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    unknown, truth = np.ones(len(cases)), np.full(len(cases), -1)
    for row, case in enumerate(cases):
        scores, unknown[row] = lexical.scores(case.text, case.language)
        for number, value in scores.items():
            lex[row, number] = value
        sims = semantic.similarities(semantic.encode(case.text))
        question[row], answer[row] = sims.question, sims.answer
        if case.expected is not None:
            truth[row] = ids.index(case.expected)
    return {"L": lex, "Q": question, "A": answer, "U": unknown, "y": truth}


def main() -> None:
    pooled = [features(True), features(False)]

    def top1(weights: tuple[float, float, float]) -> float:
        hits = total = 0
        for d in pooled:
            rank = weights[0] * d["L"] + weights[1] * d["Q"] + weights[2] * d["A"]
            inside = d["y"] >= 0
            hits += int((rank.argmax(1)[inside] == d["y"][inside]).sum())
            total += int(inside.sum())
        return hits / total

    grid = itertools.product(np.arange(0.0, 1.55, 0.1), (1.0,), np.arange(0.0, 0.55, 0.05))
    # Ties go to the larger answer weight: answers matter more on knowledge bases with
    # fewer example questions than the shop's.
    weights = max(
        ((round(float(a), 2), b, round(float(c), 2)) for a, b, c in grid),
        key=lambda w: (round(top1(w), 4), w[2]),
    )
    print(f"ranking weights (lexical, question, answer): {weights}  top-1 {top1(weights):.3f}")
    rows, labels, sample = [], [], []
    for d in pooled:
        rank = weights[0] * d["L"] + weights[1] * d["Q"] + weights[2] * d["A"]
        order = np.argsort(-rank, axis=1)
        best, second, index = order[:, 0], order[:, 1], np.arange(len(rank))
        rows.append(
            np.c_[
                d["L"][index, best],
                d["Q"][index, best],
                d["A"][index, best],
                rank[index, best] - rank[index, second],
                d["U"],
            ]
        )
        labels.append(((best == d["y"]) & (d["y"] >= 0)).astype(float))
        sample.append(balanced_weights(d["y"] < 0))
    coefficients = fit_logistic(np.vstack(rows), np.concatenate(labels), np.concatenate(sample))
    print(f"CONFIDENCE (intercept, lexical, question, answer, margin, unknown): {coefficients}")


if __name__ == "__main__":
    main()
