//! Handing a finished message to the world: an SMTP relay (plain, STARTTLS or implicit TLS,
//! pooled connections), or a directory of `.eml` files for trying things out locally.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{MailSettings, MailTransportUrl, SmtpSecurity};

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
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        let (host, port, security, credentials) = match &settings.transport {
            MailTransportUrl::File(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the mail directory {}", dir.display()))?;
                return Ok(Self::Files(dir.clone()));
            }
            MailTransportUrl::Smtp { host, port, security, credentials } => {
                (host, *port, *security, credentials)
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(port)
            .timeout(Some(COMMAND_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(CONNECTIONS));
        if security != SmtpSecurity::Plain {
            let mut tls = TlsParameters::builder(host.clone());
            if let Some(pem) = &settings.ca_pem {
                tls = tls.add_root_certificate(
                    Certificate::from_pem(pem).context("reading the SMTP CA file")?,
                );
            }
            let tls = tls.build_rustls().context("setting up TLS for SMTP")?;
            builder = builder.tls(match security {
                SmtpSecurity::StartTls => Tls::Required(tls),
                _ => Tls::Wrapper(tls),
            });
        }
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self::Smtp(builder.build()))
    }

    /// Sends one message, bounded as a whole by [`SEND_TIMEOUT`].
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
        message_id: &str,
    ) -> Result<(), SendFailure> {
        let sending = async {
            match self {
                Self::Smtp(transport) => {
                    transport.send_raw(envelope, message).await.map(|_| ()).map_err(classify)
                }
                Self::Files(dir) => write_file(dir, message_id, message).await,
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

/// 5xx answers are final; everything else (4xx, refused or dropped connections, timeouts, TLS
/// trouble that an operator may fix) is worth another try.
fn classify(error: SmtpError) -> SendFailure {
    SendFailure { permanent: error.is_permanent(), reason: error_chain(&error) }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One file per message, named by its Message-ID, written whole or not at all.
async fn write_file(
    dir: &std::path::Path,
    message_id: &str,
    message: &[u8],
) -> Result<(), SendFailure> {
    let name: String = message_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
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
