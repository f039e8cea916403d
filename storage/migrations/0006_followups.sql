-- Follow-ups (SPEC "Closing the loop"): a detractor's survey (NPS 0–6 or a smiley 1–2)
-- opens one piece of tracked work, at most one per survey, so one per conversation: its
-- id IS the surveyed conversation's id (agents know it as "#42"). Its changes are also
-- written to the append-only events log (followup_* kinds).
CREATE TABLE followups (
    id              INTEGER PRIMARY KEY REFERENCES conversations(id),  -- the surveyed one
    conversation_id INTEGER NOT NULL UNIQUE REFERENCES conversations(id),  -- = id (for the
                                            -- per-conversation export and erasure)
    customer_id     INTEGER NOT NULL REFERENCES customers(id),
    nps             INTEGER,                -- the scores that opened it (or came with it)
    csat            INTEGER,
    owner_key       TEXT,                   -- agent key ("slack:U123"); NULL = unassigned
    owner_name      TEXT,
    status          TEXT NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'contacted', 'resolved', 'unreachable')),
    opened_at       INTEGER NOT NULL,       -- ms since epoch (UTC), like every timestamp
    due_at          INTEGER NOT NULL,       -- opened_at + followup.due_after in business time
    contacted_at    INTEGER,                -- first contact (button or an agent's message)
    closed_at       INTEGER,                -- resolved or unreachable
    note            TEXT,                   -- the outcome note
    remind_at       INTEGER                 -- next overdue reminder; NULL once contacted/closed
);
CREATE INDEX followups_opened ON followups(opened_at);
CREATE INDEX followups_customer ON followups(customer_id, status);
CREATE INDEX followups_remind ON followups(remind_at) WHERE remind_at IS NOT NULL;
