"""One calibrated confidence from the lexical and the semantic evidence.

Two steps, both with coefficients frozen below:

1. **Ranking.** Each entry gets ``rank = w_lex·lexical + w_q·question + w_a·answer``
   (lexical confidence 0..1, best cosine with one of its example questions,
   best cosine with its answer). The best rank is the candidate answer.
2. **Confidence.** A logistic model turns the best entry's evidence into the
   probability that it is the right answer: its lexical confidence, question
   and answer cosines, the *margin* between its rank and the runner-up's (two
   entries equally close mean "not sure which"), and the share of the
   message's words that no entry knows ("Netflix", "router": another subject).

How they were fitted (``bench/kb_fit.py``, rerun it after changing a feature):
on the shop's eval set only (bot/knowledge/evalsets/shop/eval.yaml: 249
in-scope, 50 out-of-scope messages), pooled twice, once with the shop's
``synonyms:`` and once without, so that the coefficients do not assume that a
business wrote synonyms. Ranking weights by grid search on top-1 accuracy; the
confidence by logistic regression (Newton, L2 0.01) with in- and out-of-scope
messages weighted equally, so that 0.5 is the natural threshold. The other
sets (the shop's holdout, saas, bank, hotel) were never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

RANK_LEXICAL: Final = 0.9
RANK_QUESTION: Final = 1.0
RANK_ANSWER: Final = 0.1

# intercept, lexical, question, answer, margin, unknown share (fitted, see above)
CONFIDENCE: Final[tuple[float, ...]] = (-4.78, 2.19, 5.49, 4.15, 2.67, -1.92)

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
    answer: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Each entry's rank: the order in which entries are candidates for the message."""
    ranks: npt.NDArray[np.float32] = (
        RANK_LEXICAL * lexical + RANK_QUESTION * question + RANK_ANSWER * answer
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
