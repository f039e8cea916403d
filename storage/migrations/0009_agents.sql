-- Agent tools (issue 17): display names on the widget, customer context, console search.

-- The display name of who spoke, for agent lines of the web widget ("Paul"); NULL for
-- the bot, the customer, and lines written before this version (shown as "Agent").
ALTER TABLE web_messages ADD COLUMN name TEXT;

-- What the customer's earlier conversations were, computed at handoff and shown in the
-- thread header (JSON: count, last topic and date, last NPS/CSAT, open follow-up).
ALTER TABLE conversations ADD COLUMN customer_context TEXT;

-- Console search: by topic or tag, and over a period (started_at is indexed already).
CREATE INDEX conversations_topic ON conversations(topic) WHERE topic IS NOT NULL;
CREATE INDEX conversations_tag ON conversations(tag) WHERE tag IS NOT NULL;
