-- The trigram index is built in the writer's idle time instead of inside each signup's or
-- import's commit: rows with an id above `indexed_up_to` are not in it yet, and searches read
-- those few (the newest) directly. Ids are never reused (AUTOINCREMENT), so one number says
-- which rows the index holds.
CREATE TABLE search_progress (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_up_to INTEGER NOT NULL
);
INSERT INTO search_progress (id, indexed_up_to) SELECT 1, coalesce(max(id), 0) FROM subscribers;

DROP TRIGGER subscribers_search_insert;
DROP TRIGGER subscribers_search_delete;
DROP TRIGGER subscribers_search_update;

CREATE TRIGGER subscribers_search_delete AFTER DELETE ON subscribers
WHEN old.id <= (SELECT indexed_up_to FROM search_progress) BEGIN
    DELETE FROM subscribers_search WHERE rowid = old.id;
END;

CREATE TRIGGER subscribers_search_update AFTER UPDATE OF email, email_key ON subscribers
WHEN old.id <= (SELECT indexed_up_to FROM search_progress) BEGIN
    DELETE FROM subscribers_search WHERE rowid = old.id;
    INSERT INTO subscribers_search (rowid, text) VALUES (
        new.id,
        CASE WHEN lower(new.email) = new.email_key THEN new.email_key
             ELSE new.email_key || ' ' || new.email END
    );
END;
