"""bot.conversation.intents: handoff-deciding intents (precision first) and typed survey answers."""

from __future__ import annotations

import pytest

from bot.conversation.intents import Intent, detect_intent, parse_csat, parse_nps

HUMAN = [
    "je veux parler à un conseiller",
    "Un humain svp",
    "CONSEILLER",
    "est-ce que je peux parler à quelqu'un ?",
    "passez-moi un vrai agent",
    "je voudrais une vraie personne, pas un robot",
    "Bonjour, je voudrais avoir un conseiller au téléphone pour ma commande svp",
    "non, je veux parler à un conseiller",
    "agent",
    "human please",
    "I want to talk to someone",
    "can I speak to a real person?",
    "get me a representative",
    "operator",
    "is there a live agent?",
]

COMPLAINT = [
    "je veux faire une réclamation",
    "je vais porter plainte",
    "j'ouvre un litige avec ma banque",
    "c'est inadmissible",
    "Scandaleux, toujours rien reçu",
    "c'est une arnaque votre site",
    "Honteux.",
    "c'est inacceptable de traiter les clients comme ça",
    "n'importe quoi ce service",
    "j'en ai marre d'attendre",
    "je ne commanderai plus jamais chez vous",
    "I want to file a complaint",
    "I'll dispute the charge with my bank",
    "this is unacceptable",
    "total scam",
    "ridiculous service",
    "worst shop ever",
    "you are idiots",
    "JE VEUX MON COLIS MAINTENANT !!!",
    "WHERE IS MY ORDER!!",
    # complaint wins over a request for a person
    "c'est scandaleux, je veux parler à un conseiller",
    "this is a scam, get me a human",
]

NONE = [
    # refund and return questions are for the knowledge base, not complaints
    "comment me faire rembourser ?",
    "Je voudrais retourner un article",
    "quand serai-je remboursé ?",
    "how do I get a refund?",
    "I'd like to return my order",
    "mon colis n'est pas arrivé",
    "ce n'est pas une réclamation, juste une question sur la livraison",
    "this is not a complaint, I just want to know the delivery time",
    # mentions of people that are not requests for one
    "Bonjour, un conseiller m'a dit que je serais remboursé sous 5 jours, où en est-il ?",
    "l'agent de livraison est passé sans sonner",
    "pas besoin de conseiller, merci, j'ai trouvé",
    # a long message that contains "non" / "oui" is not a yes/no reply
    "non je voulais savoir si vous livrez en Belgique ou pas",
    "oui mais ça ne marche toujours pas sur mon téléphone",
    "pros and cons of the wool jumper?",
    "Bonjour, où est mon colis ?",
    "Il est VRAIMENT bien ce pull",  # a few capitals are not shouting
    "hmm",
    "",
    "   ",
]

YES = [
    "oui",
    "Oui merci",
    "parfait",
    "Parfait, merci beaucoup !",
    "c'est bon",
    "ça marche",
    "d'accord",
    "ok",
    "yes",
    "yes thanks",
    "that works",
    "it helped, thank you",
    "great",
    "👍",
    "no problem",
]

NO = [
    "non",
    "Non.",
    "pas du tout",
    "pas vraiment",
    "non toujours pas",
    "ça ne m'aide pas",
    "no",
    "nope",
    "not really",
    "no it didn't",
    "that doesn't help",
    "👎",
]

THANKS = [
    "merci",
    "Merci beaucoup !",
    "merci, bonne journée",
    "thanks",
    "thank you so much",
    "ok merci",
]

GREETING = [
    "bonjour",
    "Bonsoir !",
    "salut",
    "hello there",
    "hi",
    "good morning",
    "bonjour, ça va ?",
]


@pytest.mark.parametrize(
    ("message", "intent"),
    [(m, Intent.HUMAN) for m in HUMAN]
    + [(m, Intent.COMPLAINT) for m in COMPLAINT]
    + [(m, Intent.NONE) for m in NONE]
    + [(m, Intent.YES) for m in YES]
    + [(m, Intent.NO) for m in NO]
    + [(m, Intent.THANKS) for m in THANKS]
    + [(m, Intent.GREETING) for m in GREETING],
)
def test_detect_intent(message: str, intent: Intent) -> None:
    assert detect_intent(message) == intent


def test_intents_are_strings() -> None:
    assert Intent.HUMAN.value == "human"
    assert str(Intent.NONE) == "none"


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("8", 8),
        ("8/10", 8),
        ("8 / 10", 8),
        ("huit", 8),
        ("Huit", 8),
        ("eight", 8),
        ("dix", 10),
        ("10 !", 10),
        (" 9 sur 10", 9),
        ("9 out of 10", 9),
        ("0", 0),
        ("zéro", 0),
        ("10/10", 10),
        ("07", 7),
    ],
)
def test_parse_nps_accepts(answer: str, score: int) -> None:
    assert parse_nps(answer) == score


@pytest.mark.parametrize(
    "answer",
    ["11", "-1", "8 ou 9", "8-9", "8.5", "8,5", "huit ou neuf", "je dirais 8", "onze", "8/5",
     "", "  ", "bien", "😍", "100"],
)  # fmt: skip
def test_parse_nps_refuses(answer: str) -> None:
    assert parse_nps(answer) is None


@pytest.mark.parametrize(
    ("answer", "rating"),
    [
        ("4", 4),
        ("4/5", 4),
        ("quatre", 4),
        ("😍", 5),
        ("🙂", 4),
        ("😐", 3),
        ("🙁", 2),
        ("😡", 1),
        ("🙂\ufe0f", 4),  # with a variation selector, as some keyboards send it
        ("😍😍", 5),
        (":)", 4),
        (":-(", 2),
        (":D", 5),
        (":|", 3),
        ("⭐⭐⭐", 3),
        ("1", 1),
        ("5 !", 5),
    ],
)
def test_parse_csat_accepts(answer: str, rating: int) -> None:
    assert parse_csat(answer) == rating


@pytest.mark.parametrize(
    "answer", ["0", "6", "10", "😍🙁", "bof", "super", "", "4 ou 5", "⭐⭐⭐⭐⭐⭐", "4/10"]
)
def test_parse_csat_refuses(answer: str) -> None:
    assert parse_csat(answer) is None
