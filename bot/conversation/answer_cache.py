"""A bounded memory of recent matches: customers ask the same questions again and again.

With a sentence encoder a match costs 1–3 ms of CPU (encoding the message), on the event
loop: on the load benchmark that halves the Telegram throughput. A match depends only on
the text and the conversation's language (the knowledge base does not change while the
bot runs), so the same message in the same language is matched once. The key is the
text with its whitespace normalised, not folded further: accents and case reach the
encoder, and a cached answer must be the one the text itself would get.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from bot.conversation.core import Answerer, KbEntryLike, KbMatchLike

CACHED_MATCHES: Final = 2048


class CachedAnswerer:
    """An ``Answerer`` that remembers its last ``size`` matches (least recently used out)."""

    def __init__(self, kb: Answerer, size: int = CACHED_MATCHES) -> None:
        self.kb = kb
        self.size = size
        self.hits = 0
        self.misses = 0
        self._matches: OrderedDict[tuple[str, str | None], KbMatchLike] = OrderedDict()

    def match(self, text: str, language: str | None = None) -> KbMatchLike:
        key = (" ".join(text.split()), language)
        found = self._matches.get(key)
        if found is not None:
            self._matches.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        found = self.kb.match(text, language)
        self._matches[key] = found
        if len(self._matches) > self.size:
            self._matches.popitem(last=False)
        return found

    def get(self, entry_id: str) -> KbEntryLike | None:
        return self.kb.get(entry_id)
