//! The trigram index, filled in the background (see the migration `search_backlog`): new rows
//! wait in `search_backlog`, and a server moves them into `subscriber_search` a step at a time.

use super::PostgresStore;
use crate::store::{SEARCH_INDEX_STEP, StoreResult};

/// One instance indexes at a time; the others find the lock taken and wait for their next turn.
const INDEXER_LOCK: i64 = 0x656e_6c69_7374_0001;

/// Rows that are being deleted are skipped (their delete takes them out of the backlog), and a
/// row being indexed holds off its delete until the step commits: the delete then cascades to
/// the index, so no address outlives its row there. Locks are taken in the order a delete takes
/// them (the subscriber, then the backlog), so the two never wait for each other in a circle.
const STEP: &str = "
    WITH live AS (
        SELECT s.id, s.email_key || E'\\n' || lower(s.email) AS text
        FROM subscribers AS s
        WHERE s.id IN (SELECT id FROM search_backlog ORDER BY id LIMIT $1)
        FOR KEY SHARE OF s SKIP LOCKED
    ), taken AS (
        DELETE FROM search_backlog AS b USING live WHERE b.id = live.id RETURNING b.id
    )
    INSERT INTO subscriber_search (id, text)
    SELECT live.id, live.text FROM live JOIN taken ON taken.id = live.id
    ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text";

impl PostgresStore {
    pub(super) async fn index_backlog(&self) -> StoreResult<u64> {
        let work = async {
            let mut tx = self.pool.begin().await?;
            let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(INDEXER_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !ours {
                return Ok(0);
            }
            let indexed =
                sqlx::query(STEP).bind(SEARCH_INDEX_STEP).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(indexed)
        };
        self.bounded("indexing new subscribers for search", work).await
    }
}
