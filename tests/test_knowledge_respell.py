"""Messages respelled before the encoder reads them; chat shorthands for both matchers;
the confidence's scaled margin and tie share (issue 15 accuracy work)."""

from __future__ import annotations

import numpy as np
import pytest
import threadpoolctl

from bot.knowledge import KbEntry, KnowledgeBase, load_encoder, text
from bot.knowledge import encoder as encoder_module
from bot.knowledge.calibration import (
    SPREAD_FLOOR,
    Features,
    confidence,
    scaled_margin,
    spread,
    tie_share,
)
from bot.knowledge.encoder import BUILTIN, Encoder, Matrix
from bot.knowledge.respell import Respeller

KB_TEXTS = [
    "Comment me désabonner de la newsletter ?",
    "Où est mon colis ?",
    "Le débit est faible le soir",
    "Il y a un problème avec l'équipe, où sont les réglages ?",
    "Vous pouvez payer par carte ou par virement.",
]


@pytest.fixture(scope="module")
def respell() -> Respeller:
    return Respeller(KB_TEXTS)


@pytest.mark.parametrize(
    ("typed", "respelled"),
    [
        ("je veux me desabonner", "je veux me désabonner"),
        ("DEBIT faible", "débit faible"),
        ("probleme avec l'equipe", "problème avec l'équipe"),
        ("c koi le mdp", "c'est quoi le mot de passe"),
        ("pk mon abo", "pourquoi mon abonnement"),
        ("payer par cb stp", "payer par carte bancaire s'il te plaît"),
    ],
)
def test_shorthands_are_written_out_and_accents_restored(
    respell: Respeller, typed: str, respelled: str
) -> None:
    assert respell(typed) == respelled


def test_words_the_knowledge_base_also_writes_without_accents_stay(respell: Respeller) -> None:
    # "ou" (or) and « où » (where) are both in the texts: which one was meant is unknown
    assert respell("il est ou mon colis") == "il est ou mon colis"
    assert respell("a quelle heure") == "a quelle heure"  # "a" and "à": same


def test_accents_the_customer_typed_and_unknown_words_are_kept(respell: Respeller) -> None:
    assert respell("Le débît est lent") == "Le débît est lent"
    assert respell("mon routeur clignote, c'est grave ?") == "mon routeur clignote, c'est grave ?"


def test_shorthand_only_as_a_whole_word(respell: Respeller) -> None:
    # the "c" of "c'est" and the "pb" inside a word are not shorthands
    assert respell("c'est lent") == "c'est lent"
    assert respell("pbx abonnement") == "pbx abonnement"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("payer par cb", ("payer", "par", "carte", "bancaire")),
        ("c koi", ("est", "quoi")),
        ("un pb avec l'appli", ("un", "problème", "avec", "application")),
        ("idk", ("i", "do", "not", "know")),
        ("jai pas recu", ("ai", "pas", "recu")),
        ("I dont know, it didnt work", ("i", "do", "not", "know", "it", "did", "not", "work")),
    ],
)
def test_lexical_words_expand_the_chat_shorthands(raw: str, expected: tuple[str, ...]) -> None:
    assert text.words(raw) == expected


class Recording:
    """The built-in encoder, remembering what it was asked to encode."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.seen: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def encode(self, texts: list[str]) -> Matrix:
        self.seen.extend(texts)
        return self.inner.encode(texts)


def test_the_encoder_reads_the_respelled_message() -> None:
    builtin = load_encoder(BUILTIN)
    assert builtin is not None
    recording = Recording(builtin)
    entries = [
        KbEntry("unsubscribe", "newsletter", {"fr": ("Comment me désabonner ?",)}, {"fr": "Lien."}),
        KbEntry("speed", "débit", {"fr": ("Le débit est faible",)}, {"fr": "Testez."}),
    ]
    kb = KnowledgeBase(entries, encoder=recording)
    recording.seen.clear()
    assert kb.match("je veux me desabonner stp").id == "unsubscribe"
    assert recording.seen[0] == "je veux me désabonner s'il te plaît"


# ------------------------------------------------------------ calibration


def test_margins_are_scaled_by_the_spread_of_the_ranks() -> None:
    crowded = np.array([0.9, 0.85, 0.84, 0.83, 0.82], dtype=np.float32)
    sparse = np.array([0.9, 0.85, 0.2, 0.1, 0.0], dtype=np.float32)
    # the same raw margin means more among crowded entries than among scattered ones
    crowded_margin = scaled_margin(0.9, 0.85, spread(crowded))
    sparse_margin = scaled_margin(0.9, 0.85, spread(sparse))
    assert crowded_margin > 1.0 > sparse_margin > 0.0
    assert spread(np.zeros(3, dtype=np.float32)) == SPREAD_FLOOR


def test_a_tie_on_the_questions_halves_the_confidence() -> None:
    evidence = {"lexical": 0.5, "pair": 0.9, "answer": 0.5, "margin": 2.0, "unknown": 0.0}
    clear = confidence(Features(**evidence, apart=0.1))
    tied = confidence(Features(**evidence, apart=0.0))
    assert clear > 0.9
    assert tied == pytest.approx(clear / 2, rel=0.01)
    assert tie_share(0.0) == 0.5
    assert tie_share(-0.05) == tie_share(0.05) > 0.99


# ------------------------------------------------------------ performance


def test_matrix_products_run_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in encoder_module.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(encoder_module, "_blas_limited", False)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        encoder_module.single_threaded_blas()
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas
        assert all(p["num_threads"] == 1 for p in blas)


def test_an_operators_blas_threads_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.setattr(encoder_module, "_blas_limited", False)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        encoder_module.single_threaded_blas()
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas
        assert all(p["num_threads"] == 2 for p in blas)
