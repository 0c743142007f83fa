//! Running as a system service: [`activation`] takes the listening sockets
//! systemd passes (socket activation), [`privileges`] drops root after the
//! sockets are bound, [`reload`] holds the running configuration and
//! replaces it on SIGHUP. Readiness notifications are in
//! [`crate::net::notify`].

pub mod activation;
pub mod privileges;
pub mod reload;
