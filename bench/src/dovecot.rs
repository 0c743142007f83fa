//! Dovecot as the server under test, for side-by-side numbers: the same
//! generated corpus, passwd-file and certificate as Poplar gets, served by
//! `dovecot -F -c <generated dovecot.conf>` on free loopback ports.
//!
//! The configuration is Dovecot tuned the way its documentation advises
//! for speed ("Performance tuning", "Login processes"): login processes in
//! high-performance mode (`service_count = 0`, `process_min_avail` = the
//! CPUs), pop3 processes reused for 100 sessions with some kept forked,
//! `pop3_no_flag_updates`, `maildir_very_dirty_syncs`, and limits large
//! enough for every session the run opens. There is no authentication
//! cache (Poplar has none either). See `config()`.
//!
//! Dovecot is a tree of processes (master, log, config, anvil, auth,
//! stats, pop3-login, one pop3 per session), so its CPU and memory are
//! summed over the master's whole process tree (`server::tree_cpu`,
//! `server::tree_memory`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::server;

/// How long Dovecot may take to greet on its POP3 port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Debian, Fedora and source builds put Dovecot's pop3 binary.
const POP3_BINARIES: [&str; 3] = [
    "/usr/lib/dovecot/pop3",
    "/usr/libexec/dovecot/pop3",
    "/usr/local/libexec/dovecot/pop3",
];

/// The `dovecot` binary: `explicit`, else on PATH or in /usr/sbin.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf> {
    const HOW: &str = "install Dovecot 2.3 (Debian: apt-get install dovecot-core \
                       dovecot-pop3d) or pass --dovecot PATH";
    let binary = match explicit {
        Some(p) if p.is_file() => p.to_path_buf(),
        Some(p) => bail!("--dovecot {}: no such file", p.display()),
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
                .map(|d| d.join("dovecot"))
                .find(|p| p.is_file())
                .ok_or_else(|| anyhow!("Dovecot is not installed (no `dovecot`): {HOW}"))?
        }
    };
    if explicit.is_none() && !POP3_BINARIES.iter().any(|p| Path::new(p).is_file()) {
        bail!("Dovecot's POP3 server is not installed (none of {POP3_BINARIES:?}): {HOW}");
    }
    Ok(binary)
}

/// `dovecot --version`, e.g. "2.3.19.1 (9b53102964)".
pub fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A free loopback port (bound, then released for Dovecot to take).
fn free_ports() -> Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// uid and gid of `user` (from `id`), or of this process.
fn ids(user: Option<&str>) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let mut cmd = Command::new("id");
        cmd.arg(flag);
        if let Some(u) = user {
            cmd.arg(u);
        }
        let out = cmd.output().context("running id")?;
        if !out.status.success() {
            bail!(
                "id {flag} {}: {}",
                user.unwrap_or(""),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

fn names() -> Result<(String, String)> {
    let name = |flag: &str| -> Result<String> {
        let out = Command::new("id").arg(flag).output()?;
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    };
    Ok((name("-un")?, name("-gn")?))
}

/// The process limits: every session the run opens, and room to spare.
pub struct Limits {
    pub process_limit: usize,
    pub client_limit: usize,
}

impl Limits {
    pub fn for_sessions(sessions: usize) -> Limits {
        let process_limit = (sessions + 200).max(1000);
        Limits {
            process_limit,
            // anvil and auth take a connection from every login and mail
            // process: Dovecot warns unless they can.
            client_limit: 2 * process_limit + 100,
        }
    }
}

/// The generated `dovecot.conf`. `process_users` is empty as root (mail
/// processes then run as `mail_uid`), else the lines that run every
/// process as the current user without chroots.
fn config(
    root: &Path,
    ports: (u16, u16),
    (uid, gid): (u32, u32),
    process_users: &str,
    limits: &Limits,
) -> String {
    let r = root.display();
    let dh = Path::new("/usr/share/dovecot/dh.pem");
    let ssl_dh = if dh.is_file() {
        format!("ssl_dh = <{}\n", dh.display())
    } else {
        String::new()
    };
    let cpus = cpus();
    format!(
        "# Written by poplar-bench: Dovecot tuned for speed (see BENCHMARKS.md).
protocols = pop3
listen = 127.0.0.1
base_dir = {r}/dovecot/run
state_dir = {r}/dovecot/state
instance_name = poplar-bench
log_path = {r}/dovecot/dovecot.log
{process_users}first_valid_uid = 1
mail_uid = {uid}
mail_gid = {gid}

# Mail: the bench's Maildirs (one per user, messages in cur/ with S= and W=
# sizes in their names). Dovecot keeps its index and dovecot-uidlist there.
mail_location = maildir:{r}/mail/%u
mail_fsync = optimized
maildir_very_dirty_syncs = yes
pop3_uidl_format = %08Xu%08Xv
pop3_no_flag_updates = yes
pop3_fast_size_lookups = yes

# Authentication: the same passwd-file as Poplar's, no cache.
disable_plaintext_auth = no
auth_mechanisms = plain
auth_cache_size = 0
passdb {{
  driver = passwd-file
  args = {r}/etc/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={r}/mail/%u
}}

# TLS: the same self-signed certificate (ECDSA P-256) as Poplar's.
ssl = yes
ssl_cert = <{r}/cert.pem
ssl_key = <{r}/key.pem
{ssl_dh}
# Processes: high-performance login processes, reused pop3 processes.
default_process_limit = {pl}
default_client_limit = {cl}
default_vsz_limit = 1G
service pop3-login {{
  inet_listener pop3 {{
    port = {plain}
  }}
  inet_listener pop3s {{
    port = {implicit}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {cpus}
  client_limit = {cl}
}}
service pop3 {{
  service_count = 100
  process_min_avail = {cpus}
  client_limit = 1
  process_limit = {pl}
}}
",
        plain = ports.0,
        implicit = ports.1,
        pl = limits.process_limit,
        cl = limits.client_limit,
    )
}

pub struct Dovecot {
    child: Child,
    pub pid: u32,
    pub plain: SocketAddr,
    pub implicit: SocketAddr,
    pub log: PathBuf,
    pub conf: PathBuf,
    /// Every process of the tree seen (pid, start time), to make sure none
    /// outlives the run.
    seen: Vec<(u32, u64)>,
}

impl Dovecot {
    /// Starts Dovecot on the prepared folder `root` (passwd-file in
    /// etc/passwd, Maildirs in mail/<user>, cert.pem and key.pem).
    pub fn start(binary: &Path, root: &Path, limits: &Limits) -> Result<Dovecot> {
        let dir = root.join("dovecot");
        for sub in ["run", "state"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // Dovecot's unprivileged processes (auth, login, the mail
        // processes) must reach the passwd-file, sockets and Maildirs
        // through the folder, which tempfile makes 0700.
        for d in [root, &root.join("etc"), &root.join("mail"), &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", d.display()))?;
        }
        let is_root = unsafe { libc::geteuid() } == 0;
        let (ids, process_users) = if is_root {
            // Dovecot refuses mail access as root: the Maildirs go to
            // nobody, whom the mail processes run as.
            let ids = ids(Some("nobody"))?;
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", ids.0, ids.1))
                .arg(root.join("mail"))
                .status()
                .context("running chown")?;
            if !status.success() {
                bail!("chown -R nobody {} failed", root.join("mail").display());
            }
            (ids, String::new())
        } else {
            // Every process as this user, without chroots (they need root).
            let (me, group) = names()?;
            (
                ids(None)?,
                format!(
                    "default_internal_user = {me}\ndefault_login_user = {me}\n\
                     default_internal_group = {group}\n\
                     service anvil {{\n  chroot =\n}}\n\
                     service pop3-login {{\n  chroot =\n}}\n"
                ),
            )
        };
        let ports = free_ports()?;
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, config(root, ports, ids, &process_users, limits))?;
        let log = dir.join("dovecot.log");
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let child = Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let mut dovecot = Dovecot {
            child,
            pid,
            plain: SocketAddr::from(([127, 0, 0, 1], ports.0)),
            implicit: SocketAddr::from(([127, 0, 0, 1], ports.1)),
            log,
            conf,
            seen: Vec::new(),
        };
        dovecot.wait_ready()?;
        Ok(dovecot)
    }

    /// Ready when it greets on the POP3 port and accepts on the POP3S one.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "dovecot exited ({status}) before serving; its output:\n{}",
                    self.log_tail(30)
                );
            }
            if let Ok(tcp) = TcpStream::connect_timeout(&self.plain, Duration::from_millis(200)) {
                tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut greeting = String::new();
                let _ = BufReader::new(tcp).read_line(&mut greeting);
                if greeting.starts_with("+OK")
                    && TcpStream::connect_timeout(&self.implicit, Duration::from_millis(200))
                        .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "dovecot did not serve on {} in time; its output:\n{}",
                    self.plain,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails if the master has died.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "dovecot exited during the run ({status}); its log:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    fn text(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(dir) = self.log.parent() {
            text.push_str(&std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default());
        }
        text
    }

    /// The last `n` lines of Dovecot's log and stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Counts warning and error (fatal, panic) lines in the log and
    /// returns the first few error lines.
    pub fn log_problems(&self) -> (u64, u64, Vec<String>) {
        let (mut warn, mut error, mut first) = (0, 0, Vec::new());
        for line in self.text().lines() {
            if line.contains("Warning: ") {
                warn += 1;
            } else if ["Error: ", "Fatal: ", "Panic: "]
                .iter()
                .any(|k| line.contains(k))
            {
                error += 1;
                if first.len() < 3 {
                    first.push(line.chars().take(300).collect());
                }
            }
        }
        (warn, error, first)
    }

    /// Remembers the processes of the tree now, so that `stop` can check
    /// that every one of them is gone.
    pub fn note_processes(&mut self) {
        for pid in server::process_tree(self.pid) {
            if let Some(t) = server::start_time(pid)
                && !self.seen.contains(&(pid, t))
            {
                self.seen.push((pid, t));
            }
        }
    }

    /// SIGTERM to the master (SIGKILL after 20 s), then waits for every
    /// Dovecot process seen to be gone, killing stragglers. Returns how
    /// many had to be killed.
    pub fn stop(mut self) -> usize {
        self.terminate()
    }

    fn terminate(&mut self) -> usize {
        if self.child.try_wait().ok().flatten().is_none() {
            self.note_processes();
            // SAFETY: kill(2) on our own child, which we have not reaped.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The master's children notice it is gone and exit; give them 5 s.
        let alive = |seen: &[(u32, u64)]| -> Vec<(u32, u64)> {
            seen.iter()
                .copied()
                .filter(|&(pid, t)| server::start_time(pid) == Some(t))
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = alive(&self.seen);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = alive(&left);
        }
        for &(pid, _) in &left {
            // SAFETY: a process of the Dovecot tree we started, checked to
            // be the same process by its start time just now.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        self.seen.clear();
        left.len()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.terminate();
    }
}
