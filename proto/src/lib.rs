//! Poplar's protocols, sans I/O: pure code that turns bytes received into
//! actions and replies, with no sockets, no clock and no async. The server
//! (`poplar`, in `host/`) moves the bytes; the fuzz targets in `fuzz/` and
//! the unit tests here drive the same code directly.
//!
//! - [`pop3`]: command parser, line framing, replies, RETR/TOP encoding and
//!   the session state machine (RFC 1939, 2449, 2595, 3206, 5034).
//! - [`lmtp`]: the LMTP server side (RFC 2033) used for delivery.

pub mod lmtp;
pub mod pop3;
