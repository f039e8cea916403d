"""Telegram load: the local Bot API server, simulated customers and agents, timed replies.

A customer writes (the update is queued on the server, the clock starts), the bot polls
it, answers, and the clock stops when the answer reaches the server (``sendMessage``).
Agents are simulated too: they write in the conversation's forum topic and resolve it;
the customers then answer the NPS and CSAT buttons.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

from bench.loadkit import Tally, Waiters
from bot.knowledge import KnowledgeBase
from bot.texts import CATALOG
from tests.fakes.telegram_server import FakeChat, FakeUser, TelegramServer

JSON = dict[str, Any]
FR = CATALOG["fr"]
REPLY_TIMEOUT_S = 30.0


def kb_questions(kb: KnowledgeBase, limit: int = 40) -> list[str]:
    """French phrasings the knowledge base answers with their own entry (no handoff)."""
    found = [
        q
        for entry in kb.entries
        for q in entry.questions.get("fr", ())[:2]
        if kb.match(q, "fr").id == entry.id and kb.match(q, "fr").answered
    ]
    return found[:limit]


class TimedTelegram(TelegramServer):
    """The local Bot API server, telling the waiters about every message the bot sends."""

    def __init__(self) -> None:
        super().__init__()
        # update ids unique across servers: a bot restarted on the same database drops
        # update ids it has already processed (redeliveries)
        self._update_ids = itertools.count(time.time_ns() // 1000)
        self.waiters = Waiters()
        self.bot_messages = 0

    def _bot_message(self, chat: FakeChat, p: JSON, content: JSON) -> JSON:
        message = super()._bot_message(chat, p, content)
        self.bot_messages += 1
        self.waiters.arrived(chat.id, message)
        return message

    def forget_history(self) -> None:
        """Between phases: the call log and stored chats are test conveniences that would
        otherwise grow for the whole run."""
        self.calls.clear()
        self._by_method.clear()
        self._history.clear()
        self._delivered.clear()
        for chat in self.chats.values():
            chat.messages.clear()


def has(text: str) -> Any:
    return lambda m: text in (m.get("text") or "")


def button(message: JSON, label: str) -> str:
    for row in message.get("reply_markup", {}).get("inline_keyboard", []):
        for b in row:
            if b["text"] == label:
                data: str = b["callback_data"]
                return data
    raise LookupError(f"no button {label!r}")


class TelegramWorld:
    """Customers, one agent and the agents' forum group on one server."""

    def __init__(self, server: TimedTelegram, questions: Sequence[str]) -> None:
        self.server = server
        self.questions = questions
        self.agent = server.add_user("Paul", "Agent")
        self.desk = server.add_group("Support", members=[self.agent], admins=[self.agent])
        self._names = itertools.count()

    def customer(self) -> FakeUser:
        n = next(self._names)
        return self.server.add_user(f"Client{n:06d}", "Bench", language_code="fr")

    async def ask(self, user: FakeUser, text: str, expect: str, tally: Tally) -> JSON:
        """One customer message, timed until the reply containing ``expect`` arrives."""
        waiter = self.server.waiters.expect(user.id, has(expect))
        sent = time.perf_counter()
        await self.server.customer_sends(user, text)
        arrived, message = await asyncio.wait_for(waiter, REPLY_TIMEOUT_S)
        tally.note(sent, arrived)
        result: JSON = message
        return result

    async def press(
        self, user: FakeUser, message: JSON, label: str, expect: str, tally: Tally
    ) -> JSON:
        waiter = self.server.waiters.expect(user.id, has(expect))
        sent = time.perf_counter()
        await self.server.press_button(user, message, button(message, label))
        arrived, reply = await asyncio.wait_for(waiter, REPLY_TIMEOUT_S)
        tally.note(sent, arrived)
        result: JSON = reply
        return result

    async def handoff(self, user: FakeUser, tally: Tally) -> None:
        """/agent, an agent answers in the topic and resolves, the customer takes the survey."""
        name = f"{user.first_name} {user.last_name}"
        header = self.server.waiters.expect(
            self.desk.id, lambda m: name in (m.get("text") or "") and "reply_markup" in m
        )
        await self.ask(user, "/agent", FR["handoff_open"][:40], tally)
        _, posted = await asyncio.wait_for(header, REPLY_TIMEOUT_S)
        thread = posted["message_thread_id"]
        # The agent takes it first, as people do: a message written in the topic within
        # milliseconds of its header can beat the bot's record of the topic (see README).
        joined = self.server.waiters.expect(user.id, has("a rejoint la conversation"))
        await self.server.press_button(self.agent, posted, button(posted, "Prendre"))
        await asyncio.wait_for(joined, REPLY_TIMEOUT_S)
        relay = self.server.waiters.expect(user.id, has("Je regarde votre commande"))
        sent = time.perf_counter()
        await self.server.agent_writes(self.agent, thread, "Je regarde votre commande.")
        arrived, _ = await asyncio.wait_for(relay, REPLY_TIMEOUT_S)
        tally.other.append(arrived - sent)
        nps = self.server.waiters.expect(user.id, has(FR["nps_question"][:30]))
        await self.server.agent_writes(self.agent, thread, "/resolve livraison")
        _, question = await asyncio.wait_for(nps, REPLY_TIMEOUT_S)
        csat = await self.press(user, question, "9", FR["csat_question"], tally)
        comment = await self.press(user, csat, "🙂", FR["comment_question"][:30], tally)
        await self.press(user, comment, FR["choice_skip"], FR["survey_thanks"][:30], tally)


async def run_customers(
    world: TelegramWorld,
    customers: Sequence[FakeUser],
    tally: Tally,
    duration: float,
    *,
    rate: float | None = None,
    handoff_every: int = 0,
    expect: str | None = FR["did_it_help"],
) -> None:
    """Each customer asks, waits for the answer, asks again (closed loop) until
    ``duration`` is over (``expect=None``: the reply repeats the question, an echo).
    With ``rate`` (messages/s overall) each customer keeps to a schedule instead, so the
    load stays at that rate whatever the latency. Every ``handoff_every``-th turn of a
    customer is a whole handoff (agent, resolve, survey)."""
    start = time.perf_counter()
    deadline = start + duration
    interval = len(customers) / rate if rate else 0.0

    async def one(i: int, user: FakeUser) -> None:
        turn = 0
        due = start + (interval * i / len(customers))
        while time.perf_counter() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                due += interval
            turn += 1
            try:
                if handoff_every and (turn + i) % handoff_every == 0:
                    await world.handoff(user, tally)
                else:
                    text = world.questions[(i + turn) % len(world.questions)]
                    await world.ask(user, text, text if expect is None else expect, tally)
            except (TimeoutError, LookupError, AssertionError):
                tally.errors += 1

    await asyncio.gather(*(one(i, u) for i, u in enumerate(customers)))
    tally.elapsed = time.perf_counter() - start
