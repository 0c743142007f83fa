//! The `storage` capability: typed calls into a storage plugin.

pub use super::bindings::auth::poplar::plugin::types::Mailbox;
use super::bindings::storage::StoragePlugin as StorageWorld;
pub use super::bindings::storage::exports::poplar::plugin::storage::{
    CommitReport, Entry, HeaderMatch, MailUsage, SearchCriteria, StorageError,
};
use super::message::HostMessage;
use super::pool::{Plugin, PluginError};

/// A loaded storage plugin.
pub type StoragePlugin = Plugin<StorageWorld>;

impl Plugin<StorageWorld> {
    /// Lists a mailbox.
    pub async fn list(
        &self,
        mbox: &Mailbox,
    ) -> Result<Result<Vec<Entry>, StorageError>, PluginError> {
        let mut lent = self.lend("list-messages").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_list_messages(&mut lent.store, mbox)
            .await;
        self.settle(lent, r)
    }

    /// Reads a range of a stored message.
    pub async fn read(
        &self,
        mbox: &Mailbox,
        key: &str,
        offset: u64,
        len: u32,
    ) -> Result<Result<Vec<u8>, StorageError>, PluginError> {
        let mut lent = self.lend("read").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_read(&mut lent.store, mbox, key, offset, len)
            .await;
        self.settle(lent, r)
    }

    /// Removes messages (the POP3 UPDATE state).
    pub async fn commit(
        &self,
        mbox: &Mailbox,
        keys: &[String],
    ) -> Result<Result<CommitReport, StorageError>, PluginError> {
        let mut lent = self.lend("commit").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_commit(&mut lent.store, mbox, keys)
            .await;
        self.settle(lent, r)
    }

    /// Finds the messages that match `criteria`: their keys, in listing
    /// order (operator commands; POP3 sessions do not search).
    pub async fn search(
        &self,
        mbox: &Mailbox,
        criteria: &SearchCriteria,
    ) -> Result<Result<Vec<String>, StorageError>, PluginError> {
        let mut lent = self.lend("search").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_search(&mut lent.store, mbox, criteria)
            .await;
        self.settle(lent, r)
    }

    /// Measures the whole of `user`'s mail, the inbox and every folder
    /// (`[quota]` checks, `poplar mailbox stats`).
    pub async fn usage(&self, user: &str) -> Result<Result<MailUsage, StorageError>, PluginError> {
        let mut lent = self.lend("usage").await?;
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_usage(&mut lent.store, user)
            .await;
        self.settle(lent, r)
    }

    /// Stores a new message.
    pub async fn deliver(
        &self,
        mbox: &Mailbox,
        msg: &HostMessage,
    ) -> Result<Result<String, StorageError>, PluginError> {
        let mut lent = self.lend("deliver").await?;
        let (owned, borrowed) = match lent.share(msg) {
            Ok(h) => h,
            Err(e) => return self.settle(lent, Err(e)),
        };
        let r = lent
            .world
            .poplar_plugin_storage()
            .call_deliver(&mut lent.store, mbox, borrowed)
            .await;
        lent.unshare(owned);
        self.settle(lent, r)
    }
}
