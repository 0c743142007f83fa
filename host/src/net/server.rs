//! Listeners and the accept loop: binds every configured address, caps the
//! number of open connections with a semaphore, and spawns one task per
//! client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::guard::{Guard, GuardConfig, Network};
use crate::config::{Config, ListenerTls};
use crate::deliver::Deliverer;
use crate::deliver::lmtp::LmtpConfig;
use crate::deliver::server::LmtpListener;
use crate::locks::MaildropLocks;
use crate::plugin::{AuthPlugin, Runtime, StoragePlugin};
use crate::pop3::SessionConfig;

/// Everything the connections of a running server share.
pub struct Shared {
    pub config: Config,
    pub session_config: SessionConfig,
    pub tls: Option<TlsAcceptor>,
    pub auth: Arc<AuthPlugin>,
    pub storage: Arc<StoragePlugin>,
    pub locks: MaildropLocks,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
    pub runtime: Arc<Runtime>,
    pub deliverer: Arc<Deliverer>,
    /// Becomes `true` when the server is shutting down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub guard: Arc<Guard>,
}

/// A server with its listeners bound, ready to [`run`](Server::run).
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(TcpListener, ListenerTls)>,
    lmtp: Vec<LmtpListener>,
    admin: Option<TcpListener>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Loads TLS and plugins and binds every listener. Errors name the
    /// config key or file at fault.
    pub async fn bind(config: Config) -> Result<Server> {
        let tls = match &config.tls {
            Some(t) => Some(super::tls::acceptor(t)?),
            None => None,
        };
        let runtime = Runtime::new(&config.runtime)?;
        let auth = AuthPlugin::load(&runtime, "auth", &config.auth).await?;
        let storage = StoragePlugin::load(&runtime, "storage", &config.storage).await?;
        let deliverer = Deliverer::new(&config, &runtime, auth.clone(), storage.clone()).await?;
        let mut lmtp = Vec::new();
        if let Some(l) = &config.lmtp {
            for addr in &l.listen {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("lmtp.listen {addr}: cannot bind"))?;
                lmtp.push(LmtpListener::Tcp(listener));
            }
            if let Some(path) = &l.unix_socket {
                lmtp.push(LmtpListener::bind_unix(path)?);
            }
        }
        let admin = match &config.admin {
            Some(a) => Some(crate::metrics::bind(a.listen).await?),
            None => None,
        };
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let listener = TcpListener::bind(l.address)
                .await
                .with_context(|| format!("listener {}: cannot bind", l.address))?;
            listeners.push((listener, l.tls));
        }
        let session_config = SessionConfig {
            apop: config.pop3.apop,
            stls: tls.is_some(),
            login_delay: config.pop3.login_delay,
            expire: config.pop3.expire.clone(),
        };
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let guard = Guard::new(GuardConfig {
            max_connections_per_ip: config.server.max_connections_per_ip,
            trusted: config
                .server
                .trusted_networks
                .iter()
                .map(|n| Network::parse(n))
                .collect::<Result<_>>()?,
            failed_login_delay: Duration::from_millis(config.server.failed_login_delay_ms),
        });
        let shared = Shared {
            shutdown,
            guard,
            session_config,
            tls,
            auth,
            storage,
            locks: MaildropLocks::default(),
            auth_timeout: Duration::from_secs(config.pop3.auth_timeout_secs),
            idle_timeout: Duration::from_secs(config.pop3.idle_timeout_secs),
            runtime,
            deliverer,
            config,
        };
        Ok(Server {
            shared: Arc::new(shared),
            listeners,
            lmtp,
            admin,
            shutdown: shutdown_tx,
        })
    }

    /// The bound addresses with their TLS mode (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<(SocketAddr, ListenerTls)> {
        self.listeners
            .iter()
            .filter_map(|(l, t)| l.local_addr().ok().map(|a| (a, *t)))
            .collect()
    }

    /// Where LMTP is served (TCP addresses and socket paths).
    pub fn lmtp_addrs(&self) -> Vec<String> {
        self.lmtp.iter().map(LmtpListener::describe).collect()
    }

    /// Where the admin (metrics) listener is bound, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The delivery path (for reloading filters on SIGHUP).
    pub fn deliverer(&self) -> Arc<Deliverer> {
        self.shared.deliverer.clone()
    }

    /// Accepts connections until `stop` completes, then shuts down: no new
    /// connections, idle sessions told `-ERR [SYS/TEMP] Server shutting
    /// down`, busy ones given `server.shutdown_timeout_secs` to finish their
    /// command (an UPDATE under way completes; none is started).
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<()> {
        let max = self.shared.config.server.max_connections;
        let limit = Arc::new(Semaphore::new(max));
        let mut tasks = tokio::task::JoinSet::new();
        let lmtp_config = LmtpConfig {
            hostname: self.shared.config.server.hostname.clone(),
            max_message_size: self.shared.config.delivery.max_message_size,
        };
        for l in self.lmtp {
            tasks.spawn(l.run(self.shared.deliverer.clone(), lmtp_config.clone()));
        }
        if let Some(admin) = self.admin {
            tasks.spawn(crate::metrics::serve(admin));
        }
        let interval = self.shared.config.delivery.watch_interval_ms;
        if interval > 0 && !self.shared.deliverer.chain.slots().is_empty() {
            let watcher = self
                .shared
                .deliverer
                .chain
                .spawn_watcher(Duration::from_millis(interval));
            tasks.spawn(async move {
                let _ = watcher.await;
            });
        }
        for (listener, mode) in self.listeners {
            let shared = self.shared.clone();
            let limit = limit.clone();
            tasks.spawn(accept_loop(shared, listener, mode, limit));
        }
        tokio::select! {
            Some(r) = tasks.join_next() => {
                r.context("listener task failed")?;
            }
            _ = stop => {}
        }
        tasks.abort_all();
        super::notify::notify("STOPPING=1\nSTATUS=Shutting down");
        let _ = self.shutdown.send(true);
        let grace = Duration::from_secs(self.shared.config.server.shutdown_timeout_secs);
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, limit.acquire_many(all)).await {
            Ok(_) => tracing::info!("all sessions ended"),
            Err(_) => tracing::warn!(
                busy = max - limit.available_permits(),
                "sessions still busy after the shutdown deadline; exiting"
            ),
        }
        Ok(())
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mode: ListenerTls,
    limit: Arc<Semaphore>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached, refusing");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut tcp = tcp;
                let _ = tcp
                    .write_all(b"-ERR [SYS/TEMP] Too many connections, try again later\r\n")
                    .await;
            });
            continue;
        };
        let Some(slot) = shared.guard.admit(peer.ip()) else {
            tracing::warn!(%peer, "too many connections from this address, refusing");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut tcp = tcp;
                let _ = tcp
                    .write_all(b"-ERR [SYS/TEMP] Too many connections from your address\r\n")
                    .await;
            });
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            super::connection::serve(shared, tcp, peer, mode == ListenerTls::Implicit).await;
            drop(slot);
            drop(permit);
        });
    }
}
