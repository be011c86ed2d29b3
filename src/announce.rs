//! Announcements: the one path the admin page, the API and the CLI take to write, preview, test
//! and send a mail to the whole list, and to pause, resume or cancel it. Nothing here sends:
//! sending starts the outbox's announcer, which queues the mails at the list's pace.

use std::sync::Arc;

use serde::Serialize;
use url::Url;

use crate::domain::{AnnouncementAction, AnnouncementState, AnnouncementText, SubscriberEmail};
use crate::mail::{AnnouncementContent, Preview};
use crate::outbox::OutboxBell;
use crate::session::{unix_now, unix_now_ms};
use crate::store::{AnnouncementRecord, FailureGroup, Store, StoreResult};
use crate::web::Templates;

/// What the recipient of a preview is called, in place of a real address.
pub const PREVIEW_RECIPIENT: &str = "subscriber@example.com";

pub struct Announcements {
    pub store: Arc<dyn Store>,
    pub templates: Arc<Templates>,
    pub list_name: String,
    pub public_url: Url,
    /// `None` while mail is off: drafts can be written and previewed, nothing sent.
    pub outbox: Option<OutboxBell>,
}

/// How an action on an announcement went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Nothing to send with (no `--smtp-url`).
    NoMail,
    NotFound,
    /// Not in a state the action applies to (a draft cannot be paused, a send not edited).
    WrongState,
}

/// An announcement with the figures its page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub id: i64,
    pub subject: String,
    pub state: AnnouncementState,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Everyone confirmed when sending started.
    pub audience: i64,
    /// Mails made so far.
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    /// At most this many still to go (fewer if some leave first).
    pub remaining: i64,
    /// Messages a second, on average, pauses not counted.
    pub rate: f64,
    /// Seconds left at that rate, while sending.
    pub eta_secs: Option<i64>,
    /// The mail servers' answers to the failed mails, most common first.
    pub failures: Vec<FailureGroup>,
}

impl Announcements {
    pub fn mail_on(&self) -> bool {
        self.outbox.is_some()
    }

    pub async fn draft(&self, text: &AnnouncementText) -> StoreResult<i64> {
        self.store.create_announcement(text, unix_now()).await
    }

    pub async fn edit(&self, id: i64, text: &AnnouncementText) -> StoreResult<Outcome> {
        if self.store.update_announcement(id, text, unix_now()).await? {
            return Ok(Outcome::Done);
        }
        self.missing_or(id, Outcome::WrongState).await
    }

    pub async fn get(&self, id: i64) -> StoreResult<Option<AnnouncementRecord>> {
        self.store.announcement(id).await
    }

    pub async fn list(&self, limit: u32) -> StoreResult<Vec<AnnouncementRecord>> {
        self.store.announcements(limit).await
    }

    /// The mail as a recipient would see it, with a stand-in address and unsubscribe link.
    pub fn preview(&self, announcement: &AnnouncementRecord) -> anyhow::Result<Preview> {
        let unsubscribe = format!("{}u/…", self.public_url);
        crate::mail::preview(
            &self.templates,
            &self.list_name,
            &self.public_url,
            &AnnouncementContent::from(announcement),
            PREVIEW_RECIPIENT,
            &unsubscribe,
        )
    }

    /// The announcement to `to` alone, marked as a test.
    pub async fn test(&self, id: i64, to: &SubscriberEmail) -> StoreResult<Outcome> {
        let Some(outbox) = &self.outbox else { return Ok(Outcome::NoMail) };
        if !self.store.queue_test_mail(id, to, unix_now()).await? {
            return Ok(Outcome::NotFound);
        }
        outbox.ring();
        Ok(Outcome::Done)
    }

    /// Sends a draft to everyone confirmed now.
    pub async fn send(&self, id: i64) -> StoreResult<Outcome> {
        if self.outbox.is_none() {
            return Ok(Outcome::NoMail);
        }
        if self.store.start_announcement(id, unix_now_ms()).await? {
            return Ok(Outcome::Done);
        }
        self.missing_or(id, Outcome::WrongState).await
    }

    pub async fn act(&self, id: i64, action: AnnouncementAction) -> StoreResult<Outcome> {
        if self.store.change_announcement(id, action, unix_now()).await? {
            return Ok(Outcome::Done);
        }
        self.missing_or(id, Outcome::WrongState).await
    }

    pub async fn progress(&self, id: i64) -> StoreResult<Option<Progress>> {
        let Some(record) = self.store.announcement(id).await? else { return Ok(None) };
        let failures = if record.failed > 0 {
            self.store.announcement_failures(id).await?
        } else {
            Vec::new()
        };
        Ok(Some(progress(&record, failures, unix_now())))
    }

    async fn missing_or(&self, id: i64, otherwise: Outcome) -> StoreResult<Outcome> {
        Ok(match self.store.announcement(id).await? {
            None => Outcome::NotFound,
            Some(_) => otherwise,
        })
    }
}

pub fn progress(record: &AnnouncementRecord, failures: Vec<FailureGroup>, now: i64) -> Progress {
    let rate = record.rate(now);
    let remaining = record.remaining();
    let eta_secs = (record.state == AnnouncementState::Sending && rate > 0.0)
        .then(|| (remaining as f64 / rate).ceil() as i64);
    Progress {
        id: record.id,
        subject: record.subject.clone(),
        state: record.state,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        audience: record.audience,
        queued: record.queued,
        sent: record.sent,
        failed: record.failed,
        remaining,
        rate: (rate * 10.0).round() / 10.0,
        eta_secs,
        failures,
    }
}
