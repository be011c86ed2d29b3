//! The trigram index, filled in the background (see the migration `search_backlog`): new rows
//! wait in `search_backlog`, and a server moves them into `subscriber_search` a step at a time.

use super::PostgresStore;
use crate::store::{SEARCH_INDEX_STEP, StoreResult};

/// One instance indexes at a time; the others find the lock taken and wait for their next turn.
const INDEXER_LOCK: i64 = 0x656e_6c69_7374_0001;

/// The indexer locks only backlog rows, skipping those a delete holds, so it never waits for a
/// delete; a delete that reaches a row the indexer holds waits for it, and then removes what
/// it wrote (see the migration). Rows deleted before this statement began have left the
/// backlog with them.
const STEP: &str = "
    WITH picked AS (
        SELECT id FROM search_backlog ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
    ), taken AS (
        DELETE FROM search_backlog AS b USING picked WHERE b.id = picked.id RETURNING b.id
    )
    INSERT INTO subscriber_search (id, text)
    SELECT s.id, s.email_key || E'\\n' || lower(s.email)
    FROM subscribers AS s JOIN taken ON taken.id = s.id
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
