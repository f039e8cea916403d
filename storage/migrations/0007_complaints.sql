-- Complaints and touchpoints (issue 16). Only new tables and new columns, so that it
-- applies on top of the other migrations of the same round in any order.

-- One complaint record per conversation handed off as a complaint or marked as one by an
-- agent. Category and cause are the configured labels (complaints.categories / .causes)
-- as chosen; NULL until an agent sets them (reported as "(non renseignée)").
CREATE TABLE complaints (
    conversation_id INTEGER PRIMARY KEY REFERENCES conversations(id),
    opened_at       INTEGER NOT NULL,           -- UTC ms
    opened_by       TEXT NOT NULL,              -- customer (handoff) | the agent's key
    category        TEXT,
    cause           TEXT,
    solution        TEXT,                       -- refund | partial_refund | replacement |
                                                -- voucher | free_delivery | mediation | none
    note            TEXT,                       -- what was offered, in the agent's words
    updated_at      INTEGER NOT NULL,
    updated_by      TEXT
);
CREATE INDEX complaints_cause ON complaints(cause);

-- Where in the customer journey a conversation belongs: the knowledge-base entry the bot
-- answered with, or the touchpoint mapped to the agent's resolution tag (config
-- touchpoints:); stage is before | during | after (the purchase) or NULL.
ALTER TABLE conversations ADD COLUMN touchpoint TEXT;
ALTER TABLE conversations ADD COLUMN stage TEXT;
