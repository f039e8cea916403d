"""One calibrated confidence from the lexical and the semantic evidence.

Two steps, both with coefficients frozen below:

1. **Ranking.** Each entry gets ``rank = w_q·question + w_p·pair + w_a·answer +
   w_lex·lexical`` (``semantic.py``: best question cosine of the message or one
   of its clauses, mean of its two best question cosines, best cosine with the
   answer, a sentence of it or the topic; ``lexical.py``: word confidence 0..1).
   The best rank is the candidate answer.
2. **Confidence.** A logistic model turns the best entry's evidence into the
   probability that it is the right answer: its lexical confidence, question
   and answer cosines (absolute: an unrelated message is far from everything),
   the *margin* between its rank and the runner-up's (two entries equally close
   mean "not sure which"), and the share of the message's words that no entry
   knows ("Netflix", "router": another subject).

How they were fitted (``python bench/kb_fit.py``, rerun it after changing a
feature): on the *tuning* sets only: the shop's eval.yaml (pooled with and
without its ``synonyms:``, so that nothing assumes a business wrote synonyms),
and two sets written for that purpose, before looking at the matcher's output,
for businesses with short knowledge bases and no synonyms (evalsets/telecom,
evalsets/elearning). Each set weighs the same; in- and out-of-scope messages
weigh the same within a set, so that 0.5 is the natural threshold. Ranking
weights by grid search on top-1 accuracy; the confidence by logistic
regression (Newton, L2 0.01). The held-out sets (the shop's holdout, saas,
bank, hotel) were never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

RANK_QUESTION: Final = 1.0
RANK_PAIR: Final = 0.5
RANK_ANSWER: Final = 0.2
RANK_LEXICAL: Final = 0.4

# intercept, lexical, question, answer, margin, unknown share (fitted, see above)
CONFIDENCE: Final[tuple[float, ...]] = (-4.28, 0.23, 3.3, 7.14, 4.51, -1.61)

DEFAULT_THRESHOLD: Final = 0.5
"""Hybrid matching answers from this calibrated confidence (a probability)."""


@dataclass(frozen=True, slots=True)
class Features:
    """The evidence about one entry for one message."""

    lexical: float
    question: float
    answer: float
    margin: float  # its rank minus the best other entry's rank (negative if behind)
    unknown: float  # share of the message's weight no entry knows (0..1)

    def vector(self) -> tuple[float, float, float, float, float]:
        return (self.lexical, self.question, self.answer, self.margin, self.unknown)


def rank_score(
    lexical: npt.NDArray[np.float32],
    question: npt.NDArray[np.float32],
    pair: npt.NDArray[np.float32],
    answer: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Each entry's rank: the order in which entries are candidates for the message."""
    ranks: npt.NDArray[np.float32] = (
        RANK_QUESTION * question + RANK_PAIR * pair + RANK_ANSWER * answer + RANK_LEXICAL * lexical
    )
    return ranks


def confidence(features: Features, coefficients: Sequence[float] = CONFIDENCE) -> float:
    """Probability that this entry answers the message, in [0, 1].

    Increasing in every feature but ``unknown`` (the fitted signs): more
    evidence never lowers the confidence.
    """
    z = coefficients[0] + sum(
        c * x for c, x in zip(coefficients[1:], features.vector(), strict=True)
    )
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


# ---------------------------------------------------------------------- fitting


FloatArray = npt.NDArray[np.float64]


def fit_logistic(
    x: FloatArray, y: FloatArray, weights: FloatArray, l2: float = 0.01
) -> tuple[float, ...]:
    """Weighted L2-regularized logistic regression by Newton's method: (intercept, coefs…)."""
    design = np.c_[np.ones(len(x)), x]
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[0, 0] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (weights * (p - y)) + penalty @ w
        hessian = (design * (weights * p * (1.0 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return tuple(round(float(v), 2) for v in w)


def balanced_weights(out_of_scope: npt.NDArray[np.bool_]) -> FloatArray:
    """Sample weights giving in-scope and out-of-scope messages half the total each."""
    share = float(out_of_scope.mean())
    weights: FloatArray = np.where(out_of_scope, 0.5 / share, 0.5 / (1.0 - share))
    return weights
