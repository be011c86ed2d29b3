//! What an announcement is made of, checked once at the edge: a subject that fits in a header
//! and a Markdown body of sensible size, and the states a send goes through.

use std::fmt;

use serde::Serialize;

pub const MAX_SUBJECT_CHARS: usize = 200;
pub const MAX_BODY_BYTES: usize = 100 * 1024;

/// A subject and a body that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncementText {
    subject: String,
    body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementTextError {
    #[error("Please write a subject.")]
    NoSubject,
    #[error("The subject is too long (at most 200 characters).")]
    SubjectTooLong,
    #[error("The subject must be one line, without control characters.")]
    SubjectNotOneLine,
    #[error("Please write something to send.")]
    NoBody,
    #[error("The text is too long (at most 100 KiB).")]
    BodyTooLong,
    #[error("The text contains control characters.")]
    BodyControlCharacter,
}

impl AnnouncementText {
    pub fn parse(subject: &str, body: &str) -> Result<Self, AnnouncementTextError> {
        // Checked before trimming: a line end at either edge is not one line either.
        if subject.chars().any(char::is_control) {
            return Err(AnnouncementTextError::SubjectNotOneLine);
        }
        let subject = subject.trim();
        if subject.is_empty() {
            return Err(AnnouncementTextError::NoSubject);
        }
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(AnnouncementTextError::SubjectTooLong);
        }
        // Line ends as mail wants them are made when the message is built.
        let body = body.replace("\r\n", "\n").replace('\r', "\n");
        if body.trim().is_empty() {
            return Err(AnnouncementTextError::NoBody);
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(AnnouncementTextError::BodyTooLong);
        }
        if body.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(AnnouncementTextError::BodyControlCharacter);
        }
        Ok(Self { subject: subject.to_owned(), body })
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Markdown.
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// Where an announcement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnouncementState {
    /// Written, maybe tested, not sent.
    Draft,
    Sending,
    Paused,
    /// Stopped for good; what was sent stays sent.
    Cancelled,
    /// Everyone in the audience has had their mail (or a final answer).
    Sent,
}

impl AnnouncementState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Sending => "sending",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Sent => "sent",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "draft" => Self::Draft,
            "sending" => Self::Sending,
            "paused" => Self::Paused,
            "cancelled" => Self::Cancelled,
            "sent" => Self::Sent,
            _ => return None,
        })
    }

    /// Whether it has gone out to anyone (or is going): what the public archive shows.
    pub fn was_sent(self) -> bool {
        matches!(self, Self::Sending | Self::Paused | Self::Sent)
    }
}

impl TryFrom<String> for AnnouncementState {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw).ok_or_else(|| format!("unknown announcement state {raw:?}"))
    }
}

impl fmt::Display for AnnouncementState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the owner can do to a send under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnouncementAction {
    Pause,
    Resume,
    Cancel,
}

impl AnnouncementAction {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "cancel" => Self::Cancel,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_and_body_are_checked() {
        let ok = AnnouncementText::parse("  News  ", "Hello\r\n**world**").unwrap();
        assert_eq!(ok.subject(), "News");
        assert_eq!(ok.body(), "Hello\n**world**");
        assert_eq!(AnnouncementText::parse(" ", "x"), Err(AnnouncementTextError::NoSubject));
        assert_eq!(
            AnnouncementText::parse("a\nb", "x"),
            Err(AnnouncementTextError::SubjectNotOneLine)
        );
        assert_eq!(
            AnnouncementText::parse(&"s".repeat(201), "x"),
            Err(AnnouncementTextError::SubjectTooLong)
        );
        assert!(AnnouncementText::parse(&"é".repeat(200), "x").is_ok());
        assert_eq!(AnnouncementText::parse("s", " \n "), Err(AnnouncementTextError::NoBody));
        assert_eq!(
            AnnouncementText::parse("s", &"x".repeat(MAX_BODY_BYTES + 1)),
            Err(AnnouncementTextError::BodyTooLong)
        );
        assert_eq!(
            AnnouncementText::parse("s", "a\u{0}b"),
            Err(AnnouncementTextError::BodyControlCharacter)
        );
        assert!(AnnouncementText::parse("s", "tab\there").is_ok());
        let old_mac = AnnouncementText::parse("s", "one\rtwo").unwrap();
        assert_eq!(old_mac.body(), "one\ntwo");
    }

    #[test]
    fn states_round_trip() {
        for state in [
            AnnouncementState::Draft,
            AnnouncementState::Sending,
            AnnouncementState::Paused,
            AnnouncementState::Cancelled,
            AnnouncementState::Sent,
        ] {
            assert_eq!(AnnouncementState::parse(state.as_str()), Some(state));
        }
        assert_eq!(AnnouncementState::parse("gone"), None);
        assert_eq!(AnnouncementAction::parse("pause"), Some(AnnouncementAction::Pause));
        assert_eq!(AnnouncementAction::parse("stop"), None);
    }
}
