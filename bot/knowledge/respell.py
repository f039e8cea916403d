"""A message rewritten in the knowledge base's own spelling, before it is encoded.

The lexical matcher folds accents and expands chat shorthands itself
(``text.words``), but the sentence encoder reads the message as typed, and it
reads "je veux me desabonner" or "c koi le mdp" less well than « je veux me
désabonner » or « c'est quoi le mot de passe ». Two generic rewrites, no
business vocabulary:

- **shorthands**: the SMS and chat abbreviations of ``text.SHORTHANDS`` ("pk",
  "mdp", "cb", "stp", "u", "pls"…) are written out;
- **accents**: a word typed without accents that the knowledge base writes
  with them, in exactly one way, takes the knowledge base's spelling ("debit"
  → « débit »). A word the knowledge base also writes without accents ("ou"
  and « où », "a" and « à ») is left alone: which one was meant is not known.

Typos are *not* corrected here: on the tuning sets, respelling near-misses
towards the knowledge base's words made the encoder's ranking worse (it knows
common misspellings better than an edit distance does); the lexical matcher
still corrects them for its own scores.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from bot.knowledge import text as textmod

_WORD: Final = re.compile(r"[^\W_]+")
_TOKEN: Final = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_APOSTROPHE: Final = re.compile(r"(['’])")


class Respeller:
    """Rewrites messages with the shorthands written out and the accents of ``texts``.

    ``texts`` are the knowledge base's own (example questions, answers, topics).
    Built once per knowledge base; calling it is a few dictionary look-ups a word.
    """

    def __init__(
        self, texts: Iterable[str], shorthands: Mapping[str, str] = textmod.SHORTHANDS
    ) -> None:
        spellings: dict[str, set[str]] = {}
        for word in {w for body in texts for w in _WORD.findall(body.lower())}:
            spellings.setdefault(textmod.fold(word), set()).add(word)
        # folded form → the one accented spelling, when the folded form is never written
        self.accented: dict[str, str] = {
            folded: next(iter(forms))
            for folded, forms in spellings.items()
            if len(forms) == 1 and folded not in forms
        }
        self.shorthands = {k: v for k, v in shorthands.items() if "'" not in k}

    def _word(self, word: str) -> str:
        lowered = word.lower()
        if lowered != textmod.fold(lowered):  # typed with accents: as the customer wrote
            return word
        return self.accented.get(lowered, word)

    def _token(self, match: re.Match[str]) -> str:
        token = match.group(0)
        expansion = self.shorthands.get(token.lower())
        if expansion is not None:
            return expansion
        parts = _APOSTROPHE.split(token)  # "l'equipe": both sides respelled
        return "".join(p if p in "'’" else self._word(p) for p in parts)

    def __call__(self, message: str) -> str:
        """The message with shorthands written out and missing accents restored."""
        return _TOKEN.sub(self._token, message)
