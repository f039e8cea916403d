"""Text normalization shared by knowledge-base matching and intent detection.

Customers write « J'ai reçu l'article abîmé », "j ai recu l article abime" or
"I've got a broken item": the same words must come out of all of them. Everything
here is a pure function of its input; the expensive ones are cached.

    raw text ─► fold() ─► words() ─► content_words() ─► stem()
                (case, accents,  (elisions,      (stop words
                 ligatures,       contractions,    removed)
                 apostrophes)     SMS shorthands)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Final

import snowballstemmer

LANGUAGES: Final = ("fr", "en")
LONGEST_WORD: Final = 40
"""Longer "words" (a pasted hash, a run of one character) are not stemmed: Snowball's
cost grows with the square of a word's length (a 40,000-character one took 12 s)."""

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "ʼ": "'", "′": "'"})
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ﬁ": "fi", "ﬂ": "fl"})

# English contractions first ("don't" → "do not"), then French elisions ("l'adresse").
_EN_IRREGULAR_FULL: Final = {"can't": "can not", "won't": "will not", "shan't": "shall not"}
_EN_IRREGULAR = re.compile(r"\b(?:can't|won't|shan't)")
_EN_NOT = re.compile(r"(?<=[a-z])n't\b")
_EN_CONTRACTION = re.compile(r"(?<=[a-z])'(?:s|m|re|ve|ll|d)\b")


def _split(words: str) -> list[str]:
    """A word list written as text (easier to read and edit than a list literal)."""
    return words.split()


_FR_ELISION = re.compile(r"\b(?:jusqu|lorsqu|puisqu|quoiqu|qu|[ldjmtscn])'(?=\w)")
_WORD = re.compile(r"[^\W_]+")

# Whole-word shorthands seen in chats (SMS style), expanded before anything else.
SHORTHANDS: Final[Mapping[str, str]] = {
    "aujourd'hui": "aujourdhui",
    "pk": "pourquoi",
    "pq": "pourquoi",
    "pkoi": "pourquoi",
    "bcp": "beaucoup",
    "qd": "quand",
    "cmt": "comment",
    "koi": "quoi",
    "ds": "dans",
    "tjrs": "toujours",
    "tjs": "toujours",
    "jsp": "je sais pas",
    "mdp": "mot de passe",
    "dispo": "disponible",
    "msg": "message",
    "rdv": "rendez-vous",
    "infos": "informations",
    "info": "information",
    "pls": "please",
    "plz": "please",
    "u": "you",
    "ur": "your",
    "r": "are",
    "thx": "thanks",
    "pw": "password",
    "acct": "account",
    # French SMS and chat abbreviations (generic: no business's words)
    "c": "c'est",
    "cb": "carte bancaire",
    "slt": "salut",
    "bjr": "bonjour",
    "stp": "s'il te plaît",
    "svp": "s'il vous plaît",
    "tt": "tout",
    "kan": "quand",
    "qqn": "quelqu'un",
    "qqch": "quelque chose",
    "pr": "pour",
    "ns": "nous",
    "mtn": "maintenant",
    "auj": "aujourd'hui",
    "ajd": "aujourd'hui",
    "pb": "problème",
    "pbm": "problème",
    "pblm": "problème",
    "appli": "application",
    "abo": "abonnement",
    "resa": "réservation",
    "num": "numéro",
    "ya": "il y a",
    "chui": "je suis",
    "jpeux": "je peux",
    "jai": "j'ai",
    "cest": "c'est",
    "jsuis": "je suis",
    "jveux": "je veux",
    "jsais": "je sais",
    "jvais": "je vais",
    "ptet": "peut-être",
    "dsl": "désolé",
    "mrc": "merci",
    "tjr": "toujours",
    "vrmt": "vraiment",
    "pcq": "parce que",
    "pck": "parce que",
    "psk": "parce que",
    "nn": "non",
    # English chat abbreviations
    "asap": "as soon as possible",
    "idk": "I don't know",
    "wanna": "want to",
    "gonna": "going to",
    "cuz": "because",
    "coz": "because",
    "tmrw": "tomorrow",
    "im": "I'm",
    "ive": "I've",
    "dont": "don't",
    "doesnt": "doesn't",
    "didnt": "didn't",
    "cant": "can't",
    "isnt": "isn't",
    "wasnt": "wasn't",
    "arent": "aren't",
    "havent": "haven't",
    "couldnt": "couldn't",
    "wouldnt": "wouldn't",
    "youre": "you're",
}

# Function words and words too generic to tell one question from another. Negations
# ("pas", "not", "never") are *not* here: « colis pas arrivé » is about a late parcel.
_FR_STOP = _split("""
a à au aux avec ce ceci cela ces cet cette ça c ci d dans de des du elle elles en
et eux il ils je j la le les leur leurs l lui ma me m mes moi mon même n ne ni nos
notre nous on ou où par pour qu que quel quelle quelles quels qui quoi sa se s
ses si son sont sur ta te t tes toi ton tu un une vos votre vous y
est es suis sommes êtes étais était étaient été être sera serai serait
ai as avons avez ont avais avait avaient eu avoir aurai aurais aura
fait faire fais faites font
peux peut pouvez pouvons peuvent pourrais pourrait pourriez pouvoir puis puisse
veux veut voulez voulons veulent voudrais voudrait voudrions voudriez vouloir
souhaite souhaiterais souhaitons aimerais aimerions
dois doit devez devons devrais devrait faut
sais sait savez savoir
vais vas va allez allons aller vont
prends prend prenez prendre
mets met mettez mettre mis
viens vient venez venir
vois voit voyez voir
dis dit dites dire
trouve trouver
bonjour bonsoir salut coucou hello merci svp stp sil plait plaît cordialement
madame monsieur mme mr
comment quand pourquoi combien donc alors car mais or
aussi bien très tres ici là bas chez
plus comme
ceux celle celles celui dont
truc chose choses quelque quelqu
""")

_EN_STOP = _split("""
a an the and or but if of at by for with about to from in on into onto over
under as so than too very just then there here
i me my mine myself we us our ours you your yours he him his she her hers it its
they them their theirs this that these those what which who whom whose
am is are was were be been being have has had having do does did doing done
can could will would shall should may might must
how when why nor
hi hello hey dear thanks thank please sir madam
want wanted wants like would
im ive id youre dont doesnt didnt cant isnt wasnt wont
some any all each such only own same other
get getting go going goes let know need take
something anything stuff thing things really also even though
many much one two three four five six seven eight nine ten
""")

STOP_WORDS: Final[Mapping[str, frozenset[str]]] = {
    "fr": frozenset(unicodedata.normalize("NFC", w) for w in _FR_STOP),
    "en": frozenset(_EN_STOP),
}


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=4096)
def fold(text: str) -> str:
    """Lower-case, expand ligatures (œ → oe), drop accents, unify apostrophes.

    Accent-free text is how many customers type; folding both sides makes
    « reçu » and "recu" the same word.
    """
    lowered = text.translate(_APOSTROPHES).lower().translate(_LIGATURES)
    return _strip_accents(lowered)


def _lower(text: str) -> str:
    """Lower-case and ligatures only: the French stemmer wants its accents."""
    return unicodedata.normalize("NFC", text.translate(_APOSTROPHES).lower().translate(_LIGATURES))


_FOLDED_FR_STOP: Final = frozenset(fold(w) for w in STOP_WORDS["fr"])
_ALL_STOP: Final = _FOLDED_FR_STOP | STOP_WORDS["en"]
_FR_ONLY_STOP: Final = _FOLDED_FR_STOP - STOP_WORDS["en"]
_EN_ONLY_STOP: Final = STOP_WORDS["en"] - _FOLDED_FR_STOP


def _expand(text: str) -> str:
    text = _EN_IRREGULAR.sub(lambda m: _EN_IRREGULAR_FULL[m.group(0)], text)
    text = _EN_NOT.sub(" not", text)
    text = _EN_CONTRACTION.sub("", text)
    return _FR_ELISION.sub("", text)


@lru_cache(maxsize=4096)
def words(text: str) -> tuple[str, ...]:
    """The words of ``text``, lower-cased, accents kept, elisions and shorthands resolved.

    « J'ai reçu l'article » → ("ai", "reçu", "article"); "I don't" → ("i", "do", "not").
    Accents are kept so that the French stemmer sees them; compare with ``fold``.
    """
    lowered = _lower(text)
    for short, full in SHORTHANDS.items():
        if "'" in short and short in lowered:
            lowered = lowered.replace(short, full)
    out: list[str] = []
    for word in _WORD.findall(_expand(lowered)):
        expansion = SHORTHANDS.get(word)
        if expansion is None:
            out.append(word)
        else:  # written out, its elisions resolved too ("c" → "c'est" → "est")
            out.extend(words(expansion))
    return tuple(out)


def folded_words(text: str) -> tuple[str, ...]:
    """``words`` with accents removed: the form used for comparisons."""
    return tuple(fold(w) for w in words(text))


# Everyday words that are not stop words but say little about a subject: time,
# quantity, judgement, people, common verbs. A message's word that the knowledge base
# does not know weighs little when it is one of these ("hier", "supposed", "really")
# and a lot otherwise ("pizza", "router"): the second kind means another subject.
_FR_COMMON = _split("""
aujourd aujourdhui hier demain matin soir nuit midi semaine semaines mois an ans annee
jour jours heure heures minute minutes moment fois temps depuis pendant avant apres
bientot tard tot deja encore toujours jamais souvent parfois maintenant enfin ensuite
lundi mardi mercredi jeudi vendredi samedi dimanche week end weekend dernier derniere
prochain prochaine premier premiere deuxieme
tout tous toute toutes rien personne chaque plusieurs quelques autre autres meme
beaucoup peu trop assez tres vraiment completement totalement simplement juste
vrai faux bon bonne bons mauvais mauvaise grand grande petit petite gros nouveau
nouvelle vieux ancien ancienne super genial top nul normal normale possible impossible
content contente decu decue desole desolee urgent urgence important probleme problemes
souci soucis question questions besoin aide aider merci svp ok oui non bah ben euh
madame monsieur mari femme fils fille enfant enfants mere pere soeur frere ami amie
amis famille collegue voisin voisins maison travail bureau vacances voyage
cadeau anniversaire mariage noel fete
attendre attends attend attendu essayer essaye essaie regarder regarde voulu voulais
pensais pense crois croire comprends comprendre explique expliquer demande demander
dois arrive arriver passe passer reste rester laisser laisse donner donne
""")

_EN_COMMON = _split("""
today yesterday tomorrow morning evening night week weeks month months year years
day days hour hours minute minutes time times moment since during before after ago
soon late early already again always never often sometimes now finally then still yet
monday tuesday wednesday thursday friday saturday sunday weekend last next first
second
everything nothing everyone nobody every several few another same whole
lot lots little bit quite completely totally simply actually basically really
true false good bad great big small large new old fine okay ok yes nope sure
happy sad disappointed sorry urgent important problem problems issue issues question
questions help thanks please
wife husband son daughter kid kids child children mother mom mum father dad sister
brother friend friends family colleague neighbour neighbor home work office holiday
holidays trip travel gift birthday wedding christmas party
wait waiting waited try tried trying look looked looking wanted thought think
understand explain ask asked supposed leave leaving left give gave tell told say says
said seems seem
""")

COMMON_WORDS: Final[Mapping[str, frozenset[str]]] = {
    "fr": frozenset(_FR_COMMON),
    "en": frozenset(_EN_COMMON),
}
_ALL_COMMON: Final = COMMON_WORDS["fr"] | COMMON_WORDS["en"]


def is_common_word(word: str) -> bool:
    """True for everyday words (« hier », "really") that hint at no particular subject."""
    return fold(word) in _ALL_COMMON


def is_stop_word(word: str, language: str | None = None) -> bool:
    """True for function words ("le", "the", "est-ce"): they say nothing about the topic.

    With no language, a word that is a stop word in either language counts: a
    message's language is not known before its words are read.
    """
    folded = fold(word)
    if language is None:
        return folded in _ALL_STOP
    if language == "fr":
        return folded in _FOLDED_FR_STOP
    return folded in STOP_WORDS.get(language, frozenset())


def content_words(text: str, language: str | None = None) -> tuple[str, ...]:
    """The words of ``text`` that are not stop words (accents kept)."""
    return tuple(w for w in words(text) if not is_stop_word(w, language))


@lru_cache(maxsize=2)
def _stemmer(language: str) -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer({"fr": "french", "en": "english"}[language])


@lru_cache(maxsize=16384)
def stem(word: str, language: str) -> str:
    """Snowball stem of one accent-folded word: « livrées », "livree", "livrer" → "livr".

    The word is folded *before* stemming so that a word typed without accents
    gives the same stem as the correct spelling. On folded words the French
    stemmer misses some endings (feminine participles "livree" → "livre", plurals
    after "u" "recus", verbs in "-ent"), so those are trimmed here as well.
    """
    if language not in LANGUAGES:
        raise ValueError(f"no stemmer for language {language!r}")
    if len(word) > LONGEST_WORD:
        return fold(word)
    stemmed: str = _stemmer(language).stemWord(fold(word))
    if language == "fr":
        if len(stemmed) >= 7 and stemmed.endswith("ent"):
            stemmed = stemmed[:-3]
        if len(stemmed) > 4 and stemmed.endswith("s"):
            stemmed = stemmed[:-1]
        if len(stemmed) > 3 and stemmed.endswith("e"):
            stemmed = stemmed[:-1]
    return stemmed


def language_votes(tokens: Iterable[str]) -> tuple[int, int]:
    """(French, English) counts of language-specific stop words among folded ``tokens``.

    Function words are the cheapest reliable language cue in a short message.
    """
    fr = en = 0
    for token in tokens:
        if token in _FR_ONLY_STOP:
            fr += 1
        elif token in _EN_ONLY_STOP:
            en += 1
    return fr, en


def guess_language(text: str, default: str | None = None) -> str | None:
    """ "fr", "en", or ``default`` when the function words do not tell."""
    fr, en = language_votes(folded_words(text))
    if fr > en:
        return "fr"
    if en > fr:
        return "en"
    return default


# Words that only greet or thank: a clause made of these (and stop words) says nothing
# about the question ("Bonjour,", "merci d'avance", "Best regards").
COURTESY_WORDS: Final = frozenset(
    _split("""
    bonjour bonsoir salut coucou hello hi hey dear madame monsieur merci remercie
    remerciant thanks thank thx cordialement regards cheers best kind bonne journee
    soiree week end svp stp please plz avance advance beaucoup much lot many
    """)
)
_CLAUSE_BREAK = re.compile(
    r"(?:[.!?;:\n]+"
    r"|\s+(?:mais|but|donc|so|sinon|however|cependant|par contre|du coup|alors)\s+"
    r"|,\s*(?:et|and)\s+)",
    re.IGNORECASE,
)


def clauses(text: str) -> list[str]:
    """The parts of a message that say something: split at sentence ends, « mais »,
    « donc », "but", "so"…, greeting- and thanks-only parts dropped.

    A long message with context dilutes its meaning vector; its question is often
    one clause ("Bonjour, j'ai commandé mardi pour un mariage, mais je l'aurai
    quand ?"). One clause or none: the message is its own clause (empty list).
    """
    kept = []
    for part in _CLAUSE_BREAK.split(text):
        part = part.strip(" ,-")
        if any(w not in COURTESY_WORDS and not is_stop_word(w) for w in folded_words(part)):
            kept.append(part)
    return kept if len(kept) > 1 else []
