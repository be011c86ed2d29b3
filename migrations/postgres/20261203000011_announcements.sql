-- Announcements: one mail to everyone confirmed on the list. The row is the whole plan. When
-- sending starts, the audience is fixed: rows confirmed by `started_at`, ids up to `last_id`.
-- `cursor` is how far the expander has turned that audience into outbox rows, a batch at a
-- time, so no request and no transaction grows with the list.
CREATE TABLE announcements (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject     TEXT    NOT NULL,
    -- Markdown; the plain-text part as it is, the HTML part rendered from it.
    body        TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'draft'
                CHECK (state IN ('draft', 'sending', 'paused', 'cancelled', 'sent')),
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    started_at  BIGINT,
    last_id     BIGINT,
    audience    BIGINT  NOT NULL DEFAULT 0,
    cursor      BIGINT  NOT NULL DEFAULT 0,
    -- Outbox rows made so far, and what became of them.
    queued      BIGINT  NOT NULL DEFAULT 0,
    sent        BIGINT  NOT NULL DEFAULT 0,
    failed      BIGINT  NOT NULL DEFAULT 0,
    -- How long it was paused, for its figures.
    paused_at   BIGINT,
    paused_secs BIGINT  NOT NULL DEFAULT 0,
    -- The pace's origin (Unix milliseconds): moved on by each pause's length at resume.
    pace_origin_ms BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT
);

ALTER TABLE outbox ADD COLUMN announcement_id BIGINT REFERENCES announcements (id) ON DELETE CASCADE;
-- A test mail goes to an address the admin types, which need not be on the list.
ALTER TABLE outbox ADD COLUMN to_address TEXT;
-- One mail per announcement and subscriber, whatever restarts or instances do.
CREATE UNIQUE INDEX outbox_one_per_recipient ON outbox (announcement_id, subscriber_id)
    WHERE announcement_id IS NOT NULL AND subscriber_id IS NOT NULL;

-- An announcement's mails not sent yet, and those that failed: both few at any time, read on
-- every step of a send and every view of its page.
CREATE INDEX outbox_announcement_waiting ON outbox (announcement_id)
    WHERE status = 'queued' AND announcement_id IS NOT NULL;
CREATE INDEX outbox_announcement_failed ON outbox (announcement_id)
    WHERE status = 'failed' AND announcement_id IS NOT NULL;

-- Statement-level, from transition tables: recording a batch of sent mail adds to each
-- announcement's figures once.
CREATE FUNCTION announcement_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE announcements AS a
    SET sent = a.sent + d.sent, failed = a.failed + d.failed
    FROM (SELECT n.announcement_id,
                 count(*) FILTER (WHERE n.status = 'sent') AS sent,
                 count(*) FILTER (WHERE n.status = 'failed') AS failed
          FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
          WHERE n.announcement_id IS NOT NULL AND n.subscriber_id IS NOT NULL
            AND o.status = 'queued' AND n.status <> 'queued'
          GROUP BY n.announcement_id) AS d
    WHERE a.id = d.announcement_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER announcement_counts AFTER UPDATE ON outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION announcement_counts_track();
