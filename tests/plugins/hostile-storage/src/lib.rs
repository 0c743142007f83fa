//! A storage plugin that misbehaves on request, for testing how the host
//! contains a broken or hostile plugin. Mail is served from memory: every
//! mailbox holds the same two messages, compiled in. What `list-messages`
//! does depends on the mailbox's user:
//!
//! - `bad-uid`: lists an entry whose uid contains a space and one whose
//!   uid is 200 characters long (RFC 1939 allows 1-70 in 0x21..0x7E).
//! - `dup-uid`: lists two entries with the same uid.
//! - `huge-size`: lists an entry that claims a size of `u64::MAX`.
//! - `panic`: panics (a trap, with a message on stderr).
//! - `loop`: spins forever (the host's deadline must stop it).
//! - `short-read`: lists the messages with a stored size larger than what
//!   `read` returns: `read` gives the real bytes, then an empty list.
//! - anyone else: the two messages, honestly.
//!
//! `commit` and `deliver` succeed without doing anything. `search` panics
//! for `panic`, spins for `loop`, and otherwise matches the two messages
//! naively (case-insensitive substrings of the whole text; dates ignored).
//! `usage` panics for `panic`, spins for `loop`, and otherwise counts the
//! two messages.

wit_bindgen::generate!({ path: "../../../wit", world: "storage-plugin" });

use exports::poplar::plugin::storage::{
    CommitReport, Entry, Guest, MailUsage, Mailbox, SearchCriteria, StorageError,
};
use poplar::plugin::message::Message;

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
        })
        .collect()
}

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

    fn list_messages(mbox: Mailbox) -> Result<Vec<Entry>, StorageError> {
        let mut entries = honest();
        match mbox.user.as_str() {
            "bad-uid" => {
                entries[0].uid = "has space".into();
                entries[1].uid = "u".repeat(200);
            }
            "dup-uid" => entries[1].uid = entries[0].uid.clone(),
            "huge-size" => entries[1].size = u64::MAX,
            "panic" | "loop" => misbehave(&mbox.user),
            "short-read" => {
                for e in &mut entries {
                    e.size += SHORT_BY;
                    e.stored_size += SHORT_BY;
                }
            }
            _ => {}
        }
        Ok(entries)
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

    fn commit(_mbox: Mailbox, keys: Vec<String>) -> Result<CommitReport, StorageError> {
        Ok(CommitReport {
            deleted: keys.len() as u32,
            missing: 0,
        })
    }

    fn deliver(_mbox: Mailbox, _msg: &Message) -> Result<String, StorageError> {
        Ok("m3".into())
    }

    fn usage(user: String) -> Result<MailUsage, StorageError> {
        misbehave(&user);
        Ok(MailUsage {
            messages: MESSAGES.len() as u64,
            octets: MESSAGES.iter().map(|(_, _, c)| c.len() as u64).sum(),
        })
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
}

#[cfg(target_arch = "wasm32")]
export!(Plugin);
