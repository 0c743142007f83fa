//! Keeps the parsed passwd-file between calls and re-reads it when its size
//! or modification time changes (one `stat` per call).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::passwd::PasswdFile;

/// What the cached copy was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    path: PathBuf,
    lowercase_users: bool,
    len: u64,
    mtime: Option<SystemTime>,
}

/// A passwd-file cache.
#[derive(Debug, Default)]
pub struct Cache {
    loaded: Option<(Key, PasswdFile)>,
}

impl Cache {
    /// An empty cache.
    pub const fn new() -> Self {
        Cache { loaded: None }
    }

    /// Returns the parsed file, and whether it was (re)read on this call.
    /// An error means the file cannot be read now; a stale copy is never
    /// served then.
    pub fn get(&mut self, path: &Path, lowercase_users: bool) -> io::Result<(&PasswdFile, bool)> {
        let meta = std::fs::metadata(path);
        let key = Key {
            path: path.to_owned(),
            lowercase_users,
            len: meta.as_ref().map_or(0, |m| m.len()),
            mtime: meta.as_ref().ok().and_then(|m| m.modified().ok()),
        };
        // Without a modification time edits cannot be seen: always re-read.
        let fresh = key.mtime.is_some()
            && meta.is_ok()
            && self.loaded.as_ref().is_some_and(|(old, _)| *old == key);
        if !fresh {
            self.loaded = None;
            meta?;
            // The key holds the metadata from before the read, so an edit
            // racing with the read shows up as a change on the next call.
            let bytes = std::fs::read(path)?;
            let file = PasswdFile::parse(&String::from_utf8_lossy(&bytes), lowercase_users);
            self.loaded = Some((key, file));
        }
        let (_, file) = self.loaded.as_ref().expect("loaded above");
        Ok((file, !fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use std::time::Duration;

    #[test]
    fn reloads_on_change_only() {
        let dir = TempDir::new();
        let path = dir.write("passwd", "alice:{PLAIN}one\n");
        let mut cache = Cache::default();

        let (file, reloaded) = cache.get(&path, false).unwrap();
        assert!(reloaded);
        assert_eq!(file.get("alice").unwrap().password, "{PLAIN}one");

        let (_, reloaded) = cache.get(&path, false).unwrap();
        assert!(!reloaded, "unchanged file must come from the cache");

        // Same length, new mtime.
        dir.write("passwd", "alice:{PLAIN}two\n");
        dir.set_mtime("passwd", Duration::from_secs(1_000_000));
        let (file, reloaded) = cache.get(&path, false).unwrap();
        assert!(reloaded);
        assert_eq!(file.get("alice").unwrap().password, "{PLAIN}two");

        // Same mtime, new length.
        dir.write("passwd", "alice:{PLAIN}three\n");
        dir.set_mtime("passwd", Duration::from_secs(1_000_000));
        let (file, reloaded) = cache.get(&path, false).unwrap();
        assert!(reloaded);
        assert_eq!(file.get("alice").unwrap().password, "{PLAIN}three");

        // A different parse option is a different cache entry.
        let (_, reloaded) = cache.get(&path, true).unwrap();
        assert!(reloaded);
    }

    #[test]
    fn missing_file_is_an_error_and_drops_the_cache() {
        let dir = TempDir::new();
        let path = dir.write("passwd", "alice:{PLAIN}one\n");
        let mut cache = Cache::default();
        cache.get(&path, false).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(cache.get(&path, false).is_err());
        assert!(cache.loaded.is_none());
    }
}
