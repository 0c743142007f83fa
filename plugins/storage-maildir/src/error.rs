//! Why an operation failed. `lib.rs` maps these onto the WIT
//! `storage-error`; the texts reach the server's log and, for operator
//! commands, the operator, so they say what and where.

use std::io;
use std::path::Path;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A bad name, key, request or configuration value (retrying will not
    /// help).
    Invalid(String),
    /// The message or mailbox does not exist.
    NotFound(String),
    /// An I/O failure, probably passing.
    Io(String),
    /// The session's lease is no longer held: nothing was changed.
    LeaseLost(String),
    /// A delivery would take the user past its quota: nothing was stored.
    OverQuota(String),
}

impl Error {
    /// The text, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Invalid(m)
            | Error::NotFound(m)
            | Error::Io(m)
            | Error::LeaseLost(m)
            | Error::OverQuota(m) => m,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// An I/O error on `path`, as `Error::Io("<what> <path>: <error>")`.
pub fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Io(format!("{what} {}: {e}", path.display()))
}
