//! Poplar: a POP3 server whose authentication, mail storage and message
//! filtering are WebAssembly components.
//!
//! Layout, following the data path:
//!
//! - [`config`]: the TOML configuration, validated once with errors that
//!   name the key at fault; [`config_doc`] makes `poplar.toml(5)` from the
//!   annotated example and holds the example and the config to each other.
//! - [`pop3`]: the protocol, sans I/O: command parser, line framing,
//!   replies, RETR/TOP encoding and the session state machine. It lives in
//!   the `poplar-proto` crate (`proto/`, with LMTP) so that fuzz targets
//!   build without wasmtime.
//! - [`net`]: listeners, plain/TLS streams, one task per connection that
//!   feeds bytes to a [`pop3::Session`] and carries out what it asks.
//! - [`plugin`]: the wasmtime runtime that loads components implementing
//!   the WIT worlds in `wit/` and lends warm instances to calls.
//! - [`deliver`]: mail arriving over LMTP or `poplar deliver`: the filter
//!   chain, its verdicts, hot reload of filters, storage.
//! - [`lease`]: this node's side of the maildrop leases the storage plugin
//!   owns: one session per maildrop (`[IN-USE]`) across nodes.
//! - [`metrics`]: Prometheus counters and the admin listener.
//! - [`service`]: running under systemd: socket activation, dropping root,
//!   reloading the whole configuration on SIGHUP.
//! - [`demo`]: the embedded default setup behind `poplar demo`.
//! - [`operator`]: operator commands: `pw hash`, `plugin check`, and
//!   `mailbox list|stats|search|expunge` through the configured plugins.

pub mod config;
pub mod config_doc;
pub mod deliver;
pub mod demo;
pub mod lease;
pub mod metrics;
pub mod net;
pub mod operator;
pub mod plugin;
pub mod service;
pub use poplar_proto::pop3;
