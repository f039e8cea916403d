"""Load benchmark: the real ``supportbot run`` process driven end to end (issue #6).

Telegram: the local Bot API server (tests/fakes) serves the bot's long polling; simulated
customers ask knowledge-base questions, some ask for a person, a simulated agent answers in
the forum topic and resolves, the customers answer the NPS and CSAT buttons. Slack: signed
Events API deliveries to the bot's HTTP endpoint, the local Web API takes its replies. The
same load runs against a bare python-telegram-bot echo bot and a bare slack-bolt app, the
ceiling our throughput is compared with. Web: widget visitors over WebSocket against the
web channel alone, and against a bare aiohttp WebSocket echo server (``bench/echo_web.py``).
The bot runs with ``pacing: false`` (no flood-limit pacing: the local servers have no limits
to respect). "CPU s/msg" is the CPU time (user + system, from ``/proc``) the process under
test used during the closed-loop phase, divided by the messages answered in it.

    .venv/bin/python bench/load_bench.py            # full run, about 5 minutes
    .venv/bin/python bench/load_bench.py --quick    # about a minute
    .venv/bin/python bench/load_bench.py --quick --storage all   # the storage rows only

The storage rows (``--storage sqlite|postgresql|all``, ``--processes N`` on PostgreSQL)
drive widget visitors over WebSocket, the channel with no platform rate limit, against
one process on SQLite, one on a throwaway PostgreSQL cluster (tests/pg_cluster.py: Debian's
binaries, ``make unit`` installs them) and N processes on that database, the visitors
spread over the processes as a load balancer would; CPU s/msg adds up every process.

Throughput is closed loop: every customer asks, waits for the answer, asks again; the
peak is what N customers reach that way. Latencies are then measured at half that rate,
each customer keeping to a schedule: first with the peak's mix (knowledge-base questions),
then with the full mix (handoffs, agents, surveys) at the same rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench import slack_load, telegram_load, web_load  # noqa: E402
from bench.loadkit import (  # noqa: E402
    Child,
    Tally,
    Waiters,
    files_size,
    free_port,
    script,
    supportbot,
    until,
)
from bot.knowledge import KnowledgeBase  # noqa: E402
from tests.pg_cluster import PgCluster  # noqa: E402

KNOWLEDGE = ROOT / "knowledge.yaml"
ENCODER: str | None = None  # --encoder: knowledge.encoder of the bot under test
MB = 1024 * 1024
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Plan:
    customers: int
    seconds: float  # per measured phase
    open_conversations: int  # seeded for the memory measurement
    handoff_every: int = 10  # every 10th turn of a customer is a whole handoff

    def command(self, quick: bool) -> str:
        if quick:
            return ".venv/bin/python bench/load_bench.py --quick"
        return (
            f".venv/bin/python bench/load_bench.py --customers {self.customers} "
            f"--seconds {self.seconds:g} --open-conversations {self.open_conversations}"
        )


def write_config(path: Path, db: Path, **sections: Any) -> Path:
    config = {
        "language": "fr",
        "storage": {"path": str(db)},
        "knowledge": {"path": str(KNOWLEDGE), **({"encoder": ENCODER} if ENCODER else {})},
        "survey": {"cooldown": "0s"},  # every handoff of the bench gets its survey
        "digest": {"enabled": False},
        "web": {"enabled": False},  # the web channel is measured by its own bench
        **sections,
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


# ---------------------------------------------------------------------------- Telegram


async def telegram_ours(plan: Plan, tmp: Path, questions: list[str]) -> dict[str, Any]:
    server = telegram_load.TimedTelegram()
    async with server:
        world = telegram_load.TelegramWorld(server, questions)
        db = tmp / "telegram.db"
        config = write_config(
            tmp / "telegram.yaml",
            db,
            telegram={
                "enabled": True,
                "api_url": server.url,
                "agents_chat_id": world.desk.id,
                "agent_ids": [world.agent.id],
                "poll_timeout": 10,
                "pacing": False,
            },
            slack={"enabled": False},
            desk="telegram",
        )
        bot = supportbot(config, {"TELEGRAM_BOT_TOKEN": server.token}, tmp / "telegram.log")
        try:
            await ready(bot, lambda: bool(server.calls_to("getUpdates")))
            customers = [world.customer() for _ in range(plan.customers)]
            await telegram_load.run_customers(world, customers, Tally("warm-up"), 2.0)
            server.forget_history()
            peak = Tally("telegram peak")
            with peak.cpu_of(bot):
                await telegram_load.run_customers(world, customers, peak, plan.seconds)
            server.forget_history()
            half = Tally("telegram half")  # the peak's mix, at half its rate: the target
            await telegram_load.run_customers(
                world, customers, half, plan.seconds, rate=max(peak.rate / 2, 1.0)
            )
            server.forget_history()
            mix = Tally("telegram mix")  # the same rate with handoffs, agents and surveys
            await telegram_load.run_customers(
                world,
                customers,
                mix,
                plan.seconds,
                rate=max(peak.rate / 2, 1.0),
                handoff_every=plan.handoff_every,
            )
            bot.check_alive()
            peak_rss = bot.peak_rss()
        finally:
            await bot.stop()
    conversations = count(db, "SELECT count(*) FROM conversations")
    size = files_size(tmp, "telegram.db")
    return {
        "peak": peak,
        "half": half,
        "mix": mix,
        "peak_rss": peak_rss,
        "conversations": conversations,
        "messages": count(db, "SELECT count(*) FROM messages"),
        "db_bytes": size,
    }


async def telegram_echo(plan: Plan, tmp: Path, questions: list[str]) -> Tally:
    server = telegram_load.TimedTelegram()
    async with server:
        world = telegram_load.TelegramWorld(server, questions)
        env = {"TELEGRAM_BOT_TOKEN": server.token}
        echo = script("echo_telegram.py", ["--api-url", server.url], env, tmp / "echo.log")
        try:
            await ready(echo, lambda: bool(server.calls_to("getUpdates")))
            customers = [world.customer() for _ in range(plan.customers)]
            await telegram_load.run_customers(world, customers, Tally("warm-up"), 2.0, expect=None)
            server.forget_history()
            tally = Tally("telegram echo")
            with tally.cpu_of(echo):
                await telegram_load.run_customers(
                    world, customers, tally, plan.seconds, expect=None
                )
            echo.check_alive()
        finally:
            await echo.stop()
    return tally


# ---------------------------------------------------------------------------- Slack


async def slack_run(plan: Plan, tmp: Path, questions: list[str], *, ours: bool) -> Tally:
    slack = slack_load.TimedSlack()
    async with slack:
        port = free_port()
        env = {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": slack.signing_secret}
        if ours:
            config = write_config(
                tmp / "slack.yaml",
                tmp / "slack.db",
                slack={
                    "enabled": True,
                    "api_url": slack.api_url,
                    "agents_channel": slack_load.AGENTS,
                    "mode": "http",
                    "http_listen": "127.0.0.1",
                    "http_port": port,
                    "pacing": False,
                },
                telegram={"enabled": False},
                desk="slack",
            )
            app = supportbot(config, env, tmp / "slack.log")
            expect: str | None = telegram_load.FR["did_it_help"]
        else:
            args = ["--api-url", slack.api_url, "--port", str(port)]
            app = script("echo_slack.py", args, env, tmp / "bolt.log")
            expect = None
        slack.events_url = f"http://127.0.0.1:{port}/slack/events"
        try:
            await ready(app, lambda: listening(port))
            users = [f"U{n:08d}" for n in range(plan.customers)]
            for user in users:
                slack.add_user(user, user.lower())
            warm = Tally("warm-up")
            await slack_load.run_customers(slack, users, questions, warm, 2.0, expect=expect)
            slack.forget_history()
            tally = Tally("slack ours" if ours else "slack bolt")
            with tally.cpu_of(app):
                await slack_load.run_customers(
                    slack, users, questions, tally, plan.seconds, expect=expect
                )
            app.check_alive()
            tally.peak_rss = app.peak_rss()
        finally:
            await app.stop()
    return tally


# ---------------------------------------------------------------------------- web


async def web_run(plan: Plan, tmp: Path, questions: list[str], *, ours: bool) -> dict[str, Any]:
    """Widget visitors over WebSocket against supportbot's web channel alone, or against
    the bare aiohttp echo server (``bench/echo_web.py``)."""
    port = free_port()
    if ours:
        config = write_config(
            tmp / "web.yaml",
            tmp / "web.db",
            web={
                "enabled": True,
                "port": port,
                # one machine plays every visitor: the per-IP and per-visitor limits that
                # protect a real site would throttle the benchmark itself
                "rate_limit": "1000000/1s",
                "max_sockets_per_ip": 100_000,
            },
            telegram={"enabled": False},
            slack={"enabled": False},
        )
        app = supportbot(config, {}, tmp / "web.log")
        expect: str | None = telegram_load.FR["did_it_help"]
    else:
        app = script("echo_web.py", ["--port", str(port)], {}, tmp / "echo_web.log")
        expect = None
    base = f"http://127.0.0.1:{port}"
    waiters = Waiters()
    result: dict[str, Any] = {}
    try:
        await ready(app, lambda: listening(port))
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            visitors = await web_load.open_visitors(http, base, waiters, plan.customers)
            warm = Tally("warm-up")
            await web_load.run_visitors(visitors, questions, warm, 2.0, expect=expect)
            peak = Tally("web ours" if ours else "web echo")
            with peak.cpu_of(app):
                await web_load.run_visitors(visitors, questions, peak, plan.seconds, expect=expect)
            result["peak"] = peak
            if ours:
                half = Tally("web half")
                await web_load.run_visitors(
                    visitors, questions, half, plan.seconds, expect=expect,
                    rate=max(peak.rate / 2, 1.0),
                )  # fmt: skip
                result["half"] = half
            for visitor in visitors:
                await visitor.close()
        app.check_alive()
        result["peak_rss"] = app.peak_rss()
    finally:
        await app.stop()
    return result


# ---------------------------------------------------------------------------- storage rows


@dataclass(frozen=True)
class Deployment:
    """One storage row: the engine and how many ``supportbot run`` share its database."""

    storage: str  # sqlite | postgresql
    processes: int = 1

    @property
    def label(self) -> str:
        engine = "SQLite" if self.storage == "sqlite" else "PostgreSQL"
        return f"{self.processes} process{'es' if self.processes > 1 else ''} on {engine}"


def create_database(cluster: PgCluster, name: str) -> str:
    """An empty database in the throwaway cluster (the first process migrates it)."""
    import psycopg

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.url(name)


async def storage_run(
    plan: Plan,
    tmp: Path,
    questions: list[str],
    deployment: Deployment,
    cluster: PgCluster | None,
) -> dict[str, Any]:
    """Widget visitors, spread over ``deployment.processes`` web channels on one database:
    closed-loop peak (with every process's CPU) then half that rate for the latency."""
    name = f"storage_{deployment.storage}_{deployment.processes}"
    env = {"WEB_SECRET": "bench-web-secret"}  # a visitor's token is valid on every process
    storage: dict[str, Any] = {"path": str(tmp / f"{name}.db")}
    if deployment.storage == "postgresql":
        assert cluster is not None
        env["SUPPORTBOT_DATABASE_URL"] = create_database(cluster, name)
    children: list[Child] = []
    ports: list[int] = []
    try:
        for i in range(deployment.processes):
            port = free_port()
            config = write_config(
                tmp / f"{name}_{i}.yaml",
                tmp / f"{name}.db",
                storage=storage,
                web={
                    "enabled": True,
                    "port": port,
                    "rate_limit": "1000000/1s",
                    "max_sockets_per_ip": 100_000,
                },
                telegram={"enabled": False},
                slack={"enabled": False},
            )
            child = supportbot(config, env, tmp / f"{name}_{i}.log")
            children.append(child)
            ports.append(port)
            # one after the other: the first one creates the schema
            await ready(child, lambda port=port: listening(port))
        waiters = Waiters()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            visitors = [
                web_load.Visitor(http, f"http://127.0.0.1:{ports[i % len(ports)]}", waiters)
                for i in range(plan.customers)
            ]
            for chunk in range(0, len(visitors), 50):
                await asyncio.gather(*(v.open() for v in visitors[chunk : chunk + 50]))
            expect = telegram_load.FR["did_it_help"]
            await web_load.run_visitors(visitors, questions, Tally("warm-up"), 2.0, expect=expect)
            peak = Tally(deployment.label)
            with contextlib.ExitStack() as stack:
                for child in children:
                    stack.enter_context(peak.cpu_of(child))
                await web_load.run_visitors(visitors, questions, peak, plan.seconds, expect=expect)
            half = Tally(f"{deployment.label}, half rate")
            await web_load.run_visitors(
                visitors, questions, half, plan.seconds, expect=expect,
                rate=max(peak.rate / 2, 1.0),
            )  # fmt: skip
            for visitor in visitors:
                await visitor.close()
        for child in children:
            child.check_alive()
    finally:
        for child in children:
            await child.stop()
    return {
        "label": deployment.label,
        "msgs_per_s": round(peak.rate, 1),
        "p50_ms": round(peak.ms(50), 1),
        "p99_ms": round(peak.ms(99), 1),
        "half_rate": round(half.rate, 1),
        "half_p99_ms": round(half.ms(99), 1),
        "cpu_s_per_msg": round(peak.cpu_per_msg, 5),
        "errors": peak.errors + half.errors,
    }


async def run_storage(plan: Plan, deployments: list[Deployment]) -> list[dict[str, Any]]:
    questions = telegram_load.kb_questions(KnowledgeBase.load(KNOWLEDGE))
    needs_pg = any(d.storage == "postgresql" for d in deployments)
    cluster = PgCluster.start() if needs_pg else None
    try:
        with tempfile.TemporaryDirectory(prefix="supportbot-bench-") as name:
            return [await storage_run(plan, Path(name), questions, d, cluster) for d in deployments]
    finally:
        if cluster is not None:
            cluster.stop()


def storage_table(rows: list[dict[str, Any]], plan: Plan) -> Table:
    t = Table(title=f"storage rows: widget visitors over WebSocket ({plan.customers} visitors, "
                    f"{plan.seconds:g} s a phase, load avg {os.getloadavg()[0]:.2f})")  # fmt: skip
    for column in (
        "deployment",
        "msgs/s (closed loop)",
        "p50 / p99 at peak",
        "p99 at half peak",
        "CPU s/msg (all processes)",
        "vs 1 on SQLite",
        "errors",
    ):
        t.add_column(column, justify="left" if column == "deployment" else "right")  # fmt: skip
    base = rows[0]["msgs_per_s"] if rows and rows[0]["label"].endswith("SQLite") else None
    for r in rows:
        ratio = f"{r['msgs_per_s'] / base:.0%}" if base else ""
        t.add_row(
            r["label"], f"{r['msgs_per_s']:.0f}", f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms",
            f"{r['half_p99_ms']:.0f} ms ({r['half_rate']:.0f}/s)", f"{r['cpu_s_per_msg']:.5f}",
            ratio, str(r["errors"]),
        )  # fmt: skip
    return t


def listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------- memory


async def memory_per_conversation(plan: Plan, tmp: Path) -> dict[str, float]:
    """RSS of an idle bot over an empty database, then over one holding
    ``plan.open_conversations`` open conversations (seeded in its schema)."""
    db = tmp / "memory.db"
    empty = await idle_rss(tmp, db)
    seed_open_conversations(db, plan.open_conversations)
    full = await idle_rss(tmp, db)
    return {
        "empty_rss": empty,
        "full_rss": full,
        "bytes_per_open": (full - empty) / plan.open_conversations,
        "db_bytes": float(files_size(tmp, "memory.db")),
    }


async def idle_rss(tmp: Path, db: Path) -> float:
    """Start the bot, let one customer be answered, read its resident memory."""
    server = telegram_load.TimedTelegram()
    async with server:
        world = telegram_load.TelegramWorld(server, [])
        config = write_config(
            tmp / "memory.yaml",
            db,
            telegram={
                "enabled": True,
                "api_url": server.url,
                "agents_chat_id": world.desk.id,
                "poll_timeout": 10,
                "pacing": False,
            },  # fmt: skip
            slack={"enabled": False},
        )
        bot = supportbot(config, {"TELEGRAM_BOT_TOKEN": server.token}, tmp / "memory.log")
        try:
            await ready(bot, lambda: bool(server.calls_to("getUpdates")))
            user = world.customer()
            await world.ask(user, "Quel est le délai de livraison ?", "livr", Tally("memory"))
            rss = float(bot.rss())
        finally:
            await bot.stop()
    return rss


def seed_open_conversations(db: Path, n: int) -> None:
    """``n`` customers, each with one open conversation waiting on "did it help?", two
    messages and an idle timer: what a busy day leaves open."""
    now = int(time.time() * 1000)
    conn = sqlite3.connect(db)
    try:
        with conn:
            first = 10_000_000
            conn.executemany(
                "INSERT INTO customers (id, key, channel, user_id, name, language, first_seen_at)"
                " VALUES (?, ?, 'telegram', ?, ?, 'fr', ?)",
                ((first + i, f"telegram:{first + i}", str(first + i), f"Client {i}", now)
                 for i in range(n)),
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO conversations (id, customer_id, channel, address_key, chat_id,"
                " language, state, awaiting, topic, kb_entry, started_at, updated_at,"
                " first_response_at, last_customer_at) VALUES (?, ?, 'telegram', ?, ?, 'fr',"
                " 'bot', 'help', 'livraison', 'delivery-time', ?, ?, ?, ?)",
                ((first + i, first + i, f"telegram:{first + i}", str(first + i), now, now, now, now)
                 for i in range(n)),
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO messages (conversation_id, direction, author, text, created_at,"
                " delivered_at) VALUES (?, ?, ?, ?, ?, ?)",
                (row for i in range(n) for row in (
                    (first + i, "in", "customer", "Quel est le délai de livraison ?", now, None),
                    (first + i, "out", "bot", "Nous livrons en 2 à 4 jours ouvrés.", now, now),
                )),
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO timers (conversation_id, kind, due_at) VALUES (?, 'idle', ?)",
                ((first + i, now + 7_200_000) for i in range(n)),
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# ---------------------------------------------------------------------------- the run


async def ready(child: Child, check: Any) -> None:
    def up() -> bool:
        child.check_alive()
        return bool(check())

    await until(up, START_TIMEOUT_S, f"{child.log.stem} to start")


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        value: int = conn.execute(sql).fetchone()[0]
        return value
    finally:
        conn.close()


async def run(plan: Plan) -> dict[str, Any]:
    questions = telegram_load.kb_questions(KnowledgeBase.load(KNOWLEDGE))
    with tempfile.TemporaryDirectory(prefix="supportbot-bench-") as name:
        tmp = Path(name)
        tg = await telegram_ours(plan, tmp, questions)
        echo = await telegram_echo(plan, tmp, questions)
        slack = await slack_run(plan, tmp, questions, ours=True)
        bolt = await slack_run(plan, tmp, questions, ours=False)
        web = await web_run(plan, tmp, questions, ours=True)
        web_echo = await web_run(plan, tmp, questions, ours=False)
        memory = await memory_per_conversation(plan, tmp)
    peak, half, mix = tg["peak"], tg["half"], tg["mix"]
    wpeak, whalf, wecho = web["peak"], web["half"], web_echo["peak"]
    return {
        "customers": plan.customers,
        "seconds": plan.seconds,
        "load_avg_1m": os.getloadavg()[0],
        "tg_msgs_per_s": round(peak.rate, 1),
        "tg_echo_msgs_per_s": round(echo.rate, 1),
        "tg_ratio": round(peak.rate / echo.rate, 3) if echo.rate else None,
        "tg_peak_p50_ms": round(peak.ms(50), 1),
        "tg_peak_p99_ms": round(peak.ms(99), 1),
        "tg_half_rate": round(half.rate, 1),
        "tg_half_p50_ms": round(half.ms(50), 1),
        "tg_half_p99_ms": round(half.ms(99), 1),
        "tg_mix_rate": round(mix.rate, 1),
        "tg_mix_p50_ms": round(mix.ms(50), 1),
        "tg_mix_p99_ms": round(mix.ms(99), 1),
        "tg_agent_relay_p50_ms": round(mix.ms(50, other=True), 1),
        "tg_errors": peak.errors + half.errors + mix.errors + echo.errors,
        "tg_cpu_ms_per_msg": round(peak.cpu_per_msg * 1000, 3),
        "tg_echo_cpu_ms_per_msg": round(echo.cpu_per_msg * 1000, 3),
        "peak_rss_mb": round(tg["peak_rss"] / MB, 1),
        "db_kb_per_1000_conv": round(tg["db_bytes"] / max(tg["conversations"], 1) * 1000 / 1024),
        "messages_per_conv": round(tg["messages"] / max(tg["conversations"], 1), 1),
        "slack_msgs_per_s": round(slack.rate, 1),
        "slack_bolt_msgs_per_s": round(bolt.rate, 1),
        "slack_ratio": round(slack.rate / bolt.rate, 3) if bolt.rate else None,
        "slack_ack_p50_ms": round(slack.ms(50, other=True), 1),
        "slack_ack_p99_ms": round(slack.ms(99, other=True), 1),
        "slack_reply_p99_ms": round(slack.ms(99), 1),
        "slack_bolt_ack_p99_ms": round(bolt.ms(99, other=True), 1),
        "slack_errors": slack.errors + bolt.errors,
        "slack_cpu_ms_per_msg": round(slack.cpu_per_msg * 1000, 3),
        "slack_bolt_cpu_ms_per_msg": round(bolt.cpu_per_msg * 1000, 3),
        "slack_peak_rss_mb": round(slack.peak_rss / MB, 1),
        "web_msgs_per_s": round(wpeak.rate, 1),
        "web_echo_msgs_per_s": round(wecho.rate, 1),
        "web_ratio": round(wpeak.rate / wecho.rate, 3) if wecho.rate else None,
        "web_peak_p50_ms": round(wpeak.ms(50), 1),
        "web_peak_p99_ms": round(wpeak.ms(99), 1),
        "web_echo_p50_ms": round(wecho.ms(50), 1),
        "web_echo_p99_ms": round(wecho.ms(99), 1),
        "web_half_rate": round(whalf.rate, 1),
        "web_half_p50_ms": round(whalf.ms(50), 1),
        "web_half_p99_ms": round(whalf.ms(99), 1),
        "web_cpu_ms_per_msg": round(wpeak.cpu_per_msg * 1000, 3),
        "web_echo_cpu_ms_per_msg": round(wecho.cpu_per_msg * 1000, 3),
        "web_peak_rss_mb": round(web["peak_rss"] / MB, 1),
        "web_echo_peak_rss_mb": round(web_echo["peak_rss"] / MB, 1),
        "web_errors": wpeak.errors + whalf.errors + wecho.errors,
        "open_conversations": plan.open_conversations,
        "rss_empty_mb": round(memory["empty_rss"] / MB, 1),
        "rss_open_mb": round(memory["full_rss"] / MB, 1),
        "bytes_per_open_conv": round(memory["bytes_per_open"]),
    }


def cpu(ours: float, bare: float | None = None) -> str:
    """CPU seconds per answered message, ours (and the bare bot's)."""
    text = f"{ours / 1000:.5f}"
    return text if bare is None else f"{text} / {bare / 1000:.5f}"


def table(r: dict[str, Any]) -> Table:
    t = Table(title=f"supportbot load benchmark ({r['customers']} customers, "
                    f"{r['seconds']:g} s a phase, load avg {r['load_avg_1m']:.2f})")  # fmt: skip
    t.add_column("what")
    t.add_column("supportbot", justify="right")
    t.add_column("bare bot", justify="right")
    t.add_column("CPU s/msg (ours / bare)", justify="right")
    t.add_column("target")
    rows = [
        ("Telegram: customer messages/s (closed loop)", f"{r['tg_msgs_per_s']:.0f}",
         f"{r['tg_echo_msgs_per_s']:.0f}",
         cpu(r["tg_cpu_ms_per_msg"], r["tg_echo_cpu_ms_per_msg"]), "≥ 1,000/s"),
        ("Telegram: ratio to the PTB echo bot", f"{r['tg_ratio']:.0%}", "100 %", "", "≥ 60 %"),
        ("Telegram: latency at peak p50 / p99", f"{r['tg_peak_p50_ms']:.0f} / "
         f"{r['tg_peak_p99_ms']:.0f} ms", "", "", ""),
        (f"Telegram: latency at half peak ({r['tg_half_rate']:.0f}/s) p50 / p99",
         f"{r['tg_half_p50_ms']:.0f} / {r['tg_half_p99_ms']:.0f} ms", "", "", "p99 ≤ 50 ms"),
        (f"Telegram: same rate ({r['tg_mix_rate']:.0f}/s) with handoffs, agents and surveys "
         "p50 / p99", f"{r['tg_mix_p50_ms']:.0f} / {r['tg_mix_p99_ms']:.0f} ms", "", "", ""),
        ("Telegram: agent → customer relay p50", f"{r['tg_agent_relay_p50_ms']:.0f} ms", "",
         "", ""),
        ("Slack: customer messages/s (closed loop)", f"{r['slack_msgs_per_s']:.0f}",
         f"{r['slack_bolt_msgs_per_s']:.0f}",
         cpu(r["slack_cpu_ms_per_msg"], r["slack_bolt_cpu_ms_per_msg"]), ""),
        ("Slack: ratio to the bare slack-bolt app", f"{r['slack_ratio']:.0%}", "100 %", "",
         "≥ 40 %"),
        ("Slack: acknowledgement p50 / p99", f"{r['slack_ack_p50_ms']:.0f} / "
         f"{r['slack_ack_p99_ms']:.0f} ms", f"p99 {r['slack_bolt_ack_p99_ms']:.0f} ms", "",
         "p99 ≤ 300 ms"),
        ("Web widget: visitor messages/s (closed loop, WebSocket)",
         f"{r['web_msgs_per_s']:.0f}", f"{r['web_echo_msgs_per_s']:.0f}",
         cpu(r["web_cpu_ms_per_msg"], r["web_echo_cpu_ms_per_msg"]), ""),
        ("Web widget: ratio to the bare aiohttp WebSocket echo", f"{r['web_ratio']:.0%}",
         "100 %", "", ""),
        ("Web widget: latency at peak p50 / p99", f"{r['web_peak_p50_ms']:.0f} / "
         f"{r['web_peak_p99_ms']:.0f} ms", f"{r['web_echo_p50_ms']:.0f} / "
         f"{r['web_echo_p99_ms']:.0f} ms", "", ""),
        (f"Web widget: latency at half peak ({r['web_half_rate']:.0f}/s) p50 / p99",
         f"{r['web_half_p50_ms']:.0f} / {r['web_half_p99_ms']:.0f} ms", "", "", ""),
        ("peak resident memory (Telegram / Slack / web run)",
         f"{r['peak_rss_mb']:.0f} / {r['slack_peak_rss_mb']:.0f} / {r['web_peak_rss_mb']:.0f} MB",
         f"web echo {r['web_echo_peak_rss_mb']:.0f} MB", "", ""),
        ("database per 1,000 conversations", f"{r['db_kb_per_1000_conv']:,} KB "
         f"({r['messages_per_conv']:.0f} messages each)", "", "", ""),
        (f"memory with {r['open_conversations']:,} open conversations",
         f"{r['rss_open_mb']:.0f} MB (empty {r['rss_empty_mb']:.0f} MB): "
         f"{max(r['bytes_per_open_conv'], 0)} B each", "", "", "≤ 2 KB each"),
        ("errors (replies not seen within 30 s)",
         f"{r['tg_errors'] + r['slack_errors'] + r['web_errors']}", "", "", "0"),
    ]  # fmt: skip
    for row in rows:
        t.add_row(*row)
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--open-conversations", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="about a minute: smaller, shorter")
    parser.add_argument(
        "--encoder", help="knowledge.encoder of the bot (e.g. none); the questions stay the same"
    )
    parser.add_argument(
        "--storage",
        choices=["sqlite", "postgresql", "all"],
        help="only the storage rows: one process on this engine (all: SQLite, PostgreSQL, "
        "and --processes on PostgreSQL)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="supportbot run processes on PostgreSQL"
    )
    args = parser.parse_args()
    global ENCODER
    ENCODER = args.encoder
    if args.quick:
        plan = Plan(customers=50, seconds=3.0, open_conversations=20_000)
    else:
        plan = Plan(args.customers, args.seconds, args.open_conversations)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: one line per row, not 80 columns
        console = Console(width=170)
    if args.storage:
        if args.processes > 1 and args.storage == "sqlite":
            parser.error("several processes need PostgreSQL (SQLite is one process)")
        if args.storage == "all":
            deployments = [Deployment("sqlite"), Deployment("postgresql")]
            if args.processes > 1:
                deployments.append(Deployment("postgresql", args.processes))
        else:
            deployments = [Deployment(args.storage, args.processes)]
        rows = asyncio.run(run_storage(plan, deployments))
        console.print(storage_table(rows, plan))
        rerun = plan.command(args.quick) + f" --storage {args.storage}"
        console.print(f"rerun: {rerun}" + (f" --processes {args.processes}"
                                          if args.processes > 1 else ""))  # fmt: skip
        print(json.dumps(rows, sort_keys=True))
        return
    result = asyncio.run(run(plan))
    console.print(table(result))
    console.print("pacing: off (telegram.pacing / slack.pacing false: local servers, no flood "
                  "limits)")  # fmt: skip
    console.print(f"rerun: {plan.command(args.quick)}")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
