//! The POP3 session state machine (RFC 1939 states AUTHORIZATION,
//! TRANSACTION and UPDATE, plus SASL exchanges from RFC 5034, and RFC
//! 6856's UTF-8 mode and reply languages).
//!
//! The session never does I/O. It takes command lines and the results of
//! work it asked for, and returns an [`Action`]: bytes to send, or a request
//! (verify a login, open the maildrop, stream a message, commit deletions,
//! start TLS) that the network layer carries out and answers through the
//! matching `on_*` method. This keeps every protocol rule testable without
//! sockets or plugins.

mod action;
mod authorization;
mod capa;
#[cfg(test)]
mod fixtures;
mod i18n;
mod sasl;
mod transaction;

pub use action::{
    Action, AuthOutcome, AuthRequest, MaildropError, Secret, SecretKind, SecretOutcome,
    StorageFailure,
};
pub use sasl::Mechanisms;
pub use transaction::{Entry, Stats};

use super::command::{Command, parse};
use super::lang::{self, Lang, Text};
use super::line::Line;
use super::reply::{self, Code, ok};
use authorization::Pending;
use sasl::Sasl;
use transaction::Maildrop;

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

/// The RFC 1939 state, as the network layer needs it (timeouts, logging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Authorization,
    Transaction,
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

/// How replies are worded: the language chosen with `LANG`, and whether
/// the client switched to UTF-8 (else the text is spelt in ASCII, as RFC
/// 2449's replies are).
#[derive(Debug, Clone, Copy)]
struct Voice {
    lang: Lang,
    utf8: bool,
}

impl Voice {
    fn say(self, text: Text) -> String {
        let said = text.render(self.lang);
        if self.utf8 {
            said.into_owned()
        } else {
            lang::ascii(&said).into_owned()
        }
    }

    fn ok(self, text: Text) -> Vec<u8> {
        ok(&self.say(text))
    }

    fn err(self, text: Text) -> Vec<u8> {
        reply::err(&self.say(text))
    }

    fn err_code(self, code: Code, text: Text) -> Vec<u8> {
        reply::err_code(code, &self.say(text))
    }

    fn multi<S: AsRef<str>>(self, text: Text, lines: impl IntoIterator<Item = S>) -> Vec<u8> {
        reply::multi(&self.say(text), lines)
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
    /// The mechanism of the login under way (`USER`, `APOP` or a SASL
    /// mechanism's name), and of the one that succeeded.
    trying: Option<&'static str>,
    logged_in_with: Option<&'static str>,
    /// The client switched to UTF-8 mode (RFC 6856 `UTF8`): messages go
    /// out as stored, reply text may be UTF-8.
    utf8: bool,
    /// The language of reply text (RFC 6856 `LANG`).
    lang: Lang,
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
            trying: None,
            logged_in_with: None,
            utf8: false,
            lang: Lang::default(),
        }
    }

    /// Records the connection's RFC 9266 `tls-exporter` value (32 bytes
    /// exported with the label `EXPORTER-Channel-Binding`), for a session
    /// that started on implicit TLS 1.3. Enables SCRAM-SHA-256-PLUS.
    pub fn set_channel_binding(&mut self, value: Option<Vec<u8>>) {
        self.channel_binding = value;
    }

    /// Whether the client switched to UTF-8 mode (RFC 6856).
    pub fn utf8(&self) -> bool {
        self.utf8
    }

    /// `-ERR [CODE] text` in the session's language, for answers the
    /// network layer gives itself (autologout, shutdown, a message that
    /// cannot be read).
    pub fn error_reply(&self, code: Option<Code>, text: Text) -> Vec<u8> {
        match code {
            Some(code) => self.err_code_text(code, text),
            None => self.err_text(text),
        }
    }

    /// The first line of a RETR answer for a message of `octets` octets
    /// (the network layer asks again when downgrading changed the size).
    pub fn retr_head(&self, octets: u64) -> Vec<u8> {
        self.ok_text(Text::Octets(octets))
    }

    /// How replies are worded now.
    fn voice(&self) -> Voice {
        Voice {
            lang: self.lang,
            utf8: self.utf8,
        }
    }

    fn say(&self, text: Text) -> String {
        self.voice().say(text)
    }

    fn ok_text(&self, text: Text) -> Vec<u8> {
        self.voice().ok(text)
    }

    fn err_text(&self, text: Text) -> Vec<u8> {
        self.voice().err(text)
    }

    fn err_code_text(&self, code: Code, text: Text) -> Vec<u8> {
        self.voice().err_code(code, text)
    }

    fn multi_text<S: AsRef<str>>(&self, text: Text, lines: impl IntoIterator<Item = S>) -> Vec<u8> {
        self.voice().multi(text, lines)
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

    /// How the session logged in: `USER`, `APOP` or the SASL mechanism.
    pub fn login_mechanism(&self) -> Option<&'static str> {
        self.logged_in_with
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
                    return Action::Close(self.err_text(Text::TooManyLongLines));
                }
                return Action::Reply(self.err_text(Text::LineTooLong));
            }
        };
        if let State::Authorization { sasl: Some(_), .. } = self.state {
            return self.sasl_response(&line);
        }
        let cmd = match parse(&line) {
            Ok(c) => c,
            Err(e) => {
                self.last_command = None;
                return Action::Reply(self.err_text(Text::Parse(e)));
            }
        };
        self.last_command = Some(cmd.name());
        match cmd {
            Command::Capa => Action::Reply(self.capa()),
            Command::Quit => self.quit(),
            Command::Lang(range) => Action::Reply(self.lang_command(range)),
            Command::Utf8 => Action::Reply(self.utf8_command()),
            _ => match self.phase() {
                Phase::Authorization => self.authorization(cmd),
                Phase::Transaction => self.transaction(cmd),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::pop3::command::ParseError;

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
    fn quit_before_login_commits_nothing() {
        let mut s = session();
        assert_eq!(reply(s.on_line(line("QUIT"))), "+OK Poplar signing off\r\n");
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
