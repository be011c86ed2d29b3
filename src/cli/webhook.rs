//! `enlist webhook add URL [--events …]` / `list` / `remove ID`

use super::{ToolError, open_store};
use crate::config::{Settings, WebhookAction};
use crate::web::admin_time;
use crate::webhooks::{AddRefused, EventSet, add_endpoint};

const INSTEAD: &str = "manage webhooks on the admin page (Webhooks)";

/// Runs the action; what it prints goes to stdout (the secret, or the list).
pub async fn run(settings: &Settings, action: &WebhookAction) -> Result<String, ToolError> {
    // A misspelt event is an error before anything is opened.
    let events = match action {
        WebhookAction::Add { events, .. } => {
            EventSet::parse(events.iter().map(String::as_str)).map_err(anyhow::Error::msg)?
        }
        WebhookAction::List { .. } | WebhookAction::Remove { .. } => EventSet::all(),
    };
    let store = open_store(settings, INSTEAD).await?;
    let outcome = match action {
        WebhookAction::Add { url, .. } => {
            match add_endpoint(store.as_ref(), &settings.webhooks, url, events).await {
                Ok(added) => Ok(format!(
                    "added endpoint {} for {}\nsigning secret (shown this once): {}",
                    added.id,
                    events.names().join(","),
                    added.secret
                )),
                Err(AddRefused::Invalid(reason)) => Err(anyhow::anyhow!("{reason}").into()),
                Err(AddRefused::Store(e)) => Err(anyhow::Error::from(e).into()),
            }
        }
        WebhookAction::List { .. } => match store.endpoints().await {
            Ok(endpoints) => {
                let mut out = String::from("ID\tURL\tEVENTS\tSTATE\tQUEUED\tADDED\n");
                for e in endpoints {
                    let state = match e.disabled_at {
                        Some(at) => format!("disabled {}", admin_time(at)),
                        None => "active".to_owned(),
                    };
                    out.push_str(&format!(
                        "{}\t{}\t{}\t{state}\t{}\t{}\n",
                        e.id,
                        e.url,
                        EventSet::from_bits(e.events).names().join(","),
                        e.queued,
                        admin_time(e.created_at)
                    ));
                }
                Ok(out.trim_end().to_owned())
            }
            Err(e) => Err(anyhow::Error::from(e).into()),
        },
        WebhookAction::Remove { id, .. } => match store.remove_endpoint(*id).await {
            Ok(true) => Ok(format!("removed endpoint {id}")),
            Ok(false) => Err(anyhow::anyhow!("no webhook endpoint {id}").into()),
            Err(e) => Err(anyhow::Error::from(e).into()),
        },
    };
    store.close().await;
    outcome
}
