//! The server's TOML configuration: types, defaults, and validation with
//! errors that name the key at fault. `examples/poplar.toml` documents every
//! key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    /// `[[listener]]` tables.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub pop3: Pop3Config,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    pub auth: PluginConfig,
    pub storage: PluginConfig,
    /// `[filter.NAME]` tables: the filter plugins.
    #[serde(default)]
    pub filter: BTreeMap<String, PluginConfig>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The LMTP listener, if mail is delivered over LMTP.
    pub lmtp: Option<LmtpConfig>,
    /// The admin listener (Prometheus metrics), if any.
    pub admin: Option<AdminConfig>,
    /// Mailbox limits checked at delivery.
    #[serde(default)]
    pub quota: QuotaConfig,
}

/// `[quota]`: how much mail a user may hold, the inbox and every folder
/// together (the storage plugin's `usage`). Checked at delivery, whichever
/// mailbox the message goes into (the inbox, or the folder a filter or
/// `+detail` chose): a message that would take the user past either limit
/// is refused (LMTP `552 5.2.2`). 0 means no limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Most messages a user may hold (inbox and folders together), for
    /// every user without an override.
    #[serde(default)]
    pub messages: u64,
    /// Most octets (as stored) a user may hold (inbox and folders
    /// together), for every user without an override.
    #[serde(default)]
    pub bytes: u64,
    /// `[quota.users.NAME]`: overrides for one principal (the name the auth
    /// plugin resolves the user to). A key left out keeps the default.
    #[serde(default)]
    pub users: BTreeMap<String, QuotaOverride>,
}

/// One user's `[quota.users.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaOverride {
    pub messages: Option<u64>,
    pub bytes: Option<u64>,
}

/// The limits that apply to one user; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub messages: Option<u64>,
    pub bytes: Option<u64>,
}

impl QuotaConfig {
    /// The limits for `principal`: its override, else the defaults.
    pub fn limits_for(&self, principal: &str) -> QuotaLimits {
        let own = self.users.get(principal);
        let pick = |own: Option<u64>, default: u64| Some(own.unwrap_or(default)).filter(|&n| n > 0);
        QuotaLimits {
            messages: pick(own.and_then(|o| o.messages), self.messages),
            bytes: pick(own.and_then(|o| o.bytes), self.bytes),
        }
    }
}

impl QuotaLimits {
    pub fn is_unlimited(&self) -> bool {
        self.messages.is_none() && self.bytes.is_none()
    }

    /// Why a user holding `messages` messages of `bytes` octets cannot
    /// take one more of `incoming` octets, or `None` if it can.
    pub fn refusal(&self, messages: u64, bytes: u64, incoming: u64) -> Option<String> {
        if let Some(max) = self.messages
            && messages.saturating_add(1) > max
        {
            return Some(format!("{messages} of {max} messages"));
        }
        if let Some(max) = self.bytes
            && bytes.saturating_add(incoming) > max
        {
            return Some(format!(
                "{bytes} + {incoming} octets would exceed {max} octets"
            ));
        }
        None
    }
}

/// The admin HTTP listener: `GET /metrics` (Prometheus), `GET /health`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// e.g. `127.0.0.1:9110`. It has no authentication: keep it private.
    pub listen: SocketAddr,
}

/// How delivered mail is filtered and stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// The filters to run, in order.
    #[serde(default)]
    pub chain: Vec<ChainEntry>,
    /// Largest message accepted, in octets (LMTP `SIZE`).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// How often filter files are checked for replacement, in milliseconds
    /// (0 turns the watcher off; SIGHUP still reloads).
    #[serde(default = "default_watch_ms")]
    pub watch_interval_ms: u64,
    /// How stored messages end their lines: `"lf"` (default; Maildir's
    /// convention, what Dovecot stores) or `"as-received"` (CRLF over
    /// LMTP). Either way POP3 serves them with CRLF.
    #[serde(default = "default_line_endings")]
    pub line_endings: StoredLineEndings,
}

/// `delivery.line_endings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoredLineEndings {
    Lf,
    AsReceived,
}

fn default_line_endings() -> StoredLineEndings {
    StoredLineEndings::Lf
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            chain: Vec::new(),
            max_message_size: default_max_message_size(),
            watch_interval_ms: default_watch_ms(),
            line_endings: default_line_endings(),
        }
    }
}

fn default_max_message_size() -> u64 {
    50 * 1024 * 1024
}
fn default_watch_ms() -> u64 {
    1000
}

/// One step of the filter chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainEntry {
    /// A `[filter.NAME]` table.
    pub filter: String,
    /// What happens when the filter traps, times out or fails.
    #[serde(default)]
    pub on_failure: FailurePolicy,
}

/// What a failing filter means for the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Fail closed: the MTA is told to retry later (LMTP 4xx).
    #[default]
    Tempfail,
    /// Fail open: carry on as if the filter had accepted.
    Accept,
}

/// The LMTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmtpConfig {
    /// TCP addresses, e.g. `["127.0.0.1:24"]`.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// A Unix socket path (created at startup, replacing a stale one).
    pub unix_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Name used in the greeting's APOP timestamp and in logs.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Most client connections open at once, over all listeners.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// On SIGTERM, how long busy sessions may take to finish before the
    /// process exits anyway (idle ones are closed at once).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// Most connections open at once from one client address.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Networks exempt from the per-address connection cap and the
    /// failed-login penalty, e.g. `["10.0.0.0/8", "::1"]`.
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    /// The proxies (load balancers) allowed to connect to listeners with
    /// `proxy_protocol = true`, e.g. `["10.0.0.5/32"]`; connections from
    /// elsewhere are closed.
    #[serde(default)]
    pub proxy_trusted_networks: Vec<String>,
    /// Delay before answering the first failed login from an address, in
    /// milliseconds; it doubles with each further failure up to 7.5 times
    /// (2000 → 2, 4, 8, 15 s). 0 turns the penalty off.
    #[serde(default = "default_failed_login_delay")]
    pub failed_login_delay_ms: u64,
    /// IPv4 clients whose addresses share this many leading bits share one
    /// failed-login penalty (default 32: each address on its own).
    #[serde(default = "default_ipv4_prefix")]
    pub failed_login_ipv4_prefix: u8,
    /// IPv6 clients whose addresses share this many leading bits share one
    /// failed-login penalty (default 64: a subscriber's whole network, from
    /// which an attacker could otherwise use a fresh address per guess).
    #[serde(default = "default_ipv6_prefix")]
    pub failed_login_ipv6_prefix: u8,
    /// Started as root, become this user once the listeners are bound and
    /// the TLS key is read, before any plugin loads (e.g. `"poplar"`).
    pub user: Option<String>,
    /// The group to become instead of `user`'s primary group.
    pub group: Option<String>,
    /// This node's name, unique among the Poplar nodes that share a store
    /// (it marks the maildrop leases its sessions hold). Default: the
    /// machine's host name. The environment variable `POPLAR_NODE`
    /// overrides it, so several nodes can share one file.
    #[serde(default = "default_node")]
    pub node: String,
    /// How long a maildrop lease lasts without renewal, in seconds. A node
    /// renews its sessions' leases every third of it; when a node dies,
    /// its users can log in on another node after at most this long.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: default_hostname(),
            max_connections: default_max_connections(),
            shutdown_timeout_secs: default_shutdown_timeout(),
            max_connections_per_ip: default_max_connections_per_ip(),
            trusted_networks: Vec::new(),
            proxy_trusted_networks: Vec::new(),
            failed_login_delay_ms: default_failed_login_delay(),
            failed_login_ipv4_prefix: default_ipv4_prefix(),
            failed_login_ipv6_prefix: default_ipv6_prefix(),
            user: None,
            group: None,
            node: default_node(),
            lease_ttl_secs: default_lease_ttl(),
        }
    }
}

fn default_hostname() -> String {
    "localhost".into()
}
fn default_max_connections() -> usize {
    1000
}
fn default_shutdown_timeout() -> u64 {
    30
}
fn default_max_connections_per_ip() -> usize {
    50
}
fn default_node() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "poplar".into(),
    }
}
fn default_lease_ttl() -> u64 {
    30
}
fn default_failed_login_delay() -> u64 {
    2000
}
fn default_ipv4_prefix() -> u8 {
    32
}
fn default_ipv6_prefix() -> u8 {
    64
}

/// How a listener uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerTls {
    /// Plain POP3, with STLS offered when `[tls]` is configured (port 110).
    Starttls,
    /// TLS from the first byte (RFC 8314; port 995).
    Implicit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:port`, e.g. `127.0.0.1:110` or `[::1]:995`.
    pub address: SocketAddr,
    #[serde(default = "default_listener_tls")]
    pub tls: ListenerTls,
    /// Every connection starts with a HAProxy PROXY protocol header (v1 or
    /// v2, before TLS) naming the real client; only proxies in
    /// `server.proxy_trusted_networks` may connect.
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_listener_tls() -> ListenerTls {
    ListenerTls::Starttls
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// When USER/PASS and AUTH PLAIN/LOGIN may be used without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlaintextAuth {
    /// Only inside TLS, except for clients on loopback (like Dovecot's
    /// `disable_plaintext_auth = yes`).
    TlsOrLoopback,
    /// Only inside TLS.
    TlsOnly,
    /// Always (not recommended).
    Always,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3Config {
    /// Put an APOP timestamp in the greeting and accept APOP.
    #[serde(default = "yes")]
    pub apop: bool,
    #[serde(default = "default_plaintext_auth")]
    pub plaintext_auth: PlaintextAuth,
    /// Advertised `LOGIN-DELAY` in seconds (RFC 2449), if set.
    pub login_delay: Option<u32>,
    /// Advertised `EXPIRE`: `"NEVER"` or a number of days, if set.
    pub expire: Option<String>,
    /// Logging in as `user<sep>Folder` opens that folder instead of the
    /// inbox (like Cyrus's popsubfolders), e.g. `alice+Junk`. Empty turns it
    /// off.
    #[serde(default = "default_folder_separator")]
    pub folder_separator: Option<String>,
    /// Autologout after login; RFC 1939 requires at least 600 seconds.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Autologout before login.
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_secs: u64,
    /// SASL mechanisms offered: any of PLAIN, LOGIN, SCRAM-SHA-256,
    /// SCRAM-SHA-256-PLUS, OAUTHBEARER, XOAUTH2. PLAIN, LOGIN and the
    /// OAuth ones follow `plaintext_auth`; SCRAM needs the auth plugin to
    /// hand out verifiers (or clear-text passwords); the OAuth ones need an
    /// auth plugin that validates bearer tokens.
    #[serde(default = "default_sasl_mechanisms")]
    pub sasl_mechanisms: Vec<String>,
    /// What the UPDATE state does with messages marked by DELE (Dovecot's
    /// `pop3_delete_type`): `"expunge"` (default), `"flag"` (keep them,
    /// flagged deleted and hidden from POP3) or `"move:FOLDER"` (e.g.
    /// `"move:Trash"`). The auth plugin may choose otherwise per user.
    #[serde(default = "default_dele_action")]
    pub dele_action: String,
}

impl Pop3Config {
    /// The configured SASL mechanisms; an unknown name is an error.
    pub fn mechanisms(&self) -> Result<poplar_proto::pop3::session::Mechanisms> {
        let mut m = poplar_proto::pop3::session::Mechanisms::none();
        for name in &self.sasl_mechanisms {
            if !m.enable(name) {
                bail!(
                    "pop3.sasl_mechanisms: unknown mechanism {name:?} (known: {})",
                    poplar_proto::pop3::session::Mechanisms::ALL.join(", ")
                );
            }
        }
        Ok(m)
    }
}

fn default_dele_action() -> String {
    "expunge".into()
}

/// What DELE does, parsed from `pop3.dele_action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleAction {
    Expunge,
    Flag,
    MoveTo(String),
}

impl DeleAction {
    /// Parses `expunge`, `flag` or `move:FOLDER`.
    pub fn parse(text: &str) -> Result<DeleAction> {
        match text {
            "expunge" => Ok(DeleAction::Expunge),
            "flag" => Ok(DeleAction::Flag),
            _ => match text.strip_prefix("move:") {
                Some(folder) if !folder.is_empty() && !folder.contains(['/', '\0']) => {
                    Ok(DeleAction::MoveTo(folder.to_string()))
                }
                _ => bail!(
                    "pop3.dele_action: {text:?} is not one of \"expunge\", \"flag\" or \"move:FOLDER\""
                ),
            },
        }
    }
}

impl Pop3Config {
    /// `dele_action`, parsed (validated with the rest of the file).
    pub fn dele(&self) -> DeleAction {
        DeleAction::parse(&self.dele_action).unwrap_or(DeleAction::Expunge)
    }
}

fn default_sasl_mechanisms() -> Vec<String> {
    vec!["PLAIN".into(), "LOGIN".into()]
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            apop: true,
            plaintext_auth: default_plaintext_auth(),
            login_delay: None,
            expire: None,
            folder_separator: default_folder_separator(),
            idle_timeout_secs: default_idle_timeout(),
            auth_timeout_secs: default_auth_timeout(),
            sasl_mechanisms: default_sasl_mechanisms(),
            dele_action: default_dele_action(),
        }
    }
}

fn default_folder_separator() -> Option<String> {
    Some("+".into())
}
fn yes() -> bool {
    true
}
fn default_plaintext_auth() -> PlaintextAuth {
    PlaintextAuth::TlsOrLoopback
}
fn default_idle_timeout() -> u64 {
    600
}
fn default_auth_timeout() -> u64 {
    60
}

/// The wasm runtime shared by all plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where compiled plugins are cached (keyed by content hash and engine
    /// version). Default: `.poplar-cache` beside the config file.
    pub cache_dir: Option<PathBuf>,
    /// Most plugin instances alive at once (the pooling allocator's size);
    /// further calls wait for a free slot.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Idle warm instances kept per plugin for reuse.
    #[serde(default = "default_idle_instances")]
    pub idle_instances: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: default_max_instances(),
            idle_instances: default_idle_instances(),
        }
    }
}

fn default_max_instances() -> u32 {
    64
}
fn default_idle_instances() -> usize {
    8
}

/// One plugin: `[auth]`, `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// Deadline for one call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory cap for one instance, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Host directories the plugin may see.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// The plugin's own settings, handed to it through `host.config`.
    #[serde(default)]
    pub config: toml::Table,
    /// If set, the SHA-256 (hex) the component file must have: a file that
    /// differs is refused at startup and on reload.
    pub sha256: Option<String>,
    /// Environment variables the plugin sees (none by default).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Networks (`10.0.0.0/8`, `192.0.2.7`, `::1`) the plugin may open TCP
    /// or UDP sockets to; none by default. Name lookups stay off: grant
    /// addresses.
    #[serde(default)]
    pub network: Vec<String>,
    /// Most calls of this plugin running at once (default: no cap of its
    /// own beyond `runtime.max_instances`).
    pub max_concurrent_calls: Option<u32>,
    /// Most elements in one of the plugin's tables (default 100000).
    #[serde(default = "default_table_elements")]
    pub max_table_elements: u32,
}

fn default_table_elements() -> u32 {
    100_000
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_memory_mb() -> u64 {
    128
}

/// A host directory preopened into a plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Path under which the plugin sees it, e.g. `/mail`.
    pub guest: String,
    /// Whether the plugin may create, change and remove files in it.
    #[serde(default)]
    pub writable: bool,
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths in it are
    /// taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses and validates config text; `base` anchors relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Ok(node) = std::env::var("POPLAR_NODE")
            && !node.is_empty()
        {
            config.server.node = node;
        }
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
        match &mut self.runtime.cache_dir {
            Some(dir) => fix(dir),
            None => self.runtime.cache_dir = Some(base.join(".poplar-cache")),
        }
        if let Some(lmtp) = &mut self.lmtp
            && let Some(sock) = &mut lmtp.unix_socket
        {
            fix(sock);
        }
        let filters = self.filter.values_mut();
        for plugin in [&mut self.auth, &mut self.storage]
            .into_iter()
            .chain(filters)
        {
            fix(&mut plugin.path);
            for d in &mut plugin.dirs {
                fix(&mut d.host);
            }
        }
    }

    fn validate(&self) -> Result<()> {
        if self.listeners.is_empty() {
            bail!("no [[listener]] configured: add at least one with an `address`");
        }
        if self.tls.is_none()
            && let Some(l) = self
                .listeners
                .iter()
                .find(|l| l.tls == ListenerTls::Implicit)
        {
            bail!(
                "listener {}: `tls = \"implicit\"` needs a [tls] section with `cert` and `key`",
                l.address
            );
        }
        if self.pop3.idle_timeout_secs < 600 {
            bail!(
                "pop3.idle_timeout_secs = {}: RFC 1939 requires at least 600 seconds",
                self.pop3.idle_timeout_secs
            );
        }
        self.pop3.mechanisms()?;
        DeleAction::parse(&self.pop3.dele_action)?;
        if self.server.node.is_empty()
            || self.server.node.len() > 64
            || !self.server.node.bytes().all(|b| b.is_ascii_graphic())
        {
            bail!(
                "server.node = {:?}: use 1 to 64 visible ASCII characters, unique among the nodes",
                self.server.node
            );
        }
        if !(3..=3600).contains(&self.server.lease_ttl_secs) {
            bail!(
                "server.lease_ttl_secs = {}: use 3 to 3600 seconds",
                self.server.lease_ttl_secs
            );
        }
        if self.pop3.auth_timeout_secs == 0 {
            bail!("pop3.auth_timeout_secs must be at least 1");
        }
        if let Some(e) = &self.pop3.expire
            && e != "NEVER"
            && e.parse::<u32>().is_err()
        {
            bail!("pop3.expire = {e:?}: use \"NEVER\" or a number of days");
        }
        if self.server.max_connections == 0 {
            bail!("server.max_connections must be at least 1");
        }
        if self.server.max_connections_per_ip == 0 {
            bail!("server.max_connections_per_ip must be at least 1");
        }
        if self.server.failed_login_ipv4_prefix > 32 {
            bail!("server.failed_login_ipv4_prefix must be 0 to 32");
        }
        if self.server.failed_login_ipv6_prefix > 128 {
            bail!("server.failed_login_ipv6_prefix must be 0 to 128");
        }
        for n in &self.server.trusted_networks {
            crate::net::guard::Network::parse(n)
                .map_err(|e| anyhow::anyhow!("server.trusted_networks: {e}"))?;
        }
        for n in &self.server.proxy_trusted_networks {
            crate::net::guard::Network::parse(n)
                .map_err(|e| anyhow::anyhow!("server.proxy_trusted_networks: {e}"))?;
        }
        if self.server.proxy_trusted_networks.is_empty()
            && let Some(l) = self.listeners.iter().find(|l| l.proxy_protocol)
        {
            bail!(
                "listener {}: `proxy_protocol = true` needs server.proxy_trusted_networks \
                 (the addresses of the proxies allowed to connect)",
                l.address
            );
        }
        if self.server.user.as_deref() == Some("") {
            bail!("server.user must not be empty (leave it out to keep the current user)");
        }
        if self.server.group.is_some() && self.server.user.is_none() {
            bail!("server.group needs server.user");
        }
        if self.runtime.max_instances < 2 {
            bail!("runtime.max_instances must be at least 2");
        }
        for (name, p) in [("auth", &self.auth), ("storage", &self.storage)] {
            p.validate(name)?;
            p.keep_out_of_cache(name, self.runtime.cache_dir.as_deref())?;
        }
        for (name, p) in &self.filter {
            let name = format!("filter.{name}");
            p.validate(&name)?;
            p.keep_out_of_cache(&name, self.runtime.cache_dir.as_deref())?;
        }
        for (i, step) in self.delivery.chain.iter().enumerate() {
            if !self.filter.contains_key(&step.filter) {
                bail!(
                    "delivery.chain[{i}]: no [filter.{}] table is configured",
                    step.filter
                );
            }
        }
        if self.delivery.max_message_size < 1024 {
            bail!("delivery.max_message_size must be at least 1024 octets");
        }
        if let Some(l) = &self.lmtp
            && l.listen.is_empty()
            && l.unix_socket.is_none()
        {
            bail!("[lmtp] needs `listen` addresses or a `unix_socket`");
        }
        if self.quota.users.contains_key("") {
            bail!("quota.users: a user name must not be empty");
        }
        Ok(())
    }
}

impl PluginConfig {
    /// Refuses a writable grant that contains the compiled-plugin cache or
    /// lies inside it: the cache holds native code the server loads at the
    /// next start, outside the sandbox.
    fn keep_out_of_cache(&self, name: &str, cache: Option<&Path>) -> Result<()> {
        let Some(cache) = cache else {
            return Ok(());
        };
        let cache = real_path(cache);
        for (i, d) in self.dirs.iter().enumerate() {
            if !d.writable {
                continue;
            }
            let host = real_path(&d.host);
            let how = if cache.starts_with(&host) {
                "contains"
            } else if host.starts_with(&cache) {
                "is inside"
            } else {
                continue;
            };
            bail!(
                "{name}.dirs[{i}]: the writable grant {} {how} runtime.cache_dir {}, where \
                 compiled plugins are kept as native code that runs outside the sandbox; \
                 move runtime.cache_dir out of it, or grant the directory read-only",
                d.host.display(),
                cache.display()
            );
        }
        Ok(())
    }

    fn validate(&self, name: &str) -> Result<()> {
        if !self.path.is_file() {
            bail!(
                "{name}.path: plugin file {} does not exist",
                self.path.display()
            );
        }
        if self.timeout_ms == 0 {
            bail!("{name}.timeout_ms must be at least 1");
        }
        if let Some(pin) = &self.sha256
            && (pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bail!("{name}.sha256 = {pin:?}: expected 64 hex digits (see `poplar plugin check`)");
        }
        for n in &self.network {
            crate::net::guard::Network::parse(n)
                .with_context(|| format!("{name}.network: {n:?}"))?;
        }
        if self.max_concurrent_calls == Some(0) {
            bail!("{name}.max_concurrent_calls must be at least 1");
        }
        if !(1..=4096).contains(&self.memory_mb) {
            bail!("{name}.memory_mb must be between 1 and 4096");
        }
        for d in &self.dirs {
            if !d.host.is_dir() {
                bail!(
                    "{name}.dirs: host directory {} does not exist",
                    d.host.display()
                );
            }
            if !d.guest.starts_with('/') {
                bail!("{name}.dirs: guest path {:?} must be absolute", d.guest);
            }
        }
        Ok(())
    }
}

/// `path` with symbolic links and `..` resolved as far as it exists (the
/// cache directory may not exist before the first start).
fn real_path(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_plugins(extra: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("mail")).unwrap();
        let text = format!(
            "{extra}\n[auth]\npath = \"a.wasm\"\n[storage]\npath = \"a.wasm\"\n\
             dirs = [{{ host = \"mail\", guest = \"/mail\", writable = true }}]\n"
        );
        (dir, text)
    }

    #[test]
    fn writable_grants_must_keep_out_of_the_plugin_cache() {
        let refused = |toml: &str| {
            let (dir, text) = with_plugins("[[listener]]\naddress = \"127.0.0.1:1\"");
            std::fs::create_dir_all(dir.path().join("var/cache")).unwrap();
            std::fs::create_dir_all(dir.path().join("mail/sub")).unwrap();
            let text = format!("{text}{toml}");
            Config::parse(&text, dir.path())
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        };
        let filter =
            |dirs: &str| format!("[filter.spam]\npath = \"a.wasm\"\ndirs = [{dirs}]\n[runtime]\n");
        // The default cache (.poplar-cache beside the config) inside a
        // writable grant of the config's directory.
        let e = refused(&filter(r#"{ host = ".", guest = "/d", writable = true }"#)).unwrap_err();
        assert!(
            e.contains("filter.spam.dirs[0]: the writable grant")
                && e.contains("contains runtime.cache_dir")
                && e.contains(".poplar-cache"),
            "{e}"
        );
        // The cache named through `..`: the same directory as a grant.
        let e = refused(&format!(
            "{}cache_dir = \"mail/sub/..\"",
            filter(r#"{ host = "var", guest = "/v" }"#)
        ))
        .unwrap_err();
        assert!(
            e.contains("storage.dirs[0]: the writable grant") && e.contains("contains"),
            "{e}"
        );
        // A grant inside the cache.
        let e = refused(&format!(
            "{}cache_dir = \"var/..\"",
            filter(r#"{ host = "var", guest = "/v" }"#)
        ))
        .unwrap_err();
        assert!(
            e.contains("storage.dirs[0]: the writable grant") && e.contains("is inside"),
            "{e}"
        );
        // Read-only grants and grants beside the cache are fine.
        refused(&format!(
            "{}cache_dir = \"var/cache\"",
            filter(r#"{ host = ".", guest = "/d" }, { host = "mail/sub", guest = "/s", writable = true }"#)
        ))
        .unwrap();
        // A cache that does not exist yet is checked by where it will be.
        let e = refused(&format!(
            "{}cache_dir = \"var/cache/not/yet\"",
            filter(r#"{ host = "var/cache", guest = "/c", writable = true }"#)
        ))
        .unwrap_err();
        assert!(e.contains("contains runtime.cache_dir"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let (dir, text) = with_plugins("[[listener]]\naddress = \"127.0.0.1:1110\"");
        let c = Config::parse(&text, dir.path()).unwrap();
        assert_eq!(c.listeners[0].tls, ListenerTls::Starttls);
        assert!(!c.listeners[0].proxy_protocol);
        assert_eq!(c.pop3.idle_timeout_secs, 600);
        assert_eq!(c.pop3.plaintext_auth, PlaintextAuth::TlsOrLoopback);
        assert_eq!(c.storage.path, dir.path().join("a.wasm"));
        assert_eq!(c.storage.dirs[0].host, dir.path().join("mail"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[[listener]]\naddress = \"nope\"", "address"),
            (
                "[server]\ngroup = \"mail\"\n[[listener]]\naddress = \"127.0.0.1:1\"",
                "server.group needs server.user",
            ),
            (
                "[[listener]]\naddress = \"127.0.0.1:1\"\nbogus = 1",
                "bogus",
            ),
            ("", "[[listener]]"),
            (
                "[[listener]]\naddress = \"127.0.0.1:1\"\ntls = \"implicit\"",
                "[tls]",
            ),
            (
                "[[listener]]\naddress = \"127.0.0.1:1\"\n[pop3]\nidle_timeout_secs = 60",
                "idle_timeout_secs",
            ),
            (
                "[[listener]]\naddress = \"127.0.0.1:1\"\n[pop3]\nexpire = \"soon\"",
                "expire",
            ),
            (
                "[[listener]]\naddress = \"127.0.0.1:1\"\nproxy_protocol = true",
                "proxy_trusted_networks",
            ),
            (
                "[server]\nproxy_trusted_networks = [\"10.0.0.0/40\"]\n\
                 [[listener]]\naddress = \"127.0.0.1:1\"",
                "server.proxy_trusted_networks",
            ),
            (
                "[server]\nfailed_login_ipv6_prefix = 129\n[[listener]]\naddress = \"127.0.0.1:1\"",
                "server.failed_login_ipv6_prefix must be 0 to 128",
            ),
            (
                "[server]\nfailed_login_ipv4_prefix = 33\n[[listener]]\naddress = \"127.0.0.1:1\"",
                "server.failed_login_ipv4_prefix must be 0 to 32",
            ),
        ];
        for (extra, key) in cases {
            let (dir, text) = with_plugins(extra);
            let e = format!("{:#}", Config::parse(&text, dir.path()).unwrap_err());
            assert!(e.contains(key), "{key:?} not in {e}");
        }
    }

    #[test]
    fn quota_defaults_and_overrides() {
        let (dir, text) = with_plugins(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n\
             [quota]\nmessages = 100\nbytes = 5000\n\
             [quota.users.alice]\nmessages = 0\n\
             [quota.users.bob]\nbytes = 10",
        );
        let c = Config::parse(&text, dir.path()).unwrap();
        let q = &c.quota;
        assert_eq!(
            q.limits_for("carol"),
            QuotaLimits {
                messages: Some(100),
                bytes: Some(5000)
            }
        );
        // 0 lifts a limit; a key left out keeps the default.
        assert_eq!(
            q.limits_for("alice"),
            QuotaLimits {
                messages: None,
                bytes: Some(5000)
            }
        );
        assert_eq!(q.limits_for("bob").bytes, Some(10));
        assert_eq!(q.limits_for("bob").messages, Some(100));
        // No [quota]: unlimited.
        let (dir, text) = with_plugins("[[listener]]\naddress = \"127.0.0.1:1\"");
        let c = Config::parse(&text, dir.path()).unwrap();
        assert!(c.quota.limits_for("alice").is_unlimited());

        let limits = QuotaLimits {
            messages: Some(2),
            bytes: Some(100),
        };
        assert_eq!(limits.refusal(1, 50, 50), None);
        assert!(limits.refusal(2, 0, 1).unwrap().contains("2 of 2 messages"));
        assert!(limits.refusal(0, 50, 51).unwrap().contains("100 octets"));
        assert_eq!(QuotaLimits::default().refusal(u64::MAX, u64::MAX, 1), None);

        let (dir, text) = with_plugins(
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[quota.users.alice]\nmesages = 1",
        );
        let e = format!("{:#}", Config::parse(&text, dir.path()).unwrap_err());
        assert!(e.contains("mesages"), "{e}");
    }

    #[test]
    fn missing_plugin_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[listener]]\naddress = \"127.0.0.1:1\"\n[auth]\npath = \"gone.wasm\"\n\
                    [storage]\npath = \"gone.wasm\"\n";
        let e = format!("{:#}", Config::parse(text, dir.path()).unwrap_err());
        assert!(e.contains("auth.path") && e.contains("gone.wasm"), "{e}");
    }
}
