//! Maildrop locks: at most one POP3 session per maildrop (RFC 1939 §8), so
//! a second login gets `-ERR [IN-USE]`. The lock lives in the host, not in
//! the storage plugin, and is released when its guard drops, however the
//! session ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The set of maildrops held by sessions.
#[derive(Debug, Clone, Default)]
pub struct MaildropLocks(Arc<Mutex<HashSet<String>>>);

/// Holds one maildrop until dropped.
#[derive(Debug)]
pub struct MaildropGuard {
    locks: MaildropLocks,
    key: String,
}

impl MaildropLocks {
    /// Takes the lock on `key`, or `None` if another session holds it.
    pub fn try_lock(&self, key: &str) -> Option<MaildropGuard> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.insert(key.to_string()) {
            Some(MaildropGuard {
                locks: self.clone(),
                key: key.to_string(),
            })
        } else {
            None
        }
    }
}

impl Drop for MaildropGuard {
    fn drop(&mut self) {
        let mut held = self.locks.0.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_until_first_drops() {
        let locks = MaildropLocks::default();
        let a = locks.try_lock("alice").unwrap();
        assert!(locks.try_lock("alice").is_none());
        let _b = locks.try_lock("bob").unwrap();
        drop(a);
        assert!(locks.try_lock("alice").is_some());
    }
}
