//! SMTP connections, pooled. lettre speaks the protocol; we open the sockets, because lettre's
//! own transport leaves Nagle's algorithm on: it writes a message's closing `.` apart from the
//! body, the relay delays its ACK, and every message then waits 40 ms (lettre PR #1159, merged
//! after 0.11.23). With `TCP_NODELAY` a message to a local relay takes about a millisecond.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::SendFailure;
use crate::config::SmtpSecurity;

/// A pooled connection unused for this long is closed rather than trusted.
const IDLE: Duration = Duration::from_secs(50);

pub struct SmtpRelay {
    host: String,
    port: u16,
    credentials: Option<Credentials>,
    /// For STARTTLS (lettre upgrades the connection).
    tls: Option<TlsParameters>,
    /// For implicit TLS (we wrap the socket before the first byte).
    implicit: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    command_timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    max_idle: usize,
}

impl SmtpRelay {
    pub fn new(
        host: String,
        port: u16,
        security: SmtpSecurity,
        credentials: Option<(String, String)>,
        ca_pem: Option<&[u8]>,
        command_timeout: Duration,
        max_idle: usize,
    ) -> anyhow::Result<Self> {
        let (tls, implicit) = match security {
            SmtpSecurity::Plain => (None, None),
            SmtpSecurity::StartTls => {
                let mut builder = TlsParameters::builder(host.clone());
                if let Some(pem) = ca_pem {
                    let ca = lettre::transport::smtp::client::Certificate::from_pem(pem)
                        .context("reading the SMTP CA file")?;
                    builder = builder.add_root_certificate(ca);
                }
                (Some(builder.build_rustls().context("setting up TLS for SMTP")?), None)
            }
            SmtpSecurity::Implicit => (None, Some(implicit_tls(&host, ca_pem)?)),
        };
        Ok(Self {
            host,
            port,
            credentials: credentials.map(|(user, password)| Credentials::new(user, password)),
            tls,
            implicit,
            command_timeout,
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((connection, since)) = idle.pop() {
            if since.elapsed() < IDLE {
                return Some(connection);
            }
        }
        None
    }

    fn give_back(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((connection, Instant::now()));
        }
    }

    /// Sends one message over a pooled connection, or a new one. A pooled connection the relay
    /// has closed in the meantime is only discovered by using it: then once more on a fresh one.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendFailure> {
        if let Some(mut pooled) = self.take_idle() {
            match pooled.send(envelope, message).await {
                Ok(_) => {
                    self.give_back(pooled);
                    return Ok(());
                }
                // The relay answered: that answer stands.
                Err(e) if e.is_response() || e.is_permanent() || e.is_transient() => {
                    self.recycle(pooled).await;
                    return Err(classify(e));
                }
                Err(_) => pooled.abort().await,
            }
        }
        let mut fresh = self.connect().await?;
        let sent = fresh.send(envelope, message).await;
        self.recycle(fresh).await;
        sent.map(|_| ()).map_err(classify)
    }

    /// After an answer, a connection that lettre did not mark broken can carry the next mail.
    async fn recycle(&self, mut connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            connection.abort().await;
        } else {
            self.give_back(connection);
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendFailure> {
        let hello = ClientId::default();
        let address = (self.host.as_str(), self.port);
        let tcp = tokio::time::timeout(self.command_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                unreachable(format!("connecting to {}:{} timed out", self.host, self.port))
            })?
            .map_err(|e| unreachable(format!("connecting to {}:{}: {e}", self.host, self.port)))?;
        tcp.set_nodelay(true).map_err(|e| unreachable(e.to_string()))?;
        let mut connection = match &self.implicit {
            Some((connector, name)) => {
                let secured = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| unreachable(format!("TLS with {}: {e}", self.host)))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(Tls(secured)), &hello).await
            }
            None => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello).await,
        }
        .map_err(classify)?;
        if let Some(tls) = &self.tls {
            // Required, not opportunistic: no credentials or mail over a plain connection.
            if !connection.can_starttls() {
                connection.abort().await;
                return Err(unreachable(format!("{} does not offer STARTTLS", self.host)));
            }
            connection.starttls(tls.clone(), &hello).await.map_err(classify)?;
        }
        if let Some(credentials) = &self.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await.map_err(classify)?;
        }
        Ok(connection)
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

/// A failure before the relay said anything: worth another try.
fn unreachable(reason: String) -> SendFailure {
    SendFailure { permanent: false, reason }
}

fn implicit_tls(
    host: &str,
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = ca_pem {
        for certificate in CertificateDer::pem_slice_iter(pem) {
            roots
                .add(certificate.context("reading the SMTP CA file")?)
                .context("adding the SMTP CA")?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a name TLS can check"))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// A TLS stream lettre can speak SMTP over.
struct Tls(TlsStream<TcpStream>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl AsyncTokioStream for Tls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
