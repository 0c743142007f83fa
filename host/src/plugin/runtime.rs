//! The one wasmtime [`Engine`] of the process: its configuration (pooling
//! allocator, epoch interruption, async), the epoch ticker thread, and the
//! on-disk cache of compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::RuntimeConfig;

/// How often the epoch advances: the granularity of call deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// Largest linear memory any plugin may be configured with.
const MAX_MEMORY: u64 = 4096 * 1024 * 1024;

/// The shared wasm runtime.
pub struct Runtime {
    pub(crate) engine: Engine,
    cache_dir: Option<PathBuf>,
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
        if let Some(dir) = &config.cache_dir
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), "compiled-plugin cache disabled: {e}");
        }
        Ok(Arc::new(Runtime {
            engine,
            cache_dir: config.cache_dir.clone(),
            instances: Arc::new(Semaphore::new(n as usize)),
            idle_per_plugin: config.idle_instances,
            stop_ticker,
        }))
    }

    /// Compiles a component file, or loads its compiled form from the cache
    /// (keyed by the file's SHA-256 and the engine's compatibility hash).
    /// Returns the component and the file's SHA-256 in hex (its version).
    pub fn compile(&self, path: &Path) -> Result<(Component, String)> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        check_is_component(&bytes).with_context(|| format!("{}", path.display()))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{:016x}.cwasm", h.finish())));
        if let Some(file) = &cached
            && file.is_file()
        {
            // SAFETY: the cache directory is written only by this program,
            // with output of `Component::serialize` for the same engine
            // configuration (the file name carries its hash).
            match unsafe { Component::deserialize_file(&self.engine, file) } {
                Ok(c) => {
                    tracing::info!(file = %path.display(), "loaded the compiled plugin from the cache");
                    return Ok((c, digest));
                }
                Err(e) => tracing::warn!(file = %file.display(), "ignoring cached plugin: {e}"),
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
        if let Some(file) = &cached
            && let Err(e) = write_atomically(file, &component.serialize()?)
        {
            tracing::warn!(file = %file.display(), "cannot cache compiled plugin: {e}");
        }
        Ok((component, digest))
    }
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

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
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
}
