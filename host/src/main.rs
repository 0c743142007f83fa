//! The `poplar` command: serve, demo, check-config, deliver.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use poplar::config::{Config, ListenerTls};
use poplar::demo::{DEMO_PASSWORD, DEMO_USER, DemoPorts};
use poplar::net::Server;
use poplar::plugin::storage::{Mailbox, StorageError};
use poplar::plugin::{HostMessage, Runtime, StoragePlugin};

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
    },
}

/// sysexits.h codes used by `deliver` and startup failures.
const EX_DATAERR: u8 = 65;
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
            } => report(
                demo(
                    dir,
                    DemoPorts {
                        plain: port,
                        tls: tls_port,
                    },
                )
                .await,
            ),
            Cmd::CheckConfig { config } => match Config::load(&config) {
                Ok(_) => {
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
            } => deliver(config, user, folder).await,
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
    let config = Config::load(&config)?;
    let server = Server::bind(config).await?;
    for (addr, mode) in server.local_addrs() {
        // Tests and scripts read this line to find the ports.
        println!("listening on {addr} ({})", mode_name(mode));
    }
    tracing::info!("Poplar {} ready", env!("CARGO_PKG_VERSION"));
    tokio::select! {
        r = server.run() => r,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
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
    for (addr, mode) in server.local_addrs() {
        println!("listening on {addr} ({})", mode_name(mode));
    }
    println!(
        "  try: curl -k pop3s://127.0.0.1:{}/ -u {DEMO_USER}:{DEMO_PASSWORD}",
        ports.tls
    );
    tokio::select! {
        r = server.run() => r,
        _ = shutdown_signal() => Ok(()),
    }
}

async fn deliver(config: PathBuf, user: String, folder: Option<String>) -> ExitCode {
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("poplar deliver: {e:#}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut message = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut message) {
        eprintln!("poplar deliver: reading the message: {e}");
        return ExitCode::from(EX_TEMPFAIL);
    }
    if message.is_empty() {
        eprintln!("poplar deliver: the message on standard input is empty");
        return ExitCode::from(EX_DATAERR);
    }
    let storage = async {
        let runtime = Runtime::new(&config.runtime)?;
        StoragePlugin::load(&runtime, "storage", &config.storage).await
    };
    let storage = match storage.await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("poplar deliver: {e:#}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let mailbox = Mailbox { user, folder };
    match storage.deliver(&mailbox, &HostMessage::new(message)).await {
        Ok(Ok(key)) => {
            tracing::info!(user = %mailbox.user, key, "delivered");
            ExitCode::SUCCESS
        }
        Ok(Err(StorageError::Permanent(e) | StorageError::NotFound(e))) => {
            eprintln!("poplar deliver: refused: {e}");
            ExitCode::from(EX_DATAERR)
        }
        Ok(Err(StorageError::Temporary(e))) => {
            eprintln!("poplar deliver: temporary failure: {e}");
            ExitCode::from(EX_TEMPFAIL)
        }
        Err(e) => {
            eprintln!("poplar deliver: {e}");
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}
