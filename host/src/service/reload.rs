//! The running configuration, and replacing it on SIGHUP.
//!
//! A *generation* ([`Shared`]) is what a config file decides for the
//! connections: settings, TLS acceptor, auth and storage plugins, the
//! delivery path. Each connection takes the generation current when it is
//! accepted and keeps it to its end, so a session never mixes two configs,
//! and the plugin versions it started with serve all of its calls (as
//! filter snapshots do for deliveries). Maildrop locks, the per-address
//! defences, the wasm runtime and the shutdown signal carry over from one
//! generation to the next.
//!
//! [`Live::reload`] re-reads and validates the file, builds the TLS
//! acceptor (new handshakes get the new certificate), loads and validates
//! the auth and storage plugins and, if its configuration changed, the
//! filter chain: all before anything is swapped. A failure at any step
//! leaves the running generation untouched and is returned (the caller logs
//! it and tells systemd). Then, and only then: the filters of an unchanged
//! chain are reloaded from their files, the defences get their new limits,
//! the connection cap is adjusted, the new generation replaces the old one
//! for the connections accepted from then on, and the filter watcher
//! follows the new chain. Sessions in progress keep going on theirs.
//!
//! What needs a restart: the listener, LMTP and admin addresses (their
//! sockets stay bound), `[runtime]` (the engine's pool is sized once) and
//! `server.user`/`server.group`. A change there is logged as a warning
//! and otherwise ignored.

use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::Semaphore;

use crate::config::{Config, PluginConfig};
use crate::deliver::Deliverer;
use crate::deliver::chain::Chain;
use crate::metrics::METRICS;
use crate::net::server::{Loaded, Shared, guard_config};
use crate::plugin::Runtime;
use crate::plugin::pool::{Plugin, World};

/// The current generation and what outlives generations.
pub struct Live {
    current: RwLock<Arc<Shared>>,
    /// Permits for open client connections (`server.max_connections`).
    limit: Arc<Semaphore>,
    /// The cap `limit` was sized for.
    max_connections: Mutex<usize>,
    /// The filter watcher of the current chain, if running.
    watcher: Mutex<Option<tokio::task::AbortHandle>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    pub fn new(shared: Shared) -> Arc<Live> {
        let max = shared.config.server.max_connections;
        Arc::new(Live {
            current: RwLock::new(Arc::new(shared)),
            limit: Arc::new(Semaphore::new(max)),
            max_connections: Mutex::new(max),
            watcher: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The generation new connections get.
    pub fn current(&self) -> Arc<Shared> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The connection cap's semaphore.
    pub fn limit(&self) -> Arc<Semaphore> {
        self.limit.clone()
    }

    /// `server.max_connections` now.
    pub fn max_connections(&self) -> usize {
        *self
            .max_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// (Re)starts the watcher of the current chain's filter files, if
    /// `delivery.watch_interval_ms` asks for one.
    pub fn start_watcher(&self) {
        let shared = self.current();
        let interval = shared.config.delivery.watch_interval_ms;
        let chain = &shared.deliverer.chain;
        let handle = (interval > 0 && !chain.slots().is_empty()).then(|| {
            chain
                .spawn_watcher(Duration::from_millis(interval))
                .abort_handle()
        });
        let old = std::mem::replace(
            &mut *self.watcher.lock().unwrap_or_else(|e| e.into_inner()),
            handle,
        );
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Stops the filter watcher (shutdown).
    pub fn stop_watcher(&self) {
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            w.abort();
        }
    }

    /// Changes the connection cap: more permits at once; fewer as
    /// connections end (new ones are refused meanwhile).
    fn resize(&self, new: usize) {
        let mut max = self
            .max_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let old = *max;
        if new > old {
            self.limit.add_permits(new - old);
        } else if new < old {
            let limit = self.limit.clone();
            let n = u32::try_from(old - new).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(permits) = limit.acquire_many_owned(n).await {
                    permits.forget();
                }
            });
        }
        *max = new;
    }

    /// Reloads the configuration from `path` (SIGHUP). On error nothing
    /// changed; the error says what was refused.
    pub async fn reload(&self, path: &Path) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload(path).await;
        METRICS.config_reload(if result.is_ok() { "ok" } else { "failed" });
        result
    }

    async fn try_reload(&self, path: &Path) -> Result<()> {
        let old = self.current();
        let config = Config::load(path)?;
        let tls = match &config.tls {
            Some(t) => Some(crate::net::tls::acceptor(t)?),
            None => None,
        };
        warn_restart_only(&old.config, &config);
        let runtime = &old.runtime;
        let (auth, auth_changed) =
            load_plugin(runtime, "auth", &old.auth, &old.config.auth, &config.auth).await?;
        let (storage, storage_changed) = load_plugin(
            runtime,
            "storage",
            &old.storage,
            &old.config.storage,
            &config.storage,
        )
        .await?;
        let same_chain = same(&old.config.delivery.chain, &config.delivery.chain)
            && same(&old.config.filter, &config.filter);
        let chain = if same_chain {
            old.deliverer.chain.clone()
        } else {
            Arc::new(
                Chain::load(&config, runtime)
                    .await
                    .context("delivery.chain")?,
            )
        };
        let guard = guard_config(&config)?;
        let deliverer = Deliverer::with_chain(&config, auth.clone(), storage.clone(), chain);
        let loaded = Loaded {
            tls,
            auth,
            storage,
            deliverer,
        };
        let restart_watcher = !same_chain
            || old.config.delivery.watch_interval_ms != config.delivery.watch_interval_ms;
        let new = Shared::new(config, loaded, old.common())?;

        // Everything is loaded and valid: swap.
        if same_chain {
            new.deliverer.chain.reload_all().await;
        } else {
            tracing::info!("filter chain replaced");
            for slot in new.deliverer.chain.slots() {
                METRICS.plugin_reload(&slot.name);
            }
        }
        for (name, changed, plugin_version) in [
            ("auth", auth_changed, new.auth.version()),
            ("storage", storage_changed, new.storage.version()),
        ] {
            if changed {
                tracing::info!(plugin = name, version = plugin_version, "plugin reloaded");
                METRICS.plugin_reload(name);
            }
        }
        old.guard.reconfigure(guard);
        self.resize(new.config.server.max_connections);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        if restart_watcher {
            self.start_watcher();
        }
        tracing::info!(config = %path.display(), "configuration reloaded");
        Ok(())
    }
}

/// Whether two configuration values are the same (config types compare by
/// their derived `Debug` text: deterministic, and every field is in it).
fn same<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Loads the plugin a reloaded config names. Returns the running version
/// when neither its file nor its configuration changed (its warm instances
/// are kept), and whether it changed.
async fn load_plugin<W: World>(
    runtime: &Arc<Runtime>,
    name: &str,
    running: &Arc<Plugin<W>>,
    running_config: &PluginConfig,
    config: &PluginConfig,
) -> Result<(Arc<Plugin<W>>, bool)> {
    let new = Plugin::<W>::load(runtime, name, config)
        .await
        .with_context(|| format!("[{name}]"))?;
    if new.version() == running.version() && same(running_config, config) {
        Ok((running.clone(), false))
    } else {
        Ok((new, true))
    }
}

/// Warns about the settings a reload cannot apply.
fn warn_restart_only(old: &Config, new: &Config) {
    let keep = "they take effect at the next restart; the running ones are kept";
    if !same(&old.listeners, &new.listeners) {
        tracing::warn!("[[listener]] changed: {keep}");
    }
    if !same(&old.lmtp, &new.lmtp) {
        tracing::warn!("[lmtp] listeners changed: {keep}");
    }
    if !same(&old.admin, &new.admin) {
        tracing::warn!("[admin] listener changed: {keep}");
    }
    if !same(&old.runtime, &new.runtime) {
        tracing::warn!("[runtime] settings changed: {keep}");
    }
    if old.server.user != new.server.user || old.server.group != new.server.group {
        tracing::warn!("server.user / server.group changed: {keep}");
    }
}
