//! End-to-end tests: the real `poplar` binary, started on free loopback
//! ports with the real wasm plugins built from `plugins/`, driven over TCP
//! by raw protocol bytes and by real POP3 clients.

mod brute_force;
mod cli;
mod clients;
mod crash;
mod delivery;
mod harness;
mod hostile_plugins;
mod languages;
mod leases;
mod manuals;
mod migration;
mod monitoring;
mod mutt;
mod operator;
mod postfix;
mod protocol;
mod proxy;
mod sandbox;
mod sasl;
mod service;
mod utf8;
