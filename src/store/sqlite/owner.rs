//! The owner's tools in SQLite: several rows at once, and the API's tokens.

use anyhow::Context;

use super::SqliteStore;
use super::ops::{WriteOp, selection_where};
use super::token_cache::TokenLookup;
use crate::domain::SubscriberStatus;
use crate::store::records::RECORD_COLUMNS;
use crate::store::{NewToken, Selection, StoreResult, SubscriberRecord, TokenRecord};

/// Rows a large delete removes per commit, so that signups never wait long behind it.
const REMOVE_STEP: i64 = 5_000;
const TOKEN_COLUMNS: &str = "id, name, read_only, created_at, last_used_at";

impl SqliteStore {
    pub(super) async fn record_by_key(&self, key: &str) -> StoreResult<Option<SubscriberRecord>> {
        let found = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM subscribers WHERE email_key = ?"
        )))
        .bind(key)
        .fetch_optional(&self.readers)
        .await
        .context("reading a subscriber")?;
        Ok(found)
    }

    pub(super) async fn remove_ids(&self, ids: &[i64]) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = serde_json::to_string(ids).context("listing ids")?;
        self.writer.write(WriteOp::RemoveIds { ids }).await
    }

    pub(super) async fn count_in(&self, selection: Selection<'_>) -> StoreResult<u64> {
        let (term, status) = parts(selection);
        let n: i64 = sqlx::query_scalar(concat!(
            "SELECT count(*) FROM subscribers WHERE ",
            selection_where!()
        ))
        .bind(selection.up_to_id)
        .bind(status)
        .bind(term)
        .fetch_one(&self.readers)
        .await
        .context("counting a selection")?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    pub(super) async fn remove_in(&self, selection: Selection<'_>) -> StoreResult<u64> {
        let (term, status) = parts(selection);
        let mut removed = 0;
        loop {
            let op = WriteOp::RemoveMatching {
                term: term.map(str::to_owned),
                status,
                up_to_id: selection.up_to_id,
                limit: REMOVE_STEP,
            };
            let step = self.writer.write(op).await?;
            removed += step;
            if step < REMOVE_STEP.unsigned_abs() {
                return Ok(removed);
            }
        }
    }

    pub(super) async fn insert_token(&self, token: NewToken<'_>) -> StoreResult<bool> {
        let op = WriteOp::CreateToken {
            name: token.name.to_owned(),
            hash: token.hash,
            read_only: token.read_only,
            now: token.now,
        };
        let created = self.writer.write(op).await;
        self.tokens.changed();
        Ok(created? == 1)
    }

    pub(super) async fn all_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let tokens = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name"
        )))
        .fetch_all(&self.readers)
        .await
        .context("listing tokens")?;
        Ok(tokens)
    }

    pub(super) async fn delete_token(&self, name: &str) -> StoreResult<bool> {
        let revoked = self.writer.write(WriteOp::RevokeToken { name: name.to_owned() }).await;
        self.tokens.changed();
        Ok(revoked? == 1)
    }

    pub(super) async fn find_token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        let read_began = match self.tokens.lookup(hash) {
            TokenLookup::Hit(token) => return Ok(Some(token)),
            TokenLookup::Miss(generation) => generation,
        };
        let token: Option<TokenRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?"
        )))
        .bind(&hash[..])
        .fetch_optional(&self.readers)
        .await
        .context("checking a token")?;
        if let Some(token) = &token {
            self.tokens.fill(hash, token, read_began);
        }
        Ok(token)
    }

    pub(super) async fn mark_token_used(&self, id: i64, now: i64) -> StoreResult<()> {
        self.writer.write(WriteOp::TouchToken { id, now }).await?;
        Ok(())
    }
}

fn parts(selection: Selection<'_>) -> (Option<&str>, Option<&'static str>) {
    (
        selection.filter.search.map(|term| term.as_str()),
        selection.filter.status.map(SubscriberStatus::as_str),
    )
}
