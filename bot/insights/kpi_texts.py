"""Words and number formats of the KPI report and digest, in French and English.

Kept out of the logic (like ``bot.texts``); numbers, percentages and dates go
through Babel so that each language gets its own separators ("1 234,5 %" / "1,234.5%").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.numbers import NumberPattern, parse_pattern

from bot.insights.kpi_texts_closing import CLOSING_TEXTS

LOCALES = {"fr": "fr_FR", "en": "en_GB"}

CATALOG: dict[str, dict[str, str]] = {
    "fr": {
        "digest_title": "📊 Indicateurs du support — {period}",
        "period_days": "du {first} au {last}",
        "period_day": "le {first}",
        "period_span": "du {start} au {end}",
        "nps": "NPS",
        "nps_line": "NPS : {score}{change} — promoteurs {promoters}, passifs {passives}, "
        "détracteurs {detractors}",
        "csat_line": "CSAT : {pct} satisfaits{change}, note moyenne {average}/5 "
        "(notes : {responses})",
        "frt_line": "Première réponse : médiane {median}{change}, p90 {p90}",
        "frt_business_line": "   en heures ouvrées : médiane {median}, p90 {p90}",
        "agent_frt_line": "Première réponse d'un conseiller : médiane {median}{change}, p90 {p90}",
        "car_line": "Abandon : {pct}{change} ({abandoned} sur {started})",
        "crr_line": "Rétention (CRR) : {pct}{change}",
        "bot_line": "Résolu par le bot : {pct}{change}",
        "survey_line": "Taux de réponse aux enquêtes : {pct}{change}",
        "volumes_line": "Conversations : {started}{change} · résolues {resolved} "
        "(par le bot {by_bot}) · transmises {handed_off} · abandonnées {abandoned}",
        "agents_title": "Par conseiller :",
        "agent_line": "• {name} — conversations {handled} · résolues {resolved} · NPS {nps} · "
        "CSAT {csat} · 1re réponse {frt}",
        "topics_title": "Thèmes les moins bien notés :",
        "topic_line": "• {topic} — NPS {nps} (n = {responses}) · CSAT {csat}",
        "comments_title": "Commentaires de détracteurs :",
        "comment_line": "• « {comment} » — NPS {nps}{topic}",
        "gaps_digest_title": "Questions restées sans réponse (à ajouter à la base) :",
        "gap_line": "• « {question} » — {count} fois",
        "gaps_title": "Questions sans réponse — {period} ({tz})",
        "weak_title": "Réponses qui n'ont pas aidé",
        "col_question": "Question (la plus représentative)",
        "col_count": "Fois",
        "col_examples": "Autres formulations",
        "col_entry": "Entrée",
        "col_not_helpful": "N'a pas aidé",
        "col_answered": "Répondue",
        "no_gaps": "Aucune question sans réponse sur la période.",
        "no_data": "—",
        "none_topic": "(sans thème)",
        "none_group": "(aucun)",
        "no_activity": "Aucune conversation ni réponse d'enquête sur la période.",
        "new": "nouveau",
        "pts": "pts",
        "chart_satisfaction": "Satisfaction",
        "chart_frt": "Délai de première réponse",
        "chart_first": "Première réponse",
        "chart_agent": "Conseiller",
        "chart_share": "% des réponses",
        # the kpi report
        "report_title": "KPI du support — {period} ({tz})",
        "report_today": "Aujourd'hui inclus, jusqu'à maintenant.",
        "col_kpi": "Indicateur",
        "col_value": "Valeur",
        "row_conversations": "Conversations",
        "row_conversations_value": "démarrées {started} · résolues {resolved} (par le bot "
        "{by_bot}) · transmises {handed_off} · abandonnées {abandoned}",
        "row_nps": "NPS",
        "row_nps_value": "{score} (promoteurs {promoters} · passifs {passives} · "
        "détracteurs {detractors})",
        "row_csat": "CSAT",
        "row_csat_value": "{pct} satisfaits · moyenne {average}/5 (notes : {responses})",
        "row_frt": "Première réponse",
        "row_frt_business": "  en heures ouvrées",
        "row_agent_frt": "1re réponse conseiller",
        "row_agent_frt_business": "  en heures ouvrées",
        "row_frt_value": "médiane {median} · moyenne {mean} · p90 {p90} ({count})",
        "row_car": "Taux d'abandon",
        "row_crr": "Rétention (CRR)",
        "row_crr_value": "{pct} (S {start} · E {end} · N {new})",
        "row_bot": "Résolution par le bot",
        "row_survey": "Réponse aux enquêtes",
        "row_rate_value": "{pct} ({num} sur {den})",
        "col_started": "Conv.",
        "col_nps": "NPS",
        "col_csat": "CSAT",
        "col_frt": "1re rép.",
        "col_agent_frt": "Conseil.",
        "col_car": "Abandon",
        "col_bot": "Bot",
        "group_channel": "Canal",
        "group_agent": "Conseiller",
        "presence_available": " ●",
        "presence_away": " ○",
        "presence_unknown": "",
        "presence_legend": "● disponible · ○ absent (présence actuelle)",
        "group_topic": "Thème",
        "week_title": "KPI de la semaine (depuis le {since}) :",
        "week_line": "{started} conversations · NPS {nps} · CSAT {csat} · 1re réponse {frt} · "
        "abandon {car} · résolu par le bot {bot}",
        # the web dashboard
        "dash_title": "Tableau de bord du support",
        "dash_period": "Période",
        "dash_from": "Du",
        "dash_to": "Au (exclu)",
        "dash_apply": "Afficher",
        "dash_preset": "{days} j",
        "dash_loading": "Chargement…",
        "dash_error": "Impossible de charger les indicateurs : {reason}",
        "dash_promoters": "Promoteurs",
        "dash_passives": "Passifs",
        "dash_detractors": "Détracteurs",
        "dash_satisfied": "satisfaits",
        "dash_csat_detail": "moyenne {average} / 5 · {answers}",
        "dash_answers_one": "{n} réponse",
        "dash_answers_other": "{n} réponses",
        "dash_answers_none": "aucune réponse",
        "dash_median": "Médiane",
        "dash_p90": "p90",
        "dash_volumes": "Volumes",
        "dash_started": "Démarrées",
        "dash_resolved": "Résolues",
        "dash_by_bot": "Par le bot",
        "dash_handed_off": "Transmises",
        "dash_abandoned": "Abandonnées",
        "dash_trend": "NPS et CSAT",
        "dash_abandonment_trend": "Taux d'abandon",
        "dash_frt_distribution": "Répartition des délais de première réponse",
        "dash_bucket": "Délai",
        "dash_day": "Jour",
        "dash_week": "Semaine du",
        "dash_csv": "Télécharger en CSV",
        "dash_breakdowns": "Détail",
        "dash_table": "Données du graphique",
        "row_followups": "Suivis des détracteurs",
        "followups_line": "Suivis des détracteurs : {value}",
        "row_followups_value": "{opened} ouverts · {contacted} contactés · {pct} à temps · "
        "médiane {median}",
    },
    "en": {
        "digest_title": "📊 Support KPIs — {period}",
        "period_days": "{first} to {last}",
        "period_day": "{first}",
        "period_span": "{start} to {end}",
        "nps": "NPS",
        "nps_line": "NPS: {score}{change} — promoters {promoters}, passives {passives}, "
        "detractors {detractors}",
        "csat_line": "CSAT: {pct} satisfied{change}, average {average}/5 (ratings: {responses})",
        "frt_line": "First response: median {median}{change}, p90 {p90}",
        "frt_business_line": "   in business hours: median {median}, p90 {p90}",
        "agent_frt_line": "Agent first response: median {median}{change}, p90 {p90}",
        "car_line": "Abandonment: {pct}{change} ({abandoned} of {started})",
        "crr_line": "Retention (CRR): {pct}{change}",
        "bot_line": "Resolved by the bot: {pct}{change}",
        "survey_line": "Survey response rate: {pct}{change}",
        "volumes_line": "Conversations: {started}{change} · resolved {resolved} "
        "(by the bot {by_bot}) · handed off {handed_off} · abandoned {abandoned}",
        "agents_title": "Per agent:",
        "agent_line": "• {name} — conversations {handled} · resolved {resolved} · NPS {nps} · "
        "CSAT {csat} · first reply {frt}",
        "topics_title": "Lowest-scoring topics:",
        "topic_line": "• {topic} — NPS {nps} (n = {responses}) · CSAT {csat}",
        "comments_title": "Detractor comments:",
        "comment_line": "• “{comment}” — NPS {nps}{topic}",
        "gaps_digest_title": "Questions left unanswered (add them to the knowledge base):",
        "gap_line": "• “{question}” — {count} times",
        "gaps_title": "Unanswered questions — {period} ({tz})",
        "weak_title": "Answers that did not help",
        "col_question": "Question (most representative)",
        "col_count": "Times",
        "col_examples": "Other wordings",
        "col_entry": "Entry",
        "col_not_helpful": "Did not help",
        "col_answered": "Answered",
        "no_gaps": "No unanswered question in this period.",
        "no_data": "—",
        "none_topic": "(no topic)",
        "none_group": "(none)",
        "no_activity": "No conversation or survey answer in this period.",
        "new": "new",
        "pts": "pts",
        "chart_satisfaction": "Satisfaction",
        "chart_frt": "First response time",
        "chart_first": "First response",
        "chart_agent": "Agent",
        "chart_share": "% of responses",
        "report_title": "Support KPIs — {period} ({tz})",
        "report_today": "Today included, up to now.",
        "col_kpi": "KPI",
        "col_value": "Value",
        "row_conversations": "Conversations",
        "row_conversations_value": "started {started} · resolved {resolved} (by the bot "
        "{by_bot}) · handed off {handed_off} · abandoned {abandoned}",
        "row_nps": "NPS",
        "row_nps_value": "{score} (promoters {promoters} · passives {passives} · "
        "detractors {detractors})",
        "row_csat": "CSAT",
        "row_csat_value": "{pct} satisfied · average {average}/5 (ratings: {responses})",
        "row_frt": "First response",
        "row_frt_business": "  in business hours",
        "row_agent_frt": "Agent first response",
        "row_agent_frt_business": "  in business hours",
        "row_frt_value": "median {median} · mean {mean} · p90 {p90} ({count})",
        "row_car": "Abandonment rate",
        "row_crr": "Retention (CRR)",
        "row_crr_value": "{pct} (S {start} · E {end} · N {new})",
        "row_bot": "Bot resolution rate",
        "row_survey": "Survey response rate",
        "row_rate_value": "{pct} ({num} of {den})",
        "col_started": "Conv.",
        "col_nps": "NPS",
        "col_csat": "CSAT",
        "col_frt": "1st rep.",
        "col_agent_frt": "Agent",
        "col_car": "Aband.",
        "col_bot": "Bot",
        "group_channel": "Channel",
        "group_agent": "Agent",
        "presence_available": " ●",
        "presence_away": " ○",
        "presence_unknown": "",
        "presence_legend": "● available · ○ away (presence now)",
        "group_topic": "Topic",
        "week_title": "KPIs this week (since {since}):",
        "week_line": "{started} conversations · NPS {nps} · CSAT {csat} · first response {frt} · "
        "abandonment {car} · resolved by the bot {bot}",
        # the web dashboard
        "dash_title": "Support dashboard",
        "dash_period": "Period",
        "dash_from": "From",
        "dash_to": "To (exclusive)",
        "dash_apply": "Show",
        "dash_preset": "{days} d",
        "dash_loading": "Loading…",
        "dash_error": "Could not load the KPIs: {reason}",
        "dash_promoters": "Promoters",
        "dash_passives": "Passives",
        "dash_detractors": "Detractors",
        "dash_satisfied": "satisfied",
        "dash_csat_detail": "mean {average} / 5 · {answers}",
        "dash_answers_one": "{n} answer",
        "dash_answers_other": "{n} answers",
        "dash_answers_none": "no answers",
        "dash_median": "Median",
        "dash_p90": "p90",
        "dash_volumes": "Volumes",
        "dash_started": "Started",
        "dash_resolved": "Resolved",
        "dash_by_bot": "By the bot",
        "dash_handed_off": "Handed off",
        "dash_abandoned": "Abandoned",
        "dash_trend": "NPS and CSAT",
        "dash_abandonment_trend": "Abandonment rate",
        "dash_frt_distribution": "First response time distribution",
        "dash_bucket": "Time",
        "dash_day": "Day",
        "dash_week": "Week of",
        "dash_csv": "Download CSV",
        "dash_breakdowns": "Breakdowns",
        "dash_table": "Chart data",
        "row_followups": "Detractor follow-ups",
        "followups_line": "Detractor follow-ups: {value}",
        "row_followups_value": "{opened} opened · {contacted} contacted · {pct} in time · "
        "median {median}",
    },
}

for _language, _closing in CLOSING_TEXTS.items():
    CATALOG[_language].update(_closing)

_UNITS = {
    "fr": {"s": "s", "min": "min", "h": "h", "d": "j"},
    "en": {"s": "s", "min": "min", "h": "h", "d": "d"},
}


@lru_cache(maxsize=32)
def _pattern(pattern: str) -> NumberPattern:
    """Parsed once: what Babel's format_decimal/format_percent do on every call."""
    return parse_pattern(pattern)


class KpiTexts:
    """The catalog and number formats of one language."""

    def __init__(self, language: str) -> None:
        self.language = language if language in CATALOG else "en"
        self.locale = LOCALES[self.language]
        self._babel = Locale.parse(self.locale)
        self._strings = CATALOG[self.language]

    def __call__(self, key: str, **values: object) -> str:
        return self._strings[key].format(**values)

    @property
    def dash(self) -> str:
        return self._strings["no_data"]

    def _format(self, pattern: str, value: float) -> str:
        return str(_pattern(pattern).apply(value, self._babel))

    def integer(self, value: int) -> str:
        return self._format("#,##0", value)

    def number(self, value: float | None, digits: int = 1) -> str:
        if value is None:
            return self.dash
        pattern = "#,##0." + "#" * digits if digits else "#,##0"
        return self._format(pattern, value)

    def mean(self, value: float | None) -> str:
        """A mean rating, always with one decimal ("5,0"), so that it reads as a mean."""
        return self.dash if value is None else self._format("#,##0.0", value)

    def answers(self, count: int) -> str:
        """ "1 réponse", "2 réponses", "aucune réponse" — each language's plural rule."""
        if count == 0:
            return self._strings["dash_answers_none"]
        form = "one" if self._babel.plural_form(count) == "one" else "other"
        return self(f"dash_answers_{form}", n=self.integer(count))

    def score(self, value: float | None) -> str:
        """An NPS: signed whole number with a real minus sign ("−20", "+30", "0")."""
        if value is None:
            return self.dash
        text = self.number(abs(value), 0)
        if round(value) == 0:
            return text
        return ("+" if value > 0 else "−") + text

    def pct(self, value: float | None, digits: int = 1) -> str:
        if value is None:
            return self.dash
        # The locale's own pattern ("#,##0 %" in French), with the wanted decimals.
        pattern = self._babel.percent_formats[None].pattern
        if digits:
            pattern = pattern.replace("#,##0", "#,##0." + "#" * digits, 1)
        return self._format(pattern, value / 100)

    def duration(self, seconds: float | None) -> str:
        """2,5 s · 4 min 10 s · 1 h 05 min · 2 j 3 h."""
        if seconds is None:
            return self.dash
        unit = _UNITS[self.language]
        if seconds < 60:
            return f"{self.number(seconds, 1 if seconds < 10 else 0)} {unit['s']}"
        total = round(seconds)
        minutes, secs = divmod(total, 60)
        if minutes < 60:
            return (
                f"{minutes} {unit['min']} {secs:02d} {unit['s']}"
                if secs
                else (f"{minutes} {unit['min']}")
            )
        hours, minutes = divmod(minutes, 60)
        if hours < 24:
            return (
                f"{hours} {unit['h']} {minutes:02d} {unit['min']}"
                if minutes
                else (f"{hours} {unit['h']}")
            )
        days, hours = divmod(hours, 24)
        return f"{days} {unit['d']} {hours} {unit['h']}" if hours else f"{days} {unit['d']}"

    def change_points(self, now: float | None, before: float | None) -> str:
        """The change against the previous period, " (▲ 5 pts)"; empty when a side is missing."""
        if now is None or before is None:
            return ""
        delta = now - before
        if abs(delta) < 0.05:
            return " (=)"
        arrow = "▲" if delta > 0 else "▼"
        return f" ({arrow} {self.number(abs(delta), 1)} {self._strings['pts']})"

    def change_duration(self, now: float | None, before: float | None) -> str:
        if now is None or before is None:
            return ""
        delta = now - before
        if abs(delta) < 0.5:
            return " (=)"
        arrow = "▲" if delta > 0 else "▼"
        return f" ({arrow} {self.duration(abs(delta))})"

    def change_count(self, now: int, before: int) -> str:
        if now == before:
            return " (=)"
        arrow = "▲" if now > before else "▼"
        return f" ({arrow} {self.integer(abs(now - before))})"

    def day(self, value: datetime) -> str:
        return format_date(value.date(), format="medium", locale=self.locale)

    def moment(self, value: datetime) -> str:
        return format_datetime(value, "d MMM y, HH:mm", tzinfo=value.tzinfo, locale=self.locale)

    def period(self, start: datetime, end: datetime) -> str:
        """Local days "16 nov. 2026 to 22 nov. 2026" (end exclusive), or two instants."""
        end_local = end.astimezone(start.tzinfo)
        midnight = start.time() == end_local.time() == datetime.min.time()
        if midnight:
            last = end_local - timedelta(days=1)
            if last.date() == start.date():
                return self("period_day", first=self.day(start))
            return self("period_days", first=self.day(start), last=self.day(last))
        return self("period_span", start=self.moment(start), end=self.moment(end_local))
