"""Small rule-based classifiers for what a customer's message *does*, not what it asks.

These rules decide handoffs, so they favour precision: a message is a complaint
or a request for a person only on clear words, and "yes"/"no" only when that is
the whole gist of a short message. Everything else is ``Intent.NONE`` and goes to
the knowledge base.

Order of precedence: COMPLAINT > HUMAN > YES / NO > THANKS > GREETING > NONE.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

from bot.knowledge.text import fold


class Intent(StrEnum):
    HUMAN = "human"
    COMPLAINT = "complaint"
    YES = "yes"
    NO = "no"
    GREETING = "greeting"
    THANKS = "thanks"
    NONE = "none"


_APOSTROPHES = str.maketrans({"'": " ", "’": " ", "`": " "})
_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> tuple[str, ...]:
    """Folded words, elisions kept as words ("n'importe" → "n", "importe").

    Unlike ``bot.knowledge.text.words`` this keeps the « n' » of a negation: here it matters.
    """
    return tuple(_TOKEN.findall(fold(text).translate(_APOSTROPHES)))


def _word_set(words: str) -> frozenset[str]:
    """A set of words written as text (easier to read and edit than a literal)."""
    return frozenset(words.split())


def _phrases(*items: str) -> tuple[tuple[str, ...], ...]:
    """Phrases as tuples of tokens, the form messages are compared in."""
    return tuple(t for t in (_tokens(item) for item in items) if t)


# ------------------------------------------------------------------ vocabulary

# A word or phrase asking for a person, in any context.
_HUMAN_TRIGGERS: Final = _phrases(
    "conseiller", "conseillere", "conseillers", "humain", "humaine", "un etre humain",
    "operateur", "operatrice", "vrai agent", "vraie personne", "une vraie personne",
    "personne reelle", "agent", "agents", "human", "humans", "real person", "real human",
    "actual person", "live person", "live agent", "live chat agent", "representative",
    "customer service representative", "operator", "someone real",
)  # fmt: skip
# A verb of talking followed (closely) by a person.
_TALK_VERBS: Final = _word_set(
    "parler parle parlez parlons discuter discute echanger joindre contacter avoir "
    "passer passez mettre talk talking speak speaking chat chatting connect transfer "
    "put get"
)
_PERSONS: Final = _word_set(
    "quelqu quelquun personne conseiller conseillere humain humaine responsable "
    "vendeur vendeuse agent someone somebody person human agent manager supervisor "
    "representative operator"
)
_REQUEST_CUES: Final = _word_set(
    "veux voudrais voudrait souhaite souhaiterais aimerais besoin demande svp stp "
    "please want need like can could get give passez mettez transferer transfer "
    "parler talk speak"
)
# "agent de livraison" / "delivery agent" are not a request for a person.
_NOT_HUMAN: Final = _phrases("agent de livraison", "delivery agent", "agent immobilier")

_COMPLAINT_WORDS: Final = _word_set(
    """
    reclamation reclamations plainte plaintes litige litiges complaint complaints
    dispute disputes inadmissible inadmissibles scandaleux scandaleuse scandale
    arnaque arnaques arnaqueur arnaqueurs arnaquer arnaque escroc escrocs escroquerie
    voleurs voleur honteux honteuse honte inacceptable inacceptables intolerable
    lamentable lamentables deplorable pathetique minable minables incompetent
    incompetents incompetente furieux furieuse scandalise scandalisee
    unacceptable scam scams scammer scammers scammed ridiculous worst disgusting
    disgrace disgraceful outrageous pathetic useless ripoff fraud fraudulent furious
    incompetent thieves appalling shameful
    connard connards connasse putain merde merdique bordel encule encules
    salaud salauds salopards abruti abrutis debile debiles idiot idiots cretin cretins
    fuck fucking fucked shit shitty bullshit crap crappy stupid moron morons wtf
    """
)
_COMPLAINT_PHRASES: Final = _phrases(
    "n'importe quoi", "porter plainte", "foutage de gueule", "vous vous moquez",
    "se moquer du monde", "j'en ai marre", "ras le bol", "pris pour un con",
    "service client nul", "c'est nul", "vraiment nul", "rip off", "fed up", "sick of",
    "this is a joke", "c'est une blague", "en colere", "hors de moi", "plus jamais",
    "never again", "mise en demeure", "60 millions de consommateurs", "ufc que choisir",
    "mon avocat", "my lawyer", "consumer protection",
)  # fmt: skip
# Only these complaint words are checked for negation (« ce n'est pas une réclamation »).
_NEGATABLE: Final = _word_set(
    "reclamation reclamations plainte plaintes litige litiges complaint complaints dispute disputes"
)
_NEGATORS: Final = _word_set(
    "n ne pas ni sans jamais aucun aucune besoin not no without never nor t dont"
)

_YES: Final = _phrases(
    "oui", "ouais", "ouaip", "ouep", "si", "yes", "yeah", "yep", "yup", "ya", "sure",
    "ok", "okay", "oki", "d'accord", "dac", "ok d'accord", "parfait", "super", "genial",
    "top", "nickel", "impeccable", "excellent", "tres bien", "c'est bon", "c'est parfait",
    "ca marche", "ca fonctionne", "ca m'aide", "ca m'a aide", "ca m'aide beaucoup",
    "ca repond a ma question", "c'est ca", "c'est clair", "c'est regle", "c'est resolu",
    "resolu", "probleme resolu", "tout a fait", "exactement", "bien sur", "effectivement",
    "absolument", "ca ira", "c'est tout bon", "tout est bon", "j'ai compris", "compris",
    "perfect", "great", "awesome", "cool", "nice", "good", "fine", "all good",
    "that works", "that worked", "it works", "it worked", "that helps", "that helped",
    "it helped", "it helps", "this helps", "this helped", "very helpful", "helpful",
    "solved", "sorted", "that's it", "exactly", "of course", "absolutely", "got it",
    "yes please", "yes it did", "yes it does", "it did", "indeed", "no problem",
    "no worries", "pas de probleme", "pas de souci", "aucun probleme", "aucun souci",
)  # fmt: skip
_YES_SYMBOLS: Final = frozenset("👍👌✅🙏💯")
_NO_SYMBOLS: Final = frozenset("👎❌")
_NO: Final = _phrases(
    "non", "nan", "nope", "no", "pas du tout", "pas vraiment", "toujours pas", "pas encore",
    "non pas du tout", "non toujours pas", "non pas vraiment", "pas trop", "bof",
    "ca ne m'aide pas", "ca m'aide pas", "ca ne m'a pas aide", "ca m'a pas aide",
    "ca ne repond pas a ma question", "ca repond pas a ma question", "pas utile",
    "ca ne marche pas", "ca marche pas", "ca ne fonctionne pas", "pas resolu",
    "not really", "not at all", "not yet", "nah", "no it didn't", "no it doesn't",
    "no it did not", "no it does not", "that doesn't help", "that didn't help",
    "it doesn't help", "it didn't help", "didn't help", "doesn't help", "not helpful",
    "that doesn't work", "it doesn't work", "didn't work", "that didn't work",
    "doesn't answer my question", "still not", "still no",
)  # fmt: skip
_THANKS: Final = _phrases(
    "merci", "merci beaucoup", "merci bien", "mille mercis", "mille merci", "merci a vous",
    "merci a toi", "merci pour votre aide", "merci pour l'info", "merci pour tout",
    "merci infiniment", "je vous remercie", "remerciements", "thanks", "thank you",
    "thanks a lot", "thank you very much", "thank you so much", "many thanks", "thx",
    "ty", "cheers", "thanks for your help", "thank you for your help", "much appreciated",
    "appreciated", "mrc", "mci", "au revoir", "bonne journee", "bonne soiree",
    "bonne fin de journee", "a bientot", "bye", "goodbye", "have a nice day",
    "have a good day",
)  # fmt: skip
_GREETINGS: Final = _phrases(
    "bonjour", "bonsoir", "salut", "coucou", "hello", "hi", "hey", "hiya", "yo", "re",
    "bjr", "bsr", "slt", "good morning", "good afternoon", "good evening", "hello there",
    "hi there", "bonjour a tous", "bonjour madame", "bonjour monsieur",
    "bonjour madame monsieur", "ca va", "comment allez vous", "comment ca va",
    "how are you", "how are you doing", "greetings",
)  # fmt: skip
# Words that may surround a yes/no/thanks/greeting without changing its gist.
_FILLERS: Final = _word_set(
    "ah oh euh heu hum hmm bah ben bon alors bien tres vraiment encore well so um uh "
    "and et ok okay beaucoup much lot so very really vous you a"
)
SHORT_REPLY_WORDS: Final = 6  # yes/no/thanks/greeting only in messages this short (in words)


# ------------------------------------------------------------------ helpers


def _contains(words: Sequence[str], phrase: Sequence[str]) -> int:
    """Index where ``phrase`` starts in ``words``, or -1.

    Runs about a hundred times per customer message: the candidates are found by the
    phrase's first word (``index``, in C) rather than by comparing every position."""
    size = len(phrase)
    if size == 0:
        return 0
    first, stop = phrase[0], len(words) - size + 1
    if first not in words:
        return -1
    target = tuple(phrase)
    start = 0
    while start < stop:
        try:
            start = words.index(first, start, stop)
        except ValueError:
            return -1
        if size == 1 or tuple(words[start : start + size]) == target:
            return start
        start += 1
    return -1


def _negated(words: Sequence[str], start: int) -> bool:
    """True when one of the three words before ``start`` negates it ("pas une réclamation")."""
    return any(w in _NEGATORS for w in words[max(0, start - 3) : start])


def _shouting(text: str) -> bool:
    """CAPITALS with "!!": « JE VEUX MON COLIS !!! »."""
    letters = [ch for ch in text if ch.isalpha()]
    if len(letters) < 8 or "!!" not in text.replace(" ", ""):
        return False
    upper = sum(1 for ch in letters if ch.isupper())
    return upper / len(letters) >= 0.8


def _by_first_word(phrases: Sequence[tuple[str, ...]]) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Phrases grouped by their first word, in their order: a message is compared only with
    the phrases that start with one of its words (most messages start none)."""
    index: dict[str, list[tuple[str, ...]]] = {}
    for phrase in phrases:
        index.setdefault(phrase[0], []).append(phrase)
    return {first: tuple(group) for first, group in index.items()}


def _longest_first(*groups: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
    """The phrases of ``groups``, longest first (ties in their order): what ``_gist`` removes."""
    return tuple(sorted((p for group in groups for p in group), key=len, reverse=True))


_COMPLAINT_INDEX: Final = _by_first_word(_COMPLAINT_PHRASES)
_NOT_HUMAN_INDEX: Final = _by_first_word(_NOT_HUMAN)
_HUMAN_INDEX: Final = _by_first_word(_HUMAN_TRIGGERS)
_THANKS_INDEX: Final = _by_first_word(_THANKS)
_GREETINGS_INDEX: Final = _by_first_word(_GREETINGS)
_THANKS_GIST: Final = _longest_first(_THANKS)
_GREETINGS_THANKS_GIST: Final = _longest_first(_GREETINGS, _THANKS)


def _candidates(
    words: Sequence[str], index: dict[str, tuple[tuple[str, ...], ...]]
) -> list[tuple[str, ...]]:
    """The phrases of ``index`` that start with a word of the message."""
    return [phrase for word in dict.fromkeys(words) for phrase in index.get(word, ())]


def _has_phrase(words: Sequence[str], index: dict[str, tuple[tuple[str, ...], ...]]) -> bool:
    return any(_contains(words, phrase) >= 0 for phrase in _candidates(words, index))


def _is_complaint(text: str, words: Sequence[str]) -> bool:
    for position, word in enumerate(words):
        if word in _COMPLAINT_WORDS and not (word in _NEGATABLE and _negated(words, position)):
            return True
    if _has_phrase(words, _COMPLAINT_INDEX):
        return True
    return _shouting(text)


def _asks_for_human(words: Sequence[str]) -> bool:
    if _has_phrase(words, _NOT_HUMAN_INDEX):
        return False
    # "un conseiller m'a dit que…" mentions a person without asking for one: in a
    # longer message a trigger word counts only beside a word of request.
    asking = len(words) <= SHORT_REPLY_WORDS or any(w in _REQUEST_CUES for w in words)
    for phrase in _candidates(words, _HUMAN_INDEX):
        start = _contains(words, phrase)
        if start >= 0 and asking and not _negated(words, start):
            return True
    for position, word in enumerate(words):
        nearby = words[position + 1 : position + 5]
        talk = word in _TALK_VERBS and not _negated(words, position)
        if talk and any(w in _PERSONS for w in nearby):
            return True
    return False


def _gist(words: Sequence[str], remove: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The message without fillers, and without any phrase of ``remove`` (longest first:
    ``_longest_first``)."""
    kept = list(words)
    present = set(kept)  # removing words never brings a phrase's first word in
    for phrase in remove:
        if phrase[0] not in present:
            continue
        while (start := _contains(kept, phrase)) >= 0:
            del kept[start : start + len(phrase)]
    return tuple(w for w in kept if w not in _FILLERS)


def _symbols(text: str) -> set[str]:
    """The emoji and other symbols of a message ("👍")."""
    return {ch for ch in text if unicodedata.category(ch) in ("So", "Sk")}


def _reply(words: tuple[str, ...], text: str) -> Intent:
    """YES / NO / THANKS / GREETING for a short message whose gist is that, else NONE."""
    symbols = _symbols(text)
    gist = _gist(words, _THANKS_GIST)
    if gist in _NO or (not gist and symbols and symbols <= _NO_SYMBOLS) or words in _NO:
        return Intent.NO
    if gist in _YES or (not gist and symbols and symbols <= _YES_SYMBOLS) or words in _YES:
        return Intent.YES
    hedged = any(w in ("mais", "but", "sauf", "except") for w in words)
    if words and words[0] in ("non", "no", "nope", "nan") and not hedged:
        return Intent.NO
    if words and words[0] in ("oui", "yes", "ouais", "yeah", "yep") and not hedged:
        return Intent.YES
    if not gist and _has_phrase(words, _THANKS_INDEX):
        return Intent.THANKS
    if not _gist(words, _GREETINGS_THANKS_GIST) and _has_phrase(words, _GREETINGS_INDEX):
        return Intent.GREETING
    return Intent.NONE


# ------------------------------------------------------------------ public API


def detect_intent(text: str) -> Intent:
    """What the message does: complain, ask for a person, answer yes/no, thank, greet."""
    if not text or not text.strip():
        return Intent.NONE
    words = _tokens(text)
    if _is_complaint(text, words):
        return Intent.COMPLAINT
    if _asks_for_human(words):
        return Intent.HUMAN
    if len(words) > SHORT_REPLY_WORDS:
        return Intent.NONE
    return _reply(words, text)


# ------------------------------------------------------------------ survey answers

_NUMBER_WORDS: Final = {
    "zero": 0, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6,
    "sept": 7, "huit": 8, "neuf": 9, "dix": 10,
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10,
}  # fmt: skip
_SCORE = re.compile(
    r"^\s*(?P<value>[0-9]{1,2}|[a-z]+)\s*"
    r"(?:(?:/|sur|out\s+of|over)\s*(?P<scale>[0-9]{1,2}))?"
    r"\s*[!.]*\s*$"
)


def _score(text: str, maximum: int) -> int | None:
    """ "8", "8/10", "huit", " 9 sur 10 !" → 8, 8, 8, 9; anything else → None."""
    folded = fold(text).strip()
    found = _SCORE.match(folded)
    if not found:
        return None
    raw, scale = found.group("value"), found.group("scale")
    if scale is not None and int(scale) != maximum:
        return None
    value = int(raw) if raw.isdigit() else _NUMBER_WORDS.get(raw)
    if value is None or not 0 <= value <= maximum:
        return None
    return value


def parse_nps(text: str) -> int | None:
    """A typed answer to the 0–10 NPS question, or None to re-prompt.

    Accepts "8", "8/10", "9 sur 10", "huit", "eight", "10 !"; refuses 11, "-1",
    "8 ou 9", "8.5" and any other words: a guess would corrupt the KPI.
    """
    return _score(text, 10)


_CSAT_SYMBOLS: Final = {
    "😡": 1, "😠": 1, "🤬": 1, "😤": 1,
    "🙁": 2, "☹": 2, "😞": 2, "😟": 2, "😕": 2, "😒": 2,
    "😐": 3, "😑": 3, "😶": 3,
    "🙂": 4, "😊": 4, "☺": 4, "😌": 4,
    "😍": 5, "🤩": 5, "🥰": 5, "😀": 5, "😃": 5, "😄": 5, "😁": 5, "❤": 5,
}  # fmt: skip
_CSAT_EMOTICONS: Final = {
    ">:(": 1, ">:-(": 1, ":'(": 1, ":@": 1,
    ":(": 2, ":-(": 2, ":/": 2, ":-/": 2,
    ":|": 3, ":-|": 3,
    ":)": 4, ":-)": 4, "(:": 4,
    ":d": 5, ":-d": 5, "xd": 5, "<3": 5,
}  # fmt: skip
_STAR = "⭐"


def parse_csat(text: str) -> int | None:
    """A typed answer to the smiley CSAT question (1–5), or None to re-prompt.

    Accepts "4", "4/5", "quatre", one of the five faces (😡 🙁 😐 🙂 😍, also the same
    face repeated, and close faces), ":)"-style emoticons, or 1–5 "⭐".
    """
    stripped = "".join(ch for ch in text if ch not in "\ufe0f\u200d").strip()
    if not stripped:
        return None
    number = _score(stripped, 5)
    if number is not None:
        return number if number >= 1 else None
    compact = stripped.replace(" ", "").lower().rstrip("!.")
    if compact in _CSAT_EMOTICONS:
        return _CSAT_EMOTICONS[compact]
    if compact and set(compact) == {_STAR} and len(compact) <= 5:
        return len(compact)
    values = {_CSAT_SYMBOLS.get(ch) for ch in compact}
    if len(values) == 1 and None not in values:
        return values.pop()
    return None
