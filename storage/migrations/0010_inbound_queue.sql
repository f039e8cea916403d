-- Acknowledge only what is stored (issue 19): every update or event a platform POSTs to us
-- (Telegram webhook, Slack Events API / interactivity) is written here before the 200,
-- then handled; a process killed in between leaves the row for another one to take.

CREATE TABLE inbound_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,             -- "telegram", "slack": which transport replays it
    delivery_key TEXT NOT NULL UNIQUE, -- a redelivery of the same key is stored once
    body TEXT NOT NULL,                -- the raw request body ('' once handled: no copy kept)
    headers TEXT,                      -- JSON: the request headers needed to replay it
    received_at INTEGER NOT NULL,      -- ms, app clock
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,                   -- the process working it (host:pid:nonce)
    claimed_until INTEGER,             -- its lease (ms); past it, any process may take it
    handled_at INTEGER,                -- done (or given up, with error)
    error TEXT
);

-- What a sweep looks at: rows nobody finished, by lease; and what the prune deletes.
CREATE INDEX inbound_queue_pending ON inbound_queue(claimed_until) WHERE handled_at IS NULL;
CREATE INDEX inbound_queue_handled ON inbound_queue(handled_at) WHERE handled_at IS NOT NULL;
