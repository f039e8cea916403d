"""Measure the knowledge base against a labelled set of customer messages.

The set (default: the shop set shipped in ``evalsets/shop/``) lists messages with the entry
that should answer them, or ``null`` when none should. Two figures matter:

- **accuracy**: in-scope messages answered (confidence ≥ threshold) with the
  expected entry; a right entry below the threshold counts as a miss, because
  the customer did not get it;
- **rejection**: out-of-scope messages the bot declined to answer.

The report also sweeps the threshold, to show what moving it would trade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from bot.errors import KnowledgeBaseError
from bot.knowledge.kb import KnowledgeBase

DEFAULT_DATASET: Final = Path(__file__).parent / "evalsets" / "shop" / "eval.yaml"
SWEEP: Final = tuple(round(0.30 + 0.05 * step, 2) for step in range(11))  # 0.30 … 0.80


@dataclass(frozen=True, slots=True)
class EvalCase:
    text: str
    expected: str | None  # None: out of scope, the bot must not answer
    language: str


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: EvalCase
    got: str | None  # best entry id, whatever its score
    score: float
    answered: bool

    @property
    def correct(self) -> bool:
        if self.case.expected is None:
            return not self.answered
        return self.answered and self.got == self.case.expected


@dataclass(frozen=True, slots=True)
class Rate:
    """``hits`` out of ``total``; ``value`` is 0 for an empty set."""

    hits: int
    total: int

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.value:6.1%} ({self.hits}/{self.total})"


@dataclass(frozen=True, slots=True)
class EvalReport:
    threshold: float
    accuracy: Rate  # in scope, answered with the expected entry
    top1: Rate  # in scope, expected entry ranked first regardless of the threshold
    rejection: Rate  # out of scope, not answered
    accuracy_by_language: Mapping[str, Rate]
    rejection_by_language: Mapping[str, Rate]
    misses: tuple[CaseResult, ...]
    results: tuple[CaseResult, ...] = field(repr=False)
    sweep: tuple[tuple[float, float, float], ...] = ()  # (threshold, accuracy, rejection)


def load_dataset(path: Path) -> list[EvalCase]:
    """Read the labelled set; mistakes raise KnowledgeBaseError naming the case."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowledgeBaseError(str(path), "evaluation set not found") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise KnowledgeBaseError(where, f"YAML syntax error: {exc.problem}") from None
    raw_cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(raw_cases, list) or not raw_cases:
        raise KnowledgeBaseError(f"{path}:cases", "must be a non-empty list")
    cases: list[EvalCase] = []
    for number, raw in enumerate(raw_cases):
        where = f"{path}:cases[{number}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
            raise KnowledgeBaseError(where, "needs text, expected and lang")
        expected = raw.get("expected")
        if expected is not None and not isinstance(expected, str):
            raise KnowledgeBaseError(f"{where}.expected", "must be an entry id or null")
        language = raw.get("lang")
        if not isinstance(language, str):
            raise KnowledgeBaseError(f"{where}.lang", "must be a language code (fr, en)")
        cases.append(EvalCase(raw["text"], expected, language))
    return cases


def _rate(results: Sequence[CaseResult], predicate: Any) -> Rate:
    chosen = [r for r in results if predicate(r)]
    return Rate(sum(r.correct for r in chosen), len(chosen))


def evaluate(kb: KnowledgeBase, dataset: Path = DEFAULT_DATASET) -> EvalReport:
    """Run every case of ``dataset`` through ``kb.match`` and score the outcome.

    A case whose expected id is not in the knowledge base is an error in the set
    (or a renamed entry), not a miss: it raises KnowledgeBaseError.
    """
    cases = load_dataset(dataset)
    known = {entry.id for entry in kb.entries}
    for number, case in enumerate(cases):
        if case.expected is not None and case.expected not in known:
            raise KnowledgeBaseError(
                f"{dataset}:cases[{number}].expected", f"no entry with id {case.expected!r}"
            )
    results: list[CaseResult] = []
    for case in cases:
        match = kb.match(case.text, case.language)
        results.append(CaseResult(case, match.id, match.score, match.answered))
    return _report(kb.threshold, tuple(results))


def _report(threshold: float, results: tuple[CaseResult, ...]) -> EvalReport:
    languages = sorted({r.case.language for r in results})
    in_scope = [r for r in results if r.case.expected is not None]
    out_scope = [r for r in results if r.case.expected is None]
    sweep = []
    for candidate in SWEEP:
        ok_in = sum(r.got == r.case.expected and r.score >= candidate for r in in_scope)
        ok_out = sum(r.score < candidate for r in out_scope)
        sweep.append(
            (
                candidate,
                ok_in / len(in_scope) if in_scope else 0.0,
                ok_out / len(out_scope) if out_scope else 0.0,
            )
        )
    return EvalReport(
        threshold=threshold,
        accuracy=Rate(sum(r.correct for r in in_scope), len(in_scope)),
        top1=Rate(sum(r.got == r.case.expected for r in in_scope), len(in_scope)),
        rejection=Rate(sum(r.correct for r in out_scope), len(out_scope)),
        accuracy_by_language={
            lang: _rate(in_scope, lambda r, lang=lang: r.case.language == lang)
            for lang in languages
        },
        rejection_by_language={
            lang: _rate(out_scope, lambda r, lang=lang: r.case.language == lang)
            for lang in languages
        },
        misses=tuple(r for r in results if not r.correct),
        results=results,
        sweep=tuple(sweep),
    )


def format_report(report: EvalReport) -> str:
    """A plain-text report for the terminal: figures, threshold sweep, then each miss."""
    lines = [
        f"Knowledge-base evaluation (threshold {report.threshold:.2f})",
        f"  in scope, answered right : {report.accuracy}",
    ]
    lines += [f"    {lang:<22} : {rate}" for lang, rate in report.accuracy_by_language.items()]
    lines.append(f"  in scope, right entry 1st: {report.top1}  (ignoring the threshold)")
    lines.append(f"  out of scope, declined   : {report.rejection}")
    lines += [f"    {lang:<22} : {rate}" for lang, rate in report.rejection_by_language.items()]
    if report.sweep:
        lines += ["", "  threshold  accuracy  rejection"]
        for threshold, accuracy, rejection in report.sweep:
            mark = "  ◄" if abs(threshold - report.threshold) < 1e-9 else ""
            lines.append(f"  {threshold:9.2f}  {accuracy:8.1%}  {rejection:9.1%}{mark}")
    if report.misses:
        lines += ["", f"Misses ({len(report.misses)}):"]
        for miss in report.misses:
            expected = miss.case.expected or "(none)"
            got = miss.got or "(none)"
            verdict = "answered" if miss.answered else "declined"
            lines.append(
                f"  [{miss.case.language}] {miss.case.text!r}\n"
                f"       expected {expected}, best {got} at {miss.score:.2f} ({verdict})"
            )
    return "\n".join(lines)
