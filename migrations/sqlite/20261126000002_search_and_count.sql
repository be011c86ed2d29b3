-- Substring search without a table scan: a trigram index over both forms of every address
-- (as shown, and the lower-case ASCII key). It mirrors `subscribers` through triggers.
CREATE VIRTUAL TABLE subscribers_search USING fts5(
    email, email_key, content = 'subscribers', content_rowid = 'id', tokenize = 'trigram'
);
INSERT INTO subscribers_search (subscribers_search) VALUES ('rebuild');

CREATE TRIGGER subscribers_search_insert AFTER INSERT ON subscribers BEGIN
    INSERT INTO subscribers_search (rowid, email, email_key) VALUES (new.id, new.email, new.email_key);
END;
CREATE TRIGGER subscribers_search_delete AFTER DELETE ON subscribers BEGIN
    INSERT INTO subscribers_search (subscribers_search, rowid, email, email_key)
    VALUES ('delete', old.id, old.email, old.email_key);
END;
CREATE TRIGGER subscribers_search_update AFTER UPDATE ON subscribers BEGIN
    INSERT INTO subscribers_search (subscribers_search, rowid, email, email_key)
    VALUES ('delete', old.id, old.email, old.email_key);
    INSERT INTO subscribers_search (rowid, email, email_key) VALUES (new.id, new.email, new.email_key);
END;

-- The total, kept as rows come and go, so the admin page never counts a million rows.
CREATE TABLE subscriber_count (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO subscriber_count (id, n) SELECT 1, count(*) FROM subscribers;

CREATE TRIGGER subscriber_count_insert AFTER INSERT ON subscribers BEGIN
    UPDATE subscriber_count SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER subscriber_count_delete AFTER DELETE ON subscribers BEGIN
    UPDATE subscriber_count SET n = n - 1 WHERE id = 1;
END;
