-- Announcements: one mail to everyone confirmed on the list. The row is the whole plan. When
-- sending starts, the audience is fixed: rows confirmed by `started_at`, ids up to `last_id`.
-- `cursor` is how far the expander has turned that audience into outbox rows, a batch at a
-- time, so no request and no transaction grows with the list.
CREATE TABLE announcements (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    subject     TEXT    NOT NULL,
    -- Markdown; the plain-text part as it is, the HTML part rendered from it.
    body        TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'draft'
                CHECK (state IN ('draft', 'sending', 'paused', 'cancelled', 'sent')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    started_at  INTEGER,
    last_id     INTEGER,
    audience    INTEGER NOT NULL DEFAULT 0,
    cursor      INTEGER NOT NULL DEFAULT 0,
    -- Outbox rows made so far, and what became of them.
    queued      INTEGER NOT NULL DEFAULT 0,
    sent        INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    -- How long it was paused, for its figures.
    paused_at   INTEGER,
    paused_secs INTEGER NOT NULL DEFAULT 0,
    -- The pace's origin (Unix milliseconds): moved on by each pause's length at resume.
    pace_origin_ms INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER
);

ALTER TABLE outbox ADD COLUMN announcement_id INTEGER REFERENCES announcements (id) ON DELETE CASCADE;
-- A test mail goes to an address the admin types, which need not be on the list.
ALTER TABLE outbox ADD COLUMN to_address TEXT;
-- One mail per announcement and subscriber, whatever restarts or instances do.
CREATE UNIQUE INDEX outbox_one_per_recipient ON outbox (announcement_id, subscriber_id)
    WHERE announcement_id IS NOT NULL AND subscriber_id IS NOT NULL;

CREATE TRIGGER announcement_counts AFTER UPDATE OF status ON outbox
WHEN new.announcement_id IS NOT NULL AND new.subscriber_id IS NOT NULL
     AND old.status = 'queued' AND new.status <> 'queued' BEGIN
    UPDATE announcements
    SET sent = sent + (new.status = 'sent'), failed = failed + (new.status = 'failed')
    WHERE id = new.announcement_id;
END;

-- An announcement's mails not sent yet, and those that failed: both few at any time, read on
-- every step of a send and every view of its page.
CREATE INDEX outbox_announcement_waiting ON outbox (announcement_id)
    WHERE status = 'queued' AND announcement_id IS NOT NULL;
CREATE INDEX outbox_announcement_failed ON outbox (announcement_id)
    WHERE status = 'failed' AND announcement_id IS NOT NULL;
