//! The owner's tools in PostgreSQL: several rows at once, and the API's tokens.

use super::PostgresStore;
use crate::domain::SubscriberStatus;
use crate::store::records::RECORD_COLUMNS;
use crate::store::{NewToken, Selection, StoreResult, SubscriberRecord, TokenRecord};

/// The rows of a selection: what the search matches (as the short search of the admin list
/// does, which for any term is what the trigram index finds too), up to an id.
macro_rules! selection_where {
    () => {
        "id <= $1 AND ($2::TEXT IS NULL OR status = $2)
         AND ($3::TEXT IS NULL OR strpos(email_key, $3) > 0 OR strpos(email, $3) > 0)"
    };
}

/// Rows a large delete removes per statement, each well inside the statement timeout.
const REMOVE_STEP: i64 = 5_000;
const TOKEN_COLUMNS: &str = "id, name, read_only, created_at, last_used_at";

impl PostgresStore {
    pub(super) async fn record_by_key(&self, key: &str) -> StoreResult<Option<SubscriberRecord>> {
        let select = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM subscribers WHERE email_key = $1"
        )))
        .bind(key)
        .fetch_optional(&self.pool);
        self.bounded("reading a subscriber", select).await
    }

    pub(super) async fn remove_ids(&self, ids: &[i64]) -> StoreResult<u64> {
        let delete =
            sqlx::query("DELETE FROM subscribers WHERE id = ANY($1)").bind(ids).execute(&self.pool);
        Ok(self.bounded("removing subscribers", delete).await?.rows_affected())
    }

    pub(super) async fn count_in(&self, selection: Selection<'_>) -> StoreResult<u64> {
        let (term, status) = parts(selection);
        let count = sqlx::query_scalar(concat!(
            "SELECT count(*) FROM subscribers WHERE ",
            selection_where!()
        ))
        .bind(selection.up_to_id)
        .bind(status)
        .bind(term)
        .fetch_one(&self.pool);
        let n: i64 = self.bounded("counting a selection", count).await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    pub(super) async fn remove_in(&self, selection: Selection<'_>) -> StoreResult<u64> {
        let (term, status) = parts(selection);
        let mut removed = 0;
        loop {
            let delete = sqlx::query(concat!(
                "DELETE FROM subscribers WHERE id IN (SELECT id FROM subscribers WHERE ",
                selection_where!(),
                " ORDER BY id DESC LIMIT $4)"
            ))
            .bind(selection.up_to_id)
            .bind(status)
            .bind(term)
            .bind(REMOVE_STEP)
            .execute(&self.pool);
            let step = self.bounded("removing subscribers", delete).await?.rows_affected();
            removed += step;
            if step < REMOVE_STEP.unsigned_abs() {
                return Ok(removed);
            }
        }
    }

    pub(super) async fn insert_token(&self, token: NewToken<'_>) -> StoreResult<bool> {
        let insert = sqlx::query(
            "INSERT INTO api_tokens (name, token_hash, read_only, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(token.name)
        .bind(&token.hash[..])
        .bind(token.read_only)
        .bind(token.now)
        .execute(&self.pool);
        Ok(self.bounded("creating a token", insert).await?.rows_affected() == 1)
    }

    pub(super) async fn all_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let select = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name"
        )))
        .fetch_all(&self.pool);
        self.bounded("listing tokens", select).await
    }

    pub(super) async fn delete_token(&self, name: &str) -> StoreResult<bool> {
        let delete =
            sqlx::query("DELETE FROM api_tokens WHERE name = $1").bind(name).execute(&self.pool);
        Ok(self.bounded("revoking a token", delete).await?.rows_affected() == 1)
    }

    pub(super) async fn find_token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        let select = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1"
        )))
        .bind(&hash[..])
        .fetch_optional(&self.pool);
        self.bounded("checking a token", select).await
    }

    pub(super) async fn mark_token_used(&self, id: i64, now: i64) -> StoreResult<()> {
        let update = sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool);
        self.bounded("recording a token's use", update).await?;
        Ok(())
    }
}

fn parts(selection: Selection<'_>) -> (Option<&str>, Option<&'static str>) {
    (
        selection.filter.search.map(|term| term.as_str()),
        selection.filter.status.map(SubscriberStatus::as_str),
    )
}
