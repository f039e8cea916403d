"""KPI arithmetic and result types: pure functions over counts and durations, no SQL.
Durations from timestamps (percentiles, business time, the cohort) are in
``bot.insights.durations``.

``storage/kpi_queries.py`` fills these types from the database; the reference
implementation in ``tests/test_kpi_queries.py`` recomputes them from raw rows. Both
follow these period semantics, for a period [start, end) given in the configured
time zone and compared as UTC epoch milliseconds:

- ``conversations.*`` count the *cohort* of conversations whose ``started_at`` is in
  the period; their outcome (resolved, handed off, abandoned) is the one stored when
  the report runs, whenever it happened. So resolved ≤ started, abandoned ≤ started
  and the abandonment rate (CAR) never exceeds 100 %. ``resolved_by_bot`` counts the
  cohort's conversations resolved and never handed off (SPEC: "resolved without
  handoff"); the bot resolution rate is resolved_by_bot ÷ resolved.
- ``first_response_s``: the same cohort, ``first_response_at − started_at`` for the
  conversations that got a response. ``agent_first_response_s``: the cohort's
  conversations handed off and answered by an agent, ``first_agent_response_at −
  handed_off_at``. Negative differences (clock skew) count as 0.
  ``*_business_s`` measure the same pairs in working seconds of the business calendar
  (split shifts, holidays; always open when no business hours are configured).
- ``nps``: survey answers whose ``nps_at`` is in the period. ``csat``: ratings whose
  ``csat_at`` is in the period. ``survey_response_rate_pct``: surveys whose ``sent_at``
  is in the period, answered = they have an NPS answer (when the report runs).
- ``retention``: a customer is reachable at instant t when ``first_seen_at < t`` and
  their latest ``customer_reachability`` row with ``at < t``, if any, says reachable
  (two changes in the same millisecond: "reachable" wins). S = reachable at start,
  E = reachable at end, N = customers whose ``first_seen_at`` is in [start, end). The
  strict "<" keeps both ends half-open like the period: a customer first seen exactly
  at ``start`` is new (in N), not in S. CRR = (E − N) ÷ S × 100, None when S = 0.
  The queries rely on one invariant of the engine's data: a customer's reachability
  never changes before their first conversation (``at >= first_seen_at``).
- Percentiles (median, p90) interpolate linearly between the closest ranks
  (Hyndman & Fan type 7 = numpy's default = Excel's PERCENTILE.INC): for n sorted
  values and fraction p, h = (n − 1)·p and the result is x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋]).
- Every rate or score whose denominator is empty is None ("no data"), never 0.
- Breakdowns: ``channel`` groups by the conversation's / survey's / customer's channel;
  ``agent`` by the agent holding the conversation last (``conversations.agent_key``,
  ``surveys.agent_key``); ``topic`` by ``COALESCE(tag, topic)`` (surveys store it
  already coalesced). A missing key is the group ``"(none)"``. The groups are the keys
  with a conversation started, or a survey sent or answered, in the period. Retention
  is split by channel only: agent and topic groups report it as null.
- ``followups``: see ``bot.insights.followup_kpi``.
- ``touchpoint``/``stage`` group by the conversation's columns (the answered entry's, or
  the resolution tag's mapping); surveys by their conversation's. ``cause`` groups
  complaint conversations by root cause (``UNSET_CAUSE`` when not set) and every other
  conversation under ``"(none)"``; ``--by cause`` adds each cause's share of the
  complaints and its count in the previous period.
- ``resolution_s``: the cohort's resolved conversations, ``resolved_at − started_at``
  (and in business seconds). ``complaints``: the cohort's complaint conversations, by
  root cause. ``recontact_rate_pct``: the cohort's resolved conversations whose customer
  started another conversation within ``RECONTACT_DAYS`` days after the resolution
  (known when the report runs) ÷ those resolved conversations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.insights.followup_kpi import FollowupFigures

NONE_KEY = "(none)"
UNSET_CAUSE = "(non renseignée)"  # a complaint whose root cause nobody set: never dropped
BREAKDOWNS = ("channel", "agent", "topic", "touchpoint", "stage", "cause")
RECONTACT_DAYS = 7


# --- periods ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end) as aware datetimes in the configured time zone."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("period bounds must be timezone-aware")
        if self.end.timestamp() <= self.start.timestamp():  # not wall-clock: DST folds
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")

    @classmethod
    def of_days(cls, first: date, end: date, tz: ZoneInfo) -> Period:
        """Local days ``first`` … ``end`` (exclusive), midnight to midnight in ``tz``."""
        return cls(datetime.combine(first, time(0), tz), datetime.combine(end, time(0), tz))

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)

    def _whole_days(self) -> int | None:
        """Number of local days when both bounds are local midnights, else None."""
        end = self.end.astimezone(self.start.tzinfo)
        if self.start.time() != time(0) or end.time() != time(0):
            return None
        return (end.date() - self.start.date()).days

    def previous(self) -> Period:
        """The period of the same length just before (same number of local days)."""
        days = self._whole_days()
        tz = self.start.tzinfo
        if days is not None and isinstance(tz, ZoneInfo):
            first = self.start.date() - timedelta(days=days)
            return Period.of_days(first, self.start.date(), tz)
        length = self.end.astimezone(UTC) - self.start.astimezone(UTC)
        start = (self.start.astimezone(UTC) - length).astimezone(self.start.tzinfo)
        return Period(start, self.start)


# --- arithmetic ------------------------------------------------------------------------


def rate_pct(numerator: int, denominator: int) -> float | None:
    """numerator ÷ denominator × 100; None when the denominator is 0 (no data, not 0 %)."""
    if denominator <= 0:
        return None
    return 100.0 * numerator / denominator


def nps_score(promoters: int, passives: int, detractors: int) -> float | None:
    """% promoters − % detractors, −100…100; None when nobody answered."""
    total = promoters + passives + detractors
    if total == 0:
        return None
    return 100.0 * (promoters - detractors) / total


def retention_rate(start: int, end: int, new: int) -> float | None:
    """CRR = ((E − N) ÷ S) × 100; None when S = 0."""
    if start <= 0:
        return None
    return 100.0 * (end - new) / start


# --- result types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Volumes:
    started: int = 0
    resolved: int = 0
    resolved_by_bot: int = 0
    handed_off: int = 0
    abandoned: int = 0

    def __add__(self, other: Volumes) -> Volumes:
        return Volumes(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class Nps:
    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    @property
    def responses(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def score(self) -> float | None:
        return nps_score(self.promoters, self.passives, self.detractors)

    def __add__(self, other: Nps) -> Nps:
        return Nps(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class Csat:
    responses: int = 0
    satisfied: int = 0  # ratings of 4 or 5
    total: int = 0  # sum of the ratings, for the mean

    @property
    def score_pct(self) -> float | None:
        return rate_pct(self.satisfied, self.responses)

    @property
    def average(self) -> float | None:
        return self.total / self.responses if self.responses else None

    def __add__(self, other: Csat) -> Csat:
        return Csat(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds: how many, and their median, mean and p90 (None when there are none)."""

    count: int = 0
    median: float | None = None
    mean: float | None = None
    p90: float | None = None


@dataclass(frozen=True, slots=True)
class Retention:
    start_customers: int = 0
    end_customers: int = 0
    new_customers: int = 0

    @property
    def rate_pct(self) -> float | None:
        return retention_rate(self.start_customers, self.end_customers, self.new_customers)

    def __add__(self, other: Retention) -> Retention:
        return Retention(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class SurveyCounts:
    sent: int = 0
    answered: int = 0  # with an NPS answer

    def __add__(self, other: SurveyCounts) -> SurveyCounts:
        return SurveyCounts(self.sent + other.sent, self.answered + other.answered)


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    """First response and agent first response, in calendar and in business seconds."""

    first: Durations = Durations()
    agent_first: Durations = Durations()
    first_business: Durations = Durations()
    agent_first_business: Durations = Durations()


@dataclass(frozen=True, slots=True)
class Closing:
    """Resolution times, complaints by root cause, and re-contacts (issue 16)."""

    resolution: Durations = Durations()
    resolution_business: Durations = Durations()
    complaints: tuple[tuple[str, int], ...] = ()  # (cause, count), largest first
    resolved: int = 0  # resolved conversations of the cohort …
    returned: int = 0  # … whose customer came back within RECONTACT_DAYS

    @property
    def complaint_count(self) -> int:
        return sum(n for _, n in self.complaints)

    @property
    def recontact_rate_pct(self) -> float | None:
        return rate_pct(self.returned, self.resolved)

    def to_json(self) -> dict[str, Any]:
        return {
            "resolution_s": _durations(self.resolution),
            "resolution_business_s": _durations(self.resolution_business),
            "complaints": {"count": self.complaint_count, "by_cause": dict(self.complaints)},
            "recontact_rate_pct": _round(self.recontact_rate_pct, 2),
            "recontacts": {"resolved": self.resolved, "returned": self.returned},
        }


@dataclass(frozen=True, slots=True)
class Figures:
    """Every KPI of one period, for everything or for one group of a breakdown."""

    conversations: Volumes = Volumes()
    nps: Nps = Nps()
    csat: Csat = Csat()
    times: ResponseTimes = ResponseTimes()
    surveys: SurveyCounts = SurveyCounts()
    retention: Retention | None = None
    followups: FollowupFigures = FollowupFigures()
    closing: Closing = Closing()

    @property
    def abandonment_rate_pct(self) -> float | None:
        return rate_pct(self.conversations.abandoned, self.conversations.started)

    @property
    def bot_resolution_rate_pct(self) -> float | None:
        return rate_pct(self.conversations.resolved_by_bot, self.conversations.resolved)

    @property
    def survey_response_rate_pct(self) -> float | None:
        return rate_pct(self.surveys.answered, self.surveys.sent)

    @property
    def is_empty(self) -> bool:
        return not (self.conversations.started or self.nps.responses or self.csat.responses)

    def to_json(self) -> dict[str, Any]:
        """The stable field names of SPEC's script interface (see ``KpiReport.to_json``)."""
        c, n, s, r = self.conversations, self.nps, self.csat, self.retention
        return {
            "conversations": {
                "started": c.started,
                "resolved": c.resolved,
                "resolved_by_bot": c.resolved_by_bot,
                "handed_off": c.handed_off,
                "abandoned": c.abandoned,
            },
            "nps": {
                "score": _round(n.score, 2),
                "promoters": n.promoters,
                "passives": n.passives,
                "detractors": n.detractors,
                "responses": n.responses,
            },
            "csat": {
                "score_pct": _round(s.score_pct, 2),
                "average": _round(s.average, 3),
                "responses": s.responses,
            },
            "first_response_s": _durations(self.times.first),
            "agent_first_response_s": _durations(self.times.agent_first),
            "first_response_business_s": _durations(self.times.first_business),
            "agent_first_response_business_s": _durations(self.times.agent_first_business),
            "abandonment_rate_pct": _round(self.abandonment_rate_pct, 2),
            "retention": {
                "start_customers": r.start_customers if r else None,
                "end_customers": r.end_customers if r else None,
                "new_customers": r.new_customers if r else None,
                "rate_pct": _round(r.rate_pct, 2) if r else None,
            },
            "bot_resolution_rate_pct": _round(self.bot_resolution_rate_pct, 2),
            "survey_response_rate_pct": _round(self.survey_response_rate_pct, 2),
            "surveys": {"sent": self.surveys.sent, "answered": self.surveys.answered},
            "followups": self.followups.to_json(),
            **self.closing.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Group:
    """One line of a breakdown: ``key`` as stored, ``label`` for people (agent names)."""

    key: str
    figures: Figures
    label: str = ""
    extra: tuple[tuple[str, Any], ...] = ()  # --by cause: share_pct, previous_count, change

    @property
    def name(self) -> str:
        return self.label or self.key


@dataclass(frozen=True, slots=True)
class KpiReport:
    period: Period
    figures: Figures
    by: str | None = None
    groups: tuple[Group, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """One JSON object with the stable names scripts rely on (SPEC "Interfaces").

        ``period.start``/``period.end`` are ISO 8601 with the offset of the configured
        time zone; durations are seconds; rates are percentages; no data is null.
        """
        out: dict[str, Any] = {
            "period": {
                "start": self.period.start.isoformat(),
                "end": self.period.end.isoformat(),
                "timezone": str(self.period.start.tzinfo),
            },
            **self.figures.to_json(),
        }
        if self.by is not None:
            out["by"] = self.by
            out["groups"] = [
                {
                    "key": g.key,
                    **({"label": g.label} if g.label else {}),
                    **dict(g.extra),
                    **g.figures.to_json(),
                }
                for g in self.groups
            ]
        return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"nps": {"score": 30}} → {"nps.score": 30}: the CSV column names."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _values(obj: Any) -> Iterator[int]:
    for name in obj.__slots__:
        yield getattr(obj, name)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _durations(d: Durations) -> dict[str, Any]:
    return {
        "median": _round(d.median, 3),
        "mean": _round(d.mean, 3),
        "p90": _round(d.p90, 3),
        "count": d.count,
    }
