-- Routing: agents' presence, and indexes for the queue and the per-agent loads.

-- Who said they are available or away (and who was last given a conversation, for the
-- round robin). Agents listed in the desk's agent_ids who never said count as available.
CREATE TABLE agent_presence (
    agent_key        TEXT PRIMARY KEY,      -- Agent.key: "slack:U0123", "telegram:1001", "web:Paul"
    name             TEXT NOT NULL DEFAULT '',
    available        INTEGER NOT NULL,      -- 1 available, 0 away (as the agent last said)
    changed_at       INTEGER NOT NULL,
    last_assigned_at INTEGER                -- the round robin gives the next one to the oldest
) WITHOUT ROWID;

-- The queue (read at each routing pass) and the holders (read once at start).
CREATE INDEX conversations_queued ON conversations(handed_off_at) WHERE state = 'queued';
CREATE INDEX conversations_assigned ON conversations(agent_key) WHERE state = 'assigned';
-- A returning customer's last NPS answer: detractors go to the front of the queue.
CREATE INDEX surveys_customer ON surveys(customer_id, nps_at) WHERE nps IS NOT NULL;
