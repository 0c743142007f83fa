//! Prometheus metrics: one process-wide registry of counters and
//! histograms, rendered in the text exposition format on the admin
//! listener (`[admin] listen`, `GET /metrics`).
//!
//! Labels are deliberately few (no users, no peers): outcome, command,
//! verdict, plugin, operation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the plugin call duration buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    5.0,
];

/// Most distinct operations one plugin's calls are timed under (a world
/// has at most a handful of exports).
const MAX_OPERATIONS: usize = 16;

/// A duration histogram of atomics: one count per bucket (made cumulative
/// when rendered, so `+Inf` and `_count` agree with the buckets).
#[derive(Default)]
struct Histogram {
    /// Per bucket, then one past the last bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// A counter family keyed by one label. The values the program uses are
/// listed when the registry is made, each with its own atomic, so counting
/// takes no lock; any other value (a plugin's name) goes to a map.
struct Family {
    known: Vec<(&'static str, AtomicU64)>,
    other: Mutex<BTreeMap<String, u64>>,
}

impl Family {
    fn new(labels: &[&'static str]) -> Family {
        Family {
            known: labels.iter().map(|l| (*l, AtomicU64::new(0))).collect(),
            other: Mutex::new(BTreeMap::new()),
        }
    }

    fn add(&self, label: &str, n: u64) {
        if let Some((_, v)) = self.known.iter().find(|(k, _)| *k == label) {
            v.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let mut map = self.other.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(label) {
            Some(v) => *v += n,
            None => {
                map.insert(label.to_string(), n);
            }
        }
    }

    /// Every label value counted so far (in label order), with its count.
    fn values(&self) -> BTreeMap<String, u64> {
        let mut values = self.other.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (k, v) in &self.known {
            let v = v.load(Ordering::Relaxed);
            if v > 0 {
                *values.entry(k.to_string()).or_default() += v;
            }
        }
        values
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (k, v) in self.values() {
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(&k));
        }
    }
}

/// One plugin's counters, shared by every loaded version of it: the
/// plugin keeps a handle, so its calls count without looking it up.
pub struct PluginMetrics {
    name: String,
    traps: AtomicU64,
    timeouts: AtomicU64,
    /// Call durations per operation, each slot claimed once.
    calls: [OnceLock<(&'static str, Histogram)>; MAX_OPERATIONS],
}

impl PluginMetrics {
    /// One finished call of `operation` (successful or not).
    pub fn call(&self, operation: &'static str, took: Duration) {
        for slot in &self.calls {
            let (op, histogram) = slot.get_or_init(|| (operation, Histogram::default()));
            if *op == operation {
                histogram.observe(took);
                return;
            }
        }
        // More operations than any world has: not worth a lock.
        tracing::debug!(plugin = %self.name, operation, "untracked plugin operation");
    }

    /// A call that trapped or failed.
    pub fn trap(&self) {
        self.traps.fetch_add(1, Ordering::Relaxed);
    }

    /// A call stopped at its deadline.
    pub fn timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

/// All of Poplar's metrics.
pub struct Registry {
    connections: AtomicU64,
    bytes_sent: AtomicU64,
    sessions: Family,
    logins: Family,
    commands: Family,
    deliveries: Family,
    plugin_reloads: Family,
    config_reloads: Family,
    proxy_rejected: Family,
    /// Locked only to add a plugin and to render.
    plugins: Mutex<Vec<Arc<PluginMetrics>>>,
}

/// The process-wide registry.
pub static METRICS: LazyLock<Registry> = LazyLock::new(Registry::new);

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry, with an atomic for every label value Poplar uses.
    pub fn new() -> Registry {
        Registry {
            connections: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            sessions: Family::new(&[
                "quit",
                "client-closed",
                "timeout",
                "shutdown",
                "protocol-error",
                "io-error",
            ]),
            logins: Family::new(&["ok", "failed", "tempfail"]),
            commands: Family::new(&[
                "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "STAT", "LIST", "UIDL", "RETR",
                "TOP", "DELE", "NOOP", "RSET", "QUIT",
            ]),
            deliveries: Family::new(&[
                "stored",
                "discarded",
                "rejected",
                "over-quota",
                "tempfailed",
            ]),
            plugin_reloads: Family::new(&[]),
            config_reloads: Family::new(&["ok", "failed"]),
            proxy_rejected: Family::new(&["untrusted", "invalid", "timeout", "closed", "io-error"]),
            plugins: Mutex::new(Vec::new()),
        }
    }

    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bytes_sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A POP3 session ended (`quit`, `timeout`, `client-closed`, ...).
    pub fn session(&self, outcome: &str) {
        self.sessions.add(outcome, 1);
    }

    /// A login attempt's result: `ok`, `failed` or `tempfail`.
    pub fn login(&self, result: &str) {
        self.logins.add(result, 1);
    }

    pub fn command(&self, name: &str) {
        self.commands.add(name, 1);
    }

    /// A delivery's outcome for one recipient.
    pub fn delivery(&self, verdict: &str) {
        self.deliveries.add(verdict, 1);
    }

    pub fn plugin_reload(&self, plugin: &str) {
        self.plugin_reloads.add(plugin, 1);
    }

    /// A configuration reload (SIGHUP): `ok` or `failed`.
    pub fn config_reload(&self, result: &str) {
        self.config_reloads.add(result, 1);
    }

    /// A connection to a PROXY protocol listener closed before its session
    /// began: `untrusted`, `invalid`, `timeout`, `closed`, `io-error`.
    pub fn proxy_rejected(&self, reason: &str) {
        self.proxy_rejected.add(reason, 1);
    }

    /// The counters of the plugin named `name` (made on first use; every
    /// version of a plugin shares them).
    pub fn plugin(&self, name: &str) -> Arc<PluginMetrics> {
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = plugins.iter().find(|p| p.name == name) {
            return p.clone();
        }
        let p = Arc::new(PluginMetrics {
            name: name.to_string(),
            traps: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            calls: std::array::from_fn(|_| OnceLock::new()),
        });
        plugins.push(p.clone());
        p
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP poplar_connections_total Client connections accepted.\n\
             # TYPE poplar_connections_total counter\n\
             poplar_connections_total {}\n\
             # HELP poplar_bytes_sent_total Octets sent to POP3 clients.\n\
             # TYPE poplar_bytes_sent_total counter\n\
             poplar_bytes_sent_total {}",
            self.connections.load(Ordering::Relaxed),
            self.bytes_sent.load(Ordering::Relaxed)
        );
        self.sessions.render(
            &mut out,
            "poplar_sessions_total",
            "outcome",
            "POP3 sessions ended, by how they ended.",
        );
        self.logins.render(
            &mut out,
            "poplar_logins_total",
            "result",
            "Login attempts by result.",
        );
        self.commands.render(
            &mut out,
            "poplar_commands_total",
            "command",
            "POP3 commands received.",
        );
        self.deliveries.render(
            &mut out,
            "poplar_deliveries_total",
            "verdict",
            "Deliveries per recipient, by outcome.",
        );
        let mut plugins = self
            .plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        for (name, help, count) in [
            (
                "poplar_plugin_traps_total",
                "Plugin calls that trapped or failed.",
                (|p: &PluginMetrics| p.traps.load(Ordering::Relaxed)) as fn(&PluginMetrics) -> u64,
            ),
            (
                "poplar_plugin_timeouts_total",
                "Plugin calls stopped at their deadline.",
                |p: &PluginMetrics| p.timeouts.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for p in &plugins {
                let n = count(p);
                if n > 0 {
                    let _ = writeln!(out, "{name}{{plugin=\"{}\"}} {n}", escape(&p.name));
                }
            }
        }
        self.plugin_reloads.render(
            &mut out,
            "poplar_plugin_reloads_total",
            "plugin",
            "Plugin versions swapped in by hot reload.",
        );
        self.config_reloads.render(
            &mut out,
            "poplar_config_reloads_total",
            "result",
            "Configuration reloads (SIGHUP), by result.",
        );
        self.proxy_rejected.render(
            &mut out,
            "poplar_proxy_rejected_total",
            "reason",
            "Connections to PROXY protocol listeners closed before a session, by reason.",
        );
        let name = "poplar_plugin_call_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of plugin calls.\n# TYPE {name} histogram"
        );
        for p in &plugins {
            let mut ops: Vec<_> = p.calls.iter().filter_map(OnceLock::get).collect();
            ops.sort_by_key(|(op, _)| *op);
            for (op, h) in ops {
                let labels = format!("plugin=\"{}\",operation=\"{op}\"", escape(&p.name));
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(&h.counts) {
                    cumulative += n.load(Ordering::Relaxed);
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                cumulative += h.counts[BUCKETS.len()].load(Ordering::Relaxed);
                let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` (and `GET /health`) on `listener` until dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0;
            // Read the request head (a scraper sends a few hundred octets).
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(k)) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split(' ').nth(1).unwrap_or("");
            let (status, body) = match (head.starts_with("GET "), path) {
                (true, "/metrics") => ("200 OK", METRICS.render()),
                (true, "/health") => ("200 OK", "ok\n".to_string()),
                (true, _) => ("404 Not Found", "not found\n".to_string()),
                _ => ("405 Method Not Allowed", "GET only\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(response.as_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}

/// Binds the admin listener.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin.listen {addr}: cannot bind"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let r = Registry::new();
        r.connection();
        r.session("quit");
        r.session("quit");
        r.session("a-new-outcome");
        r.login("failed");
        let auth = r.plugin("auth");
        auth.call("verify", Duration::from_micros(300));
        r.plugin("auth").call("verify", Duration::from_secs(2));
        auth.call("verify", Duration::from_secs(20));
        auth.timeout();
        r.plugin("we\"ird").trap();
        r.plugin_reload("we\"ird");
        r.config_reload("failed");
        let text = r.render();
        assert!(text.contains("poplar_connections_total 1\n"));
        assert!(text.contains("poplar_sessions_total{outcome=\"quit\"} 2\n"));
        assert!(text.contains("poplar_logins_total{result=\"failed\"} 1\n"));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_bucket{plugin=\"auth\",operation=\"verify\",le=\"0.0005\"} 1\n"
        ));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_bucket{plugin=\"auth\",operation=\"verify\",le=\"5\"} 2\n"
        ));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_bucket{plugin=\"auth\",operation=\"verify\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_count{plugin=\"auth\",operation=\"verify\"} 3\n"
        ));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_sum{plugin=\"auth\",operation=\"verify\"} 22.0003\n"
        ));
        assert!(text.contains("poplar_sessions_total{outcome=\"a-new-outcome\"} 1\n"));
        assert!(text.contains("poplar_plugin_timeouts_total{plugin=\"auth\"} 1\n"));
        assert!(text.contains("poplar_plugin_traps_total{plugin=\"we\\\"ird\"} 1\n"));
        assert!(!text.contains("poplar_plugin_traps_total{plugin=\"auth\"}"));
        assert!(text.contains("poplar_plugin_reloads_total{plugin=\"we\\\"ird\"} 1\n"));
        assert!(text.contains("poplar_config_reloads_total{result=\"failed\"} 1\n"));
    }

    /// The hot path (commands, logins, sessions, plugin calls) counts
    /// without the registry's lock: it goes on while that lock is held
    /// (as while rendering), from many threads, and loses nothing.
    #[test]
    fn counting_takes_no_lock() {
        let r = Arc::new(Registry::new());
        let storage = r.plugin("storage");
        let held = r.plugins.lock().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (r, storage, done) = (r.clone(), storage.clone(), done.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        r.command("RETR");
                        r.login("ok");
                        r.session("quit");
                        storage.call("read", Duration::from_micros(20));
                        storage.call("list", Duration::from_micros(80));
                    }
                    done.send(()).unwrap();
                })
            })
            .collect();
        for _ in 0..4 {
            finished
                .recv_timeout(Duration::from_secs(60))
                .expect("counting waited for the registry's lock");
        }
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        let text = r.render();
        assert!(text.contains("poplar_commands_total{command=\"RETR\"} 40000\n"));
        assert!(text.contains("poplar_logins_total{result=\"ok\"} 40000\n"));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_count{plugin=\"storage\",operation=\"read\"} 40000\n"
        ));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_bucket{plugin=\"storage\",operation=\"list\",le=\"0.00005\"} 0\n"
        ));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_bucket{plugin=\"storage\",operation=\"list\",le=\"0.0001\"} 40000\n"
        ));
    }
}
