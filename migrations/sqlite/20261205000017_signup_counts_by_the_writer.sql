-- A new row's count in `subscriber_counts` was kept by this trigger. Any trigger on an insert
-- makes SQLite keep a statement journal for the insert, a copy of every page it touches, and
-- that was a tenth of a durable signup's CPU. The writer now adds the rows of a group commit's
-- signups with one statement per status, in the same transaction (`direct.rs`); imports and the
-- owner's adds count their rows in their own statement. Rows written into the file by anything
-- but enlist are not counted (changes, removals and erasures still are, by their triggers).
DROP TRIGGER subscriber_inserted;
