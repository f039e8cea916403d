"""Actions out: the engine's actions through ``CustomerChannel``, ``AgentDesk`` and
``DigestPublisher``, rendered for Slack and paced per channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.conversation.model import Address, Choice, Media, Sent, ThreadHeader, ThreadRef
from bot.errors import PermanentDeliveryError
from handlers.slack import render
from handlers.slack.api import SlackApi

RELAYED_REACTION = "white_check_mark"


class SlackOutbound(SlackApi):
    """The three ports the outbox delivers through."""

    # ------------------------------------------------------------------ CustomerChannel

    async def send(self, to: Address, text: str, choices: Sequence[Sequence[Choice]] = ()) -> Sent:
        """A message to a customer (DM, or their thread in a support channel), with buttons."""
        rows = [list(row) for row in choices if row]
        kwargs: dict[str, Any]
        if rows:
            kwargs = {"text": render.fallback(text),
                      "blocks": render.customer_blocks(text, rows, self.language)}  # fmt: skip
        else:
            kwargs = {"text": render.message_text(text)}
        if to.thread_id:
            kwargs["thread_ts"] = to.thread_id
        return await self._post(to.chat_id, customer=True, **kwargs)

    async def send_media(self, to: Address, media: Media, caption: str) -> Sent:
        """An agent's attachment: its name and link (files are not copied)."""
        kwargs: dict[str, Any] = {
            "text": render.fallback(f"📎 {media.name or media.kind} {caption}".strip()),
            "blocks": render.media_blocks(
                media, caption, caption_plain=False, language=self.language
            ),
        }
        if to.thread_id:
            kwargs["thread_ts"] = to.thread_id
        return await self._post(to.chat_id, customer=True, **kwargs)

    # ------------------------------------------------------------------ AgentDesk

    def _agents_channel(self) -> str:
        if not self.settings.agents_channel:
            raise PermanentDeliveryError("slack.agents_channel is not set")
        return self.settings.agents_channel

    async def open_thread(self, header: ThreadHeader, previous: str | None) -> ThreadRef:
        """The header message; its ts is the thread (Slack keeps one thread per conversation)."""
        sent = await self._post(
            self._agents_channel(),
            text=render.header_fallback(header),
            blocks=render.header_blocks(header),
        )
        assert sent.message_id is not None
        return ThreadRef(thread=sent.message_id, header_message=sent.message_id)

    async def update_header(self, ref: ThreadRef, header: ThreadHeader) -> None:
        channel = self._agents_channel()
        await self._api(
            lambda: self.client.chat_update(
                channel=channel,
                ts=ref.header_message,
                text=render.header_fallback(header),
                blocks=render.header_blocks(header),
            ),
            what="chat.update",
        )

    async def post(self, thread: str, text: str, author: str, name: str) -> Sent:
        return await self._post(
            self._agents_channel(),
            thread_ts=thread,
            text=render.post_fallback(text, author, name),
            blocks=render.post_blocks(text, author, name, self.language),
        )

    async def post_choices(
        self, thread: str, text: str, choices: Sequence[Sequence[Choice]]
    ) -> Sent:
        """A menu in the thread (complaint cause and solution); presses come back as agent
        actions because the thread is in the agents' channel."""
        return await self._post(
            self._agents_channel(),
            thread_ts=thread,
            text=render.fallback(text),
            blocks=[*render.plain_sections(text, self.language), *render.buttons(choices, "k")],
        )

    async def post_media(self, thread: str, media: Media, caption: str) -> Sent:
        return await self._post(
            self._agents_channel(),
            thread_ts=thread,
            text=render.fallback(f"📎 {media.name or media.kind} {caption}".strip()),
            blocks=render.media_blocks(media, caption, caption_plain=True, language=self.language),
        )

    async def mark_relayed(self, thread: str, message_ref: str) -> None:
        channel = self._agents_channel()
        await self._api(
            lambda: self.client.reactions_add(
                channel=channel, timestamp=message_ref, name=RELAYED_REACTION
            ),
            what="reactions.add",
            ignore=("already_reacted",),
        )

    async def _thread_note(self, thread: str, key: str) -> None:
        text = render.label(self.language, key)
        block = {"type": "context", "elements": [render.plain(text)]}
        await self._post(
            self._agents_channel(), thread_ts=thread, text=render.escape(text), blocks=[block]
        )

    async def close_thread(self, thread: str) -> None:
        """Slack threads cannot be closed: say it in the thread."""
        await self._thread_note(thread, "closed")

    async def reopen_thread(self, thread: str) -> None:
        await self._thread_note(thread, "reopened")

    async def alert(
        self, text: str, thread: str | None = None, *, buttons: Sequence[Sequence[Choice]] = ()
    ) -> Sent:
        kwargs: dict[str, Any] = {
            "text": render.fallback(text),
            "blocks": [*render.plain_sections(text, self.language), *render.buttons(buttons, "a")],
        }
        if thread:
            kwargs["thread_ts"] = thread
        return await self._post(self._agents_channel(), **kwargs)

    async def mention(self, who: str, name: str, text: str, thread: str | None) -> Sent:
        """Routing's call: ``<@U…>`` for a user, ``<!subteam^S…>`` for a user group (Slack
        notifies both); then the text, escaped."""
        if who.startswith("S"):
            call = f"<!subteam^{who}>"
        elif who.startswith(("U", "W")):
            call = f"<@{who}>"
        else:
            call = render.escape(who)
        line = f"{call} {render.escape(text)}"
        kwargs: dict[str, Any] = {
            "text": line,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": line}}],
        }
        if thread:
            kwargs["thread_ts"] = thread
        return await self._post(self._agents_channel(), **kwargs)

    async def is_agent(self, user_id: str) -> bool:
        """``agent_ids`` when set, else membership of the agents' channel."""
        if self.settings.agent_ids:
            return user_id in self.settings.agent_ids
        if self._identity_value is not None and user_id == self._identity_value.user_id:
            return False
        return user_id in await self._agent_members()

    # ------------------------------------------------------------------ DigestPublisher

    async def publish(self, chat: str, text: str, image: bytes | None, filename: str) -> Sent:
        """The digest text, then its chart (files upload v2) in the same channel."""
        sent = await self._post(
            chat, text=render.fallback(text), blocks=render.plain_sections(text, self.language)
        )
        if image:
            async with self._pacer.slot(chat):
                uploaded = await self._must(
                    lambda: self.client.files_upload_v2(
                        channel=sent.extra.get("channel", chat),
                        content=image,
                        filename=filename,
                        title=filename,
                    ),
                    what="files.upload",
                    customer=False,
                )
            file_info = uploaded.get("file") or {}
            sent.extra["file_id"] = str(file_info.get("id", ""))
        return sent
