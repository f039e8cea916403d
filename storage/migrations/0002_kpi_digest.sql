-- supportbot schema v2: KPI covering indexes and the digest's schedule state.

-- Every KPI of a period is read from one index range, never from the wide table rows:
-- volumes and response times by the started_at cohort (storage/kpi_queries.py).
CREATE INDEX conversations_kpi ON conversations(
    started_at, first_response_at, handed_off_at, first_agent_response_at,
    resolved_at, abandoned_at, channel, agent_key, tag, topic, agent_name
);
CREATE INDEX surveys_kpi_nps ON surveys(nps_at, nps, channel, agent_key, topic)
    WHERE nps_at IS NOT NULL;
CREATE INDEX surveys_kpi_csat ON surveys(csat_at, csat, channel, agent_key, topic)
    WHERE csat_at IS NOT NULL;
CREATE INDEX surveys_kpi_sent ON surveys(sent_at, nps, channel, agent_key, topic);
-- Detractor comments of a period, newest first.
CREATE INDEX surveys_detractor_comments ON surveys(nps_at)
    WHERE nps <= 6 AND comment IS NOT NULL AND comment <> '';
-- Customer retention: customers known before an instant, per channel, and the latest
-- reachability change of each before an instant without touching the table.
CREATE INDEX customers_first_seen ON customers(first_seen_at, channel);
CREATE INDEX customer_reachability_kpi ON customer_reachability(customer_id, at, reachable);

-- Long reports read the conversation cohort from a cache of one row per UTC day of
-- started_at: the KPI columns of that day's conversations as packed arrays
-- (storage/kpi_queries.py). The triggers drop a day whenever one of its conversations
-- is inserted, changed in a KPI column, or deleted, so the cache is never stale; the
-- next long report rebuilds it inside a write transaction.
CREATE TABLE kpi_cohort_days (
    day             INTEGER PRIMARY KEY,           -- started_at / 86400000
    version         INTEGER NOT NULL,              -- layout of data
    rows            INTEGER NOT NULL,
    data            BLOB NOT NULL
);
-- Group keys (channels, agent keys, topics) as small integers inside the cache.
CREATE TABLE kpi_keys (
    id              INTEGER PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE
);
CREATE TRIGGER kpi_cohort_inserted AFTER INSERT ON conversations BEGIN
    DELETE FROM kpi_cohort_days WHERE day = NEW.started_at / 86400000;
END;
CREATE TRIGGER kpi_cohort_changed AFTER UPDATE OF
    started_at, first_response_at, handed_off_at, first_agent_response_at, resolved_at,
    abandoned_at, channel, agent_key, tag, topic ON conversations BEGIN
    DELETE FROM kpi_cohort_days
    WHERE day IN (OLD.started_at / 86400000, NEW.started_at / 86400000);
END;
CREATE TRIGGER kpi_cohort_deleted AFTER DELETE ON conversations BEGIN
    DELETE FROM kpi_cohort_days WHERE day = OLD.started_at / 86400000;
END;

-- One row per digest period: claimed (INSERT under the UNIQUE constraint) before anything
-- is posted, so a period is never posted twice, whatever fires the job and how often.
CREATE TABLE digest_runs (
    id              INTEGER PRIMARY KEY,
    period_start    INTEGER NOT NULL,
    period_end      INTEGER NOT NULL,
    status          TEXT NOT NULL,                 -- sending | done
    owner           TEXT NOT NULL,                 -- the process that holds the lease
    lease_until     INTEGER NOT NULL,              -- others may resume it after this instant
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_at      INTEGER NOT NULL,
    sent_at         INTEGER,                       -- every target done
    text            TEXT,                          -- composed once, resent identically
    chart           BLOB,
    error           TEXT,
    UNIQUE (period_start, period_end)
);
CREATE INDEX digest_runs_pending ON digest_runs(lease_until) WHERE status = 'sending';

-- Per-target progress: a crash between two targets resumes the missing ones only.
CREATE TABLE digest_deliveries (
    run_id          INTEGER NOT NULL REFERENCES digest_runs(id),
    target          TEXT NOT NULL,                 -- "slack:C123" | "telegram:-100123"
    status          TEXT NOT NULL,                 -- sent | failed
    at              INTEGER NOT NULL,
    message_id      TEXT,
    error           TEXT,
    PRIMARY KEY (run_id, target)
) WITHOUT ROWID;
