//! What a run found, as a table for people and as JSON for machines.

use std::fmt::Write as _;

use serde::Serialize;

use crate::ServerKind;
use crate::client::TlsMode;
use crate::server::Memory;
use crate::setup::{CorpusStats, PasswordScheme};
use crate::workload::{IdleMemory, Mode, Outcome};

#[derive(Serialize, Clone, Copy, Default)]
pub struct Latency {
    pub samples: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut us: Vec<u64>) -> Latency {
        if us.is_empty() {
            return Latency::default();
        }
        us.sort_unstable();
        // Nearest rank.
        let pct = |p: f64| {
            let rank = ((p / 100.0) * us.len() as f64).ceil().max(1.0) as usize;
            us[rank.min(us.len()) - 1] as f64 / 1000.0
        };
        Latency {
            samples: us.len(),
            mean_ms: us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0,
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            max_ms: *us.last().expect("not empty") as f64 / 1000.0,
        }
    }
}

#[derive(Serialize)]
pub struct ServerReport {
    pub kind: ServerKind,
    /// `--version`'s first line.
    pub version: String,
    pub binary: String,
    /// "debug" or "release", as its `--version` says (else guessed from
    /// its path; "unknown" for Dovecot).
    pub profile: &'static str,
    /// The commit the Poplar binary was built from (`+`: with uncommitted
    /// changes), from its `--version`.
    pub commit: Option<String>,
    pub pid: u32,
    /// CPU over the window: user + system time of all threads of the
    /// whole process tree (for Dovecot: master, auth, login and pop3
    /// processes, including those that exited and were reaped).
    pub cpu_secs: f64,
    /// cpu_secs / window: 1.0 is one core busy.
    pub cpu_cores: f64,
    /// Server CPU per completed operation (session, delivery or NOOP).
    pub cpu_us_per_op: Option<f64>,
    /// Server CPU per MB (10^6 octets) of payload.
    pub cpu_ms_per_mb: Option<f64>,
    /// At the end of the window, with the clients still connected, summed
    /// over the process tree.
    pub memory_end: Memory,
    pub log_warnings: u64,
    pub log_errors: u64,
    pub first_log_errors: Vec<String>,
}

#[derive(Serialize)]
pub struct BenchReport {
    /// "debug" or "release": how poplar-bench itself was built.
    pub profile: &'static str,
    pub worker_threads: usize,
    /// The load generator's own CPU (user + system) over the window.
    pub cpu_secs: f64,
    pub cpu_cores: f64,
}

/// The machine during the window.
#[derive(Serialize)]
pub struct SystemReport {
    pub cpus: usize,
    /// Busy CPU of all processes over the window, in cores.
    pub busy_cores: f64,
    /// Busy CPU other than the server's and the benchmark's, in cores:
    /// well above zero means other work competed (numbers are noisy).
    pub other_cores: f64,
}

#[derive(Serialize)]
pub struct Report {
    pub mode: Mode,
    pub tls: TlsMode,
    /// Protocol, cipher suite and key exchange of the first handshake.
    pub tls_negotiated: Option<String>,
    /// How the passwd-file stores the passwords.
    pub password_scheme: PasswordScheme,
    pub concurrency: usize,
    pub users: usize,
    pub messages_per_user: usize,
    /// The delivery filter chain.
    pub filters: Vec<String>,
    pub corpus: CorpusStats,
    /// The messages `deliver` sends (CRLF sizes).
    pub delivery_pool: Option<CorpusStats>,
    pub warmup_secs: f64,
    pub window_secs: f64,
    /// What one operation is: "sessions", "deliveries" or "NOOPs".
    pub unit: &'static str,
    pub completed: u64,
    pub per_sec: f64,
    pub payload_octets: u64,
    /// 10^6 octets per second.
    pub payload_mb_per_sec: f64,
    pub latency: Latency,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub server: ServerReport,
    pub bench: BenchReport,
    pub system: SystemReport,
    /// Password guessing beside the workload (`--attack`), if any.
    pub attack: Option<Attack>,
    pub idle: Option<IdleMemory>,
}

pub struct Context {
    pub mode: Mode,
    pub tls: TlsMode,
    pub tls_negotiated: Option<String>,
    pub password_scheme: PasswordScheme,
    pub concurrency: usize,
    pub users: usize,
    pub messages_per_user: usize,
    pub filters: Vec<String>,
    pub corpus: CorpusStats,
    pub delivery_pool: Option<CorpusStats>,
    pub warmup_secs: f64,
    pub server: ServerInfo,
    pub worker_threads: usize,
    /// Password guessers beside the workload.
    pub attackers: usize,
}

/// The password guessing that ran beside the workload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attack {
    /// Guessers, each from a fresh loopback address per guess.
    pub attackers: usize,
    /// Guesses refused within the window.
    pub guesses: u64,
    pub guesses_per_sec: f64,
}

pub struct ServerInfo {
    pub kind: ServerKind,
    pub version: String,
    pub binary: String,
    pub pid: u32,
    pub log_warnings: u64,
    pub log_errors: u64,
    pub first_log_errors: Vec<String>,
}

/// The build profile `poplar --version` names (older builds did not say:
/// guessed from the path).
fn profile_of(version: &str, path: &str) -> &'static str {
    if version.contains(", release build)") {
        "release"
    } else if version.contains(", debug build)") {
        "debug"
    } else if path.contains("/release/") {
        "release"
    } else if path.contains("/debug/") {
        "debug"
    } else {
        "unknown"
    }
}

pub fn build(ctx: Context, outcome: Outcome) -> Report {
    let secs = outcome.window_secs.max(1e-9);
    let stats = outcome.stats;
    let unit = match ctx.mode {
        Mode::Deliver => "deliveries",
        Mode::Idle => "NOOPs",
        _ => "sessions",
    };
    let mb = stats.octets as f64 / 1e6;
    let per_op =
        (stats.completed > 0).then(|| outcome.server_cpu_secs * 1e6 / stats.completed as f64);
    let per_mb = (mb > 0.0).then(|| outcome.server_cpu_secs * 1e3 / mb);
    Report {
        mode: ctx.mode,
        tls: ctx.tls,
        tls_negotiated: ctx.tls_negotiated,
        password_scheme: ctx.password_scheme,
        concurrency: ctx.concurrency,
        users: ctx.users,
        messages_per_user: ctx.messages_per_user,
        filters: ctx.filters,
        corpus: ctx.corpus,
        delivery_pool: ctx.delivery_pool,
        warmup_secs: ctx.warmup_secs,
        window_secs: outcome.window_secs,
        unit,
        completed: stats.completed,
        per_sec: stats.completed as f64 / secs,
        payload_octets: stats.octets,
        payload_mb_per_sec: mb / secs,
        latency: Latency::of(stats.latencies_us),
        errors: stats.errors,
        first_errors: stats.first_errors,
        server: ServerReport {
            kind: ctx.server.kind,
            version: ctx.server.version.clone(),
            profile: match ctx.server.kind {
                ServerKind::Poplar => profile_of(&ctx.server.version, &ctx.server.binary),
                ServerKind::Dovecot => "unknown",
            },
            commit: match ctx.server.kind {
                ServerKind::Poplar => crate::commit_of(&ctx.server.version).map(str::to_string),
                ServerKind::Dovecot => None,
            },
            binary: ctx.server.binary,
            pid: ctx.server.pid,
            cpu_secs: outcome.server_cpu_secs,
            cpu_cores: outcome.server_cpu_secs / secs,
            cpu_us_per_op: per_op,
            cpu_ms_per_mb: per_mb,
            memory_end: outcome.memory_end,
            log_warnings: ctx.server.log_warnings,
            log_errors: ctx.server.log_errors,
            first_log_errors: ctx.server.first_log_errors,
        },
        bench: BenchReport {
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            worker_threads: ctx.worker_threads,
            cpu_secs: outcome.own_cpu_secs,
            cpu_cores: outcome.own_cpu_secs / secs,
        },
        system: SystemReport {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            busy_cores: outcome.system_busy_secs / secs,
            other_cores: ((outcome.system_busy_secs
                - outcome.server_cpu_secs
                - outcome.own_cpu_secs)
                / secs)
                .max(0.0),
        },
        idle: outcome.idle,
        attack: (ctx.attackers > 0).then(|| Attack {
            attackers: ctx.attackers,
            guesses: outcome.guesses,
            guesses_per_sec: outcome.guesses as f64 / secs,
        }),
    }
}

fn size(octets: u64) -> String {
    let o = octets as f64;
    if o >= 1e6 {
        format!("{:.1} MB", o / 1e6)
    } else if o >= 1e3 {
        format!("{:.1} kB", o / 1e3)
    } else {
        format!("{octets} B")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report {
    fn unit_singular(&self) -> &'static str {
        match self.unit {
            "deliveries" => "delivery",
            "NOOPs" => "NOOP",
            _ => "session",
        }
    }

    /// A short table for people.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let filters = if self.filters.is_empty() {
            "none".to_string()
        } else {
            self.filters.join(" -> ")
        };
        let c = &self.corpus;
        let _ = writeln!(
            t,
            "poplar-bench {mode} against {server}: tls={tls:?}, concurrency {conc}, {users} users x {m} messages ({scheme} passwords), filters: {filters}",
            mode = self.mode.name(),
            server = self.server.kind.name(),
            scheme = self.password_scheme.name(),
            tls = self.tls,
            conc = self.concurrency,
            users = self.users,
            m = self.messages_per_user,
        );
        let _ = writeln!(
            t,
            "  corpus            {} messages, {}, median {}, max {}",
            c.messages,
            size(c.total_octets),
            size(c.median_octets),
            size(c.max_octets)
        );
        if let Some(p) = &self.delivery_pool {
            let _ = writeln!(
                t,
                "  delivery pool     {} messages, median {}, max {}",
                p.messages,
                size(p.median_octets),
                size(p.max_octets)
            );
        }
        let _ = writeln!(
            t,
            "  server            {} ({}, {} build), window {:.2} s after {:.1} s warm-up",
            self.server.binary,
            self.server.version,
            self.server.profile,
            self.window_secs,
            self.warmup_secs
        );
        if let Some(n) = &self.tls_negotiated {
            let _ = writeln!(t, "  TLS               {n}");
        }
        if let Some(a) = &self.attack {
            let _ = writeln!(
                t,
                "  under attack      {} guessers, {} wrong passwords refused ({:.1}/s), \
                 each from its own address; latency below is the honest clients'",
                a.attackers, a.guesses, a.guesses_per_sec
            );
        }
        let _ = writeln!(
            t,
            "  completed         {} {}, {:.1}/s",
            self.completed, self.unit, self.per_sec
        );
        if self.payload_octets > 0 {
            let _ = writeln!(
                t,
                "  payload           {}, {:.2} MB/s",
                size(self.payload_octets),
                self.payload_mb_per_sec
            );
        }
        let l = &self.latency;
        let _ = writeln!(
            t,
            "  latency (ms)      p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}  ({} per {})",
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            l.mean_ms,
            l.samples,
            self.unit_singular(),
        );
        let _ = writeln!(t, "  errors            {}", self.errors);
        for e in &self.first_errors {
            let _ = writeln!(t, "                    - {e}");
        }
        let s = &self.server;
        let mut cpu = format!(
            "{:.2} s ({:.0}% of a core)",
            s.cpu_secs,
            s.cpu_cores * 100.0
        );
        if let Some(us) = s.cpu_us_per_op {
            let _ = write!(cpu, ", {us:.0} us per {}", self.unit_singular());
        }
        if let Some(ms) = s.cpu_ms_per_mb {
            let _ = write!(cpu, ", {ms:.1} ms per MB");
        }
        let _ = writeln!(t, "  server CPU        {cpu}");
        let m = &s.memory_end;
        let _ = writeln!(
            t,
            "  server memory     peak RSS {}; at the end RSS {}, PSS {}{}",
            mib(m.peak_rss_kib),
            mib(m.rss_kib),
            mib(m.pss_kib),
            if m.processes > 1 {
                format!(" (summed over {} processes)", m.processes)
            } else {
                String::new()
            }
        );
        if s.log_warnings + s.log_errors > 0 {
            let _ = writeln!(
                t,
                "  server log        {} warnings, {} errors",
                s.log_warnings, s.log_errors
            );
            for e in &s.first_log_errors {
                let _ = writeln!(t, "                    - {e}");
            }
        }
        let b = &self.bench;
        let _ = writeln!(
            t,
            "  bench CPU         {:.2} s ({:.0}% of a core; {} build, {} worker threads)",
            b.cpu_secs,
            b.cpu_cores * 100.0,
            b.profile,
            b.worker_threads
        );
        let _ = writeln!(
            t,
            "  machine           {} CPUs, {:.2} cores busy, {:.2} of them other processes",
            self.system.cpus, self.system.busy_cores, self.system.other_cores
        );
        if let Some(i) = &self.idle {
            let _ = writeln!(
                t,
                "  idle sessions     {} held (opened in {:.1} s); PSS {} -> {} after the first {}: {:.1} KiB/session (RSS {:.1} KiB/session)",
                i.sessions_held,
                i.open_secs,
                mib(i.before.pss_kib),
                mib(i.after.pss_kib),
                i.baseline_sessions,
                i.pss_per_session_kib,
                i.rss_per_session_kib
            );
        }
        t
    }
}
