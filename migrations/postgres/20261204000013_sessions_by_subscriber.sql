-- A session remembers an address through its subscriber row, whose ids only grow: a burst of
-- signups adds its sessions at the end of this index instead of one random page each (as the
-- keyed hash in `owner` did). `owner` stays for sessions written before; new ones leave it
-- empty, so its partial index is not written. No foreign key: a session written while its row
-- is being removed must not fail the request.
ALTER TABLE sessions ADD COLUMN subscriber_id BIGINT;
CREATE INDEX sessions_by_subscriber ON sessions (subscriber_id) WHERE subscriber_id IS NOT NULL;

-- A session remembers an address only while its row exists: whatever removes the row makes
-- the sessions that remember it forget it (the two visitor fields of the session module's
-- JSON), and ends those that held nothing else. An admin login in the same session stays.
CREATE FUNCTION subscriber_sessions_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sessions WHERE subscriber_id IN (SELECT id FROM old_rows)
        AND data::jsonb - 'visitor_email' - 'awaiting_confirmation' = '{}'::jsonb;
    UPDATE sessions
        SET data = (data::jsonb - 'visitor_email' - 'awaiting_confirmation')::text,
            subscriber_id = NULL
        WHERE subscriber_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END;
$$;

CREATE TRIGGER subscriber_sessions_forget AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION subscriber_sessions_forget();
