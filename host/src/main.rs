//! The `poplar` command: serve, demo, check-config, deliver.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use poplar::config::{Config, ListenerTls};
use poplar::demo::{DEMO_PASSWORD, DEMO_USER, DemoPorts};
use poplar::net::Server;
use poplar::net::notify::{monotonic_usec, notify};
use std::sync::Arc;

use poplar::deliver::lmtp::{Recipient, RecipientLookup, Transaction};
use poplar::deliver::{Deliverer, Outcome};
use poplar::plugin::filter::TrainablePlugin;
use poplar::plugin::{AuthPlugin, HostMessage, Runtime, StoragePlugin};

#[derive(Parser)]
#[command(
    name = "poplar",
    version,
    about = "A POP3 server with WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
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
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_NOPERM: u8 = 77;
const EX_SOFTWARE: u8 = 70;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POPLAR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
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
        match cli.command {
            Cmd::Serve { config } => report(serve(config).await),
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
                report(demo(dir, ports).await)
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
        }
    })
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

async fn serve(config: PathBuf) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before anything is announced, so an early SIGHUP reloads
    // instead of killing the process (the default action).
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let config = Config::load(&config)?;
    let server = Server::bind(config).await?;
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
    let deliverer = server.deliverer();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading filters");
            notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
            deliverer.chain.reload_all().await;
            notify("READY=1\nSTATUS=Serving POP3");
        }
    });
    let stop = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
    };
    server.run(stop).await
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

async fn demo(dir: PathBuf, ports: DemoPorts) -> Result<()> {
    let config_path = poplar::demo::prepare(&dir, ports).await?;
    let config = Config::load(&config_path)?;
    let server = Server::bind(config)
        .await
        .context("starting the demo server (is another demo already running?)")?;
    println!("Poplar demo server");
    println!("  user {DEMO_USER:?}, password {DEMO_PASSWORD:?}");
    println!("  data, config and certificate in {}", dir.display());
    for addr in server.lmtp_addrs() {
        println!("lmtp listening on {addr}");
    }
    for (addr, mode) in server.local_addrs() {
        println!("listening on {addr} ({})", mode_name(mode));
    }
    println!(
        "  try: curl -k pop3s://127.0.0.1:{}/ -u {DEMO_USER}:{DEMO_PASSWORD}",
        ports.tls
    );
    server.run(shutdown_signal()).await
}

/// Validates a config file and everything it names: TLS files, and every
/// plugin (compiled, instantiated, and its own `validate` called).
async fn check_config(path: &std::path::Path) -> Result<()> {
    let config = Config::load(path)?;
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
    let read = |files: &[PathBuf]| -> Result<Vec<HostMessage>> {
        files
            .iter()
            .map(|f| {
                Ok(HostMessage::new(
                    std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
                ))
            })
            .collect()
    };
    let batches = spam.len().max(ham.len()).div_ceil(TRAIN_BATCH);
    for b in 0..batches {
        let part = |files: &[PathBuf]| {
            let start = (b * TRAIN_BATCH).min(files.len());
            let end = ((b + 1) * TRAIN_BATCH).min(files.len());
            read(&files[start..end])
        };
        let report = trainer
            .train(&part(&spam)?, &part(&ham)?)
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
