"""The knowledge room: knowledge.yaml loaded, indexed, matched and evaluated.

loader.py     knowledge.yaml → entries (validated, with line numbers)
text.py       folding, stop words, stems: how words are compared
lexical.py    the word matcher (IDF coverage × fit)
kb.py         KnowledgeBase: entries + matcher → KbMatch
evaluation.py labelled sets (evalsets/) → accuracy and rejection
"""

from bot.knowledge.entries import DEFAULT_THRESHOLD, LANGUAGES, KbEntry, KbMatch
from bot.knowledge.kb import KnowledgeBase

__all__ = ["DEFAULT_THRESHOLD", "LANGUAGES", "KbEntry", "KbMatch", "KnowledgeBase"]
