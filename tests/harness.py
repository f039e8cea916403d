"""A real engine on a real SQLite file, with recording channel and desk, driven by hand."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.config import Settings, settings_from_mapping
from bot.conversation.core import Answerer
from bot.conversation.engine import ConversationService
from bot.conversation.model import (
    Address,
    Agent,
    AgentAction,
    AgentActionKind,
    AgentMessage,
    Customer,
    CustomerChoice,
    CustomerLeft,
    CustomerMessage,
    LeaveReason,
    Media,
    Outcome,
)
from bot.conversation.outbox import Dispatcher
from bot.knowledge import KbEntry, KnowledgeBase
from storage.conversations import SqliteStore
from storage.database import Database
from tests.fakes.clock import FakeClock
from tests.fakes.recording import RecordingBoard, RecordingChannel, RecordingDesk

SAMPLE_KB = (
    KbEntry(
        id="delivery-time",
        topic="livraison",
        questions={
            "fr": ("Quel est le délai de livraison ?", "Combien de temps pour être livré ?"),
            "en": ("How long does delivery take?",),
        },
        answers={"fr": "Livraison en 2 à 4 jours ouvrés.", "en": "Delivery takes 2-4 days."},
    ),
    KbEntry(
        id="refund",
        topic="remboursement",
        questions={
            "fr": ("Comment être remboursé ?", "Quand serai-je remboursé ?"),
            "en": ("How do I get a refund?",),
        },
        answers={"fr": "Remboursement sous 14 jours.", "en": "Refunds within 14 days."},
    ),
    KbEntry(
        id="invoice",
        topic="facture",
        questions={"fr": ("Où trouver ma facture ?",), "en": ("Where is my invoice?",)},
        answers={"fr": "Votre facture est dans votre compte.", "en": "In your account."},
    ),
)

WAIT = 5.0


def make_settings(db: Path, **overrides: Any) -> Settings:
    data: dict[str, Any] = {"storage": {"path": str(db)}, "desk": "slack"}
    for key, value in overrides.items():
        data[key] = value
    return settings_from_mapping(data)


@dataclass
class Harness:
    settings: Settings
    clock: FakeClock
    channel: RecordingChannel = field(default_factory=lambda: RecordingChannel("telegram"))
    desk: RecordingDesk = field(default_factory=lambda: RecordingDesk("slack"))
    # desk: web — no desk transport; the console (an observer and an alert board) instead
    web_desk: bool = False
    board: RecordingBoard = field(default_factory=RecordingBoard)
    observed: list[int] = field(default_factory=list)
    db: Database | None = None
    engine: ConversationService | None = None
    dispatcher: Dispatcher | None = None
    kb: Answerer | None = None  # default: the lexical knowledge base of SAMPLE_KB
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        await self.start_held()
        assert self.dispatcher is not None
        self.dispatcher.release()
        await self.drain()

    async def start_held(self) -> None:
        """Start with the outbox held, as the app does until its channels are up."""
        self.db = await Database.open(self.settings.storage.target())
        store = SqliteStore(self.db, clock=self.clock)
        self.dispatcher = Dispatcher(
            store,
            self.clock,
            customers={"telegram": self.channel},
            desk=None if self.web_desk else self.desk,
            boards=[self.board] if self.web_desk else [],
            backoff_base=0.01,
            backoff_max=0.05,
        )
        self.engine = ConversationService(
            store,
            self.kb or KnowledgeBase.from_entries(SAMPLE_KB),
            self.settings,
            self.clock,
            self.dispatcher,
            desk=None if self.web_desk else "slack",
            authority=None if self.web_desk else self.desk,
        )
        if self.web_desk:
            self.engine.add_observer(self.observed.append)  # as the web console does
        await self.dispatcher.start(hold=True)

    async def stop(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.db is not None:
            await self.db.close()

    async def restart(self) -> None:
        """A new engine and dispatcher on the same database file (channels kept)."""
        await self.stop()
        await self.start()

    async def drain(self) -> None:
        assert self.dispatcher is not None
        async with asyncio.timeout(WAIT):
            await self.dispatcher.drain()

    @property
    def store(self) -> SqliteStore:
        assert self.engine is not None
        store = self.engine.store
        assert isinstance(store, SqliteStore)
        return store

    def key(self) -> str:
        return f"test:{next(self._ids)}"

    @staticmethod
    def customer(user: str = "42", lang: str | None = "fr", name: str = "Marie") -> Customer:
        return Customer("telegram", user, name, lang)

    @staticmethod
    def address(user: str = "42") -> Address:
        return Address("telegram", user)

    async def say(
        self,
        text: str,
        *,
        user: str = "42",
        lang: str | None = "fr",
        command: str | None = None,
        media: Media | None = None,
        dedup_key: str | None = None,
    ) -> Outcome:
        assert self.engine is not None
        event = CustomerMessage(
            customer=self.customer(user, lang),
            address=self.address(user),
            text=text,
            dedup_key=dedup_key or self.key(),
            command=command,
            media=media,
        )
        outcome = await self.engine.handle(event)
        await self.drain()
        return outcome

    async def press(self, label: str, *, user: str = "42", token: str | None = None) -> Outcome:
        assert self.engine is not None
        if token is None:
            token = self.channel.last_tokens(self.address(user))[label]
        event = CustomerChoice(self.customer(user), self.address(user), token, self.key())
        outcome = await self.engine.handle(event)
        await self.drain()
        return outcome

    async def agent_says(self, text: str, *, agent: str = "U_AGENT", thread: str | None = None,
                         media: Media | None = None) -> Outcome:  # fmt: skip
        assert self.engine is not None
        thread = thread or self.desk.only_thread()[0]
        event = AgentMessage(Agent("slack", agent, agent.title()), thread, text, self.key(),
                             message_ref=f"m{next(self._ids)}", media=media)  # fmt: skip
        outcome = await self.engine.handle(event)
        await self.drain()
        return outcome

    async def agent_does(
        self,
        kind: AgentActionKind,
        *,
        agent: str = "U_AGENT",
        thread: str | None = None,
        tag: str | None = None,
        target: Agent | None = None,
    ) -> Outcome:
        assert self.engine is not None
        thread = thread or self.desk.only_thread()[0]
        event = AgentAction(Agent("slack", agent, agent.title()), self.key(), kind=kind,
                            thread=thread, tag=tag, target=target)  # fmt: skip
        outcome = await self.engine.handle(event)
        await self.drain()
        return outcome

    async def agent_presses(self, token: str, *, agent: str = "U_AGENT") -> Outcome:
        assert self.engine is not None
        event = AgentAction(Agent("slack", agent, agent.title()), self.key(), token=token)
        outcome = await self.engine.handle(event)
        await self.drain()
        return outcome

    async def leaves(self, reason: LeaveReason = LeaveReason.BLOCKED, *, user: str = "42") -> None:
        assert self.engine is not None
        await self.engine.handle(CustomerLeft(self.customer(user), reason, self.key()))
        await self.drain()

    async def tick(self, delta: timedelta) -> int:
        """Move the clock and fire what became due."""
        assert self.engine is not None
        self.clock.advance(delta)
        fired = await self.engine.sweep()
        await self.drain()
        return fired

    async def row(self, sql: str, *params: Any) -> Any:
        assert self.db is not None
        return await self.db.fetchone(sql, params)
