//! Handing a finished message to the world: an SMTP relay (plain, STARTTLS or implicit TLS,
//! pooled connections; see `smtp`), or a directory of `.eml` files for trying things out
//! locally.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use lettre::address::Envelope;

use super::smtp::SmtpRelay;
use crate::config::{MailSettings, MailTransportUrl};

/// The longest one message may take, from asking for a connection to the server's answer after
/// the data. lettre's own timeout covers single commands, not a whole exchange.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections kept open to the relay; also how many messages are in flight at once.
pub const CONNECTIONS: u32 = 8;

/// Why a message did not go, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    /// The server refused it for good (a 5xx answer): retrying cannot help.
    pub permanent: bool,
    /// What happened, with the server's answer when there was one.
    pub reason: String,
}

pub enum Mailer {
    Smtp(SmtpRelay),
    Files(PathBuf),
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        match &settings.transport {
            MailTransportUrl::File(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the mail directory {}", dir.display()))?;
                Ok(Self::Files(dir.clone()))
            }
            MailTransportUrl::Smtp { host, port, security, credentials } => {
                Ok(Self::Smtp(SmtpRelay::new(
                    host.clone(),
                    *port,
                    *security,
                    credentials.clone(),
                    settings.ca_pem.as_deref(),
                    COMMAND_TIMEOUT,
                    CONNECTIONS as usize,
                )?))
            }
        }
    }

    /// Sends one message, bounded as a whole by [`SEND_TIMEOUT`].
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
        outbox_id: i64,
    ) -> Result<(), SendFailure> {
        let sending = async {
            match self {
                Self::Smtp(relay) => relay.send(envelope, message).await,
                Self::Files(dir) => write_file(dir, outbox_id, message).await,
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, sending).await {
            Ok(result) => result,
            Err(_) => Err(SendFailure {
                permanent: false,
                reason: format!("no answer within {}s", SEND_TIMEOUT.as_secs()),
            }),
        }
    }
}

/// One file per message, named by its outbox row, written whole or not at all.
async fn write_file(
    dir: &std::path::Path,
    outbox_id: i64,
    message: &[u8],
) -> Result<(), SendFailure> {
    let name = format!("message-{outbox_id}");
    let path = dir.join(format!("{name}.eml"));
    let partial = dir.join(format!(".{name}.eml.partial"));
    let failed = |e: std::io::Error| SendFailure {
        permanent: false,
        reason: format!("writing {}: {e}", path.display()),
    };
    tokio::fs::write(&partial, message).await.map_err(failed)?;
    tokio::fs::rename(&partial, &path).await.map_err(failed)?;
    Ok(())
}
