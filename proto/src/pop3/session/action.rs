//! What the session asks of the network layer ([`Action`]), and the
//! answers it takes back: login decisions, stored secrets, maildrop and
//! commit results.

use crate::pop3::encode::MessageEncoder;
use crate::pop3::scram::Verifier;

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
    /// Ask the auth plugin, then call
    /// [`Session::on_auth`](super::Session::on_auth).
    Verify(AuthRequest),
    /// Ask the auth plugin for the user's stored secret, then call
    /// [`Session::on_secret`](super::Session::on_secret).
    LookupSecret { user: String, kind: SecretKind },
    /// Lock the maildrop and list it, then call
    /// [`Session::on_maildrop`](super::Session::on_maildrop).
    OpenMaildrop { principal: String },
    /// Send `head`, then the message `key` through `encoder`. An encoder
    /// that downgrades (a client not in UTF-8 mode, RFC 6856) writes
    /// nothing until its size is settled; if it changed the size of a RETR
    /// answer (`octets` is the listing's size), send
    /// [`Session::retr_head`](super::Session::retr_head) of the new size
    /// instead of `head`.
    SendMessage {
        head: Vec<u8>,
        octets: Option<u64>,
        key: String,
        stored_size: u64,
        encoder: MessageEncoder,
    },
    /// Send the reply, discard buffered input, start TLS, then call
    /// [`Session::on_tls_started`](super::Session::on_tls_started).
    StartTls(Vec<u8>),
    /// The UPDATE state: remove these messages, then call
    /// [`Session::on_commit`](super::Session::on_commit), send its reply
    /// and close.
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
