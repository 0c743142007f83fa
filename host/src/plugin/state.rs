//! What a plugin's store holds: its WASI context (only what the config
//! grants), its resource table, its limits, and the host imports every
//! world shares (`host.log`, `host.config`).

use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::auth::poplar::plugin::{host, types};
use crate::config::PluginConfig;
use crate::net::guard::Network;

/// Longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 2048;
/// Log lines one plugin call may write; the rest are dropped (with one
/// line saying so), so a plugin cannot flood the server's log.
const MAX_LOG_LINES_PER_CALL: u32 = 100;
/// How much of a guest's stderr is kept to report after a trap.
const STDERR_TAIL: usize = 4096;

/// Facts about a loaded plugin that every store of it shares.
#[derive(Debug)]
pub struct PluginInfo {
    /// The config section name: `auth`, `storage`, or a filter's name.
    pub name: String,
    pub config: PluginConfig,
    /// `config` flattened for `host.config`.
    pub flat: Vec<(String, String)>,
    /// `config` as a TOML document for `host.config-toml`.
    pub toml: String,
    /// The networks granted by `network` (validated with the config).
    pub networks: Arc<Vec<Network>>,
}

impl PluginInfo {
    pub fn new(name: &str, config: PluginConfig) -> Self {
        let mut flat = Vec::new();
        flatten("", &config.config, &mut flat);
        flat.sort();
        let toml = toml::to_string(&config.config).unwrap_or_default();
        let networks = config
            .network
            .iter()
            .filter_map(|n| Network::parse(n).ok())
            .collect();
        PluginInfo {
            name: name.to_string(),
            config,
            flat,
            toml,
            networks: Arc::new(networks),
        }
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

/// The data of one plugin store.
pub struct PluginState {
    pub(crate) info: Arc<PluginInfo>,
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    /// When the current call is interrupted.
    pub(crate) deadline: std::time::Instant,
    /// Log lines the current call may still write.
    log_lines_left: u32,
    /// The last bytes the guest wrote to stderr (panic messages).
    pub(crate) stderr: GuestStderr,
}

impl PluginState {
    pub fn new(info: Arc<PluginInfo>) -> anyhow::Result<Self> {
        let stderr = GuestStderr::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        // Nothing is ambient: no args, no stdin, no name lookups; only the
        // granted directories, environment variables and networks.
        for (k, v) in &info.config.env {
            wasi.env(k, v);
        }
        let networks = info.networks.clone();
        let granted = !networks.is_empty();
        wasi.allow_tcp(granted)
            .allow_udp(granted)
            .allow_ip_name_lookup(false)
            .socket_addr_check(move |addr, used| {
                use wasmtime_wasi::sockets::SocketAddrUse as Use;
                let ok = match used {
                    // The implicit bind to an ephemeral port before a
                    // connect; never a chosen local address or port.
                    Use::TcpBind | Use::UdpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    // No servers inside plugins.
                    Use::TcpListen | Use::TcpAccept => false,
                    _ => networks.iter().any(|n| n.contains(addr.ip())),
                };
                Box::pin(async move { ok })
            });
        wasi.max_random_size(64 * 1024);
        // File operations (open, stat, readdir, read) run on the calling
        // thread instead of a spawn_blocking hop each: on a local file
        // system they take microseconds, and the hop (a thread wake-up
        // and back) cost more than the work; it was most of a login's CPU.
        wasi.allow_blocking_current_thread(true);
        for d in &info.config.dirs {
            let perms = if d.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&d.host, &d.guest, perms).map_err(|e| {
                anyhow::anyhow!(
                    "plugin {}: cannot open granted directory {}: {e}",
                    info.name,
                    d.host.display()
                )
            })?;
        }
        let memory = usize::try_from(info.config.memory_mb * 1024 * 1024).unwrap_or(usize::MAX);
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory)
            .instances(64)
            .tables(64)
            .memories(8)
            .table_elements(info.config.max_table_elements as usize)
            .trap_on_grow_failure(true)
            .build();
        Ok(PluginState {
            info,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
            deadline: std::time::Instant::now(),
            log_lines_left: MAX_LOG_LINES_PER_CALL,
            stderr,
        })
    }
}

impl PluginState {
    /// A new call starts with a fresh log budget.
    pub(crate) fn reset_log_budget(&mut self) {
        self.log_lines_left = MAX_LOG_LINES_PER_CALL;
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: host::Level, message: String) {
        match self.log_lines_left {
            0 => return,
            1 => {
                self.log_lines_left = 0;
                tracing::warn!(
                    plugin = %self.info.name,
                    "plugin wrote more than {MAX_LOG_LINES_PER_CALL} log lines in one call; dropping the rest of this call's lines"
                );
                return;
            }
            _ => self.log_lines_left -= 1,
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [truncated]");
        }
        let plugin = self.info.name.as_str();
        match level {
            host::Level::Trace => tracing::trace!(plugin, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.info.flat.clone()
    }

    fn config_toml(&mut self) -> String {
        self.info.toml.clone()
    }
}

/// A guest's stderr: keeps the last few KiB so a trap can be reported with
/// the guest's own panic message.
#[derive(Clone, Default)]
pub struct GuestStderr(Arc<Mutex<Vec<u8>>>);

impl GuestStderr {
    /// The kept text, lossily decoded and trimmed.
    pub fn tail(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).trim().to_string()
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(bytes);
        if buf.len() > STDERR_TAIL {
            let cut = buf.len() - STDERR_TAIL;
            buf.drain(..cut);
        }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestStderr {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_flattened_with_text_values() {
        let table: toml::Table = toml::from_str(
            "file = \"/etc/passwd\"\nn = 3\nflag = true\nlist = [1, 2]\n[sub]\nk = \"v\"\n",
        )
        .unwrap();
        let mut flat = Vec::new();
        flatten("", &table, &mut flat);
        flat.sort();
        assert_eq!(
            flat,
            vec![
                ("file".into(), "/etc/passwd".into()),
                ("flag".into(), "true".into()),
                ("list".into(), "[1, 2]".into()),
                ("n".into(), "3".into()),
                ("sub.k".into(), "v".into()),
            ]
        );
    }

    #[test]
    fn stderr_keeps_only_the_tail() {
        let s = GuestStderr::default();
        s.push(&vec![b'a'; STDERR_TAIL]);
        s.push(b"panicked at boom");
        assert!(s.tail().ends_with("panicked at boom"));
        assert!(s.tail().len() <= STDERR_TAIL);
    }
}
