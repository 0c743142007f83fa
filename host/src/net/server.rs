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

use crate::config::{Config, ListenerTls};
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
}

/// A server with its listeners bound, ready to [`run`](Server::run).
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(TcpListener, ListenerTls)>,
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
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let listener = TcpListener::bind(l.address)
                .await
                .with_context(|| format!("listener {}: cannot bind", l.address))?;
            listeners.push((listener, l.tls));
        }
        let session_config = SessionConfig {
            hostname: config.server.hostname.clone(),
            apop: config.pop3.apop,
            stls: tls.is_some(),
            login_delay: config.pop3.login_delay,
            expire: config.pop3.expire.clone(),
        };
        let shared = Shared {
            session_config,
            tls,
            auth,
            storage,
            locks: MaildropLocks::default(),
            auth_timeout: Duration::from_secs(config.pop3.auth_timeout_secs),
            idle_timeout: Duration::from_secs(config.pop3.idle_timeout_secs),
            runtime,
            config,
        };
        Ok(Server {
            shared: Arc::new(shared),
            listeners,
        })
    }

    /// The bound addresses with their TLS mode (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<(SocketAddr, ListenerTls)> {
        self.listeners
            .iter()
            .filter_map(|(l, t)| l.local_addr().ok().map(|a| (a, *t)))
            .collect()
    }

    /// Accepts connections until the process ends.
    pub async fn run(self) -> Result<()> {
        let limit = Arc::new(Semaphore::new(self.shared.config.server.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, mode) in self.listeners {
            let shared = self.shared.clone();
            let limit = limit.clone();
            tasks.spawn(accept_loop(shared, listener, mode, limit));
        }
        while let Some(r) = tasks.join_next().await {
            r.context("listener task failed")?;
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
        let shared = shared.clone();
        tokio::spawn(async move {
            super::connection::serve(shared, tcp, peer, mode == ListenerTls::Implicit).await;
            drop(permit);
        });
    }
}
