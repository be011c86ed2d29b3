-- Every new row paid for an entry in an index over (status, id); only the pending rows, a small
-- share of any list, need one to be found quickly. A list filtered to confirmed rows walks the
-- primary key, where nearly every row matches.
DROP INDEX subscribers_by_status;
CREATE INDEX subscribers_pending ON subscribers (id) WHERE status = 'pending';
