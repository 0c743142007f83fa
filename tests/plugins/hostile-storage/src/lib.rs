//! A storage plugin that misbehaves on request, for testing how the host
//! contains a broken or hostile plugin. Mail is served from memory: every
//! mailbox holds the same two messages, compiled in. What `open` and
//! `list-messages` do depends on the mailbox's user:
//!
//! - `bad-uid`: lists an entry whose uid contains a space and one whose
//!   uid is 200 characters long (RFC 1939 allows 1-70 in 0x21..0x7E).
//! - `dup-uid`: lists two entries with the same uid.
//! - `huge-size`: lists an entry that claims a size of `u64::MAX`.
//! - `panic`: panics (a trap, with a message on stderr).
//! - `loop`: spins forever (the host's deadline must stop it).
//! - `short-read`: lists the messages with a stored size larger than what
//!   `read` returns: `read` gives the real bytes, then an empty list.
//! - `in-use`: `open` says another node holds the maildrop.
//! - `lost-lease`: `open` succeeds, but `renew` reports the lease lost and
//!   `commit` refuses with `lease-lost`.
//! - anyone else: the two messages, honestly.
//!
//! Leases are not kept: `open` grants every other user a lease at once
//! (token `hostile:<user>`), `release` succeeds, `leases` is empty and
//! `break-leases` breaks none. `commit` succeeds without doing anything.
//! `deliver` panics for `panic` and spins for `loop` (the whole batch with
//! it); otherwise it stores nothing but checks each message against the
//! quota it carries, counting the two messages as the user's mail
//! (`over-quota` when it would not fit), and answers with the key `m3`.
//! `search` panics for `panic`, spins for `loop`, and otherwise matches the
//! two messages naively (case-insensitive substrings of the whole text;
//! dates ignored). `usage` panics for `panic`, spins for `loop`, and
//! otherwise counts the two messages. `users` and `folders` are empty and
//! `maintain` has nothing to do.

wit_bindgen::generate!({ path: "../../../wit", world: "storage-plugin" });

use exports::poplar::plugin::storage::{
    CommitReport, CommitRequest, Delivered, Delivery, Entry, Guest, Holder, LeaseInfo, MailUsage,
    Mailbox, Maintenance, MaintenanceReport, OpenError, OpenRequest, Opened, SearchCriteria,
    StorageError,
};

/// The mailbox every user gets: (key, uid, content).
const MESSAGES: [(&str, &str, &[u8]); 2] = [
    (
        "m1",
        "uid-one",
        b"Subject: one\r\nFrom: a@example.org\r\n\r\nThe first message.\r\n",
    ),
    (
        "m2",
        "uid-two",
        b"Subject: two\r\nFrom: b@example.org\r\n\r\nThe second message.\r\n",
    ),
];

/// How many octets a `short-read` listing claims beyond the real size.
const SHORT_BY: u64 = 1000;

struct Plugin;

fn honest() -> Vec<Entry> {
    MESSAGES
        .iter()
        .map(|(key, uid, content)| Entry {
            key: (*key).into(),
            size: content.len() as u64,
            stored_size: content.len() as u64,
            uid: (*uid).into(),
            received: 1_700_000_000,
        })
        .collect()
}

/// The listing of `user`'s mailbox, misbehaving as the user asks.
fn listing(user: &str) -> Vec<Entry> {
    let mut entries = honest();
    match user {
        "bad-uid" => {
            entries[0].uid = "has space".into();
            entries[1].uid = "u".repeat(200);
        }
        "dup-uid" => entries[1].uid = entries[0].uid.clone(),
        "huge-size" => entries[1].size = u64::MAX,
        "panic" | "loop" => misbehave(user),
        "short-read" => {
            for e in &mut entries {
                e.size += SHORT_BY;
                e.stored_size += SHORT_BY;
            }
        }
        _ => {}
    }
    entries
}

/// The two messages: (count, octets).
fn stored_usage() -> (u64, u64) {
    let octets = MESSAGES.iter().map(|(_, _, c)| c.len() as u64).sum();
    (MESSAGES.len() as u64, octets)
}

const LOST: &str = "hostile:lost-lease";

/// Panics for the user `panic`, spins forever for `loop`.
fn misbehave(user: &str) {
    match user {
        "panic" => panic!("hostile storage panicked on purpose"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        _ => {}
    }
}

impl Guest for Plugin {
    fn validate() -> Result<(), String> {
        Ok(())
    }

    fn open(mbox: Mailbox, _request: OpenRequest) -> Result<Opened, OpenError> {
        if mbox.user == "in-use" {
            return Err(OpenError::InUse(Holder {
                node: "elsewhere".into(),
                incarnation: "1".into(),
                session: "s1".into(),
                peer: "192.0.2.1:1100".into(),
            }));
        }
        let entries = listing(&mbox.user);
        Ok(Opened {
            lease: format!("hostile:{}", mbox.user),
            entries,
            last_login: None,
        })
    }

    fn renew(
        _holder: Holder,
        leases: Vec<String>,
        _ttl_seconds: u32,
    ) -> Result<Vec<String>, StorageError> {
        Ok(leases.into_iter().filter(|l| l == LOST).collect())
    }

    fn release(_lease: String) -> Result<(), StorageError> {
        Ok(())
    }

    fn leases(_user: Option<String>) -> Result<Vec<LeaseInfo>, StorageError> {
        Ok(Vec::new())
    }

    fn break_leases(_user: String) -> Result<u32, StorageError> {
        Ok(0)
    }

    fn list_messages(mbox: Mailbox) -> Result<Vec<Entry>, StorageError> {
        Ok(listing(&mbox.user))
    }

    fn read(_mbox: Mailbox, key: String, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        let Some((_, _, content)) = MESSAGES.iter().find(|(k, _, _)| *k == key) else {
            return Err(StorageError::NotFound(key));
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let end = start.saturating_add(len as usize).min(content.len());
        Ok(content[start..end].to_vec())
    }

    fn commit(_mbox: Mailbox, request: CommitRequest) -> Result<CommitReport, StorageError> {
        if request.lease == LOST {
            return Err(StorageError::LeaseLost(
                "hostile storage lost the lease".into(),
            ));
        }
        Ok(CommitReport {
            deleted: request.delete.len() as u32,
            missing: 0,
        })
    }

    fn deliver(batch: Vec<Delivery>) -> Vec<Result<Delivered, StorageError>> {
        let (messages, octets) = stored_usage();
        batch
            .iter()
            .map(|d| {
                misbehave(&d.mbox.user);
                let size = d.msg.size();
                if d.quota.messages.is_some_and(|max| messages + 1 > max)
                    || d.quota.octets.is_some_and(|max| octets + size > max)
                {
                    return Err(StorageError::OverQuota(format!(
                        "{messages} messages of {octets} octets, and {size} more"
                    )));
                }
                Ok(Delivered {
                    key: "m3".into(),
                    uid: "uid-three".into(),
                    duplicate: false,
                })
            })
            .collect()
    }

    fn usage(user: String) -> Result<MailUsage, StorageError> {
        misbehave(&user);
        let (messages, octets) = stored_usage();
        Ok(MailUsage { messages, octets })
    }

    fn search(mbox: Mailbox, criteria: SearchCriteria) -> Result<Vec<String>, StorageError> {
        misbehave(&mbox.user);
        let hit = |content: &[u8]| {
            let text = String::from_utf8_lossy(content).to_lowercase();
            let size = content.len() as u64;
            criteria.larger.is_none_or(|n| size > n)
                && criteria.smaller.is_none_or(|n| size < n)
                && criteria
                    .body
                    .iter()
                    .all(|b| text.contains(&b.to_lowercase()))
                && criteria.headers.iter().all(|h| {
                    text.lines().any(|line| {
                        line.split_once(':').is_some_and(|(name, value)| {
                            name.eq_ignore_ascii_case(&h.name)
                                && value.contains(&h.contains.to_lowercase())
                        })
                    })
                })
        };
        Ok(MESSAGES
            .iter()
            .filter(|(_, _, content)| hit(content))
            .map(|(key, _, _)| (*key).to_string())
            .collect())
    }

    fn users(_after: Option<String>, _limit: u32) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    fn folders(_user: String) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    fn maintain(_task: Maintenance) -> Result<MaintenanceReport, StorageError> {
        Ok(MaintenanceReport {
            findings: Vec::new(),
            fixed: 0,
            summary: "hostile storage keeps nothing: nothing to do".into(),
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Plugin);
