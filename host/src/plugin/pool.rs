//! A loaded plugin version and its warm instances.
//!
//! Calls are stateless, so any instance can serve any call: a call borrows
//! an idle instance (or instantiates one from the `InstancePre`), runs with
//! a deadline and a memory cap, and gives the instance back. An instance
//! whose call trapped, timed out or hit a limit is dropped, never reused.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::{HasSelf, InstancePre, Linker, Resource};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings;
use super::contract;
use super::message::HostMessage;
use super::runtime::Runtime;
use super::state::{PluginInfo, PluginState};
use crate::config::PluginConfig;
use crate::metrics::{METRICS, PluginMetrics};

/// How long a call waits for a free instance slot before giving up.
const SLOT_WAIT: Duration = Duration::from_secs(10);

/// Why a plugin call failed. The client sees `[SYS/TEMP]`; the operator
/// sees this text in the log.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin} exceeded its {timeout_ms} ms deadline")]
    Timeout { plugin: String, timeout_ms: u64 },
    #[error("plugin {plugin}: no free instance slot within {}s", SLOT_WAIT.as_secs())]
    Busy { plugin: String },
}

/// A WIT world the host can instantiate.
pub trait World: Sized + Send + 'static {
    /// The world's name in `wit/`, for error messages.
    const WIT_NAME: &'static str;
    type Pre: Send + Sync + 'static;
    /// Calls the world's `validate` export.
    fn validate(
        &self,
        store: &mut Store<PluginState>,
    ) -> impl Future<Output = wasmtime::Result<Result<(), String>>> + Send;
    fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()>;
    fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<PluginState>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;
}

macro_rules! world {
    ($ty:ty, $pre:ty, $name:literal, $iface:ident) => {
        impl World for $ty {
            const WIT_NAME: &'static str = $name;
            type Pre = $pre;
            async fn validate(
                &self,
                store: &mut Store<PluginState>,
            ) -> wasmtime::Result<Result<(), String>> {
                self.$iface().call_validate(store).await
            }
            fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
                wasmtime_wasi::p2::add_to_linker_async(linker)?;
                <$ty>::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
            }
            fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre> {
                <$pre>::new(pre)
            }
            async fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<PluginState>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate_async(store).await
            }
        }
    };
}

world!(
    bindings::auth::AuthPlugin,
    bindings::auth::AuthPluginPre<PluginState>,
    "auth-plugin",
    poplar_plugin_auth
);
world!(
    bindings::storage::StoragePlugin,
    bindings::storage::StoragePluginPre<PluginState>,
    "storage-plugin",
    poplar_plugin_storage
);
world!(
    bindings::trainable::TrainableFilterPlugin,
    bindings::trainable::TrainableFilterPluginPre<PluginState>,
    "trainable-filter-plugin",
    poplar_plugin_filter
);
world!(
    bindings::filter::FilterPlugin,
    bindings::filter::FilterPluginPre<PluginState>,
    "filter-plugin",
    poplar_plugin_filter
);

/// A warm instance, lent to one call at a time.
pub struct Lent<W> {
    pub store: Store<PluginState>,
    pub world: W,
    _slot: OwnedSemaphorePermit,
    /// The plugin's own concurrency permit, held during a call.
    call_permit: Option<OwnedSemaphorePermit>,
    /// The call under way, for the duration metric.
    call: (&'static str, Instant),
}

impl<W> Lent<W> {
    /// Lends `msg` to the guest for one call: returns the borrow handle to
    /// pass, and the owned handle to give to [`Lent::unshare`] afterwards.
    pub fn share(
        &mut self,
        msg: &HostMessage,
    ) -> wasmtime::Result<(Resource<HostMessage>, Resource<HostMessage>)> {
        let owned = self.store.data_mut().table.push(msg.clone())?;
        let borrowed = Resource::new_borrow(owned.rep());
        Ok((owned, borrowed))
    }

    /// Takes back a message lent with [`Lent::share`].
    pub fn unshare(&mut self, owned: Resource<HostMessage>) {
        let _ = self.store.data_mut().table.delete(owned);
    }
}

/// One loaded version of a plugin.
pub struct Plugin<W: World> {
    info: Arc<PluginInfo>,
    runtime: Arc<Runtime>,
    pre: W::Pre,
    idle: Mutex<Vec<Lent<W>>>,
    /// `max_concurrent_calls`, if the plugin has its own cap.
    calls: Option<Arc<tokio::sync::Semaphore>>,
    /// The first 12 hex digits of the component file's SHA-256.
    version: String,
    /// This plugin's counters (shared with its other versions).
    metrics: Arc<PluginMetrics>,
}

impl<W: World> Plugin<W> {
    /// Compiles (or loads from cache) and links the component, and
    /// instantiates it once to check that it works.
    pub async fn load(
        runtime: &Arc<Runtime>,
        name: &str,
        config: &PluginConfig,
    ) -> Result<Arc<Self>> {
        let info = Arc::new(PluginInfo::new(name, config.clone()));
        // Compiling takes long for big guests: keep it off the async threads.
        let (component, digest) = {
            let runtime = runtime.clone();
            let path = config.path.clone();
            tokio::task::spawn_blocking(move || runtime.compile(&path))
                .await
                .context("compiler task failed")?
                .with_context(|| format!("plugin {name}"))?
        };
        if let Some(pin) = &config.sha256
            && !pin.eq_ignore_ascii_case(&digest)
        {
            anyhow::bail!(
                "plugin {name}: {} has SHA-256 {digest}, but the config pins {pin}; \
                 refusing to load it",
                config.path.display()
            );
        }
        {
            let ty = component.component_type();
            let engine = &runtime.engine;
            let names = ty
                .imports(engine)
                .map(|(n, _)| n)
                .chain(ty.exports(engine).map(|(n, _)| n));
            contract::check(names).map_err(|why| {
                anyhow::anyhow!(
                    "plugin {name} ({}) is refused: {why}",
                    config.path.display()
                )
            })?;
        }
        let mut linker = Linker::new(&runtime.engine);
        W::add_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!(
                "plugin {name} ({}) needs an import the host does not provide \
                 (is it built for the `{}` world of wit/plugin.wit?): {e}",
                config.path.display(),
                W::WIT_NAME
            )
        })?;
        let pre = W::pre(pre).map_err(|e| {
            anyhow::anyhow!(
                "plugin {name} ({}) does not implement the world {}: {e}",
                config.path.display(),
                W::WIT_NAME
            )
        })?;
        let plugin: Arc<Self> = Arc::new(Plugin {
            info,
            runtime: runtime.clone(),
            pre,
            idle: Mutex::new(Vec::new()),
            calls: config
                .max_concurrent_calls
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize))),
            version: digest[..12].to_string(),
            metrics: METRICS.plugin(name),
        });
        let mut first = plugin
            .lend("validate")
            .await
            .map_err(|e| anyhow::anyhow!("plugin {name} failed to start: {e}"))?;
        let verdict = first.world.validate(&mut first.store).await;
        match plugin.settle(first, verdict) {
            Ok(Ok(())) => Ok(plugin),
            Ok(Err(problem)) => Err(anyhow::anyhow!(
                "plugin {name} ({}) refused its configuration: {problem}",
                config.path.display()
            )),
            Err(e) => Err(anyhow::anyhow!("plugin {name} failed to start: {e}")),
        }
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Which build of the plugin this is (a prefix of the file's SHA-256).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Takes an idle instance, or makes a new one, for one call of
    /// `operation` (a WIT function name, for metrics).
    pub async fn lend(&self, operation: &'static str) -> Result<Lent<W>, PluginError> {
        let started = Instant::now();
        let call_permit = match &self.calls {
            Some(calls) => Some(
                tokio::time::timeout(SLOT_WAIT, calls.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .ok_or_else(|| PluginError::Busy {
                        plugin: self.info.name.clone(),
                    })?,
            ),
            None => None,
        };
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut lent = match idle {
            Some(l) => l,
            None => self.instantiate(operation).await?,
        };
        lent.call = (operation, started);
        lent.call_permit = call_permit;
        self.arm(&mut lent.store);
        Ok(lent)
    }

    /// Starts a call's clock: the deadline, and the per-call log budget.
    fn arm(&self, store: &mut Store<PluginState>) {
        let state = store.data_mut();
        state.deadline = Instant::now() + Duration::from_millis(self.info.config.timeout_ms);
        state.reset_log_budget();
        store.set_epoch_deadline(1);
    }

    async fn instantiate(&self, operation: &'static str) -> Result<Lent<W>, PluginError> {
        let slot = tokio::time::timeout(SLOT_WAIT, self.runtime.instances.clone().acquire_owned())
            .await
            .ok()
            .and_then(|r| r.ok())
            .ok_or_else(|| PluginError::Busy {
                plugin: self.info.name.clone(),
            })?;
        let state = PluginState::new(self.info.clone()).map_err(|e| self.trap(e.to_string()))?;
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        // Checked at every epoch tick: wall-clock time, so time the guest
        // spends in host calls (logging, reading) counts too.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                return Err(Trap::Interrupt.into());
            }
            // Let other tasks run on this thread between ticks.
            Ok(UpdateDeadline::Yield(1))
        });
        self.arm(&mut store);
        let world = W::instantiate(&self.pre, &mut store)
            .await
            .map_err(|e| self.failure(&store, e))?;
        Ok(Lent {
            store,
            world,
            _slot: slot,
            call_permit: None,
            call: (operation, Instant::now()),
        })
    }

    fn give_back(&self, mut lent: Lent<W>) {
        lent.call_permit = None;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.runtime.idle_per_plugin {
            idle.push(lent);
        }
    }

    /// Ends a call: a healthy instance goes back to the idle list, a failed
    /// one is dropped and the failure logged and counted.
    pub fn settle<T>(&self, lent: Lent<W>, result: wasmtime::Result<T>) -> Result<T, PluginError> {
        let (operation, started) = lent.call;
        self.metrics.call(operation, started.elapsed());
        match result {
            Ok(v) => {
                self.give_back(lent);
                Ok(v)
            }
            Err(e) => Err(self.failure(&lent.store, e)),
        }
    }

    fn failure(&self, store: &Store<PluginState>, e: wasmtime::Error) -> PluginError {
        let name = self.info.name.clone();
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            self.metrics.timeout();
            let err = PluginError::Timeout {
                plugin: name,
                timeout_ms: self.info.config.timeout_ms,
            };
            tracing::error!(plugin = %self.info.name, version = %self.version, "{err}");
            return err;
        }
        let guest = store.data().stderr.tail();
        let message = if guest.is_empty() {
            format!("{e:#}")
        } else {
            format!("{e:#}; guest said: {guest}")
        };
        self.trap(message)
    }

    fn trap(&self, message: String) -> PluginError {
        self.metrics.trap();
        let err = PluginError::Trap {
            plugin: self.info.name.clone(),
            message,
        };
        tracing::error!(plugin = %self.info.name, version = %self.version, "{err}");
        err
    }
}
