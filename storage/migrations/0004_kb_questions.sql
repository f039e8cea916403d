-- What the knowledge base made of each customer question it handled: the author's to-do
-- list (`supportbot kb gaps`) and labelled phrasings (`supportbot kb picks`). References
-- only: the text stays in messages, so erasing a customer's messages erases it here too.
CREATE TABLE kb_questions (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    message_id      INTEGER NOT NULL REFERENCES messages(id),   -- the customer's message
    language        TEXT NOT NULL,      -- the language the bot answered in
    outcome         TEXT NOT NULL,      -- answered | ambiguous | missed | picked | other
    entry           TEXT,               -- entry answered, or picked among the candidates
    candidates      TEXT,               -- ambiguous: JSON list of the entry ids offered
    helped          INTEGER,            -- 0 after "did not help" (button or typed), else NULL
    at              INTEGER NOT NULL,   -- when the message was handled
    decided_at      INTEGER             -- when the customer picked, chose "other" or said no
);
CREATE INDEX kb_questions_at ON kb_questions(at);
CREATE INDEX kb_questions_conversation ON kb_questions(conversation_id, id);
