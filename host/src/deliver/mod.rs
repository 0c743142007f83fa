//! Delivery: mail arriving over LMTP ([`server`], protocol in [`lmtp`]) or
//! from `poplar deliver` runs through the filter chain ([`chain`]) and lands
//! in storage ([`batch`]). Filters are hot-reloaded when their file changes
//! or on SIGHUP ([`chain::FilterSlot`]).
//!
//! Per recipient: the recipient's local part is resolved by the auth plugin;
//! the host computes the delivery id (a digest of the message as received,
//! the principal and the target folder) so that an MTA's retry stores one
//! message; the filters see the message as a read-only resource (later
//! filters also see the header fields earlier ones added); their verdicts
//! are combined (see [`chain`]); the message is stored with `Return-Path`,
//! `Delivered-To` and the filters' header fields prepended, its line endings
//! as `delivery.line_endings` says, and the user's `[quota]` handed to
//! storage, which checks it and stores in one atomic step. Concurrent
//! deliveries reach storage together, in one `deliver` call ([`batch`]), so
//! that it can make them durable at once.

pub mod batch;
pub mod chain;
pub use poplar_proto::lmtp;
pub mod server;

use std::sync::Arc;

use anyhow::Result;

use sha2::{Digest, Sha256};

use crate::config::{Config, QuotaConfig, StoredLineEndings};
use crate::metrics::METRICS;
use crate::plugin::auth::UserLookup;
use crate::plugin::filter::Envelope;
use crate::plugin::message::LineEndings;
use crate::plugin::storage::{Delivery, Failure, Mailbox, Quota};
use crate::plugin::{AuthPlugin, HostMessage, Runtime, StoragePlugin};
use batch::Batcher;
use chain::{Chain, ChainOutcome};
use lmtp::{RecipientLookup, Transaction};

/// What happened to the message for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored under this key, in this folder (`None`: the inbox);
    /// `duplicate` if the delivery id had been stored before (an MTA
    /// retry), so nothing new was stored.
    Stored {
        key: String,
        folder: Option<String>,
        duplicate: bool,
    },
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
    batcher: Batcher,
    pub chain: Arc<Chain>,
    pub max_message_size: u64,
    quota: QuotaConfig,
    line_endings: LineEndings,
}

/// The delivery id of a message for one recipient: SHA-256 over the
/// message as received (its digest), the principal and the target folder,
/// in hex.
pub fn delivery_id(received: &HostMessage, principal: &str, folder: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(received.digest().as_bytes());
    // Length-prefixed, so no principal and folder can run into each other.
    for part in [principal, folder.unwrap_or("")] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
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
            batcher: Batcher::new(storage),
            chain,
            max_message_size: config.delivery.max_message_size,
            quota: config.quota.clone(),
            line_endings: match config.delivery.line_endings {
                StoredLineEndings::Lf => LineEndings::Lf,
                StoredLineEndings::AsReceived => LineEndings::AsReceived,
            },
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

    /// Delivers a transaction: one outcome per recipient, in order. The
    /// filters run recipient by recipient; the messages to store are then
    /// handed to storage together.
    pub async fn deliver(&self, tx: &Transaction, client_address: &str) -> Vec<Outcome> {
        let message = HostMessage::new(tx.message.clone());
        // One snapshot of the chain for the whole transaction: a reload in
        // the middle does not mix versions within one message.
        let filters = self.chain.snapshot();
        let mut results = Vec::with_capacity(tx.recipients.len());
        for rcpt in &tx.recipients {
            let id = delivery_id(&message, &rcpt.user, rcpt.folder.as_deref());
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
            results.push((id, result));
        }
        let stores = tx
            .recipients
            .iter()
            .zip(&results)
            .map(|(rcpt, (id, result))| async move {
                match &result.outcome {
                    ChainOutcome::Store { folder, message } => {
                        let message = message
                            .with_headers(&[
                                ("Return-Path".into(), format!("<{}>", tx.mail_from)),
                                ("Delivered-To".into(), rcpt.address.clone()),
                            ])
                            .stored_form(self.line_endings);
                        self.store(&rcpt.user, folder.clone(), message, id).await
                    }
                    ChainOutcome::Discard => Outcome::Discarded,
                    ChainOutcome::Reject(why) => Outcome::Rejected(why.clone()),
                    ChainOutcome::TempFail(why) => Outcome::TempFailed(why.clone()),
                }
            });
        let outcomes = futures::future::join_all(stores).await;
        for ((rcpt, (_, result)), outcome) in tx.recipients.iter().zip(&results).zip(&outcomes) {
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
        }
        outcomes
    }

    /// Stores a message with the user's quota; a folder the storage
    /// refuses falls back to the inbox, so a filter's bad folder name never
    /// loses mail.
    async fn store(
        &self,
        user: &str,
        folder: Option<String>,
        msg: HostMessage,
        id: &str,
    ) -> Outcome {
        let limits = self.quota.limits_for(user);
        let mut delivery = Delivery {
            mbox: Mailbox {
                user: user.to_string(),
                folder,
            },
            msg,
            id: id.to_string(),
            quota: Quota {
                messages: limits.messages,
                octets: limits.bytes,
            },
            uid: None,
            received: None,
        };
        loop {
            match self.batcher.deliver(delivery.clone()).await {
                Ok(stored) => {
                    return Outcome::Stored {
                        key: stored.key,
                        folder: delivery.mbox.folder,
                        duplicate: stored.duplicate,
                    };
                }
                Err(Failure::OverQuota(why)) => {
                    tracing::info!(user, folder = ?delivery.mbox.folder, "user over quota: {why}");
                    return Outcome::OverQuota(why);
                }
                Err(Failure::Permanent(why)) if delivery.mbox.folder.is_some() => {
                    tracing::warn!(
                        user,
                        folder = ?delivery.mbox.folder,
                        "folder refused by storage ({why}); delivering to the inbox"
                    );
                    delivery.mbox.folder = None;
                }
                Err(e) if e.is_temporary() => {
                    tracing::warn!(user, "storage failed: {e}");
                    return Outcome::TempFailed("Mailbox temporarily unavailable".into());
                }
                Err(e) => {
                    tracing::error!(user, "storage refused the message: {e}");
                    return Outcome::Rejected("Mailbox unavailable".into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_depend_on_message_principal_and_folder() {
        let m = HostMessage::new(&b"Subject: a\r\n\r\nbody\r\n"[..]);
        let id = delivery_id(&m, "alice", None);
        assert_eq!(id.len(), 64);
        assert_eq!(id, delivery_id(&m.clone(), "alice", None));
        assert_ne!(id, delivery_id(&m, "bob", None));
        assert_ne!(id, delivery_id(&m, "alice", Some("Junk")));
        // Header fields a filter adds do not change what was received.
        let other = HostMessage::new(&b"Subject: b\r\n\r\nbody\r\n"[..]);
        assert_ne!(id, delivery_id(&other, "alice", None));
        // Neither the principal nor the folder can run into the other.
        assert_ne!(
            delivery_id(&m, "al", Some("ice")),
            delivery_id(&m, "alice", None)
        );
        assert_ne!(
            delivery_id(&m, "a\0b", None),
            delivery_id(&m, "a", Some("b\0"))
        );
    }

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
                folder: None,
                duplicate: false,
            }
            .lmtp_reply("a@b")
            .starts_with(b"250 2.0.0")
        );
    }
}
