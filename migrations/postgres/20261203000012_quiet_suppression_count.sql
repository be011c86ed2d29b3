-- A statement-level trigger runs even when its statement changed nothing, and every signup and
-- confirmation lifts a suppression that is almost never there (`DELETE FROM suppressions WHERE
-- address_hash = $1`, no row). The old function still updated the one counter row of those who
-- left, so every signup held that row's lock until its commit: signups on every instance took
-- turns on one row. Now the row is only touched when the count changes.
CREATE OR REPLACE FUNCTION suppressions_count_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    change BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO change FROM new_rows;
    ELSE
        SELECT -count(*) INTO change FROM old_rows;
    END IF;
    IF change <> 0 THEN
        UPDATE subscriber_counts SET n = n + change WHERE status = 'left' AND slot = 0;
    END IF;
    RETURN NULL;
END;
$$;
