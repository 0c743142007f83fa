//! Starting the real `poplar` binary with the real plugins on free loopback
//! ports, a generated Maildir and passwd-file, and talking to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const PLUGIN_DIR: &str = env!("POPLAR_PLUGIN_DIR");
pub const POPLAR: &str = env!("CARGO_BIN_EXE_poplar");

/// Users in the generated passwd-file, one per password scheme. Hashes were
/// made by independent tools (openssl passwd, htpasswd, argon2 CLI).
pub const PASSWD: &str = "\
# test users
alice:{PLAIN}alice-pw
bob:{SHA512-CRYPT}$6$saltsalt$pkqyANKCAOeeWmhwck54C3T3yfOcxtv2K7HRyENLnWZ7yyDavjLd4EW0gHFSoFy3UA9KPX5OWMFUPq6bZ6U9..
carol:{BLF-CRYPT}$2y$05$LAAtgjCyYuI66lqLuQmyauJ58QCs4jPadddw.oUz7WjWlE14prCGO
dave:{ARGON2ID}$argon2id$v=19$m=4096,t=2,p=1$c29tZXNhbHRzYWx0$lpRgtvagX0IZY0cqocYhqWsQ4QU4DtgDI69uMpSA20o
erin:{SHA256-CRYPT}$5$saltsalt$mPWzUd6al.91nIVR41LGZwtInHz6ElK2s7R7BP0aAb8
frank:{PLAIN}frank-pw
";

/// Options for a test server.
#[derive(Clone)]
pub struct Options {
    pub plaintext_auth: &'static str,
    pub auth_timeout_secs: u64,
    pub extra_pop3: String,
    pub storage_config: String,
    /// Appended to the config file: `[lmtp]`, `[delivery]`, `[filter.*]`.
    pub extra: String,
    /// Extra environment variables for the server process.
    pub env: Vec<(String, String)>,
    /// Put loopback in `server.trusted_networks` (no per-address cap, no
    /// failed-login penalty), so tests can fail logins quickly.
    pub trust_loopback: bool,
    /// More keys for the `[server]` table.
    pub server: String,
    /// More keys for the `[auth.config]` table.
    pub auth_config: String,
    /// More keys for both `[[listener]]` tables (e.g. `proxy_protocol = true`).
    pub listener: String,
    /// Another component instead of the default auth plugin.
    pub auth_plugin: Option<PluginOverride>,
    /// Another component instead of the default storage plugin.
    pub storage_plugin: Option<PluginOverride>,
    /// A compiled-plugin cache of the test's own instead of the shared one.
    pub cache_dir: Option<PathBuf>,
}

/// A plugin file to load instead of a default one, with its limits.
#[derive(Clone)]
pub struct PluginOverride {
    pub path: PathBuf,
    pub timeout_ms: u64,
    pub memory_mb: u64,
}

impl PluginOverride {
    /// The `path`, `timeout_ms` and `memory_mb` keys of a plugin table.
    fn keys(&self) -> String {
        format!(
            "path = \"{}\"\ntimeout_ms = {}\nmemory_mb = {}",
            self.path.display(),
            self.timeout_ms,
            self.memory_mb
        )
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            plaintext_auth: "tls-or-loopback",
            auth_timeout_secs: 10,
            extra_pop3: String::new(),
            storage_config: String::new(),
            extra: String::new(),
            env: Vec::new(),
            trust_loopback: true,
            server: String::new(),
            auth_config: String::new(),
            listener: String::new(),
            auth_plugin: None,
            storage_plugin: None,
            cache_dir: None,
        }
    }
}

/// A running server and the files it serves.
pub struct TestServer {
    child: Child,
    pub dir: tempfile::TempDir,
    /// Plain POP3 with STLS.
    pub plain: SocketAddr,
    /// Implicit TLS.
    pub tls: SocketAddr,
    /// The LMTP listeners' TCP addresses and socket paths, if configured.
    pub lmtp: Vec<String>,
    /// The admin (metrics) listener, if configured.
    pub admin: Option<SocketAddr>,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, opts)
    }

    /// Starts a server over an existing folder (for restarts).
    pub fn start_in(dir: tempfile::TempDir, opts: Options) -> TestServer {
        let config = prepare(dir.path(), &opts);
        let mut command = Command::new(POPLAR);
        command
            .args(["serve", "--config"])
            .arg(&config)
            .envs(opts.env.iter().map(|(k, v)| (k, v)));
        Self::launch(dir, command)
    }

    /// Runs `command` (a `poplar serve` prepared by the caller, e.g. with
    /// inherited sockets) over `dir` and waits until it listens.
    pub fn launch(dir: tempfile::TempDir, mut command: Command) -> TestServer {
        if command.get_envs().all(|(k, _)| k != "POPLAR_LOG") {
            command.env("POPLAR_LOG", "info");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start poplar");
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut plain, mut tls) = (None, None);
        let mut lmtp = Vec::new();
        let mut admin = None;
        while plain.is_none() || tls.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.wait();
                panic!(
                    "poplar exited before listening:\n{}",
                    stderr.lock().unwrap()
                );
            };
            // "lmtp listening on ADDR" come first, then
            // "listening on 127.0.0.1:PORT (mode)".
            if let Some(addr) = line.strip_prefix("lmtp listening on ") {
                lmtp.push(addr.to_string());
            } else if let Some(addr) = line.strip_prefix("admin listening on ") {
                admin = Some(addr.parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("listening on ") {
                let addr: SocketAddr = rest.split(' ').next().unwrap().parse().unwrap();
                if rest.contains("implicit") {
                    tls = Some(addr);
                } else {
                    plain = Some(addr);
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        TestServer {
            child,
            dir,
            plain: plain.unwrap(),
            lmtp,
            admin,
            tls: tls.unwrap(),
            stderr,
        }
    }

    /// Sends the server a signal (`"TERM"`, `"HUP"`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (up to 30 s) for the server to exit on its own.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not exit:\n{}", self.log());
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn mail_root(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    pub fn maildir(&self, user: &str) -> PathBuf {
        self.mail_root().join(user)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the server's log contains `needle`, and
    /// returns the log line that does.
    pub fn wait_for_log(&self, needle: &str) -> String {
        for _ in 0..200 {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("log never contained {needle:?}:\n{}", self.log());
    }

    /// Stops the server and hands back its folder (for a restart).
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// A raw client on the plain port, greeting already read.
    pub fn connect(&self) -> Client {
        let mut c = Client::plain(self.plain);
        let greeting = c.line();
        assert!(greeting.starts_with("+OK "), "{greeting}");
        c
    }

    /// A raw client logged in as `user`.
    pub fn login(&self, user: &str, password: &str) -> Client {
        let mut c = self.connect();
        c.ok(&format!("USER {user}"));
        let r = c.cmd(&format!("PASS {password}"));
        assert!(r.starts_with("+OK"), "login {user}: {r}");
        c
    }

    /// Runs `poplar deliver` for `user`.
    pub fn deliver(&self, user: &str, message: &[u8]) {
        let mut child = Command::new(POPLAR)
            .args(["deliver", "--config"])
            .arg(self.dir.path().join("poplar.toml"))
            .args(["--user", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "deliver failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes the passwd-file, certificate and `poplar.toml` of a test server
/// into `root` (keeping what exists) and returns the config file's path.
pub fn prepare(root: &Path, opts: &Options) -> PathBuf {
    std::fs::create_dir_all(root.join("mail")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    if !root.join("etc/passwd").exists() {
        std::fs::write(root.join("etc/passwd"), PASSWD).unwrap();
    }
    if !root.join("cert.pem").exists() {
        poplar::net::tls::ensure_self_signed(&root.join("cert.pem"), &root.join("key.pem"))
            .unwrap();
    }
    let trusted = if opts.trust_loopback {
        r#"trusted_networks = ["127.0.0.0/8", "::1"]"#
    } else {
        ""
    };
    let config = format!(
        r#"
[server]
{trusted}
{server}
[[listener]]
address = "127.0.0.1:0"
tls = "starttls"
{listener}
[[listener]]
address = "127.0.0.1:0"
tls = "implicit"
{listener}
[tls]
cert = "cert.pem"
key = "key.pem"
[pop3]
plaintext_auth = "{plaintext}"
auth_timeout_secs = {auth_timeout}
{extra_pop3}
[runtime]
cache_dir = "{cache}"
[auth]
{auth_keys}
dirs = [{{ host = "etc", guest = "/etc/poplar" }}]
[auth.config]
file = "/etc/poplar/passwd"
{auth_config}
[storage]
{storage_keys}
dirs = [{{ host = "mail", guest = "/mail", writable = true }}]
[storage.config]
root = "/mail"
{storage_config}
{extra}
"#,
        plaintext = opts.plaintext_auth,
        auth_timeout = opts.auth_timeout_secs,
        extra_pop3 = opts.extra_pop3,
        storage_config = opts.storage_config,
        extra = opts.extra,
        server = opts.server,
        auth_config = opts.auth_config,
        listener = opts.listener,
        auth_keys = opts.auth_plugin.as_ref().map_or_else(
            || format!("path = \"{PLUGIN_DIR}/auth_passwd.wasm\""),
            PluginOverride::keys
        ),
        storage_keys = opts.storage_plugin.as_ref().map_or_else(
            || format!("path = \"{PLUGIN_DIR}/storage_maildir.wasm\""),
            PluginOverride::keys
        ),
        cache = opts
            .cache_dir
            .clone()
            .unwrap_or_else(shared_cache_dir)
            .display(),
    );
    std::fs::write(root.join("poplar.toml"), config).unwrap();
    root.join("poplar.toml")
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One compiled-plugin cache for the whole test run, so each server start
/// does not recompile the plugins.
pub fn shared_cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("poplar-e2e-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a message file into `<maildir>/<sub>/<name>` as another MDA (or
/// Dovecot) would, creating the Maildir.
pub fn put_message(maildir: &Path, sub: &str, name: &str, content: &[u8]) {
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(d)).unwrap();
    }
    std::fs::write(maildir.join(sub).join(name), content).unwrap();
}

/// Files currently in a Maildir's new/ and cur/.
pub fn maildir_files(maildir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(maildir.join(sub)) {
            for e in rd.flatten() {
                out.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

/// The bytes a POP3 client should receive for a stored message: LF turned
/// into CRLF (a final CRLF added if missing).
pub fn crlf(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 20);
    let mut prev = 0u8;
    for &b in stored {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !out.ends_with(b"\r\n") && !out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A blocking raw-protocol client (plain or TLS).
pub struct Client {
    reader: BufReader<Box<dyn ReadWrite>>,
}

pub trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

impl Client {
    pub fn plain(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            reader: BufReader::new(Box::new(tcp)),
        }
    }

    /// Implicit TLS, trusting `cert`.
    pub fn tls(addr: SocketAddr, cert: &Path) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            reader: BufReader::new(Box::new(tls_wrap(tcp, cert))),
        }
    }

    /// TLS over a connection that already carried something (a PROXY
    /// header), trusting `cert`.
    pub fn tls_over(tcp: TcpStream, cert: &Path) -> Client {
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            reader: BufReader::new(Box::new(tls_wrap(tcp, cert))),
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.reader.get_mut();
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// Reads one line including its CRLF; empty string at EOF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf).unwrap();
        String::from_utf8(buf).expect("server sent non-UTF-8")
    }

    /// Reads one line of raw bytes including CRLF.
    pub fn line_bytes(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf).unwrap();
        buf
    }

    /// Sends a command and returns the status line.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Sends a command that must succeed.
    pub fn ok(&mut self, line: &str) -> String {
        let r = self.cmd(line);
        assert!(r.starts_with("+OK"), "{line} -> {r}");
        r
    }

    /// Reads the body of a multi-line response up to and including the
    /// terminating ".\r\n", raw.
    pub fn multiline_raw(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let l = self.line_bytes();
            assert!(!l.is_empty(), "EOF inside a multi-line response");
            out.extend_from_slice(&l);
            if l == b".\r\n" {
                return out;
            }
        }
    }

    /// Reads a multi-line body and undoes dot-stuffing; returns the data
    /// lines joined with CRLF (as the message was before encoding).
    pub fn multiline(&mut self) -> Vec<u8> {
        let raw = self.multiline_raw();
        let mut out = Vec::new();
        for line in raw.split_inclusive(|&b| b == b'\n') {
            if line == b".\r\n" {
                break;
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    /// Reads until EOF; returns what came.
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        let _ = self.reader.read_to_string(&mut s);
        s
    }

    /// Upgrades with STLS (the `+OK` must already have been read).
    pub fn start_tls(self, cert: &Path) -> Client {
        let (inner, buffered) = {
            let buffered = self.reader.buffer().to_vec();
            (self.reader.into_inner(), buffered)
        };
        assert!(
            buffered.is_empty(),
            "server sent data before the TLS handshake"
        );
        Client {
            reader: BufReader::new(Box::new(tls_wrap(inner, cert))),
        }
    }
}

/// A TLS client stream over `sock` that trusts only `cert` (for `localhost`).
pub fn tls_wrap<S: Read + Write + Send + 'static>(
    sock: S,
    cert: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, S> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}
