//! Prometheus metrics: one process-wide registry of counters and
//! histograms, rendered in the text exposition format on the admin
//! listener (`[admin] listen`, `GET /metrics`).
//!
//! Labels are deliberately few (no users, no peers): outcome, command,
//! verdict, plugin, operation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the plugin call duration buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A counter family keyed by one label value.
#[derive(Default)]
struct Family(Mutex<BTreeMap<String, u64>>);

impl Family {
    fn add(&self, label: &str, n: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(label) {
            Some(v) => *v += n,
            None => {
                map.insert(label.to_string(), n);
            }
        }
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (k, v) in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(k));
        }
    }
}

/// All of Poplar's metrics.
#[derive(Default)]
pub struct Registry {
    connections: AtomicU64,
    bytes_sent: AtomicU64,
    sessions: Family,
    logins: Family,
    commands: Family,
    deliveries: Family,
    plugin_traps: Family,
    plugin_timeouts: Family,
    plugin_reloads: Family,
    config_reloads: Family,
    proxy_rejected: Family,
    /// Plugin name, then operation (looked up without allocating).
    plugin_calls: Mutex<BTreeMap<String, BTreeMap<&'static str, Histogram>>>,
}

/// The process-wide registry.
pub static METRICS: LazyLock<Registry> = LazyLock::new(Registry::default);

impl Registry {
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

    pub fn plugin_trap(&self, plugin: &str) {
        self.plugin_traps.add(plugin, 1);
    }

    pub fn plugin_timeout(&self, plugin: &str) {
        self.plugin_timeouts.add(plugin, 1);
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

    /// One finished plugin call (successful or not).
    pub fn plugin_call(&self, plugin: &str, operation: &'static str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut calls = self.plugin_calls.lock().unwrap_or_else(|e| e.into_inner());
        if !calls.contains_key(plugin) {
            calls.insert(plugin.to_string(), BTreeMap::new());
        }
        let h = calls
            .get_mut(plugin)
            .expect("inserted above")
            .entry(operation)
            .or_default();
        h.count += 1;
        h.sum += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
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
        self.plugin_traps.render(
            &mut out,
            "poplar_plugin_traps_total",
            "plugin",
            "Plugin calls that trapped or failed.",
        );
        self.plugin_timeouts.render(
            &mut out,
            "poplar_plugin_timeouts_total",
            "plugin",
            "Plugin calls stopped at their deadline.",
        );
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
        let calls = self.plugin_calls.lock().unwrap_or_else(|e| e.into_inner());
        for (plugin, op, h) in calls
            .iter()
            .flat_map(|(p, ops)| ops.iter().map(move |(op, h)| (p, op, h)))
        {
            let labels = format!("plugin=\"{}\",operation=\"{op}\"", escape(plugin));
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
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
        let r = Registry::default();
        r.connection();
        r.session("quit");
        r.session("quit");
        r.login("failed");
        r.plugin_call("auth", "verify", Duration::from_micros(300));
        r.plugin_call("auth", "verify", Duration::from_secs(2));
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
            "poplar_plugin_call_duration_seconds_bucket{plugin=\"auth\",operation=\"verify\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains(
            "poplar_plugin_call_duration_seconds_count{plugin=\"auth\",operation=\"verify\"} 2\n"
        ));
        assert!(text.contains("poplar_plugin_reloads_total{plugin=\"we\\\"ird\"} 1\n"));
        assert!(text.contains("poplar_config_reloads_total{result=\"failed\"} 1\n"));
    }
}
