//! A minimal async POP3 and LMTP client: plain TCP, STLS or implicit TLS.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain POP3 (plaintext login is allowed by the generated config).
    None,
    /// Plain POP3, then STLS before logging in.
    Stls,
    /// TLS from the first byte (POP3S).
    Implicit,
}

/// Where and how to connect.
pub struct Target {
    pub plain: SocketAddr,
    pub implicit: SocketAddr,
    pub lmtp: SocketAddr,
    pub tls: TlsMode,
    pub connector: TlsConnector,
    /// What the first TLS handshake negotiated, e.g. "TLSv1_3
    /// TLS13_AES_256_GCM_SHA384 X25519", to show that both servers were
    /// measured with the same cryptography.
    pub negotiated: std::sync::OnceLock<String>,
}

/// A TLS client configuration trusting only the generated certificate.
/// Without `resume`, every connection makes a full handshake, as clients
/// polling every few minutes mostly do on a server with many users.
pub fn tls_connector(cert: &Path, resume: bool) -> Result<TlsConnector> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).context("reading the certificate")? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A line-oriented connection.
pub struct Conn {
    io: BufReader<Stream>,
    /// The last line read, CRLF included.
    pub line: Vec<u8>,
    out: Vec<u8>,
}

const BUFFER: usize = 64 * 1024;

/// A server line for an error message: printable, one line, short.
pub fn shown(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let s = s.trim_end();
    s.chars().take(120).collect()
}

impl Conn {
    async fn tcp(addr: SocketAddr) -> Result<TcpStream> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    fn new(stream: Stream) -> Conn {
        Conn {
            io: BufReader::with_capacity(BUFFER, stream),
            line: Vec::with_capacity(256),
            out: Vec::with_capacity(256),
        }
    }

    async fn tls(tcp: TcpStream, target: &Target) -> Result<Stream> {
        let name = rustls_pki_types::ServerName::try_from("localhost")?;
        let tls = target
            .connector
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        if target.negotiated.get().is_none() {
            let c = tls.get_ref().1;
            let show = |o: Option<String>| o.unwrap_or_else(|| "?".into());
            let _ = target.negotiated.set(format!(
                "{} {} {}",
                show(c.protocol_version().map(|v| format!("{v:?}"))),
                show(
                    c.negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                ),
                show(
                    c.negotiated_key_exchange_group()
                        .map(|g| format!("{:?}", g.name()))
                ),
            ));
        }
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Reads one line into `self.line`; EOF is an error.
    pub async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        let n = self.io.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        Ok(())
    }

    /// Sends raw bytes and flushes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends a command line (CRLF added).
    pub async fn send(&mut self, cmd: &str) -> Result<()> {
        self.out.clear();
        self.out.extend_from_slice(cmd.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.io.write_all(&self.out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Reads a POP3 status line that must be `+OK`.
    pub async fn expect_ok(&mut self, what: &str) -> Result<()> {
        self.read_line().await?;
        if !self.line.starts_with(b"+OK") {
            bail!("{what}: {}", shown(&self.line));
        }
        Ok(())
    }

    /// Sends a POP3 command whose answer must be `+OK`; errors name only
    /// the command's verb, never its arguments (passwords).
    pub async fn ok(&mut self, cmd: &str) -> Result<()> {
        self.send(cmd).await?;
        let verb = cmd.split(' ').next().unwrap_or(cmd);
        self.expect_ok(verb).await
    }

    /// Reads a POP3 multi-line body up to its terminating ".", calling `f`
    /// with every line after dot-unstuffing (CRLF included). Returns the
    /// number of lines and of octets (unstuffed, CRLF included).
    pub async fn multiline(&mut self, mut f: impl FnMut(&[u8])) -> Result<(u64, u64)> {
        let (mut lines, mut octets) = (0u64, 0u64);
        loop {
            self.read_line().await?;
            let l = self.line.as_slice();
            if l == b".\r\n" {
                return Ok((lines, octets));
            }
            if !l.ends_with(b"\r\n") {
                bail!("line without CRLF in a multi-line response");
            }
            let l = l.strip_prefix(b".").unwrap_or(l);
            lines += 1;
            octets += l.len() as u64;
            f(l);
        }
    }

    /// Reads an SMTP/LMTP reply (all its lines) and returns its code.
    pub async fn reply(&mut self) -> Result<u16> {
        loop {
            self.read_line().await?;
            let l = &self.line;
            let code = std::str::from_utf8(l.get(..3).unwrap_or_default())
                .ok()
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| anyhow!("bad reply: {}", shown(l)))?;
            if l.get(3) != Some(&b'-') {
                return Ok(code);
            }
        }
    }

    /// Reads a reply that must have code `want`.
    pub async fn expect(&mut self, want: u16, what: &str) -> Result<()> {
        let code = self.reply().await?;
        if code != want {
            bail!("{what}: {}", shown(&self.line));
        }
        Ok(())
    }

    /// A POP3 connection in the TRANSACTION state (greeting read, TLS
    /// set up as `target.tls` says, USER/PASS done).
    pub async fn pop3_login(target: &Target, user: &str, password: &str) -> Result<Conn> {
        let mut c = match target.tls {
            TlsMode::Implicit => {
                let tcp = Self::tcp(target.implicit).await?;
                Conn::new(Self::tls(tcp, target).await?)
            }
            TlsMode::None | TlsMode::Stls => {
                Conn::new(Stream::Plain(Self::tcp(target.plain).await?))
            }
        };
        c.expect_ok("greeting").await?;
        if target.tls == TlsMode::Stls {
            c.ok("STLS").await?;
            if !c.io.buffer().is_empty() {
                bail!("server sent data after +OK to STLS, before the handshake");
            }
            let Stream::Plain(tcp) = c.io.into_inner() else {
                bail!("STLS on a TLS connection");
            };
            c = Conn::new(Self::tls(tcp, target).await?);
        }
        c.ok(&format!("USER {user}")).await?;
        c.ok(&format!("PASS {password}")).await?;
        Ok(c)
    }

    /// An LMTP connection after LHLO.
    pub async fn lmtp(target: &Target) -> Result<Conn> {
        let mut c = Conn::new(Stream::Plain(Self::tcp(target.lmtp).await?));
        c.expect(220, "LMTP greeting").await?;
        c.send("LHLO bench.client").await?;
        c.expect(250, "LHLO").await?;
        Ok(c)
    }
}
