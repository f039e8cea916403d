"""The knowledge room: knowledge.yaml loaded, indexed, matched and evaluated.

loader.py      knowledge.yaml → entries (validated, with line numbers)
text.py        folding, stop words, stems: how words are compared
lexical.py     the word matcher (IDF coverage × fit)
encoder.py     sentence encoders (built-in USE multilingual, model folders)
respell.py     a message in the knowledge base's spelling (shorthands, accents) for the encoder
semantic.py    entry embeddings (cached on disk) → cosines per entry
calibration.py lexical + semantic evidence → one confidence (0..1)
language.py    is the message French, English, or unclear?
kb.py          KnowledgeBase: entries + matchers → KbMatch
evaluation.py  labelled sets (evalsets/) → accuracy, rejection, threshold sweep
"""

from bot.knowledge.encoder import Encoder, load_encoder
from bot.knowledge.entries import LANGUAGES, Candidate, Collision, KbEntry, KbMatch
from bot.knowledge.kb import DEFAULT_THRESHOLD, LEXICAL_THRESHOLD, KnowledgeBase
from bot.knowledge.language import detect_language

__all__ = [
    "DEFAULT_THRESHOLD",
    "LANGUAGES",
    "LEXICAL_THRESHOLD",
    "Candidate",
    "Collision",
    "Encoder",
    "KbEntry",
    "KbMatch",
    "KnowledgeBase",
    "detect_language",
    "load_encoder",
]
