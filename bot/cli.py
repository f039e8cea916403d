"""The ``supportbot`` command: run, check, kb, kpi, digest.

Every command takes ``--config PATH`` (default ./config.yaml). Exit codes: 0 done,
1 failed while running, 2 bad configuration or knowledge base, 3 ``run`` refused because
another supportbot already runs on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from bot.clock import Clock, SystemClock
from bot.config import Secrets, Settings, load_settings
from bot.errors import AlreadyRunningError, ConfigError, KnowledgeBaseError, SupportbotError
from bot.logs import setup_logging

DEFAULT_CONFIG = Path("config.yaml")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="path of config.yaml (default: ./config.yaml)",
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING…")
    parser = argparse.ArgumentParser(
        prog="supportbot",
        description="Self-hosted customer-support bot: a website chat widget with an agent "
        "console (no token needed), plus Telegram and Slack when their tokens are set.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="start the bot with the configured channels")
    sub.add_parser("check", parents=[common], help="validate config and knowledge base")
    kb = sub.add_parser("kb", parents=[common], help="knowledge-base tools")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True, metavar="KB_COMMAND")
    ask = kb_sub.add_parser("ask", parents=[common], help="show the entry a question matches")
    ask.add_argument("question", nargs="?", help="the question (default: one per line on stdin)")
    ask.add_argument("--json", action="store_true", help="one JSON object per question")
    ask.add_argument("--lang", choices=["fr", "en"], help="customer language")
    ev = kb_sub.add_parser("eval", parents=[common], help="accuracy on the labeled set")
    ev.add_argument("--dataset", type=Path, help="labeled set (default tests/data/kb_eval.yaml)")
    kpi = sub.add_parser("kpi", parents=[common], help="KPI report for a period")
    kpi.add_argument("--from", dest="date_from", type=date.fromisoformat, help="YYYY-MM-DD")
    kpi.add_argument("--to", dest="date_to", type=date.fromisoformat, help="YYYY-MM-DD, exclusive")
    kpi.add_argument("--by", choices=["channel", "agent", "topic"])
    kpi.add_argument("--format", dest="fmt", choices=["table", "json", "csv"], default="table")
    digest = sub.add_parser("digest", parents=[common], help="post or preview the KPI digest")
    mode = digest.add_mutually_exclusive_group()
    mode.add_argument("--now", action="store_true", help="post the digest immediately")
    mode.add_argument("--dry-run", action="store_true", help="print it; write the chart")
    digest.add_argument(
        "--out", type=Path, help="chart file for --dry-run (default: a new temporary file)"
    )
    return parser


def main(argv: Sequence[str] | None = None, clock: Clock | None = None) -> int:
    """Run one command. ``clock`` is every "now" the command uses (tests pass a fake one)."""
    args = _parser().parse_args(argv)
    clock = clock or SystemClock()
    config: Path = getattr(args, "config", DEFAULT_CONFIG)
    secrets = Secrets.from_env()
    setup_logging(secrets.values(), getattr(args, "log_level", None))
    try:
        settings = load_settings(config)
        return _dispatch(args, settings, secrets, clock)
    except (ConfigError, KnowledgeBaseError) as exc:
        print(f"supportbot: configuration error: {exc}", file=sys.stderr)
        return 2
    except AlreadyRunningError as exc:
        print(f"supportbot: {exc}", file=sys.stderr)
        return 3
    except SupportbotError as exc:
        print(f"supportbot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings, secrets: Secrets, clock: Clock) -> int:
    if args.command == "run":
        return _run(settings, secrets, clock)
    if args.command == "check":
        return _check(settings, secrets)
    if args.command == "kb":
        if args.kb_command == "ask":
            return _kb_ask(settings, args.question, as_json=args.json, lang=args.lang)
        return _kb_eval(settings, args.dataset)
    if args.command == "kpi":
        from bot.report import kpi_command, local_today

        out = asyncio.run(
            kpi_command(
                settings,
                date_from=args.date_from,
                date_to=args.date_to,
                by=args.by,
                fmt=args.fmt,
                today=local_today(settings, clock),
            )
        )
        print(out)
        return 0
    if args.command == "digest":
        return _digest(settings, secrets, clock, now=args.now, dry_run=args.dry_run, out=args.out)
    return 2  # pragma: no cover - argparse requires a command


def _run(settings: Settings, secrets: Secrets, clock: Clock) -> int:
    from bot.app import SupportApp, plan_channels

    plan = plan_channels(settings, secrets)
    if not plan.any:
        print(
            "supportbot: no channel can start (web.enabled is false). Set, in the environment:"
            "\n  - "
            + "\n  - ".join(plan.off[:2])
            + "\nThen run again (see README, 'Connect Telegram / Slack').",
            file=sys.stderr,
        )
        return 2
    from bot.instance import InstanceLock

    with InstanceLock(settings.storage.path):
        asyncio.run(SupportApp(settings, secrets, clock=clock).serve_forever())
    return 0


def _check(settings: Settings, secrets: Secrets) -> int:
    from bot.app import describe_desk, plan_channels
    from bot.knowledge import KnowledgeBase

    kb = KnowledgeBase.load(settings.knowledge.path, settings.knowledge.threshold)
    plan = plan_channels(settings, secrets)
    hours = settings.business_hours
    print("config: ok")
    print(f"language: {settings.language}   timezone: {settings.timezone}")
    if hours is None:
        print("business hours: always open")
    else:
        week = ", ".join(f"{d} {getattr(hours, d) or 'closed'}" for d in hours.week())
        print(f"business hours: {week}; {len(hours.holidays)} holiday(s)")
    topics = len({e.topic for e in kb.entries})
    print(
        f"knowledge base: {settings.knowledge.path} — {len(kb.entries)} entries, "
        f"{topics} topics, threshold {kb.threshold:.2f}"
    )
    print(f"database: {settings.storage.path}")
    print(f"telegram: {'enabled' if plan.telegram else 'off'}")
    print(f"slack: {'enabled' if plan.slack else 'off'}")
    web = settings.web
    print(f"web: {f'enabled on http://{web.host}:{web.port}' if plan.web else 'off'}")
    console = f"http://{web.host}:{web.port}/agent" if plan.web else None
    alone = not (plan.telegram or plan.slack)
    print(f"desk: {describe_desk(plan.desk, settings, console, alone=alone)}")
    digest = settings.digest
    targets = ", ".join(digest.targets) or "no targets"
    print(f"digest: {'on' if digest.enabled else 'off'} — '{digest.schedule}' → {targets}")
    for hint in plan.off:
        print(f"off: {hint}")
    for problem in plan.problems:
        print(f"warning: {problem}")
    return 0


def _kb_ask(settings: Settings, question: str | None, *, as_json: bool, lang: str | None) -> int:
    from bot.knowledge import KnowledgeBase

    kb = KnowledgeBase.load(settings.knowledge.path, settings.knowledge.threshold)
    language = lang or settings.language
    questions = [question] if question is not None else [line.rstrip("\n") for line in sys.stdin]
    for text in questions:
        match = kb.match(text, language)
        if as_json:
            record = {
                "id": match.id,
                "topic": match.topic,
                "score": round(match.score, 4),
                "answered": match.answered,
            }
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif match.entry is None:
            print(f"✗ no entry matches {text!r}")
        else:
            mark = "✓" if match.answered else "✗ below threshold"
            print(f"{mark} {match.id} (topic {match.topic}) score {match.score:.3f} "
                  f"/ threshold {kb.threshold:.2f}")  # fmt: skip
            if match.answered:
                print(f"  {match.entry.answer(language)}")
    return 0


def _kb_eval(settings: Settings, dataset: Path | None) -> int:
    from bot.kb_eval import DEFAULT_DATASET, evaluate, format_report
    from bot.knowledge import KnowledgeBase

    kb = KnowledgeBase.load(settings.knowledge.path, settings.knowledge.threshold)
    report = evaluate(kb, dataset or DEFAULT_DATASET)
    print(format_report(report))
    return 0


def _digest(
    settings: Settings,
    secrets: Secrets,
    clock: Clock,
    *,
    now: bool,
    dry_run: bool,
    out: Path | None,
) -> int:
    from bot.digest import digest_command

    if dry_run:
        print(asyncio.run(digest_command(settings, now=False, dry_run=True, out=out, clock=clock)))
        return 0
    print(asyncio.run(_post_digest(settings, secrets, clock, now=now)))
    return 0


async def _post_digest(settings: Settings, secrets: Secrets, clock: Clock, *, now: bool) -> str:
    """Connect to the target platforms only to post: no polling, no socket, no web server."""
    from bot.app import digest_publishers
    from bot.digest import digest_command

    if not settings.digest.targets:
        raise ConfigError("digest.targets", "no target to post to: add e.g. slack:C0123ABC")
    async with digest_publishers(settings, secrets) as publishers:
        result: str = await digest_command(
            settings, now=now, dry_run=False, out=None, publishers=publishers, clock=clock
        )
        return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
