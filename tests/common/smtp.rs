//! A small SMTP server for the tests: real SMTP over TCP on port 0, optionally with STARTTLS
//! under a certificate from a test CA. It captures every message it accepts, and can be told to
//! refuse connections, stall, or answer 4xx or 5xx, to see what the outbox does about it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How the server treats the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    Accept,
    /// Accept the connection and close it at once, as a relay that is down.
    Refuse,
    /// Accept and never say a word.
    Stall,
    /// `451` after the data: try again later.
    Transient,
    /// `550` after the data: never.
    Permanent,
}

/// One message as it arrived.
#[derive(Debug, Clone)]
pub struct Captured {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
    /// The connection had been upgraded with STARTTLS.
    pub over_tls: bool,
}

impl Captured {
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(&self.data).expect("a MIME message")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        let parsed = self.parsed();
        parsed.header_raw(name).map(|v| v.trim().to_owned())
    }

    pub fn text(&self) -> String {
        self.parsed().body_text(0).map(|t| t.into_owned()).unwrap_or_default()
    }

    /// The HTML part, with the entities the templates escape turned back into characters.
    pub fn html(&self) -> Option<String> {
        self.parsed().body_html(0).map(|t| super::unescape(&t))
    }

    /// The first link in the text part that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        let text = self.text();
        let start = text.find(prefix)?;
        let rest = &text[start..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '>').unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    }
}

struct State {
    mode: SmtpMode,
    messages: Vec<Captured>,
    /// Connections seen, in any mode.
    connections: usize,
}

#[derive(Clone)]
pub struct SmtpServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
}

/// A test CA and a certificate for `localhost` signed by it.
pub struct TestCa {
    pub ca_pem: String,
    acceptor: Arc<tokio_rustls::TlsAcceptor>,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "enlist test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("a server key");
        let leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("the server certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .expect("a server TLS config");
        let acceptor = Arc::new(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        Self { ca_pem: ca_cert.pem(), acceptor }
    }
}

impl SmtpServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that offers STARTTLS with the test CA's certificate.
    pub async fn start_tls(ca: &TestCa) -> Self {
        Self::start_with(Some(ca.acceptor.clone())).await
    }

    async fn start_with(tls: Option<Arc<tokio_rustls::TlsAcceptor>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the SMTP server");
        let port = listener.local_addr().expect("address").port();
        let server = Self {
            port,
            state: Arc::new(Mutex::new(State {
                mode: SmtpMode::Accept,
                messages: Vec::new(),
                connections: 0,
            })),
            arrived: Arc::new(Notify::new()),
            tls,
        };
        let serving = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let session = serving.clone();
                tokio::spawn(async move { session.serve(stream).await });
            }
        });
        server
    }

    /// `smtp://127.0.0.1:PORT`, for `--smtp-url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: SmtpMode) {
        self.state.lock().unwrap().mode = mode;
    }

    pub fn messages(&self) -> Vec<Captured> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Waits until at least `count` messages have arrived (at most `within`), then returns all.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Captured> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "expected {count} messages within {within:?}, got {}",
                messages.len()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// The messages to one recipient.
    pub fn to(&self, address: &str) -> Vec<Captured> {
        self.messages().into_iter().filter(|m| m.to.iter().any(|t| t == address)).collect()
    }

    async fn serve(&self, stream: TcpStream) {
        let mode = {
            let mut state = self.state.lock().unwrap();
            state.connections += 1;
            state.mode
        };
        match mode {
            SmtpMode::Refuse => return,
            SmtpMode::Stall => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                return;
            }
            _ => {}
        }
        let mut stream: Box<dyn Stream> = Box::new(stream);
        let mut over_tls = false;
        loop {
            match self.conversation(stream, over_tls).await {
                Some(Upgrade(plain)) => {
                    let Some(acceptor) = &self.tls else { return };
                    let Ok(secured) = acceptor.accept(plain).await else { return };
                    stream = Box::new(secured);
                    over_tls = true;
                }
                None => return,
            }
        }
    }

    /// Speaks SMTP until QUIT or a broken connection, or until STARTTLS asks for an upgrade.
    async fn conversation(&self, stream: Box<dyn Stream>, over_tls: bool) -> Option<Upgrade> {
        let mut reader = BufReader::new(stream);
        if !over_tls && reply(&mut reader, "220 localhost test SMTP\r\n").await.is_err() {
            return None;
        }
        let mut from = String::new();
        let mut to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            // A relay going down drops the connections it has, pooled ones included.
            if self.state.lock().unwrap().mode == SmtpMode::Refuse {
                return None;
            }
            let command = line.trim_end().to_owned();
            let upper = command.to_ascii_uppercase();
            let answer: String = if upper.starts_with("EHLO") {
                let starttls =
                    if self.tls.is_some() && !over_tls { "250-STARTTLS\r\n" } else { "" };
                format!("250-localhost\r\n{starttls}250-8BITMIME\r\n250-SMTPUTF8\r\n250 OK\r\n")
            } else if upper.starts_with("HELO") || upper == "NOOP" || upper == "RSET" {
                if upper == "RSET" {
                    from.clear();
                    to.clear();
                }
                "250 OK\r\n".into()
            } else if upper == "STARTTLS" && self.tls.is_some() && !over_tls {
                let _ = reply(&mut reader, "220 go ahead\r\n").await;
                return Some(Upgrade(reader.into_inner()));
            } else if upper.starts_with("MAIL FROM:") {
                from = address_in(&command);
                to.clear();
                "250 OK\r\n".into()
            } else if upper.starts_with("RCPT TO:") {
                to.push(address_in(&command));
                "250 OK\r\n".into()
            } else if upper == "DATA" {
                if reply(&mut reader, "354 go on\r\n").await.is_err() {
                    return None;
                }
                let data = read_data(&mut reader).await?;
                let mode = self.state.lock().unwrap().mode;
                match mode {
                    SmtpMode::Transient => "451 4.3.0 try again later\r\n".into(),
                    SmtpMode::Permanent => "550 5.1.1 no such mailbox here\r\n".into(),
                    _ => {
                        let captured =
                            Captured { from: from.clone(), to: to.clone(), data, over_tls };
                        self.state.lock().unwrap().messages.push(captured);
                        self.arrived.notify_waiters();
                        "250 2.0.0 queued\r\n".into()
                    }
                }
            } else if upper == "QUIT" {
                let _ = reply(&mut reader, "221 bye\r\n").await;
                return None;
            } else {
                "502 not implemented\r\n".into()
            };
            if reply(&mut reader, &answer).await.is_err() {
                return None;
            }
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The plain connection, handed back to be wrapped in TLS.
struct Upgrade(Box<dyn Stream>);

async fn reply(stream: &mut BufReader<Box<dyn Stream>>, text: &str) -> std::io::Result<()> {
    let inner = stream.get_mut();
    inner.write_all(text.as_bytes()).await?;
    inner.flush().await
}

fn address_in(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..].find('>').map_or(command.len(), |i| i + start);
    command[start..end].to_owned()
}

/// The message up to the lone dot, with dot-stuffing undone.
async fn read_data(reader: &mut BufReader<Box<dyn Stream>>) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if line == b".\r\n" || line == b".\n" {
            return Some(data);
        }
        let content = if line.starts_with(b"..") { &line[1..] } else { &line[..] };
        data.extend_from_slice(content);
    }
}
