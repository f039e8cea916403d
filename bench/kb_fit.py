"""Fit the hybrid matcher's frozen coefficients (bot/knowledge/calibration.py).

On the TUNING sets only: the shop's eval.yaml (pooled with and without the
shop's synonyms) and the sets whose eval.yaml says ``tuning: true`` (telecom,
elearning, energy, fitness, rental: written before looking at the matcher's
output). The held-out sets (shop/holdout, saas, bank, hotel) are never read.
Prints the ranking weights (grid search on top-1 accuracy) and the confidence
coefficients (logistic regression, every set weighing the same, in and out of
scope balanced within each); paste them into calibration.py. Rerun:

    .venv/bin/python bench/kb_fit.py [QUESTION PAIR ANSWER LEXICAL]  # fixed weights
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.knowledge.calibration import SPREAD_FLOOR, fit_logistic  # noqa: E402
from bot.knowledge.encoder import BUILTIN, load_encoder  # noqa: E402
from bot.knowledge.evaluation import load_dataset, shipped_sets  # noqa: E402
from bot.knowledge.lexical import LexicalIndex, Synonyms  # noqa: E402
from bot.knowledge.loader import parse  # noqa: E402
from bot.knowledge.semantic import SemanticIndex  # noqa: E402

Data = dict[str, np.ndarray]


def features(knowledge: Path, dataset: Path, with_synonyms: bool) -> Data:
    """Per message × entry: lexical, question, pair and answer scores; per message:
    unknown share and the expected entry's number (-1: out of scope)."""
    entries, _threshold, synonyms = parse(knowledge)
    lexical = LexicalIndex(entries, Synonyms(synonyms if with_synonyms else []))
    encoder = load_encoder(BUILTIN)
    assert encoder is not None
    semantic = SemanticIndex(encoder, entries)
    ids = [e.id for e in entries]
    cases = load_dataset(dataset)
    shape = (len(cases), len(entries))
    lex, question, pair, answer = (np.zeros(shape) for _ in range(4))
    unknown, truth = np.ones(len(cases)), np.full(len(cases), -1)
    for row, case in enumerate(cases):
        scores, unknown[row] = lexical.scores(case.text, case.language)
        for number, value in scores.items():
            lex[row, number] = value
        sims = semantic.similarities(semantic.encode(case.text))
        question[row], pair[row], answer[row] = sims.question, sims.pair, sims.answer
        if case.expected is not None:
            truth[row] = ids.index(case.expected)
    return {"L": lex, "Q": question, "P": pair, "A": answer, "U": unknown, "y": truth}


def tuning_data() -> list[tuple[str, Data, float]]:
    """(name, features, weight) of every tuning set; the shop's two poolings share one."""
    out = []
    for item in shipped_sets():
        if not item.tuned:
            continue
        if item.name.startswith("shop"):
            out.append(("shop", features(item.knowledge, item.dataset, True), 0.5))
            out.append(("shop-nosyn", features(item.knowledge, item.dataset, False), 0.5))
        else:
            out.append((item.name, features(item.knowledge, item.dataset, True), 1.0))
    return out


def rank(d: Data, weights: tuple[float, float, float, float]) -> np.ndarray:
    q, p, a, lex = weights
    ranked: np.ndarray = q * d["Q"] + p * d["P"] + a * d["A"] + lex * d["L"]
    return ranked


def main() -> None:
    pooled = tuning_data()

    def top1(weights: tuple[float, float, float, float]) -> float:
        score = 0.0
        for _name, d, weight in pooled:
            inside = d["y"] >= 0
            hits = rank(d, weights).argmax(1)[inside] == d["y"][inside]
            score += weight * float(hits.mean())
        return score / sum(w for _n, _d, w in pooled)

    grid = itertools.product(
        (1.0,), (0.0, 0.5, 1.0), np.arange(0.0, 1.01, 0.2), np.arange(0, 1.21, 0.2)
    )
    weights = max(
        ((q, p, round(float(a), 1), round(float(lex), 1)) for q, p, a, lex in grid),
        key=lambda w: round(top1(w), 4),
    )
    if len(sys.argv) == 5:  # explicit weights: question pair answer lexical
        weights = (float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    print(
        f"ranking weights (question, pair, answer, lexical): {weights}  top-1 {top1(weights):.3f}"
    )
    rows, labels, sample, margins = [], [], [], []
    for name, d, weight in pooled:
        ranked = rank(d, weights)
        order = np.argsort(-ranked, axis=1)
        best, second, index = order[:, 0], order[:, 1], np.arange(len(ranked))
        scale = np.maximum(ranked.std(axis=1), SPREAD_FLOOR)
        rows.append(
            np.c_[
                d["L"][index, best],
                d["P"][index, best],
                d["A"][index, best],
                (ranked[index, best] - ranked[index, second]) / scale,
                d["U"],
            ]
        )
        margins.append(((ranked[index, best] - ranked[index, second]) / scale)[best == d["y"]])
        labels.append(((best == d["y"]) & (d["y"] >= 0)).astype(float))
        out = d["y"] < 0
        share = float(out.mean())
        balanced = np.where(out, 0.5 / share, 0.5 / (1.0 - share)) / len(out)
        sample.append(weight * balanced)
        inside = d["y"] >= 0
        print(f"  {name:<12} top-1 {float((best == d['y'])[inside].mean()):.3f}")
    x, y, w = np.vstack(rows), np.concatenate(labels), np.concatenate(sample)
    coefficients = fit_logistic(x, y, w * len(w) / w.sum())
    print(f"CONFIDENCE (intercept, lexical, pair, answer, margin, unknown): {coefficients}")
    right = np.concatenate(margins)
    print(
        f"scaled margin of right answers: median {np.median(right):.2f}, "
        f"90th percentile {np.percentile(right, 90):.2f} (LONE_MARGIN)"
    )


if __name__ == "__main__":
    main()
