//! Rust bindings for the WIT worlds in `wit/`, generated at compile time.
//! Each world gets its own module; interfaces shared between worlds
//! (`types`, `host`, `message`, `sql`, `blob`) are generated once and reused
//! with `with`.

/// The `auth-plugin` world (also generates `types`, `host` and `sql`).
pub mod auth {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "auth-plugin",
        exports: { default: async },
        imports: { "poplar:plugin/sql": async },
        with: {
            "poplar:plugin/sql.transaction": crate::plugin::sql::SqlTransaction,
        },
    });
}

/// The `storage-plugin` world (also generates `message` and `blob`).
pub mod storage {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "storage-plugin",
        exports: { default: async },
        imports: { "poplar:plugin/blob": async },
        with: {
            "poplar:plugin/types": super::auth::poplar::plugin::types,
            "poplar:plugin/host": super::auth::poplar::plugin::host,
            "poplar:plugin/sql": super::auth::poplar::plugin::sql,
            "poplar:plugin/message.message": crate::plugin::message::HostMessage,
        },
    });
}

/// The `filter-plugin` world.
pub mod filter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "filter-plugin",
        exports: { default: async },
        with: {
            "poplar:plugin/types": super::auth::poplar::plugin::types,
            "poplar:plugin/host": super::auth::poplar::plugin::host,
            "poplar:plugin/sql": super::auth::poplar::plugin::sql,
            "poplar:plugin/message": super::storage::poplar::plugin::message,
            "poplar:plugin/blob": super::storage::poplar::plugin::blob,
        },
    });
}

/// The `trainable-filter-plugin` world (used by `poplar filter train`).
pub mod trainable {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "trainable-filter-plugin",
        exports: { default: async },
        with: {
            "poplar:plugin/types": super::auth::poplar::plugin::types,
            "poplar:plugin/host": super::auth::poplar::plugin::host,
            "poplar:plugin/sql": super::auth::poplar::plugin::sql,
            "poplar:plugin/message": super::storage::poplar::plugin::message,
            "poplar:plugin/blob": super::storage::poplar::plugin::blob,
        },
    });
}
