//! The model: how many spam and ham messages were learnt, and for each
//! token in how many of each it occurred.
//!
//! # File format (version 1)
//!
//! UTF-8 text, one record a line, LF line endings:
//!
//! ```text
//! poplar-bayes 1 <spam messages> <ham messages> <tokens>
//! <token>\t<spam count>\t<ham count>
//! ...
//! ```
//!
//! Tokens are sorted, unique, and hold no whitespace; counts are decimal
//! and never exceed the message totals of the first line. A file that breaks
//! any of this (including a token count that does not match, as a truncated
//! file would) is refused as corrupt. A later format would change the
//! version number, which this code refuses to read.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const MAGIC: &str = "poplar-bayes";
const VERSION: u32 = 1;

/// A token's counts: messages of each kind it occurred in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub spam: u32,
    pub ham: u32,
}

/// The learnt statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// Spam messages learnt.
    pub spam: u32,
    /// Ham messages learnt.
    pub ham: u32,
    pub tokens: HashMap<String, Counts>,
}

impl Model {
    /// Counts one message's distinct tokens.
    pub fn learn(&mut self, tokens: &[String], spam: bool) {
        let total = if spam { &mut self.spam } else { &mut self.ham };
        *total = total.saturating_add(1);
        for token in tokens {
            let counts = self.tokens.entry(token.clone()).or_default();
            let count = if spam {
                &mut counts.spam
            } else {
                &mut counts.ham
            };
            *count = count.saturating_add(1);
        }
    }

    /// Takes back one message's distinct tokens (a correction of an earlier
    /// [`Model::learn`]). Counts never go below zero, and a token's counts
    /// never stay above the message totals (taking back a message that was
    /// never learnt must not leave a model the file format refuses); a
    /// token whose counts both reach zero is forgotten.
    pub fn unlearn(&mut self, tokens: &[String], spam: bool) {
        let total = if spam { &mut self.spam } else { &mut self.ham };
        *total = total.saturating_sub(1);
        let (spam_total, ham_total) = (self.spam, self.ham);
        for token in tokens {
            let Some(counts) = self.tokens.get_mut(token) else {
                continue;
            };
            let count = if spam {
                &mut counts.spam
            } else {
                &mut counts.ham
            };
            *count = count.saturating_sub(1);
        }
        // Only the side that shrank can now exceed its total.
        self.tokens.retain(|_, c| {
            c.spam = c.spam.min(spam_total);
            c.ham = c.ham.min(ham_total);
            c.spam > 0 || c.ham > 0
        });
    }

    /// A token's counts (zero for an unknown token).
    pub fn counts(&self, token: &str) -> Counts {
        self.tokens.get(token).copied().unwrap_or_default()
    }

    /// Keeps the model at most `max` tokens long. When it is longer, the
    /// rarest tokens go until 90% of `max` remain, so that the next few
    /// training calls do not each prune again. Among equally rare tokens the
    /// choice is arbitrary but fixed (by a hash of the token), not biased
    /// towards any part of the alphabet. Returns how many were removed.
    pub fn prune(&mut self, max: usize) -> usize {
        if self.tokens.len() <= max {
            return 0;
        }
        let keep = max - max / 10;
        let mut ranked: Vec<(u64, u64, &String)> = self
            .tokens
            .iter()
            .map(|(t, c)| (u64::from(c.spam) + u64::from(c.ham), fnv1a(t), t))
            .collect();
        let remove = ranked.len() - keep;
        ranked.select_nth_unstable(remove - 1);
        let doomed: Vec<String> = ranked[..remove]
            .iter()
            .map(|(_, _, t)| (*t).clone())
            .collect();
        for token in &doomed {
            self.tokens.remove(token);
        }
        remove
    }

    /// Reads a model file. Any deviation from the format is an error that
    /// says where it is.
    pub fn parse(bytes: &[u8]) -> Result<Model, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("truncated (the last line is unfinished)".to_owned());
        }
        let mut lines = text.split_terminator('\n');
        let first = lines.next().unwrap_or("");
        let fields: Vec<&str> = first.split(' ').collect();
        if fields.first() != Some(&MAGIC) {
            return Err(format!("not a {MAGIC} model (first line {first:?})"));
        }
        if fields.get(1) != Some(&"1") {
            return Err(format!(
                "unsupported model version {:?} (this plugin reads {VERSION})",
                fields.get(1).unwrap_or(&"")
            ));
        }
        let [spam, ham, count] = match fields[2..] {
            [a, b, c] => [a, b, c].map(|f| f.parse::<u32>().ok()),
            _ => [None; 3],
        };
        let (Some(spam), Some(ham), Some(count)) = (spam, ham, count) else {
            return Err(format!("line 1: malformed header {first:?}"));
        };
        let mut model = Model {
            spam,
            ham,
            // A line takes at least 6 octets: do not trust the header alone.
            tokens: HashMap::with_capacity((count as usize).min(bytes.len() / 6)),
        };
        for (i, line) in lines.enumerate() {
            let bad = |why: &str| format!("line {}: {why}", i + 2);
            let mut fields = line.split('\t');
            let (Some(token), Some(s), Some(h), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("expected token, spam count and ham count"));
            };
            if token.is_empty() || token.contains(char::is_whitespace) {
                return Err(bad("invalid token"));
            }
            let (Ok(s), Ok(h)) = (s.parse::<u32>(), h.parse::<u32>()) else {
                return Err(bad("invalid count"));
            };
            if s > spam || h > ham || (s == 0 && h == 0) {
                return Err(bad("count out of range"));
            }
            if model
                .tokens
                .insert(token.to_owned(), Counts { spam: s, ham: h })
                .is_some()
            {
                return Err(bad("duplicate token"));
            }
        }
        if model.tokens.len() != count as usize {
            return Err(format!(
                "{} tokens where the header announces {count} (truncated?)",
                model.tokens.len()
            ));
        }
        Ok(model)
    }

    /// The model in the file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut tokens: Vec<(&String, &Counts)> = self.tokens.iter().collect();
        tokens.sort_unstable_by_key(|(t, _)| *t);
        let mut out = String::with_capacity(32 + tokens.len() * 24);
        let _ = writeln!(
            out,
            "{MAGIC} {VERSION} {} {} {}",
            self.spam,
            self.ham,
            tokens.len()
        );
        for (token, c) in tokens {
            let _ = writeln!(out, "{token}\t{}\t{}", c.spam, c.ham);
        }
        out.into_bytes()
    }

    /// Reads the model file; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Model>, String> {
        match std::fs::read(path) {
            Ok(bytes) => Model::parse(&bytes)
                .map(Some)
                .map_err(|e| format!("corrupt model {}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read model {}: {e}", path.display())),
        }
    }

    /// Writes the model atomically (see [`Writer`]).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        Writer::lock(path)?.commit(self)
    }
}

/// A `<path>.tmp` older than this is left over from a training that was
/// interrupted (the host stops a training call after 10 minutes).
const STALE_TMP: Duration = Duration::from_secs(15 * 60);

/// Writes a model file atomically, and keeps other trainings out meanwhile.
///
/// [`Writer::lock`] creates `<path>.tmp` exclusively, before the model is
/// read: while it exists, no other training starts, so none can overwrite
/// this one's additions. [`Writer::commit`] writes the model into it, syncs
/// it and renames it over `path`. Dropped without a commit, it removes the
/// file.
pub struct Writer {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
    committed: bool,
}

impl Writer {
    pub fn lock(path: &Path) -> Result<Writer, String> {
        let tmp = tmp_path(path);
        let create = || File::options().write(true).create_new(true).open(&tmp);
        let file = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_stale(&tmp) => {
                let _ = std::fs::remove_file(&tmp);
                create()
            }
            other => other,
        };
        let file = file.map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => format!(
                "{} exists: another training is running (if none is, an interrupted one \
                 left it behind: remove it)",
                tmp.display()
            ),
            _ => format!("cannot create {}: {e}", tmp.display()),
        })?;
        Ok(Writer {
            path: path.to_owned(),
            tmp,
            file,
            committed: false,
        })
    }

    pub fn commit(mut self, model: &Model) -> Result<(), String> {
        let result = self
            .file
            .write_all(&model.to_bytes())
            .and_then(|()| self.file.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.path));
        self.committed = result.is_ok();
        result.map_err(|e| format!("cannot write model {}: {e}", self.path.display()))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn is_stale(path: &Path) -> bool {
    let modified = std::fs::metadata(path).and_then(|m| m.modified());
    modified
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE_TMP)
}

/// `<path>.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// 64-bit FNV-1a.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn round_trip() {
        let mut m = Model::default();
        m.learn(&words("cheap pills now"), true);
        m.learn(&words("cheap lunch now"), false);
        m.learn(&words("lunch meeting"), false);
        let bytes = m.to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "poplar-bayes 1 1 2 5\n\
             cheap\t1\t1\nlunch\t0\t2\nmeeting\t0\t1\nnow\t1\t1\npills\t1\t0\n"
        );
        assert_eq!(Model::parse(&bytes).unwrap(), m);
        assert_eq!(m.counts("lunch"), Counts { spam: 0, ham: 2 });
        assert_eq!(m.counts("unknown"), Counts::default());

        let dir = TempDir::new();
        let path = dir.path().join("bayes.model");
        assert_eq!(Model::load(&path).unwrap(), None);
        m.save(&path).unwrap();
        assert_eq!(Model::load(&path).unwrap(), Some(m));
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn corrupt_files_are_refused() {
        for (text, why) in [
            ("", "not a poplar-bayes model"),
            ("hello\n", "not a poplar-bayes model"),
            ("poplar-bayes 2 0 0 0\n", "unsupported model version \"2\""),
            ("poplar-bayes 1 1 x 0\n", "line 1"),
            (
                "poplar-bayes 1 1 1 1\n",
                "0 tokens where the header announces 1",
            ),
            ("poplar-bayes 1 1 1 1\na\t1\t", "truncated"),
            ("poplar-bayes 1 1 1 1\na\t1\n", "line 2: expected"),
            ("poplar-bayes 1 1 1 1\na\t1\t-1\n", "line 2: invalid count"),
            (
                "poplar-bayes 1 1 1 1\na\t2\t0\n",
                "line 2: count out of range",
            ),
            (
                "poplar-bayes 1 1 1 2\na\t1\t0\na\t0\t1\n",
                "line 3: duplicate",
            ),
            ("poplar-bayes 1 1 1 1\na b\t1\t0\n", "line 2: invalid token"),
        ] {
            let err = Model::parse(text.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        assert!(Model::parse(b"poplar-bayes 1 1 1 0\n\xff").is_err());
    }

    #[test]
    fn writer_excludes_other_writers() {
        let dir = TempDir::new();
        let path = dir.path().join("bayes.model");
        let tmp = tmp_path(&path);
        let first = Writer::lock(&path).unwrap();
        let err = Writer::lock(&path).err().unwrap();
        assert!(err.contains("another training is running"), "{err}");
        drop(first);
        assert!(!tmp.exists(), "an abandoned writer removes its file");

        // A file left by an interrupted training long ago is taken over.
        let stale = Writer::lock(&path).unwrap();
        std::mem::forget(stale);
        File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_TMP)
            .unwrap();
        let mut m = Model::default();
        m.learn(&words("one"), true);
        Writer::lock(&path).unwrap().commit(&m).unwrap();
        assert!(!tmp.exists());
        assert_eq!(Model::load(&path).unwrap(), Some(m));
    }

    #[test]
    fn prune_keeps_the_common_tokens() {
        let mut m = Model::default();
        for i in 0..100 {
            let mut tokens = words("common frequent");
            tokens.push(format!("rare{i}"));
            if i % 2 == 0 {
                tokens.push(format!("half{}", i % 10));
            }
            m.learn(&tokens, i % 3 == 0);
        }
        assert_eq!(m.tokens.len(), 2 + 100 + 5);
        assert_eq!(m.prune(200), 0);
        assert_eq!(m.prune(50), 107 - 45);
        assert_eq!(m.tokens.len(), 45);
        for kept in ["common", "frequent", "half0", "half8"] {
            assert!(m.tokens.contains_key(kept), "{kept}");
        }
        // The same input prunes the same way.
        let mut again = m.clone();
        again.learn(&words("x y z w v u"), true);
        let mut twice = again.clone();
        again.prune(40);
        twice.prune(40);
        assert_eq!(again, twice);
    }
}
