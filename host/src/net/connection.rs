//! One client connection: moves bytes between the socket and the sans-IO
//! [`Session`], and carries out the session's requests (plugin calls,
//! maildrop lock, message streaming, STLS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::server::Shared;
use super::stream::Stream;
use crate::config::{DeleAction as ConfigDele, PlaintextAuth};
use crate::lease::LeaseGuard;
use crate::metrics::METRICS;
use crate::plugin::auth::{
    Decision, Grant, Login, Peer, Pop3Policy, Secret, SecretKind, SecretLookup,
};
use crate::plugin::storage::{
    CommitRequest, DeleAction, Entry as StorageEntry, Failure, Mailbox, OpenFailure, OpenRequest,
};
use crate::pop3::encode::MessageEncoder;
use crate::pop3::lang::Text;
use crate::pop3::reply::Code;
use crate::pop3::scram::Verifier;
use crate::pop3::session;
use crate::pop3::session::{
    AuthOutcome, AuthRequest, Entry, MaildropError, Phase, SecretOutcome, StorageFailure,
};
use crate::pop3::{Action, LineBuffer, Session};

/// Stored octets asked of storage per read call.
const READ_CHUNK: u32 = 256 * 1024;
/// Output is written to the socket once this much is pending.
const WRITE_HIGH_WATER: usize = 64 * 1024;

static CONNECTION_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How a session ended, for the logout line.
#[derive(Debug, Clone, Copy)]
enum End {
    Quit,
    ClientClosed,
    Timeout,
    Shutdown,
    Protocol,
    Io,
    /// The maildrop lease was lost (renewals failed, or an operator broke
    /// it): the session ended without an UPDATE.
    LeaseLost,
}

impl End {
    /// The metrics label.
    fn label(self) -> &'static str {
        match self {
            End::Quit => "quit",
            End::ClientClosed => "client-closed",
            End::Timeout => "timeout",
            End::Shutdown => "shutdown",
            End::Protocol => "protocol-error",
            End::Io => "io-error",
            End::LeaseLost => "lease-lost",
        }
    }
}

/// The connection's state beside the session itself.
struct Connection {
    shared: Arc<Shared>,
    stream: Stream,
    peer: SocketAddr,
    session: Session,
    input: LineBuffer,
    output: Vec<u8>,
    /// The maildrop lease, held from login until the connection ends.
    lease: Option<LeaseGuard>,
    mailbox: Option<Mailbox>,
    /// This session's name in lease records: `node/number`.
    session_id: String,
    /// The per-user POP3 policy the auth plugin gave at login, if any.
    policy: Option<Pop3Policy>,
    /// The folder named at login (`user+Folder`), if any.
    folder: Option<String>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Serves one accepted connection to the end.
pub async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, implicit_tls: bool) {
    let started = Instant::now();
    METRICS.connection();
    let _ = tcp.set_nodelay(true);
    let stream = if implicit_tls {
        let Some(acceptor) = shared.tls.clone() else {
            return;
        };
        match tokio::time::timeout(shared.auth_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        }
    } else {
        Stream::Plain(tcp)
    };
    let plaintext_without_tls = match shared.config.pop3.plaintext_auth {
        PlaintextAuth::Always => true,
        // A `[::]` listener sees IPv4 clients as ::ffff:a.b.c.d.
        PlaintextAuth::TlsOrLoopback => peer.ip().to_canonical().is_loopback(),
        PlaintextAuth::TlsOnly => false,
    };
    let n = CONNECTION_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let timestamp = format!(
        "<{}.{n}.{nanos}@{}>",
        std::process::id(),
        shared.config.server.hostname
    );
    let mut session = Session::new(
        shared.session_config.clone(),
        stream.is_tls(),
        plaintext_without_tls,
        timestamp,
    );
    session.set_channel_binding(stream.tls_exporter());
    let mut conn = Connection {
        shutdown: shared.shutdown.clone(),
        shared,
        stream,
        peer,
        session,
        input: LineBuffer::new(),
        output: Vec::new(),
        lease: None,
        mailbox: None,
        session_id: String::new(),
        policy: None,
        folder: None,
    };
    conn.session_id = format!("{}/{n}", conn.shared.leases.identity().node);
    let end = conn.run().await;
    METRICS.session(end.label());
    let s = conn.session.stats();
    tracing::info!(
        peer = %conn.peer,
        user = %conn.session.principal().unwrap_or("-"),
        mechanism = %conn.session.login_mechanism().unwrap_or("-"),
        tls = conn.session.tls(),
        retr = s.retr,
        retr_bytes = s.retr_bytes,
        top = s.top,
        dele = s.dele,
        deleted_bytes = s.deleted_bytes,
        duration_ms = started.elapsed().as_millis() as u64,
        end = ?end,
        "session ended"
    );
}

impl Connection {
    async fn run(&mut self) -> End {
        self.output.extend_from_slice(&self.session.greeting());
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // Answer every complete line already received, in order
            // (pipelining), before writing and reading more.
            while let Some(line) = self.input.next_line(self.session.max_line()) {
                if self.lease_lost() {
                    return self.end_lease_lost().await;
                }
                let action = self.session.on_line(line);
                if let Some(name) = self.session.take_last_command() {
                    METRICS.command(name);
                }
                match self.perform(action).await {
                    Ok(None) => {}
                    Ok(Some(end)) => {
                        let _ = self.flush().await;
                        let _ = self.stream.shutdown().await;
                        return end;
                    }
                    Err(end) => return end,
                }
            }
            if *self.shutdown.borrow() {
                return self.shut_down().await;
            }
            if self.flush().await.is_err() {
                return End::Io;
            }
            let timeout = match self.session.phase() {
                Phase::Authorization => self.shared.auth_timeout,
                Phase::Transaction => self.shared.idle_timeout,
            };
            let read = tokio::time::timeout(timeout, self.stream.read(&mut buf));
            let shutdown = self.shutdown.wait_for(|stop| *stop);
            let lease = self.lease.as_ref().map(|l| l.state().clone());
            let lost = async {
                match lease {
                    Some(state) => state.lost().await,
                    None => std::future::pending().await,
                }
            };
            let got = tokio::select! {
                r = read => Ok(r),
                _ = shutdown => Err(End::Shutdown),
                () = lost => Err(End::LeaseLost),
            };
            let got = match got {
                Ok(got) => got,
                Err(End::LeaseLost) => return self.end_lease_lost().await,
                Err(_) => return self.shut_down().await,
            };
            match got {
                Ok(Ok(0)) => return End::ClientClosed,
                Ok(Ok(n)) => self.input.extend(&buf[..n]),
                Ok(Err(_)) => return End::Io,
                Err(_) => {
                    // RFC 1939 §3: an autologout timer expiring ends the
                    // session without entering UPDATE.
                    self.output
                        .extend_from_slice(&self.session.error_reply(None, Text::Autologout));
                    let _ = self.flush().await;
                    return End::Timeout;
                }
            }
        }
    }

    /// Carries out one action and the ones it leads to. `Ok(Some(end))`
    /// closes the connection after flushing; `Err` closes it at once.
    async fn perform(&mut self, mut action: Action) -> Result<Option<End>, End> {
        loop {
            action = match action {
                Action::Reply(bytes) => {
                    // A challenge-response exchange (SCRAM) fails here,
                    // on the client's last message.
                    if self.session.take_auth_failure() {
                        METRICS.login("failed");
                        tracing::info!(peer = %self.peer, "login failed: challenge-response did not verify");
                        self.delay_failed_login().await;
                    }
                    self.output.extend_from_slice(&bytes);
                    if self.output.len() >= WRITE_HIGH_WATER {
                        self.flush().await.map_err(|_| End::Io)?;
                    }
                    return Ok(None);
                }
                Action::Quit(bytes) => return Ok(Some(self.finish(bytes, End::Quit).await)),
                Action::Close(bytes) => return Ok(Some(self.finish(bytes, End::Protocol).await)),
                Action::Verify(request) => {
                    let outcome = self.verify(request).await;
                    let next = self.session.on_auth(outcome);
                    self.penalise_failure().await;
                    next
                }
                Action::LookupSecret { user, kind } => {
                    let outcome = self.lookup_secret(user, kind).await;
                    let next = self.session.on_secret(outcome);
                    self.penalise_failure().await;
                    next
                }
                Action::OpenMaildrop { principal } => {
                    let result = self.open_maildrop(&principal).await;
                    self.session.on_maildrop(principal, result)
                }
                Action::SendMessage {
                    head,
                    octets,
                    key,
                    stored_size,
                    encoder,
                } => {
                    self.send_message(head, octets, &key, stored_size, encoder)
                        .await?;
                    return Ok(None);
                }
                Action::StartTls(bytes) => {
                    self.output.extend_from_slice(&bytes);
                    self.flush().await.map_err(|_| End::Io)?;
                    // RFC 2595 §4: anything pipelined after STLS was sent
                    // in plaintext and must not be executed inside TLS.
                    self.input.clear();
                    let Some(acceptor) = self.shared.tls.clone() else {
                        return Err(End::Protocol);
                    };
                    let handshake = self.stream.start_tls(&acceptor);
                    match tokio::time::timeout(self.shared.auth_timeout, handshake).await {
                        Ok(Ok(())) => {
                            let binding = self.stream.tls_exporter();
                            self.session.on_tls_started(binding);
                            return Ok(None);
                        }
                        _ => return Err(End::Io),
                    }
                }
                Action::Commit { principal, keys } => {
                    let result = self.commit(&principal, &keys).await;
                    let reply = self.session.on_commit(result);
                    return Ok(Some(self.finish(reply, End::Quit).await));
                }
            };
        }
    }

    /// After a failed login, waits the address's penalty before the answer
    /// goes out (nothing else of this session happens meanwhile).
    async fn penalise_failure(&mut self) {
        if self.session.take_auth_failure() {
            self.delay_failed_login().await;
        }
    }

    async fn delay_failed_login(&mut self) {
        let delay = self.shared.guard.failed_login(self.peer.ip());
        if !delay.is_zero() {
            tracing::info!(peer = %self.peer, penalty_ms = delay.as_millis() as u64, "delaying the answer to a failed login");
            tokio::time::sleep(delay).await;
        }
    }

    /// Ends a session the server is stopping: between commands, so nothing
    /// is half done; marked deletions are not applied (no UPDATE).
    async fn shut_down(&mut self) -> End {
        self.lease = None;
        self.output.extend_from_slice(
            &self
                .session
                .error_reply(Some(Code::SysTemp), Text::ShuttingDown),
        );
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        End::Shutdown
    }

    /// Queues the last reply. The maildrop is released before the client
    /// can read it, so its next login does not find the maildrop in use.
    async fn finish(&mut self, bytes: Vec<u8>, end: End) -> End {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        self.output.extend_from_slice(&bytes);
        end
    }

    /// Whether the session's maildrop lease is gone.
    fn lease_lost(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.state().is_lost())
    }

    /// Ends a session whose lease was lost: nothing is deleted (another
    /// node may hold the maildrop now), the client is told to come back.
    async fn end_lease_lost(&mut self) -> End {
        self.lease = None;
        tracing::warn!(
            peer = %self.peer,
            user = %self.session.principal().unwrap_or("-"),
            "the maildrop lease was lost; ending the session without an UPDATE"
        );
        self.output.extend_from_slice(
            &self
                .session
                .error_reply(Some(Code::SysTemp), Text::LeaseLost),
        );
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        End::LeaseLost
    }

    fn peer_info(&self) -> Peer {
        Peer {
            address: self.peer.to_string(),
            tls: self.stream.is_tls(),
        }
    }

    /// Splits `user+Folder` (with the configured separator) into the login
    /// name and the folder the session will open, remembering the folder.
    fn take_folder(&mut self, user: String) -> String {
        self.folder = None;
        if let Some(sep) = &self.shared.config.pop3.folder_separator
            && let Some((name, folder)) = user.split_once(sep.as_str())
            && !name.is_empty()
            && !folder.is_empty()
        {
            self.folder = Some(folder.to_string());
            return name.to_string();
        }
        user
    }

    async fn verify(&mut self, mut request: AuthRequest) -> AuthOutcome {
        request.user = self.take_folder(request.user);
        let login = Login {
            user: request.user.clone(),
            mechanism: request.mechanism.to_string(),
            credential: request.credential,
            authzid: request.authzid,
            peer: self.peer_info(),
        };
        match self.shared.auth.verify(&login).await {
            Ok(Decision::Allow(grant)) => {
                METRICS.login("ok");
                tracing::debug!(peer = %self.peer, user = %request.user, "login allowed");
                AuthOutcome::Allow {
                    principal: self.take_grant(grant),
                }
            }
            Ok(Decision::Deny(reason)) => {
                METRICS.login("failed");
                tracing::info!(peer = %self.peer, user = %request.user.escape_debug(), mechanism = request.mechanism, "login failed: {reason}");
                AuthOutcome::Deny
            }
            Ok(Decision::TempFail(reason)) => {
                METRICS.login("tempfail");
                tracing::warn!(peer = %self.peer, user = %request.user.escape_debug(), "auth temporarily failed: {reason}");
                AuthOutcome::TempFail
            }
            Err(_) => {
                METRICS.login("tempfail");
                AuthOutcome::TempFail
            }
        }
    }

    /// Asks the auth plugin for a stored secret: a clear-text password for
    /// APOP; for SCRAM a verifier, or failing that a clear-text password
    /// (from which the session derives one).
    async fn lookup_secret(&mut self, user: String, kind: session::SecretKind) -> SecretOutcome {
        let user = self.take_folder(user);
        let peer = self.peer_info();
        let auth = self.shared.auth.clone();
        let mut asked = match kind {
            session::SecretKind::Plaintext => SecretKind::Plaintext,
            session::SecretKind::ScramSha256 => SecretKind::ScramSha256,
        };
        loop {
            match auth.lookup_secret(&user, asked, &peer).await {
                Ok(SecretLookup::Found((Secret::Plaintext(secret), grant))) => {
                    return SecretOutcome::Found {
                        secret: session::Secret::Plaintext(secret),
                        principal: self.take_grant(grant),
                    };
                }
                Ok(SecretLookup::Found((Secret::ScramSha256(v), grant)))
                    if kind == session::SecretKind::ScramSha256 =>
                {
                    return SecretOutcome::Found {
                        secret: session::Secret::ScramSha256(Verifier {
                            salt: v.salt,
                            iterations: v.iterations,
                            stored_key: v.stored_key,
                            server_key: v.server_key,
                        }),
                        principal: self.take_grant(grant),
                    };
                }
                Ok(SecretLookup::Found(_)) | Ok(SecretLookup::Unavailable) => {
                    if asked == SecretKind::ScramSha256 {
                        asked = SecretKind::Plaintext;
                        continue;
                    }
                    tracing::info!(peer = %self.peer, user = %user.escape_debug(), ?kind, "login failed: no usable stored secret for this mechanism");
                    return SecretOutcome::Unavailable;
                }
                Ok(SecretLookup::TempFail(reason)) => {
                    tracing::warn!(peer = %self.peer, "auth temporarily failed: {reason}");
                    return SecretOutcome::TempFail;
                }
                Err(_) => return SecretOutcome::TempFail,
            }
        }
    }

    /// Keeps the per-user policy of a grant (used once the secret or
    /// password checks out) and returns its principal.
    fn take_grant(&mut self, grant: Grant) -> String {
        self.policy = grant.policy;
        grant.principal
    }

    async fn open_maildrop(&mut self, principal: &str) -> Result<Vec<Entry>, MaildropError> {
        let mailbox = Mailbox {
            user: principal.to_string(),
            folder: self.folder.clone(),
        };
        if let (Some(folder), Some(allowed)) = (
            &mailbox.folder,
            self.policy.as_ref().and_then(|p| p.folders.as_ref()),
        ) && !allowed.iter().any(|f| f == folder)
        {
            tracing::info!(
                user = principal,
                folder,
                "login refused: folder not allowed for this user"
            );
            return Err(MaildropError::Permanent);
        }
        let leases = self.shared.leases.clone();
        let login_delay = self.policy.as_ref().and_then(|p| p.login_delay).or(self
            .shared
            .config
            .pop3
            .login_delay);
        let request = OpenRequest {
            holder: leases
                .identity()
                .holder(&self.session_id, &self.peer.to_string()),
            ttl_seconds: leases.ttl_seconds(),
            login_delay,
        };
        let asked = Instant::now();
        let opened = match self.shared.storage.open(&mailbox, &request).await {
            Ok(opened) => opened,
            Err(OpenFailure::InUse(holder)) => {
                tracing::info!(
                    user = principal,
                    node = %holder.node,
                    session = %holder.session,
                    "login refused: maildrop in use"
                );
                return Err(MaildropError::InUse);
            }
            Err(OpenFailure::TooSoon(wait)) => {
                tracing::info!(
                    user = principal,
                    wait_secs = wait,
                    "login refused: LOGIN-DELAY"
                );
                return Err(MaildropError::LoginDelay);
            }
            Err(OpenFailure::Storage(e)) => {
                tracing::warn!(user = principal, "cannot open mailbox: {e}");
                return Err(if e.is_temporary() {
                    MaildropError::Temporary
                } else {
                    MaildropError::Permanent
                });
            }
        };
        let lease = leases.track(self.shared.storage.clone(), opened.lease, asked);
        if let Err(problem) = check_listing(&opened.entries) {
            tracing::error!(
                plugin = "storage",
                user = principal,
                "storage plugin returned a bad listing: {problem}"
            );
            lease.release().await;
            return Err(MaildropError::Temporary);
        }
        self.shared.guard.logged_in(self.peer.ip());
        self.lease = Some(lease);
        self.mailbox = Some(mailbox);
        let hide_before = self.policy.as_ref().and_then(|p| p.hide_before);
        Ok(opened
            .entries
            .into_iter()
            .filter(|e| hide_before.is_none_or(|t| e.received >= t))
            .map(|e| Entry {
                key: e.key,
                size: e.size,
                stored_size: e.stored_size,
                uid: e.uid,
            })
            .collect())
    }

    /// Streams a message for RETR/TOP. The first range is read before the
    /// `+OK` goes out, so a message that vanished gets a clean `-ERR`; so is
    /// the whole header when it is downgraded (RFC 6857), so that the `+OK`
    /// of RETR states the size that is sent. A failure after the `+OK`
    /// cannot be reported in-band: the connection is closed without the
    /// terminating `.`, so the client knows the message is incomplete.
    async fn send_message(
        &mut self,
        head: Vec<u8>,
        octets: Option<u64>,
        key: &str,
        stored_size: u64,
        mut encoder: MessageEncoder,
    ) -> Result<(), End> {
        let Some(mailbox) = self.mailbox.clone() else {
            return Err(End::Protocol);
        };
        let storage = self.shared.storage.clone();
        let mut offset = 0u64;
        let mut started = false;
        // The encoder's output until the head is written.
        let mut staged = Vec::new();
        let mut head = Some(head);
        loop {
            let want = READ_CHUNK.min((stored_size.saturating_sub(offset)).max(1) as u32);
            let chunk = match storage.read(&mailbox, key, offset, want).await {
                Ok(chunk) => chunk,
                Err(failure) => {
                    tracing::warn!(user = %mailbox.user, key, "cannot read message: {failure}");
                    if started {
                        // What was sent stays sent; no terminator follows.
                        let _ = self.flush().await;
                        return Err(End::Io);
                    }
                    let reply = match failure {
                        Failure::NotFound(_) => self
                            .session
                            .error_reply(Some(Code::SysPerm), Text::MessageRemoved),
                        _ => self
                            .session
                            .error_reply(Some(Code::SysTemp), Text::CannotRead),
                    };
                    self.output.extend_from_slice(&reply);
                    return Ok(());
                }
            };
            if chunk.is_empty() {
                if offset < stored_size && !encoder.is_done() {
                    // The message ended before the size the listing gave:
                    // do not pass a truncated message off as complete.
                    tracing::error!(
                        plugin = "storage",
                        key,
                        offset,
                        stored_size,
                        "message ended early; closing the connection without the terminator"
                    );
                    let _ = self.flush().await;
                    return Err(End::Io);
                }
                break;
            }
            offset += chunk.len() as u64;
            if head.is_some() {
                encoder.encode(&chunk, &mut staged);
                if encoder.size_settled() {
                    self.write_head(&mut head, octets, &encoder, &mut staged);
                    started = true;
                }
            } else {
                encoder.encode(&chunk, &mut self.output);
            }
            if self.output.len() >= WRITE_HIGH_WATER {
                self.flush().await.map_err(|_| End::Io)?;
            }
            if encoder.is_done() || chunk.len() < want as usize && offset >= stored_size {
                break;
            }
        }
        if head.is_some() {
            // The message ended inside its header.
            encoder.settle_at_end(&mut staged);
            self.write_head(&mut head, octets, &encoder, &mut staged);
        }
        encoder.finish(&mut self.output);
        Ok(())
    }

    /// Writes the `+OK` of RETR/TOP, and what the encoder produced so far.
    /// A RETR whose header was downgraded states the size it sends.
    fn write_head(
        &mut self,
        head: &mut Option<Vec<u8>>,
        octets: Option<u64>,
        encoder: &MessageEncoder,
        staged: &mut Vec<u8>,
    ) {
        let Some(head) = head.take() else {
            return;
        };
        match octets {
            Some(octets) if encoder.size_change() != 0 => {
                let sent = octets.saturating_add_signed(encoder.size_change());
                self.output.extend_from_slice(&self.session.retr_head(sent));
            }
            _ => self.output.extend_from_slice(&head),
        }
        self.output.append(staged);
    }

    async fn commit(&self, principal: &str, keys: &[String]) -> Result<(), StorageFailure> {
        let (Some(mailbox), Some(lease)) = (&self.mailbox, &self.lease) else {
            return Err(StorageFailure::Temporary);
        };
        if !lease.is_valid() {
            tracing::warn!(
                user = principal,
                "UPDATE skipped: the maildrop lease was lost"
            );
            return Err(StorageFailure::Temporary);
        }
        let request = CommitRequest {
            lease: lease.token().to_string(),
            delete: keys.to_vec(),
            action: self.dele_action(),
            retrieved: Vec::new(),
        };
        match self.shared.storage.commit(mailbox, &request).await {
            Ok(report) => {
                tracing::debug!(
                    user = principal,
                    deleted = report.deleted,
                    missing = report.missing,
                    "UPDATE done"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(user = principal, "UPDATE failed: {e}");
                Err(if e.is_temporary() {
                    StorageFailure::Temporary
                } else {
                    StorageFailure::Permanent
                })
            }
        }
    }

    /// What DELE does for this session: the user's policy, else the
    /// server's `pop3.dele_action`.
    fn dele_action(&self) -> DeleAction {
        if let Some(action) = self.policy.as_ref().and_then(|p| p.dele.clone()) {
            return action;
        }
        match self.shared.config.pop3.dele() {
            ConfigDele::Expunge => DeleAction::Expunge,
            ConfigDele::Flag => DeleAction::Flag,
            ConfigDele::MoveTo(folder) => DeleAction::MoveTo(folder),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.output.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.shared.idle_timeout, write).await {
            Ok(Ok(())) => {
                METRICS.bytes_sent(self.output.len());
                self.output.clear();
                Ok(())
            }
            _ => Err(End::Io),
        }
    }
}

/// The largest `stored-size` a listing may claim (1 TiB).
const MAX_STORED_SIZE: u64 = 1 << 40;

/// Checks a storage plugin's listing against the `storage.entry` contract
/// before any of it reaches a client: every uid is 1 to 70 characters in
/// 0x21..=0x7E (RFC 1939 UIDL) and unique, `stored-size` is at most 1 TiB,
/// and `size` is at most `stored-size * 2 + 2` (every octet a bare LF that
/// becomes CRLF, plus a final CRLF). Names the first bad entry.
fn check_listing(entries: &[StorageEntry]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let n = i + 1;
        if !(1..=70).contains(&e.uid.len()) || !e.uid.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(format!(
                "entry {n} (key {:?}) has an invalid uid {:?} ({} octets)",
                clip(&e.key),
                clip(&e.uid),
                e.uid.len()
            ));
        }
        if !seen.insert(e.uid.as_str()) {
            return Err(format!(
                "entry {n} (key {:?}) repeats the uid {:?}",
                clip(&e.key),
                e.uid
            ));
        }
        if e.stored_size > MAX_STORED_SIZE {
            return Err(format!(
                "entry {n} (key {:?}) claims a stored size of {} octets",
                clip(&e.key),
                e.stored_size
            ));
        }
        if e.size > e.stored_size * 2 + 2 {
            return Err(format!(
                "entry {n} (key {:?}) claims a size of {} octets for {} stored octets",
                clip(&e.key),
                e.size,
                e.stored_size
            ));
        }
    }
    Ok(())
}

/// At most the first 80 characters of a plugin-supplied string, for logs.
fn clip(s: &str) -> &str {
    s.char_indices().nth(80).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    fn entry(key: &str, uid: &str, size: u64, stored_size: u64) -> StorageEntry {
        StorageEntry {
            key: key.into(),
            size,
            stored_size,
            uid: uid.into(),
            received: 0,
        }
    }

    #[test]
    fn check_listing_accepts_the_contract_and_names_the_first_violation() {
        let good = vec![
            entry("a", "!", 0, 0),
            entry("b", &"~".repeat(70), 12, 5),
            entry("c", "x", 2, 0),
            entry("d", "y", MAX_STORED_SIZE * 2 + 2, MAX_STORED_SIZE),
        ];
        assert_eq!(check_listing(&good), Ok(()));
        assert_eq!(check_listing(&[]), Ok(()));
        let bad = |entries: Vec<StorageEntry>| check_listing(&entries).unwrap_err();
        assert!(
            bad(vec![entry("k", "", 1, 1)]).starts_with("entry 1 (key \"k\") has an invalid uid")
        );
        assert!(
            bad(vec![entry("a", "ok", 1, 1), entry("k", "has space", 1, 1)])
                .starts_with("entry 2 (key \"k\") has an invalid uid \"has space\"")
        );
        assert!(bad(vec![entry("k", &"u".repeat(71), 1, 1)]).contains("(71 octets)"));
        assert!(bad(vec![entry("k", "caf\u{e9}", 1, 1)]).contains("invalid uid"));
        assert!(bad(vec![entry("k", "tab\there", 1, 1)]).contains("invalid uid"));
        assert_eq!(
            bad(vec![
                entry("a", "u1", 1, 1),
                entry("b", "u2", 1, 1),
                entry("c", "u1", 1, 1)
            ]),
            "entry 3 (key \"c\") repeats the uid \"u1\""
        );
        assert_eq!(
            bad(vec![entry("k", "u", u64::MAX, 10)]),
            format!(
                "entry 1 (key \"k\") claims a size of {} octets for 10 stored octets",
                u64::MAX
            )
        );
        assert!(bad(vec![entry("k", "u", 23, 10)]).contains("size of 23"));
        assert!(bad(vec![entry("k", "u", 1, MAX_STORED_SIZE + 1)]).contains("stored size"));
    }
}
