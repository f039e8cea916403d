"""Measure the knowledge base against labelled sets of customer messages.

A set lists messages with the entry that should answer them, or ``null`` when
none should. Sets ship inside the package (``evalsets/<name>/``: a business's
knowledge.yaml, eval.yaml, and for the shop a holdout.yaml): the shop is the
one the matcher was tuned on, the others (saas, bank, hotel) were written
blind and never tuned on; telecom, elearning, energy, fitness and rental are
extra *tuning* sets (``tuning: true`` in their eval.yaml), written before
looking at the matcher's output, so that the calibration is not fitted to one
business.
Two figures matter:

- **accuracy**: in-scope messages answered (confidence ≥ threshold) with the
  expected entry; a right entry below the threshold counts as a miss, because
  the customer did not get it;
- **rejection**: out-of-scope messages the bot declined to answer.

``--sweep`` also shows what moving the threshold would trade, and suggests one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from bot.errors import KnowledgeBaseError
from bot.knowledge.kb import KnowledgeBase

EVALSETS: Final = Path(__file__).parent / "evalsets"
DEFAULT_DATASET: Final = EVALSETS / "shop" / "eval.yaml"
SWEEP: Final = tuple(round(0.05 * step, 2) for step in range(1, 20))  # 0.05 … 0.95


@dataclass(frozen=True, slots=True)
class EvalSet:
    """A shipped labelled set: its name, the business's knowledge file and the cases."""

    name: str
    knowledge: Path
    dataset: Path
    tuned: bool  # True for the sets the matcher's constants were fitted on


def shipped_sets() -> list[EvalSet]:
    """Every set under evalsets/ (found from the package, not the cwd): the shop's,
    the other tuning sets, then the held-out ones."""
    found: list[EvalSet] = []
    for folder in sorted(p for p in EVALSETS.iterdir() if (p / "knowledge.yaml").is_file()):
        for dataset in sorted(folder.glob("*.yaml")):
            if dataset.name == "knowledge.yaml":
                continue
            name = folder.name if dataset.stem == "eval" and folder.name != "shop" else (
                f"{folder.name}/{dataset.stem}"
            )  # fmt: skip
            tuned = (folder.name == "shop" and dataset.stem == "eval") or _tuning(dataset)
            found.append(EvalSet(name, folder / "knowledge.yaml", dataset, tuned))
    found.sort(key=lambda s: (not s.tuned, s.name != "shop/eval", s.name))
    return found


def _tuning(dataset: Path) -> bool:
    """Does the set say ``tuning: true`` (fitted on, so not a generalisation figure)?"""
    with dataset.open(encoding="utf-8") as stream:
        head = [stream.readline() for _ in range(12)]
    return any(line.strip() == "tuning: true" for line in head)


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
    candidates: tuple[str, ...] = ()  # the match's candidate ids, best first
    ambiguous: bool = False  # the bot would ask "did you mean …?"

    @property
    def asked_right(self) -> bool:
        """Not answered, but the "did you mean …?" list holds the expected entry."""
        expected = self.case.expected
        return not self.answered and self.ambiguous and expected in self.candidates

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
    name: str = ""
    in_candidates: Rate = Rate(0, 0)  # in scope, expected entry among the candidates
    asked_right: Rate = Rate(0, 0)  # in scope, not answered, but offered in "did you mean"
    asked_out: Rate = Rate(0, 0)  # out of scope, got a "did you mean" question

    @property
    def suggested(self) -> float:
        """The sweep's threshold with the best accuracy + rejection (ties: nearest current)."""
        if not self.sweep:
            return self.threshold
        best = max(
            self.sweep,
            key=lambda row: (round(row[1] + row[2], 6), -abs(row[0] - self.threshold)),
        )
        return best[0]


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


def evaluate(kb: KnowledgeBase, dataset: Path = DEFAULT_DATASET, name: str = "") -> EvalReport:
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
        ids = tuple(c.entry.id for c in match.candidates)
        results.append(
            CaseResult(case, match.id, match.score, match.answered, ids, match.ambiguous)
        )
    return _report(kb.threshold, tuple(results), name or str(dataset))


def _report(threshold: float, results: tuple[CaseResult, ...], name: str) -> EvalReport:
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
        name=name,
        in_candidates=Rate(sum(r.case.expected in r.candidates for r in in_scope), len(in_scope)),
        asked_right=Rate(sum(r.asked_right for r in in_scope), len(in_scope)),
        asked_out=Rate(sum(r.ambiguous and not r.answered for r in out_scope), len(out_scope)),
    )


def format_report(report: EvalReport, *, sweep: bool = False, misses: bool = True) -> str:
    """A plain-text report: figures per language, the threshold sweep if asked, each miss."""
    lines = [
        f"{report.name} (threshold {report.threshold:.2f})",
        f"  in scope, answered right : {report.accuracy}",
    ]
    lines += [f"    {lang:<22} : {rate}" for lang, rate in report.accuracy_by_language.items()]
    lines.append(f"  in scope, right entry 1st: {report.top1}  (ignoring the threshold)")
    lines.append(f"  in scope, among candidates: {report.in_candidates}")
    lines.append(f'  in scope, asked, right offered: {report.asked_right}  ("did you mean")')
    lines.append(f"  out of scope, declined   : {report.rejection}")
    lines.append(f'  out of scope, asked      : {report.asked_out}  ("did you mean")')
    lines += [f"    {lang:<22} : {rate}" for lang, rate in report.rejection_by_language.items()]
    if sweep and report.sweep:
        lines += ["", "  threshold  accuracy  rejection"]
        for threshold, accuracy, rejection in report.sweep:
            mark = "  ◄ current" if abs(threshold - report.threshold) < 1e-9 else ""
            if abs(threshold - report.suggested) < 1e-9:
                mark += "  ◄ suggested"
            lines.append(f"  {threshold:9.2f}  {accuracy:8.1%}  {rejection:9.1%}{mark}")
        lines.append(
            f"  suggested threshold: {report.suggested:.2f} (best accuracy + rejection); "
            "set it as knowledge.threshold in config.yaml"
        )
    if misses and report.misses:
        lines += ["", f"  Misses ({len(report.misses)}):"]
        for miss in report.misses:
            expected = miss.case.expected or "(none)"
            got = miss.got or "(none)"
            verdict = "answered" if miss.answered else "declined"
            lines.append(
                f"    [{miss.case.language}] {miss.case.text!r}\n"
                f"         expected {expected}, best {got} at {miss.score:.2f} ({verdict})"
            )
    return "\n".join(lines)


def format_summary(reports: Sequence[EvalReport], tuned: Sequence[bool]) -> str:
    """One line per set: the figures the README's table shows."""
    labels = [r.name + (" (tuned)" if t else "") for r, t in zip(reports, tuned, strict=True)]
    width = max([len("set"), *map(len, labels)]) + 2
    header = "in scope right      out of scope declined  fr right  en right"
    lines = [f"{'set':<{width}}{header}"]
    for report, label in zip(reports, labels, strict=True):
        by_lang = report.accuracy_by_language
        fr = f"{by_lang['fr'].value:6.1%}" if "fr" in by_lang else "     -"
        en = f"{by_lang['en'].value:6.1%}" if "en" in by_lang else "     -"
        accuracy, rejection = str(report.accuracy), str(report.rejection)
        lines.append(f"{label:<{width}}{accuracy:<20}{rejection:<23}{fr}    {en}")
    return "\n".join(lines)
