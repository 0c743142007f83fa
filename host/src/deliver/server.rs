//! The LMTP listener (TCP and Unix socket): moves bytes between a client
//! (the MTA) and an [`LmtpSession`], and carries out its requests.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use super::Deliverer;
use super::lmtp::{LmtpAction, LmtpConfig, LmtpSession};
use crate::pop3::{Line, LineBuffer};

/// Idle time allowed between commands and data lines (RFC 5321 §4.5.3.2
/// suggests 5 and 3 minutes; one generous limit is simpler).
const IDLE: Duration = Duration::from_secs(300);

/// A bound LMTP listener.
pub enum LmtpListener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl LmtpListener {
    /// Binds a Unix socket, replacing a stale socket file.
    pub fn bind_unix(path: &std::path::Path) -> Result<LmtpListener> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(path).with_context(|| {
                    format!("lmtp.unix_socket: cannot replace {}", path.display())
                })?;
            }
        }
        let l = UnixListener::bind(path)
            .with_context(|| format!("lmtp.unix_socket: cannot bind {}", path.display()))?;
        Ok(LmtpListener::Unix(l, path.to_path_buf()))
    }

    /// Where it listens, for the startup lines.
    pub fn describe(&self) -> String {
        match self {
            LmtpListener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            LmtpListener::Unix(_, p) => p.display().to_string(),
        }
    }

    /// Accepts connections forever. `current` gives the delivery path and
    /// settings for each new connection (they change when the configuration
    /// is reloaded; a connection keeps the ones it started with).
    pub async fn run<F>(self, current: F)
    where
        F: Fn() -> (Arc<Deliverer>, LmtpConfig) + Send + Sync + 'static,
    {
        loop {
            match &self {
                LmtpListener::Tcp(l) => match l.accept().await {
                    Ok((s, peer)) => {
                        let (d, c) = current();
                        tokio::spawn(async move { serve(s, peer.to_string(), d, c).await });
                    }
                    Err(e) => accept_failed(e).await,
                },
                LmtpListener::Unix(l, _) => match l.accept().await {
                    Ok((s, _)) => {
                        let (d, c) = current();
                        tokio::spawn(async move { serve(s, String::new(), d, c).await });
                    }
                    Err(e) => accept_failed(e).await,
                },
            }
        }
    }
}

async fn accept_failed(e: std::io::Error) {
    tracing::warn!("LMTP accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves one LMTP connection.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: String,
    deliverer: Arc<Deliverer>,
    config: LmtpConfig,
) {
    let mut session = LmtpSession::new(config);
    let mut input = LineBuffer::new();
    let mut output = session.greeting();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(line) = input.next_line(session.max_line()) {
            let mut action = match line {
                Line::Complete(l) => session.on_line(&l),
                Line::TooLong => session.on_long_line(),
            };
            loop {
                action = match action {
                    LmtpAction::Reply(bytes) => {
                        output.extend_from_slice(&bytes);
                        break;
                    }
                    LmtpAction::ResolveRecipient { local, .. } => {
                        let lookup = deliverer.resolve(&local).await;
                        session.on_recipient(lookup)
                    }
                    LmtpAction::Deliver(tx) => {
                        let outcomes = deliverer.deliver(&tx, &peer).await;
                        for (rcpt, outcome) in tx.recipients.iter().zip(&outcomes) {
                            output.extend_from_slice(&outcome.lmtp_reply(&rcpt.address));
                        }
                        break;
                    }
                    LmtpAction::Close(bytes) => {
                        output.extend_from_slice(&bytes);
                        let _ = stream.write_all(&output).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                };
            }
        }
        if !output.is_empty() {
            let write = async {
                stream.write_all(&output).await?;
                stream.flush().await
            };
            if !matches!(tokio::time::timeout(IDLE, write).await, Ok(Ok(()))) {
                return;
            }
            output.clear();
        }
        match tokio::time::timeout(IDLE, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => input.extend(&buf[..n]),
            Ok(_) => return,
            Err(_) => {
                let _ = stream
                    .write_all(b"421 4.4.2 Idle for too long, closing connection\r\n")
                    .await;
                return;
            }
        }
    }
}
