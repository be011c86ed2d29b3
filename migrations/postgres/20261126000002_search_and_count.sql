-- Substring search without a table scan: trigram GIN indexes over both forms of every address.
-- pg_trgm is a trusted extension: the database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX subscribers_email_trgm ON subscribers USING gin (lower(email) gin_trgm_ops);
CREATE INDEX subscribers_key_trgm ON subscribers USING gin (email_key gin_trgm_ops);

-- The total, kept as rows come and go. Sixteen slots (by id) so that concurrent signups from
-- several instances do not all queue on one row lock.
CREATE TABLE subscriber_counts (
    slot SMALLINT PRIMARY KEY,
    n    BIGINT   NOT NULL
);
INSERT INTO subscriber_counts (slot, n) SELECT s, 0 FROM generate_series(0, 15) AS s;
UPDATE subscriber_counts SET n = (SELECT count(*) FROM subscribers) WHERE slot = 0;

CREATE FUNCTION subscriber_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE subscriber_counts SET n = n + 1 WHERE slot = NEW.id % 16;
    ELSE
        UPDATE subscriber_counts SET n = n - 1 WHERE slot = OLD.id % 16;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER subscriber_counts_track AFTER INSERT OR DELETE ON subscribers
    FOR EACH ROW EXECUTE FUNCTION subscriber_counts_track();
