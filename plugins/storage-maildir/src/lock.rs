//! The per-user lock: held while a delivery checks the user's quota and
//! stores messages (so that parallel deliveries cannot take the user past
//! it, and a delivery id is stored once), and by anything else that writes
//! the user's `poplar-uidlist` files.
//!
//! WASI has no `flock`, so the lock is the file `<root>/<user>/poplar.lock`
//! created with `O_EXCL`, holding a random token and the time it was taken.
//! It is held for a few file operations, never while a message is written;
//! one older than [`LOCK_STALE`] seconds was left by a process that died
//! holding it and is broken (with [`break_stale`], so that two breakers
//! cannot remove each other's fresh lock). A process that waits
//! longer than [`LOCK_WAIT`] gives up with a temporary error (the MTA
//! retries).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, io_err};
use crate::files::{
    break_stale, create_exclusive, mtime, now, random_hex, read_optional, remove_own,
};

/// The lock file in a user's directory.
pub const LOCK_FILE: &str = "poplar.lock";

/// Seconds after which a lock is taken to be left by a dead process.
pub const LOCK_STALE: i64 = 60;

/// How long to wait for the lock before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A held user lock; dropping it releases it.
#[derive(Debug)]
pub struct UserLock {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl UserLock {
    /// Takes the lock of the user directory `user_dir` (created if
    /// missing), waiting up to [`LOCK_WAIT`].
    pub fn acquire(user_dir: &Path) -> Result<UserLock> {
        UserLock::acquire_within(user_dir, LOCK_WAIT)
    }

    fn acquire_within(user_dir: &Path, wait: Duration) -> Result<UserLock> {
        fs::create_dir_all(user_dir).map_err(|e| io_err("cannot create", user_dir, e))?;
        let path = user_dir.join(LOCK_FILE);
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let bytes = format!("{} {}\n", random_hex(), now()).into_bytes();
            if create_exclusive(&path, &bytes, false)? {
                return Ok(UserLock { path, bytes });
            }
            if let Some(seen) = read_optional(&path)?
                && age(&path, &seen) >= LOCK_STALE
            {
                if !break_stale(&path, &seen, now())? {
                    std::thread::sleep(pause);
                }
                continue;
            }
            if started.elapsed() >= wait {
                return Err(Error::Io(format!(
                    "{} is held by another delivery for more than {} ms; try again later",
                    path.display(),
                    wait.as_millis()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

impl Drop for UserLock {
    fn drop(&mut self) {
        // Only ours: if it was broken as stale, the new holder's stays.
        let _ = remove_own(&self.path, &self.bytes);
    }
}

/// Seconds since the lock file was taken: from its contents, else (cut
/// short while being written) from its modification time.
fn age(path: &Path, bytes: &[u8]) -> i64 {
    let taken = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.trim_end().split(' ').nth(1)?.parse::<i64>().ok())
        .or_else(|| fs::metadata(path).ok().and_then(|m| mtime(&m)));
    taken.map_or(0, |t| now().saturating_sub(t))
}

/// Whether the lock of `user_dir` is older than [`LOCK_STALE`].
pub fn is_stale(user_dir: &Path) -> Result<bool> {
    let path = user_dir.join(LOCK_FILE);
    Ok(read_optional(&path)?.is_some_and(|seen| age(&path, &seen) >= LOCK_STALE))
}

/// The lock of `user_dir` if it is older than `grace` seconds (at least
/// [`LOCK_STALE`]): removed, `true`.
pub fn break_if_stale(user_dir: &Path, grace: i64) -> Result<bool> {
    let path = user_dir.join(LOCK_FILE);
    match read_optional(&path)? {
        Some(seen) if age(&path, &seen) >= grace.max(LOCK_STALE) => {
            break_stale(&path, &seen, now())
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn exclusive_and_released() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        let held = AtomicU32::new(0);
        let total = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _lock = UserLock::acquire(&dir).unwrap();
                        assert_eq!(held.fetch_add(1, Ordering::SeqCst), 0);
                        total.fetch_add(1, Ordering::SeqCst);
                        held.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::SeqCst), 200);
        assert!(!dir.join(LOCK_FILE).exists());
    }

    #[test]
    fn a_dead_holders_lock_is_broken() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let old = format!("abc {}\n", now() - LOCK_STALE - 1);
        fs::write(dir.join(LOCK_FILE), &old).unwrap();
        assert!(
            !break_if_stale(dir, 3600).unwrap(),
            "younger than the grace"
        );
        let lock = UserLock::acquire(dir).unwrap();
        assert_ne!(fs::read(dir.join(LOCK_FILE)).unwrap(), old.as_bytes());
        // A fresh lock of someone else is not broken.
        assert!(!break_if_stale(dir, 0).unwrap());
        drop(lock);
        fs::write(dir.join(LOCK_FILE), &old).unwrap();
        assert!(break_if_stale(dir, 0).unwrap());
    }

    #[test]
    fn a_live_holder_makes_others_wait_then_give_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(LOCK_FILE), format!("abc {}\n", now())).unwrap();
        let err = UserLock::acquire_within(dir, Duration::from_millis(50)).unwrap_err();
        assert!(
            err.message().contains("held by another delivery"),
            "{err:?}"
        );
        assert!(dir.join(LOCK_FILE).exists(), "the holder's lock stays");
    }
}
