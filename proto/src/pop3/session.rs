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
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::command::{Command, parse};
use super::encode::MessageEncoder;
use super::line::Line;
use super::reply::{Code, err, err_code, multi, ok};
use super::scram::{ClientFirst, Exchange, ScramError, Verifier};

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
    /// The SASL mechanisms offered.
    pub mechanisms: Mechanisms,
    /// A server-wide random secret: SCRAM server nonces and the salts
    /// made up for unknown users derive from it. Make it with a CSPRNG at
    /// startup.
    pub secret: [u8; 32],
}

/// Which SASL mechanisms a listener offers (RFC 5034). Mechanisms that
/// reveal a password or token (PLAIN, LOGIN, OAUTHBEARER, XOAUTH2) follow
/// the plaintext policy like USER/PASS; SCRAM is offered on any
/// connection; SCRAM-SHA-256-PLUS only over TLS 1.3, where `tls-exporter`
/// channel binding exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mechanisms {
    pub plain: bool,
    pub login: bool,
    pub scram_sha256: bool,
    pub scram_sha256_plus: bool,
    pub oauthbearer: bool,
    pub xoauth2: bool,
}

impl Default for Mechanisms {
    /// PLAIN and LOGIN, which every password backend can verify.
    fn default() -> Self {
        Mechanisms {
            plain: true,
            login: true,
            scram_sha256: false,
            scram_sha256_plus: false,
            oauthbearer: false,
            xoauth2: false,
        }
    }
}

impl Mechanisms {
    /// Every mechanism name this server implements.
    pub const ALL: [&'static str; 6] = [
        "PLAIN",
        "LOGIN",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "OAUTHBEARER",
        "XOAUTH2",
    ];

    /// None enabled.
    pub fn none() -> Self {
        Mechanisms {
            plain: false,
            login: false,
            scram_sha256: false,
            scram_sha256_plus: false,
            oauthbearer: false,
            xoauth2: false,
        }
    }

    /// Enables a mechanism by its (case-insensitive) name; false if this
    /// server does not implement it.
    pub fn enable(&mut self, name: &str) -> bool {
        let flag = match name.to_ascii_uppercase().as_str() {
            "PLAIN" => &mut self.plain,
            "LOGIN" => &mut self.login,
            "SCRAM-SHA-256" => &mut self.scram_sha256,
            "SCRAM-SHA-256-PLUS" => &mut self.scram_sha256_plus,
            "OAUTHBEARER" => &mut self.oauthbearer,
            "XOAUTH2" => &mut self.xoauth2,
            _ => return false,
        };
        *flag = true;
        true
    }
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
    /// The user name; empty for an OAUTHBEARER login that named no user
    /// (the token says who it is).
    pub user: String,
    /// `USER`, `PLAIN`, `LOGIN`, `OAUTHBEARER` or `XOAUTH2`.
    pub mechanism: &'static str,
    /// The password, or the bearer token.
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

/// Which stored secret a challenge mechanism needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// The clear-text password (APOP).
    Plaintext,
    /// A SCRAM-SHA-256 verifier; a clear-text password will do too (the
    /// session derives a verifier from it).
    ScramSha256,
}

/// A stored secret handed over by the auth plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Plaintext(String),
    ScramSha256(Verifier),
}

/// What the auth plugin answered to a secret lookup (APOP, SCRAM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOutcome {
    Found { secret: Secret, principal: String },
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
    /// Ask the auth plugin for the user's stored secret, then call
    /// [`Session::on_secret`].
    LookupSecret { user: String, kind: SecretKind },
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
    LoginPass {
        user: String,
    },
    /// Waiting for the SCRAM client-first message.
    ScramFirst {
        plus: bool,
    },
    /// Waiting for the SCRAM client-final message.
    ScramFinal {
        exchange: Box<Exchange>,
        principal: String,
    },
    /// The proof was good and server-final sent; waiting for the client's
    /// empty response (RFC 5034 §4: `+OK` carries no data).
    ScramVerified {
        principal: String,
    },
    OAuth {
        xoauth2: bool,
    },
    /// The token was refused and the error challenge sent; waiting for the
    /// client's dummy response (RFC 7628 §3.2.3).
    OAuthRefused,
}

/// Work the session asked the network layer for and is waiting on.
#[derive(Debug)]
enum Pending {
    /// An APOP digest waiting for the clear-text secret.
    Apop(String),
    /// A SCRAM client-first message waiting for the verifier.
    Scram { first: ClientFirst },
    /// An OAuth token being verified (a refusal gets an error challenge).
    OAuth { xoauth2: bool },
}

#[derive(Debug)]
enum State {
    Authorization {
        /// Name given by USER, waiting for PASS.
        user: Option<String>,
        /// A SASL exchange in progress.
        sasl: Option<Sasl>,
        /// Work asked for and not yet answered.
        pending: Option<Pending>,
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
    /// The TLS connection's `tls-exporter` value (TLS 1.3 only).
    channel_binding: Option<Vec<u8>>,
    /// SASL exchanges started, for distinct SCRAM nonces.
    sasl_attempts: u32,
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
                pending: None,
            },
            tls,
            plaintext_without_tls,
            timestamp,
            bad_lines: 0,
            principal: None,
            stats: Stats::default(),
            last_command: None,
            auth_failed: false,
            channel_binding: None,
            sasl_attempts: 0,
        }
    }

    /// Records the connection's RFC 9266 `tls-exporter` value (32 bytes
    /// exported with the label `EXPORTER-Channel-Binding`), for a session
    /// that started on implicit TLS 1.3. Enables SCRAM-SHA-256-PLUS.
    pub fn set_channel_binding(&mut self, value: Option<Vec<u8>>) {
        self.channel_binding = value;
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
            State::Authorization { .. } => MAX_SASL_LINE,
            _ => MAX_COMMAND_LINE,
        }
    }

    fn in_sasl_exchange(&self) -> bool {
        matches!(self.state, State::Authorization { sasl: Some(_), .. })
    }

    fn plaintext_allowed(&self) -> bool {
        self.tls || self.plaintext_without_tls
    }

    /// Handles one line from the client.
    pub fn on_line(&mut self, line: Line) -> Action {
        let line = match line {
            // In AUTHORIZATION lines up to MAX_SASL_LINE are read, for
            // `AUTH mech initial-response`: RFC 5034 §4 tells clients not to
            // send longer than 255 octets, but OAuth tokens do not fit and
            // common clients (mpop, Thunderbird) send them anyway, as
            // Dovecot accepts. Any other command is held to RFC 2449's 255.
            Line::Complete(l)
                if l.len() + 2 > MAX_COMMAND_LINE
                    && !self.in_sasl_exchange()
                    && !(l.len() > 5 && l[..5].eq_ignore_ascii_case(b"AUTH ")) =>
            {
                return self.on_line(Line::TooLong);
            }
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
        }
        let mechanisms = self.offered_mechanisms();
        if authorization && !mechanisms.is_empty() {
            caps.push(format!("SASL {}", mechanisms.join(" ")));
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

    /// The SASL mechanisms this connection offers now.
    fn offered_mechanisms(&self) -> Vec<&'static str> {
        let m = self.config.mechanisms;
        let clear = self.plaintext_allowed();
        let plus = self.channel_binding.is_some();
        [
            ("PLAIN", m.plain && clear),
            ("LOGIN", m.login && clear),
            ("SCRAM-SHA-256", m.scram_sha256),
            ("SCRAM-SHA-256-PLUS", m.scram_sha256_plus && plus),
            ("OAUTHBEARER", m.oauthbearer && clear),
            ("XOAUTH2", m.xoauth2 && clear),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }

    /// A fresh, unpredictable SCRAM server nonce: distinct per connection
    /// (the APOP timestamp is) and per attempt.
    fn scram_nonce(&mut self) -> String {
        self.sasl_attempts += 1;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.config.secret).expect("HMAC takes any key length");
        mac.update(self.timestamp.as_bytes());
        mac.update(&self.sasl_attempts.to_be_bytes());
        B64.encode(&mac.finalize().into_bytes()[..18])
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
        // Only AUTH needs the list (Vec::new does not allocate).
        let offered = match cmd {
            Command::Auth { .. } => self.offered_mechanisms(),
            _ => Vec::new(),
        };
        let m = self.config.mechanisms;
        let State::Authorization {
            user,
            pending,
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
                *pending = Some(Pending::Apop(digest.to_ascii_lowercase()));
                Action::LookupSecret {
                    user: name,
                    kind: SecretKind::Plaintext,
                }
            }
            Command::Auth {
                mechanism: None, ..
            } => Action::Reply(multi("Supported mechanisms follow", offered)),
            Command::Auth {
                mechanism: Some(mech),
                initial,
            } => {
                *user = None;
                let mech = mech.to_ascii_uppercase();
                // (mechanism, enabled, needs the plaintext policy)
                let (chosen, enabled, clear) = match mech.as_str() {
                    "PLAIN" => (Sasl::Plain, m.plain, true),
                    "LOGIN" => (Sasl::LoginUser, m.login, true),
                    "SCRAM-SHA-256" => (Sasl::ScramFirst { plus: false }, m.scram_sha256, false),
                    "SCRAM-SHA-256-PLUS" => (
                        Sasl::ScramFirst { plus: true },
                        offered.contains(&"SCRAM-SHA-256-PLUS"),
                        false,
                    ),
                    "OAUTHBEARER" => (Sasl::OAuth { xoauth2: false }, m.oauthbearer, true),
                    "XOAUTH2" => (Sasl::OAuth { xoauth2: true }, m.xoauth2, true),
                    _ => (Sasl::Plain, false, false),
                };
                if !enabled {
                    return Action::Reply(err("Unsupported authentication mechanism"));
                }
                if clear && !plaintext_ok {
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
            Sasl::ScramFirst { plus } => {
                let offered =
                    self.channel_binding.is_some() && self.config.mechanisms.scram_sha256_plus;
                match ClientFirst::parse(&text, plus, offered) {
                    Ok(first) if !name_ok(&first.user) => {
                        Action::Reply(err_code(Code::Auth, "Malformed user name"))
                    }
                    Ok(first) => {
                        let user = first.user.clone();
                        if let State::Authorization { pending, .. } = &mut self.state {
                            *pending = Some(Pending::Scram { first });
                        }
                        Action::LookupSecret {
                            user,
                            kind: SecretKind::ScramSha256,
                        }
                    }
                    Err(e) => Action::Reply(scram_refusal(&e)),
                }
            }
            Sasl::ScramFinal {
                exchange,
                principal,
            } => match exchange.finish(&text) {
                Ok(server_final) => {
                    *sasl = Some(Sasl::ScramVerified { principal });
                    Action::Reply(format!("+ {}\r\n", B64.encode(server_final)).into_bytes())
                }
                Err(e) => {
                    self.auth_failed = e == ScramError::Proof;
                    Action::Reply(scram_refusal(&e))
                }
            },
            Sasl::ScramVerified { principal } => {
                if text.is_empty() {
                    Action::OpenMaildrop { principal }
                } else {
                    Action::Reply(err_code(Code::Auth, "Expected an empty response"))
                }
            }
            Sasl::OAuth { xoauth2 } => {
                if text.is_empty() && line == b"=" && !xoauth2 {
                    *sasl = Some(Sasl::OAuth { xoauth2 });
                    return Action::Reply(b"+ \r\n".to_vec());
                }
                let parsed = if xoauth2 {
                    parse_xoauth2(&text)
                } else {
                    parse_oauthbearer(&text)
                };
                match parsed {
                    // The user may be empty here: the token names it.
                    Some((user, _)) if !user.is_empty() && !name_ok(&user) => {
                        Action::Reply(err_code(Code::Auth, "Malformed user name"))
                    }
                    Some((user, token)) => {
                        if let State::Authorization { pending, .. } = &mut self.state {
                            *pending = Some(Pending::OAuth { xoauth2 });
                        }
                        Action::Verify(AuthRequest {
                            user,
                            mechanism: if xoauth2 { "XOAUTH2" } else { "OAUTHBEARER" },
                            credential: token,
                            authzid: String::new(),
                        })
                    }
                    None => Action::Reply(err_code(Code::Auth, "Malformed OAuth response")),
                }
            }
            Sasl::OAuthRefused => Action::Reply(err_code(Code::Auth, "Authentication failed")),
            Sasl::Plain => {
                let parts: Vec<&str> = text.split('\0').collect();
                if text.is_empty() && line == b"=" {
                    // Empty initial response: ask for the real one.
                    *sasl = Some(Sasl::Plain);
                    return Action::Reply(b"+ \r\n".to_vec());
                }
                match parts.as_slice() {
                    [authzid, authcid, _]
                        if !name_ok(authcid) || !(authzid.is_empty() || name_ok(authzid)) =>
                    {
                        Action::Reply(err_code(Code::Auth, "Malformed user name"))
                    }
                    [authzid, authcid, password] => Action::Verify(AuthRequest {
                        user: authcid.to_string(),
                        mechanism: "PLAIN",
                        credential: password.to_string(),
                        authzid: authzid.to_string(),
                    }),
                    _ => Action::Reply(err_code(Code::Auth, "Malformed PLAIN response")),
                }
            }
            Sasl::LoginUser => {
                if !name_ok(&text) {
                    return Action::Reply(err_code(Code::Auth, "Malformed user name"));
                }
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
        let oauth = match &mut self.state {
            State::Authorization { pending, .. } => match pending.take() {
                Some(Pending::OAuth { xoauth2 }) => Some(xoauth2),
                _ => None,
            },
            _ => None,
        };
        match outcome {
            AuthOutcome::Allow { principal } => Action::OpenMaildrop { principal },
            AuthOutcome::Deny => {
                self.auth_failed = true;
                if let (Some(xoauth2), State::Authorization { sasl, .. }) = (oauth, &mut self.state)
                {
                    // RFC 7628 §3.2.2: a refused token gets an error
                    // challenge; the client answers with a dummy response
                    // and only then is told the exchange failed.
                    *sasl = Some(Sasl::OAuthRefused);
                    let status = if xoauth2 {
                        r#"{"status":"401","schemes":"Bearer"}"#
                    } else {
                        r#"{"status":"invalid_token","schemes":"bearer"}"#
                    };
                    return Action::Reply(format!("+ {}\r\n", B64.encode(status)).into_bytes());
                }
                Action::Reply(err_code(Code::Auth, "Authentication failed"))
            }
            AuthOutcome::TempFail => Action::Reply(err_code(
                Code::SysTemp,
                "Authentication is temporarily unavailable, try again later",
            )),
        }
    }

    /// The auth plugin's answer to [`Action::LookupSecret`] (APOP, SCRAM).
    pub fn on_secret(&mut self, outcome: SecretOutcome) -> Action {
        let pending = match &mut self.state {
            State::Authorization { pending, .. } => pending.take(),
            _ => None,
        };
        match pending {
            Some(Pending::Apop(digest)) => self.apop_secret(digest, outcome),
            Some(Pending::Scram { first }) => self.scram_secret(first, outcome),
            _ => Action::Reply(err_code(Code::Auth, "Authentication failed")),
        }
    }

    /// Starts a SCRAM exchange with the user's verifier (or a made-up one
    /// for a user without one, which then fails like a wrong password).
    fn scram_secret(&mut self, first: ClientFirst, outcome: SecretOutcome) -> Action {
        let made_up = || Verifier::unmatchable(&first.user, &self.config.secret);
        let (verifier, real, principal) = match outcome {
            SecretOutcome::Found {
                secret: Secret::ScramSha256(v),
                principal,
            } => (v, true, principal),
            SecretOutcome::Found {
                secret: Secret::Plaintext(pw),
                principal,
            } => {
                // A stable per-user salt, so clients may cache the key.
                let salt = made_up();
                let v = Verifier::from_password(pw.as_bytes(), &salt.salt, salt.iterations);
                (v, true, principal)
            }
            SecretOutcome::Unavailable => (made_up(), false, String::new()),
            SecretOutcome::TempFail => {
                return Action::Reply(err_code(
                    Code::SysTemp,
                    "Authentication is temporarily unavailable, try again later",
                ));
            }
        };
        let nonce = self.scram_nonce();
        match Exchange::new(first, verifier, real, &nonce, self.channel_binding.clone()) {
            Ok(exchange) => {
                let reply = format!("+ {}\r\n", B64.encode(exchange.server_first())).into_bytes();
                if let State::Authorization { sasl, .. } = &mut self.state {
                    *sasl = Some(Sasl::ScramFinal {
                        exchange: Box::new(exchange),
                        principal,
                    });
                }
                Action::Reply(reply)
            }
            Err(e) => Action::Reply(scram_refusal(&e)),
        }
    }

    fn apop_secret(&mut self, digest: String, outcome: SecretOutcome) -> Action {
        match outcome {
            SecretOutcome::Found {
                secret: Secret::ScramSha256(_),
                ..
            } => {
                self.auth_failed = true;
                Action::Reply(err_code(Code::Auth, "Authentication failed"))
            }
            SecretOutcome::Found {
                secret: Secret::Plaintext(secret),
                principal,
            } => {
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
    /// `channel_binding` is the `tls-exporter` value if TLS 1.3 was
    /// negotiated (see [`Session::set_channel_binding`]).
    pub fn on_tls_started(&mut self, channel_binding: Option<Vec<u8>>) {
        self.tls = true;
        self.channel_binding = channel_binding;
        self.state = State::Authorization {
            user: None,
            sasl: None,
            pending: None,
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

/// Whether a user name from a SASL exchange may reach the auth plugin: not
/// empty, and no control characters (USER and APOP names are held to
/// printable ASCII by the parser; SASL names may be UTF-8, but a newline
/// or NUL in a name is never a real user and could forge log lines).
fn name_ok(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}

/// The answer to a failed SCRAM exchange. A wrong password and an unknown
/// user read the same; protocol errors say what was wrong.
fn scram_refusal(e: &ScramError) -> Vec<u8> {
    match e {
        ScramError::Proof => err_code(Code::Auth, "Authentication failed"),
        other => err_code(Code::Auth, &format!("Authentication failed: {other}")),
    }
}

/// OAUTHBEARER's initial client response (RFC 7628 §3.1):
/// `gs2-header %x01 *(key=value %x01) %x01`. Returns the user named in the
/// GS2 header (may be empty) and the bearer token.
fn parse_oauthbearer(text: &str) -> Option<(String, String)> {
    let (gs2, rest) = text.split_once('\x01')?;
    let mut gs2 = gs2.splitn(3, ',');
    if !matches!(gs2.next()?, "n" | "y") {
        return None;
    }
    let user = match gs2.next()? {
        "" => String::new(),
        a => a
            .strip_prefix("a=")?
            .replace("=2C", ",")
            .replace("=3D", "="),
    };
    let token = bearer_token(rest)?;
    Some((user, token))
}

/// XOAUTH2's client response: `user=U %x01 auth=Bearer T %x01 %x01`.
fn parse_xoauth2(text: &str) -> Option<(String, String)> {
    let (first, rest) = text.split_once('\x01')?;
    let user = first.strip_prefix("user=")?.to_string();
    let token = bearer_token(rest)?;
    Some((user, token))
}

/// The token of the `auth=Bearer …` pair among %x01-separated key=value
/// pairs that end with an empty one.
fn bearer_token(pairs: &str) -> Option<String> {
    let body = pairs.strip_suffix("\x01\x01")?;
    body.split('\x01').find_map(|kv| {
        let v = kv.strip_prefix("auth=")?;
        let (scheme, token) = v.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
            .then(|| token.trim().to_string())
    })
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
            mechanisms: Mechanisms::default(),
            secret: [7; 32],
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
        s.on_tls_started(None);
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
        s.on_tls_started(None);
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
            Action::LookupSecret { user, kind } => {
                assert_eq!((user.as_str(), kind), ("mrose", SecretKind::Plaintext))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.on_secret(SecretOutcome::Found {
                secret: Secret::Plaintext("tanstaaf".into()),
                principal: "mrose".into()
            }),
            Action::OpenMaildrop { .. }
        ));
        let mut s = session();
        s.on_line(line("APOP mrose c4c9334bac560ecc979e58001b3e22fb"));
        assert_eq!(
            reply(s.on_secret(SecretOutcome::Found {
                secret: Secret::Plaintext("wrong".into()),
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
        s.on_auth(AuthOutcome::Deny);
        let long = format!("USER {}", "u".repeat(300));
        assert_eq!(reply(s.on_line(line(&long))), "-ERR Line too long\r\n");
        s.on_auth(AuthOutcome::Allow {
            principal: "alice".into(),
        });
        s.on_maildrop("alice".into(), Ok(entries()));
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
    fn sasl_user_names_with_control_characters_are_refused() {
        let malformed = "-ERR [AUTH] Malformed user name\r\n";
        let mut s = with_mechanisms(&Mechanisms::ALL, true, Some(vec![1; 32]));
        for ir in ["\0a\nb\0pw", "\0\0pw", "x\ty\0a\0pw"] {
            let line = format!("AUTH PLAIN {}", B64.encode(ir));
            assert_eq!(reply(s.on_line(self::line(&line))), malformed, "{ir:?}");
        }
        assert_eq!(reply(s.on_line(line("AUTH LOGIN"))), "+ VXNlcm5hbWU6\r\n");
        assert_eq!(reply(s.on_line(line(&B64.encode("a\rb")))), malformed);
        assert_eq!(reply(s.on_line(line("AUTH LOGIN"))), "+ VXNlcm5hbWU6\r\n");
        assert_eq!(reply(s.on_line(line("="))), malformed, "empty LOGIN name");
        let first = B64.encode("n,,n=a\u{7f}b,r=abc");
        assert_eq!(
            reply(s.on_line(line(&format!("AUTH SCRAM-SHA-256 {first}")))),
            malformed
        );
        let xo = B64.encode("user=a\nb\x01auth=Bearer t\x01\x01");
        assert_eq!(
            reply(s.on_line(line(&format!("AUTH XOAUTH2 {xo}")))),
            malformed
        );
        assert!(!s.take_auth_failure());
    }

    #[test]
    fn long_auth_initial_responses_are_accepted() {
        // An OAuth token does not fit in 255 octets; clients send it anyway.
        let mut s = with_mechanisms(&["OAUTHBEARER"], true, None);
        let token = "t".repeat(1000);
        let ir = B64.encode(format!("n,,\x01auth=Bearer {token}\x01\x01"));
        match s.on_line(line(&format!("AUTH OAUTHBEARER {ir}"))) {
            Action::Verify(r) => assert_eq!(r.credential, token),
            other => panic!("{other:?}"),
        }
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

    fn with_mechanisms(names: &[&str], tls: bool, cb: Option<Vec<u8>>) -> Session {
        let mut c = config();
        c.mechanisms = Mechanisms::none();
        for n in names {
            assert!(c.mechanisms.enable(n));
        }
        let mut s = Session::new(c, tls, false, STAMP.into());
        s.set_channel_binding(cb);
        s
    }

    fn unb64_challenge(r: &str) -> String {
        let b = r.strip_prefix("+ ").unwrap().strip_suffix("\r\n").unwrap();
        String::from_utf8(B64.decode(b).unwrap()).unwrap()
    }

    /// A SCRAM client for the tests, written from RFC 5802 independently of
    /// the server side.
    fn client_final(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        cbind_input: &[u8],
    ) -> (String, String) {
        let mut it = server_first.split(',');
        let nonce = it.next().unwrap().strip_prefix("r=").unwrap();
        let salt = B64
            .decode(it.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iters: u32 = it
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let mac = |k: &[u8], d: &[u8]| {
            let mut m = Hmac::<Sha256>::new_from_slice(k).unwrap();
            m.update(d);
            m.finalize().into_bytes().to_vec()
        };
        let mut u = mac(password.as_bytes(), &[&salt[..], &[0, 0, 0, 1]].concat());
        let mut salted = u.clone();
        for _ in 1..iters {
            u = mac(password.as_bytes(), &u);
            salted.iter_mut().zip(&u).for_each(|(a, b)| *a ^= b);
        }
        let client_key = mac(&salted, b"Client Key");
        let stored: Vec<u8> = <Sha256 as sha2::Digest>::digest(&client_key).to_vec();
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind_input));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = mac(&stored, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        let server_sig = mac(&mac(&salted, b"Server Key"), auth_message.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={}", B64.encode(server_sig)),
        )
    }

    #[test]
    fn capa_lists_enabled_mechanisms_by_policy() {
        let mut s = with_mechanisms(&Mechanisms::ALL, false, None);
        let caps = reply(s.on_line(line("CAPA")));
        assert!(caps.contains("\r\nSASL SCRAM-SHA-256\r\n"), "{caps}");
        let mut s = with_mechanisms(&Mechanisms::ALL, true, Some(vec![1; 32]));
        let caps = reply(s.on_line(line("CAPA")));
        assert!(
            caps.contains(
                "\r\nSASL PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS OAUTHBEARER XOAUTH2\r\n"
            ),
            "{caps}"
        );
        // TLS without an exporter value (TLS 1.2): no -PLUS.
        let mut s = with_mechanisms(&["SCRAM-SHA-256-PLUS", "PLAIN"], true, None);
        assert!(reply(s.on_line(line("CAPA"))).contains("\r\nSASL PLAIN\r\n"));
        assert_eq!(
            reply(s.on_line(line("AUTH SCRAM-SHA-256-PLUS"))),
            "-ERR Unsupported authentication mechanism\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH"))),
            "+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n"
        );
        // Token mechanisms follow the plaintext policy.
        let mut s = with_mechanisms(&["OAUTHBEARER"], false, None);
        assert!(reply(s.on_line(line("AUTH OAUTHBEARER"))).starts_with("-ERR [AUTH] Plaintext"));
        let mut s = with_mechanisms(&["PLAIN"], true, None);
        assert_eq!(
            reply(s.on_line(line("AUTH SCRAM-SHA-256"))),
            "-ERR Unsupported authentication mechanism\r\n"
        );
    }

    /// Runs a SCRAM exchange to the end; returns the last action.
    fn scram_login(
        s: &mut Session,
        mech: &str,
        gs2: &str,
        cb: &[u8],
        stored: SecretOutcome,
        password: &str,
    ) -> Action {
        let bare = "n=alice,r=clientnonce123";
        assert_eq!(reply(s.on_line(line(&format!("AUTH {mech}")))), "+ \r\n");
        match s.on_line(line(&B64.encode(format!("{gs2}{bare}")))) {
            Action::LookupSecret { user, kind } => {
                assert_eq!((user.as_str(), kind), ("alice", SecretKind::ScramSha256))
            }
            other => return other,
        }
        let r = reply(s.on_secret(stored));
        if !r.starts_with("+ ") {
            return Action::Reply(r.into_bytes());
        }
        let server_first = unb64_challenge(&r);
        assert!(
            server_first.starts_with("r=clientnonce123"),
            "{server_first}"
        );
        let cbind = [gs2.as_bytes(), cb].concat();
        let (fin, expect_v) = client_final(password, bare, &server_first, &cbind);
        match s.on_line(line(&B64.encode(fin))) {
            Action::Reply(r) if r.starts_with(b"+ ") => {
                let r = String::from_utf8(r).unwrap();
                assert_eq!(unb64_challenge(&r), expect_v);
                s.on_line(line(""))
            }
            other => other,
        }
    }

    fn verifier(pw: &str) -> SecretOutcome {
        SecretOutcome::Found {
            secret: Secret::ScramSha256(Verifier::from_password(pw.as_bytes(), b"salt", 4096)),
            principal: "alice".into(),
        }
    }

    #[test]
    fn scram_sha256_login() {
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let a = scram_login(&mut s, "SCRAM-SHA-256", "n,,", b"", verifier("pw"), "pw");
        assert!(matches!(a, Action::OpenMaildrop { principal } if principal == "alice"));
        // A clear-text secret works too: the session derives a verifier.
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let plain = SecretOutcome::Found {
            secret: Secret::Plaintext("pw".into()),
            principal: "alice".into(),
        };
        let a = scram_login(&mut s, "SCRAM-SHA-256", "n,,", b"", plain, "pw");
        assert!(matches!(a, Action::OpenMaildrop { .. }));
    }

    #[test]
    fn scram_wrong_password_and_unknown_user_read_the_same() {
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let a = scram_login(&mut s, "SCRAM-SHA-256", "n,,", b"", verifier("pw"), "bad");
        assert_eq!(reply(a), "-ERR [AUTH] Authentication failed\r\n");
        assert!(s.take_auth_failure());
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let a = scram_login(
            &mut s,
            "SCRAM-SHA-256",
            "n,,",
            b"",
            SecretOutcome::Unavailable,
            "pw",
        );
        assert_eq!(reply(a), "-ERR [AUTH] Authentication failed\r\n");
        assert!(s.take_auth_failure());
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let a = scram_login(
            &mut s,
            "SCRAM-SHA-256",
            "n,,",
            b"",
            SecretOutcome::TempFail,
            "pw",
        );
        assert!(reply(a).starts_with("-ERR [SYS/TEMP]"));
        // The session is usable again afterwards.
        assert!(reply(s.on_line(line("CAPA"))).starts_with("+OK"));
    }

    #[test]
    fn scram_plus_binds_to_the_tls_exporter() {
        let cb = vec![9u8; 32];
        let mut s = with_mechanisms(
            &["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"],
            true,
            Some(cb.clone()),
        );
        let a = scram_login(
            &mut s,
            "SCRAM-SHA-256-PLUS",
            "p=tls-exporter,,",
            &cb,
            verifier("pw"),
            "pw",
        );
        assert!(matches!(a, Action::OpenMaildrop { .. }));
        // Another connection's exporter value (a relayed exchange) fails.
        let mut s = with_mechanisms(&["SCRAM-SHA-256-PLUS"], true, Some(cb));
        let a = scram_login(
            &mut s,
            "SCRAM-SHA-256-PLUS",
            "p=tls-exporter,,",
            &[1; 32],
            verifier("pw"),
            "pw",
        );
        assert_eq!(
            reply(a),
            "-ERR [AUTH] Authentication failed: channel binding: channel binding data differ\r\n"
        );
        // A client claiming the server offers no binding, when it does: a
        // downgrade, refused.
        let mut s = with_mechanisms(
            &["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"],
            true,
            Some(vec![9; 32]),
        );
        let a = scram_login(&mut s, "SCRAM-SHA-256", "y,,", b"", verifier("pw"), "pw");
        assert!(reply(a).starts_with("-ERR [AUTH] Authentication failed: channel binding"));
    }

    #[test]
    fn scram_garbage_and_cancel() {
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        assert_eq!(
            reply(s.on_line(line(&format!(
                "AUTH SCRAM-SHA-256 {}",
                B64.encode("n,,r=x")
            )))),
            "-ERR [AUTH] Authentication failed: malformed SCRAM message: no user name\r\n"
        );
        assert_eq!(reply(s.on_line(line("AUTH SCRAM-SHA-256"))), "+ \r\n");
        assert_eq!(
            reply(s.on_line(line("*"))),
            "-ERR Authentication cancelled\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH SCRAM-SHA-256 !!!"))),
            "-ERR Invalid base64 in authentication response\r\n"
        );
        assert!(
            !s.take_auth_failure(),
            "protocol errors are not failed logins"
        );
    }

    #[test]
    fn oauthbearer_and_xoauth2() {
        let mut s = with_mechanisms(&["OAUTHBEARER", "XOAUTH2"], true, None);
        let ir = B64.encode("n,a=alice@example.org,\x01host=x\x01auth=Bearer tok123\x01\x01");
        match s.on_line(line(&format!("AUTH OAUTHBEARER {ir}"))) {
            Action::Verify(r) => {
                assert_eq!(
                    (r.user.as_str(), r.mechanism, r.credential.as_str()),
                    ("alice@example.org", "OAUTHBEARER", "tok123")
                );
            }
            other => panic!("{other:?}"),
        }
        // Refused: an error challenge, a dummy response, then -ERR.
        let r = reply(s.on_auth(AuthOutcome::Deny));
        assert!(unb64_challenge(&r).contains("invalid_token"), "{r}");
        assert_eq!(
            reply(s.on_line(line("AQ=="))),
            "-ERR [AUTH] Authentication failed\r\n"
        );
        let ir = B64.encode("user=bob\x01auth=Bearer t0k\x01\x01");
        match s.on_line(line(&format!("AUTH XOAUTH2 {ir}"))) {
            Action::Verify(r) => {
                assert_eq!((r.user.as_str(), r.credential.as_str()), ("bob", "t0k"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.on_auth(AuthOutcome::Allow {
                principal: "bob".into()
            }),
            Action::OpenMaildrop { .. }
        ));
        for bad in ["user=bob\x01\x01", "n,,\x01auth=Basic x\x01\x01", "garbage"] {
            let mut s = with_mechanisms(&["OAUTHBEARER"], true, None);
            assert_eq!(
                reply(s.on_line(line(&format!("AUTH OAUTHBEARER {}", B64.encode(bad))))),
                "-ERR [AUTH] Malformed OAuth response\r\n",
                "{bad:?}"
            );
        }
    }
}
