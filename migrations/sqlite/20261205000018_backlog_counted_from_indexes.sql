-- The backlog gauge (`/metrics`) counted the confirmations and webhook events waiting in their
-- rows one by one, through the views that queue them: after an 8 s burst of signups a scrape
-- took 0.1 s of a core, while visitors were still arriving. These views count the same rows
-- from ranges: of the pending index, of an index of the pending rows that carry no link (rows
-- imported pending, refused requests: few, and no entry for a signup), and of the primary key.
CREATE INDEX subscribers_pending_without_link ON subscribers (id)
WHERE status = 'pending' AND confirm_nonce IS NULL;

-- What `confirmations_unqueued` holds: its size, and its first row's time.
CREATE VIEW confirmations_waiting AS
SELECT (SELECT count(*) FROM subscribers INDEXED BY subscribers_pending
        WHERE status = 'pending' AND id > q.up_to)
     - (SELECT count(*) FROM subscribers INDEXED BY subscribers_pending_without_link
        WHERE status = 'pending' AND confirm_nonce IS NULL AND id > q.up_to) AS n,
       (SELECT created_at FROM confirmations_unqueued ORDER BY id LIMIT 1) AS oldest
FROM confirmations_queued AS q;

-- What `created_events_unqueued` holds for each endpoint. A row past the cursor is as it was
-- inserted (`created_events_from_rows`), pending or confirmed: the confirmed ones are the rows
-- past it less the pending ones.
CREATE VIEW created_events_waiting AS
WITH past AS MATERIALIZED (
    SELECT (SELECT count(*) FROM subscribers WHERE id > q.up_to) AS rows,
           (SELECT count(*) FROM subscribers INDEXED BY subscribers_pending
            WHERE status = 'pending' AND id > q.up_to) AS pending
    FROM created_events_queued AS q)
SELECT e.id AS endpoint_id,
       iif(e.events & 1 <> 0, past.rows, 0) + iif(e.events & 2 <> 0, past.rows - past.pending, 0)
           AS n
FROM webhook_endpoints AS e CROSS JOIN past
WHERE e.disabled_at IS NULL;
