//! Maildrop leases: at most one POP3 session per maildrop (RFC 1939 §8),
//! across every node that shares the store. The storage plugin owns the
//! lease (`storage.open` takes it, `commit` is fenced by it); this module
//! is the node's side: who this node is ([`Holder`]), the leases its
//! sessions hold, one renewal call for all of them every third of the TTL,
//! and telling a session when its lease is lost so that it ends without an
//! UPDATE.
//!
//! A lease counts as lost when the storage plugin says so, or when it could
//! not be renewed and the time it was last known to be held is about to run
//! out: from then on another node may take it, so this node must not commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::plugin::StoragePlugin;
use crate::plugin::storage::Holder;

/// How long before a lease's known expiry the node stops trusting it when
/// renewals fail.
fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(2))
}

/// Who this node is, for the storage plugin.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// `server.node`: unique within a cluster.
    pub node: String,
    /// Random, new at every start of the process.
    pub incarnation: String,
}

impl NodeIdentity {
    /// The identity of this process: `node` and a fresh incarnation.
    pub fn new(node: &str) -> NodeIdentity {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        NodeIdentity {
            node: node.to_string(),
            incarnation: hex::encode(bytes),
        }
    }

    /// The holder record for one session.
    pub fn holder(&self, session: &str, peer: &str) -> Holder {
        Holder {
            node: self.node.clone(),
            incarnation: self.incarnation.clone(),
            session: session.to_string(),
            peer: peer.to_string(),
        }
    }
}

/// What a session knows of its lease.
#[derive(Debug)]
pub struct LeaseState {
    lost: AtomicBool,
    changed: Notify,
    /// Milliseconds since the registry's epoch until which the lease is
    /// known to be held.
    valid_until_ms: AtomicU64,
}

impl LeaseState {
    /// Whether the lease is gone: the session must end without an UPDATE.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Waits until the lease is lost.
    pub async fn lost(&self) {
        loop {
            let notified = self.changed.notified();
            if self.is_lost() {
                return;
            }
            notified.await;
        }
    }

    fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// The leases this node's sessions hold, renewed together.
pub struct Leases {
    identity: NodeIdentity,
    ttl: Duration,
    epoch: Instant,
    held: Mutex<HashMap<String, Held>>,
}

struct Held {
    storage: Arc<StoragePlugin>,
    state: Arc<LeaseState>,
}

/// A lease's token and state, as one renewal round sees it.
type Tracked = (String, Arc<LeaseState>);

/// A lease held by one session; dropping it releases the lease.
pub struct LeaseGuard {
    leases: Arc<Leases>,
    token: String,
    state: Arc<LeaseState>,
    storage: Arc<StoragePlugin>,
}

impl LeaseGuard {
    /// The token `storage.commit` is fenced by.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The lease's state, to learn when it is lost.
    pub fn state(&self) -> &Arc<LeaseState> {
        &self.state
    }

    /// Whether the lease is still held as far as this node knows: not lost,
    /// and last confirmed recently enough (a process stopped past its TTL
    /// finds it has not been, before any renewal runs).
    pub fn is_valid(&self) -> bool {
        !self.state.is_lost()
            && self.leases.now_ms() < self.state.valid_until_ms.load(Ordering::Acquire)
    }

    /// Releases the lease and waits until storage has it back, so that the
    /// client's next login does not find its own maildrop in use.
    pub async fn release(mut self) {
        self.leases.forget(&self.token);
        let token = std::mem::take(&mut self.token);
        if let Err(e) = self.storage.release(&token).await {
            tracing::warn!("cannot release a maildrop lease (it will expire): {e}");
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.token.is_empty() {
            return;
        }
        self.leases.forget(&self.token);
        let storage = self.storage.clone();
        let token = std::mem::take(&mut self.token);
        // Releasing is a courtesy (an unreleased lease expires), so it
        // must not hold up the end of a session.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = storage.release(&token).await {
                    tracing::warn!("cannot release a maildrop lease (it will expire): {e}");
                }
            });
        }
    }
}

impl Leases {
    pub fn new(identity: NodeIdentity, ttl: Duration) -> Arc<Leases> {
        Arc::new(Leases {
            identity,
            ttl,
            epoch: Instant::now(),
            held: Mutex::new(HashMap::new()),
        })
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The lease time asked of storage, in seconds.
    pub fn ttl_seconds(&self) -> u32 {
        u32::try_from(self.ttl.as_secs()).unwrap_or(u32::MAX).max(1)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Starts tracking a lease `storage` granted at `granted_at` (just
    /// before the `open` call).
    pub fn track(
        self: &Arc<Self>,
        storage: Arc<StoragePlugin>,
        token: String,
        granted_at: Instant,
    ) -> LeaseGuard {
        let until = granted_at.saturating_duration_since(self.epoch) + self.ttl;
        let state = Arc::new(LeaseState {
            lost: AtomicBool::new(false),
            changed: Notify::new(),
            valid_until_ms: AtomicU64::new(until.as_millis() as u64),
        });
        self.lock().insert(
            token.clone(),
            Held {
                storage: storage.clone(),
                state: state.clone(),
            },
        );
        LeaseGuard {
            leases: self.clone(),
            token,
            state,
            storage,
        }
    }

    fn forget(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many leases this node holds.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Renews every lease once: one storage call per storage plugin version
    /// in use (normally one). Returns whether every call succeeded.
    pub async fn renew_all(&self) -> bool {
        // Group the tokens by the plugin version that granted them.
        let mut groups: Vec<(Arc<StoragePlugin>, Vec<Tracked>)> = Vec::new();
        for (token, held) in self.lock().iter() {
            match groups
                .iter_mut()
                .find(|(s, _)| Arc::ptr_eq(s, &held.storage))
            {
                Some((_, list)) => list.push((token.clone(), held.state.clone())),
                None => groups.push((
                    held.storage.clone(),
                    vec![(token.clone(), held.state.clone())],
                )),
            }
        }
        let holder = self.identity.holder("", "");
        let mut all_ok = true;
        for (storage, leases) in groups {
            let started = self.now_ms();
            let tokens: Vec<String> = leases.iter().map(|(t, _)| t.clone()).collect();
            match storage.renew(&holder, &tokens, self.ttl_seconds()).await {
                Ok(lost) => {
                    let until = started + self.ttl.as_millis() as u64;
                    for (token, state) in &leases {
                        if lost.contains(token) {
                            tracing::warn!(
                                "a maildrop lease was lost (storage says so); its session ends without an UPDATE"
                            );
                            state.mark_lost();
                        } else {
                            state.valid_until_ms.fetch_max(until, Ordering::AcqRel);
                        }
                    }
                }
                Err(e) => {
                    all_ok = false;
                    tracing::warn!(leases = tokens.len(), "cannot renew maildrop leases: {e}");
                }
            }
        }
        self.expire_unconfirmed();
        all_ok
    }

    /// Marks lost every lease whose last confirmed time is (almost) over.
    fn expire_unconfirmed(&self) {
        let deadline = self.now_ms() + safety_margin(self.ttl).as_millis() as u64;
        for held in self.lock().values() {
            if !held.state.is_lost()
                && held.state.valid_until_ms.load(Ordering::Acquire) <= deadline
            {
                tracing::warn!(
                    "a maildrop lease was lost (not renewed in time); its session ends without an UPDATE"
                );
                held.state.mark_lost();
            }
        }
    }

    /// Renews the leases every third of the TTL (every second while
    /// renewals fail) for as long as the registry lives.
    pub fn spawn_renewer(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Leases> = Arc::downgrade(self);
        let period = (self.ttl / 3).max(Duration::from_millis(200));
        let retry = Duration::from_secs(1).min(period);
        tokio::spawn(async move {
            let mut wait = period;
            loop {
                tokio::time::sleep(wait).await;
                let Some(leases) = weak.upgrade() else { return };
                if leases.count() == 0 {
                    wait = period;
                    continue;
                }
                wait = if leases.renew_all().await {
                    period
                } else {
                    retry
                };
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_per_start() {
        let a = NodeIdentity::new("n1");
        let b = NodeIdentity::new("n1");
        assert_eq!(a.node, "n1");
        assert_eq!(a.incarnation.len(), 16);
        assert_ne!(a.incarnation, b.incarnation);
        let h = a.holder("s1", "192.0.2.1:5");
        assert_eq!((h.session.as_str(), h.peer.as_str()), ("s1", "192.0.2.1:5"));
    }

    #[tokio::test]
    async fn lost_wakes_waiters() {
        let state = Arc::new(LeaseState {
            lost: AtomicBool::new(false),
            changed: Notify::new(),
            valid_until_ms: AtomicU64::new(0),
        });
        let waiter = {
            let s = state.clone();
            tokio::spawn(async move { s.lost().await })
        };
        tokio::task::yield_now().await;
        assert!(!state.is_lost());
        state.mark_lost();
        waiter.await.unwrap();
        assert!(state.is_lost());
    }

    #[test]
    fn margin_is_small() {
        assert_eq!(
            safety_margin(Duration::from_secs(30)),
            Duration::from_secs(2)
        );
        assert_eq!(
            safety_margin(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
    }
}
