-- Several processes on one PostgreSQL (issue 19): an outbox item and a due timer are worked
-- by the process that claimed them. A claim is a lease (claimed_until, ms from the app
-- clock): a process killed mid-delivery leaves its rows to whoever claims them after it.

ALTER TABLE outbox ADD COLUMN claimed_by TEXT;        -- the process delivering it (host:pid:nonce)
ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;  -- its lease; past it, anybody may take it
ALTER TABLE timers ADD COLUMN claimed_by TEXT;
ALTER TABLE timers ADD COLUMN claimed_until INTEGER;

-- "Is an earlier item of this lane still undelivered?" before each delivery.
CREATE INDEX outbox_pending_lane ON outbox(lane, id) WHERE sent_at IS NULL AND failed_at IS NULL;
