//! The plugin runtime: a thin layer over wasmtime that runs Poplar's WIT
//! worlds. [`runtime`] owns the engine and the compiled-component cache;
//! [`pool`] lends warm instances to calls with deadlines and memory caps;
//! [`state`] is what each store holds (WASI grants, host imports);
//! [`message`] is the host `message` resource; [`auth`] and [`storage`] are
//! the typed calls the server makes.

pub mod auth;
pub mod bindings;
pub mod filter;
pub mod message;
pub mod pool;
pub mod runtime;
pub mod state;
pub mod storage;

pub use auth::AuthPlugin;
pub use filter::FilterPlugin;
pub use message::HostMessage;
pub use pool::PluginError;
pub use runtime::Runtime;
pub use storage::StoragePlugin;
