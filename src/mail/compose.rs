//! Turning a queued mail into the message that goes out: its words from overridable templates
//! (`confirmation.txt`/`.html`, `welcome.txt`/`.html`; the first line of the text template is
//! `Subject: …`), its links signed for this recipient, and the headers a list mail carries.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use serde::Serialize;
use url::Url;

use crate::domain::SubscriberEmail;
use crate::security::Links;
use crate::store::QueuedMail;
use crate::web::Templates;

/// What every mail template receives.
#[derive(Serialize)]
struct MailContext<'a> {
    list_name: &'a str,
    email: &'a str,
    public_url: &'a str,
    unsubscribe_url: &'a str,
    /// Only in confirmation mails.
    confirm_url: Option<&'a str>,
}

/// A message ready for the transport.
pub struct Composed {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
}

pub struct Composer {
    templates: Arc<Templates>,
    links: Links,
    from: Mailbox,
    list_name: String,
    public_url: Url,
}

impl Composer {
    pub fn new(
        templates: Arc<Templates>,
        links: Links,
        from: Mailbox,
        list_name: String,
        public_url: Url,
    ) -> Self {
        Self { templates, links, from, list_name, public_url }
    }

    /// The Message-ID of outbox row `id`, on the public host: the same at every retry (and a
    /// resend after a crash), so receivers can drop a repeat.
    pub fn message_id(&self, id: i64) -> String {
        self.links.message_id(id, self.public_url.host_str().unwrap_or("localhost"))
    }

    pub fn link(&self, path: &str) -> String {
        let base = self.public_url.as_str().trim_end_matches('/');
        format!("{base}{path}")
    }

    pub fn unsubscribe_url(&self, subscriber_id: i64, email_key: &str) -> String {
        self.link(&format!("/u/{}", self.links.unsubscribe_token(subscriber_id, email_key)))
    }

    pub fn confirm_url(&self, confirmation_id: i64, nonce: &[u8]) -> String {
        self.link(&format!("/confirm/{}", self.links.confirm_token(confirmation_id, nonce)))
    }

    /// The `List-Id` value: the list's name and an identifier on the public host (RFC 2919).
    fn list_id(&self) -> String {
        let host = self.public_url.host_str().unwrap_or("localhost");
        let name: String = self
            .list_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let label = name.trim_matches('-');
        let label = if label.is_empty() { "list" } else { label };
        format!("{} <{label}.{host}>", self.list_name.replace(['<', '>', '"'], ""))
    }

    pub fn compose(&self, mail: &QueuedMail) -> anyhow::Result<Composed> {
        let email = SubscriberEmail::parse(&mail.email).context("the stored address")?;
        let unsubscribe_url = self.unsubscribe_url(mail.subscriber_id, &mail.email_key);
        let confirm_url = mail.nonce.as_deref().map(|nonce| self.confirm_url(mail.id, nonce));
        let template = match mail.purpose.as_str() {
            "confirm" => "confirmation",
            "welcome" => "welcome",
            other => return Err(anyhow!("no template for mails of purpose {other:?}")),
        };
        let context = MailContext {
            list_name: &self.list_name,
            email: email.as_str(),
            public_url: self.public_url.as_str(),
            unsubscribe_url: &unsubscribe_url,
            confirm_url: confirm_url.as_deref(),
        };
        let text = self.templates.render(&format!("{template}.txt"), &context)?;
        let (subject, body) = split_subject(&text)?;
        let html_name = format!("{template}.html");
        let html = match self.templates.has(&html_name) {
            true => Some(self.templates.render(&html_name, &context)?),
            false => None,
        };
        let to: Mailbox = email
            .smtp_address()
            .parse()
            .map_err(|e| anyhow!("this address cannot be written in a mail header: {e}"))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .date_now()
            .message_id(Some(self.message_id(mail.id)))
            .raw_header(header("List-Unsubscribe", format!("<{unsubscribe_url}>")))
            .raw_header(header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into()))
            .raw_header(header("List-Id", self.list_id()))
            .raw_header(header("Auto-Submitted", "auto-generated".into()));
        let message = match html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(body, html)),
            None => builder.singlepart(SinglePart::plain(body)),
        }
        .context("building the message")?;
        Ok(Composed { envelope: message.envelope().clone(), bytes: message.formatted() })
    }
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// `Subject: …` on the first line, then the body.
fn split_subject(text: &str) -> anyhow::Result<(String, String)> {
    let text = text.trim_start();
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let subject = first
        .strip_prefix("Subject:")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("a mail template must start with a line \"Subject: …\""))?;
    Ok((subject.to_owned(), rest.trim_start_matches(['\r', '\n']).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::split_subject;

    #[test]
    fn the_subject_is_the_first_line() {
        let (subject, body) = split_subject("Subject: Hello there\n\nBody line\n").unwrap();
        assert_eq!(subject, "Hello there");
        assert_eq!(body, "Body line\n");
        assert!(split_subject("No subject here\nBody").is_err());
        assert!(split_subject("Subject:   \nBody").is_err());
    }
}
