//! Small file-system steps every module needs: durable directory changes,
//! whole-file replacement, and an exclusive file that several processes
//! (on several machines sharing an NFS mount) can race for.
//!
//! WASI gives no `flock`, so exclusion rests on the two operations that
//! are atomic on a local disk and on NFS alike: creating a file with
//! `O_EXCL` (`create_new`) and `rename`. [`create_exclusive`] takes a
//! file; [`break_stale`] removes one that the caller judged stale, only if
//! it is still that file, so that two processes judging the same file stale
//! cannot remove each other's fresh one.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, io_err};

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// Seconds since the Unix epoch of a file's modification time.
pub fn mtime(meta: &fs::Metadata) -> Option<i64> {
    let since = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since.as_secs()).ok()
}

/// 128 random bits as 32 lower-case hex digits. `RandomState` is seeded
/// from the system's randomness (WASI's `random` in the component); the
/// time and a counter make two values of one process differ even if it
/// were not.
pub fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut halves = [0u64; 2];
    for (i, half) in halves.iter_mut().enumerate() {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(count);
        hasher.write_usize(i);
        *half = hasher.finish();
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}

/// Fsyncs a directory so that a create, rename or unlink in it is durable.
/// Platforms that cannot open or sync a directory are not an error.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let Ok(dir) = File::open(path) else {
        return Ok(());
    };
    match dir.sync_all() {
        Err(e)
            if !matches!(
                e.kind(),
                ErrorKind::Unsupported
                    | ErrorKind::InvalidInput
                    | ErrorKind::PermissionDenied
                    | ErrorKind::IsADirectory
            ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// [`sync_dir`] as a crate error.
pub fn sync_dir_or_err(path: &Path) -> Result<()> {
    sync_dir(path).map_err(|e| io_err("cannot fsync", path, e))
}

/// The contents of a small file, `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("cannot read", path, e)),
    }
}

/// `path` with `.<suffix>` appended to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Replaces `path` with `data` at once: readers see the old contents or
/// the new, never a mix. Written to a unique sibling and renamed over
/// `path`; with `durable` the data is synced first (the directory is not:
/// callers that need the rename durable sync it, once for many files).
pub fn replace_file(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let tmp = sibling(path, &format!("{}.new", random_hex()));
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(data)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("cannot write", path, e)
    })
}

/// Creates `path` with `data` if it does not exist (`O_EXCL`): `true` if
/// this call created it, `false` if it was there. The data is written
/// right after the create, so a reader may briefly see a shorter file; the
/// readers of such files treat one they cannot parse as taken until it has
/// not changed for a while. With `durable` the data is synced.
pub fn create_exclusive(path: &Path, data: &[u8], durable: bool) -> Result<bool> {
    let mut file = match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io_err("cannot create", path, e)),
    };
    let written = file
        .write_all(data)
        .and_then(|()| if durable { file.sync_all() } else { Ok(()) });
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(io_err("cannot write", path, e));
    }
    Ok(true)
}

/// Seconds after which a break guard (`<path>.break`) is taken to be left
/// by a process that died while breaking.
pub const GUARD_STALE: i64 = 30;

/// Removes `path`, which the caller read as `seen` and judged stale, if it
/// still holds exactly that. `true` if this call removed it; `false` if it
/// changed or went meanwhile, or another process is breaking it (the
/// caller looks again).
///
/// Breakers take turns through a guard, the file `<path>.break` created
/// with `O_EXCL`: under it the file is read again, and removed only if
/// unchanged. Without the guard, a breaker that judged the old file could
/// remove the fresh one another breaker had just created in its place.
pub fn break_stale(path: &Path, seen: &[u8], now: i64) -> Result<bool> {
    let guard = sibling(path, "break");
    if !create_exclusive(&guard, random_hex().as_bytes(), false)? {
        // Left by a breaker that died? Then remove it for the next turn.
        if let Some(bytes) = read_optional(&guard)?
            && let Ok(meta) = fs::metadata(&guard)
            && mtime(&meta).is_some_and(|t| now.saturating_sub(t) >= GUARD_STALE)
        {
            remove_if_unchanged(&guard, &bytes)?;
        }
        return Ok(false);
    }
    let result = match read_optional(path) {
        Ok(Some(bytes)) if bytes == seen => remove_if_unchanged(path, seen),
        Ok(_) => Ok(false), // changed or gone since it was judged: leave it
        Err(e) => Err(e),
    };
    let _ = fs::remove_file(&guard);
    result
}

/// Removes `path` if it holds exactly `mine` (the caller's own lock or
/// lease, given back). If it holds something else, it is left alone.
pub fn remove_own(path: &Path, mine: &[u8]) -> Result<bool> {
    match read_optional(path)? {
        Some(bytes) if bytes == mine => remove_if_unchanged(path, mine),
        _ => Ok(false),
    }
}

/// Removes `path` if it still holds `seen`, which the caller just read and
/// knows to be its own (so not a fresh file someone is writing): see
/// [`remove_if_unchanged`].
pub fn remove_exact(path: &Path, seen: &[u8]) -> Result<bool> {
    remove_if_unchanged(path, seen)
}

/// Removes `path` if it still holds exactly `seen` (a compare-and-delete
/// built on `rename`, which only one process can win): the file is renamed
/// to a unique sibling and read there. If it is what the caller saw, it is
/// removed and the call returns `true`. If not, it is put back unless
/// something new took its place, and the call returns `false`. A file
/// already gone also returns `false`. Callers make sure that the file
/// cannot be a fresh one being written (see [`break_stale`]).
fn remove_if_unchanged(path: &Path, seen: &[u8]) -> Result<bool> {
    let aside = sibling(path, &format!("{}.breaking", random_hex()));
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("cannot rename", path, e)),
    }
    let got = fs::read(&aside).map_err(|e| io_err("cannot read", &aside, e))?;
    if got == seen {
        let _ = fs::remove_file(&aside);
        return Ok(true);
    }
    let restored = create_exclusive(path, &got, false);
    let _ = fs::remove_file(&aside);
    restored?;
    Ok(false)
}

/// Names in `dir` (UTF-8 ones; others cannot be ours), or none if it does
/// not exist.
pub fn names_in(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err("cannot list", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_is_unique_hex() {
        let a = random_hex();
        let b = random_hex();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn replace_and_create_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        assert!(create_exclusive(&path, b"one", true).unwrap());
        assert!(!create_exclusive(&path, b"two", true).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        replace_file(&path, b"three", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(names_in(tmp.path()).unwrap(), ["f"], "no temporary left");
        assert_eq!(read_optional(&tmp.path().join("x")).unwrap(), None);
        assert!(names_in(&tmp.path().join("x")).unwrap().is_empty());
    }

    #[test]
    fn break_stale_is_compare_and_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        fs::write(&path, b"old").unwrap();
        // Changed since it was judged: left alone.
        assert!(!break_stale(&path, b"older", 0).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        // Another breaker at work (its guard is fresh): not now.
        fs::write(sibling(&path, "break"), b"x").unwrap();
        assert!(!break_stale(&path, b"old", now()).unwrap());
        assert!(path.exists());
        // That guard is old: it goes, and the next turn breaks the file.
        assert!(!break_stale(&path, b"old", now() + GUARD_STALE).unwrap());
        assert!(break_stale(&path, b"old", now()).unwrap());
        assert!(!path.exists());
        assert!(!break_stale(&path, b"old", now()).unwrap(), "already gone");
        assert!(names_in(tmp.path()).unwrap().is_empty());
        // Giving back: only one's own.
        fs::write(&path, b"theirs").unwrap();
        assert!(!remove_own(&path, b"mine").unwrap());
        assert!(remove_own(&path, b"theirs").unwrap());
    }

    #[test]
    fn racing_breakers_remove_only_what_they_saw() {
        // Threads judge the same stale file and race to replace it with
        // their own: one wins each round, and nobody removes the winner's.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        for round in 0..50 {
            let stale = format!("stale {round}");
            fs::write(&path, &stale).unwrap();
            let won: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|t| {
                        let (path, stale) = (&path, &stale);
                        s.spawn(move || {
                            let mine = format!("thread {t}");
                            for _ in 0..50 {
                                if create_exclusive(path, mine.as_bytes(), false).unwrap() {
                                    return Some(mine);
                                }
                                match read_optional(path).unwrap() {
                                    Some(b) if b == stale.as_bytes() => {
                                        break_stale(path, &b, now()).unwrap();
                                    }
                                    Some(_) => return None, // someone else's: in use
                                    None => {}
                                }
                                std::thread::yield_now();
                            }
                            None
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .collect()
            });
            assert_eq!(won.len(), 1, "round {round}: {won:?}");
            assert_eq!(fs::read_to_string(&path).unwrap(), won[0]);
            let left = names_in(tmp.path()).unwrap();
            assert_eq!(left, ["lock"], "round {round}");
            fs::remove_file(&path).unwrap();
        }
    }
}
