//! The workloads: many concurrent clients, a warm-up, a measured window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout};

use crate::client::{Conn, Target, shown};
use crate::corpus::Rng;
use crate::server::{self, Memory};
use crate::setup::{DOMAIN, password};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// USER/PASS, STAT, QUIT per session.
    Login,
    /// Log in, UIDL, QUIT.
    Uidl,
    /// Log in, LIST, RETR every message (sizes checked against LIST), QUIT.
    Retr,
    /// Log in, TOP n 0 for every message, QUIT.
    Top,
    /// Hold `concurrency` logged-in sessions, NOOP on each every second.
    Idle,
    /// LMTP deliveries, one recipient each, over `concurrency` connections.
    Deliver,
}

impl Mode {
    pub const ALL: [Mode; 6] = [
        Mode::Login,
        Mode::Uidl,
        Mode::Retr,
        Mode::Top,
        Mode::Idle,
        Mode::Deliver,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Login => "login",
            Mode::Uidl => "uidl",
            Mode::Retr => "retr",
            Mode::Top => "top",
            Mode::Idle => "idle",
            Mode::Deliver => "deliver",
        }
    }
}

/// A session (or delivery, or NOOP) that takes longer than this is an
/// error.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed session, so that a broken server is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Error messages kept verbatim.
const KEEP_ERRORS: usize = 5;

#[derive(Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn contains(&self, t: Instant) -> bool {
        t >= self.start && t <= self.end
    }
}

#[derive(Default)]
pub struct Stats {
    /// Latency of every operation completed in the window, microseconds.
    pub latencies_us: Vec<u64>,
    pub completed: u64,
    /// Payload octets received (RETR/TOP) or delivered in the window.
    pub octets: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
}

impl Stats {
    fn record(&mut self, latency: Duration) {
        self.completed += 1;
        self.latencies_us.push(latency.as_micros() as u64);
    }

    fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        let text = format!("{e:#}");
        if self.first_errors.len() < KEEP_ERRORS && !self.first_errors.contains(&text) {
            self.first_errors.push(text);
        }
    }

    fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.completed += other.completed;
        self.octets += other.octets;
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < KEEP_ERRORS && !self.first_errors.contains(&e) {
                self.first_errors.push(e);
            }
        }
    }
}

/// One LMTP message, ready to send.
pub struct Delivery {
    pub from: String,
    /// CRLF, dot-stuffed, with the final ".\r\n".
    pub wire: Vec<u8>,
    /// Size with CRLF before dot-stuffing: the payload counted.
    pub octets: u64,
}

pub struct Plan {
    pub mode: Mode,
    pub concurrency: usize,
    pub users: usize,
    /// Messages in every mailbox (POP3 modes check it).
    pub messages: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub server_pid: u32,
    pub deliveries: Arc<Vec<Delivery>>,
    pub seed: u64,
    /// Password guessers beside the workload.
    pub attackers: usize,
}

/// Memory of the server before and after opening the idle sessions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IdleMemory {
    /// Sessions opened before the "before" sample (one-time costs such as
    /// warm plugin instances are paid by them).
    pub baseline_sessions: usize,
    pub sessions_held: usize,
    pub before: Memory,
    pub after: Memory,
    pub pss_per_session_kib: f64,
    pub rss_per_session_kib: f64,
    pub open_secs: f64,
}

pub struct Outcome {
    pub stats: Stats,
    pub window_secs: f64,
    pub server_cpu_secs: f64,
    pub own_cpu_secs: f64,
    /// Busy CPU of the whole machine over the window.
    pub system_busy_secs: f64,
    /// The server's memory at the end of the window (sessions still open).
    pub memory_end: Memory,
    pub idle: Option<IdleMemory>,
    /// Guesses the attackers had answered (all refused) in the window.
    pub guesses: u64,
}

struct WindowSample {
    secs: f64,
    server_cpu: f64,
    own_cpu: f64,
    system_busy: f64,
    memory_end: Memory,
}

/// CPU of the server and of this process over exactly the window.
async fn sample_window(pid: u32, window: Window) -> Result<WindowSample> {
    sleep_until(window.start.into()).await;
    let sample = || -> Result<(f64, f64, f64, Instant)> {
        Ok((
            server::tree_cpu(pid)?,
            server::own_cpu(),
            server::system_busy(),
            Instant::now(),
        ))
    };
    let (s0, o0, b0, t0) = sample()?;
    sleep_until(window.end.into()).await;
    let (s1, o1, b1, t1) = sample()?;
    Ok(WindowSample {
        secs: (t1 - t0).as_secs_f64(),
        server_cpu: s1 - s0,
        own_cpu: o1 - o0,
        system_busy: b1 - b0,
        memory_end: server::tree_memory(pid)?,
    })
}

pub async fn run(plan: Plan, target: Arc<Target>) -> Result<Outcome> {
    if plan.mode == Mode::Idle {
        return run_idle(plan, target).await;
    }
    let start = Instant::now() + plan.warmup;
    let window = Window {
        start,
        end: start + plan.duration,
    };
    let sampler = tokio::spawn(sample_window(plan.server_pid, window));
    let mut tasks = JoinSet::new();
    for i in 0..plan.concurrency {
        let target = target.clone();
        let user = format!("u{}", i % plan.users);
        if plan.mode == Mode::Deliver {
            let rng = Rng::derive(plan.seed, 1_000_000 + i as u64);
            tasks.spawn(deliver_client(
                target,
                window,
                user,
                plan.deliveries.clone(),
                rng,
            ));
        } else {
            tasks.spawn(pop3_client(plan.mode, target, window, user, plan.messages));
        }
    }
    let guesses = Arc::new(AtomicU64::new(0));
    let mut attackers = JoinSet::new();
    for a in 0..plan.attackers {
        attackers.spawn(attacker(
            target.clone(),
            window,
            a,
            plan.attackers,
            guesses.clone(),
        ));
    }
    let mut stats = Stats::default();
    while let Some(r) = tasks.join_next().await {
        stats.merge(r?);
    }
    attackers.abort_all();
    while let Some(r) = attackers.join_next().await {
        if let Ok(Err(e)) = r {
            bail!("attacker: {e:#}");
        }
    }
    let sample = sampler.await??;
    Ok(Outcome {
        stats,
        window_secs: sample.secs,
        server_cpu_secs: sample.server_cpu,
        own_cpu_secs: sample.own_cpu,
        system_busy_secs: sample.system_busy,
        memory_end: sample.memory_end,
        idle: None,
        guesses: guesses.load(Ordering::Relaxed),
    })
}

/// Guesses passwords until the window ends: one wrong PASS per
/// connection, each from the next of its loopback addresses (attacker `n`
/// of `of` takes every `of`-th address of 127.64.0.0/10). Counts the
/// refusals that came back inside the window; anything but a refusal is
/// an error (a guess must never succeed).
async fn attacker(
    target: Arc<Target>,
    window: Window,
    n: usize,
    of: usize,
    guesses: Arc<AtomicU64>,
) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let base = u32::from(std::net::Ipv4Addr::new(127, 64, 0, 1));
    let mut next = n as u32;
    while Instant::now() < window.end {
        let local = std::net::Ipv4Addr::from(base + next % (1 << 22));
        next = next.wrapping_add(of as u32);
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((local, 0).into())?;
        let tcp = socket.connect(target.plain).await?;
        let mut conn = BufReader::new(tcp);
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        if !line.starts_with("+OK") {
            bail!("{local}: greeting {line:?}");
        }
        for (command, expect) in [
            ("USER u0\r\n", "+OK"),
            ("PASS not-the-password\r\n", "-ERR"),
        ] {
            conn.get_mut().write_all(command.as_bytes()).await?;
            line.clear();
            conn.read_line(&mut line).await?;
            if !line.starts_with(expect) {
                bail!("{local}: {} answered {line:?}", command.trim_end());
            }
        }
        let now = Instant::now();
        if now >= window.start && now < window.end {
            guesses.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Waits `ERROR_PAUSE`, but not past the end of the window.
async fn pause(window: &Window) {
    let until = (Instant::now() + ERROR_PAUSE).min(window.end);
    sleep_until(until.into()).await;
}

async fn pop3_client(
    mode: Mode,
    target: Arc<Target>,
    window: Window,
    user: String,
    expected: usize,
) -> Stats {
    let password = password(&user);
    let mut stats = Stats::default();
    let mut octets = 0u64;
    loop {
        let start = Instant::now();
        if start >= window.end {
            break;
        }
        // A session still running at the end of the window is abandoned
        // (it counts neither as completed nor as an error).
        let r = tokio::select! {
            r = timeout(
                SESSION_TIMEOUT,
                pop3_session(mode, &target, &user, &password, expected, &window, &mut octets),
            ) => r,
            _ = sleep_until(window.end.into()) => break,
        };
        let done = Instant::now();
        match r.unwrap_or_else(|_| Err(anyhow!("session timed out"))) {
            Ok(()) => {
                if window.contains(done) {
                    stats.record(done - start);
                }
            }
            Err(e) => {
                stats.error(&e.context(format!("{} session as {user}", mode.name())));
                pause(&window).await;
            }
        }
    }
    stats.octets = octets;
    stats
}

/// "+OK 3 1234" -> (3, 1234).
fn parse_stat(line: &[u8]) -> Result<(usize, u64)> {
    let text = std::str::from_utf8(line)?;
    let mut it = text.split_whitespace().skip(1);
    let parse = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
    match (parse(it.next()), parse(it.next())) {
        (Some(n), Some(size)) => Ok((n as usize, size)),
        _ => bail!("bad STAT reply: {}", shown(line)),
    }
}

/// A LIST line "1 1234\r\n" -> (1, 1234).
fn parse_list_line(line: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut it = text.split_whitespace();
    let n = it.next()?.parse().ok()?;
    let size = it.next()?.parse().ok()?;
    Some((n, size))
}

async fn pop3_session(
    mode: Mode,
    target: &Target,
    user: &str,
    password: &str,
    expected: usize,
    window: &Window,
    octets: &mut u64,
) -> Result<()> {
    let mut c = Conn::pop3_login(target, user, password).await?;
    match mode {
        Mode::Login => {
            c.ok("STAT").await?;
            let (n, _) = parse_stat(&c.line)?;
            if n != expected {
                bail!("STAT: {n} messages, expected {expected}");
            }
        }
        Mode::Uidl => {
            c.ok("UIDL").await?;
            let (n, _) = c.multiline(|_| {}).await?;
            if n != expected as u64 {
                bail!("UIDL: {n} lines, expected {expected}");
            }
        }
        Mode::Retr => {
            c.ok("LIST").await?;
            let mut list = Vec::with_capacity(expected);
            let mut bad = false;
            c.multiline(|l| match parse_list_line(l) {
                Some(entry) => list.push(entry),
                None => bad = true,
            })
            .await?;
            if bad || list.len() != expected {
                bail!(
                    "LIST: {} entries (bad lines: {bad}), expected {expected}",
                    list.len()
                );
            }
            for (n, size) in list {
                c.ok(&format!("RETR {n}")).await?;
                let (_, got) = c.multiline(|_| {}).await?;
                if got != size {
                    bail!("RETR {n}: {got} octets, LIST said {size}");
                }
                if window.contains(Instant::now()) {
                    *octets += got;
                }
            }
        }
        Mode::Top => {
            c.ok("STAT").await?;
            let (n, _) = parse_stat(&c.line)?;
            if n != expected {
                bail!("STAT: {n} messages, expected {expected}");
            }
            for i in 1..=n {
                c.ok(&format!("TOP {i} 0")).await?;
                let mut last_empty = false;
                let (_, got) = c.multiline(|l| last_empty = l == b"\r\n").await?;
                if !last_empty {
                    bail!("TOP {i} 0 did not end with the empty line");
                }
                if window.contains(Instant::now()) {
                    *octets += got;
                }
            }
        }
        Mode::Idle | Mode::Deliver => unreachable!("not a POP3 session workload"),
    }
    c.ok("QUIT").await?;
    Ok(())
}

async fn deliver_client(
    target: Arc<Target>,
    window: Window,
    user: String,
    pool: Arc<Vec<Delivery>>,
    mut rng: Rng,
) -> Stats {
    let rcpt = format!("{user}@{DOMAIN}");
    let mut stats = Stats::default();
    let mut octets = 0u64;
    let mut conn: Option<Conn> = None;
    loop {
        let start = Instant::now();
        if start >= window.end {
            break;
        }
        let msg = &pool[rng.below(pool.len())];
        let r = tokio::select! {
            r = timeout(SESSION_TIMEOUT, deliver_one(&mut conn, &target, &rcpt, msg)) => r,
            _ = sleep_until(window.end.into()) => break,
        };
        let done = Instant::now();
        match r.unwrap_or_else(|_| Err(anyhow!("delivery timed out"))) {
            Ok(()) => {
                if window.contains(done) {
                    stats.record(done - start);
                    octets += msg.octets;
                }
            }
            Err(e) => {
                conn = None;
                stats.error(&e.context(format!("delivery to {rcpt}")));
                pause(&window).await;
            }
        }
    }
    stats.octets = octets;
    stats
}

/// One LMTP transaction on a kept-open connection (as an MTA's connection
/// cache does), opening it first if needed. MAIL, RCPT and DATA are
/// pipelined.
async fn deliver_one(
    conn: &mut Option<Conn>,
    target: &Target,
    rcpt: &str,
    msg: &Delivery,
) -> Result<()> {
    if conn.is_none() {
        *conn = Some(Conn::lmtp(target).await?);
    }
    let c = conn.as_mut().expect("just opened");
    let envelope = format!(
        "MAIL FROM:<{}> SIZE={}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n",
        msg.from, msg.octets
    );
    c.send_raw(envelope.as_bytes()).await?;
    c.expect(250, "MAIL FROM").await?;
    c.expect(250, "RCPT TO").await?;
    c.expect(354, "DATA").await?;
    c.send_raw(&msg.wire).await?;
    c.expect(250, "end of DATA").await?;
    Ok(())
}

/// Opens sessions `range` concurrently (at most 50 handshakes at a time).
async fn open_sessions(
    target: &Arc<Target>,
    range: std::ops::Range<usize>,
    users: usize,
    stats: &mut Stats,
) -> Vec<(usize, Conn)> {
    let gate = Arc::new(tokio::sync::Semaphore::new(50));
    let mut tasks = JoinSet::new();
    for i in range {
        let (target, gate) = (target.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let user = format!("u{}", i % users);
            let r = timeout(
                SESSION_TIMEOUT,
                Conn::pop3_login(&target, &user, &password(&user)),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow!("login timed out")));
            (i, user, r)
        });
    }
    let mut conns = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((i, _, Ok(c))) => conns.push((i, c)),
            Ok((_, user, Err(e))) => {
                stats.error(&e.context(format!("opening idle session as {user}")))
            }
            Err(e) => stats.error(&anyhow!(e)),
        }
    }
    conns
}

async fn run_idle(plan: Plan, target: Arc<Target>) -> Result<Outcome> {
    let n = plan.concurrency;
    let pid = plan.server_pid;
    let mut stats = Stats::default();
    let opening = Instant::now();
    let baseline = if n >= 20 { 10 } else { 0 };
    let mut conns = open_sessions(&target, 0..baseline, plan.users, &mut stats).await;
    let held_before = conns.len();
    sleep(Duration::from_millis(300)).await;
    let before = server::tree_memory(pid)?;
    conns.extend(open_sessions(&target, baseline..n, plan.users, &mut stats).await);
    let open_secs = opening.elapsed().as_secs_f64();
    sleep(Duration::from_millis(500)).await;
    let after = server::tree_memory(pid)?;
    let added = (conns.len() - held_before).max(1) as f64;
    let idle = IdleMemory {
        baseline_sessions: held_before,
        sessions_held: conns.len(),
        before,
        after,
        pss_per_session_kib: (after.pss_kib as f64 - before.pss_kib as f64) / added,
        rss_per_session_kib: (after.rss_kib as f64 - before.rss_kib as f64) / added,
        open_secs,
    };

    let t0 = Instant::now();
    let start = t0 + plan.warmup;
    let window = Window {
        start,
        end: start + plan.duration,
    };
    let sampler = tokio::spawn(sample_window(pid, window));
    let mut tasks = JoinSet::new();
    for (i, conn) in conns {
        // Spread the NOOPs evenly over each second.
        let offset = Duration::from_micros(1_000_000 * i as u64 / n as u64);
        tasks.spawn(idle_client(conn, t0 + offset, window));
    }
    while let Some(r) = tasks.join_next().await {
        stats.merge(r?);
    }
    let sample = sampler.await??;
    Ok(Outcome {
        stats,
        window_secs: sample.secs,
        server_cpu_secs: sample.server_cpu,
        own_cpu_secs: sample.own_cpu,
        system_busy_secs: sample.system_busy,
        memory_end: sample.memory_end,
        idle: Some(idle),
        guesses: 0,
    })
}

async fn idle_client(mut conn: Conn, first: Instant, window: Window) -> Stats {
    let mut stats = Stats::default();
    let mut next = first;
    while next < window.end {
        sleep_until(next.into()).await;
        let start = Instant::now();
        match timeout(SESSION_TIMEOUT, conn.ok("NOOP")).await {
            Ok(Ok(())) => {
                if window.contains(start) {
                    stats.record(start.elapsed());
                }
            }
            Ok(Err(e)) => {
                stats.error(&e.context("NOOP on an idle session"));
                return stats;
            }
            Err(_) => {
                stats.error(&anyhow!("NOOP on an idle session timed out"));
                return stats;
            }
        }
        next += Duration::from_secs(1);
    }
    // Held until the window's end sample has been taken.
    sleep_until((window.end + Duration::from_millis(300)).into()).await;
    if let Ok(Err(e)) = timeout(Duration::from_secs(10), conn.ok("QUIT")).await {
        stats.error(&e.context("QUIT of an idle session"));
    }
    stats
}
