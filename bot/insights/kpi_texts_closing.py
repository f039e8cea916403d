"""Words of issue 16's KPIs (resolution time, complaints, re-contacts, journey breakdowns)
in the report, digest and dashboard; merged into ``bot.insights.kpi_texts.CATALOG``."""

from __future__ import annotations

CLOSING_TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "row_resolution": "Délai de résolution",
        "row_resolution_business": "  en heures ouvrées",
        "row_complaints": "Réclamations",
        "row_complaints_value": "{count}{causes}",
        "row_recontact": "Recontact sous 7 j",
        "group_touchpoint": "Point de contact",
        "group_stage": "Étape",
        "group_cause": "Cause",
        "col_complaints": "Récl.",
        "col_share": "Part",
        "col_previous": "Avant",
        "col_resolution": "Résolution",
        "causes_title": "Causes récurrentes des réclamations :",
        "cause_line": "• {cause} — {count} ({share}){change}",
        "digest_resolution": "Délai de résolution : médiane {median} · p90 {p90} · "
        "recontact sous 7 j {recontact}",
        "dash_resolution": "Délai de résolution",
        "dash_recontact": "Recontact sous 7 j",
        "dash_causes": "Causes des réclamations",
        "chart_this_period": "Cette période",
        "chart_previous_period": "Période précédente",
        "dash_touchpoints": "Satisfaction par point de contact",
    },
    "en": {
        "row_resolution": "Resolution time",
        "row_resolution_business": "  in business hours",
        "row_complaints": "Complaints",
        "row_complaints_value": "{count}{causes}",
        "row_recontact": "Re-contact within 7 d",
        "group_touchpoint": "Touchpoint",
        "group_stage": "Stage",
        "group_cause": "Cause",
        "col_complaints": "Compl.",
        "col_share": "Share",
        "col_previous": "Before",
        "col_resolution": "Resolution",
        "causes_title": "Recurring complaint causes:",
        "cause_line": "• {cause} — {count} ({share}){change}",
        "digest_resolution": "Resolution time: median {median} · p90 {p90} · "
        "re-contact within 7 d {recontact}",
        "dash_resolution": "Resolution time",
        "dash_recontact": "Re-contact within 7 d",
        "dash_causes": "Complaint causes",
        "chart_this_period": "This period",
        "chart_previous_period": "Previous period",
        "dash_touchpoints": "Satisfaction by touchpoint",
    },
}
