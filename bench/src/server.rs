//! The `poplar serve` process under test, and what /proc says about it
//! and about the benchmark itself.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// How long the server may take to print its addresses (the first start
/// compiles the plugins into the cache).
const START_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Server {
    child: Child,
    pub pid: u32,
    pub plain: SocketAddr,
    pub implicit: SocketAddr,
    pub lmtp: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    pub fn start(poplar: &Path, config: &Path, log: PathBuf, log_level: &str) -> Result<Server> {
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(poplar)
            .args(["serve", "--config"])
            .arg(config)
            .env("POPLAR_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", poplar.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Keep draining so that the server never blocks on
                    // a full pipe.
                    continue;
                }
            }
        });
        let mut server = Server {
            child,
            pid,
            plain: ([0, 0, 0, 0], 0).into(),
            implicit: ([0, 0, 0, 0], 0).into(),
            lmtp: ([0, 0, 0, 0], 0).into(),
            log,
        };
        let (mut plain, mut implicit, mut lmtp) = (None, None, None);
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while plain.is_none() || implicit.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => {
                    let why = match e {
                        mpsc::RecvTimeoutError::Timeout => "did not listen in time",
                        mpsc::RecvTimeoutError::Disconnected => "exited before listening",
                    };
                    bail!("poplar {why}; its log:\n{}", server.log_tail(30));
                }
            };
            // "lmtp listening on ADDR" lines come first, then
            // "listening on 127.0.0.1:PORT (mode)".
            if let Some(addr) = line.strip_prefix("lmtp listening on ") {
                if let Ok(a) = addr.trim().parse() {
                    lmtp.get_or_insert(a);
                }
            } else if let Some(rest) = line.strip_prefix("listening on ") {
                let addr: SocketAddr = rest
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .with_context(|| format!("parsing {line:?}"))?;
                if rest.contains("implicit") {
                    implicit = Some(addr);
                } else {
                    plain = Some(addr);
                }
            }
        }
        server.plain = plain.expect("loop condition");
        server.implicit = implicit.expect("loop condition");
        server.lmtp = lmtp.ok_or_else(|| anyhow!("poplar printed no LMTP address"))?;
        Ok(server)
    }

    /// Fails if the server has died.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "poplar exited during the run ({status}); its log:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Counts WARN and ERROR lines in the log and returns the first few
    /// ERROR lines.
    pub fn log_problems(&self) -> (u64, u64, Vec<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let (mut warn, mut error, mut first) = (0, 0, Vec::new());
        for line in text.lines() {
            if line.contains(" WARN ") {
                warn += 1;
            } else if line.contains(" ERROR ") {
                error += 1;
                if first.len() < 3 {
                    first.push(line.chars().take(300).collect());
                }
            }
        }
        (warn, error, first)
    }

    /// SIGTERM, then SIGKILL if it does not exit within 5 s.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The fields of `/proc/<pid>/stat` after the command name, which may
/// contain spaces: `fields[0]` is field 3 (state), `fields[1]` the ppid,
/// `fields[11]`/`[12]` utime/stime, `[13]`/`[14]` cutime/cstime,
/// `[19]` the start time.
fn stat_fields(pid: u32) -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?
        .1;
    // The state is a letter: keep the positions, parse the numbers.
    Ok(rest
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .collect())
}

fn field(fields: &[u64], i: usize, pid: u32) -> Result<u64> {
    fields
        .get(i)
        .copied()
        .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))
}

/// `root` and every live process descending from it (children first
/// found by scanning `/proc`), `root` first.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(f) = stat_fields(pid)
                && let Some(&ppid) = f.get(1)
            {
                children.entry(ppid as u32).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        if let Some(c) = children.get(&tree[i]) {
            tree.extend(c);
        }
        i += 1;
    }
    tree
}

/// CPU time of a process, all its threads (those that exited too),
/// seconds with nanosecond precision, from its CPU-time clock
/// (`clock_getcpuclockid`); `None` if it is gone.
fn process_clock(pid: u32) -> Option<f64> {
    // SAFETY: both calls write into the zeroed values we hand them.
    unsafe {
        let mut clock: libc::clockid_t = 0;
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) != 0 {
            return None;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clock, &mut ts) != 0 {
            return None;
        }
        Some(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
    }
}

/// CPU time of a whole process tree, seconds: the CPU time of `root` and
/// of every live descendant, plus their cutime + cstime. cutime/cstime
/// hold the time of the children a process has reaped, so a worker that
/// exited (e.g. a Dovecot pop3 process after its session) still counts
/// once it is reaped, and before that it is a live (zombie) descendant.
/// Nothing counts twice. For a single process (poplar) this is its own
/// CPU.
///
/// A live process's own time comes from its CPU-time clock (nanoseconds;
/// the same sum of user and system time as /proc's utime + stime, which
/// are in 10 ms clock ticks), falling back to utime + stime.
pub fn tree_cpu(root: u32) -> Result<f64> {
    let clk = clock_ticks();
    let mut secs = 0.0;
    for (i, pid) in process_tree(root).into_iter().enumerate() {
        let f = match stat_fields(pid) {
            Ok(f) => f,
            // A descendant may have exited since the scan; its time is in
            // its parent's cutime now (or will be when reaped).
            Err(_) if i > 0 => continue,
            Err(e) => return Err(e),
        };
        let own = match process_clock(pid) {
            Some(s) => s,
            None => (field(&f, 11, pid)? + field(&f, 12, pid)?) as f64 / clk,
        };
        let reaped = (field(&f, 13, pid)? + field(&f, 14, pid)?) as f64 / clk;
        secs += own + reaped;
    }
    Ok(secs)
}

/// The start time of a process (clock ticks since boot), to tell it from a
/// later process that reuses its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).ok().and_then(|f| f.get(19).copied())
}

/// CPU time all processes on the machine spent busy (user, nice, system,
/// irq, softirq, steal), seconds, from /proc/stat: with the server's and
/// our own CPU subtracted it shows how much else was running.
pub fn system_busy() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 / clock_ticks()
}

/// The benchmark's own CPU time (user + system, all threads), seconds.
pub fn own_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we hand it.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Memory of a process, or summed over a process tree, KiB.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Memory {
    /// VmHWM: peak resident set size since the process started (for a
    /// tree: the sum of the live processes' peaks).
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    /// Proportional set size (shared pages divided among their users):
    /// summed over a tree, shared libraries count once in total.
    pub pss_kib: u64,
    /// Processes summed (1 for poplar).
    pub processes: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        peak_rss_kib: field(&status, "VmHWM:"),
        rss_kib: field(&status, "VmRSS:"),
        pss_kib: field(&rollup, "Pss:"),
        processes: 1,
    })
}

/// Memory summed over `root` and its live descendants.
pub fn tree_memory(root: u32) -> Result<Memory> {
    let mut sum = memory(root)?;
    for pid in process_tree(root).into_iter().skip(1) {
        // Processes that exited since the scan are skipped.
        if let Ok(m) = memory(pid) {
            sum.peak_rss_kib += m.peak_rss_kib;
            sum.rss_kib += m.rss_kib;
            sum.pss_kib += m.pss_kib;
            sum.processes += 1;
        }
    }
    Ok(sum)
}

/// Lets the benchmark (and the server it starts, which inherits it) open
/// many descriptors: the soft limit goes up to the hard one, and the hard
/// one (with the privilege to) up to `want` (within fs.nr_open). Returns
/// the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        let want = want.min(nr_open) as libc::rlim_t;
        if r.rlim_max < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return want as u64;
            }
        }
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur as u64
    }
}
