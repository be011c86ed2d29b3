-- Outgoing webhooks. An endpoint's `events` is a bit set: 1 created, 2 confirmed,
-- 4 unsubscribed, 8 deleted, 16 erased. The secret signs deliveries, so it is kept as given
-- out; a copy of the database can sign as this list (keep backups private).
CREATE TABLE webhook_endpoints (
    id              BIGSERIAL PRIMARY KEY,
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    events          BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    disabled_at     BIGINT,
    disabled_reason TEXT
);

-- One row per (event, endpoint) still to deliver, queued by the triggers below in the same
-- commit as the change. The event's facts are copied in: a deleted row cannot be read back.
-- A row leaves once it is delivered or given up; the attempts table keeps the history.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    endpoint_id     BIGINT  NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event           TEXT    NOT NULL,
    occurred_at     BIGINT  NOT NULL,
    subscriber_id   BIGINT,
    email           TEXT,
    status          TEXT,
    source          TEXT,
    signed_up_at    BIGINT,
    confirmed_at    BIGINT,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    lease_until     BIGINT  NOT NULL DEFAULT 0,
    lease_owner     BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id);
CREATE INDEX webhook_deliveries_by_subscriber ON webhook_deliveries (subscriber_id);

-- What each try got, newest kept per endpoint (the admin page shows the last hundred).
CREATE TABLE webhook_attempts (
    id          BIGSERIAL PRIMARY KEY,
    endpoint_id BIGINT  NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    delivery_id BIGINT  NOT NULL,
    event       TEXT    NOT NULL,
    at          BIGINT  NOT NULL,
    http_status INTEGER,
    duration_ms BIGINT  NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, id);

-- Why a row is being deleted, set just before the delete by the paths that know
-- ('unsubscribed', 'erased'); any other delete is the owner's.
ALTER TABLE subscribers ADD COLUMN leaving TEXT;

-- Statement-level, from transition tables, as the counters: an import queues its events in
-- one statement per batch. With no endpoint, each is one look at an empty table.
CREATE FUNCTION webhook_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_s BIGINT := extract(epoch FROM now())::BIGINT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, subscriber_id, email,
                                        status, source, signed_up_at, confirmed_at, next_attempt_at)
        SELECT e.id, k.event, now_s, r.id, r.email, r.status, r.source, r.created_at,
               r.confirmed_at, now_s
        FROM new_rows AS r
        CROSS JOIN LATERAL (SELECT 'subscriber.created' AS event, 1 AS bit
                            UNION ALL SELECT 'subscriber.confirmed', 2
                            WHERE r.status = 'confirmed') AS k
        JOIN webhook_endpoints AS e ON e.disabled_at IS NULL AND (e.events & k.bit) <> 0
        ORDER BY r.id, k.bit, e.id;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, subscriber_id, email,
                                        status, source, signed_up_at, confirmed_at, next_attempt_at)
        SELECT e.id, 'subscriber.confirmed', now_s, r.id, r.email, r.status, r.source,
               r.created_at, r.confirmed_at, now_s
        FROM new_rows AS r
        JOIN old_rows AS o ON o.id = r.id AND o.status = 'pending' AND r.status = 'confirmed'
        JOIN webhook_endpoints AS e ON e.disabled_at IS NULL AND (e.events & 2) <> 0
        ORDER BY r.id, e.id;
    ELSE
        -- An erased address leaves nothing behind: deliveries still queued that carry it go,
        -- and the event itself carries the id only.
        DELETE FROM webhook_deliveries
        WHERE subscriber_id IN (SELECT id FROM old_rows WHERE leaving = 'erased');
        INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, subscriber_id, email,
                                        status, source, signed_up_at, confirmed_at, next_attempt_at)
        SELECT e.id, k.event, now_s, o.id, k.email, k.status, k.source, k.signed_up_at,
               k.confirmed_at, now_s
        FROM old_rows AS o
        CROSS JOIN LATERAL (
            SELECT CASE o.leaving WHEN 'unsubscribed' THEN 'subscriber.unsubscribed'
                                  WHEN 'erased' THEN 'subscriber.erased'
                                  ELSE 'subscriber.deleted' END AS event,
                   CASE o.leaving WHEN 'unsubscribed' THEN 4 WHEN 'erased' THEN 16 ELSE 8 END AS bit,
                   CASE WHEN o.leaving = 'erased' THEN NULL ELSE o.email END AS email,
                   CASE WHEN o.leaving = 'erased' THEN NULL ELSE o.status END AS status,
                   CASE WHEN o.leaving = 'erased' THEN NULL ELSE o.source END AS source,
                   CASE WHEN o.leaving = 'erased' THEN NULL ELSE o.created_at END AS signed_up_at,
                   CASE WHEN o.leaving = 'erased' THEN NULL ELSE o.confirmed_at END AS confirmed_at
        ) AS k
        JOIN webhook_endpoints AS e ON e.disabled_at IS NULL AND (e.events & k.bit) <> 0
        ORDER BY o.id, e.id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER webhook_events_insert AFTER INSERT ON subscribers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION webhook_events();
CREATE TRIGGER webhook_events_update AFTER UPDATE ON subscribers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_events();
CREATE TRIGGER webhook_events_delete AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhook_events();
