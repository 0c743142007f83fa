//! `poplar plugin check`: what a `.wasm` file is, without a configuration.
//! Compiles it, lists its imports and exports, and tells which of Poplar's
//! WIT worlds it satisfies: by export name first, then by linking it the
//! way the server does (WASI plus the world's host interfaces) and checking
//! the exports' types against the generated bindings.
//!
//! The plugin's own `validate` is not called: that needs its configuration
//! (`poplar check-config` does it).

use std::fmt::{self, Write as _};
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::plugin::state::PluginState;
use crate::plugin::{bindings, contract};

/// Every Poplar world, in the order they are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum World {
    Auth,
    Storage,
    Filter,
    TrainableFilter,
}

impl World {
    pub const ALL: [World; 4] = [
        World::Auth,
        World::Storage,
        World::Filter,
        World::TrainableFilter,
    ];

    /// The world's name in `wit/plugin.wit`.
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Auth => "auth-plugin",
            World::Storage => "storage-plugin",
            World::Filter => "filter-plugin",
            World::TrainableFilter => "trainable-filter-plugin",
        }
    }

    /// The interfaces a component must export to implement the world.
    fn exports(self) -> Vec<String> {
        let names: &[&str] = match self {
            World::Auth => &["auth"],
            World::Storage => &["storage"],
            World::Filter => &["filter"],
            World::TrainableFilter => &["filter", "trainer"],
        };
        names.iter().map(|n| contract::interface(n)).collect()
    }

    /// Links the component as the server would for this world and checks
    /// its exports' types. The error says what does not fit.
    fn link(self, engine: &Engine, component: &Component) -> wasmtime::Result<()> {
        use bindings::{auth, filter, storage, trainable};
        let mut linker = Linker::<PluginState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        let add = |l: &mut Linker<PluginState>| match self {
            World::Auth => {
                auth::AuthPlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(l, |s| s)
            }
            World::Storage => {
                storage::StoragePlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(l, |s| s)
            }
            World::Filter => {
                filter::FilterPlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(l, |s| s)
            }
            World::TrainableFilter => trainable::TrainableFilterPlugin::add_to_linker::<
                PluginState,
                HasSelf<PluginState>,
            >(l, |s| s),
        };
        add(&mut linker)?;
        let pre = linker.instantiate_pre(component)?;
        match self {
            World::Auth => drop(auth::AuthPluginPre::new(pre)?),
            World::Storage => drop(storage::StoragePluginPre::new(pre)?),
            World::Filter => drop(filter::FilterPluginPre::new(pre)?),
            World::TrainableFilter => drop(trainable::TrainableFilterPluginPre::new(pre)?),
        }
        Ok(())
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wit_name())
    }
}

/// Interfaces of Poplar's package that the host provides to plugins.
const HOST_INTERFACES: &[&str] = &["types", "host", "message", "sql", "blob"];

/// Whether the host can satisfy an import of this name (WASI, or one of
/// Poplar's host interfaces of this contract version).
pub fn host_provides(import: &str) -> bool {
    import.starts_with("wasi:")
        || HOST_INTERFACES
            .iter()
            .any(|i| contract::interface(i) == import)
}

/// Why a file could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    #[error("{0}")]
    NotAComponent(&'static str),
    #[error("not a valid component: {0}")]
    Invalid(String),
}

/// What a component is and which worlds it satisfies.
#[derive(Debug)]
pub struct Report {
    pub size: u64,
    /// SHA-256 of the file, hex: the version the server logs.
    pub sha256: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Imports outside WASI and Poplar's host interfaces.
    pub missing_imports: Vec<String>,
    /// Each world, and why the component does not satisfy it.
    pub worlds: Vec<(World, Result<(), String>)>,
}

impl Report {
    pub fn satisfies(&self, world: World) -> bool {
        self.worlds.iter().any(|(w, r)| *w == world && r.is_ok())
    }

    /// The worlds the component satisfies.
    pub fn satisfied(&self) -> Vec<World> {
        self.worlds
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(w, _)| *w)
            .collect()
    }

    /// Why the component does not satisfy `world` (None if it does).
    pub fn reason(&self, world: World) -> Option<&str> {
        self.worlds
            .iter()
            .find(|(w, _)| *w == world)
            .and_then(|(_, r)| r.as_ref().err().map(String::as_str))
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "size:    {} bytes", self.size);
        let _ = writeln!(out, "sha256:  {}", self.sha256);
        for (title, names) in [("imports", &self.imports), ("exports", &self.exports)] {
            let _ = writeln!(out, "{title} ({}):", names.len());
            for name in names {
                let note = if title == "imports" && !host_provides(name) {
                    "   (not provided by Poplar)"
                } else {
                    ""
                };
                let _ = writeln!(out, "  {name}{note}");
            }
        }
        let _ = writeln!(out, "worlds:");
        for (world, result) in &self.worlds {
            match result {
                Ok(()) => {
                    let _ = writeln!(out, "  {:<24} yes", world.wit_name());
                }
                Err(why) => {
                    let _ = writeln!(out, "  {:<24} no: {why}", world.wit_name());
                }
            }
        }
        let missing = if self.missing_imports.is_empty() {
            "none".to_string()
        } else {
            self.missing_imports.join(", ")
        };
        let _ = writeln!(out, "imports Poplar does not provide: {missing}");
        out
    }
}

/// Reads and checks a component file.
pub fn check_file(path: &Path) -> Result<Report, CheckError> {
    let bytes = std::fs::read(path).map_err(CheckError::Read)?;
    check(&bytes)
}

/// Checks a component's bytes.
pub fn check(bytes: &[u8]) -> Result<Report, CheckError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => {}
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            return Err(CheckError::NotAComponent(
                "this is a core WebAssembly module, not a component: build for \
                 wasm32-wasip2 (or wrap it with `wasm-tools component new`)",
            ));
        }
        Some([0, b'a', b's', b'm', ..]) => {
            return Err(CheckError::NotAComponent(
                "a WebAssembly binary of an unknown version or layer",
            ));
        }
        _ => {
            return Err(CheckError::NotAComponent(
                "not a WebAssembly component (the file does not start with \\0asm)",
            ));
        }
    }
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).map_err(|e| CheckError::Invalid(format!("{e:#}")))?;
    let component =
        Component::new(&engine, bytes).map_err(|e| CheckError::Invalid(format!("{e:#}")))?;
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
    let missing_imports = imports
        .iter()
        .filter(|i| !host_provides(i))
        .cloned()
        .collect();
    let worlds = World::ALL
        .iter()
        .map(|&world| {
            let wanted = world.exports();
            let absent: Vec<&str> = wanted
                .iter()
                .map(String::as_str)
                .filter(|e| !exports.iter().any(|x| x == e))
                .collect();
            let result = if let Err(why) =
                contract::check(imports.iter().chain(&exports).map(String::as_str))
            {
                Err(why)
            } else if !absent.is_empty() {
                Err(format!("does not export {}", absent.join(", ")))
            } else {
                world
                    .link(&engine, &component)
                    .map_err(|e| format!("{e:#}"))
            };
            (world, result)
        })
        .collect();
    Ok(Report {
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
        imports,
        exports,
        missing_imports,
        worlds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_components() {
        let core = check(b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(core.contains("core WebAssembly module"), "{core}");
        let garbage = check(b"hello, world").unwrap_err().to_string();
        assert!(garbage.contains("not a WebAssembly component"), "{garbage}");
        assert!(check(b"").is_err());
        let broken = check(b"\0asm\x0d\0\x01\0\xff\xff").unwrap_err();
        assert!(matches!(broken, CheckError::Invalid(_)), "{broken}");
    }

    #[test]
    fn which_imports_the_host_provides() {
        assert!(host_provides("wasi:filesystem/types@0.2.6"));
        assert!(host_provides("poplar:plugin/host@0.2.0"));
        assert!(host_provides("poplar:plugin/message@0.2.0"));
        assert!(host_provides("poplar:plugin/sql@0.2.0"));
        assert!(host_provides("poplar:plugin/blob@0.2.0"));
        assert!(!host_provides("poplar:plugin/storage@0.2.0"));
        assert!(!host_provides("poplar:plugin/host@0.1.0"));
        assert!(!host_provides("acme:net/http@1.0.0"));
    }

    /// A component that exports `poplar:plugin/auth@<version>` by name, but
    /// with one function of the wrong type; `imports` goes first.
    fn fake_auth(imports: &str) -> Vec<u8> {
        fake_auth_of(imports, contract::VERSION)
    }

    fn fake_auth_of(imports: &str, version: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(component
                {imports}
                (core module $m (func (export "f") (result i32) i32.const 0))
                (core instance $i (instantiate $m))
                (func $verify (result u32) (canon lift (core func $i "f")))
                (instance $auth (export "verify" (func $verify)))
                (export "poplar:plugin/auth@{version}" (instance $auth))
            )"#
        ))
        .unwrap()
    }

    #[test]
    fn the_right_name_is_not_enough() {
        let report = check(&fake_auth("")).unwrap();
        assert_eq!(report.exports, ["poplar:plugin/auth@0.2.0"]);
        assert!(report.imports.is_empty());
        assert!(report.satisfied().is_empty(), "{report:?}");
        let why = report.reason(World::Auth).unwrap();
        assert!(!why.contains("does not export"), "{why}");
        assert!(report.render().contains("auth-plugin              no: "));
    }

    #[test]
    fn foreign_imports_are_named() {
        let report = check(&fake_auth(
            r#"(import "acme:net/http@1.0.0" (instance (export "get" (func (param "url" string) (result string)))))
               (import "poplar:plugin/host@0.2.0" (instance))"#,
        ))
        .unwrap();
        assert_eq!(
            report.imports,
            ["acme:net/http@1.0.0", "poplar:plugin/host@0.2.0"]
        );
        assert_eq!(report.missing_imports, ["acme:net/http@1.0.0"]);
        let why = report.reason(World::Auth).unwrap();
        assert!(why.contains("acme:net/http@1.0.0"), "{why}");
        let text = report.render();
        assert!(
            text.contains("  acme:net/http@1.0.0   (not provided by Poplar)\n"),
            "{text}"
        );
        assert!(text.contains("imports Poplar does not provide: acme:net/http@1.0.0\n"));
    }

    #[test]
    fn another_contract_version_is_named() {
        let report = check(&fake_auth_of("", "0.1.0")).unwrap();
        let why = report.reason(World::Auth).unwrap();
        assert!(why.contains("poplar:plugin@0.1.0"), "{why}");
        assert!(why.contains("poplar:plugin@0.2.0"), "{why}");
    }
}
