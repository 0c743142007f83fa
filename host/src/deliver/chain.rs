//! The filter chain, its verdict rules, and hot reload.
//!
//! Rules for combining verdicts (filters run in `delivery.chain` order):
//! - `accept`: go on to the next filter.
//! - `file-into(F)`: the message will go to folder F; go on (a later
//!   `file-into` replaces the folder).
//! - `reject`, `temp-fail`, `discard`: stop the chain; that is the outcome.
//! - `add-headers`: always kept, whatever the action; each filter's fields
//!   are prepended above those of earlier filters (like trace fields), and
//!   later filters already see them.
//! - A filter that traps, times out or answers with an error (its
//!   `classify` returns `err`: it could not decide) follows its
//!   `on_failure`: `tempfail` stops the chain with a 4xx (the MTA retries,
//!   nothing is lost); `accept` goes on as if it had accepted and adds
//!   `X-Poplar-Filter-Failed: <name>`.
//!
//! Hot reload: each filter sits in a [`FilterSlot`]. A watcher polls the
//! files; when one changes (or on SIGHUP) the new file is compiled off the
//! hot path, instantiated and validated, and only then swapped in. A file
//! that fails any step is refused with a log line and the old version keeps
//! serving. A delivery takes a snapshot of the chain when it starts, so it
//! finishes on the versions it started with.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Result;

use crate::config::{Config, FailurePolicy, PluginConfig};
use crate::metrics::METRICS;
use crate::plugin::filter::{Action, Envelope};
use crate::plugin::{FilterPlugin, HostMessage, Runtime};

/// What the watcher last saw of a filter file.
type Stamp = (SystemTime, u64);

/// One filter of the chain, swappable at run time.
pub struct FilterSlot {
    pub name: String,
    pub policy: FailurePolicy,
    config: PluginConfig,
    current: RwLock<Arc<FilterPlugin>>,
    seen: Mutex<Option<Stamp>>,
    /// One reload at a time (the watcher and SIGHUP may race).
    reloading: tokio::sync::Mutex<()>,
}

impl FilterSlot {
    /// The version serving now.
    pub fn current(&self) -> Arc<FilterPlugin> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stamp(&self) -> Option<Stamp> {
        let meta = std::fs::metadata(&self.config.path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// Loads the file again and swaps it in if it is a working, different
    /// version. Returns whether a swap happened.
    pub async fn reload(&self, runtime: &Arc<Runtime>) -> bool {
        let _one_at_a_time = self.reloading.lock().await;
        let stamp = self.stamp();
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        let old = self.current();
        match FilterPlugin::load(runtime, &self.name, &self.config).await {
            Ok(new) if new.version() == old.version() => false,
            Ok(new) => {
                tracing::info!(
                    filter = %self.name,
                    old = %old.version(),
                    new = %new.version(),
                    "filter reloaded"
                );
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
                METRICS.plugin_reload(&self.name);
                true
            }
            Err(e) => {
                tracing::error!(
                    filter = %self.name,
                    serving = %old.version(),
                    "new version refused, the old one keeps serving: {e:#}"
                );
                false
            }
        }
    }

    fn path(&self) -> &PathBuf {
        &self.config.path
    }
}

/// The configured filters, in order.
pub struct Chain {
    slots: Vec<Arc<FilterSlot>>,
    runtime: Arc<Runtime>,
}

/// The filter versions one delivery uses.
pub type Snapshot = Vec<(Arc<FilterSlot>, Arc<FilterPlugin>)>;

impl Chain {
    pub async fn load(config: &Config, runtime: &Arc<Runtime>) -> Result<Chain> {
        let mut slots = Vec::new();
        for step in &config.delivery.chain {
            let plugin_config = config.filter[&step.filter].clone();
            let plugin = FilterPlugin::load(runtime, &step.filter, &plugin_config).await?;
            let slot = FilterSlot {
                name: step.filter.clone(),
                policy: step.on_failure,
                config: plugin_config,
                current: RwLock::new(plugin),
                seen: Mutex::new(None),
                reloading: tokio::sync::Mutex::new(()),
            };
            *slot.seen.lock().unwrap_or_else(|e| e.into_inner()) = slot.stamp();
            slots.push(Arc::new(slot));
        }
        Ok(Chain {
            slots,
            runtime: runtime.clone(),
        })
    }

    pub fn slots(&self) -> &[Arc<FilterSlot>] {
        &self.slots
    }

    /// The versions serving now, fixed for one delivery.
    pub fn snapshot(&self) -> Snapshot {
        self.slots
            .iter()
            .map(|s| (s.clone(), s.current()))
            .collect()
    }

    /// Reloads every filter (SIGHUP).
    pub async fn reload_all(&self) {
        for slot in &self.slots {
            slot.reload(&self.runtime).await;
        }
    }

    /// Reloads the filters whose files changed since last seen.
    pub async fn reload_changed(&self) {
        for slot in &self.slots {
            let now = slot.stamp();
            let seen = *slot.seen.lock().unwrap_or_else(|e| e.into_inner());
            if now.is_some() && now != seen {
                tracing::debug!(filter = %slot.name, path = %slot.path().display(), "filter file changed");
                slot.reload(&self.runtime).await;
            }
        }
    }

    /// Polls the filter files every `interval` until the task is dropped.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let chain = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                chain.reload_changed().await;
            }
        })
    }
}

/// How the chain ended for one recipient.
#[derive(Debug)]
pub enum ChainOutcome {
    /// Store `message` (original plus added header fields) in `folder`.
    Store {
        folder: Option<String>,
        message: HostMessage,
    },
    Discard,
    Reject(String),
    TempFail(String),
}

/// The outcome and the filter versions that produced it.
#[derive(Debug)]
pub struct ChainResult {
    pub outcome: ChainOutcome,
    /// `name@version` of each filter that ran.
    pub versions: Vec<String>,
}

/// Runs the filters of `snapshot` for one recipient.
pub async fn run(snapshot: &Snapshot, mut env: Envelope, original: &HostMessage) -> ChainResult {
    let mut message = original.clone();
    let mut versions = Vec::with_capacity(snapshot.len());
    for (slot, filter) in snapshot {
        versions.push(format!("{}@{}", slot.name, filter.version()));
        let failure = match filter.classify(&env, &message).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) => Err(format!("filter {} could not decide: {why}", slot.name)),
            Err(e) => Err(e.to_string()),
        };
        let verdict = match failure {
            Ok(v) => v,
            Err(e) => match slot.policy {
                FailurePolicy::Tempfail => {
                    tracing::warn!(filter = %slot.name, "filter failed, deferring the message: {e}");
                    return ChainResult {
                        outcome: ChainOutcome::TempFail(
                            "Filter temporarily unavailable, try again later".into(),
                        ),
                        versions,
                    };
                }
                FailurePolicy::Accept => {
                    tracing::warn!(filter = %slot.name, "filter failed, accepting (fail-open): {e}");
                    message = message
                        .with_headers(&[("X-Poplar-Filter-Failed".into(), slot.name.clone())]);
                    continue;
                }
            },
        };
        if !verdict.add_headers.is_empty() {
            let fields: Vec<(String, String)> = verdict
                .add_headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect();
            message = message.with_headers(&fields);
        }
        let stop = match verdict.action {
            Action::Accept => None,
            Action::FileInto(folder) => {
                env.target.folder = Some(folder);
                None
            }
            Action::Reject(why) => Some(ChainOutcome::Reject(why)),
            Action::TempFail(why) => Some(ChainOutcome::TempFail(why)),
            Action::Discard => Some(ChainOutcome::Discard),
        };
        if let Some(outcome) = stop {
            return ChainResult { outcome, versions };
        }
    }
    ChainResult {
        outcome: ChainOutcome::Store {
            folder: env.target.folder,
            message,
        },
        versions,
    }
}
