"""Grouping customer questions by meaning: the knowledge author's to-do list.

The questions the bot could not answer (or whose answer did not help) are grouped so
that "vous livrez en Allemagne ?" and "do you ship to Germany" count as one gap. With
a sentence encoder, each question is encoded and joins the group whose centroid is the
closest by cosine, if at least ``threshold``; otherwise it starts a new group (greedy
centroid clustering, one pass, most frequent wordings first). With
``knowledge.encoder: none`` the vectors are bags of folded content words (hashed), so
only questions that share their words group together.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from bot.knowledge.encoder import Encoder, Matrix, normalized
from bot.knowledge.text import fold, folded_words, is_stop_word

SEMANTIC_THRESHOLD: Final = 0.55
"""USE multilingual cosine to a group's centre for a question to join it. On the shipped
sets' in-scope phrasings (200 a set), grouped blind and scored against their entries:
B-cubed precision 0.71–0.84 at 0.55 (0.63–0.78 at 0.5, 0.81–0.92 at 0.6); recall is low
at any threshold (0.22–0.35) because those phrasings are deliberately far apart. A gap
list should not mix questions, so precision wins."""
LEXICAL_THRESHOLD: Final = 0.4
"""Bag-of-words cosine (``knowledge.encoder: none``): precision 0.68–0.92 on the same sets."""
HASHED_WORDS: Final = 4096
EXAMPLES: Final = 5


@dataclass(frozen=True, slots=True)
class QuestionGroup:
    """Questions asking the same thing: the one closest to the group's centre, how many,
    and up to ``EXAMPLES`` distinct wordings (the representative first)."""

    question: str
    count: int
    examples: tuple[str, ...]
    members: tuple[int, ...]  # indexes into the grouped texts


def _bag_of_words(texts: Sequence[str]) -> Matrix:
    rows = np.zeros((len(texts), HASHED_WORDS), dtype=np.float32)
    for number, text in enumerate(texts):
        content = [w for w in folded_words(text) if not is_stop_word(w)] or list(folded_words(text))
        for word in content:
            rows[number, zlib.crc32(word.encode()) % HASHED_WORDS] = 1.0
    return normalized(rows)


def group_questions(
    texts: Sequence[str], encoder: Encoder | None, threshold: float | None = None
) -> list[QuestionGroup]:
    """Group ``texts`` by meaning, largest group first (then the earliest asked)."""
    if not texts:
        return []
    keys = [" ".join(folded_words(t)) or fold(t) for t in texts]
    frequency = Counter(keys)
    distinct = list(dict.fromkeys(keys))  # first-asked order
    wording = {key: texts[keys.index(key)] for key in distinct}
    if encoder is not None:
        vectors = encoder.encode([wording[k] for k in distinct])
        limit = SEMANTIC_THRESHOLD if threshold is None else threshold
    else:
        vectors = _bag_of_words([wording[k] for k in distinct])
        limit = LEXICAL_THRESHOLD if threshold is None else threshold
    order = sorted(range(len(distinct)), key=lambda n: -frequency[distinct[n]])
    sums: list[np.ndarray] = []
    groups: list[list[int]] = []
    for number in order:
        vector = vectors[number]
        best, best_cosine = -1, limit
        for index, total in enumerate(sums):
            norm = float(np.linalg.norm(total))
            cosine = float(total @ vector) / norm if norm else 0.0
            if cosine >= best_cosine:
                best, best_cosine = index, cosine
        if best < 0:
            sums.append(vector.astype(np.float32).copy())
            groups.append([number])
        else:
            sums[best] += vector
            groups[best].append(number)
    members_of = {key: [i for i, k in enumerate(keys) if k == key] for key in distinct}
    result: list[QuestionGroup] = []
    for total, group in zip(sums, groups, strict=True):
        closest = max(group, key=lambda n: (float(vectors[n] @ total), frequency[distinct[n]]))
        wordings = [closest] + sorted(
            (n for n in group if n != closest), key=lambda n: -frequency[distinct[n]]
        )
        members = tuple(sorted(i for n in group for i in members_of[distinct[n]]))
        result.append(
            QuestionGroup(
                question=wording[distinct[closest]],
                count=len(members),
                examples=tuple(wording[distinct[n]] for n in wordings[:EXAMPLES]),
                members=members,
            )
        )
    result.sort(key=lambda g: (-g.count, g.members[0]))
    return result
