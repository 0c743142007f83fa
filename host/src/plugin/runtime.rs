//! The one wasmtime [`Engine`] of the process: its configuration (pooling
//! allocator, epoch interruption, async), the epoch ticker thread, and the
//! on-disk cache of compiled components.
//!
//! A cached component is native code that runs outside the sandbox once
//! loaded, so the cache is guarded three ways: the config refuses any
//! writable plugin grant that overlaps it (`config.rs`), it is created
//! owner-only, and every artifact carries an HMAC-SHA256 tag under a key
//! made at first start (`runtime.cache_dir/key`, beside the artifacts in
//! `compiled/`); an artifact whose tag does not verify is compiled again,
//! never loaded.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;

/// How often the epoch advances: the granularity of call deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// Largest linear memory any plugin may be configured with.
const MAX_MEMORY: u64 = 4096 * 1024 * 1024;

/// Length of the cache key and of each artifact's tag.
const TAG_LEN: usize = 32;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The shared wasm runtime.
pub struct Runtime {
    pub(crate) engine: Engine,
    cache: Option<Cache>,
    /// One permit per live instance: the pooling allocator's capacity.
    pub(crate) instances: Arc<Semaphore>,
    pub(crate) idle_per_plugin: usize,
    stop_ticker: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(config: &RuntimeConfig) -> Result<Arc<Runtime>> {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances;
        pool.total_component_instances(n);
        pool.total_core_instances(n * 4);
        pool.total_memories(n * 2);
        pool.total_tables(n * 4);
        pool.total_stacks(n);
        pool.max_memories_per_component(8);
        pool.max_tables_per_component(16);
        pool.max_core_instances_per_component(64);
        pool.max_memory_size(MAX_MEMORY as usize);
        pool.max_component_instance_size(1 << 20);
        pool.max_core_instance_size(1 << 20);
        pool.table_elements(100_000);

        let mut wasm = Config::new();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        wasm.epoch_interruption(true);
        wasm.wasm_component_model(true);
        wasm.max_wasm_stack(1 << 20);
        wasm.async_stack_size(2 << 20);
        let engine = Engine::new(&wasm)
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e:#}"))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("poplar-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .context("cannot start the epoch ticker thread")?;
        }
        let cache = config
            .cache_dir
            .as_ref()
            .and_then(|dir| match Cache::open(dir) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "compiled-plugin cache disabled: {e:#}");
                    None
                }
            });
        Ok(Arc::new(Runtime {
            engine,
            cache,
            instances: Arc::new(Semaphore::new(n as usize)),
            idle_per_plugin: config.idle_instances,
            stop_ticker,
        }))
    }

    /// Compiles a component file, or loads its compiled form from the cache
    /// (keyed by the file's SHA-256 and the engine's compatibility hash).
    /// Returns the component and the file's SHA-256 in hex (its version).
    pub fn compile(&self, path: &Path) -> Result<(Component, String)> {
        self.compile_from(path).map(|(c, digest, _)| (c, digest))
    }

    fn compile_from(&self, path: &Path) -> Result<(Component, String, Origin)> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        check_is_component(&bytes).with_context(|| format!("{}", path.display()))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let name = format!("{digest}-{:016x}.cwasm", h.finish());
        if let Some(cache) = &self.cache
            && let Some(native) = cache.load(&name)
        {
            // SAFETY: `native` carries a valid tag under this server's key:
            // it is output of `Component::serialize` that this program
            // wrote under this name (which carries the engine's hash).
            match unsafe { Component::deserialize(&self.engine, &native) } {
                Ok(c) => {
                    tracing::info!(file = %path.display(), "loaded the compiled plugin from the cache");
                    return Ok((c, digest, Origin::Cache));
                }
                Err(e) => tracing::warn!(file = %name, "ignoring cached plugin: {e}"),
            }
        }
        let started = std::time::Instant::now();
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("cannot compile {}", path.display()))?;
        tracing::info!(
            file = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            "compiled plugin"
        );
        if let Some(cache) = &self.cache
            && let Err(e) = cache.store(&name, &component.serialize()?)
        {
            tracing::warn!(file = %name, "cannot cache compiled plugin: {e}");
        }
        Ok((component, digest, Origin::Compiled))
    }
}

/// Where [`Runtime::compile`] got a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Cache,
    Compiled,
}

/// The on-disk cache of compiled components: `DIR/compiled/NAME` holds
/// the serialized component followed by its tag, HMAC-SHA256 under the key
/// in `DIR/key` of the name and the component.
struct Cache {
    compiled: PathBuf,
    key: [u8; TAG_LEN],
}

impl Cache {
    /// Creates (owner-only) or opens the cache in `dir`, and its key.
    fn open(dir: &Path) -> Result<Cache> {
        owner_only_dir(dir)?;
        let compiled = dir.join("compiled");
        owner_only_dir(&compiled)?;
        let key = cache_key(&dir.join("key"))?;
        Ok(Cache { compiled, key })
    }

    fn mac(&self, name: &str, native: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(native);
        mac
    }

    /// The cached component `name`, if there is one whose tag verifies.
    fn load(&self, name: &str) -> Option<Vec<u8>> {
        let file = self.compiled.join(name);
        let mut bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %file.display(), "cannot read cached plugin: {e}");
                return None;
            }
        };
        let verified = bytes.len() > TAG_LEN && {
            let (native, tag) = bytes.split_at(bytes.len() - TAG_LEN);
            self.mac(name, native).verify_slice(tag).is_ok()
        };
        if !verified {
            tracing::warn!(
                file = %file.display(),
                "cached compiled plugin failed its integrity check (it was not written by \
                 this server, or was changed since): compiling the plugin again instead of \
                 loading it; check who can write runtime.cache_dir"
            );
            return None;
        }
        bytes.truncate(bytes.len() - TAG_LEN);
        Some(bytes)
    }

    /// Writes `native` (a serialized component) and its tag as `name`.
    fn store(&self, name: &str, native: &[u8]) -> std::io::Result<()> {
        let tag = self.mac(name, native).finalize().into_bytes();
        let file = self.compiled.join(name);
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(native)?;
        out.write_all(&tag)?;
        drop(out);
        std::fs::rename(&tmp, file)
    }
}

/// Creates `dir` readable only by its owner, or narrows an existing one to
/// that (its files are native code and the key that vouches for them).
fn owner_only_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "{} is open to other users and cannot be made owner-only",
                    dir.display()
                )
            },
        )?;
    }
    Ok(())
}

/// Reads the cache key, or makes one (at first start). Two processes
/// starting at once agree on one key: it is linked into place only if none
/// is there yet.
fn cache_key(file: &Path) -> Result<[u8; TAG_LEN]> {
    if !file.exists() {
        let mut key = [0u8; TAG_LEN];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        out.write_all(&key)?;
        out.sync_all()?;
        drop(out);
        let linked = std::fs::hard_link(&tmp, file);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", file.display())),
        }
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!(
            "{} holds {} octets, not a {TAG_LEN}-octet key: remove it (the cache is rebuilt)",
            file.display(),
            b.len()
        )
    })
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// A clear error for files that are not components.
fn check_is_component(bytes: &[u8]) -> Result<()> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => bail!(
            "this is a core wasm module, not a component: build for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
        ),
        _ => bail!("not a WebAssembly component (bad magic bytes)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_components() {
        assert!(check_is_component(b"\0asm\x0d\0\x01\0rest").is_ok());
        let core = check_is_component(b"\0asm\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(core.contains("core wasm module"), "{core}");
        assert!(check_is_component(b"hello").is_err());
    }

    fn runtime(cache: &Path) -> Arc<Runtime> {
        Runtime::new(&RuntimeConfig {
            cache_dir: Some(cache.to_path_buf()),
            max_instances: 4,
            idle_instances: 1,
        })
        .unwrap()
    }

    /// Two components told apart by their exports.
    fn components(dir: &Path) -> (PathBuf, PathBuf) {
        let plain = dir.join("plain.wasm");
        std::fs::write(&plain, wat::parse_str("(component)").unwrap()).unwrap();
        let planted = dir.join("planted.wasm");
        let text = r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func (export "planted") (canon lift (core func $i "f"))))"#;
        std::fs::write(&planted, wat::parse_str(text).unwrap()).unwrap();
        (plain, planted)
    }

    fn the_artifact(cache: &Path) -> PathBuf {
        let mut files: Vec<_> = std::fs::read_dir(cache.join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.pop().unwrap()
    }

    #[test]
    fn the_cache_is_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let (plain, _) = components(dir.path());
        let rt = runtime(&cache);
        assert_eq!(rt.compile_from(&plain).unwrap().2, Origin::Compiled);
        assert_eq!(rt.compile_from(&plain).unwrap().2, Origin::Cache);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join("compiled")), 0o700);
        assert_eq!(mode(&cache.join("key")), 0o600);
        assert_eq!(mode(&the_artifact(&cache)), 0o600);
        // A restart keeps the key, so it still trusts what it wrote.
        let key = std::fs::read(cache.join("key")).unwrap();
        drop(rt);
        let rt = runtime(&cache);
        assert_eq!(std::fs::read(cache.join("key")).unwrap(), key);
        assert_eq!(rt.compile_from(&plain).unwrap().2, Origin::Cache);
        // An existing cache open to others is narrowed.
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        drop(runtime(&cache));
        assert_eq!(mode(&cache), 0o700);
    }

    #[test]
    fn a_tampered_artifact_is_compiled_again_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, planted) = components(dir.path());
        // Native code for another component, made by an engine like ours
        // (as a plugin writing into the cache could), under the name of
        // the one the server will load.
        let other = dir.path().join("other-cache");
        let other_rt = runtime(&other);
        other_rt.compile_from(&planted).unwrap();
        let forged = std::fs::read(the_artifact(&other)).unwrap();

        let cache = dir.path().join("cache");
        let rt = runtime(&cache);
        rt.compile_from(&plain).unwrap();
        let artifact = the_artifact(&cache);
        let genuine = std::fs::read(&artifact).unwrap();
        std::fs::write(&artifact, &forged).unwrap();
        let (component, _, origin) = rt.compile_from(&plain).unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert!(
            component.get_export_index(None, "planted").is_none(),
            "the planted code was loaded"
        );
        // The artifact was rewritten, and is trusted again.
        assert_eq!(std::fs::read(&artifact).unwrap(), genuine);
        assert_eq!(rt.compile_from(&plain).unwrap().2, Origin::Cache);

        // One flipped bit, a cut tag, or an empty file: the same.
        for tamper in [
            |b: &mut Vec<u8>| b[100] ^= 1,
            |b: &mut Vec<u8>| b.truncate(b.len() - 1),
            |b: &mut Vec<u8>| b.clear(),
        ] {
            let mut bytes = genuine.clone();
            tamper(&mut bytes);
            std::fs::write(&artifact, &bytes).unwrap();
            assert_eq!(rt.compile_from(&plain).unwrap().2, Origin::Compiled);
        }
        // Without the key the artifacts are not trusted either.
        std::fs::remove_file(cache.join("key")).unwrap();
        drop(rt);
        let rt = runtime(&cache);
        assert_eq!(rt.compile_from(&plain).unwrap().2, Origin::Compiled);
    }
}
