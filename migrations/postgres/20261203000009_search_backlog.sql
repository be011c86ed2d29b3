-- The trigram index leaves the commits that add rows. Maintaining it was most of what a new
-- row cost (an import of a million rows spent three quarters of its time in it). A new row now
-- only joins `search_backlog`; the servers move rows from there into `subscriber_search`, which
-- carries the index, a few thousand at a time in the background. Searches read both in one
-- statement (one snapshot, and a row is in exactly one of them), so every row is searchable
-- from its commit on.
CREATE TABLE subscriber_search (
    id   BIGINT PRIMARY KEY,
    -- Both forms of the address, as the index before held them: key, newline, address.
    text TEXT   NOT NULL
);
CREATE TABLE search_backlog (
    id BIGINT PRIMARY KEY
);

INSERT INTO subscriber_search (id, text)
SELECT id, email_key || E'\n' || lower(email) FROM subscribers;
CREATE INDEX subscriber_search_trgm ON subscriber_search USING gin (text gin_trgm_ops);
DROP INDEX subscribers_search_trgm;

-- Statement-level, from transition tables, as the counters: an import queues a batch in one
-- statement. Addresses are never changed in place, so inserts and deletes are all there is.
-- A delete takes its rows out of the backlog first: where the indexer is moving one of them,
-- that waits for the indexer's commit, and the second statement (a new snapshot) then sees
-- and removes what the indexer wrote. So no address outlives its row in the index.
CREATE FUNCTION search_backlog_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO search_backlog (id) SELECT id FROM new_rows;
    ELSE
        DELETE FROM search_backlog WHERE id IN (SELECT id FROM old_rows);
        DELETE FROM subscriber_search WHERE id IN (SELECT id FROM old_rows);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER search_backlog_insert AFTER INSERT ON subscribers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION search_backlog_track();
CREATE TRIGGER search_backlog_delete AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION search_backlog_track();
