-- Double opt-in and the evidence of consent. Rows from before are confirmed single opt-in
-- signups made through the form.
ALTER TABLE subscribers ADD COLUMN status TEXT NOT NULL DEFAULT 'confirmed'
    CHECK (status IN ('pending', 'confirmed'));
ALTER TABLE subscribers ADD COLUMN source TEXT NOT NULL DEFAULT 'form';
ALTER TABLE subscribers ADD COLUMN signup_ip TEXT;
ALTER TABLE subscribers ADD COLUMN signup_agent TEXT;
-- A hash of the consent text the person was shown.
ALTER TABLE subscribers ADD COLUMN consent TEXT;
ALTER TABLE subscribers ADD COLUMN confirmed_at INTEGER;
ALTER TABLE subscribers ADD COLUMN confirm_ip TEXT;
ALTER TABLE subscribers ADD COLUMN confirm_agent TEXT;
UPDATE subscribers SET confirmed_at = created_at;
CREATE INDEX subscribers_by_status ON subscribers (status, id);

-- The confirmation mails asked for per address in the last day (a keyed hash, never the
-- address; `times` the Unix times of at most the allowed number), so the limit holds even when
-- the row is removed and signed up again.
CREATE TABLE confirmation_limits (
    address_hash BLOB    PRIMARY KEY,
    newest       INTEGER NOT NULL,
    times        TEXT    NOT NULL
) WITHOUT ROWID;

-- Addresses that left: a keyed hash, so an admin add or an import cannot put them back.
CREATE TABLE suppressions (
    address_hash BLOB    PRIMARY KEY,
    reason       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

-- Everything that must leave after a commit. Mails are rendered when sent, from the rows they
-- refer to, so the queue holds neither message bodies nor links. A confirmation mail is its own
-- link: the link is its id and an HMAC (under the secret key) of its random nonce, so the
-- database holds no usable link. The Message-ID is made from the id the same way.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    purpose         TEXT    NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    subscriber_id   INTEGER REFERENCES subscribers (id) ON DELETE CASCADE,
    nonce           BLOB,
    expires_at      INTEGER,
    used_at         INTEGER,
    status          TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    lease_owner     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (priority, next_attempt_at) WHERE status = 'queued';
CREATE INDEX outbox_by_subscriber ON outbox (subscriber_id);

-- Which address a visitor session remembers (a keyed hash), so leaving or erasing can end
-- every session that names it.
ALTER TABLE sessions ADD COLUMN owner BLOB;
CREATE INDEX sessions_by_owner ON sessions (owner) WHERE owner IS NOT NULL;

-- Counts per status, and the number who left, kept as rows come and go.
CREATE TABLE subscriber_counts (
    status TEXT    PRIMARY KEY,
    n      INTEGER NOT NULL
);
INSERT INTO subscriber_counts (status, n) VALUES ('confirmed', (SELECT n FROM subscriber_count WHERE id = 1)),
                                                 ('pending', 0), ('left', 0);
DROP TRIGGER subscriber_count_insert;
DROP TRIGGER subscriber_count_delete;
DROP TABLE subscriber_count;

CREATE TRIGGER subscriber_counts_insert AFTER INSERT ON subscribers BEGIN
    UPDATE subscriber_counts SET n = n + 1 WHERE status = new.status;
END;
CREATE TRIGGER subscriber_counts_delete AFTER DELETE ON subscribers BEGIN
    UPDATE subscriber_counts SET n = n - 1 WHERE status = old.status;
END;
CREATE TRIGGER subscriber_counts_update AFTER UPDATE OF status ON subscribers
WHEN old.status <> new.status BEGIN
    UPDATE subscriber_counts SET n = n - 1 WHERE status = old.status;
    UPDATE subscriber_counts SET n = n + 1 WHERE status = new.status;
END;
CREATE TRIGGER suppressions_count_insert AFTER INSERT ON suppressions BEGIN
    UPDATE subscriber_counts SET n = n + 1 WHERE status = 'left';
END;
CREATE TRIGGER suppressions_count_delete AFTER DELETE ON suppressions BEGIN
    UPDATE subscriber_counts SET n = n - 1 WHERE status = 'left';
END;
