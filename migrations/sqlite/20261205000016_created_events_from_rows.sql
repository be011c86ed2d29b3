-- "A new address's confirmation mail still in its row" was written out in every statement that
-- counts or queues those mails; this view is now the one place that says it.
CREATE VIEW confirmations_unqueued AS
SELECT id, created_at, confirm_nonce, confirm_expires_at FROM subscribers
WHERE status = 'pending' AND confirm_nonce IS NOT NULL
  AND id > (SELECT up_to FROM confirmations_queued);

-- A new row's `subscriber.created` deliveries (and `subscriber.confirmed`, for a row added
-- confirmed) were written by the insert trigger in the signup's own commit, with three index
-- entries each: after the confirmation mail, the rest of what webhooks added to a durable
-- signup. They are now made from the rows themselves, as the confirmations are: moving
-- `created_events_queued.up_to` queues the events of the rows it passes (the trigger below).
-- The webhook lease moves it a claim's worth at a time, in a commit of its own. Anything else
-- a receiver would hear of first moves it to the newest row: a change to or removal of a row
-- past it, an endpoint added or changed, an import. So a row past the cursor is still as it
-- was inserted, its `created` is queued before its own later events, and an endpoint hears of
-- no row added before it. One writer takes ids in commit order, so the cursor passes no row
-- that could still appear behind it; a crash repeats a step, and no row is passed twice.
CREATE TABLE created_events_queued (up_to INTEGER NOT NULL);
INSERT INTO created_events_queued (up_to)
SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'subscribers'), 0),
           coalesce((SELECT max(id) FROM subscribers), 0));

-- The deliveries a row's arrival makes, one per endpoint that wants the event. The joins are
-- fixed in this order (rows by id range, then endpoints): left to choose, the planner built an
-- automatic index over every subscriber for the confirmed events.
CREATE VIEW created_events AS
SELECT e.id AS endpoint_id, k.event, s.created_at AS occurred_at, s.id AS subscriber_id,
       s.email, s.status, s.source, s.created_at AS signed_up_at, s.confirmed_at, k.bit
FROM subscribers AS s
     CROSS JOIN webhook_endpoints AS e
     CROSS JOIN (SELECT 'subscriber.created' AS event, 1 AS bit
                 UNION ALL SELECT 'subscriber.confirmed', 2) AS k
WHERE (k.bit = 1 OR s.status = 'confirmed') AND e.disabled_at IS NULL AND (e.events & k.bit) <> 0;

CREATE VIEW created_events_unqueued AS
SELECT * FROM created_events WHERE subscriber_id > (SELECT up_to FROM created_events_queued);

-- Created events before confirmed ones, each in (row, endpoint) order, which is the order the
-- joins read them in: no sort.
CREATE TRIGGER created_events_queue AFTER UPDATE OF up_to ON created_events_queued
WHEN new.up_to > old.up_to BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, subscriber_id, email, status,
                                    source, signed_up_at, confirmed_at, next_attempt_at)
    SELECT endpoint_id, event, occurred_at, subscriber_id, email, status, source, signed_up_at,
           confirmed_at, occurred_at
    FROM created_events
    WHERE bit = 1 AND subscriber_id > old.up_to AND subscriber_id <= new.up_to
    ORDER BY subscriber_id, endpoint_id;
    INSERT INTO webhook_deliveries (endpoint_id, event, occurred_at, subscriber_id, email, status,
                                    source, signed_up_at, confirmed_at, next_attempt_at)
    SELECT endpoint_id, event, occurred_at, subscriber_id, email, status, source, signed_up_at,
           confirmed_at, occurred_at
    FROM created_events
    WHERE bit = 2 AND subscriber_id > old.up_to AND subscriber_id <= new.up_to
    ORDER BY subscriber_id, endpoint_id;
END;

CREATE TRIGGER created_events_before_change BEFORE UPDATE OF email, status, confirmed_at
ON subscribers WHEN old.id > (SELECT up_to FROM created_events_queued) BEGIN
    UPDATE created_events_queued SET up_to = (SELECT max(id) FROM subscribers);
END;

CREATE TRIGGER created_events_before_removal BEFORE DELETE ON subscribers
WHEN old.id > (SELECT up_to FROM created_events_queued) BEGIN
    UPDATE created_events_queued SET up_to = (SELECT max(id) FROM subscribers);
END;

CREATE TRIGGER created_events_before_new_endpoint BEFORE INSERT ON webhook_endpoints BEGIN
    UPDATE created_events_queued SET up_to = (SELECT max(id) FROM subscribers)
    WHERE up_to < (SELECT max(id) FROM subscribers);
END;

CREATE TRIGGER created_events_before_endpoint_change BEFORE UPDATE OF events, disabled_at
ON webhook_endpoints BEGIN
    UPDATE created_events_queued SET up_to = (SELECT max(id) FROM subscribers)
    WHERE up_to < (SELECT max(id) FROM subscribers);
END;

DROP TRIGGER subscriber_inserted;
CREATE TRIGGER subscriber_inserted AFTER INSERT ON subscribers
WHEN new.source <> 'import' BEGIN
    UPDATE subscriber_counts SET n = n + 1 WHERE status = new.status;
END;
