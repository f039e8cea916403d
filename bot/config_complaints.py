"""The ``complaints:`` and ``touchpoints:`` sections of config.yaml (issue 16).

Kept beside ``bot.config`` so that the settings model only gains two lines. Causes and
categories are the labels agents choose from and reports print; the solutions are fixed
(``SOLUTIONS``) because scripts read them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bot.config_types import Section

SOLUTIONS = (
    "refund",
    "partial_refund",
    "replacement",
    "voucher",
    "free_delivery",
    "mediation",
    "none",
)
STAGES = ("before", "during", "after")

DEFAULT_CATEGORIES = (
    "livraison",
    "produit",
    "commande",
    "facturation",
    "remboursement",
    "service client",
    "autre",
)
DEFAULT_CAUSES = (
    "retard de livraison",
    "colis endommagé",
    "colis perdu",
    "produit défectueux",
    "produit non conforme",
    "erreur de commande",
    "erreur de facturation",
    "remboursement en attente",
    "service client injoignable",
    "autre",
)


def _distinct(values: list[str]) -> list[str]:
    cleaned = [v.strip() for v in values]
    if any(not v for v in cleaned):
        raise ValueError("an empty label is not allowed")
    if len({v.casefold() for v in cleaned}) != len(cleaned):
        raise ValueError("labels must be distinct")
    if any(len(v) > 60 for v in cleaned):
        raise ValueError("labels are at most 60 characters")
    return cleaned


class ComplaintsSettings(Section):
    """The lists agents choose a complaint's category and root cause from."""

    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    causes: list[str] = Field(default_factory=lambda: list(DEFAULT_CAUSES))

    @field_validator("categories", "causes")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one label")
        if len(value) > 40:
            raise ValueError("at most 40 labels (they become buttons)")
        return _distinct(value)


class TouchpointSettings(Section):
    """Where a resolution tag sits in the customer journey."""

    touchpoint: str = Field(min_length=1, max_length=60)
    stage: Literal["before", "during", "after"] | None = None
