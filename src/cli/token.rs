//! `enlist token create NAME [--read-only]` / `list` / `revoke NAME`

use super::{ToolError, open_store};
use crate::config::{Settings, TokenAction};
use crate::domain::TokenName;
use crate::web::admin_time;

const INSTEAD: &str = "manage tokens on the admin page (API tokens)";

/// Runs the action; what it prints goes to stdout (the token, or the list).
pub async fn run(settings: &Settings, action: &TokenAction) -> Result<String, ToolError> {
    let store = open_store(settings, INSTEAD).await?;
    let outcome = match action {
        TokenAction::Create { name, read_only, .. } => {
            let name = TokenName::parse(name).map_err(|e| anyhow::anyhow!("{e}"))?;
            match crate::tokens::issue(store.as_ref(), &name, *read_only).await {
                Ok(Some(token)) => Ok(token),
                Ok(None) => Err(anyhow::anyhow!("a token named {} exists", name.as_str()).into()),
                Err(e) => Err(anyhow::Error::from(e).into()),
            }
        }
        TokenAction::List { .. } => match store.tokens().await {
            Ok(tokens) => {
                let mut out = String::from("NAME\tACCESS\tCREATED\tLAST USED\n");
                for token in tokens {
                    let access = if token.read_only { "read-only" } else { "read-write" };
                    let last = token.last_used_at.map_or_else(|| "never".into(), admin_time);
                    out.push_str(&format!(
                        "{}\t{access}\t{}\t{last}\n",
                        token.name,
                        admin_time(token.created_at)
                    ));
                }
                Ok(out.trim_end().to_owned())
            }
            Err(e) => Err(anyhow::Error::from(e).into()),
        },
        TokenAction::Revoke { name, .. } => match store.revoke_token(name.trim()).await {
            Ok(true) => Ok(format!("revoked {}", name.trim())),
            Ok(false) => Err(anyhow::anyhow!("no token named {}", name.trim()).into()),
            Err(e) => Err(anyhow::Error::from(e).into()),
        },
    };
    store.close().await;
    outcome
}
