-- Web channel: what each website visitor was shown (replayed on reload), and small settings.
CREATE TABLE web_messages (
    visitor     TEXT NOT NULL,              -- visitor id (Address.chat_id of channel "web")
    seq         INTEGER NOT NULL,           -- 1, 2, 3… per visitor: the widget asks "since seq"
    at          INTEGER NOT NULL,           -- ms since epoch
    author      TEXT NOT NULL,              -- customer | bot | agent (who speaks)
    text        TEXT NOT NULL,
    choices     TEXT NOT NULL DEFAULT '[]', -- rows of {"label", "token"} as JSON
    chosen      TEXT,                       -- label of the button pressed, once answered
    client_id   TEXT,                       -- the widget's id of a visitor message (dedup)
    PRIMARY KEY (visitor, seq)
);
CREATE UNIQUE INDEX web_messages_client ON web_messages(visitor, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE web_settings (
    key   TEXT PRIMARY KEY,                 -- e.g. token_secret when WEB_SECRET is not set
    value TEXT NOT NULL
);
