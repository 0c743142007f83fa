//! The POP3 protocol, sans I/O: command parsing ([`command`]), line framing
//! ([`line`]), reply formatting ([`reply`]), message encoding for RETR/TOP
//! ([`encode`]) and the session state machine ([`session`]).

pub mod command;
pub mod downgrade;
pub mod encode;
pub mod lang;
pub mod line;
pub mod reply;
pub mod scram;
pub mod session;

pub use line::{Line, LineBuffer};
pub use session::{Action, Session, SessionConfig};
