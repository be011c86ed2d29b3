-- Outgoing webhooks. An endpoint's `events` is a bit set: 1 created, 2 confirmed,
-- 4 unsubscribed, 8 deleted, 16 erased. The secret signs deliveries, so it is kept as given
-- out; a copy of the database can sign as this list (keep backups private).
CREATE TABLE webhook_endpoints (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    events          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    disabled_at     INTEGER,
    disabled_reason TEXT
);

-- One row per (event, endpoint) still to deliver, queued by the triggers below in the same
-- commit as the change. The event's facts are copied in: a deleted row cannot be read back.
-- A row leaves once it is delivered or given up; the attempts table keeps the history.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event           TEXT    NOT NULL,
    occurred_at     INTEGER NOT NULL,
    subscriber_id   INTEGER,
    email           TEXT,
    status          TEXT,
    source          TEXT,
    signed_up_at    INTEGER,
    confirmed_at    INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    lease_owner     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id);
CREATE INDEX webhook_deliveries_by_subscriber ON webhook_deliveries (subscriber_id);

-- What each try got, newest kept per endpoint (the admin page shows the last hundred).
CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id INTEGER NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    delivery_id INTEGER NOT NULL,
    event       TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    http_status INTEGER,
    duration_ms INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, id);

-- Why a row is being deleted, set just before the delete by the paths that know
-- ('unsubscribed', 'erased'); any other delete is the owner's.
ALTER TABLE subscribers ADD COLUMN leaving TEXT;

CREATE TRIGGER webhook_created AFTER INSERT ON subscribers
WHEN EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL) BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, subscriber_id, email, status,
                                    source, signed_up_at, confirmed_at, next_attempt_at)
    SELECT e.id, k.event, unixepoch(), new.id, new.email, new.status, new.source, new.created_at,
           new.confirmed_at, unixepoch()
    FROM webhook_endpoints AS e,
         (SELECT 'subscriber.created' AS event, 1 AS bit
          UNION ALL SELECT 'subscriber.confirmed', 2 WHERE new.status = 'confirmed') AS k
    WHERE e.disabled_at IS NULL AND (e.events & k.bit) <> 0
    ORDER BY k.bit, e.id;
END;

CREATE TRIGGER webhook_confirmed AFTER UPDATE OF status ON subscribers
WHEN old.status = 'pending' AND new.status = 'confirmed' BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, subscriber_id, email, status,
                                    source, signed_up_at, confirmed_at, next_attempt_at)
    SELECT e.id, 'subscriber.confirmed', unixepoch(), new.id, new.email, new.status, new.source,
           new.created_at, new.confirmed_at, unixepoch()
    FROM webhook_endpoints AS e
    WHERE e.disabled_at IS NULL AND (e.events & 2) <> 0;
END;

-- An erased address leaves nothing behind: deliveries still queued that carry it go, and the
-- event itself carries the id only.
CREATE TRIGGER webhook_removed AFTER DELETE ON subscribers BEGIN
    DELETE FROM webhook_deliveries WHERE old.leaving = 'erased' AND subscriber_id = old.id;
    INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, subscriber_id, email, status,
                                    source, signed_up_at, confirmed_at, next_attempt_at)
    SELECT e.id, k.event, unixepoch(), old.id, k.email, k.status, k.source, k.signed_up_at,
           k.confirmed_at, unixepoch()
    FROM webhook_endpoints AS e,
         (SELECT CASE old.leaving WHEN 'unsubscribed' THEN 'subscriber.unsubscribed'
                                  WHEN 'erased' THEN 'subscriber.erased'
                                  ELSE 'subscriber.deleted' END AS event,
                 CASE old.leaving WHEN 'unsubscribed' THEN 4 WHEN 'erased' THEN 16 ELSE 8 END AS bit,
                 iif(old.leaving = 'erased', NULL, old.email) AS email,
                 iif(old.leaving = 'erased', NULL, old.status) AS status,
                 iif(old.leaving = 'erased', NULL, old.source) AS source,
                 iif(old.leaving = 'erased', NULL, old.created_at) AS signed_up_at,
                 iif(old.leaving = 'erased', NULL, old.confirmed_at) AS confirmed_at) AS k
    WHERE e.disabled_at IS NULL AND (e.events & k.bit) <> 0;
END;
