"""bot.knowledge: loading knowledge.yaml (with precise error locations) and matching."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from textwrap import dedent
from types import MappingProxyType

import pytest

from bot.errors import KnowledgeBaseError
from bot.knowledge import DEFAULT_THRESHOLD, KbEntry, KbMatch, KnowledgeBase

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "knowledge.yaml"


def entry(entry_id: str, fr: list[str], en: list[str], topic: str = "t") -> KbEntry:
    questions = {lang: tuple(qs) for lang, qs in (("fr", fr), ("en", en)) if qs}
    answers = {"fr": f"réponse {entry_id}", "en": f"answer {entry_id}"}
    return KbEntry(entry_id, topic, MappingProxyType(questions), MappingProxyType(answers))


ENTRIES = [
    entry(
        "delivery-time",
        ["Quel est le délai de livraison ?", "Quand vais-je recevoir ma commande ?"],
        ["How long does delivery take?"],
        topic="livraison",
    ),
    entry(
        "returns",
        ["Comment retourner un article ?", "Le retour est-il gratuit ?"],
        ["How do I return an item?"],
        topic="retours",
    ),
    entry(
        "refunds",
        ["Quand serai-je remboursé ?", "Je n'ai pas reçu mon remboursement"],
        ["When will I get my refund?"],
        topic="retours",
    ),
    entry(
        "cancel-order",
        ["Comment annuler ma commande ?", "Je souhaite annuler mon achat"],
        ["How do I cancel my order?"],
        topic="commande",
    ),
    entry(
        "password-reset",
        ["J'ai oublié mon mot de passe", "Je n'arrive pas à me connecter"],
        ["I forgot my password"],
        topic="compte",
    ),
    entry(
        "gift-cards",
        ["Vendez-vous des cartes cadeaux ?", "Comment utiliser une carte cadeau ?"],
        [],
        topic="cadeaux",
    ),
]


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.from_entries(ENTRIES)


@pytest.fixture(scope="module")
def shipped() -> KnowledgeBase:
    return KnowledgeBase.load(SHIPPED)


# ------------------------------------------------------------------ matching


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # accents missing, capitals
        ("DELAI DE LIVRAISON", "delivery-time"),
        # plurals
        ("comment retourner des articles", "returns"),
        # conjugations / participles
        ("ma commande est annulée ?", "cancel-order"),
        ("je veux annuler", "cancel-order"),
        ("pas encore remboursée", "refunds"),
        # typos
        ("rembourssement pas recu", "refunds"),
        ("anuler ma comande", "cancel-order"),
        # word order
        ("livraison délai ?", "delivery-time"),
        ("mot de passe oublié", "password-reset"),
        # English message, in a French conversation
        ("when do I get my refund", "refunds"),
        ("I forgot my password", "password-reset"),
    ],
)
def test_match_finds_the_entry(kb: KnowledgeBase, message: str, expected: str) -> None:
    match = kb.match(message, "fr")
    assert match.id == expected
    assert match.answered, match


def test_match_works_without_a_language_hint(kb: KnowledgeBase) -> None:
    assert kb.match("Comment annuler ma commande").id == "cancel-order"
    assert kb.match("how do I cancel my order").id == "cancel-order"


def test_english_message_finds_a_french_only_entry_through_synonyms() -> None:
    base = KnowledgeBase.from_entries(ENTRIES, synonyms=[["carte cadeau", "gift card"]])
    match = base.match("do you sell gift cards?", "en")
    assert match.id == "gift-cards"
    assert match.answered
    assert KnowledgeBase.from_entries(ENTRIES).match("do you sell gift cards?", "en").id != (
        "gift-cards"
    )


def test_words_are_not_stemmed_for_synonym_groups_that_do_not_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without synonym groups, a message's words are stemmed for the index only (a new
    word is stemmed for nothing else); with groups, a word still finds its group by
    its stem ("remboursez" → "rembourser")."""
    from bot.knowledge import lexical, text

    stemmed: list[tuple[str, str]] = []
    original = text.stem

    def counting(word: str, language: str) -> str:
        stemmed.append((word, language))
        return original(word, language)

    monkeypatch.setattr(lexical.textmod, "stem", counting)
    none = lexical.Synonyms([])
    assert none._single("remboursez", "remboursez") is None
    assert stemmed == []
    groups = lexical.Synonyms([["rembourser", "argent"]])
    assert groups._single("remboursez", "remboursez") == "~0"
    assert stemmed


def test_synonyms_bridge_different_words() -> None:
    message = "quand vais-je récupérer mon argent ?"
    plain = KnowledgeBase.from_entries(ENTRIES).match(message)
    bridging = KnowledgeBase.from_entries(ENTRIES, synonyms=[["rembourser", "argent"]])
    bridged = bridging.match(message)
    assert not (plain.id == "refunds" and plain.answered)
    assert bridged.id == "refunds"
    assert bridged.answered


@pytest.mark.parametrize(
    "message",
    ["quel temps fait-il demain ?", "vous vendez des pizzas ?", "asdfgh", "tell me a joke"],
)
def test_out_of_scope_messages_are_not_answered(kb: KnowledgeBase, message: str) -> None:
    match = kb.match(message)
    assert not match.answered
    assert match.score < kb.threshold


@pytest.mark.parametrize("message", ["", "   ", "?!", "le la les"])
def test_messages_without_content_match_nothing(kb: KnowledgeBase, message: str) -> None:
    match = kb.match(message)
    assert (match.entry, match.score, match.answered, match.candidates) == (None, 0.0, False, ())
    assert match.id is None
    assert match.topic is None


def test_scores_are_confidences_between_0_and_1(kb: KnowledgeBase) -> None:
    exact = kb.match("Comment retourner un article ?")
    partial = kb.match("retourner un article acheté pour l'anniversaire de ma nièce")
    assert exact.score == pytest.approx(1.0)
    assert 0.0 < partial.score < exact.score
    for _entry, score in kb.rank("retour article remboursement annuler"):
        assert 0.0 < score <= 1.0


def test_rank_orders_entries_best_first(kb: KnowledgeBase) -> None:
    ranked = kb.rank("je veux retourner un article et être remboursé")
    ids = [e.id for e, _ in ranked]
    assert set(ids[:2]) == {"returns", "refunds"}
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)


def test_threshold_decides_answered(kb: KnowledgeBase) -> None:
    strict = KnowledgeBase.from_entries(ENTRIES, threshold=0.99)
    lenient = KnowledgeBase.from_entries(ENTRIES, threshold=0.0)
    message = "retour d'un article offert à ma nièce"
    assert not strict.match(message).answered
    assert lenient.match(message).answered
    assert strict.match(message).score == lenient.match(message).score


def test_match_answer_and_properties(kb: KnowledgeBase) -> None:
    match = kb.match("Le retour est-il gratuit ?")
    assert (match.id, match.topic) == ("returns", "retours")
    assert match.answer("en") == "answer returns"
    assert match.answer("fr") == "réponse returns"
    with pytest.raises(LookupError):
        KbMatch(None, 0.0, False).answer("fr")


def test_entry_answer_falls_back_to_the_other_language() -> None:
    only_fr = KbEntry("x", "t", MappingProxyType({"fr": ("q",)}), MappingProxyType({"fr": "oui"}))
    assert only_fr.answer("en") == "oui"
    assert only_fr.answer("de") == "oui"
    both = ENTRIES[0]
    assert both.answer("de") == both.answers["fr"]


def test_entries_are_hashable_by_id() -> None:
    assert len({ENTRIES[0], ENTRIES[0], ENTRIES[1]}) == 2


def test_bad_thresholds_and_empty_bases_are_refused() -> None:
    with pytest.raises(KnowledgeBaseError, match="threshold"):
        KnowledgeBase.from_entries(ENTRIES, threshold=1.5)
    with pytest.raises(KnowledgeBaseError, match="no entry"):
        KnowledgeBase.from_entries([])


# ------------------------------------------------------------------ loading

VALID = """\
threshold: 0.4
synonyms:
  - [colis, parcel]
entries:
  - id: delivery-time
    topic: livraison
    questions:
      fr: ["Quel est le délai de livraison ?"]
      en: ["How long does delivery take?"]
    answer:
      fr: "2 à 4 jours."
      en: "2 to 4 days."
  - id: returns
    topic: retours
    questions:
      fr: ["Comment retourner un article ?"]
    answer:
      fr: "Sous 30 jours."
      en: "Within 30 days."
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "knowledge.yaml"
    path.write_text(dedent(body), encoding="utf-8")
    return path


def load_error(tmp_path: Path, body: str) -> KnowledgeBaseError:
    with pytest.raises(KnowledgeBaseError) as caught:
        KnowledgeBase.load(write(tmp_path, body))
    return caught.value


def test_load_valid_file(tmp_path: Path) -> None:
    kb = KnowledgeBase.load(write(tmp_path, VALID))
    assert [e.id for e in kb.entries] == ["delivery-time", "returns"]
    assert kb.threshold == 0.4
    assert kb.entries[1].questions == {"fr": ("Comment retourner un article ?",)}
    assert kb.entries[0].answer("en") == "2 to 4 days."
    assert kb.get("returns") is kb.entries[1]
    assert kb.match("where is the parcel delivery time").id == "delivery-time"


def test_threshold_argument_beats_the_file_and_the_default_applies_last(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert KnowledgeBase.load(path, threshold=0.7).threshold == 0.7
    without = write(tmp_path, VALID.replace("threshold: 0.4\n", ""))
    assert KnowledgeBase.load(without).threshold == DEFAULT_THRESHOLD


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    # Line 14 (" topic: retours") is indented one space less than its siblings.
    broken = VALID.replace("    topic: retours", "   topic: retours")
    error = load_error(tmp_path, broken)
    assert error.location.startswith(str(tmp_path / "knowledge.yaml") + ":")
    line, column = (int(part) for part in error.location.rsplit(":", 2)[1:])
    assert line == 14
    assert column == 4
    assert "YAML syntax error" in error.reason


def test_missing_answer_language_is_located(tmp_path: Path) -> None:
    error = load_error(tmp_path, VALID.replace('      en: "Within 30 days."\n', ""))
    assert error.location == "entries[1].answer.en"
    assert "missing" in error.reason
    assert "line 18" in error.reason  # the answer block of that entry
    assert str(error).startswith("entries[1].answer.en: ")


def test_duplicate_id_is_located(tmp_path: Path) -> None:
    error = load_error(tmp_path, VALID.replace("id: returns", "id: delivery-time"))
    assert error.location == "entries[1].id"
    assert "duplicate id 'delivery-time'" in error.reason
    assert "entries[0]" in error.reason


def test_unknown_entry_key_is_located(tmp_path: Path) -> None:
    error = load_error(tmp_path, VALID.replace("    topic: retours\n", "    topik: retours\n"))
    assert error.location == "entries[1].topik"
    assert "unknown key" in error.reason


def test_unknown_top_level_key_is_located(tmp_path: Path) -> None:
    error = load_error(tmp_path, "treshold: 0.5\n" + VALID)
    assert error.location == "treshold"
    assert "line 1" in error.reason


@pytest.mark.parametrize(
    ("old", "new", "location", "reason"),
    [
        ('      fr: ["Comment retourner un article ?"]\n', "", "entries[1].questions", "empty"),
        (
            '      fr: ["Comment retourner un article ?"]\n',
            "      fr: []\n",
            "entries[1].questions.fr",
            "non-empty list",
        ),
        (
            '      fr: ["Comment retourner un article ?"]\n',
            '      de: ["Wie?"]\n',
            "entries[1].questions.de",
            "unknown key",
        ),
        ("    topic: retours\n", "", "entries[1].topic", "missing"),
        ('      fr: "Sous 30 jours."\n', '      fr: ""\n', "entries[1].answer.fr", "non-empty"),
        ("id: returns", "id: mes retours", "entries[1].id", "without spaces"),
        ("threshold: 0.4", "threshold: 2", "threshold", "between 0 and 1"),
        ("  - [colis, parcel]", "  - [colis]", "synonyms[0]", "at least two"),
        (
            "  - [colis, parcel]",
            "  - [colis, parcel]\n  - [parcel, box]",
            "synonyms[1][0]",
            "already",
        ),
    ],
)
def test_field_errors_are_located(
    tmp_path: Path, old: str, new: str, location: str, reason: str
) -> None:
    assert old in VALID
    error = load_error(tmp_path, VALID.replace(old, new))
    assert error.location == location
    assert reason in error.reason


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    answer = '      en: "2 to 4 days."\n'
    doubled = VALID.replace(answer, answer + '      en: "x"\n')
    error = load_error(tmp_path, doubled)
    assert error.location == "entries[0].answer.en"
    assert "duplicate key" in error.reason


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="file not found"):
        KnowledgeBase.load(tmp_path / "nope.yaml")
    assert "entries" in load_error(tmp_path, "").reason
    assert load_error(tmp_path, "entries: []\n").location == "entries"


# ------------------------------------------------------------------ the shipped file


def test_shipped_knowledge_base_is_complete(shipped: KnowledgeBase) -> None:
    assert len(shipped.entries) >= 30
    for item in shipped.entries:
        assert 3 <= len(item.questions["fr"]) <= 6, item.id
        assert 2 <= len(item.questions["en"]) <= 4, item.id
        assert set(item.answers) == {"fr", "en"}, item.id
        assert all(len(a) > 80 for a in item.answers.values()), item.id


def test_shipped_examples_match_their_own_entry(shipped: KnowledgeBase) -> None:
    """Every example question must find its entry: a sanity check on the synonyms."""
    wrong = [
        (item.id, question, shipped.match(question, lang).id)
        for item in shipped.entries
        for lang, questions in item.questions.items()
        for question in questions
        if shipped.match(question, lang).id != item.id
    ]
    assert wrong == []


def test_match_is_fast() -> None:
    """The lexical matcher; the hybrid one's latency is a benchmark (bench/kb_bench.py)."""
    shipped = KnowledgeBase.load(SHIPPED, encoder="none")
    messages = [
        "Bonjour, j'ai commandé il y a dix jours et mon colis n'est toujours pas arrivé",
        "how do I return an item?",
        "rembourssement pas recu",
        "vous vendez des pizzas ?",
    ] * 50
    for message in messages[:4]:
        shipped.match(message)
    timings = []
    for message in messages:
        start = time.perf_counter()
        shipped.match(message)
        timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.001  # measured ≈ 0.1 ms on the 2-core dev machine


def test_scores_are_the_evidences_confidences_bit_for_bit() -> None:
    """``LexicalIndex.scores`` writes ``confidence(Evidence(...))`` out inline (speed):
    on every shipped set's messages, with and without synonyms, the very same floats
    as the model's own definition (``Evidence.coverage``, ``confidence``)."""
    from bot.knowledge.evaluation import load_dataset, shipped_sets
    from bot.knowledge.lexical import Evidence, LexicalIndex, Synonyms, confidence
    from bot.knowledge.loader import parse

    checked = 0
    for item in shipped_sets():
        entries, _threshold, synonyms = parse(item.knowledge)
        for groups in (synonyms, []):
            index = LexicalIndex(entries, Synonyms(groups))
            for case in [*load_dataset(item.dataset), *map(_Case, ["", "?!", "zzzz qqqq"])]:
                sums = index._gather(case.text, case.language)
                expected: tuple[dict[int, float], float] = ({}, 1.0)
                if sums is not None:
                    mass, fit, total, unknown, discount = sums
                    found = {
                        n: confidence(Evidence(m, total, unknown, fit[n], discount))
                        for n, m in enumerate(mass)
                        if m > 0.0
                    }
                    expected = (found, unknown / total) if found else ({}, 1.0)
                assert index.scores(case.text, case.language) == expected, case.text
                checked += 1
    assert checked > 1000


class _Case:
    def __init__(self, text: str) -> None:
        self.text, self.language = text, "fr"
