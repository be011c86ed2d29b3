use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use enlist::cli::ToolError;
use enlist::config::{ADMIN_PASSWORD_ENV, Cli, Command, LogFormat, ServeArgs, Settings};
use enlist::domain::AdminPassword;
use enlist::security::hash_password;
use enlist::{Server, StartError, shutdown_signal};
use tracing_subscriber::EnvFilter;

const SETTING_ERROR: u8 = 2;

// Request handling allocates many small short-lived buffers; mimalloc serves them several times
// faster than glibc's malloc under two busy threads, and returns memory to the OS readily.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // SAFETY: the first thing the process does, on its only thread, before SQLite is used.
    if let Err(code) = unsafe { enlist::store::use_global_allocator() } {
        eprintln!("SQLite kept its own allocator (code {code})");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) => {
            // One line naming the setting is what an operator (or a supervisor's log) needs.
            let rendered = e.render().to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("error: invalid setting"));
            return ExitCode::from(SETTING_ERROR);
        }
        Err(e) => e.exit(),
    };
    match cli.command {
        Some(Command::HashPassword) => print_password_hash(),
        Some(Command::Openapi) => {
            println!("{}", enlist::web::api::openapi_json());
            ExitCode::SUCCESS
        }
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Export(args)) => tool(args.serve.clone(), |settings| async move {
            let rows =
                enlist::cli::export::run(&settings, args.output.as_deref(), args.status).await?;
            eprintln!("export: {rows} rows");
            Ok(())
        }),
        Some(Command::Import(args)) => tool(args.serve.clone(), |settings| async move {
            let pending = args.import_as == "pending";
            let report =
                enlist::cli::import::run(&settings, &args.file, pending, args.dry_run).await?;
            for (line, reason) in &report.invalid_lines {
                eprintln!("line {line}: {reason}");
            }
            let unlisted = report.invalid.saturating_sub(report.invalid_lines.len() as u64);
            if unlisted > 0 {
                eprintln!("... and {unlisted} more invalid lines");
            }
            let stopped = match report.stopped_after_line {
                Some(line) => {
                    format!("; stopped after line {line}: run the same file again to finish")
                }
                None => String::new(),
            };
            let verb = if report.dry_run { "would add" } else { "added" };
            eprintln!(
                "import: {} rows: {verb} {}, already on the list {}, suppressed {}, invalid {}{stopped}",
                report.lines,
                report.added,
                report.already_on_the_list,
                report.suppressed,
                report.invalid
            );
            Ok(())
        }),
        Some(Command::Token(args)) => {
            tool(args.action.serve_args().clone(), |settings| async move {
                let printed = enlist::cli::token::run(&settings, &args.action).await?;
                println!("{printed}");
                Ok(())
            })
        }
        Some(Command::Webhook(args)) => {
            tool(args.action.serve_args().clone(), |settings| async move {
                let printed = enlist::cli::webhook::run(&settings, &args.action).await?;
                println!("{printed}");
                Ok(())
            })
        }
        Some(Command::Announce(args)) => tool(args.serve.clone(), |settings| async move {
            let done = enlist::cli::announce::run(&settings, &args).await?;
            eprintln!("{done}");
            Ok(())
        }),
        Some(Command::Backup(args)) => tool(args.serve.clone(), |settings| async move {
            let backup = enlist::cli::backup::run(&settings, &args.file).await?;
            eprintln!(
                "backup: {} ({} bytes, {} subscribers, integrity ok); restore by pointing \
                 --database-url at it, with the same secret key file ({})",
                backup.path.display(),
                backup.bytes,
                backup.subscribers,
                settings.secret_key_file.display()
            );
            Ok(())
        }),
        None => serve(cli.serve),
    }
}

/// Runs a command-line tool on the server's settings: exit 2 for a bad setting, 1 for anything
/// else, each with one line.
fn tool<F, Fut>(args: ServeArgs, work: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: std::future::Future<Output = Result<(), ToolError>>,
{
    let settings = match Settings::from_args(args, std::env::var(ADMIN_PASSWORD_ENV).ok()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(SETTING_ERROR);
        }
    };
    init_logging(settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ToolError::Setting(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(SETTING_ERROR)
        }
        Err(ToolError::InUse(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(ToolError::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let settings = match Settings::from_args(args, std::env::var(ADMIN_PASSWORD_ENV).ok()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(SETTING_ERROR);
        }
    };
    init_logging(settings.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::build(settings).await {
            Ok(server) => server,
            Err(StartError::Setting(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(SETTING_ERROR);
            }
            Err(StartError::Failed(e)) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(password) = server.generated_admin_password() {
            eprintln!(
                "WARNING: no admin password was configured, so one was generated and only its hash stored. \
                 admin password: {} (shown once; set {ADMIN_PASSWORD_ENV} or --admin-password-hash to choose your own)",
                password.expose()
            );
        }
        tracing::info!(url = %server.public_url(), address = %server.local_addr(), "enlist is listening");
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "server stopped");
                ExitCode::FAILURE
            }
        }
    })
}

fn print_password_hash() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("error: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let line = input.strip_suffix('\n').unwrap_or(&input);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let password = match AdminPassword::parse(line.to_owned()) {
        Ok(password) => password,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(SETTING_ERROR);
        }
    };
    match hash_password(&password) {
        Ok(hash) => {
            println!("{}", hash.as_str());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr must not take the server down (the default reports to stderr, and
        // panics doing so).
        .log_internal_errors(false);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
