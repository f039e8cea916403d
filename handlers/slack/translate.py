"""Slack payloads → our normalized events: one pure function per event kind.

The transport looks up what needs the network (who the person is, whether they belong to
the business) and passes it in as a ``Person``; nothing here does I/O or decides anything
about conversations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.conversation.followup_types import parse_followup_args
from bot.conversation.model import (
    Address,
    Agent,
    AgentAction,
    AgentActionKind,
    AgentMessage,
    AgentPresence,
    Customer,
    CustomerChoice,
    CustomerLeft,
    CustomerMessage,
    CustomerReturned,
    FollowupAction,
    LeaveReason,
    Media,
)

CHANNEL = "slack"

# message subtypes a person's new message can have; edits, deletions, joins… are ignored
PERSON_SUBTYPES = frozenset({"file_share", "thread_broadcast", "me_message"})

Payload = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Person:
    """What ``users.info`` told us about someone (or only their id if it failed)."""

    user_id: str
    name: str = ""
    locale: str | None = None
    team_id: str | None = None
    is_bot: bool = False
    shown: str = ""  # what customers see of an agent: the first name, never the handle

    def as_customer(self) -> Customer:
        return Customer(CHANNEL, self.user_id, self.name, self.locale)

    def as_agent(self) -> Agent:
        return Agent(CHANNEL, self.user_id, self.name, shown=self.shown)


def person_from_user(user: Payload, hint_team: str | None = None) -> Person:
    """``users.info``'s ``user`` object → Person (display name first, as Slack shows it; to
    customers an agent is their first name, not a handle such as "paul.m")."""
    profile = user.get("profile") or {}
    name = (
        profile.get("display_name")
        or profile.get("real_name")
        or user.get("real_name")
        or user.get("name")
        or ""
    )
    real = str(profile.get("real_name") or user.get("real_name") or "").split()
    shown = profile.get("first_name") or (real[0] if real else "") or profile.get("display_name")
    return Person(
        user_id=str(user.get("id", "")),
        name=str(name),
        shown=str(shown or ""),
        locale=user.get("locale") or None,
        team_id=user.get("team_id") or hint_team,
        is_bot=bool(user.get("is_bot")),
    )


# ---------------------------------------------------------------------- messages


def is_person_message(event: Payload, bot_user_id: str | None) -> bool:
    """A new message written by a person (not a bot, not this app, not an edit/deletion)."""
    if event.get("subtype") not in PERSON_SUBTYPES and event.get("subtype") is not None:
        return False
    if event.get("bot_id") or event.get("bot_profile") or not event.get("user"):
        return False
    return event.get("user") != bot_user_id


def thread_of(event: Payload) -> str | None:
    """The thread a message replies in; None for a top-level message (or a thread's parent)."""
    thread_ts = event.get("thread_ts")
    if thread_ts and thread_ts != event.get("ts"):
        return str(thread_ts)
    return None


def is_dm(event: Payload) -> bool:
    return event.get("channel_type") == "im" or str(event.get("channel", "")).startswith("D")


_LINK = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")


def slack_to_plain(text: str) -> str:
    """Slack's wire format → what the person typed: links, mentions and entities undone."""

    def repl(m: re.Match[str]) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith("@"):
            return f"@{label or target[1:]}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!"):
            word = target[1:].split("^")[0]
            return label or f"@{word}"
        if target.startswith("mailto:"):
            return label or target[7:]
        return f"{label} ({target})" if label and label != target else target

    return _LINK.sub(repl, text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def media_of(event: Payload) -> Media | None:
    """The first shared file of a message, kept as a reference (never downloaded)."""
    files = event.get("files") or []
    if not files:
        return None
    f = files[0]
    mimetype = str(f.get("mimetype") or "")
    kind = next(
        (
            k
            for p, k in (("image/", "photo"), ("video/", "video"), ("audio/", "audio"))
            if mimetype.startswith(p)
        ),
        "document",
    )
    return Media(
        kind=kind,
        channel=CHANNEL,
        chat_id=str(event.get("channel", "")),
        message_id=str(event.get("ts", "")),
        file_id=f.get("id"),
        name=f.get("name") or f.get("title"),
        url=f.get("permalink") or f.get("url_private"),
    )


def _text_with_extra_files(event: Payload) -> str:
    text = slack_to_plain(str(event.get("text") or ""))
    extra = [
        f"📎 {f.get('name') or f.get('title') or 'file'} {f.get('permalink') or ''}".rstrip()
        for f in (event.get("files") or [])[1:]
    ]
    return "\n".join([text, *extra]).strip() if extra else text


def customer_message(
    event: Payload, person: Person, dedup_key: str, *, shared_channel: bool
) -> CustomerMessage:
    """A customer's message. In a shared support channel each top-level message is its own
    conversation, answered in its thread: the thread (or the message itself) is the address.
    """
    channel = str(event["channel"])
    thread_id = (thread_of(event) or str(event["ts"])) if shared_channel else None
    return CustomerMessage(
        customer=person.as_customer(),
        address=Address(CHANNEL, channel, thread_id),
        text=_text_with_extra_files(event),
        dedup_key=dedup_key,
        media=media_of(event),
        message_ref=str(event["ts"]),
    )


_AGENT_COMMAND = re.compile(
    r"^!(take|resolve|transfer|note|complaint|r)\b\s*(.*)$", re.DOTALL | re.I
)
_SLACK_COMMANDS = {"r": AgentActionKind.SAVED_REPLY}  # !r SHORTCUT: a saved reply
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|([^>]*))?>")


def agent_command(raw: str, thread: str, person: Person, dedup_key: str) -> AgentAction | None:
    """``!take``, ``!resolve [tag]``, ``!transfer [@someone]``, ``!note text``, ``!r [shortcut]``
    typed in a thread.

    Slack's composer keeps ``/…`` for slash commands, so thread commands start with ``!``.
    """
    match = _AGENT_COMMAND.match(raw.strip())
    if match is None:
        return None
    word = match.group(1).lower()
    kind = _SLACK_COMMANDS.get(word) or AgentActionKind(word)
    rest = match.group(2).strip()
    target = None
    if kind == AgentActionKind.TRANSFER and (mention := _MENTION.search(rest)):
        target = Agent(CHANNEL, mention.group(1), mention.group(2) or mention.group(1))
    return AgentAction(
        agent=person.as_agent(),
        dedup_key=dedup_key,
        kind=kind,
        thread=thread,
        tag=slack_to_plain(rest) or None if kind == AgentActionKind.RESOLVE else None,
        text=slack_to_plain(rest)
        if kind in (AgentActionKind.NOTE, AgentActionKind.SAVED_REPLY)
        else None,
        target=target,
    )


_FOLLOWUP_COMMAND = re.compile(r"^!followup\b\s*(.*)$", re.DOTALL | re.I)


def is_followup(event: Payload) -> bool:
    return _FOLLOWUP_COMMAND.match(str(event.get("text") or "").strip()) is not None


def followup_command(event: Payload, person: Person, dedup_key: str) -> FollowupAction | None:
    """``!followup ID STEP [note]`` typed anywhere in the agents' channel."""
    match = _FOLLOWUP_COMMAND.match(str(event.get("text") or "").strip())
    if match is None:
        return None
    fid, step, note = parse_followup_args(slack_to_plain(match.group(1)))
    return FollowupAction(person.as_agent(), fid, step, dedup_key, note)


_PRESENCE = re.compile(r"^!(available|away)\s*$", re.I)


def is_presence_command(raw: str) -> bool:
    return _PRESENCE.match(raw.strip()) is not None


def presence_command(raw: str, person: Person, dedup_key: str) -> AgentPresence | None:
    """``!available`` / ``!away``, typed anywhere in the agents' channel."""
    match = _PRESENCE.match(raw.strip())
    if match is None:
        return None
    return AgentPresence(person.as_agent(), match.group(1).lower() == "available", dedup_key)


def agent_message(
    event: Payload, person: Person, dedup_key: str
) -> AgentMessage | AgentAction | None:
    """An agent's reply in a conversation thread of the agents' channel (notes included),
    or a thread command (``!resolve livraison``)."""
    thread = thread_of(event)
    if thread is None:
        return None
    command = agent_command(str(event.get("text") or ""), thread, person, dedup_key)
    if command is not None:
        return command
    return AgentMessage(
        agent=person.as_agent(),
        thread=thread,
        text=_text_with_extra_files(event),
        dedup_key=dedup_key,
        message_ref=str(event["ts"]),
        media=media_of(event),
    )


def membership(
    event: Payload, person: Person, dedup_key: str
) -> CustomerLeft | CustomerReturned | None:
    """A customer left (or came back to) a shared support channel."""
    if event.get("type") == "member_left_channel":
        return CustomerLeft(person.as_customer(), LeaveReason.LEFT_CHANNEL, dedup_key)
    if event.get("type") == "member_joined_channel":
        return CustomerReturned(person.as_customer(), dedup_key)
    return None


# ---------------------------------------------------------------------- buttons


def action_dedup_key(body: Payload, action: Payload) -> str:
    """One key per press: Slack never redelivers interactions, but a user may double-click."""
    return f"slack:action:{action.get('action_ts') or body.get('trigger_id')}"


def part(body: Payload, key: str) -> Payload:
    """A nested object of a payload; {} when missing or (forged) not an object."""
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def action_channel(body: Payload) -> str:
    return str(part(body, "channel").get("id") or part(body, "container").get("channel_id", ""))


def action_thread(body: Payload) -> str | None:
    """The thread the pressed message sits in, if any."""
    container = part(body, "container")
    message = part(body, "message")
    thread = container.get("thread_ts") or message.get("thread_ts")
    if thread and thread != (container.get("message_ts") or message.get("ts")):
        return str(thread)
    return None


def action_message_ts(body: Payload) -> str:
    return str(part(body, "container").get("message_ts") or part(body, "message").get("ts", ""))


def customer_choice(
    body: Payload, action: Payload, person: Person, *, shared_channel: bool
) -> CustomerChoice:
    """A customer pressed one of the buttons the engine offered (the token comes back)."""
    channel = action_channel(body)
    thread = (action_thread(body) or action_message_ts(body)) if shared_channel else None
    return CustomerChoice(
        customer=person.as_customer(),
        address=Address(CHANNEL, channel, thread),
        token=str(action.get("value") or ""),
        dedup_key=action_dedup_key(body, action),
    )


def agent_action(body: Payload, action: Payload, person: Person) -> AgentAction:
    """An agent pressed a header button: the thread is the header message itself."""
    return AgentAction(
        agent=person.as_agent(),
        dedup_key=action_dedup_key(body, action),
        token=str(action.get("value") or ""),
        thread=action_thread(body) or action_message_ts(body),
    )
