"""The ``supportbot`` command: run, check, kb, kpi, digest, followups, customer, backup, db.

Every command takes ``--config PATH`` (default ./config.yaml). Exit codes: 0 done,
1 failed while running, 2 bad configuration or knowledge base, 3 ``run`` refused because
another supportbot already runs on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from bot.clock import Clock, SystemClock
from bot.config import Secrets, Settings, load_settings
from bot.errors import (
    AlreadyRunningError,
    ConfigError,
    KnowledgeBaseError,
    SavedRepliesError,
    SupportbotError,
)
from bot.insights.kpi import BREAKDOWNS
from bot.logs import redact, setup_logging

if TYPE_CHECKING:
    from bot.knowledge import KnowledgeBase

DEFAULT_CONFIG = Path("config.yaml")
SWITCH_INTERVAL_S = 0.0005  # sys.setswitchinterval for `supportbot run` (see _run)
PG_BACKUP = (
    "supportbot backup copies a SQLite database; on PostgreSQL, back up with pg_dump "
    '(e.g. pg_dump -Fc -f supportbot.dump "$SUPPORTBOT_DATABASE_URL")'
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="path of config.yaml (default: ./config.yaml)",
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING…")
    common.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=argparse.SUPPRESS,
        help="text (default) or json: one JSON object a line, for log collectors",
    )
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
    ev = kb_sub.add_parser("eval", parents=[common], help="accuracy on labeled sets")
    ev.add_argument("--set", dest="set_name", help="one shipped set (shop/eval, saas, …)")
    ev.add_argument("--dataset", type=Path, help="your labeled set (with --knowledge)")
    ev.add_argument(
        "--knowledge", type=Path, help="knowledge file of --dataset (default: the configured one)"
    )
    ev.add_argument(
        "--sweep", action="store_true", help="accuracy/rejection per threshold, and a suggestion"
    )
    gaps = kb_sub.add_parser(
        "gaps", parents=[common], help="questions the bot could not answer, grouped by meaning"
    )
    picks = kb_sub.add_parser(
        "picks", parents=[common], help="'did you mean' choices, as eval.yaml cases"
    )
    for period in (gaps, picks):
        period.add_argument("--from", dest="date_from", type=date.fromisoformat, help="YYYY-MM-DD")
        period.add_argument(
            "--to", dest="date_to", type=date.fromisoformat, help="YYYY-MM-DD, exclusive"
        )
    gaps.add_argument("--format", dest="fmt", choices=["table", "json"], default="table")
    kpi = sub.add_parser("kpi", parents=[common], help="KPI report for a period")
    kpi.add_argument("--from", dest="date_from", type=date.fromisoformat, help="YYYY-MM-DD")
    kpi.add_argument("--to", dest="date_to", type=date.fromisoformat, help="YYYY-MM-DD, exclusive")
    kpi.add_argument("--by", choices=list(BREAKDOWNS))
    kpi.add_argument("--format", dest="fmt", choices=["table", "json", "csv"], default="table")
    digest = sub.add_parser("digest", parents=[common], help="post or preview the KPI digest")
    mode = digest.add_mutually_exclusive_group()
    mode.add_argument("--now", action="store_true", help="post the digest immediately")
    mode.add_argument("--dry-run", action="store_true", help="print it; write the chart")
    digest.add_argument(
        "--out", type=Path, help="chart file for --dry-run (default: a new temporary file)"
    )
    customer = sub.add_parser("customer", parents=[common], help="one customer's stored data")
    cust_sub = customer.add_subparsers(dest="customer_command", required=True, metavar="ACTION")
    for action, text in (
        ("export", "print everything stored about the customer as one JSON document"),
        ("erase", "erase the customer's personal data now (no prompt; KPIs keep their figures)"),
    ):
        cmd = cust_sub.add_parser(action, parents=[common], help=text)
        cmd.add_argument("key", metavar="KEY", help="the customer's key, e.g. telegram:4242")
    followups = sub.add_parser("followups", parents=[common], help="detractors' follow-ups")
    followups.add_argument("--open", dest="open_only", action="store_true",
                           help="only those not resolved nor unreachable")  # fmt: skip
    followups.add_argument("--format", dest="fmt", choices=["table", "json"], default="table")
    db = sub.add_parser("db", parents=[common], help="move the database to another engine")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    copy = db_sub.add_parser(
        "copy", parents=[common], help="copy the SQLite database into an EMPTY PostgreSQL one"
    )
    copy.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="postgresql://user@host/database (password from $SUPPORTBOT_DATABASE_URL)",
    )
    backup = sub.add_parser("backup", parents=[common], help="consistent copy of the database")
    backup.add_argument("path", type=Path, metavar="PATH", help="backup file, or a directory")
    return parser


def main(argv: Sequence[str] | None = None, clock: Clock | None = None) -> int:
    """Run one command. ``clock`` is every "now" the command uses (tests pass a fake one)."""
    # Every file the bot writes (database, lock, keys, exports) is for its owner only.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    clock = clock or SystemClock()
    config: Path = getattr(args, "config", DEFAULT_CONFIG)
    secrets = Secrets.from_env()
    setup_logging(
        secrets.values(), getattr(args, "log_level", None), getattr(args, "log_format", None)
    )
    try:
        settings = load_settings(config)
        for secret in settings.storage.secret_values():  # a password written in the file
            redact(secret)
        return _dispatch(args, settings, secrets, clock)
    except (ConfigError, KnowledgeBaseError, SavedRepliesError) as exc:
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
        if args.kb_command in ("gaps", "picks"):
            return _kb_report(settings, args, clock)
        return _kb_eval(settings, args)
    if args.command == "kpi":
        from bot.insights.report import kpi_command, local_today

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
    if args.command == "followups":
        from bot.followup_report import followups_command

        command = followups_command(settings, open_only=args.open_only, fmt=args.fmt, clock=clock)
        print(asyncio.run(command))
        return 0
    if args.command == "db":
        from bot.database_commands import db_copy

        return db_copy(settings, args.to)
    if args.command in ("customer", "backup"):
        from bot.privacy import backup_command, customer_command

        if args.command == "backup":
            if not isinstance(settings.storage.target(), Path):
                print(f"supportbot: {PG_BACKUP}", file=sys.stderr)
                return 2
            print(asyncio.run(backup_command(settings, args.path, clock)))
        else:
            print(asyncio.run(customer_command(settings, args.customer_command, args.key, clock)))
        return 0
    return 2  # pragma: no cover - argparse requires a command


def _run(settings: Settings, secrets: Secrets, clock: Clock) -> int:
    from bot.app import SupportApp
    from bot.channels import plan_channels

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

    # The database's thread waits on its socket or file, then needs the GIL back from an
    # event loop that is matching a question: by default it may wait 5 ms for it, per
    # statement on PostgreSQL. At 0.5 ms, load_bench gave +16-22 % messages/s on both
    # engines (and less CPU per message); it changes nothing while one thread runs.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if isinstance(settings.storage.target(), Path):
        with InstanceLock(settings.storage.path):
            asyncio.run(SupportApp(settings, secrets, clock=clock).serve_forever())
    else:  # PostgreSQL: several processes may share it (issue 19)
        asyncio.run(SupportApp(settings, secrets, clock=clock).serve_forever())
    return 0


def _check(settings: Settings, secrets: Secrets) -> int:
    from bot.channels import describe_desk, plan_channels
    from bot.knowledge import KnowledgeBase
    from bot.replies import SavedReplies

    kb = KnowledgeBase.configured(settings)
    replies = SavedReplies.configured(settings)
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
    _print_collisions(kb)
    if replies.source is not None:
        print(f"saved replies: {replies.source} — {len(replies)} replies")
    from bot.database_commands import database_status

    print(f"database: {database_status(settings)}")
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


COLLISIONS_SHOWN = 5


def _print_collisions(kb: KnowledgeBase) -> None:
    """Hint at entries asked alike (``KnowledgeBase.collisions``): not an error."""
    collisions = kb.collisions()
    if not collisions:
        return
    print(
        f"knowledge hint: {len(collisions)} example question(s) would get another entry's "
        "answer if they were not listed; give those entries more distinct questions, or merge them:"
    )
    for collision in collisions[:COLLISIONS_SHOWN]:
        print(
            f"  {collision.entry.id}: {collision.question!r} → {collision.other.id} "
            f"({collision.score:.2f})"
        )
    if len(collisions) > COLLISIONS_SHOWN:
        print(f"  … and {len(collisions) - COLLISIONS_SHOWN} more")


def _kb_ask(settings: Settings, question: str | None, *, as_json: bool, lang: str | None) -> int:
    from bot.knowledge import KnowledgeBase

    kb = KnowledgeBase.configured(settings)
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
                "language": match.language,
                "ambiguous": match.ambiguous,
                "candidates": [
                    {"id": c.entry.id, "score": round(c.score, 4)} for c in match.candidates
                ],
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


def _kb_report(settings: Settings, args: argparse.Namespace, clock: Clock) -> int:
    from bot.insights.gaps import gaps_command, picks_command
    from bot.insights.report import local_today

    period = {
        "date_from": args.date_from,
        "date_to": args.date_to,
        "today": local_today(settings, clock),
    }
    if args.kb_command == "gaps":
        print(asyncio.run(gaps_command(settings, fmt=args.fmt, **period)))
    else:
        print(asyncio.run(picks_command(settings, **period)))
    return 0


def _kb_eval(settings: Settings, args: argparse.Namespace) -> int:
    from bot.knowledge.evaluation import evaluate, format_report, format_summary, shipped_sets
    from bot.knowledge.kb import KnowledgeBase

    encoder = settings.knowledge.encoder
    if args.dataset is not None or args.knowledge is not None:
        if args.dataset is None:
            raise ConfigError("kb eval --knowledge", "needs --dataset (your labeled set)")
        path = args.knowledge or settings.knowledge.path
        threshold = settings.knowledge.threshold if args.knowledge is None else None
        kb = KnowledgeBase.load(path, threshold, encoder)
        print(format_report(evaluate(kb, args.dataset), sweep=args.sweep))
        return 0
    sets = shipped_sets()
    if args.set_name is not None:
        sets = [s for s in sets if s.name == args.set_name]
        if not sets:
            names = ", ".join(s.name for s in shipped_sets())
            raise ConfigError("kb eval --set", f"no set {args.set_name!r} (shipped: {names})")
    reports = []
    for item in sets:
        kb = KnowledgeBase.load(item.knowledge, None, encoder)
        reports.append(evaluate(kb, item.dataset, item.name))
        print(format_report(reports[-1], sweep=args.sweep, misses=len(sets) == 1), end="\n\n")
    if len(reports) > 1:
        print(format_summary(reports, [s.tuned for s in sets]))
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
    from bot.insights.digest_service import digest_command

    if dry_run:
        print(asyncio.run(digest_command(settings, now=False, dry_run=True, out=out, clock=clock)))
        return 0
    print(asyncio.run(_post_digest(settings, secrets, clock, now=now)))
    return 0


async def _post_digest(settings: Settings, secrets: Secrets, clock: Clock, *, now: bool) -> str:
    """Connect to the target platforms only to post: no polling, no socket, no web server."""
    from bot.channels import digest_publishers
    from bot.insights.digest_service import digest_command

    if not settings.digest.targets:
        raise ConfigError("digest.targets", "no target to post to: add e.g. slack:C0123ABC")
    async with digest_publishers(settings, secrets) as publishers:
        result: str = await digest_command(
            settings, now=now, dry_run=False, out=None, publishers=publishers, clock=clock
        )
        return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
