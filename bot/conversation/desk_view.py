"""What agents see of a conversation: the thread header and transcript lines.

Pure functions of the stored record and the desk's texts, so every desk shows the same
status, reason and buttons.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from bot.conversation import payloads as P
from bot.conversation.buttons import agent_choice
from bot.conversation.lifecycle import WITH_AGENTS
from bot.conversation.model import AgentActionKind, Choice, State, ThreadHeader, TranscriptLine
from bot.conversation.store import ConversationRecord, NewMessage

DeskText = Callable[..., str]
"""``texts.get`` bound to the desk's language: key and values → sentence."""

# A name as the desk shows it. Platforms cap theirs (Telegram: 64 + 64) but a name is typed
# by its owner: uncut, a huge one made headers and posts that no desk accepts.
MAX_NAME = 128


def transcript_line(conv: ConversationRecord, message: NewMessage) -> TranscriptLine:
    name = conv.customer_name if message.author == "customer" else (message.agent_key or "")
    name = name[:MAX_NAME]
    text = message.text
    if message.media:
        text = f"[{P.media_from(message.media).kind}] {text}".strip()
    return TranscriptLine(message.author, name, text)


def _status(conv: ConversationRecord, t: DeskText) -> str:
    if conv.state == State.CLOSED:
        if conv.resolved_at is not None:
            return t("status_resolved")
        if conv.abandoned_at is not None:
            return t("status_abandoned")
        return t("status_closed")
    return {
        State.QUEUED: t("status_waiting"),
        State.ASSIGNED: t("status_taken", agent=conv.agent_name or conv.agent_key or "?"),
        State.RESOLVED: t("status_resolved"),
        State.SURVEYING: t("status_resolved"),
        State.ABANDONED: t("status_abandoned"),
    }.get(conv.state, t("status_closed"))


def context_line(conv: ConversationRecord, t: DeskText) -> str:
    """The customer's earlier conversations in one line, from what handoff stored."""
    if not conv.customer_context:
        return ""
    data = json.loads(conv.customer_context)
    parts = [t("context_count", count=data["count"]) if data.get("count") else t("context_first")]
    if data.get("last_date"):
        parts.append(t("context_last", date=data["last_date"], topic=data.get("last_topic") or "—"))
    scores = [f"NPS {data['nps']}/10"] if data.get("nps") is not None else []
    scores += [f"CSAT {data['csat']}/5"] if data.get("csat") is not None else []
    if scores:
        parts.append(t("context_scores", scores=", ".join(scores)))
    if data.get("followup"):
        parts.append(t("context_followup", status=data["followup"].get("status", "?")))
    return " · ".join(parts)


def thread_header(
    conv: ConversationRecord, t: DeskText, transcript: Sequence[TranscriptLine] = ()
) -> ThreadHeader:
    """The header of the conversation's thread, with the buttons its state allows."""
    buttons: list[Choice] = []
    if conv.state == State.QUEUED:
        buttons.append(agent_choice(t("button_take"), conv.id, AgentActionKind.TAKE))
    if conv.state in WITH_AGENTS:
        buttons.append(agent_choice(t("button_resolve"), conv.id, AgentActionKind.RESOLVE))
    topic = conv.tag or conv.topic
    customer = conv.customer_name or conv.customer_key
    title = t("title", id=conv.id, customer=customer, topic=f" · {topic}" if topic else "")
    return ThreadHeader(
        conversation_id=conv.id,
        title=title[:128],
        customer_name=customer[:MAX_NAME],
        channel=conv.channel,
        language=conv.language,
        topic=topic,
        status=_status(conv, t),
        reason=t(f"reason_{conv.handoff_reason or 'requested'}"),
        transcript=tuple(transcript),
        buttons=tuple(buttons),
        context=context_line(conv, t),
    )
