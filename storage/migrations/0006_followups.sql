-- Placeholder for branch i16a's migration of the same name (follow-ups), so that 0007
-- applies in sequence on this branch. On merge, i16a's file replaces this one.
SELECT 1;
