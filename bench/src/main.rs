//! `poplar-bench`: starts a real `poplar serve` (or, for comparison, a
//! Dovecot) on loopback with a generated corpus and drives one workload
//! against it with many concurrent clients, then reports throughput,
//! latency, errors and the CPU and memory the server (and the load
//! generator itself) used.
//!
//! ```sh
//! cargo build --release -p poplar
//! cargo run --release -p poplar-bench -- --mode retr --concurrency 10
//! cargo run --release -p poplar-bench -- --server dovecot --mode retr -c 10
//! cargo run --release -p poplar-bench -- compare --runs 3 --duration 10
//! cargo run -p poplar-bench -- --smoke       # CI: every mode, briefly
//! cargo run --release -p poplar-bench -- plugins   # the plugin path, in-process
//! ```
//!
//! See BENCHMARKS.md at the repository's root.

mod client;
mod compare;
mod corpus;
mod dovecot;
mod plugins;
mod report;
mod server;
mod setup;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use client::{Target, TlsMode};
use corpus::{Generator, Kind, Rng, SizeModel};
use report::Report;
use setup::{CorpusStats, PasswordScheme, SetupOptions};
use workload::{Delivery, Mode, Plan};

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// `poplar serve` with the default plugins.
    Poplar,
    /// Dovecot 2.3 (`dovecot -F`), tuned for speed: see BENCHMARKS.md.
    Dovecot,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Poplar => "Poplar",
            ServerKind::Dovecot => "Dovecot",
        }
    }
}

#[derive(Subcommand, Clone)]
enum Command {
    /// Poplar and Dovecot side by side: a list of workloads, each run
    /// `--runs` times per server, alternating; prints the medians and
    /// their ratios.
    Compare(compare::Args),
    /// The plugin path in-process, through the `poplar` library: loading
    /// from the compiled cache, instantiation (fresh vs pooled), the auth
    /// and storage calls of a session, and the filters' `classify` by
    /// message size; median and p99 of each.
    Plugins(plugins::Args),
}

#[derive(Parser, Clone)]
#[command(
    name = "poplar-bench",
    version,
    about = "Benchmark a real poplar server on loopback",
    long_about = "Starts `poplar serve` (or Dovecot, with --server dovecot) \
                  with generated users, Maildirs and configuration in a \
                  temporary directory, runs one workload with concurrent \
                  clients for a bounded time, and reports throughput, \
                  latency, errors, and the CPU and memory of the server and \
                  of the benchmark itself. `compare` runs a list of \
                  workloads against both servers."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The server under test.
    #[arg(long, value_enum, default_value = "poplar")]
    server: ServerKind,
    /// The dovecot binary (default: `dovecot` on PATH or in /usr/sbin).
    #[arg(long, global = true)]
    dovecot: Option<PathBuf>,
    /// How the passwd-file stores passwords (the same for both servers).
    #[arg(long, value_enum, default_value = "plain", global = true)]
    password_scheme: PasswordScheme,
    /// The workload.
    #[arg(long, short, value_enum, default_value = "login")]
    mode: Mode,
    /// Concurrent clients (for `idle`: sessions held).
    #[arg(long, short, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Seconds measured.
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, short, default_value_t = 2.0)]
    warmup: f64,
    /// Users u0, u1, ... (default: the concurrency; POP3 allows one session
    /// per maildrop, so fewer users than clients gives [IN-USE] errors).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    users: Option<u64>,
    /// Messages per user in the generated Maildirs (default: 2 for idle,
    /// 0 for deliver, 20 otherwise).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    messages: Option<u64>,
    /// How POP3 clients connect.
    #[arg(long, value_enum, default_value = "none")]
    tls: TlsMode,
    /// Let TLS clients resume sessions (default: a full handshake each time).
    #[arg(long, global = true)]
    tls_resume: bool,
    /// Delivery filters: 0 none, 1 filter-rules, 2 filter-rules and
    /// filter-bayes (trained; a second filter-rules if bayes is not built).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    filters: u8,
    /// Largest generated message, octets (sizes: median ~20 kB, long tail).
    #[arg(long, default_value_t = 6_000_000, global = true)]
    max_message_size: usize,
    /// Seed of the generated corpus.
    #[arg(long, default_value_t = 1, global = true)]
    seed: u64,
    /// The poplar binary (default: target/release/poplar).
    #[arg(long, global = true)]
    poplar: Option<PathBuf>,
    /// Measure a debug build of poplar (target/debug/poplar if there is no
    /// release build): its figures say nothing about the server's speed.
    /// `--smoke` allows it on its own.
    #[arg(long, global = true)]
    allow_debug: bool,
    /// Directory with storage_maildir.wasm, auth_passwd.wasm,
    /// filter_rules.wasm (and optionally filter_bayes.wasm).
    #[arg(long, global = true)]
    plugins: Option<PathBuf>,
    /// Compiled-plugin cache shared between runs.
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    /// POPLAR_LOG for the server (its log goes to server.log in the
    /// temporary directory).
    #[arg(long, default_value = "info", global = true)]
    server_log: String,
    /// Worker threads of the load generator (default: one per CPU).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Keep the temporary directory (corpus, config, server.log).
    #[arg(long, global = true)]
    keep: bool,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Password guessers running beside the workload: each guesses (USER
    /// u0, a wrong PASS) over and over, every guess from another loopback
    /// address (127.64.0.0/10), so the server's failed-login table fills
    /// with distinct sources; the report's latency is the honest clients'.
    #[arg(long, default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    attack: u64,
    /// CI mode: every workload for 2 s at concurrency 2 on a tiny corpus;
    /// fails unless all complete work without errors.
    #[arg(long)]
    smoke: bool,
}

/// One run's parameters.
#[derive(Clone)]
struct Spec {
    server: ServerKind,
    mode: Mode,
    tls: TlsMode,
    concurrency: usize,
    users: usize,
    messages: usize,
    filters: u8,
    warmup: f64,
    duration: f64,
    max_message_size: usize,
    delivery_pool: usize,
    /// Password guessers beside the workload (`--attack`).
    attackers: usize,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace")
        .to_path_buf()
}

/// The poplar binary to measure: `--poplar`, or the workspace's release
/// build. A debug build is refused unless `--allow-debug` or `--smoke` asks
/// for it (its `--version` says which profile built it).
fn find_poplar(cli: &Cli) -> Result<PathBuf> {
    let allow_debug = cli.allow_debug || cli.smoke;
    let binary = match &cli.poplar {
        Some(p) if !p.is_file() => bail!("--poplar {}: no such file", p.display()),
        Some(p) => p.clone(),
        None => {
            let target = workspace().join("target");
            let release = target.join("release/poplar");
            let debug = target.join("debug/poplar");
            if release.is_file() {
                release
            } else if allow_debug && debug.is_file() {
                debug
            } else {
                bail!(
                    "no release build of poplar in {}; build it with `cargo build --release \
                     -p poplar` (or pass --poplar PATH{})",
                    target.display(),
                    if debug.is_file() {
                        "; --allow-debug measures target/debug/poplar"
                    } else {
                        ""
                    }
                )
            }
        }
    };
    let version = version_of(&binary);
    if is_debug_build(&version) && !allow_debug {
        bail!(
            "{} is a debug build ({version}): its figures say nothing about the server's \
             speed; build with `cargo build --release -p poplar`, or pass --allow-debug",
            binary.display()
        );
    }
    Ok(binary)
}

/// Whether `poplar --version` names a debug build.
fn is_debug_build(version: &str) -> bool {
    version.contains(", debug build)")
}

/// The commit in `poplar --version` (`+` at its end: uncommitted changes).
pub fn commit_of(version: &str) -> Option<&str> {
    let rest = version.split("(commit ").nth(1)?;
    rest.split([',', ')']).next()
}

fn find_plugins(cli: &Cli) -> Result<PathBuf> {
    let dir = cli
        .plugins
        .clone()
        .unwrap_or_else(|| workspace().join("target/wasm/wasm32-wasip2/plugin"));
    for f in [
        "storage_maildir.wasm",
        "auth_passwd.wasm",
        "filter_rules.wasm",
    ] {
        if !dir.join(f).is_file() {
            bail!(
                "{} has no {f}; building poplar builds the plugins (or pass --plugins DIR)",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// The compiled-plugin cache shared between runs (created if missing).
fn cache_dir(cli: &Cli) -> Result<PathBuf> {
    let dir = cli
        .cache_dir
        .clone()
        .unwrap_or_else(|| workspace().join("target/poplar-bench-cache"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn check_seconds(name: &str, v: f64, min: f64, max: f64) -> Result<()> {
    if !(v.is_finite() && v >= min && v <= max) {
        bail!("--{name} must be between {min} and {max} seconds, not {v}");
    }
    Ok(())
}

/// Messages LMTP clients pick from at random.
fn delivery_pool(spec: &Spec, seed: u64) -> (Vec<Delivery>, CorpusStats) {
    let generator = Generator::new(seed ^ 0xDE11_7E12);
    let mut rng = Rng::derive(seed, 0xDE11_7E12);
    let sizes = SizeModel {
        max: spec.max_message_size,
    };
    let mut pool = Vec::with_capacity(spec.delivery_pool);
    for i in 0..spec.delivery_pool {
        let target = sizes.sample(&mut rng);
        let kind = Kind::sample(&mut rng);
        // The recipient in the header does not matter to the server.
        let m = generator.message(&mut rng, kind, "user@bench.test", i as u64, target, false);
        pool.push(Delivery {
            octets: m.crlf_size(),
            wire: m.lmtp_wire(),
            from: m.from,
        });
    }
    let mut sizes: Vec<u64> = pool.iter().map(|d| d.octets).collect();
    sizes.sort_unstable();
    let stats = CorpusStats {
        messages: sizes.len() as u64,
        total_octets: sizes.iter().sum(),
        median_octets: sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        max_octets: sizes.last().copied().unwrap_or(0),
    };
    (pool, stats)
}

/// The server process under test.
enum Running {
    Poplar(server::Server),
    Dovecot(dovecot::Dovecot),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Poplar(s) => s.pid,
            Running::Dovecot(d) => d.pid,
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        match self {
            Running::Poplar(s) => s.check_alive(),
            Running::Dovecot(d) => d.check_alive(),
        }
    }

    fn log_problems(&self) -> (u64, u64, Vec<String>) {
        match self {
            Running::Poplar(s) => s.log_problems(),
            Running::Dovecot(d) => d.log_problems(),
        }
    }

    fn stop(self) {
        match self {
            Running::Poplar(s) => s.stop(),
            Running::Dovecot(d) => {
                let killed = d.stop();
                if killed > 0 {
                    eprintln!(
                        "poplar-bench: warning: {killed} Dovecot process(es) outlived the \
                         master and were killed"
                    );
                }
            }
        }
    }
}

/// `<binary> --version`'s first line.
fn version_of(binary: &Path) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

fn run_one(cli: &Cli, rt: &tokio::runtime::Runtime, threads: usize, spec: &Spec) -> Result<Report> {
    let dovecot_binary = match spec.server {
        ServerKind::Dovecot => {
            if spec.mode == Mode::Deliver {
                bail!(
                    "--mode deliver is Poplar only (Dovecot's LMTP server is not \
                     part of this comparison)"
                );
            }
            if spec.filters > 0 {
                bail!("--filters are Poplar plugins: use --filters 0 with --server dovecot");
            }
            Some(dovecot::find(cli.dovecot.as_deref())?)
        }
        ServerKind::Poplar => None,
    };
    // Dovecot needs neither, but the corpus setup names them in the
    // (unused) poplar.toml.
    let (poplar, plugins) = match spec.server {
        ServerKind::Poplar => (find_poplar(cli)?, find_plugins(cli)?),
        ServerKind::Dovecot => (
            find_poplar(cli).unwrap_or_else(|_| PathBuf::from("poplar")),
            find_plugins(cli)
                .unwrap_or_else(|_| workspace().join("target/wasm/wasm32-wasip2/plugin")),
        ),
    };
    let cache_dir = cache_dir(cli)?;
    eprintln!(
        "poplar-bench: preparing {} users x {} messages ({} passwords){}",
        spec.users,
        spec.messages,
        cli.password_scheme.name(),
        if spec.filters > 0 {
            format!(", {} filter(s)", spec.filters)
        } else {
            String::new()
        }
    );
    let prepared = setup::prepare(&SetupOptions {
        users: spec.users,
        scheme: cli.password_scheme,
        messages: spec.messages,
        filters: spec.filters,
        sizes: SizeModel {
            max: spec.max_message_size,
        },
        seed: cli.seed,
        plugins,
        cache_dir,
        poplar: poplar.clone(),
    })?;
    let (pool, pool_stats) = if spec.mode == Mode::Deliver {
        let (pool, stats) = delivery_pool(spec, cli.seed);
        (pool, Some(stats))
    } else {
        (Vec::new(), None)
    };
    let (mut running, binary, version, plain, implicit, lmtp) = match &dovecot_binary {
        None => {
            let s = server::Server::start(
                &poplar,
                &prepared.config,
                prepared.root().join("server.log"),
                &cli.server_log,
            )?;
            let (plain, implicit, lmtp) = (s.plain, s.implicit, s.lmtp);
            eprintln!(
                "poplar-bench: {} (pid {}) on {plain} / {implicit} / lmtp {lmtp}; running {} \
                 for {:.1}+{:.1} s",
                poplar.display(),
                s.pid,
                spec.mode.name(),
                spec.warmup,
                spec.duration
            );
            (
                Running::Poplar(s),
                poplar.clone(),
                version_of(&poplar),
                plain,
                implicit,
                lmtp,
            )
        }
        Some(bin) => {
            let limits = dovecot::Limits::for_sessions(spec.concurrency);
            let d = dovecot::Dovecot::start(bin, prepared.root(), &limits)?;
            let (plain, implicit) = (d.plain, d.implicit);
            eprintln!(
                "poplar-bench: {} (pid {}, {}) on {plain} / {implicit}; running {} for \
                 {:.1}+{:.1} s",
                bin.display(),
                d.pid,
                d.conf.display(),
                spec.mode.name(),
                spec.warmup,
                spec.duration
            );
            (
                Running::Dovecot(d),
                bin.clone(),
                format!("Dovecot {}", dovecot::version(bin)),
                plain,
                implicit,
                SocketAddr::from(([127, 0, 0, 1], 0)),
            )
        }
    };
    let target = Arc::new(Target {
        plain,
        implicit,
        lmtp,
        tls: spec.tls,
        connector: client::tls_connector(&prepared.root().join("cert.pem"), cli.tls_resume)?,
        negotiated: Default::default(),
    });
    let plan = Plan {
        mode: spec.mode,
        concurrency: spec.concurrency,
        users: spec.users,
        messages: spec.messages,
        warmup: Duration::from_secs_f64(spec.warmup),
        duration: Duration::from_secs_f64(spec.duration),
        server_pid: running.pid(),
        deliveries: Arc::new(pool),
        seed: cli.seed,
        attackers: spec.attackers,
    };
    let outcome = rt.block_on(workload::run(plan, target.clone()));
    // Give the server a moment to write its last log lines.
    std::thread::sleep(Duration::from_millis(200));
    running.check_alive()?;
    let outcome = outcome?;
    let (log_warnings, log_errors, first_log_errors) = running.log_problems();
    let ctx = report::Context {
        mode: spec.mode,
        tls: spec.tls,
        tls_negotiated: target.negotiated.get().cloned(),
        password_scheme: cli.password_scheme,
        concurrency: spec.concurrency,
        users: spec.users,
        messages_per_user: spec.messages,
        filters: prepared.chain.clone(),
        corpus: prepared.corpus.clone(),
        delivery_pool: pool_stats,
        warmup_secs: spec.warmup,
        server: report::ServerInfo {
            kind: spec.server,
            version,
            binary: binary.display().to_string(),
            pid: running.pid(),
            log_warnings,
            log_errors,
            first_log_errors,
        },
        worker_threads: threads,
        attackers: spec.attackers,
    };
    running.stop();
    if cli.keep {
        let kept = prepared.dir.keep();
        eprintln!("poplar-bench: kept {}", kept.display());
    }
    Ok(report::build(ctx, outcome))
}

fn single(cli: &Cli, rt: &tokio::runtime::Runtime, threads: usize) -> Result<ExitCode> {
    check_seconds("duration", cli.duration, 0.1, 3600.0)?;
    check_seconds("warmup", cli.warmup, 0.0, 600.0)?;
    let concurrency = cli.concurrency as usize;
    let users = cli.users.map_or(concurrency, |u| u as usize);
    if users < concurrency && cli.mode != Mode::Deliver {
        eprintln!(
            "poplar-bench: warning: {users} users for {concurrency} clients: \
             POP3 allows one session per maildrop, expect [IN-USE] errors"
        );
    }
    let messages = cli.messages.map_or(
        match cli.mode {
            Mode::Idle => 2,
            Mode::Deliver => 0,
            _ => 20,
        },
        |m| m as usize,
    );
    let spec = Spec {
        server: cli.server,
        mode: cli.mode,
        tls: cli.tls,
        concurrency,
        users,
        messages,
        filters: cli.filters,
        warmup: cli.warmup,
        duration: cli.duration,
        max_message_size: cli.max_message_size,
        delivery_pool: 200,
        attackers: cli.attack as usize,
    };
    let report = run_one(cli, rt, threads, &spec)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Every workload briefly, with TLS variants spread over them; fails
/// unless each completes work with no error.
fn smoke(cli: &Cli, rt: &tokio::runtime::Runtime, threads: usize) -> Result<ExitCode> {
    let cases: [(Mode, TlsMode, u8); 8] = [
        (Mode::Login, TlsMode::None, 0),
        (Mode::Uidl, TlsMode::Stls, 0),
        (Mode::Retr, TlsMode::Implicit, 0),
        (Mode::Retr, TlsMode::None, 0),
        (Mode::Top, TlsMode::Stls, 0),
        (Mode::Idle, TlsMode::Implicit, 0),
        (Mode::Deliver, TlsMode::None, 0),
        (Mode::Deliver, TlsMode::None, 2),
    ];
    debug_assert!(Mode::ALL.iter().all(|m| cases.iter().any(|c| c.0 == *m)));
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for (mode, tls, filters) in cases {
        let spec = Spec {
            server: ServerKind::Poplar,
            mode,
            tls,
            concurrency: 2,
            users: 2,
            messages: 3,
            filters,
            warmup: 0.5,
            duration: 2.0,
            max_message_size: 256 * 1024,
            delivery_pool: 20,
            attackers: if mode == Mode::Login { 4 } else { 0 },
        };
        let name = format!("{} tls={tls:?} filters={filters}", mode.name());
        match run_one(cli, rt, threads, &spec) {
            Ok(r) => {
                let ok = r.errors == 0 && r.completed > 0;
                eprintln!(
                    "smoke {name}: {} ({} {}, {} errors)",
                    if ok { "ok" } else { "FAILED" },
                    r.completed,
                    r.unit,
                    r.errors
                );
                if !ok {
                    eprint!("{}", r.table());
                    failed.push(name);
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("smoke {name}: FAILED: {e:#}");
                failed.push(name);
            }
        }
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    if failed.is_empty() {
        eprintln!("smoke: all {} cases passed", cases.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("smoke: failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every session takes a descriptor here and one (or, in Dovecot, a
    // few) in the server, which inherits the limit.
    let sessions = match &cli.command {
        Some(Command::Compare(a)) => a.idle_sessions.max(100) as usize,
        Some(Command::Plugins(_)) => 0,
        None => cli.concurrency as usize,
    };
    let fd_limit = server::raise_fd_limit((4 * sessions as u64 + 1024).max(65_536));
    if (fd_limit as usize) < 2 * sessions + 100 {
        eprintln!(
            "poplar-bench: warning: only {fd_limit} file descriptors (RLIMIT_NOFILE) for \
             {sessions} sessions"
        );
    }
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poplar-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &cli.command {
        Some(Command::Compare(args)) => compare::run(&cli, args, &rt, threads),
        Some(Command::Plugins(args)) => plugins::run(&cli, args, &rt),
        None if cli.smoke => smoke(&cli, &rt, threads),
        None => single(&cli, &rt, threads),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("poplar-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_the_build() {
        let release = "poplar 0.1.0 (commit 1a2b3c4d5e6f, release build)";
        let debug = "poplar 0.1.0 (commit 1a2b3c4d5e6f+, debug build)";
        assert!(!is_debug_build(release));
        assert!(is_debug_build(debug));
        assert_eq!(commit_of(release), Some("1a2b3c4d5e6f"));
        assert_eq!(commit_of(debug), Some("1a2b3c4d5e6f+"));
        assert_eq!(commit_of("poplar 0.1.0"), None);
    }

    #[test]
    fn a_debug_build_is_refused_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("poplar");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'poplar 0.1.0 (commit 1a2b3c4d5e6f, debug build)'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = fake.to_str().unwrap();
        let cli = Cli::parse_from(["poplar-bench", "--poplar", path]);
        let e = find_poplar(&cli).unwrap_err().to_string();
        assert!(
            e.contains("is a debug build") && e.contains("--allow-debug"),
            "{e}"
        );
        let cli = Cli::parse_from(["poplar-bench", "--poplar", path, "--allow-debug"]);
        assert_eq!(find_poplar(&cli).unwrap(), fake);
        let cli = Cli::parse_from(["poplar-bench", "--poplar", path, "--smoke"]);
        assert_eq!(find_poplar(&cli).unwrap(), fake);
    }
}
