"""The knowledge base: knowledge.yaml loaded, validated, indexed, and matched.

Matching gives a message the entry that answers it and a confidence in [0, 1].

How a message is scored (everything but the last step is precomputed at load;
a match takes about 0.1 ms for 36 entries):

1. Words are folded (case, accents), elisions and contractions resolved, stop
   words dropped (``bot.text``). Words and phrases of a synonym group of the
   file ("colis" = "paquet" = "parcel", "mot de passe" = "password") become one
   concept term, whatever the language; a phrase's own words stay, lighter.
2. Every other word becomes a Snowball stem, tagged with its language unless
   both languages stem it alike ("fr:livr", "*:paypal"). The message's language
   is guessed from its function words and vocabulary; a word is looked up with
   that language's stemmer first, then the other's, so an English message finds
   an entry through its English questions even in a French conversation. A word
   found neither way is matched to a known word one typo away (rapidfuzz, OSA).
3. Each term weighs its IDF over entries. A word no entry knows weighs more than
   any known one ("pizza", "router": another subject), unless it is an everyday
   word ("hier", "really"), which weighs little.
4. For each entry, ``coverage`` = share of the message's weight that the entry
   explains (through its questions fully, its topic and answer partly; words
   other entries explain count half, and long messages' extra words less), and
   ``fit`` = best share of one example question found in the message. The
   confidence is coverage ** 0.7 × fit ** 0.3: a message that says much more
   than any question, and one matching a single generic word, both stay low.

The constants below were tuned on bot/knowledge/evalsets/shop/eval.yaml;
holdout.yaml beside it, never used for tuning, checks that they generalize.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from rapidfuzz import process
from rapidfuzz.distance import OSA

from bot.knowledge import text as textmod
from bot.knowledge.entries import KbEntry

LANGUAGES: Final = textmod.LANGUAGES

# Scoring constants, tuned on the labelled set (evalsets/shop/eval.yaml). "Rarest IDF"
# is the IDF of a term found in exactly one entry: the scale of every weight.
ANSWER_STRENGTH: Final = 0.35  # a word found only in an entry's answer/topic explains this much
ANSWER_DF_SHARE: Final = 0.1  # an answer-only occurrence counts this much in document frequency
OTHER_LANGUAGE_QUALITY: Final = 0.9  # a word matched with the other language's stemmer
UNKNOWN_WEIGHT_FACTOR: Final = 1.6  # unknown word weight, as a share of the rarest term's IDF
FUZZY_MIN_LENGTH: Final = 5  # shorter words are not fuzzy-matched: too many false friends
FUZZY_TWO_EDITS_LENGTH: Final = 9  # from this length two typos are forgiven, else one
LONG_MESSAGE_WORDS: Final = 6.0  # content words after which a message counts as long
LONG_MESSAGE_POWER: Final = 0.5  # how fast unexplained words of long messages stop counting
COMMON_WEIGHT_FACTOR: Final = 0.2  # an unknown everyday word ("hier", "really"), same scale
KNOWN_ELSEWHERE_WEIGHT: Final = 0.5  # weight of words other entries explain, vs unknown words
PHRASE_WORD_SHARE: Final = 0.35  # weight of each word of a synonym phrase, beside the concept
COVERAGE_EXPONENT: Final = 0.7  # confidence = coverage ** a * fit ** (1 - a)
FIT_FLOOR: Final = 1.2  # fit divides by at least this many rarest IDFs: a question made
# of one common word ("Where is my order?") cannot be fully fitted by that word alone
_Sums = tuple[list[float], list[float], float, float, float]  # ``LexicalIndex._gather``

# ---------------------------------------------------------------------- analysis


_KEEP_FINAL_S = ("ss", "us", "is", "ys")  # "colis", "pays", "fois" are not plurals


def _phrase_key(word: str) -> str:
    """Folded word with a plural "s"/"x" dropped: how synonym items are compared."""
    folded = textmod.fold(word)
    if len(folded) > 3 and folded[-1] in "sx" and not folded.endswith(_KEEP_FINAL_S):
        return folded[:-1]
    return folded


def _content(text: str) -> list[str]:
    """The words that carry meaning: no stop word, no stray letter ("t" of "t-shirt")."""
    return [
        w
        for w in textmod.words(text)
        if (len(w) > 1 or w.isdigit()) and not textmod.is_stop_word(w)
    ]


def synonym_key(item: str) -> tuple[str, ...]:
    """How a synonym item is compared with a message: its content words, plural-free."""
    return tuple(_phrase_key(w) for w in _content(item))


@dataclass(frozen=True, slots=True)
class _Word:
    """One content word of a message, folded, with its synonym concept if any."""

    surface: str
    concept: str | None  # synonym group term, if the word (or phrase) is in one
    digits: bool
    share: float = 1.0  # below 1 for the words of a phrase already counted as a concept


class Synonyms:
    """Synonym groups of the file, matched as words or phrases of content words.

    Phrases are compared after stop words are dropped, so "send back" also
    matches "send them back". A single word matches as written (plural or not),
    else by its stem ("remboursez" → the group of "rembourser").
    """

    STEM_MIN_LENGTH: Final = 4

    def __init__(self, groups: Sequence[Sequence[str]]) -> None:
        self.phrases: dict[tuple[str, ...], str] = {}
        self.single_words: dict[str, str] = {}  # folded one-word items, for typo matching
        self.stems: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
        for number, group in enumerate(groups):
            concept = f"~{number}"
            for item in group:
                key = synonym_key(item)
                if not key:
                    continue
                self.phrases[key] = concept
                if len(key) == 1:
                    word = textmod.fold(_content(item)[0])
                    self.single_words[word] = concept
                    if len(word) >= self.STEM_MIN_LENGTH:
                        for lang in LANGUAGES:
                            self.stems[lang].setdefault(textmod.stem(word, lang), concept)
        self.longest = max((len(k) for k in self.phrases), default=0)

    def _single(self, word: str, key: str) -> str | None:
        concept = self.phrases.get((key,))
        if concept is None and len(word) >= self.STEM_MIN_LENGTH and not word.isdigit():
            for lang in LANGUAGES:
                stems = self.stems[lang]  # empty without synonym groups: nothing to stem
                concept = stems.get(textmod.stem(word, lang)) if stems else None
                if concept is not None:
                    break
        return concept

    def words(self, text: str) -> list[_Word]:
        """Content words of ``text``, phrases of a synonym group collapsed to its concept."""
        raw = _content(text)
        keys = [_phrase_key(w) for w in raw]
        out: list[_Word] = []
        i = 0
        while i < len(raw):
            for size in range(min(self.longest, len(raw) - i), 1, -1):
                concept = self.phrases.get(tuple(keys[i : i + size]))
                if concept is not None:
                    # The phrase as one concept, and its words too: "code" alone must
                    # still meet "code promo".
                    out.append(_Word(keys[i], concept, False))
                    out.extend(
                        _Word(textmod.fold(w), None, w.isdigit(), PHRASE_WORD_SHARE)
                        for w in raw[i : i + size]
                    )
                    i += size
                    break
            else:
                word = raw[i]
                i += 1
                folded = textmod.fold(word)
                out.append(_Word(folded, self._single(folded, keys[i - 1]), word.isdigit()))
        return out


def _term(word: str, language: str) -> str:
    """The index term of a word: its stem, tagged with its language unless both
    languages stem it alike ("paypal", "code", "newsletter" are the same word in both)."""
    stemmed = textmod.stem(word, language)
    other = "en" if language == "fr" else "fr"
    if textmod.stem(word, other) == stemmed:
        return f"*:{stemmed}"
    return f"{language}:{stemmed}"


# ---------------------------------------------------------------------- index


@dataclass(frozen=True, slots=True)
class _Question:
    entry: int
    terms: Mapping[str, float]  # term → share (1, or less for the words of a phrase)
    mass: float  # sum of the IDF × share of its terms


@dataclass(frozen=True, slots=True)
class Evidence:
    """How well one entry explains one message (weights are IDF sums)."""

    mass: float  # weight of the message the entry explains
    total: float  # weight of the whole message
    unknown: float  # weight of the message's words that no entry knows
    fit: float  # best share of one example question found in the message
    discount: float  # 1, or less for long messages: their unexplained words count less

    @property
    def coverage(self) -> float:
        """Share of the message the entry explains.

        Words the knowledge base knows but this entry does not count less than
        unknown words: the first point at another entry, the second at another
        subject altogether ("pizza", "wifi").
        """
        known_elsewhere = max(0.0, self.total - self.unknown - self.mass)
        unexplained = KNOWN_ELSEWHERE_WEIGHT * known_elsewhere + self.unknown
        return self.mass / (self.mass + self.discount * unexplained)


def confidence(evidence: Evidence) -> float:
    """One number in [0, 1]: how sure we are that this entry answers the message."""
    a = COVERAGE_EXPONENT
    score: float = (evidence.coverage**a) * (evidence.fit ** (1.0 - a))
    return min(1.0, score)


class LexicalIndex:
    """Everything ``match`` needs, computed once from the entries."""

    def __init__(self, entries: Sequence[KbEntry], synonyms: Synonyms) -> None:
        self.synonyms = synonyms
        self.surfaces: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
        question_terms: list[tuple[int, dict[str, float]]] = []
        entry_strength: list[dict[str, float]] = []
        for number, entry in enumerate(entries):
            strength: dict[str, float] = {}
            for language, phrasings in entry.questions.items():
                for phrasing in phrasings:
                    terms: dict[str, float] = {}
                    for term, share in self._index_terms(phrasing, language, question=True):
                        terms[term] = max(share, terms.get(term, 0.0))
                    if terms:
                        question_terms.append((number, terms))
                    strength.update(dict.fromkeys(terms, 1.0))
            extra = [(entry.topic.replace("-", " "), lang) for lang in LANGUAGES]
            extra += list((answer, lang) for lang, answer in entry.answers.items())
            for body, language in extra:
                for term, _share in self._index_terms(body, language, question=False):
                    strength.setdefault(term, ANSWER_STRENGTH)
            entry_strength.append(strength)

        count = len(entries)
        # Document frequency counts a term found only in an answer as a fraction of a
        # document: answers are long and say "livraison" everywhere, which must not make
        # the word look common among the questions customers actually ask.
        document_frequency: dict[str, float] = {}
        for strength in entry_strength:
            for term, value in strength.items():
                share = 1.0 if value >= 1.0 else ANSWER_DF_SHARE
                document_frequency[term] = document_frequency.get(term, 0.0) + share
        self.idf = {
            term: math.log(1.0 + (count - df + 0.5) / (df + 0.5))
            for term, df in document_frequency.items()
        }
        rarest = math.log(1.0 + (count - 0.5) / 1.5)  # a term of exactly one entry
        self.unknown_weight = UNKNOWN_WEIGHT_FACTOR * rarest
        self.common_weight = COMMON_WEIGHT_FACTOR * rarest
        self.fit_floor = FIT_FLOOR * rarest
        self.questions = [
            _Question(entry, terms, sum(self.idf[t] * share for t, share in terms.items()))
            for entry, terms in question_terms
        ]
        self.question_postings: dict[str, list[tuple[int, float]]] = {}
        for number, question in enumerate(self.questions):
            for term, share in question.terms.items():
                self.question_postings.setdefault(term, []).append((number, share))
        self.entry_postings: dict[str, list[tuple[int, float]]] = {}
        for number, strength in enumerate(entry_strength):
            for term, value in strength.items():
                self.entry_postings.setdefault(term, []).append((number, value))
        self.entry_count = count
        # (pool, first letter) → (words, their terms): pools are fr, en and "*" (synonyms)
        self._fuzzy_choices: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        pools = [(lang, self.surfaces[lang]) for lang in LANGUAGES]
        pools.append(("*", {w: c for w, c in synonyms.single_words.items() if c in self.idf}))
        for pool, vocabulary in pools:
            for word, term in vocabulary.items():
                pool_words, pool_terms = self._fuzzy_choices.setdefault((pool, word[0]), ([], []))
                pool_words.append(word)
                pool_terms.append(term)
        self._lang_vocab = {
            lang: frozenset(self.surfaces[lang]) - frozenset(self.surfaces[other])
            for lang, other in (("fr", "en"), ("en", "fr"))
        }

    def _index_terms(self, body: str, language: str, question: bool) -> Iterator[tuple[str, float]]:
        """Terms of an example question (whose words also feed typo matching) or answer."""
        for word in self.synonyms.words(body):
            if word.concept is not None:
                yield word.concept, word.share
            elif word.digits:
                yield f"#{word.surface}", word.share
            else:
                term = _term(word.surface, language)
                if question:
                    self.surfaces[language].setdefault(word.surface, term)
                yield term, word.share

    # -------------------------------------------------------------- queries

    def language_of(self, words: Sequence[_Word], hint: str | None) -> str | None:
        """The message's language from stop words and vocabulary; the hint breaks ties."""
        fr, en = textmod.language_votes(w.surface for w in words)
        raw_fr, raw_en = 0, 0
        for word in words:
            if word.surface in self._lang_vocab["fr"]:
                raw_fr += 1
            elif word.surface in self._lang_vocab["en"]:
                raw_en += 1
        fr, en = fr + raw_fr, en + raw_en
        if fr > en:
            return "fr"
        if en > fr:
            return "en"
        return hint if hint in LANGUAGES else None

    @lru_cache(maxsize=8192)  # noqa: B019 - the index lives as long as the process
    def fuzzy(self, surface: str, first: str) -> tuple[str, float] | None:
        """The known word a typo'd one stands for, and how close it is (0..1).

        One edit (OSA: insert, delete, substitute, swap) is forgiven from 5 letters,
        two from 9; only words of example questions and synonyms are candidates,
        and only those with the same first letter: typos rarely hit the first
        letter, and "montre" must not become "contre".
        """
        length = len(surface)
        if length < FUZZY_MIN_LENGTH or surface.isdigit():
            return None
        allowed = 2 if length >= FUZZY_TWO_EDITS_LENGTH else 1
        best: tuple[str, float] | None = None
        other = "en" if first == "fr" else "fr"
        for pool in (first, other, "*"):
            choices = self._fuzzy_choices.get((pool, surface[0]))
            if not choices:
                continue
            found = process.extractOne(
                surface, choices[0], scorer=OSA.distance, score_cutoff=allowed
            )
            if found is not None:
                quality = 1.0 - found[1] / max(length, len(found[0]))
                if best is None or quality > best[1]:
                    best = (choices[1][found[2]], quality)
        return best

    def _known_terms(self, surface: str, language: str) -> list[str]:
        """Index terms with this word's stem in ``language``: tagged, or shared by both
        languages ("arrivée" gave "fr:arriv", "arrivé" gave "*:arriv")."""
        stemmed = textmod.stem(surface, language)
        return [t for t in (f"{language}:{stemmed}", f"*:{stemmed}") if t in self.idf]

    def candidates(self, word: _Word, language: str | None) -> tuple[dict[str, float], float]:
        """Terms a word may stand for, with their quality, and the word's weight."""
        if word.concept is not None:
            if word.concept in self.idf:
                return {word.concept: 1.0}, self.idf[word.concept]
            return {}, self.unknown_weight
        if word.digits:
            term = f"#{word.surface}"
            return ({term: 1.0}, self.idf[term]) if term in self.idf else ({}, 0.0)
        order = (language,) if language else LANGUAGES
        found: dict[str, float] = {}
        for lang in order:
            found.update(dict.fromkeys(self._known_terms(word.surface, lang), 1.0))
        if not found and language is not None:
            other = "en" if language == "fr" else "fr"
            found.update(
                dict.fromkeys(self._known_terms(word.surface, other), OTHER_LANGUAGE_QUALITY)
            )
        if not found:
            near = self.fuzzy(word.surface, language or "fr")
            if near is not None:
                found[near[0]] = near[1]
        if not found:
            if textmod.is_common_word(word.surface):
                return {}, self.common_weight
            return {}, self.unknown_weight
        return found, max(self.idf[t] for t in found)

    def _gather(self, text: str, language: str | None) -> _Sums | None:
        """Per entry its ``Evidence`` mass and fit, then the message's total and unknown
        weights and its discount; None when the message weighs nothing."""
        words = self.synonyms.words(text)
        if not words:
            return None
        lang = self.language_of(words, language)
        matched: dict[str, tuple[float, float]] = {}  # term → (quality, share)
        entry_mass = [0.0] * self.entry_count
        total = unknown = 0.0
        seen: set[str] = set()
        for word in words:
            found, weight = self.candidates(word, lang)
            key = next(iter(found)) if found else word.surface
            if key in seen:  # a repeated word says nothing new
                continue
            seen.add(key)
            share = word.share
            weight *= share
            total += weight
            if not found:
                unknown += weight
            best: dict[int, float] = {}
            for term, quality in found.items():
                if matched.get(term, (0.0, 0.0))[0] < quality:
                    matched[term] = (quality, share)
                for entry, strength in self.entry_postings.get(term, ()):
                    value = quality * strength
                    if best.get(entry, 0.0) < value:
                        best[entry] = value
            for entry, value in best.items():
                entry_mass[entry] += weight * value
        if total <= 0.0:
            return None
        fit = [0.0] * self.entry_count
        question_mass: dict[int, float] = {}
        for term, (quality, share) in matched.items():
            gain = self.idf[term] * quality
            for number, question_share in self.question_postings.get(term, ()):
                value = gain * min(share, question_share)
                question_mass[number] = question_mass.get(number, 0.0) + value
        for number, mass in question_mass.items():
            question = self.questions[number]
            share = mass / max(question.mass, self.fit_floor)
            if share > fit[question.entry]:
                fit[question.entry] = share
        # Long messages carry context ("it's for my son's birthday"): past a few words,
        # what an entry leaves unexplained counts less and less, as length does in BM25.
        discount = min(1.0, (LONG_MESSAGE_WORDS / len(seen)) ** LONG_MESSAGE_POWER)
        return entry_mass, fit, total, unknown, discount

    def scores(self, text: str, language: str | None) -> tuple[dict[int, float], float]:
        """Lexical confidence per entry (non-zero ones), and the share of the message's
        weight that no entry knows (1 when none is known): ``confidence(Evidence(...))``
        written out (same operations and floats; an object and two calls an entry were
        half of a long message's time)."""
        sums = self._gather(text, language)
        if sums is None:
            return {}, 1.0
        entry_mass, fit, total, unknown, discount = sums
        a, rest = COVERAGE_EXPONENT, 1.0 - COVERAGE_EXPONENT
        out: dict[int, float] = {}
        for number, mass in enumerate(entry_mass):
            if mass > 0.0:
                known_elsewhere = max(0.0, total - unknown - mass)
                unexplained = KNOWN_ELSEWHERE_WEIGHT * known_elsewhere + unknown
                coverage = mass / (mass + discount * unexplained)
                out[number] = min(1.0, (coverage**a) * (fit[number] ** rest))
        return (out, unknown / total) if out else ({}, 1.0)
