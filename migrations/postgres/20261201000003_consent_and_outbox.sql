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

CREATE OR REPLACE FUNCTION subscriber_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE subscriber_counts SET n = n + 1 WHERE status = NEW.status AND slot = NEW.id % 16;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE subscriber_counts SET n = n - 1 WHERE status = OLD.status AND slot = OLD.id % 16;
    ELSIF OLD.status <> NEW.status THEN
        UPDATE subscriber_counts SET n = n - 1 WHERE status = OLD.status AND slot = OLD.id % 16;
        UPDATE subscriber_counts SET n = n + 1 WHERE status = NEW.status AND slot = NEW.id % 16;
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER subscriber_counts_track ON subscribers;
CREATE TRIGGER subscriber_counts_track AFTER INSERT OR DELETE OR UPDATE OF status ON subscribers
    FOR EACH ROW EXECUTE FUNCTION subscriber_counts_track();

CREATE FUNCTION suppressions_count_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE subscriber_counts SET n = n + 1
        WHERE status = 'left' AND slot = get_byte(NEW.address_hash, 0) % 16;
    ELSE
        UPDATE subscriber_counts SET n = n - 1
        WHERE status = 'left' AND slot = get_byte(OLD.address_hash, 0) % 16;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER suppressions_count_track AFTER INSERT OR DELETE ON suppressions
    FOR EACH ROW EXECUTE FUNCTION suppressions_count_track();
