-- Substring search without a table scan: a trigram index (case-insensitive) over each address's
-- key, plus the address as shown when that differs by more than letter case (an internationalised
-- domain). Contentless: it stores only the index, and the triggers keep it in step.
CREATE VIRTUAL TABLE subscribers_search USING fts5(
    text, content = '', contentless_delete = 1, tokenize = 'trigram'
);

INSERT INTO subscribers_search (rowid, text)
SELECT id, CASE WHEN lower(email) = email_key THEN email_key ELSE email_key || ' ' || email END
FROM subscribers;

CREATE TRIGGER subscribers_search_insert AFTER INSERT ON subscribers BEGIN
    INSERT INTO subscribers_search (rowid, text) VALUES (
        new.id,
        CASE WHEN lower(new.email) = new.email_key THEN new.email_key
             ELSE new.email_key || ' ' || new.email END
    );
END;

CREATE TRIGGER subscribers_search_delete AFTER DELETE ON subscribers BEGIN
    DELETE FROM subscribers_search WHERE rowid = old.id;
END;

CREATE TRIGGER subscribers_search_update AFTER UPDATE OF email, email_key ON subscribers BEGIN
    DELETE FROM subscribers_search WHERE rowid = old.id;
    INSERT INTO subscribers_search (rowid, text) VALUES (
        new.id,
        CASE WHEN lower(new.email) = new.email_key THEN new.email_key
             ELSE new.email_key || ' ' || new.email END
    );
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
