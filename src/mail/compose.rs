//! Turning a queued mail into the message that goes out: its words from overridable templates
//! (`confirmation.txt`/`.html`, `welcome.txt`/`.html`, `announcement.txt`/`.html`; the first
//! line of the text template is `Subject: …`), its links signed for this recipient, and the
//! headers a list mail carries.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use serde::Serialize;
use url::Url;

use super::markdown;
use crate::domain::SubscriberEmail;
use crate::security::Links;
use crate::store::{AnnouncementRecord, QueuedMail};
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

/// What the announcement templates receive: the body as Markdown in the text part, as HTML
/// (raw HTML of the source escaped) in the HTML part.
#[derive(Serialize, Clone, Copy)]
struct AnnouncementContext<'a> {
    list_name: &'a str,
    email: &'a str,
    public_url: &'a str,
    unsubscribe_url: &'a str,
    subject: &'a str,
    body: &'a str,
    /// A test mail: no unsubscribe link of its own.
    test: bool,
}

/// An announcement as its mails need it, rendered once.
#[derive(Debug, Clone)]
pub struct AnnouncementContent {
    pub subject: String,
    pub markdown: String,
    pub html: String,
}

impl From<&AnnouncementRecord> for AnnouncementContent {
    fn from(record: &AnnouncementRecord) -> Self {
        Self {
            subject: record.subject.clone(),
            markdown: record.body.clone(),
            html: markdown::to_html(&record.body),
        }
    }
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

    /// `announcement` is the announcement a mail of purpose `announcement` or `test` carries.
    pub fn compose(
        &self,
        mail: &QueuedMail,
        announcement: Option<&AnnouncementContent>,
    ) -> anyhow::Result<Composed> {
        let email = SubscriberEmail::parse(&mail.email).context("the stored address")?;
        let template = match mail.purpose.as_str() {
            "confirm" => "confirmation",
            "welcome" => "welcome",
            "announcement" | "test" => {
                let announcement =
                    announcement.ok_or_else(|| anyhow!("the announcement is gone"))?;
                return self.compose_announcement(mail, &email, announcement);
            }
            other => return Err(anyhow!("no template for mails of purpose {other:?}")),
        };
        let unsubscribe_url = self.unsubscribe_url(mail.subscriber_id, &mail.email_key);
        let confirm_url = mail.nonce.as_deref().map(|nonce| self.confirm_url(mail.id, nonce));
        let context = MailContext {
            list_name: &self.list_name,
            email: email.as_str(),
            public_url: self.public_url.as_str(),
            unsubscribe_url: &unsubscribe_url,
            confirm_url: confirm_url.as_deref(),
        };
        let text = self.templates.render(&format!("{template}.txt"), &context)?;
        let html_name = format!("{template}.html");
        let html = match self.templates.has(&html_name) {
            true => Some(self.templates.render(&html_name, &context)?),
            false => None,
        };
        let builder = self
            .list_mail(mail.id, &email)?
            .raw_header(header("List-Unsubscribe", format!("<{unsubscribe_url}>")))
            .raw_header(header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into()))
            .raw_header(header("Auto-Submitted", "auto-generated".into()));
        finish(builder, &text, html)
    }

    /// An announcement: one message per recipient, with their own unsubscribe link, marked as
    /// bulk. A test goes to the address the admin typed, without a link to leave (it is no
    /// subscriber's).
    fn compose_announcement(
        &self,
        mail: &QueuedMail,
        email: &SubscriberEmail,
        announcement: &AnnouncementContent,
    ) -> anyhow::Result<Composed> {
        let test = mail.purpose == "test";
        let unsubscribe_url = if test {
            self.public_url.to_string()
        } else {
            self.unsubscribe_url(mail.subscriber_id, &mail.email_key)
        };
        let subject = if test {
            format!("[Test] {}", announcement.subject)
        } else {
            announcement.subject.clone()
        };
        let (text, html) = render_announcement(
            &self.templates,
            AnnouncementContext {
                list_name: &self.list_name,
                email: email.as_str(),
                public_url: self.public_url.as_str(),
                unsubscribe_url: &unsubscribe_url,
                subject: &subject,
                body: &announcement.markdown,
                test,
            },
            &announcement.html,
        )?;
        let mut builder =
            self.list_mail(mail.id, email)?.raw_header(header("Precedence", "bulk".into()));
        if !test {
            builder = builder
                .raw_header(header("List-Unsubscribe", format!("<{unsubscribe_url}>")))
                .raw_header(header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into()));
        }
        finish(builder, &text, html)
    }

    /// The headers every mail from the list carries.
    fn list_mail(
        &self,
        outbox_id: i64,
        to: &SubscriberEmail,
    ) -> anyhow::Result<lettre::message::MessageBuilder> {
        let to: Mailbox = to
            .smtp_address()
            .parse()
            .map_err(|e| anyhow!("this address cannot be written in a mail header: {e}"))?;
        Ok(Message::builder()
            .from(self.from.clone())
            .to(to)
            .date_now()
            .message_id(Some(self.message_id(outbox_id)))
            .raw_header(header("List-Id", self.list_id())))
    }
}

/// The text part (its first line `Subject: …`) and the HTML part, if there is a template for
/// it; `context.body` is the Markdown.
fn render_announcement(
    templates: &Templates,
    context: AnnouncementContext<'_>,
    html_body: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let text = templates.render("announcement.txt", context)?;
    let html = match templates.has("announcement.html") {
        true => Some(
            templates
                .render("announcement.html", AnnouncementContext { body: html_body, ..context })?,
        ),
        false => None,
    };
    Ok((text, html))
}

/// An announcement as a recipient would see it, for the admin's preview.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// `email` and `unsubscribe_url` stand in for a recipient's.
pub fn preview(
    templates: &Templates,
    list_name: &str,
    public_url: &Url,
    content: &AnnouncementContent,
    email: &str,
    unsubscribe_url: &str,
) -> anyhow::Result<Preview> {
    let context = AnnouncementContext {
        list_name,
        email,
        public_url: public_url.as_str(),
        unsubscribe_url,
        subject: &content.subject,
        body: &content.markdown,
        test: false,
    };
    let (text, html) = render_announcement(templates, context, &content.html)?;
    let (subject, text) = split_subject(&text)?;
    Ok(Preview { subject, text, html })
}

/// The subject from the text template's first line, then the parts.
fn finish(
    builder: lettre::message::MessageBuilder,
    text: &str,
    html: Option<String>,
) -> anyhow::Result<Composed> {
    let (subject, body) = split_subject(text)?;
    let builder = builder.subject(subject);
    let message = match html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(body, html)),
        None => builder.singlepart(SinglePart::plain(body)),
    }
    .context("building the message")?;
    Ok(Composed { envelope: message.envelope().clone(), bytes: message.formatted() })
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
