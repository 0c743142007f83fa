//! The `poplar` command: serve, demo, check-config, deliver, and the
//! operator tools (filter train, pw hash, plugin check, mailbox).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use poplar::config::{Config, ListenerTls};
use poplar::demo::{DEMO_PASSWORD, DEMO_USER, DemoPorts};
use poplar::net::Server;
use poplar::net::notify::{monotonic_usec, notify};
use poplar::operator::{check, generate, mailbox, pw, session};
use poplar::service::activation::Activation;
use poplar::service::privileges;
use std::sync::Arc;

use poplar::deliver::lmtp::{Recipient, RecipientLookup, Transaction};
use poplar::deliver::{Deliverer, Outcome};
use poplar::plugin::filter::{Example, TrainablePlugin};
use poplar::plugin::{AuthPlugin, HostMessage, Runtime, StoragePlugin};

/// `poplar --version`: the package version, the commit it was built from
/// (`+`: with uncommitted changes) and the build profile.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("POPLAR_COMMIT"),
    ", ",
    env!("POPLAR_PROFILE"),
    " build)"
);

#[derive(Parser)]
#[command(
    name = "poplar",
    version = VERSION,
    about = "A POP3 server with WebAssembly plugins"
)]
struct Cli {
    /// How log lines on standard error are written: `text`, or `json` (one
    /// JSON object per line).
    #[arg(
        long,
        global = true,
        env = "POPLAR_LOG_FORMAT",
        hide_env_values = true,
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a ready-made demo server: user `demo`, password `demo`, sample
    /// mail, self-signed certificate, everything under --dir.
    Demo {
        #[arg(long, default_value = "demo-data")]
        dir: PathBuf,
        /// Port for plain POP3 with STLS.
        #[arg(long, default_value_t = 1110)]
        port: u16,
        /// Port for implicit TLS (POP3S).
        #[arg(long, default_value_t = 1995)]
        tls_port: u16,
        /// Port for LMTP delivery.
        #[arg(long, default_value_t = 2424)]
        lmtp_port: u16,
    },
    /// Validate a configuration file and exit (non-zero on error).
    CheckConfig {
        /// The TOML configuration file.
        config: PathBuf,
    },
    /// Deliver one message from standard input (for use as an MDA). Exit
    /// codes follow sysexits: 75 means try again later.
    Deliver {
        #[arg(long, short)]
        config: PathBuf,
        /// The recipient's maildrop.
        #[arg(long)]
        user: String,
        /// A folder instead of the inbox, e.g. `Junk`.
        #[arg(long)]
        folder: Option<String>,
        /// The envelope sender (for filters and Return-Path).
        #[arg(long, default_value = "")]
        from: String,
    },
    /// Filter plugin tools.
    Filter {
        #[command(subcommand)]
        command: FilterCmd,
    },
    /// Password tools for the passwd-file.
    Pw {
        #[command(subcommand)]
        command: PwCmd,
    },
    /// Plugin tools that need no configuration.
    Plugin {
        #[command(subcommand)]
        command: PluginCmd,
    },
    /// Look into and clean up one user's mailbox: list, stats, search,
    /// expunge. Exit codes follow sysexits (64 bad usage, 67 unknown user).
    Mailbox {
        #[command(subcommand)]
        command: mailbox::MailboxCmd,
    },
    /// Who is logged in on which node (from the maildrop leases), and
    /// ending a user's sessions wherever they are.
    Session {
        #[command(subcommand)]
        command: session::SessionCmd,
    },
    /// Manual pages, shell completions and a self-signed certificate, for
    /// packaging and installation.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        command: generate::GenerateCmd,
    },
}

#[derive(Subcommand)]
enum PwCmd {
    /// Print a passwd-file password field, `{SCHEME}hash`, for a password
    /// typed on the terminal (without echo) or read from standard input.
    Hash {
        /// The password scheme (Dovecot's names).
        #[arg(long, short, value_enum, ignore_case = true, default_value_t = pw::Scheme::Sha512Crypt)]
        scheme: pw::Scheme,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Cost: SHA-crypt rounds (5000), BLF-CRYPT cost (12), ARGON2ID
        /// passes (3), SCRAM-SHA-256 iterations (4096).
        #[arg(long, short)]
        rounds: Option<u32>,
        /// ARGON2ID memory in KiB (65536).
        #[arg(long)]
        memory: Option<u32>,
        /// ARGON2ID lanes (1).
        #[arg(long)]
        parallelism: Option<u32>,
    },
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Check a `.wasm` file against Poplar's WIT worlds: exit 0 if it
    /// implements the world (any world without --world), 1 if not, 78 if
    /// the file is unreadable or not a valid component.
    Check {
        /// The component (`.wasm` file).
        file: PathBuf,
        /// The world it must implement.
        #[arg(long, value_enum)]
        world: Option<check::World>,
    },
}

#[derive(Subcommand)]
enum FilterCmd {
    /// Train a trainable filter (e.g. filter-bayes) on labelled mail: every
    /// file under the directories is one message (Maildirs work).
    Train {
        #[arg(long, short)]
        config: PathBuf,
        /// The filter's name (its `[filter.NAME]` table).
        #[arg(long)]
        plugin: String,
        #[arg(long)]
        spam: PathBuf,
        #[arg(long)]
        ham: PathBuf,
    },
}

/// sysexits.h codes used by `deliver` and startup failures.
use poplar::operator::exit::{
    EX_CANTCREAT, EX_CONFIG, EX_DATAERR, EX_NOPERM, EX_NOUSER, EX_SOFTWARE, EX_TEMPFAIL,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The operator tools are synchronous and need no async runtime.
    let command = match cli.command {
        Cmd::Pw {
            command:
                PwCmd::Hash {
                    scheme,
                    password_stdin,
                    rounds,
                    memory,
                    parallelism,
                },
        } => {
            let cost = pw::Cost {
                rounds,
                memory_kib: memory,
                parallelism,
            };
            return pw_hash(scheme, cost, password_stdin);
        }
        Cmd::Plugin {
            command: PluginCmd::Check { file, world },
        } => return plugin_check(&file, world),
        Cmd::Generate { command } => return report(generate::run(command, Cli::command())),
        other => other,
    };
    // Socket activation edits the environment: read it while this is the
    // only thread.
    let sockets = match &command {
        Cmd::Serve { .. } | Cmd::Demo { .. } => match Activation::from_env() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("poplar: {e:#}");
                return ExitCode::from(EX_CONFIG);
            }
        },
        _ => Activation::none(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("poplar: cannot start the async runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    runtime.block_on(async move {
        match command {
            Cmd::Serve { config } => report(serve(config, sockets).await),
            Cmd::Demo {
                dir,
                port,
                tls_port,
                lmtp_port,
            } => {
                let ports = DemoPorts {
                    plain: port,
                    tls: tls_port,
                    lmtp: lmtp_port,
                };
                report(demo(dir, ports, sockets).await)
            }
            Cmd::CheckConfig { config } => match check_config(&config).await {
                Ok(()) => {
                    println!("{}: OK", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("poplar: {e:#}");
                    ExitCode::from(EX_CONFIG)
                }
            },
            Cmd::Deliver {
                config,
                user,
                folder,
                from,
            } => deliver(config, user, folder, from).await,
            Cmd::Filter {
                command:
                    FilterCmd::Train {
                        config,
                        plugin,
                        spam,
                        ham,
                    },
            } => report(train(config, plugin, spam, ham).await),
            Cmd::Mailbox { command } => mailbox::run(command).await,
            Cmd::Session { command } => session::run(command).await,
            Cmd::Pw { .. } | Cmd::Plugin { .. } | Cmd::Generate { .. } => {
                unreachable!("handled above")
            }
        }
    })
}

/// Logs go to standard error: `POPLAR_LOG` filters them (`info` by
/// default), `--log-format` chooses plain text or one JSON object a line.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("POPLAR_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Event fields at the top level, next to `message`, `level`,
        // `timestamp` and `target`.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `poplar pw hash`: the password field on standard output.
fn pw_hash(scheme: pw::Scheme, cost: pw::Cost, from_stdin: bool) -> ExitCode {
    let result =
        pw::read_password(from_stdin).and_then(|password| pw::hash(scheme, cost, &password));
    match result {
        Ok(field) => {
            println!("{field}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("poplar pw hash: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `poplar plugin check`: the report on standard output, the verdict on
/// standard error when it is no.
fn plugin_check(file: &std::path::Path, world: Option<check::World>) -> ExitCode {
    let report = match check::check_file(file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("poplar plugin check: {}: {e}", file.display());
            return ExitCode::from(EX_CONFIG);
        }
    };
    println!("{}: WebAssembly component", file.display());
    print!("{}", report.render());
    let satisfied = report.satisfied();
    match world {
        Some(w) if report.satisfies(w) => {
            println!("OK: implements {w}");
            ExitCode::SUCCESS
        }
        Some(w) => {
            eprintln!(
                "poplar plugin check: {} does not implement {w}: {}",
                file.display(),
                report.reason(w).unwrap_or("unknown reason")
            );
            ExitCode::FAILURE
        }
        None if !satisfied.is_empty() => {
            let names: Vec<&str> = satisfied.iter().map(|w| w.wit_name()).collect();
            println!("OK: implements {}", names.join(", "));
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "poplar plugin check: {} implements no Poplar world",
                file.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn report(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poplar: {e:#}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

async fn serve(config_path: PathBuf, sockets: Activation) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before anything is announced, so an early SIGHUP reloads
    // instead of killing the process (the default action).
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let config = Config::load(&config_path)?;
    let server = Server::bind(config, sockets).await?;
    let live = server.live();
    privileges::check_reloadable(&config_path, &live.current().config);
    // Tests and scripts read these lines to find the ports.
    for addr in server.lmtp_addrs() {
        println!("lmtp listening on {addr}");
    }
    if let Some(addr) = server.admin_addr() {
        println!("admin listening on {addr}");
    }
    for (addr, mode) in server.local_addrs() {
        println!("listening on {addr} ({})", mode_name(mode));
    }
    tracing::info!("Poplar {} ready", env!("CARGO_PKG_VERSION"));
    notify("READY=1\nSTATUS=Serving POP3");
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
            match live.reload(&config_path).await {
                Ok(()) => notify("READY=1\nSTATUS=Serving POP3"),
                Err(e) => {
                    tracing::error!(
                        config = %config_path.display(),
                        "reload refused, the previous configuration keeps serving: {e:#}"
                    );
                    notify(&format!(
                        "READY=1\nSTATUS=Reload failed, serving the previous configuration: {}",
                        status_text(&e)
                    ));
                }
            }
        }
    });
    let stop = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    };
    server.run(stop).await
}

/// An error as one short line for `STATUS=`.
fn status_text(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect()
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn mode_name(mode: ListenerTls) -> &'static str {
    match mode {
        ListenerTls::Starttls => "plain POP3 with STLS",
        ListenerTls::Implicit => "implicit TLS (POP3S)",
    }
}

async fn demo(dir: PathBuf, ports: DemoPorts, sockets: Activation) -> Result<()> {
    let config_path = poplar::demo::prepare(&dir, ports).await?;
    println!("Poplar demo server");
    println!("  user {DEMO_USER:?}, password {DEMO_PASSWORD:?}");
    println!("  data, config and certificate in {}", dir.display());
    println!(
        "  try: curl -k pop3s://127.0.0.1:{}/ -u {DEMO_USER}:{DEMO_PASSWORD}",
        ports.tls
    );
    serve(config_path, sockets)
        .await
        .context("running the demo server (is another demo already running?)")
}

/// Validates a config file and everything it names: TLS files, and every
/// plugin (compiled, instantiated, and its own `validate` called).
async fn check_config(path: &std::path::Path) -> Result<()> {
    let config = Config::load(path)?;
    privileges::configured(&config)?;
    if let Some(tls) = &config.tls {
        poplar::net::tls::acceptor(tls)?;
    }
    let (runtime, auth, storage) = load_core(&config).await?;
    Deliverer::new(&config, &runtime, auth, storage).await?;
    Ok(())
}

/// Loads the runtime, auth and storage plugins for a CLI command.
async fn load_core(config: &Config) -> Result<(Arc<Runtime>, Arc<AuthPlugin>, Arc<StoragePlugin>)> {
    let runtime = Runtime::new(&config.runtime)?;
    let auth = AuthPlugin::load(&runtime, "auth", &config.auth).await?;
    let storage = StoragePlugin::load(&runtime, "storage", &config.storage).await?;
    Ok((runtime, auth, storage))
}

async fn deliver(config: PathBuf, user: String, folder: Option<String>, from: String) -> ExitCode {
    let fail = |code: u8, what: &str| {
        eprintln!("poplar deliver: {what}");
        ExitCode::from(code)
    };
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, &format!("{e:#}")),
    };
    let mut message = Vec::new();
    let limit = config.delivery.max_message_size;
    if let Err(e) = std::io::stdin().take(limit + 1).read_to_end(&mut message) {
        return fail(EX_TEMPFAIL, &format!("reading the message: {e}"));
    }
    if message.is_empty() {
        return fail(EX_DATAERR, "the message on standard input is empty");
    }
    if message.len() as u64 > limit {
        return fail(
            EX_NOPERM,
            &format!("message larger than delivery.max_message_size ({limit})"),
        );
    }
    let deliverer = match load_core(&config).await {
        Ok((runtime, auth, storage)) => Deliverer::new(&config, &runtime, auth, storage).await,
        Err(e) => Err(e),
    };
    let deliverer = match deliverer {
        Ok(d) => d,
        Err(e) => return fail(EX_TEMPFAIL, &format!("{e:#}")),
    };
    let principal = match deliverer.resolve(&user).await {
        RecipientLookup::Found(p) => p,
        RecipientLookup::Unknown => return fail(EX_NOUSER, &format!("unknown user {user:?}")),
        RecipientLookup::TempFail => return fail(EX_TEMPFAIL, "cannot look up the user now"),
    };
    let tx = Transaction {
        mail_from: from,
        recipients: vec![Recipient {
            address: user,
            user: principal,
            folder,
        }],
        message,
    };
    let outcome = deliverer.deliver(&tx, "").await.remove(0);
    match outcome {
        Outcome::Stored { .. } | Outcome::Discarded => ExitCode::SUCCESS,
        Outcome::Rejected(why) => fail(EX_NOPERM, &format!("rejected: {why}")),
        Outcome::OverQuota(why) => fail(EX_CANTCREAT, &format!("mailbox full ({why})")),
        Outcome::TempFailed(why) => fail(EX_TEMPFAIL, &format!("temporary failure: {why}")),
    }
}

/// Messages under a directory: regular files, dotfiles skipped, sorted.
fn message_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Messages per `train` call.
const TRAIN_BATCH: usize = 200;

async fn train(config: PathBuf, plugin: String, spam: PathBuf, ham: PathBuf) -> Result<()> {
    let config = Config::load(&config)?;
    let Some(filter) = config.filter.get(&plugin) else {
        anyhow::bail!("no [filter.{plugin}] table in the configuration");
    };
    let mut filter = filter.clone();
    // Training reads a whole corpus in a few calls: allow minutes, not seconds.
    filter.timeout_ms = filter.timeout_ms.max(600_000);
    let runtime = Runtime::new(&config.runtime)?;
    let trainer = TrainablePlugin::load(&runtime, &plugin, &filter).await?;
    let (spam, ham) = (message_files(&spam)?, message_files(&ham)?);
    println!(
        "training {plugin} on {} spam and {} ham messages",
        spam.len(),
        ham.len()
    );
    let read = |files: &[PathBuf], class: &str| -> Result<Vec<Example>> {
        files
            .iter()
            .map(|f| {
                let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                Ok(Example {
                    msg: HostMessage::new(bytes),
                    class: class.to_string(),
                    principal: None,
                    envelope: None,
                    unlearn: false,
                })
            })
            .collect()
    };
    let batches = spam.len().max(ham.len()).div_ceil(TRAIN_BATCH);
    for b in 0..batches {
        let part = |files: &[PathBuf], class: &str| {
            let start = (b * TRAIN_BATCH).min(files.len());
            let end = ((b + 1) * TRAIN_BATCH).min(files.len());
            read(&files[start..end], class)
        };
        let mut examples = part(&spam, "spam")?;
        examples.extend(part(&ham, "ham")?);
        let report = trainer
            .train(&examples)
            .await?
            .map_err(|e| anyhow::anyhow!("plugin {plugin} refused to train: {e}"))?;
        println!(
            "batch {}/{batches}: learned {} ({})",
            b + 1,
            report.learned,
            report.summary
        );
    }
    Ok(())
}
