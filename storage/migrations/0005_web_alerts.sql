-- Alerts for the web console (detractors, waiting reminders, abandonments): the desk's
-- alerts, kept so that a console that connects later sees them, and what each agent read.
CREATE TABLE web_alerts (
    id              INTEGER PRIMARY KEY,    -- the outbox item that carried it: stored once
    conversation_id INTEGER,                -- the conversation it is about, if any
    at              INTEGER NOT NULL,       -- ms since epoch, when the engine raised it
    text            TEXT NOT NULL           -- the same sentence the Slack/Telegram desk gets
);

CREATE TABLE web_alert_reads (
    agent   TEXT PRIMARY KEY,               -- console agent name
    seen_id INTEGER NOT NULL                -- alerts up to this id are read
);
