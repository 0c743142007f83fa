//! The network side: [`server`] binds listeners and accepts connections,
//! [`connection`] drives one client's session, [`stream`] is plain-or-TLS
//! I/O, [`tls`] loads certificates, [`proxy`] reads HAProxy PROXY protocol
//! headers.

pub mod connection;
pub mod guard;
pub mod notify;
pub mod proxy;
pub mod server;
pub mod stream;
pub mod tls;

pub use server::Server;
