//! The POP3 session state machine (RFC 1939 states AUTHORIZATION,
//! TRANSACTION and UPDATE, plus SASL exchanges from RFC 5034).
//!
//! The session never does I/O. It takes command lines and the results of
//! work it asked for, and returns an [`Action`]: bytes to send, or a request
//! (verify a login, open the maildrop, stream a message, commit deletions,
//! start TLS) that the network layer carries out and answers through the
//! matching `on_*` method. This keeps every protocol rule testable without
//! sockets or plugins.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::command::{Command, parse};
use super::encode::MessageEncoder;
use super::line::Line;
use super::reply::{Code, err, err_code, multi, ok};

/// Longest command line, counting CRLF (RFC 2449 §4).
pub const MAX_COMMAND_LINE: usize = 255;
/// Longest SASL continuation line (responses such as OAuth tokens are
/// longer than a command may be; RFC 5034 §4).
pub const MAX_SASL_LINE: usize = 8192;
/// Over-long lines tolerated before the connection is closed.
const MAX_BAD_LINES: u32 = 3;

/// Settings shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Offer APOP (a timestamp in the greeting).
    pub apop: bool,
    /// STLS can be offered (a certificate is configured for this listener).
    pub stls: bool,
    /// `LOGIN-DELAY` capability value in seconds, if any.
    pub login_delay: Option<u32>,
    /// `EXPIRE` capability value (`NEVER` or a number of days), if any.
    pub expire: Option<String>,
}

/// One message of the maildrop as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Storage key, passed back to the storage plugin.
    pub key: String,
    /// Size in octets as POP3 reports it (CRLF line endings).
    pub size: u64,
    /// Size as stored (what storage read offsets count).
    pub stored_size: u64,
    /// Unique-id for UIDL.
    pub uid: String,
}

/// A login request for the auth plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub user: String,
    /// `USER`, `PLAIN` or `LOGIN`.
    pub mechanism: &'static str,
    pub credential: String,
    pub authzid: String,
}

/// What the auth plugin decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Allow { principal: String },
    Deny,
    TempFail,
}

/// What the auth plugin answered to a secret lookup (APOP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOutcome {
    Found { secret: String, principal: String },
    Unavailable,
    TempFail,
}

/// Why the maildrop could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaildropError {
    /// Another session holds the maildrop lock.
    InUse,
    /// Logged in sooner than LOGIN-DELAY allows.
    LoginDelay,
    Temporary,
    Permanent,
}

/// Why a storage operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFailure {
    Temporary,
    Permanent,
}

/// What the network layer must do next.
#[derive(Debug)]
pub enum Action {
    /// Send these bytes, then read the next line.
    Reply(Vec<u8>),
    /// Ask the auth plugin, then call [`Session::on_auth`].
    Verify(AuthRequest),
    /// Ask the auth plugin for the user's clear-text secret, then call
    /// [`Session::on_secret`].
    LookupSecret { user: String },
    /// Lock the maildrop and list it, then call [`Session::on_maildrop`].
    OpenMaildrop { principal: String },
    /// Send `head`, then the message `key` through `encoder`.
    SendMessage {
        head: Vec<u8>,
        key: String,
        stored_size: u64,
        encoder: MessageEncoder,
    },
    /// Send the reply, discard buffered input, start TLS, then call
    /// [`Session::on_tls_started`].
    StartTls(Vec<u8>),
    /// The UPDATE state: remove these messages, then call
    /// [`Session::on_commit`], send its reply and close.
    Commit {
        principal: String,
        keys: Vec<String>,
    },
    /// Send the bytes and close the connection: the client said QUIT and
    /// there is nothing to commit.
    Quit(Vec<u8>),
    /// Send the bytes and close the connection: the session cannot go on.
    Close(Vec<u8>),
}

/// The RFC 1939 state, as the network layer needs it (timeouts, logging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Authorization,
    Transaction,
}

/// Counters for the logout summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub retr: u32,
    pub retr_bytes: u64,
    pub top: u32,
    pub dele: u32,
    pub deleted_bytes: u64,
}

#[derive(Debug)]
enum Sasl {
    Plain,
    LoginUser,
    LoginPass { user: String },
}

#[derive(Debug)]
enum State {
    Authorization {
        /// Name given by USER, waiting for PASS.
        user: Option<String>,
        /// A SASL exchange in progress.
        sasl: Option<Sasl>,
        /// An APOP digest waiting for the secret lookup.
        apop_digest: Option<String>,
    },
    Transaction(Maildrop),
    /// QUIT was given; waiting for the commit result.
    Update,
}

#[derive(Debug)]
struct Maildrop {
    principal: String,
    entries: Vec<Entry>,
    deleted: Vec<bool>,
}

impl Maildrop {
    fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    fn totals(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, octets), (_, e)| (n + 1, octets + e.size))
    }

    /// Looks up a message number the client gave.
    fn get(&self, msg: u32) -> Result<(usize, &Entry), Vec<u8>> {
        let i = (msg as usize).wrapping_sub(1);
        match self.entries.get(i) {
            None => Err(err("No such message")),
            Some(_) if self.deleted[i] => Err(err("Message already deleted")),
            Some(e) => Ok((i, e)),
        }
    }
}

/// One POP3 session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    tls: bool,
    /// Plaintext mechanisms are allowed without TLS on this connection
    /// (loopback or a trusted network).
    plaintext_without_tls: bool,
    /// The APOP timestamp, `<...>` included.
    timestamp: String,
    bad_lines: u32,
    principal: Option<String>,
    stats: Stats,
    /// The keyword of the last command parsed (`None` for bad lines).
    last_command: Option<&'static str>,
    /// A login attempt just failed (for the failed-login penalty).
    auth_failed: bool,
}

impl Session {
    /// A new session. `timestamp` must be unique per connection, e.g.
    /// `<pid.counter.nanos@host>`.
    pub fn new(
        config: SessionConfig,
        tls: bool,
        plaintext_without_tls: bool,
        timestamp: String,
    ) -> Self {
        Session {
            config,
            state: State::Authorization {
                user: None,
                sasl: None,
                apop_digest: None,
            },
            tls,
            plaintext_without_tls,
            timestamp,
            bad_lines: 0,
            principal: None,
            stats: Stats::default(),
            last_command: None,
            auth_failed: false,
        }
    }

    /// The greeting sent when the connection opens.
    pub fn greeting(&self) -> Vec<u8> {
        if self.config.apop {
            ok(&format!("Poplar POP3 server ready {}", self.timestamp))
        } else {
            ok("Poplar POP3 server ready")
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Authorization { .. } => Phase::Authorization,
            _ => Phase::Transaction,
        }
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The logged-in principal, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the last action answered a failed login attempt (and clears
    /// the flag): the network layer delays such answers.
    pub fn take_auth_failure(&mut self) -> bool {
        std::mem::take(&mut self.auth_failed)
    }

    /// The keyword of the command the last line carried, if it parsed.
    pub fn take_last_command(&mut self) -> Option<&'static str> {
        self.last_command.take()
    }

    /// The longest line the session accepts next, CRLF included.
    pub fn max_line(&self) -> usize {
        match self.state {
            State::Authorization { sasl: Some(_), .. } => MAX_SASL_LINE,
            _ => MAX_COMMAND_LINE,
        }
    }

    fn plaintext_allowed(&self) -> bool {
        self.tls || self.plaintext_without_tls
    }

    /// Handles one line from the client.
    pub fn on_line(&mut self, line: Line) -> Action {
        let line = match line {
            Line::Complete(l) => l,
            Line::TooLong => {
                self.bad_lines += 1;
                if let State::Authorization { sasl, .. } = &mut self.state {
                    *sasl = None;
                }
                if self.bad_lines >= MAX_BAD_LINES {
                    return Action::Close(err("Too many over-long lines, closing connection"));
                }
                return Action::Reply(err("Line too long"));
            }
        };
        if let State::Authorization { sasl: Some(_), .. } = self.state {
            return self.sasl_response(&line);
        }
        let cmd = match parse(&line) {
            Ok(c) => c,
            Err(e) => {
                self.last_command = None;
                return Action::Reply(err(&e.to_string()));
            }
        };
        self.last_command = Some(cmd.name());
        match cmd {
            Command::Capa => Action::Reply(self.capa()),
            Command::Quit => self.quit(),
            _ => match self.phase() {
                Phase::Authorization => self.authorization(cmd),
                Phase::Transaction => self.transaction(cmd),
            },
        }
    }

    fn capa(&self) -> Vec<u8> {
        let mut caps: Vec<String> = vec!["TOP".into(), "UIDL".into()];
        let authorization = self.phase() == Phase::Authorization;
        if authorization && self.plaintext_allowed() {
            caps.push("USER".into());
            caps.push("SASL PLAIN LOGIN".into());
        }
        caps.extend(["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"].map(String::from));
        if authorization && self.config.stls && !self.tls {
            caps.push("STLS".into());
        }
        if let Some(d) = self.config.login_delay {
            caps.push(format!("LOGIN-DELAY {d}"));
        }
        if let Some(e) = &self.config.expire {
            caps.push(format!("EXPIRE {e}"));
        }
        caps.push(format!(
            "IMPLEMENTATION Poplar-{}",
            env!("CARGO_PKG_VERSION")
        ));
        multi("Capability list follows", caps)
    }

    fn quit(&mut self) -> Action {
        match std::mem::replace(&mut self.state, State::Update) {
            State::Transaction(drop) => {
                let keys: Vec<String> = drop
                    .entries
                    .iter()
                    .zip(&drop.deleted)
                    .filter(|(_, d)| **d)
                    .map(|(e, _)| e.key.clone())
                    .collect();
                if keys.is_empty() {
                    Action::Quit(ok("Poplar signing off"))
                } else {
                    Action::Commit {
                        principal: drop.principal,
                        keys,
                    }
                }
            }
            _ => Action::Quit(ok("Poplar signing off")),
        }
    }

    fn plaintext_refused() -> Action {
        Action::Reply(err_code(
            Code::Auth,
            "Plaintext authentication disallowed on non-secure connections; use STLS first",
        ))
    }

    fn authorization(&mut self, cmd: Command) -> Action {
        let plaintext_ok = self.plaintext_allowed();
        let State::Authorization {
            user,
            apop_digest,
            sasl,
        } = &mut self.state
        else {
            unreachable!("authorization() is only called in AUTHORIZATION")
        };
        match cmd {
            Command::User(name) => {
                if !plaintext_ok {
                    return Self::plaintext_refused();
                }
                *user = Some(name);
                Action::Reply(ok("Send your password"))
            }
            Command::Pass(password) => match user.take() {
                None => Action::Reply(err("Give USER first")),
                Some(name) => Action::Verify(AuthRequest {
                    user: name,
                    mechanism: "USER",
                    credential: password,
                    authzid: String::new(),
                }),
            },
            Command::Apop { user: name, digest } => {
                *user = None;
                if !self.config.apop {
                    return Action::Reply(err("APOP is not enabled"));
                }
                *apop_digest = Some(digest.to_ascii_lowercase());
                Action::LookupSecret { user: name }
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                if plaintext_ok {
                    Action::Reply(multi("Supported mechanisms follow", ["PLAIN", "LOGIN"]))
                } else {
                    Action::Reply(multi("Supported mechanisms follow", [] as [&str; 0]))
                }
            }
            Command::Auth {
                mechanism: Some(mech),
                initial,
            } => {
                *user = None;
                let mech = mech.to_ascii_uppercase();
                let chosen = match mech.as_str() {
                    "PLAIN" => Sasl::Plain,
                    "LOGIN" => Sasl::LoginUser,
                    _ => return Action::Reply(err("Unsupported authentication mechanism")),
                };
                if !plaintext_ok {
                    return Self::plaintext_refused();
                }
                *sasl = Some(chosen);
                match initial {
                    None => Action::Reply(self.sasl_prompt()),
                    Some(ir) => self.sasl_response(ir.as_bytes()),
                }
            }
            Command::Stls => {
                if self.tls {
                    Action::Reply(err("Already using TLS"))
                } else if !self.config.stls {
                    Action::Reply(err("STLS is not available on this port"))
                } else {
                    *user = None;
                    Action::StartTls(ok("Begin TLS negotiation"))
                }
            }
            _ => Action::Reply(err("Command not valid before login")),
        }
    }

    fn sasl_prompt(&self) -> Vec<u8> {
        match &self.state {
            State::Authorization {
                sasl: Some(Sasl::LoginUser),
                ..
            } => format!("+ {}\r\n", B64.encode("Username:")).into_bytes(),
            State::Authorization {
                sasl: Some(Sasl::LoginPass { .. }),
                ..
            } => format!("+ {}\r\n", B64.encode("Password:")).into_bytes(),
            _ => b"+ \r\n".to_vec(),
        }
    }

    /// A client line while a SASL exchange is in progress (or the initial
    /// response of `AUTH`).
    fn sasl_response(&mut self, line: &[u8]) -> Action {
        let State::Authorization { sasl, .. } = &mut self.state else {
            unreachable!("SASL only runs in AUTHORIZATION")
        };
        let Some(mech) = sasl.take() else {
            unreachable!("sasl_response needs an exchange")
        };
        if line == b"*" {
            return Action::Reply(err("Authentication cancelled"));
        }
        let decoded = if line == b"=" {
            Vec::new()
        } else {
            match B64.decode(line) {
                Ok(d) => d,
                Err(_) => return Action::Reply(err("Invalid base64 in authentication response")),
            }
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Action::Reply(err_code(Code::Auth, "Authentication failed"));
        };
        match mech {
            Sasl::Plain => {
                let parts: Vec<&str> = text.split('\0').collect();
                if text.is_empty() && line == b"=" {
                    // Empty initial response: ask for the real one.
                    *sasl = Some(Sasl::Plain);
                    return Action::Reply(b"+ \r\n".to_vec());
                }
                match parts.as_slice() {
                    [authzid, authcid, password] if !authcid.is_empty() => {
                        Action::Verify(AuthRequest {
                            user: authcid.to_string(),
                            mechanism: "PLAIN",
                            credential: password.to_string(),
                            authzid: authzid.to_string(),
                        })
                    }
                    _ => Action::Reply(err_code(Code::Auth, "Malformed PLAIN response")),
                }
            }
            Sasl::LoginUser => {
                *sasl = Some(Sasl::LoginPass { user: text });
                Action::Reply(self.sasl_prompt())
            }
            Sasl::LoginPass { user } => Action::Verify(AuthRequest {
                user,
                mechanism: "LOGIN",
                credential: text,
                authzid: String::new(),
            }),
        }
    }

    /// The auth plugin's decision on the last [`Action::Verify`].
    pub fn on_auth(&mut self, outcome: AuthOutcome) -> Action {
        match outcome {
            AuthOutcome::Allow { principal } => Action::OpenMaildrop { principal },
            AuthOutcome::Deny => {
                self.auth_failed = true;
                Action::Reply(err_code(Code::Auth, "Authentication failed"))
            }
            AuthOutcome::TempFail => Action::Reply(err_code(
                Code::SysTemp,
                "Authentication is temporarily unavailable, try again later",
            )),
        }
    }

    /// The auth plugin's answer to [`Action::LookupSecret`] (APOP).
    pub fn on_secret(&mut self, outcome: SecretOutcome) -> Action {
        let digest = match &mut self.state {
            State::Authorization { apop_digest, .. } => apop_digest.take(),
            _ => None,
        };
        let Some(digest) = digest else {
            return Action::Reply(err_code(Code::Auth, "Authentication failed"));
        };
        match outcome {
            SecretOutcome::Found { secret, principal } => {
                let mut h = Md5::new();
                h.update(self.timestamp.as_bytes());
                h.update(secret.as_bytes());
                let expected = hex::encode(h.finalize());
                if bool::from(expected.as_bytes().ct_eq(digest.as_bytes())) {
                    Action::OpenMaildrop { principal }
                } else {
                    self.auth_failed = true;
                    Action::Reply(err_code(Code::Auth, "Authentication failed"))
                }
            }
            SecretOutcome::Unavailable => {
                self.auth_failed = true;
                Action::Reply(err_code(Code::Auth, "Authentication failed"))
            }
            SecretOutcome::TempFail => Action::Reply(err_code(
                Code::SysTemp,
                "Authentication is temporarily unavailable, try again later",
            )),
        }
    }

    /// The result of [`Action::OpenMaildrop`]: the listing, or why not.
    pub fn on_maildrop(
        &mut self,
        principal: String,
        result: Result<Vec<Entry>, MaildropError>,
    ) -> Action {
        match result {
            Ok(entries) => {
                let deleted = vec![false; entries.len()];
                let drop = Maildrop {
                    principal: principal.clone(),
                    entries,
                    deleted,
                };
                let (n, octets) = drop.totals();
                self.state = State::Transaction(drop);
                self.principal = Some(principal);
                Action::Reply(ok(&format!("Logged in, {n} messages ({octets} octets)")))
            }
            Err(MaildropError::InUse) => Action::Reply(err_code(
                Code::InUse,
                "Mailbox is locked by another POP3 session",
            )),
            Err(MaildropError::LoginDelay) => Action::Reply(err_code(
                Code::LoginDelay,
                "Logged in too recently, try again later",
            )),
            Err(MaildropError::Temporary) => Action::Reply(err_code(
                Code::SysTemp,
                "Mailbox is temporarily unavailable, try again later",
            )),
            Err(MaildropError::Permanent) => {
                Action::Reply(err_code(Code::SysPerm, "Mailbox cannot be opened"))
            }
        }
    }

    /// TLS is up after [`Action::StartTls`]: start over in AUTHORIZATION.
    pub fn on_tls_started(&mut self) {
        self.tls = true;
        self.state = State::Authorization {
            user: None,
            sasl: None,
            apop_digest: None,
        };
    }

    /// The result of [`Action::Commit`]; the reply is the last one.
    pub fn on_commit(&mut self, result: Result<(), StorageFailure>) -> Vec<u8> {
        match result {
            Ok(()) => ok("Poplar signing off"),
            Err(StorageFailure::Temporary) => err_code(
                Code::SysTemp,
                "Some deleted messages could not be removed; they remain in the mailbox",
            ),
            Err(StorageFailure::Permanent) => err_code(
                Code::SysPerm,
                "Some deleted messages could not be removed; they remain in the mailbox",
            ),
        }
    }

    fn transaction(&mut self, cmd: Command) -> Action {
        let State::Transaction(drop) = &mut self.state else {
            unreachable!("transaction() is only called in TRANSACTION")
        };
        let reply = match cmd {
            Command::Stat => {
                let (n, octets) = drop.totals();
                ok(&format!("{n} {octets}"))
            }
            Command::List(None) => {
                let (n, octets) = drop.totals();
                let lines = drop.live().map(|(i, e)| format!("{} {}", i + 1, e.size));
                multi(&format!("{n} messages ({octets} octets)"), lines)
            }
            Command::List(Some(msg)) => match drop.get(msg) {
                Ok((_, e)) => ok(&format!("{msg} {}", e.size)),
                Err(r) => r,
            },
            Command::Uidl(None) => {
                let lines = drop.live().map(|(i, e)| format!("{} {}", i + 1, e.uid));
                multi("Unique-ID listing follows", lines)
            }
            Command::Uidl(Some(msg)) => match drop.get(msg) {
                Ok((_, e)) => ok(&format!("{msg} {}", e.uid)),
                Err(r) => r,
            },
            Command::Retr(msg) => match drop.get(msg) {
                Ok((_, e)) => {
                    self.stats.retr += 1;
                    self.stats.retr_bytes += e.size;
                    return Action::SendMessage {
                        head: ok(&format!("{} octets", e.size)),
                        key: e.key.clone(),
                        stored_size: e.stored_size,
                        encoder: MessageEncoder::whole(),
                    };
                }
                Err(r) => r,
            },
            Command::Top { msg, lines } => match drop.get(msg) {
                Ok((_, e)) => {
                    self.stats.top += 1;
                    return Action::SendMessage {
                        head: ok("Top of message follows"),
                        key: e.key.clone(),
                        stored_size: e.stored_size,
                        encoder: MessageEncoder::top(lines),
                    };
                }
                Err(r) => r,
            },
            Command::Dele(msg) => match drop.get(msg) {
                Ok((i, e)) => {
                    self.stats.dele += 1;
                    self.stats.deleted_bytes += e.size;
                    drop.deleted[i] = true;
                    ok(&format!("Message {msg} deleted"))
                }
                Err(r) => r,
            },
            Command::Rset => {
                drop.deleted.iter_mut().for_each(|d| *d = false);
                self.stats.dele = 0;
                self.stats.deleted_bytes = 0;
                let (n, octets) = drop.totals();
                ok(&format!("{n} messages ({octets} octets)"))
            }
            Command::Noop => ok("Still here"),
            Command::Stls => err("STLS is only valid before login"),
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. } => {
                err("Already logged in")
            }
            Command::Capa | Command::Quit => unreachable!("handled for every state"),
        };
        Action::Reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::command::ParseError;

    fn config() -> SessionConfig {
        SessionConfig {
            apop: true,
            stls: true,
            login_delay: None,
            expire: None,
        }
    }

    const STAMP: &str = "<1896.697170952@dbc.mtview.ca.us>";

    fn session() -> Session {
        Session::new(config(), false, true, STAMP.into())
    }

    fn line(s: &str) -> Line {
        Line::Complete(s.as_bytes().to_vec())
    }

    fn reply(a: Action) -> String {
        match a {
            Action::Reply(b) | Action::Close(b) | Action::Quit(b) | Action::StartTls(b) => {
                String::from_utf8(b).unwrap()
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn entries() -> Vec<Entry> {
        (1..=3)
            .map(|i| Entry {
                key: format!("new/{i}"),
                size: 100 * i,
                stored_size: 98 * i,
                uid: format!("uid{i}"),
            })
            .collect()
    }

    /// A session logged in as `alice` with three messages.
    fn logged_in() -> Session {
        let mut s = session();
        assert_eq!(
            reply(s.on_line(line("USER alice"))),
            "+OK Send your password\r\n"
        );
        match s.on_line(line("PASS secret")) {
            Action::Verify(req) => {
                assert_eq!(req.user, "alice");
                assert_eq!(req.credential, "secret");
                assert_eq!(req.mechanism, "USER");
            }
            other => panic!("{other:?}"),
        }
        match s.on_auth(AuthOutcome::Allow {
            principal: "alice".into(),
        }) {
            Action::OpenMaildrop { principal } => assert_eq!(principal, "alice"),
            other => panic!("{other:?}"),
        }
        let r = reply(s.on_maildrop("alice".into(), Ok(entries())));
        assert_eq!(r, "+OK Logged in, 3 messages (600 octets)\r\n");
        s
    }

    #[test]
    fn greeting_has_apop_timestamp() {
        assert_eq!(
            String::from_utf8(session().greeting()).unwrap(),
            format!("+OK Poplar POP3 server ready {STAMP}\r\n")
        );
        let mut c = config();
        c.apop = false;
        let s = Session::new(c, false, true, STAMP.into());
        assert_eq!(s.greeting(), b"+OK Poplar POP3 server ready\r\n");
    }

    #[test]
    fn transaction_commands_before_login_are_refused() {
        let mut s = session();
        for c in [
            "STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "UIDL", "TOP 1 1",
        ] {
            assert_eq!(
                reply(s.on_line(line(c))),
                "-ERR Command not valid before login\r\n",
                "{c}"
            );
        }
        assert_eq!(s.phase(), Phase::Authorization);
    }

    #[test]
    fn pass_without_user_and_failed_login() {
        let mut s = session();
        assert_eq!(reply(s.on_line(line("PASS x"))), "-ERR Give USER first\r\n");
        s.on_line(line("USER bob"));
        assert!(matches!(s.on_line(line("PASS wrong")), Action::Verify(_)));
        assert_eq!(
            reply(s.on_auth(AuthOutcome::Deny)),
            "-ERR [AUTH] Authentication failed\r\n"
        );
        // The USER must be given again after a failed PASS.
        assert_eq!(reply(s.on_line(line("PASS x"))), "-ERR Give USER first\r\n");
        s.on_line(line("USER bob"));
        s.on_line(line("PASS x"));
        assert_eq!(
            reply(s.on_auth(AuthOutcome::TempFail)),
            "-ERR [SYS/TEMP] Authentication is temporarily unavailable, try again later\r\n"
        );
    }

    #[test]
    fn stat_list_uidl() {
        let mut s = logged_in();
        assert_eq!(reply(s.on_line(line("STAT"))), "+OK 3 600\r\n");
        assert_eq!(
            reply(s.on_line(line("LIST"))),
            "+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n"
        );
        assert_eq!(reply(s.on_line(line("LIST 2"))), "+OK 2 200\r\n");
        assert_eq!(reply(s.on_line(line("LIST 4"))), "-ERR No such message\r\n");
        assert_eq!(
            reply(s.on_line(line("UIDL"))),
            "+OK Unique-ID listing follows\r\n1 uid1\r\n2 uid2\r\n3 uid3\r\n.\r\n"
        );
        assert_eq!(reply(s.on_line(line("UIDL 3"))), "+OK 3 uid3\r\n");
        assert_eq!(
            reply(s.on_line(line("UIDL 0"))),
            format!("-ERR {}\r\n", ParseError::Zero)
        );
        assert_eq!(reply(s.on_line(line("NOOP"))), "+OK Still here\r\n");
    }

    #[test]
    fn dele_hides_message_until_rset() {
        let mut s = logged_in();
        assert_eq!(
            reply(s.on_line(line("DELE 2"))),
            "+OK Message 2 deleted\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("DELE 2"))),
            "-ERR Message already deleted\r\n"
        );
        assert_eq!(reply(s.on_line(line("STAT"))), "+OK 2 400\r\n");
        assert_eq!(
            reply(s.on_line(line("LIST"))),
            "+OK 2 messages (400 octets)\r\n1 100\r\n3 300\r\n.\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("UIDL"))),
            "+OK Unique-ID listing follows\r\n1 uid1\r\n3 uid3\r\n.\r\n"
        );
        for c in ["LIST 2", "UIDL 2", "RETR 2", "TOP 2 0"] {
            assert_eq!(
                reply(s.on_line(line(c))),
                "-ERR Message already deleted\r\n",
                "{c}"
            );
        }
        assert_eq!(
            reply(s.on_line(line("RSET"))),
            "+OK 3 messages (600 octets)\r\n"
        );
        assert_eq!(reply(s.on_line(line("STAT"))), "+OK 3 600\r\n");
        assert!(matches!(
            s.on_line(line("RETR 2")),
            Action::SendMessage { .. }
        ));
    }

    #[test]
    fn quit_commits_only_deleted_messages() {
        let mut s = logged_in();
        s.on_line(line("DELE 1"));
        s.on_line(line("DELE 3"));
        match s.on_line(line("QUIT")) {
            Action::Commit { principal, keys } => {
                assert_eq!(principal, "alice");
                assert_eq!(keys, vec!["new/1".to_string(), "new/3".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.on_commit(Ok(())), b"+OK Poplar signing off\r\n");
        let mut s = logged_in();
        assert_eq!(reply(s.on_line(line("QUIT"))), "+OK Poplar signing off\r\n");
        let mut s = logged_in();
        s.on_line(line("DELE 1"));
        assert!(matches!(s.on_line(line("QUIT")), Action::Commit { .. }));
        assert!(
            String::from_utf8(s.on_commit(Err(StorageFailure::Temporary)))
                .unwrap()
                .starts_with("-ERR [SYS/TEMP]")
        );
    }

    #[test]
    fn quit_before_login_commits_nothing() {
        let mut s = session();
        assert_eq!(reply(s.on_line(line("QUIT"))), "+OK Poplar signing off\r\n");
    }

    #[test]
    fn retr_and_top_stream_the_right_message() {
        let mut s = logged_in();
        match s.on_line(line("RETR 2")) {
            Action::SendMessage {
                head,
                key,
                stored_size,
                ..
            } => {
                assert_eq!(head, b"+OK 200 octets\r\n");
                assert_eq!(key, "new/2");
                assert_eq!(stored_size, 196);
            }
            other => panic!("{other:?}"),
        }
        match s.on_line(line("TOP 3 5")) {
            Action::SendMessage { head, key, .. } => {
                assert_eq!(head, b"+OK Top of message follows\r\n");
                assert_eq!(key, "new/3");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(reply(s.on_line(line("RETR 9"))), "-ERR No such message\r\n");
        assert_eq!(
            reply(s.on_line(line("RETR 4294967295"))),
            "-ERR No such message\r\n"
        );
        assert_eq!(s.stats().retr, 1);
        assert_eq!(s.stats().top, 1);
    }

    #[test]
    fn in_use_and_other_maildrop_errors_stay_in_authorization() {
        for (e, want) in [
            (MaildropError::InUse, "-ERR [IN-USE] "),
            (MaildropError::LoginDelay, "-ERR [LOGIN-DELAY] "),
            (MaildropError::Temporary, "-ERR [SYS/TEMP] "),
            (MaildropError::Permanent, "-ERR [SYS/PERM] "),
        ] {
            let mut s = session();
            s.on_line(line("USER a"));
            s.on_line(line("PASS b"));
            s.on_auth(AuthOutcome::Allow {
                principal: "a".into(),
            });
            assert!(reply(s.on_maildrop("a".into(), Err(e))).starts_with(want));
            assert_eq!(s.phase(), Phase::Authorization);
        }
    }

    #[test]
    fn commands_after_login_that_belong_before() {
        let mut s = logged_in();
        assert_eq!(
            reply(s.on_line(line("USER x"))),
            "-ERR Already logged in\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("PASS x"))),
            "-ERR Already logged in\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("STLS"))),
            "-ERR STLS is only valid before login\r\n"
        );
    }

    #[test]
    fn capa_before_and_after_login_and_tls() {
        let mut s = session();
        let before = reply(s.on_line(line("CAPA")));
        assert!(before.starts_with("+OK"));
        for cap in [
            "\r\nTOP\r\n",
            "\r\nUIDL\r\n",
            "\r\nUSER\r\n",
            "\r\nSASL PLAIN LOGIN\r\n",
            "\r\nRESP-CODES\r\n",
            "\r\nAUTH-RESP-CODE\r\n",
            "\r\nPIPELINING\r\n",
            "\r\nSTLS\r\n",
            "\r\nIMPLEMENTATION Poplar-",
        ] {
            assert!(before.contains(cap), "{cap:?} in {before}");
        }
        assert!(before.ends_with("\r\n.\r\n"));
        assert!(matches!(s.on_line(line("STLS")), Action::StartTls(_)));
        s.on_tls_started();
        let in_tls = reply(s.on_line(line("CAPA")));
        assert!(!in_tls.contains("STLS"));
        assert!(in_tls.contains("\r\nUSER\r\n"));
        assert_eq!(reply(s.on_line(line("STLS"))), "-ERR Already using TLS\r\n");
        let mut s = logged_in();
        let after = reply(s.on_line(line("CAPA")));
        assert!(!after.contains("STLS") && !after.contains("USER") && !after.contains("SASL"));
        assert!(after.contains("\r\nTOP\r\n"));
    }

    #[test]
    fn capa_shows_login_delay_and_expire() {
        let mut c = config();
        c.login_delay = Some(900);
        c.expire = Some("NEVER".into());
        let mut s = Session::new(c, false, true, STAMP.into());
        let caps = reply(s.on_line(line("CAPA")));
        assert!(caps.contains("\r\nLOGIN-DELAY 900\r\n"));
        assert!(caps.contains("\r\nEXPIRE NEVER\r\n"));
    }

    #[test]
    fn plaintext_refused_without_tls_unless_allowed() {
        let mut s = Session::new(config(), false, false, STAMP.into());
        assert!(reply(s.on_line(line("USER a"))).starts_with("-ERR [AUTH] Plaintext"));
        assert!(reply(s.on_line(line("AUTH PLAIN AGEAYg=="))).starts_with("-ERR [AUTH] Plaintext"));
        let caps = reply(s.on_line(line("CAPA")));
        assert!(!caps.contains("USER") && !caps.contains("SASL"));
        assert!(caps.contains("STLS"));
        s.on_line(line("STLS"));
        s.on_tls_started();
        assert_eq!(
            reply(s.on_line(line("USER a"))),
            "+OK Send your password\r\n"
        );
    }

    #[test]
    fn stls_unavailable_without_certificate() {
        let mut c = config();
        c.stls = false;
        let mut s = Session::new(c, false, true, STAMP.into());
        assert_eq!(
            reply(s.on_line(line("STLS"))),
            "-ERR STLS is not available on this port\r\n"
        );
        assert!(!reply(s.on_line(line("CAPA"))).contains("STLS"));
    }

    #[test]
    fn failed_logins_are_flagged_for_the_penalty() {
        let mut s = session();
        s.on_line(line("USER a"));
        s.on_line(line("PASS b"));
        assert!(!s.take_auth_failure());
        s.on_auth(AuthOutcome::Deny);
        assert!(s.take_auth_failure());
        assert!(!s.take_auth_failure(), "cleared once taken");
        s.on_line(line("APOP a 0123456789abcdef0123456789abcdef"));
        s.on_secret(SecretOutcome::Unavailable);
        assert!(s.take_auth_failure());
        let mut strict = Session::new(config(), false, false, STAMP.into());
        strict.on_line(line("USER a"));
        assert!(
            !strict.take_auth_failure(),
            "a refused plaintext USER is no failed login"
        );
    }

    #[test]
    fn apop_digest_checked_by_host() {
        // RFC 1939 §7 example: secret "tanstaaf".
        let mut s = session();
        match s.on_line(line("APOP mrose C4C9334BAC560ECC979E58001B3E22FB")) {
            Action::LookupSecret { user } => assert_eq!(user, "mrose"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.on_secret(SecretOutcome::Found {
                secret: "tanstaaf".into(),
                principal: "mrose".into()
            }),
            Action::OpenMaildrop { .. }
        ));
        let mut s = session();
        s.on_line(line("APOP mrose c4c9334bac560ecc979e58001b3e22fb"));
        assert_eq!(
            reply(s.on_secret(SecretOutcome::Found {
                secret: "wrong".into(),
                principal: "mrose".into()
            })),
            "-ERR [AUTH] Authentication failed\r\n"
        );
        let mut s = session();
        s.on_line(line("APOP mrose c4c9334bac560ecc979e58001b3e22fb"));
        assert_eq!(
            reply(s.on_secret(SecretOutcome::Unavailable)),
            "-ERR [AUTH] Authentication failed\r\n"
        );
    }

    #[test]
    fn sasl_plain_initial_response_and_continuation() {
        let mut s = session();
        // "\0alice\0pw"
        match s.on_line(line("AUTH PLAIN AGFsaWNlAHB3")) {
            Action::Verify(r) => {
                assert_eq!(
                    (r.user.as_str(), r.credential.as_str(), r.mechanism),
                    ("alice", "pw", "PLAIN")
                );
            }
            other => panic!("{other:?}"),
        }
        let mut s = session();
        assert_eq!(reply(s.on_line(line("AUTH plain"))), "+ \r\n");
        assert_eq!(s.max_line(), MAX_SASL_LINE);
        assert!(matches!(s.on_line(line("AGFsaWNlAHB3")), Action::Verify(_)));
        assert_eq!(s.max_line(), MAX_COMMAND_LINE);
        let mut s = session();
        assert_eq!(reply(s.on_line(line("AUTH PLAIN ="))), "+ \r\n");
        assert!(matches!(s.on_line(line("AGFsaWNlAHB3")), Action::Verify(_)));
    }

    #[test]
    fn sasl_login_and_cancel_and_garbage() {
        let mut s = session();
        assert_eq!(reply(s.on_line(line("AUTH LOGIN"))), "+ VXNlcm5hbWU6\r\n");
        assert_eq!(reply(s.on_line(line("YWxpY2U="))), "+ UGFzc3dvcmQ6\r\n");
        match s.on_line(line("cHc=")) {
            Action::Verify(r) => {
                assert_eq!((r.user.as_str(), r.credential.as_str()), ("alice", "pw"))
            }
            other => panic!("{other:?}"),
        }
        let mut s = session();
        s.on_line(line("AUTH LOGIN"));
        assert_eq!(
            reply(s.on_line(line("*"))),
            "-ERR Authentication cancelled\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("NOOP"))),
            "-ERR Command not valid before login\r\n"
        );
        let mut s = session();
        s.on_line(line("AUTH PLAIN"));
        assert_eq!(
            reply(s.on_line(line("!!!notbase64"))),
            "-ERR Invalid base64 in authentication response\r\n"
        );
        let mut s = session();
        // "alice\0pw": only one NUL.
        assert_eq!(
            reply(s.on_line(line("AUTH PLAIN YWxpY2UAcHc="))),
            "-ERR [AUTH] Malformed PLAIN response\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH CRAM-MD5"))),
            "-ERR Unsupported authentication mechanism\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH"))),
            "+OK Supported mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        );
    }

    #[test]
    fn over_long_lines_get_err_then_close() {
        let mut s = session();
        assert_eq!(reply(s.on_line(Line::TooLong)), "-ERR Line too long\r\n");
        assert_eq!(reply(s.on_line(Line::TooLong)), "-ERR Line too long\r\n");
        assert!(matches!(s.on_line(Line::TooLong), Action::Close(_)));
    }

    #[test]
    fn parse_errors_are_err_replies() {
        let mut s = logged_in();
        assert_eq!(
            reply(s.on_line(line("RETR abc"))),
            format!("-ERR {}\r\n", ParseError::NotANumber)
        );
        assert_eq!(
            reply(s.on_line(Line::Complete(b"NOOP\0".to_vec()))),
            format!("-ERR {}\r\n", ParseError::BadByte)
        );
        assert_eq!(reply(s.on_line(line("XYZZY"))), "-ERR Unknown command\r\n");
    }
}
