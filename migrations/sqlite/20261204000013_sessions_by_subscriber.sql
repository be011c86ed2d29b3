-- A session remembers an address through its subscriber row, whose ids only grow: a burst of
-- signups adds its sessions at the end of this index instead of one random page each (as the
-- keyed hash in `owner` did). `owner` stays for sessions written before; new ones leave it
-- empty, so its partial index is not written.
ALTER TABLE sessions ADD COLUMN subscriber_id INTEGER;
CREATE INDEX sessions_by_subscriber ON sessions (subscriber_id) WHERE subscriber_id IS NOT NULL;

-- A session remembers an address only while its row exists: whatever removes the row makes
-- the sessions that remember it forget it (the two visitor fields of the session module's
-- JSON), and ends those that held nothing else. An admin login in the same session stays.
CREATE TRIGGER subscriber_sessions_forget AFTER DELETE ON subscribers BEGIN
    DELETE FROM sessions WHERE subscriber_id = OLD.id
        AND json_remove(data, '$.visitor_email', '$.awaiting_confirmation') = '{}';
    UPDATE sessions
        SET data = json_remove(data, '$.visitor_email', '$.awaiting_confirmation'),
            subscriber_id = NULL
        WHERE subscriber_id = OLD.id;
END;
