//! Delivery: mail arriving over LMTP ([`server`], protocol in [`lmtp`]) or
//! from `poplar deliver` runs through the filter chain ([`chain`]) and lands
//! in storage. Filters are hot-reloaded when their file changes or on
//! SIGHUP ([`chain::FilterSlot`]).
//!
//! Per recipient: the recipient's local part is resolved by the auth plugin;
//! the filters see the message as a read-only resource (later filters also
//! see the header fields earlier ones added); their verdicts are combined
//! (see [`chain`]); the user's `[quota]` is checked against the storage
//! plugin's `usage` of all their mail (inbox and folders); the message is
//! stored with `Return-Path`, `Delivered-To` and the filters' header fields
//! prepended.

pub mod chain;
pub use poplar_proto::lmtp;
pub mod server;

use std::sync::Arc;

use anyhow::Result;

use crate::config::{Config, QuotaConfig};
use crate::metrics::METRICS;
use crate::plugin::auth::UserLookup;
use crate::plugin::filter::Envelope;
use crate::plugin::storage::{Mailbox, StorageError};
use crate::plugin::{AuthPlugin, HostMessage, Runtime, StoragePlugin};
use chain::{Chain, ChainOutcome};
use lmtp::{RecipientLookup, Transaction};

/// What happened to the message for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored under this key, in this folder (`None`: the inbox).
    Stored { key: String, folder: Option<String> },
    /// A filter said to drop it; it was accepted and not stored.
    Discarded,
    /// Refused for good (LMTP 5xx).
    Rejected(String),
    /// Refused for good because the user's mail (inbox and folders
    /// together) is at its `[quota]` (LMTP `552 5.2.2`); the text says which
    /// limit, for the log only.
    OverQuota(String),
    /// Not stored now; the MTA should retry (LMTP 4xx).
    TempFailed(String),
}

impl Outcome {
    /// The LMTP reply for this recipient.
    pub fn lmtp_reply(&self, address: &str) -> Vec<u8> {
        let line = match self {
            Outcome::Stored { .. } => format!("250 2.0.0 <{address}> Saved"),
            Outcome::Discarded => format!("250 2.0.0 <{address}> Accepted and discarded"),
            Outcome::Rejected(why) => format!("550 5.7.1 <{address}> {}", one_line(why)),
            // RFC 3463 5.2.2: mailbox full. The sender learns no numbers.
            Outcome::OverQuota(_) => format!("552 5.2.2 <{address}> Mailbox full"),
            Outcome::TempFailed(why) => format!("451 4.3.0 <{address}> {}", one_line(why)),
        };
        format!("{line}\r\n").into_bytes()
    }
}

/// Text from a plugin made safe for one reply line.
fn one_line(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if clean.trim().is_empty() {
        "Refused".into()
    } else {
        clean
    }
}

/// Everything delivery needs; shared by the LMTP listener and the CLI.
pub struct Deliverer {
    auth: Arc<AuthPlugin>,
    storage: Arc<StoragePlugin>,
    pub chain: Arc<Chain>,
    pub max_message_size: u64,
    quota: QuotaConfig,
}

impl Deliverer {
    /// Loads the configured filters (auth and storage are shared with the
    /// POP3 side).
    pub async fn new(
        config: &Config,
        runtime: &Arc<Runtime>,
        auth: Arc<AuthPlugin>,
        storage: Arc<StoragePlugin>,
    ) -> Result<Arc<Deliverer>> {
        let chain = Arc::new(Chain::load(config, runtime).await?);
        Ok(Deliverer::with_chain(config, auth, storage, chain))
    }

    /// A delivery path over a chain already loaded (a configuration reload
    /// whose filters did not change keeps its chain).
    pub fn with_chain(
        config: &Config,
        auth: Arc<AuthPlugin>,
        storage: Arc<StoragePlugin>,
        chain: Arc<Chain>,
    ) -> Arc<Deliverer> {
        Arc::new(Deliverer {
            auth,
            storage,
            chain,
            max_message_size: config.delivery.max_message_size,
            quota: config.quota.clone(),
        })
    }

    /// Resolves a recipient's local part to a principal.
    pub async fn resolve(&self, local: &str) -> RecipientLookup {
        match self.auth.resolve_user(local).await {
            Ok(UserLookup::Found(user)) => RecipientLookup::Found(user),
            Ok(UserLookup::Unknown) => RecipientLookup::Unknown,
            Ok(UserLookup::TempFail(why)) => {
                tracing::warn!(local = %local.escape_debug(), "recipient lookup failed: {why}");
                RecipientLookup::TempFail
            }
            Err(_) => RecipientLookup::TempFail,
        }
    }

    /// Delivers a transaction: one outcome per recipient, in order.
    pub async fn deliver(&self, tx: &Transaction, client_address: &str) -> Vec<Outcome> {
        let message = HostMessage::new(tx.message.clone());
        // One snapshot of the chain for the whole transaction: a reload in
        // the middle does not mix versions within one message.
        let filters = self.chain.snapshot();
        let mut outcomes = Vec::with_capacity(tx.recipients.len());
        for rcpt in &tx.recipients {
            let env = Envelope {
                mail_from: tx.mail_from.clone(),
                rcpt_to: rcpt.address.clone(),
                target: Mailbox {
                    user: rcpt.user.clone(),
                    folder: rcpt.folder.clone(),
                },
                client_address: client_address.to_string(),
            };
            let result = chain::run(&filters, env, &message).await;
            let outcome = match result.outcome {
                ChainOutcome::Store { folder, message } => {
                    let message = message.with_headers(&[
                        ("Return-Path".into(), format!("<{}>", tx.mail_from)),
                        ("Delivered-To".into(), rcpt.address.clone()),
                    ]);
                    self.store(&rcpt.user, folder, &message).await
                }
                ChainOutcome::Discard => Outcome::Discarded,
                ChainOutcome::Reject(why) => Outcome::Rejected(why),
                ChainOutcome::TempFail(why) => Outcome::TempFailed(why),
            };
            METRICS.delivery(match outcome {
                Outcome::Stored { .. } => "stored",
                Outcome::Discarded => "discarded",
                Outcome::Rejected(_) => "rejected",
                Outcome::OverQuota(_) => "over-quota",
                Outcome::TempFailed(_) => "tempfailed",
            });
            tracing::info!(
                from = %tx.mail_from.escape_debug(),
                to = %rcpt.address.escape_debug(),
                user = %rcpt.user,
                size = tx.message.len(),
                filters = %result.versions.join(","),
                outcome = ?outcome,
                "delivery"
            );
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Stores a message; a folder the storage refuses falls back to the
    /// inbox, so a filter's bad folder name never loses mail.
    async fn store(&self, user: &str, folder: Option<String>, msg: &HostMessage) -> Outcome {
        let mut mailbox = Mailbox {
            user: user.to_string(),
            folder,
        };
        loop {
            if let Some(refused) = self.check_quota(&mailbox, msg.size()).await {
                return refused;
            }
            match self.storage.deliver(&mailbox, msg).await {
                Ok(Ok(key)) => {
                    return Outcome::Stored {
                        key,
                        folder: mailbox.folder,
                    };
                }
                Ok(Err(StorageError::Permanent(why))) if mailbox.folder.is_some() => {
                    tracing::warn!(
                        user,
                        folder = ?mailbox.folder,
                        "folder refused by storage ({why}); delivering to the inbox"
                    );
                    mailbox.folder = None;
                }
                Ok(Err(StorageError::Permanent(why) | StorageError::NotFound(why))) => {
                    tracing::error!(user, "storage refused the message: {why}");
                    return Outcome::Rejected("Mailbox unavailable".into());
                }
                Ok(Err(StorageError::Temporary(why))) => {
                    tracing::warn!(user, "storage failed: {why}");
                    return Outcome::TempFailed("Mailbox temporarily unavailable".into());
                }
                Err(_) => return Outcome::TempFailed("Mailbox temporarily unavailable".into()),
            }
        }
    }

    /// Checks the `[quota]` of `mailbox`'s user before a message of
    /// `incoming` octets is stored into it: `Some` outcome if it must not
    /// be. What counts is all the user's mail, the inbox and every folder
    /// (the storage plugin's `usage`), so `user+anything@` cannot get round
    /// it. A count that fails for now tempfails the message (the MTA
    /// retries) rather than let it past the limit; a permanent failure is
    /// left to the delivery itself to report.
    async fn check_quota(&self, mailbox: &Mailbox, incoming: u64) -> Option<Outcome> {
        let limits = self.quota.limits_for(&mailbox.user);
        if limits.is_unlimited() {
            return None;
        }
        let busy = || {
            Some(Outcome::TempFailed(
                "Mailbox temporarily unavailable".into(),
            ))
        };
        let usage = match self.storage.usage(&mailbox.user).await {
            Ok(Ok(usage)) => usage,
            Ok(Err(StorageError::Temporary(why))) => {
                tracing::warn!(user = %mailbox.user, "quota check: usage failed: {why}");
                return busy();
            }
            Ok(Err(StorageError::Permanent(_) | StorageError::NotFound(_))) => return None,
            Err(_) => return busy(),
        };
        let why = limits.refusal(usage.messages, usage.octets, incoming)?;
        tracing::info!(
            user = %mailbox.user,
            folder = ?mailbox.folder,
            "user over quota: {why}"
        );
        Some(Outcome::OverQuota(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lmtp_replies_are_single_clean_lines() {
        assert_eq!(
            Outcome::Rejected("bad\r\nInjected: x".into()).lmtp_reply("a@b"),
            b"550 5.7.1 <a@b> bad  Injected: x\r\n"
        );
        assert_eq!(
            Outcome::TempFailed(String::new()).lmtp_reply("a@b"),
            b"451 4.3.0 <a@b> Refused\r\n"
        );
        assert_eq!(
            Outcome::OverQuota("3 of 3 messages".into()).lmtp_reply("a@b"),
            b"552 5.2.2 <a@b> Mailbox full\r\n"
        );
        assert!(
            Outcome::Stored {
                key: "k".into(),
                folder: None
            }
            .lmtp_reply("a@b")
            .starts_with(b"250 2.0.0")
        );
    }
}
