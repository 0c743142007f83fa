//! `poplar-bench compare`: the same workloads against Poplar and Dovecot,
//! alternating, several runs each; prints the medians side by side, each
//! with the runs' range (min–max). A run in which any client failed is
//! reported but left out of the medians, and a difference inside the
//! spread of the runs is called "no difference", not a win.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::client::TlsMode;
use crate::report::Report;
use crate::workload::Mode;
use crate::{Cli, ServerKind, Spec, run_one};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Runs of each server per workload (medians are reported).
    #[arg(long, default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    pub runs: u64,
    /// Seconds measured per run.
    #[arg(long, short, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, short, default_value_t = 2.0)]
    pub warmup: f64,
    /// Sessions held by the idle workloads.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(20..=10_000))]
    pub idle_sessions: u64,
    /// Only these workloads (comma-separated names as `--list` prints
    /// them, e.g. `login-plain-c10,retr-tls-c10`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Print the workloads and exit.
    #[arg(long)]
    pub list: bool,
    /// Also write the results (with the machine and the settings) as
    /// Markdown to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Also write every run's full report and the medians as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,
}

/// One workload of the comparison.
#[derive(Clone, Serialize)]
pub struct Workload {
    pub name: String,
    pub mode: Mode,
    pub tls: TlsMode,
    pub concurrency: usize,
}

fn workloads(idle: usize) -> Vec<Workload> {
    let w = |mode: Mode, tls: TlsMode, c: usize| Workload {
        name: format!(
            "{}-{}-c{c}",
            mode.name(),
            match tls {
                TlsMode::None => "plain",
                TlsMode::Stls => "stls",
                TlsMode::Implicit => "tls",
            }
        ),
        mode,
        tls,
        concurrency: c,
    };
    vec![
        w(Mode::Login, TlsMode::None, 10),
        w(Mode::Login, TlsMode::None, 100),
        w(Mode::Login, TlsMode::Implicit, 10),
        w(Mode::Uidl, TlsMode::None, 100),
        w(Mode::Retr, TlsMode::None, 10),
        w(Mode::Retr, TlsMode::Implicit, 10),
        w(Mode::Top, TlsMode::None, 10),
        w(Mode::Idle, TlsMode::None, idle),
        w(Mode::Idle, TlsMode::Implicit, idle),
    ]
}

/// The figures compared, from one run's report.
#[derive(Clone, Default, Serialize)]
pub struct Sample {
    pub cpu_us_per_op: Option<f64>,
    pub cpu_ms_per_mb: Option<f64>,
    pub per_sec: f64,
    pub mb_per_sec: f64,
    pub p99_ms: f64,
    pub pss_per_session_kib: Option<f64>,
    pub server_cores: f64,
    pub bench_cores: f64,
    pub busy_cores: f64,
    pub other_cores: f64,
    pub errors: u64,
    pub server_log_errors: u64,
}

impl Sample {
    fn of(r: &Report) -> Sample {
        Sample {
            cpu_us_per_op: r.server.cpu_us_per_op,
            cpu_ms_per_mb: r.server.cpu_ms_per_mb,
            per_sec: r.per_sec,
            mb_per_sec: r.payload_mb_per_sec,
            p99_ms: r.latency.p99_ms,
            pss_per_session_kib: r.idle.as_ref().map(|i| i.pss_per_session_kib),
            server_cores: r.server.cpu_cores,
            bench_cores: r.bench.cpu_cores,
            busy_cores: r.system.busy_cores,
            other_cores: r.system.other_cores,
            errors: r.errors,
            server_log_errors: r.server.log_errors,
        }
    }
}

/// Which way a figure is better.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    /// Context, not a score (the generator's CPU, the machine's load).
    Neither,
}

struct Figure {
    label: String,
    better: Better,
    get: fn(&Sample) -> Option<f64>,
    /// Decimals shown.
    decimals: usize,
}

fn figures(w: &Workload) -> Vec<Figure> {
    let unit = match w.mode {
        Mode::Idle => "NOOP",
        Mode::Deliver => "delivery",
        _ => "session",
    };
    let payload = matches!(w.mode, Mode::Retr | Mode::Top);
    let mut f = vec![Figure {
        label: format!("server CPU per {unit} (us)"),
        better: Better::Lower,
        get: |s| s.cpu_us_per_op,
        decimals: 1,
    }];
    if payload {
        f.push(Figure {
            label: "server CPU per MB (ms)".into(),
            better: Better::Lower,
            get: |s| s.cpu_ms_per_mb,
            decimals: 2,
        });
    }
    f.push(Figure {
        label: format!("{unit}s/s"),
        better: if w.mode == Mode::Idle {
            // Fixed by the workload: one NOOP per session per second.
            Better::Neither
        } else {
            Better::Higher
        },
        get: |s| Some(s.per_sec),
        decimals: 1,
    });
    if payload {
        f.push(Figure {
            label: "MB/s".into(),
            better: Better::Higher,
            get: |s| Some(s.mb_per_sec),
            decimals: 2,
        });
    }
    f.push(Figure {
        label: format!("p99 latency per {unit} (ms)"),
        better: Better::Lower,
        get: |s| Some(s.p99_ms),
        decimals: 2,
    });
    if w.mode == Mode::Idle {
        f.push(Figure {
            label: "PSS per idle session (KiB)".into(),
            better: Better::Lower,
            get: |s| s.pss_per_session_kib,
            decimals: 1,
        });
    }
    f.extend([
        Figure {
            label: "server CPU (cores)".into(),
            better: Better::Neither,
            get: |s| Some(s.server_cores),
            decimals: 2,
        },
        Figure {
            label: "load generator CPU (cores)".into(),
            better: Better::Neither,
            get: |s| Some(s.bench_cores),
            decimals: 2,
        },
        Figure {
            label: "machine busy (cores)".into(),
            better: Better::Neither,
            get: |s| Some(s.busy_cores),
            decimals: 2,
        },
        Figure {
            label: "other processes (cores)".into(),
            better: Better::Neither,
            get: |s| Some(s.other_cores),
            decimals: 2,
        },
        Figure {
            label: "client errors (sum of runs)".into(),
            better: Better::Neither,
            get: |s| Some(s.errors as f64),
            decimals: 0,
        },
    ]);
    f
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The lowest and highest value of a figure over the runs.
type Range = (f64, f64);

fn range(v: &[f64]) -> Option<Range> {
    let mut finite = v.iter().copied().filter(|x| x.is_finite());
    let first = finite.next()?;
    Some(finite.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
}

#[derive(Serialize)]
struct Row {
    figure: String,
    better: Better,
    poplar: Option<f64>,
    dovecot: Option<f64>,
    /// Min and max over Poplar's counted runs.
    poplar_range: Option<Range>,
    /// Min and max over Dovecot's counted runs.
    dovecot_range: Option<Range>,
    /// Poplar / Dovecot.
    ratio: Option<f64>,
    /// "Poplar 2.4x", "Dovecot 1.3x", "no difference" (the runs' ranges
    /// overlap), or empty for context rows.
    verdict: String,
}

#[derive(Serialize)]
struct WorkloadResult {
    workload: Workload,
    rows: Vec<Row>,
    /// Runs without client errors: the medians are theirs.
    poplar_runs: Vec<Sample>,
    dovecot_runs: Vec<Sample>,
    /// Runs in which clients failed: reported, not counted in the medians.
    poplar_excluded: Vec<Sample>,
    dovecot_excluded: Vec<Sample>,
    /// Runs that failed or had client errors, with why.
    failures: Vec<String>,
    /// Busy CPU reached 90% of the machine in the median run of either
    /// server: throughput and latency are bounded by the CPU the server
    /// shares with the load generator.
    saturated: bool,
    tls_negotiated: Vec<String>,
    reports: Vec<serde_json::Value>,
}

fn verdict(
    better: Better,
    p: Option<f64>,
    d: Option<f64>,
    p_range: Option<Range>,
    d_range: Option<Range>,
) -> (Option<f64>, String) {
    let (Some(p), Some(d)) = (p, d) else {
        return (None, String::new());
    };
    let ratio = (d != 0.0).then(|| p / d);
    if better == Better::Neither {
        return (ratio, String::new());
    }
    let (p_lo, p_hi) = p_range.unwrap_or((p, p));
    let (d_lo, d_hi) = d_range.unwrap_or((d, d));
    if p == d || (p_lo <= d_hi && d_lo <= p_hi) {
        return (ratio, "no difference".into());
    }
    let poplar_wins = (p < d) == (better == Better::Lower);
    let (hi, lo) = if p > d { (p, d) } else { (d, p) };
    let factor = if lo > 0.0 {
        format!("{:.2}x", hi / lo)
    } else {
        "inf".into()
    };
    let who = if poplar_wins { "Poplar" } else { "Dovecot" };
    (ratio, format!("{who} {factor}"))
}

/// The rows of a workload: medians and ranges of the runs without client
/// errors (`p`, `d`); the client errors row sums every run, the excluded
/// ones (`p_excluded`, `d_excluded`) too.
fn summarize(
    w: &Workload,
    (p, p_excluded): (&[Sample], &[Sample]),
    (d, d_excluded): (&[Sample], &[Sample]),
) -> Vec<Row> {
    figures(w)
        .into_iter()
        .map(|f| {
            let stats = |runs: &[Sample], excluded: &[Sample]| -> (Option<f64>, Option<Range>) {
                if f.label.starts_with("client errors") {
                    let all = runs.iter().chain(excluded);
                    let sum = (!runs.is_empty() || !excluded.is_empty())
                        .then(|| all.map(|s| s.errors as f64).sum());
                    return (sum, None);
                }
                let values: Vec<f64> = runs.iter().filter_map(f.get).collect();
                (median(values.clone()), range(&values))
            };
            let ((pm, pr), (dm, dr)) = (stats(p, p_excluded), stats(d, d_excluded));
            let (ratio, verdict) = verdict(f.better, pm, dm, pr, dr);
            Row {
                figure: f.label.clone(),
                better: f.better,
                poplar: pm,
                dovecot: dm,
                poplar_range: pr,
                dovecot_range: dr,
                ratio,
                verdict,
            }
        })
        .collect()
}

/// A median with its range, e.g. `205.1 (198.2–230.4)`; one run, or runs
/// that agree, show the value alone.
fn fmt_spread(v: Option<f64>, r: Option<Range>, decimals: usize) -> String {
    match (v, r) {
        (Some(v), Some((lo, hi))) if format!("{lo:.decimals$}") != format!("{hi:.decimals$}") => {
            format!("{v:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
        }
        _ => fmt(v, decimals),
    }
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".into(),
    }
}

/// The machine, as BENCHMARKS.md records it.
#[derive(Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_gib: f64,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        kernel,
        memory_gib: mem_kib / 1024.0 / 1024.0,
    }
}

#[derive(Serialize)]
struct Summary {
    machine: Machine,
    runs: u64,
    duration_secs: f64,
    warmup_secs: f64,
    password_scheme: &'static str,
    generator_threads: usize,
    poplar_version: String,
    dovecot_version: String,
    workloads: Vec<WorkloadResult>,
}

pub fn run(
    cli: &Cli,
    args: &Args,
    rt: &tokio::runtime::Runtime,
    threads: usize,
) -> Result<ExitCode> {
    crate::check_seconds("duration", args.duration, 0.1, 3600.0)?;
    crate::check_seconds("warmup", args.warmup, 0.0, 600.0)?;
    let all = workloads(args.idle_sessions as usize);
    if args.list {
        for w in &all {
            println!("{}", w.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let chosen: Vec<Workload> = if args.only.is_empty() {
        all.clone()
    } else {
        for name in &args.only {
            if !all.iter().any(|w| &w.name == name) {
                let names: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
                bail!(
                    "--only {name}: no such workload (there are {})",
                    names.join(", ")
                );
            }
        }
        all.into_iter()
            .filter(|w| args.only.contains(&w.name))
            .collect()
    };
    // Fail early, before any run, if either server is missing.
    let dovecot_binary = crate::dovecot::find(cli.dovecot.as_deref())?;
    let poplar_binary = crate::find_poplar(cli)?;
    crate::find_plugins(cli)?;

    let mut results = Vec::new();
    let total = chosen.len() as u64 * args.runs * 2;
    let mut done = 0;
    for w in &chosen {
        let mut runs: [Vec<Sample>; 2] = Default::default();
        let mut excluded: [Vec<Sample>; 2] = Default::default();
        let mut failures = Vec::new();
        let mut tls_negotiated = Vec::new();
        let mut reports = Vec::new();
        for r in 0..args.runs {
            // Alternate which server goes first, so that neither always
            // runs on a machine the other has just warmed (or heated).
            let order = if r % 2 == 0 {
                [ServerKind::Poplar, ServerKind::Dovecot]
            } else {
                [ServerKind::Dovecot, ServerKind::Poplar]
            };
            for server in order {
                done += 1;
                eprintln!(
                    "compare [{done}/{total}]: {} against {}, run {} of {}",
                    w.name,
                    server.name(),
                    r + 1,
                    args.runs
                );
                let spec = Spec {
                    server,
                    mode: w.mode,
                    tls: w.tls,
                    concurrency: w.concurrency,
                    users: w.concurrency,
                    messages: if w.mode == Mode::Idle { 2 } else { 20 },
                    filters: 0,
                    warmup: args.warmup,
                    duration: args.duration,
                    max_message_size: cli.max_message_size,
                    delivery_pool: 0,
                    attackers: 0,
                };
                match run_one(cli, rt, threads, &spec) {
                    Ok(report) => {
                        let s = Sample::of(&report);
                        eprintln!(
                            "compare: {} {}: {:.1} {}/s, server {} us per op, {} errors",
                            w.name,
                            server.name(),
                            report.per_sec,
                            report.unit,
                            fmt(s.cpu_us_per_op, 1),
                            report.errors
                        );
                        let side = (server == ServerKind::Dovecot) as usize;
                        if report.errors > 0 {
                            failures.push(format!(
                                "{} run {}: {} client errors (left out of the medians), e.g. {}",
                                server.name(),
                                r + 1,
                                report.errors,
                                report.first_errors.first().cloned().unwrap_or_default()
                            ));
                            excluded[side].push(s);
                        } else {
                            runs[side].push(s);
                        }
                        if let Some(n) = &report.tls_negotiated {
                            let n = format!("{}: {n}", server.name());
                            if !tls_negotiated.contains(&n) {
                                tls_negotiated.push(n);
                            }
                        }
                        reports.push(serde_json::to_value(&report)?);
                    }
                    Err(e) => {
                        eprintln!(
                            "compare: {} {} run {} FAILED: {e:#}",
                            w.name,
                            server.name(),
                            r + 1
                        );
                        failures.push(format!("{} run {}: {e:#}", server.name(), r + 1));
                    }
                }
            }
        }
        let [p, d] = runs;
        let [p_excluded, d_excluded] = excluded;
        let rows = summarize(w, (&p, &p_excluded), (&d, &d_excluded));
        let busy = |runs: &[Sample]| median(runs.iter().map(|s| s.busy_cores).collect());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let saturated = [busy(&p), busy(&d)]
            .iter()
            .any(|b| b.is_some_and(|b| b >= 0.9 * cpus));
        results.push(WorkloadResult {
            workload: w.clone(),
            rows,
            poplar_runs: p,
            dovecot_runs: d,
            poplar_excluded: p_excluded,
            dovecot_excluded: d_excluded,
            failures,
            saturated,
            tls_negotiated,
            reports,
        });
    }

    let summary = Summary {
        machine: machine(),
        runs: args.runs,
        duration_secs: args.duration,
        warmup_secs: args.warmup,
        password_scheme: cli.password_scheme.name(),
        generator_threads: threads,
        poplar_version: format!(
            "{} ({})",
            crate::version_of(&poplar_binary),
            poplar_binary.display()
        ),
        dovecot_version: format!(
            "Dovecot {} ({})",
            crate::dovecot::version(&dovecot_binary),
            dovecot_binary.display()
        ),
        workloads: results,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", text_table(&summary));
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown(&summary))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("compare: wrote {}", path.display());
    }
    if let Some(path) = &args.json_file {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("compare: wrote {}", path.display());
    }
    let failed = summary.workloads.iter().any(|w| !w.failures.is_empty());
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn decimals_of(w: &Workload, row: &Row) -> usize {
    figures(w)
        .iter()
        .find(|f| f.label == row.figure)
        .map_or(2, |f| f.decimals)
}

fn better_text(b: Better) -> &'static str {
    match b {
        Better::Lower => "lower",
        Better::Higher => "higher",
        Better::Neither => "",
    }
}

fn header(s: &Summary) -> Vec<String> {
    let m = &s.machine;
    vec![
        format!(
            "Machine: {} CPUs ({}), {:.0} GiB, Linux {}",
            m.cpus, m.cpu_model, m.memory_gib, m.kernel
        ),
        format!("Poplar: {}", s.poplar_version),
        format!("Dovecot: {}", s.dovecot_version),
        format!(
            "Median (min–max) of {} run(s) per server, {} s measured after {} s warm-up, \
             alternating; runs with client errors left out; \"no difference\" where the \
             ranges overlap; passwords {}; load generator: {} threads",
            s.runs, s.duration_secs, s.warmup_secs, s.password_scheme, s.generator_threads
        ),
    ]
}

fn notes(s: &Summary) -> Vec<String> {
    let mut n = Vec::new();
    if crate::commit_of(&s.poplar_version).is_some_and(|c| c.ends_with('+')) {
        n.push(
            "the Poplar binary was built from a checkout with uncommitted changes: its \
             commit does not say exactly what was measured"
                .into(),
        );
    }
    let cpus = s.machine.cpus.max(1) as f64;
    for w in &s.workloads {
        let name = &w.workload.name;
        let other = |runs: &[Sample]| median(runs.iter().map(|x| x.other_cores).collect());
        let other = [other(&w.poplar_runs), other(&w.dovecot_runs)]
            .into_iter()
            .flatten()
            .fold(0.0f64, f64::max);
        if other >= 0.25 {
            n.push(format!(
                "{name}: NOT A QUIET MACHINE: other processes used up to {other:.2} cores \
                 (median run): throughput and latency are unreliable, CPU per operation less so"
            ));
        }
        if w.saturated {
            n.push(format!(
                "{name}: CPU-bound: the {cpus:.0} CPUs were >= 90% busy (server + load \
                 generator{}), so sessions/s and latency measure the machine; compare the \
                 server CPU per operation",
                if other >= 0.25 {
                    " + other processes"
                } else {
                    ""
                }
            ));
        }
        for f in &w.failures {
            n.push(format!("{name}: {f}"));
        }
        if !w.tls_negotiated.is_empty() {
            n.push(format!("{name}: TLS {}", w.tls_negotiated.join("; ")));
        }
        let log_errors: u64 = w
            .poplar_runs
            .iter()
            .chain(&w.dovecot_runs)
            .map(|s| s.server_log_errors)
            .sum();
        if log_errors > 0 {
            n.push(format!(
                "{name}: {log_errors} error lines in the servers' logs (see --json-file)"
            ));
        }
    }
    n
}

fn text_table(s: &Summary) -> String {
    let mut t = String::new();
    for h in header(s) {
        let _ = writeln!(t, "{h}");
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "{:<18} {:<32} {:>26} {:>26} {:>9}  {:<7} verdict",
        "workload", "figure", "Poplar", "Dovecot", "P/D", "better"
    );
    for w in &s.workloads {
        for (i, row) in w.rows.iter().enumerate() {
            let d = decimals_of(&w.workload, row);
            let _ = writeln!(
                t,
                "{:<18} {:<32} {:>26} {:>26} {:>9}  {:<7} {}",
                if i == 0 { w.workload.name.as_str() } else { "" },
                row.figure,
                fmt_spread(row.poplar, row.poplar_range, d),
                fmt_spread(row.dovecot, row.dovecot_range, d),
                fmt(row.ratio, 2),
                better_text(row.better),
                row.verdict
            );
        }
        let _ = writeln!(t);
    }
    let notes = notes(s);
    if !notes.is_empty() {
        let _ = writeln!(t, "Notes:");
        for n in notes {
            let _ = writeln!(t, "  - {n}");
        }
    }
    t
}

fn markdown(s: &Summary) -> String {
    let mut t = String::new();
    for h in header(s) {
        let _ = writeln!(t, "- {h}");
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| workload | figure | Poplar | Dovecot | Poplar/Dovecot | better | verdict |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---|---|");
    for w in &s.workloads {
        for (i, row) in w.rows.iter().enumerate() {
            let d = decimals_of(&w.workload, row);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} |",
                if i == 0 {
                    format!("**{}**", w.workload.name)
                } else {
                    String::new()
                },
                row.figure,
                fmt_spread(row.poplar, row.poplar_range, d),
                fmt_spread(row.dovecot, row.dovecot_range, d),
                fmt(row.ratio, 2),
                better_text(row.better),
                row.verdict
            );
        }
    }
    let notes = notes(s);
    if !notes.is_empty() {
        let _ = writeln!(t);
        for n in notes {
            let _ = writeln!(t, "- {n}");
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn verdicts_point_the_right_way() {
        let v = |b, p, d| verdict(b, Some(p), Some(d), None, None);
        assert_eq!(v(Better::Lower, 1.0, 4.0).1, "Poplar 4.00x");
        assert_eq!(v(Better::Higher, 1.0, 4.0).1, "Dovecot 4.00x");
        assert_eq!(v(Better::Higher, 6.0, 3.0).1, "Poplar 2.00x");
        assert_eq!(v(Better::Neither, 6.0, 3.0).1, "");
        assert_eq!(v(Better::Lower, 6.0, 3.0).0, Some(2.0));
        assert_eq!(v(Better::Lower, 3.0, 3.0).1, "no difference");
    }

    #[test]
    fn a_difference_inside_the_spread_is_no_difference() {
        // Medians 100 and 110, but Poplar's runs reached 112.
        let overlap = verdict(
            Better::Lower,
            Some(100.0),
            Some(110.0),
            Some((90.0, 112.0)),
            Some((105.0, 115.0)),
        );
        assert_eq!(overlap.1, "no difference");
        let apart = verdict(
            Better::Lower,
            Some(100.0),
            Some(110.0),
            Some((95.0, 104.0)),
            Some((105.0, 115.0)),
        );
        assert_eq!(apart.1, "Poplar 1.10x");
    }

    fn sample(cpu: f64, errors: u64) -> Sample {
        Sample {
            cpu_us_per_op: Some(cpu),
            per_sec: 1000.0,
            errors,
            ..Sample::default()
        }
    }

    #[test]
    fn runs_with_client_errors_are_left_out_of_the_medians() {
        let w = &workloads(100)[0];
        let poplar = [sample(100.0, 0), sample(120.0, 0), sample(110.0, 0)];
        // A Dovecot run whose clients failed did little work cheaply: it
        // must not pull the median down.
        let dovecot = [sample(400.0, 0), sample(420.0, 0)];
        let dovecot_failed = [sample(5.0, 37)];
        let rows = summarize(w, (&poplar, &[]), (&dovecot, &dovecot_failed));
        let cpu = &rows[0];
        assert_eq!(cpu.figure, "server CPU per session (us)");
        assert_eq!(cpu.poplar, Some(110.0));
        assert_eq!(cpu.poplar_range, Some((100.0, 120.0)));
        assert_eq!(cpu.dovecot, Some(410.0));
        assert_eq!(cpu.dovecot_range, Some((400.0, 420.0)));
        assert_eq!(cpu.verdict, "Poplar 3.73x");
        assert_eq!(
            fmt_spread(cpu.poplar, cpu.poplar_range, 1),
            "110.0 (100.0–120.0)"
        );
        assert_eq!(fmt_spread(Some(3.0), Some((3.0, 3.0)), 1), "3.0");
        let errors = rows
            .iter()
            .find(|r| r.figure.starts_with("client errors"))
            .unwrap();
        assert_eq!(errors.dovecot, Some(37.0));
        assert_eq!(errors.poplar, Some(0.0));
        // Sessions/s equal in every run: no difference.
        let rate = rows.iter().find(|r| r.figure == "sessions/s").unwrap();
        assert_eq!(rate.verdict, "no difference");
    }

    #[test]
    fn workload_names_are_unique() {
        let w = workloads(100);
        let mut names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), w.len());
        assert!(names.contains(&"idle-tls-c100"));
    }
}
