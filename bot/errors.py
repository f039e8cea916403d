"""Every exception supportbot raises on purpose, in one tree.

    SupportbotError
    ├── ConfigError            bad config.yaml: names the key path and the reason
    ├── KnowledgeBaseError     bad knowledge.yaml: names the location and the reason
    ├── SavedRepliesError      bad replies.yaml: names file:line, the key and the reason
    ├── StorageError
    │   ├── DatabaseLockedError   another process held the database past busy_timeout
    │   ├── DatabaseUnavailableError  the server could not be reached (restart, failover)
    │   └── SchemaError           the database is newer than this code, or a migration failed
    ├── InvalidTransitionError    the lifecycle table forbids this change of state
    ├── DeliveryError          a channel could not deliver an action
    │   ├── TransientDeliveryError   try again later (optionally after retry_after seconds)
    │   └── PermanentDeliveryError   retrying cannot help (bad request, forbidden)
    │       └── RecipientGoneError   the customer blocked the bot or left the channel
    ├── AlreadyRunningError    another supportbot process owns this database
    ├── UnknownCustomerError   no customer is stored under this key (customer export/erase)
    └── InvalidParameterError  a request parameter (dashboard ?from=…) is malformed

Catch ``SupportbotError`` at the edges (CLI, channel error handlers); everything
else is a bug and is logged with its traceback.
"""

from __future__ import annotations


class SupportbotError(Exception):
    """Base of every error supportbot raises deliberately."""


class ConfigError(SupportbotError):
    """config.yaml is missing, malformed, or holds a bad value."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)


class KnowledgeBaseError(SupportbotError):
    """knowledge.yaml is missing, malformed, or holds a bad entry."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


class SavedRepliesError(SupportbotError):
    """replies.yaml (agents' saved replies) is missing, malformed, or holds a bad entry."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


class StorageError(SupportbotError):
    """The database could not do what was asked."""


class DatabaseLockedError(StorageError):
    """Another process kept the database locked for longer than busy_timeout."""


class DatabaseUnavailableError(StorageError):
    """The database server could not be reached: restarting, failing over, or the
    connection was cut. Like a lock, it is waited out (``bot.conversation.busy``): the
    work is tried again on a new connection. The works that are retried this way are
    safe to repeat (an engine step's inbound key, a delivery's record), as a transaction
    whose connection was cut during its COMMIT may have been stored."""


class SchemaError(StorageError):
    """The database schema cannot be used by this version of supportbot."""


class InvalidTransitionError(SupportbotError):
    """A conversation was asked to move between two states the lifecycle does not link."""

    def __init__(self, conversation_id: int, source: str, target: str) -> None:
        self.conversation_id = conversation_id
        self.source = source
        self.target = target
        super().__init__(
            f"conversation #{conversation_id}: no transition from {source!r} to {target!r}"
        )


class DeliveryError(SupportbotError):
    """A channel failed to deliver an outgoing action."""


class TransientDeliveryError(DeliveryError):
    """The platform is down or rate limiting: the outbox tries again later."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(reason)


class PermanentDeliveryError(DeliveryError):
    """The platform refused the action for good; retrying cannot help."""


class RecipientGoneError(PermanentDeliveryError):
    """The customer blocked the bot or left the channel."""


class AlreadyRunningError(SupportbotError):
    """Another supportbot process already serves this database."""


class InvalidParameterError(SupportbotError):
    """A request parameter cannot be used; ``parameter`` names it for the client."""

    def __init__(self, parameter: str, reason: str) -> None:
        self.parameter = parameter
        self.reason = reason
        super().__init__(f"{parameter}: {reason}")


class UnknownCustomerError(SupportbotError):
    """No customer is stored under this key (keys look like telegram:4242)."""
