//! Every setting in one place: a flag with an environment variable, parsed and checked once at
//! start. A bad value stops the process with a one-line message naming the setting (exit code 2).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use url::Url;

use crate::domain::{AdminPassword, SubscriberStatus};
use crate::security::{PasswordHash, Rate};

#[derive(Debug, Parser)]
#[command(name = "enlist", version, about = "A self-hosted email-list signup service")]
// A flag given twice takes the last value, as most tools do (and as wrapper scripts expect).
#[command(args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (the default).
    Serve(Box<ServeArgs>),
    /// Read a password on stdin and print its argon2id PHC string.
    HashPassword,
    /// Write the list as CSV (email,status,signed_up_at,confirmed_at,source), newest first.
    Export(Box<ExportArgs>),
    /// Add the addresses of a CSV file (the column headed email, e-mail or mail, else the first).
    Import(Box<ImportArgs>),
    /// Print the JSON API's OpenAPI document (also served at /api/v1/openapi.json).
    Openapi,
    /// Create, list and revoke the JSON API's bearer tokens.
    Token(Box<TokenArgs>),
    /// Write a consistent copy of the SQLite database to FILE, also while a server runs.
    Backup(Box<BackupArgs>),
    /// Add, list and remove webhook endpoints.
    Webhook(Box<WebhookArgs>),
    /// Mail an announcement (Markdown) to everyone confirmed, or a test of it to one address;
    /// a running server sends it at --mail-rate.
    Announce(Box<AnnounceArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct AnnounceArgs {
    /// One line, at most 200 characters.
    #[arg(long)]
    pub subject: String,
    /// The text, in Markdown.
    #[arg(long)]
    pub body_file: PathBuf,
    /// Send only a test, to this address, and keep the announcement as a draft.
    #[arg(long)]
    pub test: Option<String>,
    /// Send without asking (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    #[command(subcommand)]
    pub action: WebhookAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum WebhookAction {
    /// Add an endpoint and print its signing secret (shown this once).
    Add {
        url: String,
        /// Comma-separated events (subscriber.created, subscriber.confirmed,
        /// subscriber.unsubscribed, subscriber.deleted, subscriber.erased); all by default.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// List the endpoints.
    List {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Remove an endpoint (by the id `list` shows), with its queued deliveries.
    Remove {
        id: i64,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

impl WebhookAction {
    pub fn serve_args(&self) -> &ServeArgs {
        match self {
            Self::Add { serve, .. } | Self::List { serve } | Self::Remove { serve, .. } => serve,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Where the copy goes (never overwritten).
    pub file: PathBuf,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it (shown this once; only its hash is kept).
    Create {
        name: String,
        /// May read the list, never change it.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// List the tokens with their last use.
    List {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

impl TokenAction {
    pub fn serve_args(&self) -> &ServeArgs {
        match self {
            Self::Create { serve, .. } | Self::List { serve } | Self::Revoke { serve, .. } => serve,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Write here instead of to stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Only subscribers of this status.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<SubscriberStatus>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// `confirmed`: you vouch that these people consented. `pending`: each gets a confirmation
    /// mail (needs --smtp-url).
    #[arg(long = "as", value_parser = ["confirmed", "pending"], default_value = "confirmed")]
    pub import_as: String,
    /// Count what would happen, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// SQLite reads run on the CPU (the OS keeps the file cached), so readers beyond the cores add
/// only memory: each holds its own page cache and prepared statements, a few MB after searches
/// of a large list. PostgreSQL connections wait on the network and the server, so more help.
fn default_pool_size(database: &DatabaseUrl) -> u32 {
    match database {
        DatabaseUrl::Sqlite(_) => std::thread::available_parallelism()
            .map_or(2, |cores| u32::try_from(cores.get()).unwrap_or(u32::MAX))
            .clamp(2, 1000),
        DatabaseUrl::Postgres(_) => 8,
    }
}

/// Long enough not to be guessed, and sendable in a header as it is.
fn parse_metrics_token(raw: &str) -> Result<String, String> {
    if raw.len() < 16 || !raw.chars().all(|c| c.is_ascii_graphic()) {
        return Err("expected at least 16 printable ASCII characters, no spaces".into());
    }
    Ok(raw.to_owned())
}

fn parse_status(raw: &str) -> Result<SubscriberStatus, String> {
    SubscriberStatus::parse(raw).ok_or_else(|| "expected pending or confirmed".into())
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "ENLIST_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Where the list lives: a SQLite file (created if missing) or a PostgreSQL database
    /// (postgres://user:password@host/dbname), which several instances can share.
    #[arg(long, env = "ENLIST_DATABASE_URL", default_value = "sqlite://enlist.db",
          value_parser = DatabaseUrl::parse)]
    pub database_url: DatabaseUrl,
    /// Secret key file (created with 64 random bytes on first start). Default: `enlist.key`
    /// beside the SQLite file.
    #[arg(long, env = "ENLIST_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// The admin password as an argon2id PHC string (see `enlist hash-password`).
    #[arg(long, env = "ENLIST_ADMIN_PASSWORD_HASH", hide_env_values = true)]
    pub admin_password_hash: Option<String>,
    /// The address visitors use, e.g. https://list.example.com. Default: http:// + bind address.
    #[arg(long, env = "ENLIST_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<Url>,
    /// Comma-separated origins (https://www.example.org) whose pages may post the signup form
    /// and call `POST /api/v1/signup` from a browser; nothing else opens to them.
    #[arg(long, env = "ENLIST_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<Origin>,
    /// An admin session ends after this long without a request.
    #[arg(long, env = "ENLIST_ADMIN_IDLE_TIMEOUT", default_value = "30m",
          value_parser = parse_positive_duration)]
    pub admin_idle_timeout: Duration,
    /// An admin session ends this long after login, however active.
    #[arg(long, env = "ENLIST_ADMIN_ABSOLUTE_TIMEOUT", default_value = "12h",
          value_parser = parse_positive_duration)]
    pub admin_absolute_timeout: Duration,
    /// How long a visitor stays remembered after their last change.
    #[arg(long, env = "ENLIST_VISITOR_SESSION_TTL", default_value = "365d",
          value_parser = parse_positive_duration)]
    pub visitor_session_ttl: Duration,
    /// A directory whose templates replace the built-in ones of the same name.
    #[arg(long, env = "ENLIST_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,
    /// Database connections: PostgreSQL pool size (default 8), or SQLite read connections
    /// (default: one per CPU core, at least 2).
    #[arg(long, env = "ENLIST_DATABASE_POOL_SIZE",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: Option<u32>,
    /// How long a request waits for a database connection before answering 503.
    #[arg(long, env = "ENLIST_DATABASE_CONNECT_TIMEOUT", default_value = "5s",
          value_parser = parse_positive_duration)]
    pub database_connect_timeout: Duration,
    /// The longest a single statement may run (PostgreSQL `statement_timeout`; SQLite's busy
    /// timeout) before the request answers 503.
    #[arg(long, env = "ENLIST_DATABASE_STATEMENT_TIMEOUT", default_value = "5s",
          value_parser = parse_positive_duration)]
    pub database_statement_timeout: Duration,
    /// Comma-separated proxy addresses or CIDRs (e.g. 10.0.0.0/8,127.0.0.1) whose
    /// X-Forwarded-For / Forwarded headers name the real client.
    #[arg(long, env = "ENLIST_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<IpNet>,
    /// A bearer token `/metrics` asks for (then it answers any client that sends it). Without
    /// it, and without --metrics-bind, `/metrics` answers loopback clients only.
    #[arg(long, env = "ENLIST_METRICS_TOKEN", hide_env_values = true, value_parser = parse_metrics_token)]
    pub metrics_token: Option<String>,
    /// Serve `/metrics` on this address and port instead of the main one.
    #[arg(long, env = "ENLIST_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// Signups allowed from one client address: N/PERIOD (a burst of half of N), or 0 for none.
    #[arg(long, env = "ENLIST_SIGNUP_LIMIT_PER_IP", default_value = "10/1m", value_parser = parse_limit)]
    pub signup_limit_per_ip: RateLimit,
    /// Signups of one email address, whoever submits it: N/PERIOD, or 0 for none.
    #[arg(long, env = "ENLIST_SIGNUP_LIMIT_PER_ADDRESS", default_value = "3/1h", value_parser = parse_limit)]
    pub signup_limit_per_address: RateLimit,
    /// Failed admin logins (per client address) before each try must wait longer: N/PERIOD,
    /// or 0 for none.
    #[arg(long, env = "ENLIST_LOGIN_LIMIT", default_value = "5/15m", value_parser = parse_limit)]
    pub login_limit: RateLimit,
    /// Log output format.
    #[arg(long, env = "ENLIST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Where mail goes: smtp://[user:pass@]host[:port] (plain, for a local relay),
    /// smtp+starttls://… (STARTTLS required), smtps://… (implicit TLS), or file:///DIR (one .eml
    /// file per message). Without it there is no mail and signups are single opt-in.
    // Parsed in `Settings::from_args`, so an error never echoes a password in the URL.
    #[arg(long, env = "ENLIST_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// A PEM file with a private CA to trust for the SMTP server, besides the system roots.
    #[arg(long, env = "ENLIST_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// The sender of every mail, e.g. "News <news@example.org>" (required with --smtp-url).
    #[arg(long, env = "ENLIST_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// The list's name, in mails and pages.
    #[arg(long, env = "ENLIST_LIST_NAME", default_value = "our list")]
    pub list_name: String,
    /// How long a confirmation link works.
    #[arg(long, env = "ENLIST_CONFIRM_TTL", default_value = "48h", value_parser = parse_positive_duration)]
    pub confirm_ttl: Duration,
    /// Unconfirmed signups are deleted this long after they were made.
    #[arg(long, env = "ENLIST_PENDING_TTL", default_value = "7d", value_parser = parse_positive_duration)]
    pub pending_ttl: Duration,
    /// Announcements go out at this many messages a second (all instances together); 0 sends
    /// as fast as the mail server accepts them. Confirmation and welcome mails never wait
    /// behind an announcement.
    #[arg(long, env = "ENLIST_MAIL_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub mail_rate: u32,
    /// Publish the subjects and bodies of sent announcements at /archive (never an address).
    #[arg(long, env = "ENLIST_PUBLIC_ARCHIVE")]
    pub public_archive: bool,
    /// Keep the full client address as evidence of consent (default: IPv4 /24, IPv6 /48).
    #[arg(long, env = "ENLIST_KEEP_FULL_IP")]
    pub keep_full_ip: bool,
    /// After a mail server's temporary refusal (or no answer), wait this long before the next
    /// try; the wait doubles each time, up to an hour, for 24 hours.
    #[arg(long, env = "ENLIST_MAIL_RETRY_DELAY", default_value = "30s", value_parser = parse_positive_duration)]
    pub mail_retry_delay: Duration,
    /// Let webhook endpoints use plain http URLs (the body and signature travel unencrypted).
    #[arg(long, env = "ENLIST_WEBHOOKS_ALLOW_HTTP")]
    pub webhooks_allow_http: bool,
    /// Let webhooks reach loopback, private and link-local addresses (a receiver on the same
    /// machine or network). Without it they go to public addresses only.
    #[arg(long, env = "ENLIST_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: bool,
    /// After a failed webhook delivery, wait this long before the next try; the wait doubles
    /// each time, up to an hour, for 24 hours.
    #[arg(long, env = "ENLIST_WEBHOOK_RETRY_DELAY", default_value = "30s", value_parser = parse_positive_duration)]
    pub webhook_retry_delay: Duration,
}

/// Where mail is handed over, as the operator wrote it (credentials never printed).
#[derive(Clone, PartialEq, Eq)]
pub enum MailTransportUrl {
    Smtp {
        host: String,
        port: u16,
        security: SmtpSecurity,
        credentials: Option<(String, String)>,
    },
    /// A directory that receives one `.eml` file per message.
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No encryption: for a relay on the same machine or network.
    Plain,
    /// STARTTLS, required: no credentials or mail cross an unencrypted connection.
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
}

impl std::fmt::Debug for MailTransportUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp { host, port, security, credentials } => f
                .debug_struct("Smtp")
                .field("host", host)
                .field("port", port)
                .field("security", security)
                .field("credentials", &credentials.as_ref().map(|_| "[redacted]"))
                .finish(),
            Self::File(dir) => f.debug_tuple("File").field(dir).finish(),
        }
    }
}

impl MailTransportUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| e.to_string())?;
        let (security, default_port) = match url.scheme() {
            "smtp" => (SmtpSecurity::Plain, 25),
            "smtp+starttls" => (SmtpSecurity::StartTls, 587),
            "smtps" => (SmtpSecurity::Implicit, 465),
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err("a file URL names a local directory: file:///DIR".into());
                }
                let dir = url.to_file_path().map_err(|()| "not a directory path".to_owned())?;
                return Ok(Self::File(dir));
            }
            other => {
                return Err(format!(
                    "unknown scheme {other:?}; expected smtp://, smtp+starttls://, smtps:// or file:///"
                ));
            }
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or("the URL needs a host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| "the user or password is not valid UTF-8".to_owned())
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            (user, password) => Some((decode(user)?, decode(password.unwrap_or_default())?)),
        };
        if credentials.is_some() && security == SmtpSecurity::Plain && !is_loopback_host(&host) {
            return Err("credentials over plain smtp:// would cross the network unencrypted; \
                        use smtp+starttls:// or smtps://"
                .into());
        }
        Ok(Self::Smtp { host, port: url.port().unwrap_or(default_port), security, credentials })
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where data lives.
#[derive(Debug, Clone)]
pub enum DatabaseUrl {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(raw).map_err(|e| e.to_string())?;
            Ok(Self::Postgres(options))
        } else if raw.starts_with("sqlite:") {
            if raw.contains(":memory:") || raw.contains("mode=memory") {
                return Err(
                    "an in-memory database loses every signup at exit; give a file path".into()
                );
            }
            let options = SqliteConnectOptions::from_str(raw).map_err(|e| e.to_string())?;
            Ok(Self::Sqlite(options))
        } else {
            Err("expected sqlite://FILE or postgres://USER@HOST/DATABASE".into())
        }
    }

    /// The directory the default key file goes into: beside the SQLite file, else the working
    /// directory.
    fn data_dir(&self) -> PathBuf {
        match self {
            Self::Sqlite(options) => {
                options.get_filename().parent().map(Path::to_path_buf).unwrap_or_default()
            }
            Self::Postgres(_) => PathBuf::new(),
        }
    }
}

fn parse_public_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

/// A web origin as browsers send it in `Origin`: scheme, host and port only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn parse_origin(raw: &str) -> Result<Origin, String> {
    let raw = raw.trim();
    let url = Url::parse(raw).map_err(|e| format!("{raw:?}: {e}"))?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !bare {
        return Err(format!(
            "{raw:?} is not an origin: expected scheme, host and port only, e.g. https://www.example.org"
        ));
    }
    if url.username() != "" || url.password().is_some() {
        return Err(format!("{raw:?} is not an origin: it holds a user name"));
    }
    Ok(Origin(url.origin().ascii_serialization()))
}

/// A limit setting: `Some(rate)`, or `None` when written as `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit(pub Option<Rate>);

fn parse_limit(raw: &str) -> Result<RateLimit, String> {
    Rate::parse(raw).map(RateLimit)
}

/// A network (`10.0.0.0/8`) or a single address (`127.0.0.1`, `::1`).
fn parse_network(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{raw:?} is not an IP address or CIDR network"))
}

fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// Which admin password the operator asked for.
#[derive(Debug, Clone)]
pub enum AdminPasswordSetting {
    Hash(PasswordHash),
    Plain(AdminPassword),
    /// Nothing configured: reuse the stored one, or generate one on first start.
    Unset,
}

/// Checked settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database: DatabaseUrl,
    pub secret_key_file: PathBuf,
    pub admin_password: AdminPasswordSetting,
    pub public_url: Option<Url>,
    pub allowed_origins: Vec<Origin>,
    pub admin_idle_timeout: Duration,
    pub admin_absolute_timeout: Duration,
    pub visitor_session_ttl: Duration,
    pub templates_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    pub database_pool_size: u32,
    pub database_connect_timeout: Duration,
    pub database_statement_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub metrics_token: Option<String>,
    pub metrics_bind: Option<SocketAddr>,
    pub signup_limit_per_ip: Option<Rate>,
    pub signup_limit_per_address: Option<Rate>,
    pub login_limit: Option<Rate>,
    pub list_name: String,
    pub keep_full_ip: bool,
    pub outbox_retry_base: Duration,
    pub webhooks: crate::webhooks::WebhookPolicy,
    /// `None`: no mail, single opt-in.
    pub mail: Option<MailSettings>,
    pub public_archive: bool,
}

/// Everything about mail, present only when mail is configured.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub transport: MailTransportUrl,
    /// The extra CA's PEM text, read and checked at start.
    pub ca_pem: Option<Vec<u8>>,
    pub from: lettre::message::Mailbox,
    pub confirm_ttl: Duration,
    pub pending_ttl: Duration,
    /// Announcement mails a second; 0 for as fast as the server takes them.
    pub rate: u32,
}

/// A setting that cannot be used, named the way the operator wrote it.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {message}")]
pub struct SettingError {
    pub setting: &'static str,
    pub message: String,
}

impl SettingError {
    pub fn new(setting: &'static str, message: impl ToString) -> Self {
        Self { setting, message: message.to_string() }
    }
}

pub const ADMIN_PASSWORD_ENV: &str = "ENLIST_ADMIN_PASSWORD";

impl Settings {
    /// Checks what clap could not check on its own. `admin_password_env` is the value of
    /// `ENLIST_ADMIN_PASSWORD`, which deliberately has no flag (flags show up in `ps`).
    pub fn from_args(
        args: ServeArgs,
        admin_password_env: Option<String>,
    ) -> Result<Self, SettingError> {
        let admin_password = match (args.admin_password_hash, admin_password_env) {
            (Some(_), Some(_)) => {
                return Err(SettingError::new(
                    "--admin-password-hash (ENLIST_ADMIN_PASSWORD_HASH)",
                    format!("set either it or {ADMIN_PASSWORD_ENV}, not both"),
                ));
            }
            (Some(hash), None) => {
                AdminPasswordSetting::Hash(PasswordHash::parse(&hash).map_err(|e| {
                    SettingError::new("--admin-password-hash (ENLIST_ADMIN_PASSWORD_HASH)", e)
                })?)
            }
            (None, Some(plain)) => AdminPasswordSetting::Plain(
                AdminPassword::parse(plain)
                    .map_err(|e| SettingError::new(ADMIN_PASSWORD_ENV, e))?,
            ),
            (None, None) => AdminPasswordSetting::Unset,
        };
        if args.admin_absolute_timeout < args.admin_idle_timeout {
            return Err(SettingError::new(
                "--admin-absolute-timeout (ENLIST_ADMIN_ABSOLUTE_TIMEOUT)",
                "must not be shorter than --admin-idle-timeout",
            ));
        }
        let secret_key_file =
            args.secret_key_file.unwrap_or_else(|| args.database_url.data_dir().join("enlist.key"));
        let mail = match args.smtp_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            None => None,
            Some(raw) => Some(MailSettings {
                transport: MailTransportUrl::parse(raw)
                    .map_err(|e| SettingError::new("--smtp-url (ENLIST_SMTP_URL)", e))?,
                ca_pem: read_ca_file(args.smtp_ca_file.as_deref())?,
                from: parse_mail_from(args.mail_from.as_deref())?,
                confirm_ttl: args.confirm_ttl,
                pending_ttl: args.pending_ttl,
                rate: args.mail_rate,
            }),
        };
        if args.list_name.trim().is_empty() || args.list_name.chars().any(char::is_control) {
            return Err(SettingError::new(
                "--list-name (ENLIST_LIST_NAME)",
                "must be a name: not empty, no control characters",
            ));
        }
        let database_pool_size =
            args.database_pool_size.unwrap_or_else(|| default_pool_size(&args.database_url));
        Ok(Self {
            bind: args.bind,
            database: args.database_url,
            secret_key_file,
            admin_password,
            public_url: args.public_url,
            allowed_origins: args.allowed_origins,
            admin_idle_timeout: args.admin_idle_timeout,
            admin_absolute_timeout: args.admin_absolute_timeout,
            visitor_session_ttl: args.visitor_session_ttl,
            templates_dir: args.templates_dir,
            log_format: args.log_format,
            database_pool_size,
            database_connect_timeout: args.database_connect_timeout,
            database_statement_timeout: args.database_statement_timeout,
            trusted_proxies: args.trusted_proxies,
            metrics_token: args.metrics_token,
            metrics_bind: args.metrics_bind,
            signup_limit_per_ip: args.signup_limit_per_ip.0,
            signup_limit_per_address: args.signup_limit_per_address.0,
            login_limit: args.login_limit.0,
            list_name: args.list_name.trim().to_owned(),
            keep_full_ip: args.keep_full_ip,
            outbox_retry_base: args.mail_retry_delay,
            webhooks: crate::webhooks::WebhookPolicy {
                allow_http: args.webhooks_allow_http,
                allow_private: args.webhooks_allow_private,
                retry_base: args.webhook_retry_delay,
            },
            mail,
            public_archive: args.public_archive,
        })
    }
}

fn read_ca_file(path: Option<&Path>) -> Result<Option<Vec<u8>>, SettingError> {
    const SETTING: &str = "--smtp-ca-file (ENLIST_SMTP_CA_FILE)";
    let Some(path) = path else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .map_err(|e| SettingError::new(SETTING, format!("cannot read {}: {e}", path.display())))?;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certificates {
        Ok(found) if !found.is_empty() => Ok(Some(pem)),
        _ => {
            Err(SettingError::new(SETTING, format!("{} holds no PEM certificate", path.display())))
        }
    }
}

fn parse_mail_from(raw: Option<&str>) -> Result<lettre::message::Mailbox, SettingError> {
    const SETTING: &str = "--mail-from (ENLIST_MAIL_FROM)";
    let raw = raw
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| SettingError::new(SETTING, "required when --smtp-url is set"))?;
    raw.parse().map_err(|e| {
        SettingError::new(SETTING, format!("{e}; expected an address like News <news@example.org>"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["enlist", "serve"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Serve(args)) => *args,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults_put_the_key_beside_the_database() {
        let settings =
            Settings::from_args(args(&["--database-url", "sqlite://data/list.db"]), None).unwrap();
        assert_eq!(settings.secret_key_file, PathBuf::from("data/enlist.key"));
        assert_eq!(settings.admin_idle_timeout, Duration::from_secs(30 * 60));
        assert_eq!(settings.visitor_session_ttl, Duration::from_secs(365 * 24 * 3600));
        let default = Settings::from_args(args(&[]), None).unwrap();
        assert_eq!(default.secret_key_file, PathBuf::from("enlist.key"));
    }

    #[test]
    fn reads_postgres_urls_and_proxy_lists() {
        let settings = Settings::from_args(
            args(&[
                "--database-url",
                "postgresql://enlist:secret@db.internal:5433/list",
                "--trusted-proxies",
                "10.0.0.0/8, 127.0.0.1,::1",
            ]),
            None,
        )
        .unwrap();
        assert!(matches!(settings.database, DatabaseUrl::Postgres(_)));
        assert_eq!(settings.secret_key_file, PathBuf::from("enlist.key"));
        let proxies: Vec<String> =
            settings.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
    }

    #[test]
    fn limits_default_on_and_turn_off_with_zero() {
        let defaults = Settings::from_args(args(&[]), None).unwrap();
        assert_eq!(
            defaults.signup_limit_per_ip,
            Some(Rate { events: 10, period: Duration::from_secs(60) })
        );
        assert_eq!(
            defaults.signup_limit_per_address,
            Some(Rate { events: 3, period: Duration::from_secs(3600) })
        );
        assert_eq!(
            defaults.login_limit,
            Some(Rate { events: 5, period: Duration::from_secs(900) })
        );
        let off = Settings::from_args(
            args(&[
                "--signup-limit-per-ip",
                "0",
                "--signup-limit-per-address",
                "0",
                "--login-limit",
                "0",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            (off.signup_limit_per_ip, off.signup_limit_per_address, off.login_limit),
            (None, None, None)
        );
        // The last of a repeated flag wins.
        let twice =
            Settings::from_args(args(&["--login-limit", "0", "--login-limit", "2/1m"]), None)
                .unwrap();
        assert_eq!(twice.login_limit, Some(Rate { events: 2, period: Duration::from_secs(60) }));
    }

    #[test]
    fn refuses_bad_values_naming_the_setting() {
        for bad in [
            &["--bind", "nowhere"][..],
            &["--database-url", "mysql://x"],
            &["--database-url", "sqlite::memory:"],
            &["--public-url", "ftp://example.com"],
            &["--admin-idle-timeout", "soon"],
            &["--admin-idle-timeout", "0s"],
            &["--trusted-proxies", "10.0.0.0/8,nonsense"],
            &["--database-pool-size", "0"],
            &["--signup-limit-per-ip", "ten"],
            &["--login-limit", "5/never"],
        ] {
            let mut argv = vec!["enlist"];
            argv.extend_from_slice(bad);
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert!(err.to_string().contains(bad[0]), "{err}");
        }
        let short = Settings::from_args(args(&[]), Some("short".into())).unwrap_err();
        assert_eq!(short.setting, ADMIN_PASSWORD_ENV);
        let empty = Settings::from_args(args(&[]), Some(String::new())).unwrap_err();
        assert_eq!(empty.setting, ADMIN_PASSWORD_ENV);
        let hash = Settings::from_args(args(&["--admin-password-hash", "nope"]), None).unwrap_err();
        assert!(hash.setting.starts_with("--admin-password-hash"));
        let order = Settings::from_args(
            args(&["--admin-idle-timeout", "2h", "--admin-absolute-timeout", "1h"]),
            None,
        )
        .unwrap_err();
        assert!(order.setting.starts_with("--admin-absolute-timeout"));
    }
}
