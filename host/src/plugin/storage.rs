//! The `storage` capability: typed calls into a storage plugin, each
//! answering with one flat error type ([`Failure`]) whether the plugin
//! refused or failed.

pub use super::bindings::auth::poplar::plugin::types::{DeleAction, Mailbox};
use super::bindings::storage::StoragePlugin as StorageWorld;
use super::bindings::storage::exports::poplar::plugin::storage::Delivery as WitDelivery;
pub use super::bindings::storage::exports::poplar::plugin::storage::{
    CommitReport, CommitRequest, Delivered, Entry, HeaderMatch, Holder, LeaseInfo, MailUsage,
    Maintenance, MaintenanceReport, OpenError as WitOpenError, OpenRequest, Opened, Quota,
    SearchCriteria, StorageError,
};
use super::message::HostMessage;
use super::pool::{Plugin, PluginError};

/// A loaded storage plugin.
pub type StoragePlugin = Plugin<StorageWorld>;

/// Why a storage call did not succeed: the plugin's own answer, or the
/// plugin failing (trap, deadline, no free instance).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("temporary failure: {0}")]
    Temporary(String),
    #[error("permanent failure: {0}")]
    Permanent(String),
    #[error("the maildrop lease is no longer held: {0}")]
    LeaseLost(String),
    #[error("over quota: {0}")]
    OverQuota(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl Failure {
    /// Whether trying again later may succeed (`[SYS/TEMP]`, LMTP 4xx).
    pub fn is_temporary(&self) -> bool {
        !matches!(
            self,
            Failure::Permanent(_) | Failure::NotFound(_) | Failure::OverQuota(_)
        )
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(m) => Failure::NotFound(m),
            StorageError::Temporary(m) => Failure::Temporary(m),
            StorageError::Permanent(m) => Failure::Permanent(m),
            StorageError::LeaseLost(m) => Failure::LeaseLost(m),
            StorageError::OverQuota(m) => Failure::OverQuota(m),
        }
    }
}

/// Why `open` refused a maildrop.
#[derive(Debug, thiserror::Error)]
pub enum OpenFailure {
    #[error("in use by session {} on node {}", .0.session, .0.node)]
    InUse(Holder),
    #[error("logged in too recently: {0} s to wait")]
    TooSoon(u32),
    #[error(transparent)]
    Storage(#[from] Failure),
}

/// One message for [`Plugin::deliver`]: what the WIT `delivery` record
/// carries, with the message owned by the host.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub mbox: Mailbox,
    pub msg: HostMessage,
    pub id: String,
    pub quota: Quota,
    pub uid: Option<String>,
    pub received: Option<i64>,
}

/// Flattens a call's two layers of error into one.
fn flat<T>(r: Result<Result<T, StorageError>, PluginError>) -> Result<T, Failure> {
    Ok(r??)
}

impl Plugin<StorageWorld> {
    /// Takes the maildrop lease and lists the mailbox.
    pub async fn open(&self, mbox: &Mailbox, request: &OpenRequest) -> Result<Opened, OpenFailure> {
        let mut lent = self.lend("open").await.map_err(Failure::from)?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_open(&mut lent.store, mbox, request)
            .await;
        match self.settle(lent, r).map_err(Failure::from)? {
            Ok(opened) => Ok(opened),
            Err(WitOpenError::InUse(holder)) => Err(OpenFailure::InUse(holder)),
            Err(WitOpenError::TooSoon(secs)) => Err(OpenFailure::TooSoon(secs)),
            Err(WitOpenError::Failed(e)) => Err(OpenFailure::Storage(e.into())),
        }
    }

    /// Renews every lease in `leases`; returns the ones no longer held.
    pub async fn renew(
        &self,
        holder: &Holder,
        leases: &[String],
        ttl_seconds: u32,
    ) -> Result<Vec<String>, Failure> {
        let mut lent = self.lend("renew").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_renew(&mut lent.store, holder, leases, ttl_seconds)
            .await;
        flat(self.settle(lent, r))
    }

    /// Gives a lease back.
    pub async fn release(&self, lease: &str) -> Result<(), Failure> {
        let mut lent = self.lend("release").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_release(&mut lent.store, lease)
            .await;
        flat(self.settle(lent, r))
    }

    /// The leases held now, of one user or of everyone.
    pub async fn leases(&self, user: Option<&str>) -> Result<Vec<LeaseInfo>, Failure> {
        let mut lent = self.lend("leases").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_leases(&mut lent.store, user)
            .await;
        flat(self.settle(lent, r))
    }

    /// Ends every lease of `user`; returns how many there were.
    pub async fn break_leases(&self, user: &str) -> Result<u32, Failure> {
        let mut lent = self.lend("break-leases").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_break_leases(&mut lent.store, user)
            .await;
        flat(self.settle(lent, r))
    }

    /// Lists a mailbox without a lease (operator commands).
    pub async fn list(&self, mbox: &Mailbox) -> Result<Vec<Entry>, Failure> {
        let mut lent = self.lend("list-messages").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_list_messages(&mut lent.store, mbox)
            .await;
        flat(self.settle(lent, r))
    }

    /// Reads a range of a stored message.
    pub async fn read(
        &self,
        mbox: &Mailbox,
        key: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, Failure> {
        let mut lent = self.lend("read").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_read(&mut lent.store, mbox, key, offset, len)
            .await;
        flat(self.settle(lent, r))
    }

    /// The UPDATE state: applies the DELE action to the marked messages,
    /// fenced by the lease.
    pub async fn commit(
        &self,
        mbox: &Mailbox,
        request: &CommitRequest,
    ) -> Result<CommitReport, Failure> {
        let mut lent = self.lend("commit").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_commit(&mut lent.store, mbox, request)
            .await;
        flat(self.settle(lent, r))
    }

    /// Finds the messages that match `criteria`: their keys, in listing
    /// order.
    pub async fn search(
        &self,
        mbox: &Mailbox,
        criteria: &SearchCriteria,
    ) -> Result<Vec<String>, Failure> {
        let mut lent = self.lend("search").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_search(&mut lent.store, mbox, criteria)
            .await;
        flat(self.settle(lent, r))
    }

    /// Measures the whole of `user`'s mail, the inbox and every folder.
    pub async fn usage(&self, user: &str) -> Result<MailUsage, Failure> {
        let mut lent = self.lend("usage").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_usage(&mut lent.store, user)
            .await;
        flat(self.settle(lent, r))
    }

    /// Stores a batch of messages in one call; one answer per message, in
    /// order. `Err` is the plugin failing (trap, deadline), which leaves
    /// unknown which messages were stored: each delivery id stores at most
    /// once, so the caller may try them again.
    pub async fn deliver(
        &self,
        batch: &[Delivery],
    ) -> Result<Vec<Result<Delivered, Failure>>, PluginError> {
        let mut lent = self.lend("deliver").await?;
        let mut items = Vec::with_capacity(batch.len());
        for d in batch {
            // Handed over: the guest drops each message when done with it.
            match lent.store.data_mut().table.push(d.msg.clone()) {
                Ok(msg) => items.push(WitDelivery {
                    mbox: d.mbox.clone(),
                    msg,
                    id: d.id.clone(),
                    quota: d.quota,
                    uid: d.uid.clone(),
                    received: d.received,
                }),
                Err(e) => return self.settle(lent, Err(e.into())),
            }
        }
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_deliver(&mut lent.store, &items)
            .await;
        let answers = self.settle(lent, r)?;
        if answers.len() != batch.len() {
            tracing::error!(
                plugin = %self.name(),
                given = batch.len(),
                answered = answers.len(),
                "storage plugin answered a delivery batch with the wrong number of results"
            );
            return Ok(batch
                .iter()
                .map(|_| Err(Failure::Temporary("bad answer from storage".into())))
                .collect());
        }
        Ok(answers
            .into_iter()
            .map(|a| a.map_err(Failure::from))
            .collect())
    }

    /// Principals that have mail, after `after`, at most `limit`.
    pub async fn users(&self, after: Option<&str>, limit: u32) -> Result<Vec<String>, Failure> {
        let mut lent = self.lend("users").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_users(&mut lent.store, after, limit)
            .await;
        flat(self.settle(lent, r))
    }

    /// The folders of a user.
    pub async fn folders(&self, user: &str) -> Result<Vec<String>, Failure> {
        let mut lent = self.lend("folders").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_folders(&mut lent.store, user)
            .await;
        flat(self.settle(lent, r))
    }

    /// Runs a maintenance task.
    pub async fn maintain(&self, task: &Maintenance) -> Result<MaintenanceReport, Failure> {
        let mut lent = self.lend("maintain").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_maintain(&mut lent.store, *task)
            .await;
        flat(self.settle(lent, r))
    }
}
