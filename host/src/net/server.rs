//! Listeners and the accept loop: binds every configured address (or takes
//! the sockets systemd passed), drops root, loads the plugins, caps the
//! number of open connections with a semaphore, and spawns one task per
//! client. Each connection gets the configuration generation current when
//! it is accepted ([`Live`], replaced on SIGHUP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::guard::{Guard, GuardConfig, Network};
use crate::config::{Config, ListenerTls};
use crate::deliver::Deliverer;
use crate::deliver::lmtp::LmtpConfig;
use crate::deliver::server::LmtpListener;
use crate::lease::{Leases, NodeIdentity};
use crate::metrics::METRICS;
use crate::plugin::{AuthPlugin, Runtime, StoragePlugin};
use crate::pop3::SessionConfig;
use crate::service::activation::{self, Activation, Endpoint, Role};
use crate::service::privileges;
use crate::service::reload::Live;

/// Everything the connections of a running server share.
pub struct Shared {
    pub config: Config,
    pub session_config: SessionConfig,
    pub tls: Option<TlsAcceptor>,
    pub auth: Arc<AuthPlugin>,
    pub storage: Arc<StoragePlugin>,
    /// The maildrop leases this node's sessions hold.
    pub leases: Arc<Leases>,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
    pub runtime: Arc<Runtime>,
    pub deliverer: Arc<Deliverer>,
    /// Becomes `true` when the server is shutting down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub guard: Arc<Guard>,
}

/// What carries over from one configuration generation to the next.
#[derive(Clone)]
pub struct Common {
    pub runtime: Arc<Runtime>,
    pub leases: Arc<Leases>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub guard: Arc<Guard>,
    /// [`SessionConfig::secret`]: one per process, so SCRAM salts made up
    /// for unknown users stay the same across reloads.
    pub secret: [u8; 32],
}

/// What a configuration loads: TLS and the plugins.
pub struct Loaded {
    pub tls: Option<TlsAcceptor>,
    pub auth: Arc<AuthPlugin>,
    pub storage: Arc<StoragePlugin>,
    pub deliverer: Arc<Deliverer>,
}

impl Shared {
    /// One configuration generation: `config` with what it loaded, and what
    /// outlives generations. Used at startup and by every reload.
    pub fn new(config: Config, loaded: Loaded, common: Common) -> Result<Shared> {
        let session_config = SessionConfig {
            apop: config.pop3.apop,
            stls: loaded.tls.is_some(),
            login_delay: config.pop3.login_delay,
            expire: config.pop3.expire.clone(),
            mechanisms: config.pop3.mechanisms()?,
            secret: common.secret,
        };
        Ok(Shared {
            shutdown: common.shutdown,
            guard: common.guard,
            session_config,
            tls: loaded.tls,
            auth: loaded.auth,
            storage: loaded.storage,
            leases: common.leases,
            auth_timeout: Duration::from_secs(config.pop3.auth_timeout_secs),
            idle_timeout: Duration::from_secs(config.pop3.idle_timeout_secs),
            runtime: common.runtime,
            deliverer: loaded.deliverer,
            config,
        })
    }

    /// What the next generation inherits from this one.
    pub fn common(&self) -> Common {
        Common {
            runtime: self.runtime.clone(),
            leases: self.leases.clone(),
            shutdown: self.shutdown.clone(),
            guard: self.guard.clone(),
            secret: self.session_config.secret,
        }
    }
}

/// The per-address defences a configuration asks for.
pub fn guard_config(config: &Config) -> Result<GuardConfig> {
    Ok(GuardConfig {
        max_connections_per_ip: config.server.max_connections_per_ip,
        trusted: config
            .server
            .trusted_networks
            .iter()
            .map(|n| Network::parse(n))
            .collect::<Result<_>>()?,
        failed_login_delay: Duration::from_millis(config.server.failed_login_delay_ms),
        failed_login_ipv4_prefix: config.server.failed_login_ipv4_prefix,
        failed_login_ipv6_prefix: config.server.failed_login_ipv6_prefix,
    })
}

/// A server with its listeners bound, ready to [`run`](Server::run).
pub struct Server {
    live: Arc<Live>,
    /// Each listener with its TLS mode and whether it expects PROXY
    /// protocol headers.
    listeners: Vec<(TcpListener, ListenerTls, bool)>,
    lmtp: Vec<LmtpListener>,
    admin: Option<TcpListener>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Binds every listener (or takes the sockets `sockets` holds) and
    /// reads the TLS key, then becomes `server.user` if set, then loads the
    /// plugins. Errors name the config key or file at fault.
    pub async fn bind(config: Config, mut sockets: Activation) -> Result<Server> {
        // Checked before anything is bound: a missing user is a config error.
        let account = privileges::configured(&config)?;
        let tls = match &config.tls {
            Some(t) => Some(super::tls::acceptor(t)?),
            None => None,
        };
        // Every socket, in this order: POP3 listeners, LMTP TCP, LMTP Unix,
        // admin; each either passed by systemd or bound here.
        let mut wanted = Vec::new();
        for l in &config.listeners {
            let role = match l.tls {
                ListenerTls::Starttls => Role::Pop3,
                ListenerTls::Implicit => Role::Pop3s,
            };
            wanted.push((Endpoint::Tcp(l.address), role));
        }
        if let Some(l) = &config.lmtp {
            for addr in &l.listen {
                wanted.push((Endpoint::Tcp(*addr), Role::Lmtp));
            }
            if let Some(path) = &l.unix_socket {
                wanted.push((Endpoint::Unix(path.clone()), Role::Lmtp));
            }
        }
        if let Some(a) = &config.admin {
            wanted.push((Endpoint::Tcp(a.listen), Role::Admin));
        }
        let mut passed = sockets.assign(&wanted).into_iter();
        sockets.finish();
        let mut next_passed = || passed.next().flatten();
        let passed_tcp = |fd, what: &str| {
            activation::tcp_listener(fd)
                .with_context(|| format!("{what}: cannot use the socket passed by systemd"))
        };
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let what = format!("listener {}", l.address);
            let listener = match next_passed() {
                Some(fd) => passed_tcp(fd, &what)?,
                None => TcpListener::bind(l.address)
                    .await
                    .with_context(|| format!("{what}: cannot bind"))?,
            };
            listeners.push((listener, l.tls, l.proxy_protocol));
        }
        let mut lmtp = Vec::new();
        if let Some(l) = &config.lmtp {
            for addr in &l.listen {
                let what = format!("lmtp.listen {addr}");
                let listener = match next_passed() {
                    Some(fd) => passed_tcp(fd, &what)?,
                    None => TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("{what}: cannot bind"))?,
                };
                lmtp.push(LmtpListener::Tcp(listener));
            }
            if let Some(path) = &l.unix_socket {
                match next_passed() {
                    Some(fd) => {
                        let l = activation::unix_listener(fd).with_context(|| {
                            format!(
                                "lmtp.unix_socket {}: cannot use the socket passed by systemd",
                                path.display()
                            )
                        })?;
                        lmtp.push(LmtpListener::Unix(l, path.clone()));
                    }
                    None => {
                        lmtp.push(LmtpListener::bind_unix(path)?);
                        // Created by root: hand it to the user we become.
                        if let Some(a) = &account
                            && let Err(e) = std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid))
                        {
                            tracing::warn!(
                                socket = %path.display(),
                                "lmtp.unix_socket: cannot give the socket to server.user: {e}"
                            );
                        }
                    }
                }
            }
        }
        let admin = match &config.admin {
            Some(a) => Some(match next_passed() {
                Some(fd) => passed_tcp(fd, &format!("admin.listen {}", a.listen))?,
                None => crate::metrics::bind(a.listen).await?,
            }),
            None => None,
        };
        // Sockets bound and the key read: nothing else needs root.
        match &account {
            Some(a) => privileges::drop_to(a)?,
            None => privileges::warn_if_root(),
        }
        privileges::check_access(&config)?;
        let runtime = Runtime::new(&config.runtime)?;
        let auth = AuthPlugin::load(&runtime, "auth", &config.auth).await?;
        let storage = StoragePlugin::load(&runtime, "storage", &config.storage).await?;
        let deliverer = Deliverer::new(&config, &runtime, auth.clone(), storage.clone()).await?;
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let leases = Leases::new(
            NodeIdentity::new(&config.server.node),
            Duration::from_secs(config.server.lease_ttl_secs),
        );
        leases.spawn_renewer();
        tracing::info!(
            node = %leases.identity().node,
            incarnation = %leases.identity().incarnation,
            "node identity"
        );
        let common = Common {
            runtime,
            leases,
            shutdown,
            guard: Guard::new(guard_config(&config)?),
            secret: random_secret()?,
        };
        let loaded = Loaded {
            tls,
            auth,
            storage,
            deliverer,
        };
        let shared = Shared::new(config, loaded, common)?;
        Ok(Server {
            live: Live::new(shared),
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
            .filter_map(|(l, t, _)| l.local_addr().ok().map(|a| (a, *t)))
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

    /// The running configuration, to reload it on SIGHUP.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Accepts connections until `stop` completes, then shuts down: no new
    /// connections, idle sessions told `-ERR [SYS/TEMP] Server shutting
    /// down`, busy ones given `server.shutdown_timeout_secs` to finish their
    /// command (an UPDATE under way completes; none is started).
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<()> {
        let live = self.live;
        let limit = live.limit();
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.lmtp {
            let live = live.clone();
            tasks.spawn(l.run(move || {
                let shared = live.current();
                let config = LmtpConfig {
                    hostname: shared.config.server.hostname.clone(),
                    max_message_size: shared.config.delivery.max_message_size,
                };
                (shared.deliverer.clone(), config)
            }));
        }
        if let Some(admin) = self.admin {
            tasks.spawn(crate::metrics::serve(admin));
        }
        live.start_watcher();
        for (listener, mode, proxy) in self.listeners {
            let live = live.clone();
            let limit = limit.clone();
            tasks.spawn(accept_loop(live, listener, mode, proxy, limit));
        }
        tokio::select! {
            Some(r) = tasks.join_next() => {
                r.context("listener task failed")?;
            }
            _ = stop => {}
        }
        tasks.abort_all();
        live.stop_watcher();
        super::notify::notify("STOPPING=1\nSTATUS=Shutting down");
        let _ = self.shutdown.send(true);
        let grace = Duration::from_secs(live.current().config.server.shutdown_timeout_secs);
        let max = live.max_connections();
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
    live: Arc<Live>,
    listener: TcpListener,
    mode: ListenerTls,
    proxy: bool,
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
        // The configuration generation this connection keeps to its end.
        let shared = live.current();
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
        if proxy {
            let shared = shared.clone();
            let implicit = mode == ListenerTls::Implicit;
            tokio::spawn(serve_proxied(shared, tcp, peer, implicit, permit));
            continue;
        }
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

/// A connection on a `proxy_protocol` listener. Only proxies in
/// `server.proxy_trusted_networks` may connect, and each connection must
/// start with a valid PROXY header within `pop3.auth_timeout_secs`;
/// otherwise it is closed without a greeting (there is no POP3 client to
/// talk to, only a proxy). After the header, the connection is served as
/// one from the client the header names: logs, the per-address defences
/// and the auth plugins see that address.
async fn serve_proxied(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    proxy: SocketAddr,
    implicit_tls: bool,
    permit: OwnedSemaphorePermit,
) {
    // Validated with the config; parsed here so a reloaded config applies.
    let trusted = shared
        .config
        .server
        .proxy_trusted_networks
        .iter()
        .filter_map(|n| Network::parse(n).ok())
        .any(|n| n.contains(proxy.ip()));
    if !trusted {
        tracing::warn!(
            %proxy,
            "closing a connection to a PROXY protocol listener from outside server.proxy_trusted_networks"
        );
        METRICS.proxy_rejected("untrusted");
        return;
    }
    let mut shutdown = shared.shutdown.clone();
    let read = tokio::time::timeout(shared.auth_timeout, super::proxy::read_header(&mut tcp));
    let header = tokio::select! {
        r = read => r,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let header = match header {
        Ok(Ok(header)) => header,
        Ok(Err(super::proxy::ReadError::Closed(0))) => {
            // A health check that only connects.
            tracing::debug!(%proxy, "proxy closed the connection before sending anything");
            METRICS.proxy_rejected("closed");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%proxy, "closing a PROXY protocol connection: {e}");
            let reason = match e {
                super::proxy::ReadError::Invalid(_) => "invalid",
                super::proxy::ReadError::Closed(_) => "closed",
                super::proxy::ReadError::Io(_) => "io-error",
            };
            METRICS.proxy_rejected(reason);
            return;
        }
        Err(_) => {
            tracing::warn!(
                %proxy,
                timeout_secs = shared.auth_timeout.as_secs(),
                "closing a PROXY protocol connection: no complete header in time"
            );
            METRICS.proxy_rejected("timeout");
            return;
        }
    };
    let peer = header.client(proxy);
    tracing::debug!(%peer, %proxy, version = ?header.version, "PROXY header received");
    let Some(slot) = shared.guard.admit(peer.ip()) else {
        tracing::warn!(%peer, %proxy, "too many connections from this address, refusing");
        use tokio::io::AsyncWriteExt;
        let _ = tcp
            .write_all(b"-ERR [SYS/TEMP] Too many connections from your address\r\n")
            .await;
        return;
    };
    super::connection::serve(shared, tcp, peer, implicit_tls).await;
    drop(slot);
    drop(permit);
}

/// A server-wide secret for SCRAM nonces and made-up salts.
fn random_secret() -> Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    Ok(secret)
}
