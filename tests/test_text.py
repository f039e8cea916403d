"""bot.knowledge.text: folding, elisions, stop words, stemming, language cues."""

from __future__ import annotations

import pytest

from bot.knowledge import text


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("Délai de LIVRAISON", "delai de livraison"),
        ("Reçu, abîmé, où, Noël", "recu, abime, ou, noel"),
        ("Œuvre et cæsium", "oeuvre et caesium"),
        ("l’adresse", "l'adresse"),  # typographic apostrophe unified
        ("e\u0301te\u0301", "ete"),  # decomposed accents too
    ],
)
def test_fold_lowercases_and_drops_accents(raw: str, folded: str) -> None:
    assert text.fold(raw) == folded


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("J'ai reçu l'article abîmé", ("ai", "reçu", "article", "abîmé")),
        ("l’adresse qu'elle jusqu'à", ("adresse", "elle", "à")),
        ("aujourd'hui", ("aujourdhui",)),
        ("I don't know, it's late", ("i", "do", "not", "know", "it", "late")),
        ("I can't and won't", ("i", "can", "not", "and", "will", "not")),
        ("mdp oublié pk ?", ("mot", "de", "passe", "oublié", "pourquoi")),
        ("t-shirt 2x, 24h !", ("t", "shirt", "2x", "24h")),
    ],
)
def test_words_resolve_elisions_contractions_and_shorthands(
    raw: str, expected: tuple[str, ...]
) -> None:
    assert text.words(raw) == expected


def test_folded_words_match_whatever_the_accents() -> None:
    assert text.folded_words("Où est LE colis reçu ?") == text.folded_words("ou est le colis recu")


@pytest.mark.parametrize(
    ("word", "language"),
    [("le", "fr"), ("vous", None), ("the", "en"), ("please", None), ("été", "fr")],
)
def test_stop_words(word: str, language: str | None) -> None:
    assert text.is_stop_word(word, language)


@pytest.mark.parametrize("word", ["livraison", "colis", "refund", "pas", "not", "never"])
def test_topic_words_and_negations_are_not_stop_words(word: str) -> None:
    # Negations carry meaning here: « colis pas arrivé » is a late parcel.
    assert not text.is_stop_word(word)


def test_content_words_drop_stop_words() -> None:
    assert text.content_words("Où est mon colis ?") == ("colis",)


@pytest.mark.parametrize(
    "forms",
    [
        ("livré", "livrée", "livrées", "livrer", "livrez", "livree"),  # conjugations, no accents
        ("commande", "commandes", "commandé", "commandée"),  # plurals and participles
        ("remboursé", "remboursement", "rembourser", "rembourse"),
        ("reçu", "reçus", "reçues", "recu"),
        ("annulé", "annulée", "annuler", "annulation"),
    ],
)
def test_french_stems_conflate_inflections_and_missing_accents(forms: tuple[str, ...]) -> None:
    stems = {text.stem(form, "fr") for form in forms}
    assert len(stems) == 1, stems


@pytest.mark.parametrize(
    "forms",
    [("refund", "refunds", "refunded"), ("order", "orders", "ordered"), ("ship", "shipping")],
)
def test_english_stems_conflate_inflections(forms: tuple[str, ...]) -> None:
    assert len({text.stem(form, "en") for form in forms}) == 1


def test_stems_keep_different_words_apart() -> None:
    assert text.stem("livraison", "fr") != text.stem("retour", "fr")
    assert text.stem("refund", "en") != text.stem("return", "en")


def test_stems_come_from_the_c_stemmers_and_equal_the_pure_python_ones() -> None:
    """PyStemmer (a dependency) makes snowballstemmer run Snowball's C code, 100x faster;
    its stems must be the pure-Python algorithms' own, word for word."""
    import Stemmer
    from snowballstemmer.english_stemmer import EnglishStemmer
    from snowballstemmer.french_stemmer import FrenchStemmer

    assert isinstance(text._stemmer("fr"), Stemmer.Stemmer)
    sample = {
        "fr": ["livraisons", "remboursement", "désabonner", "commandée", "factures",
               "abonnement", "connecter", "réservations", "annulée", "gratuitement"],
        "en": ["deliveries", "refunded", "unsubscribing", "ordered", "invoices",
               "subscription", "connecting", "reservations", "cancelled", "freely"],
    }  # fmt: skip
    for language, pure in (("fr", FrenchStemmer()), ("en", EnglishStemmer())):
        for word in sample[language]:
            folded = text.fold(word)
            assert text._stemmer(language).stemWord(folded) == pure.stemWord(folded), word


def test_stem_refuses_unknown_language() -> None:
    with pytest.raises(ValueError, match="de"):
        text.stem("Lieferung", "de")


@pytest.mark.parametrize(
    ("message", "language"),
    [
        ("Où est mon colis ? Je ne l'ai pas reçu", "fr"),
        ("Where is my parcel? I have not received it", "en"),
        ("ma commande", "fr"),
        ("my order", "en"),
    ],
)
def test_guess_language_from_function_words(message: str, language: str) -> None:
    assert text.guess_language(message) == language


def test_guess_language_falls_back_to_default() -> None:
    assert text.guess_language("PayPal ?", default="en") == "en"
    assert text.guess_language("PayPal ?") is None


def test_common_words_are_everyday_words_only() -> None:
    assert text.is_common_word("Hier")
    assert text.is_common_word("really")
    assert not text.is_common_word("pizza")
    assert not text.is_common_word("router")
