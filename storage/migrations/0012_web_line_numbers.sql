-- The last number given to each web visitor's lines (issue 19). On PostgreSQL a line
-- takes its number by bumping this row inside its own INSERT: the row's lock orders one
-- visitor's lines across processes, where a separate lock statement before each INSERT
-- cost a tenth of a widget message's database work. A row may lag behind the visitor's
-- lines (copied from SQLite, or written by an older version): the next number is also
-- never below MAX(seq) + 1. SQLite, with its one writer, numbers lines by MAX(seq) alone
-- and leaves this table empty.
CREATE TABLE web_line_numbers (
    visitor   TEXT PRIMARY KEY,             -- web_messages.visitor
    last_seq  INTEGER NOT NULL              -- the highest seq given to that visitor
) WITHOUT ROWID;
