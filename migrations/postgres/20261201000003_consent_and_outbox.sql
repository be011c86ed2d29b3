-- Double opt-in and the evidence of consent. Rows from before are confirmed single opt-in
-- signups made through the form.
ALTER TABLE subscribers
    ADD COLUMN status TEXT NOT NULL DEFAULT 'confirmed' CHECK (status IN ('pending', 'confirmed')),
    ADD COLUMN source TEXT NOT NULL DEFAULT 'form',
    ADD COLUMN signup_ip TEXT,
    ADD COLUMN signup_agent TEXT,
    -- A hash of the consent text the person was shown.
    ADD COLUMN consent TEXT,
    ADD COLUMN confirmed_at BIGINT,
    ADD COLUMN confirm_ip TEXT,
    ADD COLUMN confirm_agent TEXT;
UPDATE subscribers SET confirmed_at = created_at;
CREATE INDEX subscribers_by_status ON subscribers (status, id);

-- The confirmation mails asked for per address in the last day (a keyed hash, never the
-- address; `times` the Unix times of at most the allowed number), so the limit holds even when
-- the row is removed and signed up again.
CREATE TABLE confirmation_limits (
    address_hash BYTEA  PRIMARY KEY,
    newest       BIGINT NOT NULL,
    times        TEXT   NOT NULL
);

-- Addresses that left: a keyed hash, so an admin add or an import cannot put them back.
CREATE TABLE suppressions (
    address_hash BYTEA  PRIMARY KEY,
    reason       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);

-- Everything that must leave after a commit. Mails are rendered when sent, from the rows they
-- refer to, so the queue holds neither message bodies nor links. A confirmation mail is its own
-- link: the link is its id and an HMAC (under the secret key) of its random nonce, so the
-- database holds no usable link. The Message-ID is made from the id the same way.
CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    purpose         TEXT    NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    subscriber_id   BIGINT REFERENCES subscribers (id) ON DELETE CASCADE,
    nonce           BYTEA,
    expires_at      BIGINT,
    used_at         BIGINT,
    status          TEXT    NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    lease_until     BIGINT  NOT NULL DEFAULT 0,
    lease_owner     BIGINT  NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX outbox_due ON outbox (priority, next_attempt_at) WHERE status = 'queued';
CREATE INDEX outbox_by_subscriber ON outbox (subscriber_id);

-- Which address a visitor session remembers (a keyed hash), so leaving or erasing can end
-- every session that names it.
ALTER TABLE sessions ADD COLUMN owner BYTEA;
CREATE INDEX sessions_by_owner ON sessions (owner) WHERE owner IS NOT NULL;

-- Counts per status (and the number who left), still in sixteen slots per status.
ALTER TABLE subscriber_counts ADD COLUMN status TEXT NOT NULL DEFAULT 'confirmed';
ALTER TABLE subscriber_counts DROP CONSTRAINT subscriber_counts_pkey;
ALTER TABLE subscriber_counts ADD PRIMARY KEY (status, slot);
INSERT INTO subscriber_counts (status, slot, n)
SELECT status, s, 0 FROM generate_series(0, 15) AS s, (VALUES ('pending'), ('left')) AS t (status);

-- Statement-level, from transition tables: a bulk insert (an import) adjusts each counter row
-- once per statement rather than once per row, which on PostgreSQL would pile up row versions
-- of the same few rows inside one transaction. Counter rows are locked in one order first, so
-- two bulk statements meeting on them wait for each other instead of deadlocking.
CREATE OR REPLACE FUNCTION subscriber_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM 1 FROM subscriber_counts AS c
        WHERE (c.status, c.slot) IN (SELECT status, id % 16 FROM old_rows)
        ORDER BY c.status, c.slot FOR UPDATE;
        UPDATE subscriber_counts AS c SET n = c.n - d.k
        FROM (SELECT status, id % 16 AS slot, count(*) AS k FROM old_rows GROUP BY 1, 2) AS d
        WHERE c.status = d.status AND c.slot = d.slot;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM 1 FROM subscriber_counts AS c
        WHERE (c.status, c.slot) IN (SELECT status, id % 16 FROM new_rows)
        ORDER BY c.status, c.slot FOR UPDATE;
        UPDATE subscriber_counts AS c SET n = c.n + d.k
        FROM (SELECT status, id % 16 AS slot, count(*) AS k FROM new_rows GROUP BY 1, 2) AS d
        WHERE c.status = d.status AND c.slot = d.slot;
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER subscriber_counts_track ON subscribers;
CREATE TRIGGER subscriber_counts_insert AFTER INSERT ON subscribers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION subscriber_counts_track();
CREATE TRIGGER subscriber_counts_delete AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION subscriber_counts_track();
CREATE TRIGGER subscriber_counts_update AFTER UPDATE ON subscribers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscriber_counts_track();

CREATE FUNCTION suppressions_count_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE subscriber_counts SET n = n + (SELECT count(*) FROM new_rows)
        WHERE status = 'left' AND slot = 0;
    ELSE
        UPDATE subscriber_counts SET n = n - (SELECT count(*) FROM old_rows)
        WHERE status = 'left' AND slot = 0;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER suppressions_count_insert AFTER INSERT ON suppressions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION suppressions_count_track();
CREATE TRIGGER suppressions_count_delete AFTER DELETE ON suppressions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION suppressions_count_track();
