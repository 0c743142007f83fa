//! The plugin runtime: a thin layer over wasmtime that runs Poplar's WIT
//! worlds. [`runtime`] owns the engine and the compiled-component cache;
//! [`contract`] is the contract version it speaks; [`pool`] lends warm
//! instances to calls with deadlines and memory caps; [`state`] is what
//! each store holds (WASI grants, host imports). One module per interface
//! the host imports into plugins: [`message`] (the host `message`
//! resource), [`sql`] and [`blob`] (database and object-store
//! capabilities); and one per world the server calls: [`auth`],
//! [`storage`], [`filter`].

pub mod auth;
pub mod bindings;
pub mod blob;
pub mod contract;
pub mod filter;
pub mod message;
pub mod pool;
pub mod runtime;
pub mod sql;
pub mod state;
pub mod storage;

pub use auth::AuthPlugin;
pub use filter::FilterPlugin;
pub use message::HostMessage;
pub use pool::PluginError;
pub use runtime::Runtime;
pub use storage::StoragePlugin;
