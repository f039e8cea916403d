-- Placeholder so that 0009 is in sequence on this branch (i17b); the real 0008_routing.sql comes
-- from its own branch: on merge, keep that one.
SELECT 1;
