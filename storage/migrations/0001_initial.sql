-- supportbot schema v1. Every *_at column is UTC milliseconds since the Unix epoch.

CREATE TABLE customers (
    id              INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,          -- "<channel>:<platform user id>"
    channel         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    name            TEXT NOT NULL DEFAULT '',
    language        TEXT NOT NULL,
    first_seen_at   INTEGER NOT NULL,
    last_surveyed_at INTEGER,
    reachable       INTEGER NOT NULL DEFAULT 1      -- current value; history in customer_reachability
);

-- Append-only history of reachability, for the customer retention rate.
CREATE TABLE customer_reachability (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    at          INTEGER NOT NULL,
    reachable   INTEGER NOT NULL,                  -- 0 after blocked/left/forget, 1 when back
    reason      TEXT NOT NULL
);
CREATE INDEX customer_reachability_customer ON customer_reachability(customer_id, at);

CREATE TABLE conversations (
    id                      INTEGER PRIMARY KEY,
    customer_id             INTEGER NOT NULL REFERENCES customers(id),
    channel                 TEXT NOT NULL,         -- customer channel: telegram | slack | web
    address_key             TEXT NOT NULL,         -- Address.key: where the customer is reached
    chat_id                 TEXT NOT NULL,
    thread_id               TEXT,
    language                TEXT NOT NULL,
    state                   TEXT NOT NULL,
    awaiting                TEXT,                  -- question the bot waits on: help | nps | csat | comment
    misses                  INTEGER NOT NULL DEFAULT 0,   -- bot answers in a row without confidence
    topic                   TEXT,                  -- knowledge-base topic, or the agent's tag
    kb_entry                TEXT,                  -- last knowledge-base entry answered
    started_at              INTEGER NOT NULL,      -- first customer message
    updated_at              INTEGER NOT NULL,
    first_response_at       INTEGER,               -- first message the customer received
    handed_off_at           INTEGER,
    handoff_reason          TEXT,                  -- requested | complaint | not_understood | not_helpful
    agent_key               TEXT,
    agent_name              TEXT,
    first_agent_response_at INTEGER,               -- first agent message the customer received
    last_customer_at        INTEGER,
    pending_since           INTEGER,               -- oldest customer message no agent answered yet
    resolved_at             INTEGER,
    resolved_by             TEXT,                  -- bot | agent
    tag                     TEXT,                  -- tag set by the agent at resolution
    abandoned_at            INTEGER,
    abandon_reason          TEXT,                  -- timeout | cancelled | blocked | left_channel | forget
    closed_at               INTEGER,
    close_reason            TEXT,
    desk                    TEXT,                  -- telegram | slack | web
    desk_thread             TEXT,
    desk_header             TEXT
);
-- One open conversation per customer address.
CREATE UNIQUE INDEX conversations_open ON conversations(address_key) WHERE state <> 'closed';
CREATE INDEX conversations_started ON conversations(started_at);
CREATE INDEX conversations_resolved ON conversations(resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX conversations_thread ON conversations(desk, desk_thread) WHERE desk_thread IS NOT NULL;
CREATE INDEX conversations_customer ON conversations(customer_id, started_at);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    direction       TEXT NOT NULL,                 -- in | out
    author          TEXT NOT NULL,                 -- customer | bot | agent | note | system
    agent_key       TEXT,
    text            TEXT NOT NULL,
    media           TEXT,                          -- JSON of bot.model.Media
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER                        -- outbound: when the platform accepted it
);
CREATE INDEX messages_conversation ON messages(conversation_id, id);

-- Platform deliveries already processed (update ids, event ids): redeliveries are dropped.
CREATE TABLE inbound (
    dedup_key   TEXT PRIMARY KEY,
    at          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX inbound_at ON inbound(at);

-- Append-only log of everything that happened.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER REFERENCES conversations(id),
    customer_id     INTEGER REFERENCES customers(id),
    at              INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    actor           TEXT,                          -- customer | bot | agent key | system
    data            TEXT                           -- JSON
);
CREATE INDEX events_conversation ON events(conversation_id, id);
CREATE INDEX events_kind_at ON events(kind, at);

CREATE TABLE surveys (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL UNIQUE REFERENCES conversations(id),
    customer_id     INTEGER NOT NULL REFERENCES customers(id),
    channel         TEXT NOT NULL,
    agent_key       TEXT,
    topic           TEXT,
    sent_at         INTEGER NOT NULL,
    nps             INTEGER CHECK (nps BETWEEN 0 AND 10),
    nps_at          INTEGER,
    csat            INTEGER CHECK (csat BETWEEN 1 AND 5),
    csat_at         INTEGER,
    comment         TEXT,
    comment_at      INTEGER,
    completed_at    INTEGER,
    expired_at      INTEGER                        -- not finished within survey.expires_after
);
CREATE INDEX surveys_sent ON surveys(sent_at);
CREATE INDEX surveys_nps_at ON surveys(nps_at) WHERE nps_at IS NOT NULL;
CREATE INDEX surveys_csat_at ON surveys(csat_at) WHERE csat_at IS NOT NULL;

-- Deadlines of open conversations; the sweep fires the due ones. Restart-safe by design.
CREATE TABLE timers (
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    kind            TEXT NOT NULL,                 -- abandon | remind | survey_expiry | idle
    due_at          INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, kind)
) WITHOUT ROWID;
CREATE INDEX timers_due ON timers(due_at);

-- Transactional outbox: every action for a platform is written here in the same
-- transaction as the state change, then delivered (and retried) by the dispatcher.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER REFERENCES conversations(id),
    lane            TEXT NOT NULL,                 -- delivery order is kept per lane
    op              TEXT NOT NULL,
    payload         TEXT NOT NULL,                 -- JSON
    message_id      INTEGER REFERENCES messages(id),
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    sent_at         INTEGER,
    failed_at       INTEGER,
    error           TEXT
);
CREATE INDEX outbox_pending ON outbox(id) WHERE sent_at IS NULL AND failed_at IS NULL;
