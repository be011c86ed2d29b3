-- A new address's confirmation mail is no longer queued in its signup's commit: the outbox row
-- and its index entries were most of what mail on added to a durable signup. The pending row
-- keeps its link's nonce and expiry, and the mail lease turns the pending rows past
-- `confirmations_queued.up_to` into outbox rows in a commit of its own, moving the cursor in
-- that same commit: a crash repeats the step, and no row is turned twice. SQLite has one
-- writer at a time, so ids are taken in commit order and the cursor passes no row that could
-- still appear behind it. Rows from before this migration had their mail queued already.
ALTER TABLE subscribers ADD COLUMN confirm_nonce BLOB;
ALTER TABLE subscribers ADD COLUMN confirm_expires_at INTEGER;
CREATE TABLE confirmations_queued (up_to INTEGER NOT NULL);
INSERT INTO confirmations_queued (up_to)
SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'subscribers'), 0),
           coalesce((SELECT max(id) FROM subscribers), 0));
