//! `enlist announce --subject S --body-file F [--test ADDRESS] [--yes]`: the admin page's
//! announcement from a script. It queues; a running server sends, at its --mail-rate.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;

use super::{ToolError, open_store};
use crate::announce::{Announcements, Outcome};
use crate::config::{AnnounceArgs, SettingError, Settings};
use crate::domain::{AnnouncementText, SubscriberEmail, announcement};
use crate::outbox::OutboxBell;
use crate::web::Templates;

const INSTEAD: &str = "send announcements from the admin page (Announcements) or the API (POST /api/v1/announcements)";

/// Queues the announcement (or its test); returns the line that says what happened.
pub async fn run(settings: &Settings, args: &AnnounceArgs) -> Result<String, ToolError> {
    if settings.mail.is_none() {
        return Err(SettingError::new(
            "--smtp-url (ENLIST_SMTP_URL)",
            "announcements are mail: set --smtp-url and --mail-from as the server has them",
        )
        .into());
    }
    let body = read_body(args)?;
    let text = AnnouncementText::parse(&args.subject, &body).map_err(anyhow::Error::msg)?;
    let test_to = match &args.test {
        Some(raw) => {
            Some(SubscriberEmail::parse(raw).map_err(|e| anyhow::anyhow!("--test {raw}: {e}"))?)
        }
        None => None,
    };
    let templates = Templates::load(settings.templates_dir.as_deref(), &settings.list_name)
        .context("loading the templates")?;
    let store = open_store(settings, INSTEAD).await?;
    let announcements = Announcements {
        store: store.clone(),
        templates: Arc::new(templates),
        list_name: settings.list_name.clone(),
        public_url: settings.public_url.clone().unwrap_or_else(|| {
            url::Url::parse(&format!("http://{}", settings.bind)).expect("a socket address URL")
        }),
        // The server's outbox finds queued mail on its own within a second.
        outbox: Some(OutboxBell::default()),
    };
    let done = queue(&announcements, &text, test_to.as_ref(), args.yes).await;
    store.close().await;
    done
}

async fn queue(
    announcements: &Announcements,
    text: &AnnouncementText,
    test_to: Option<&SubscriberEmail>,
    yes: bool,
) -> Result<String, ToolError> {
    if let Some(to) = test_to {
        let id = announcements.draft(text).await.map_err(|e| e.0)?;
        expect_done(announcements.test(id, to).await.map_err(|e| e.0)?)?;
        return Ok(format!(
            "announce: a test of announcement {id} is queued for {to} alone; a running server \
             sends it. The draft is on the admin page."
        ));
    }
    let audience = announcements.store.counts().await.map_err(|e| e.0)?.confirmed;
    if !yes && !confirmed_at_terminal(text.subject(), audience)? {
        return Err(anyhow::anyhow!(
            "not sent: confirm at a terminal, or add --yes ({audience} confirmed subscribers \
             would receive it)"
        )
        .into());
    }
    let id = announcements.draft(text).await.map_err(|e| e.0)?;
    expect_done(announcements.send(id).await.map_err(|e| e.0)?)?;
    Ok(format!(
        "announce: announcement {id} is sending to {audience} confirmed subscribers; a running \
         server sends it. Progress: {}admin/announcements/{id} or GET /api/v1/announcements/{id}",
        announcements.public_url
    ))
}

fn expect_done(outcome: Outcome) -> Result<(), ToolError> {
    match outcome {
        Outcome::Done => Ok(()),
        other => Err(anyhow::anyhow!("the announcement could not be queued ({other:?})").into()),
    }
}

fn read_body(args: &AnnounceArgs) -> Result<String, ToolError> {
    let path = &args.body_file;
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if size.len() > announcement::MAX_BODY_BYTES as u64 {
        return Err(anyhow::anyhow!(
            "{} is larger than an announcement may be ({} KiB)",
            path.display(),
            announcement::MAX_BODY_BYTES / 1024
        )
        .into());
    }
    let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let body = String::from_utf8(body)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
    Ok(body.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(body))
}

/// Asks at the terminal; no terminal means no.
fn confirmed_at_terminal(subject: &str, audience: u64) -> Result<bool, ToolError> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("Send \u{201c}{subject}\u{201d} to {audience} confirmed subscribers? [y/N] ");
    std::io::stderr().flush().context("asking")?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}
