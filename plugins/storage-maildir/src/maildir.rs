//! Maildir++ storage on a plain directory tree, with no dependency on the
//! plugin bindings: everything here works on a `std::path::Path` and is
//! tested natively. See the crate docs for the behaviour it implements.
//!
//! [`Config`] is the mail root and its rules; [`Maildir`] is one mailbox
//! (an inbox or a folder): listing, reading, and the UPDATE state's
//! changes. Leases are in [`crate::session`], delivery in
//! [`crate::deliver`].

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::dovecot::{self, Rank, UNLISTED};
use crate::error::{Error, Result, io_err};
use crate::files::{mtime, names_in, sync_dir};
use crate::names::{
    base_name, check_folder, check_key, check_name, is_trashed, s_size, timestamp, w_size,
    with_trashed,
};
use crate::uidl::{self, poplar_uid, unused_uid};

/// Largest range one `read` returns.
pub const MAX_READ: u32 = 1 << 20;
/// Chunk size for scanning a stored file to compute its CRLF size.
const SCAN_CHUNK: usize = 64 * 1024;

/// How UIDLs are made.
#[derive(Debug, Clone, PartialEq)]
pub enum Uidl {
    /// The Maildir base name (hashed if it is not a valid UIDL).
    Poplar,
    /// Dovecot's UIDLs from `dovecot-uidlist`, expanded with this format.
    Dovecot { format: String },
}

/// The plugin's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub uidl: Uidl,
    /// Where debug lines go (`host::log` in the component, nowhere in tests).
    pub log: fn(&str),
}

impl Config {
    /// Builds the configuration from flattened key/value pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let (mut root, mut mode, mut format) = ("/mail", "poplar", "%08Xu%08Xv");
        for (key, value) in pairs {
            match key {
                "root" => root = value,
                "uidl" => mode = value,
                "uidl_format" => format = value,
                _ => return Err(Error::Invalid(format!("unknown config key `{key}`"))),
            }
        }
        let uidl = match mode {
            "poplar" => Uidl::Poplar,
            "dovecot" => {
                dovecot::expand_uidl(format, 1, 1, "base", "guid")
                    .map_err(|e| Error::Invalid(format!("uidl_format: {e}")))?;
                Uidl::Dovecot {
                    format: format.to_string(),
                }
            }
            other => {
                return Err(Error::Invalid(format!(
                    "uidl must be \"poplar\" or \"dovecot\", not {other:?}"
                )));
            }
        };
        Ok(Config {
            root: PathBuf::from(root),
            uidl,
            log: |_| {},
        })
    }

    /// The directory of `user` (its inbox), after checking the name.
    pub fn user_dir(&self, user: &str) -> Result<PathBuf> {
        check_name("user", user)?;
        Ok(self.root.join(user))
    }

    /// The Maildir of `user` (its inbox, or folder `folder`), after checking
    /// both names.
    pub fn open(&self, user: &str, folder: Option<&str>) -> Result<Maildir> {
        let mut dir = self.user_dir(user)?;
        if let Some(folder) = folder {
            check_folder(folder)?;
            dir.push(format!(".{folder}"));
        }
        Ok(Maildir {
            dir,
            user: user.to_string(),
            folder: folder.map(str::to_string),
            uidl: self.uidl.clone(),
            log: self.log,
        })
    }

    /// The folder directories of `user`: each `<root>/<user>/.<name>` whose
    /// name [`Config::open`] accepts as a folder and that is a directory
    /// (or a link to one, as `open` would follow it). Sorted by name.
    fn folder_dirs(&self, user: &str) -> Result<Vec<String>> {
        let dir = self.user_dir(user)?;
        let mut folders = Vec::new();
        for name in names_in(&dir)? {
            let Some(folder) = name.strip_prefix('.') else {
                continue; // cur/, new/, tmp/, dovecot-uidlist, poplar-*, ...
            };
            if check_folder(folder).is_err() {
                continue;
            }
            if fs::metadata(dir.join(&name)).is_ok_and(|m| m.is_dir()) {
                folders.push(folder.to_string());
            }
        }
        folders.sort();
        Ok(folders)
    }

    /// The folders of `user` (not the inbox), sorted: the folder
    /// directories that hold a `cur/` or `new/` (a directory made only to
    /// hold a lease is not a folder).
    pub fn folders(&self, user: &str) -> Result<Vec<String>> {
        let dir = self.user_dir(user)?;
        Ok(self
            .folder_dirs(user)?
            .into_iter()
            .filter(|f| {
                let folder = dir.join(format!(".{f}"));
                folder.join("cur").is_dir() || folder.join("new").is_dir()
            })
            .collect())
    }

    /// Every Maildir of `user`: the inbox, then each folder directory.
    pub fn maildirs(&self, user: &str) -> Result<Vec<Maildir>> {
        let mut all = vec![self.open(user, None)?];
        for folder in self.folder_dirs(user)? {
            all.push(self.open(user, Some(&folder))?);
        }
        Ok(all)
    }

    /// The whole of `user`'s mail: the inbox and every folder directory,
    /// counted by [`Maildir::usage`]. A user with no directory yet has none.
    pub fn usage(&self, user: &str) -> Result<Usage> {
        let mut total = Usage::default();
        for maildir in self.maildirs(user)? {
            total.add(maildir.usage()?);
        }
        (self.log)(&format!(
            "usage of {user}: {} messages, {} octets",
            total.messages, total.octets
        ));
        Ok(total)
    }

    /// The users with a directory under the root, sorted, after `after`,
    /// at most `limit`. Names no user can have are skipped.
    pub fn users(&self, after: Option<&str>, limit: u32) -> Result<Vec<String>> {
        let mut users: Vec<String> = names_in(&self.root)?
            .into_iter()
            .filter(|name| check_name("user", name).is_ok())
            .filter(|name| after.is_none_or(|a| name.as_str() > a))
            .filter(|name| fs::metadata(self.root.join(name)).is_ok_and(|m| m.is_dir()))
            .collect();
        users.sort();
        users.truncate(limit as usize);
        Ok(users)
    }
}

/// One message of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub stored_size: u64,
    pub uid: String,
    /// When it was stored (the time that starts its name, else the file's
    /// modification time), in Unix seconds.
    pub received: i64,
}

/// How much mail a user (or one Maildir) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub messages: u64,
    /// Octets as stored.
    pub octets: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.messages = self.messages.saturating_add(other.messages);
        self.octets = self.octets.saturating_add(other.octets);
    }
}

/// What the UPDATE state does with the messages marked deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleAction {
    /// Remove them.
    Expunge,
    /// Add the `T` flag (and move them to `cur/`): hidden from listings.
    Flag,
    /// Move them into this folder of the same user.
    MoveTo(String),
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CommitReport {
    pub deleted: u32,
    pub missing: u32,
}

/// A message file found by a scan.
#[derive(Debug, Clone)]
struct Found {
    /// `new/<name>` or `cur/<name>`.
    key: String,
    /// Octets as stored.
    stored: u64,
    /// Flagged deleted (`T`).
    trashed: bool,
}

/// One Maildir: a user's inbox or one of their folders.
pub struct Maildir {
    dir: PathBuf,
    user: String,
    folder: Option<String>,
    uidl: Uidl,
    log: fn(&str),
}

impl Maildir {
    fn log(&self, msg: &str) {
        (self.log)(msg)
    }

    /// The Maildir's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The user it belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Its folder, `None` for the inbox.
    pub fn folder(&self) -> Option<&str> {
        self.folder.as_deref()
    }

    /// "user" or "user/folder", for messages.
    pub fn name(&self) -> String {
        match &self.folder {
            Some(folder) => format!("{}/{folder}", self.user),
            None => self.user.clone(),
        }
    }

    /// The messages of `new/` and `cur/`: base name -> file. `new/` is read
    /// before `cur/` and `cur/` wins, so a message moved between the two
    /// scans shows up once, under its current name. A missing Maildir is
    /// empty.
    fn scan(&self) -> Result<HashMap<String, Found>> {
        let mut found = HashMap::new();
        for sub in ["new", "cur"] {
            let path = self.dir.join(sub);
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot list", &path, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err("cannot list", &path, e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    self.log(&format!(
                        "skipping non-UTF-8 file name in {}",
                        path.display()
                    ));
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let Some(stored) = stored_size(&entry, &name) else {
                    continue;
                };
                let file = Found {
                    key: format!("{sub}/{name}"),
                    stored,
                    trashed: is_trashed(&name),
                };
                found.insert(base_name(&name).to_string(), file);
            }
        }
        Ok(found)
    }

    /// The base names of every message file (flagged deleted ones too).
    pub fn base_names(&self) -> Result<HashSet<String>> {
        Ok(self.scan()?.into_keys().collect())
    }

    /// Lists `new/` and `cur/`, oldest first, leaving out messages flagged
    /// deleted. A missing Maildir is empty.
    pub fn list(&self) -> Result<Vec<Entry>> {
        self.list_with(false)
    }

    /// As [`Maildir::list`], with the messages flagged deleted too if
    /// `trashed`.
    pub fn list_with(&self, trashed: bool) -> Result<Vec<Entry>> {
        let found = self.scan()?;
        let kept = uidl::read_kept(&self.dir)?;
        let uidlist = match &self.uidl {
            Uidl::Poplar => None,
            Uidl::Dovecot { format } => {
                dovecot::read_uidlist(&self.dir, self.log)?.map(|list| (list, format))
            }
        };

        let mut sorted = Vec::with_capacity(found.len());
        for (base, file) in found {
            if file.trashed && !trashed {
                continue;
            }
            let path = self.dir.join(&file.key);
            let size = match w_size(&base) {
                Some(size) => size,
                None => match crlf_size_of_file(&path) {
                    Ok(size) => size,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("cannot read", &path, e)),
                },
            };
            let dovecot = uidlist
                .as_ref()
                .and_then(|(list, format)| list.uid_of(&base, format, self.log));
            let (uid, rank): (String, Rank) = match (kept.get(&base), dovecot) {
                (Some(uid), dovecot) => (uid.clone(), dovecot.map_or(UNLISTED, |(_, r)| r)),
                (None, Some((uid, rank))) => (uid, rank),
                (None, None) => (poplar_uid(&base), UNLISTED),
            };
            let received = match timestamp(&base) {
                Some(t) => t,
                None => fs::metadata(&path)
                    .ok()
                    .and_then(|m| mtime(&m))
                    .unwrap_or(0),
            };
            let order = (rank, timestamp(&base).unwrap_or(i64::MAX), base);
            sorted.push((
                order,
                Entry {
                    key: file.key,
                    size,
                    stored_size: file.stored,
                    uid,
                    received,
                },
            ));
        }
        // Base names are unique here, so this order is total.
        sorted.sort_by(|a, b| a.0.cmp(&b.0));

        // UIDLs must be unique (the host refuses a listing that repeats
        // one). Only a dovecot-uidlist or a kept UIDL can make two equal;
        // the first in the listing keeps it.
        let mut seen = HashSet::with_capacity(sorted.len());
        let mut out = Vec::with_capacity(sorted.len());
        for ((_, _, base), mut entry) in sorted {
            if !seen.insert(entry.uid.clone()) {
                let replacement = unused_uid(&base, &seen);
                self.log(&format!(
                    "UIDL {:?} of {} repeats an earlier one, using {replacement:?}",
                    entry.uid, entry.key
                ));
                entry.uid = replacement;
                seen.insert(entry.uid.clone());
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Counts the messages of `new/` and `cur/` and their stored sizes by
    /// the rules of [`Maildir::list`] (the same files, a message in both
    /// directories once), messages flagged deleted included (they take
    /// space), without reading any message. A missing Maildir has none.
    pub fn usage(&self) -> Result<Usage> {
        let found = self.scan()?;
        Ok(Usage {
            messages: found.len() as u64,
            octets: found
                .values()
                .fold(0, |sum, f| sum.saturating_add(f.stored)),
        })
    }

    /// Finds the file for `key`: the named file, or (if another client moved
    /// it or changed its flags) a file with the same base name in `cur/` or
    /// `new/`. `None` if the message is gone.
    pub fn resolve(&self, key: &str) -> Result<Option<PathBuf>> {
        let (_, name) = check_key(key)?;
        let path = self.dir.join(key);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => return Ok(Some(path)),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot stat", &path, e)),
        }
        let base = base_name(name);
        for sub in ["cur", "new"] {
            for other in names_in(&self.dir.join(sub))? {
                if !other.starts_with('.') && base_name(&other) == base {
                    self.log(&format!("{key} was moved to {sub}/{other}"));
                    return Ok(Some(self.dir.join(sub).join(other)));
                }
            }
        }
        Ok(None)
    }

    /// Reads up to `len` (at most [`MAX_READ`]) stored octets of `key` from
    /// `offset`; an empty result means end of message.
    pub fn read(&self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let gone = || Error::NotFound(format!("message {key} not found in {}", self.name()));
        let path = self.resolve(key)?.ok_or_else(gone)?;
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(gone()),
            Err(e) => return Err(io_err("cannot open", &path, e)),
        };
        let len = len.min(MAX_READ);
        let mut buf = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.take(u64::from(len)).read_to_end(&mut buf))
            .map_err(|e| io_err("cannot read", &path, e))?;
        Ok(buf)
    }

    /// Creates `tmp/`, `new/` and `cur/` (and a folder's `maildirfolder`
    /// marker) if missing.
    pub fn create(&self) -> Result<()> {
        for sub in ["tmp", "new", "cur"] {
            let path = self.dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| io_err("cannot create", &path, e))?;
        }
        if self.folder.is_some() {
            let marker = self.dir.join("maildirfolder");
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&marker)
                .map_err(|e| io_err("cannot create", &marker, e))?;
        }
        Ok(())
    }

    /// The UPDATE state: applies `action` to the messages of `delete`.
    /// Every key (of `delete` and `retrieved`) and the action are checked,
    /// then `fence` (the lease check) runs, and only then does anything
    /// change. Messages already gone count as missing. The first retrieval
    /// of each message of `retrieved` that stays in this mailbox is
    /// recorded at `now`. `target` is the Maildir of a `move-to` folder.
    pub fn commit(
        &self,
        delete: &[String],
        action: &DeleAction,
        target: Option<&Maildir>,
        retrieved: &[String],
        now: i64,
        fence: impl FnOnce() -> Result<()>,
    ) -> Result<CommitReport> {
        for key in delete.iter().chain(retrieved) {
            check_key(key)?;
        }
        if let DeleAction::MoveTo(folder) = action {
            if self.folder.as_deref() == Some(folder.as_str()) {
                return Err(Error::Invalid(format!(
                    "cannot move messages of {} into the folder they are in",
                    self.name()
                )));
            }
            if target.is_none_or(|t| t.dir == self.dir) {
                return Err(Error::Invalid(format!(
                    "no Maildir for the move-to folder {folder:?}"
                )));
            }
        }
        fence()?;

        let mut report = CommitReport::default();
        let mut paths = Vec::with_capacity(delete.len());
        for key in delete {
            match self.resolve(key)? {
                Some(path) => paths.push(path),
                None => report.missing += 1,
            }
        }
        if let (DeleAction::MoveTo(_), Some(target)) = (action, target)
            && !paths.is_empty()
        {
            target.create()?;
        }
        let mut failure = None;
        let mut gone = HashSet::new();
        let mut moved_kept = Vec::new();
        let kept = match action {
            DeleAction::MoveTo(_) => uidl::read_kept(&self.dir)?,
            _ => HashMap::new(),
        };
        for path in &paths {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let base = base_name(&name).to_string();
            let (dest, removes) = match (action, target) {
                (DeleAction::Expunge, _) => (None, true),
                (DeleAction::Flag, _) => {
                    (Some(self.dir.join("cur").join(with_trashed(&name))), false)
                }
                (DeleAction::MoveTo(_), Some(target)) => {
                    // Keep new/ or cur/, and the name (so its UIDL).
                    let sub = path
                        .parent()
                        .and_then(|p| p.file_name())
                        .and_then(|s| s.to_str())
                        .unwrap_or("cur");
                    (Some(target.dir.join(sub).join(&name)), true)
                }
                (DeleAction::MoveTo(_), None) => unreachable!("checked above"),
            };
            let done = match &dest {
                None => fs::remove_file(path),
                Some(dest) => fs::rename(path, dest),
            };
            match done {
                Ok(()) => {
                    report.deleted += 1;
                    if removes {
                        if let Some(uid) = kept.get(&base) {
                            moved_kept.push((uid.clone(), base.clone()));
                        }
                        gone.insert(base);
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => report.missing += 1,
                Err(e) => {
                    let verb = if dest.is_some() { "move" } else { "delete" };
                    failure = Some(format!("cannot {verb} {}: {e}", path.display()));
                }
            }
        }
        if report.deleted > 0 {
            let mut dirs = vec![self.dir.join("cur"), self.dir.join("new")];
            if let Some(target) = target {
                dirs.extend([target.dir.join("cur"), target.dir.join("new")]);
            }
            for dir in dirs {
                if let Err(e) = sync_dir(&dir) {
                    self.log(&format!("fsync of {} failed: {e}", dir.display()));
                }
            }
        }
        if let Some(target) = target
            && !moved_kept.is_empty()
        {
            // The moved messages keep their kept UIDLs in the new folder.
            uidl::add_kept(&target.dir, &moved_kept)?;
        }
        let retrieved: Vec<String> = retrieved
            .iter()
            .filter_map(|key| check_key(key).ok())
            .map(|(_, name)| base_name(name).to_string())
            .filter(|base| !gone.contains(base))
            .collect();
        if let Err(e) = crate::retrieved::update_retrieved(&self.dir, &retrieved, &gone, None, now)
        {
            // Losing retrieval times only postpones an expiry.
            self.log(&format!("cannot record retrievals: {}", e.message()));
        }
        self.log(&format!(
            "commit in {} ({action:?}): {} deleted, {} already gone",
            self.name(),
            report.deleted,
            report.missing
        ));
        match failure {
            Some(msg) => Err(Error::Io(format!(
                "{msg} ({} of {} messages done)",
                report.deleted,
                delete.len()
            ))),
            None => Ok(report),
        }
    }
}

/// The stored size of a file found in `new/` or `cur/`. It is in the name
/// when the name has a `,S=` field (written by Poplar and Dovecot alike, and
/// trusted as Dovecot trusts it): then the directory entry's type is
/// enough, and a listing costs no stat per message. Else the file's length.
/// `None` for what is not a regular file, or is gone since the readdir.
fn stored_size(entry: &fs::DirEntry, name: &str) -> Option<u64> {
    match (s_size(base_name(name)), entry.file_type()) {
        (Some(size), Ok(t)) if t.is_file() => Some(size),
        (Some(_), Ok(t)) if !t.is_symlink() => None,
        _ => match entry.metadata() {
            Ok(meta) if meta.is_file() => Some(meta.len()),
            _ => None,
        },
    }
}

/// Counts the size of a message as POP3 reports it: every bare LF becomes
/// CRLF, and a last line without a line ending gets one (the host sends
/// it so).
#[derive(Debug, Default)]
pub struct CrlfSize {
    total: u64,
    last: Option<u8>,
}

impl CrlfSize {
    pub fn update(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' && self.last != Some(b'\r') {
                self.total += 1;
            }
            self.last = Some(b);
        }
        self.total += chunk.len() as u64;
    }

    pub fn finish(&self) -> u64 {
        match self.last {
            None | Some(b'\n') => self.total,
            Some(_) => self.total + 2,
        }
    }
}

/// The CRLF size ([`CrlfSize`]) of a stored file, read in chunks.
pub fn crlf_size_of_file(path: &Path) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buf = vec![0; SCAN_CHUNK];
    let mut size = CrlfSize::default();
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(size.finish()),
            Ok(n) => size.update(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uidl::valid_uidl;

    fn config(root: &Path) -> Config {
        Config {
            root: root.to_path_buf(),
            uidl: Uidl::Poplar,
            log: |_| {},
        }
    }

    fn dovecot(root: &Path) -> Config {
        Config {
            uidl: Uidl::Dovecot {
                format: "%08Xu%08Xv".into(),
            },
            ..config(root)
        }
    }

    /// Writes `<root>/u/<rel>` with `data`, creating directories.
    fn put(root: &Path, rel: &str, data: &[u8]) {
        let path = root.join("u").join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn keys(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.key.as_str()).collect()
    }

    /// Expunges `keys` with no lease in the way.
    fn commit(md: &Maildir, keys: &[String]) -> Result<CommitReport> {
        md.commit(keys, &DeleAction::Expunge, None, &[], 0, || Ok(()))
    }

    fn size_of(chunks: &[&[u8]]) -> u64 {
        let mut size = CrlfSize::default();
        chunks.iter().for_each(|c| size.update(c));
        size.finish()
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = Config::from_pairs([]).unwrap();
        assert_eq!(c.root, PathBuf::from("/mail"));
        assert_eq!(c.uidl, Uidl::Poplar);
        let c = Config::from_pairs([("uidl", "dovecot"), ("root", "/m")]).unwrap();
        assert_eq!(
            c.uidl,
            Uidl::Dovecot {
                format: "%08Xu%08Xv".into()
            }
        );
        assert_eq!(c.root, PathBuf::from("/m"));
        assert!(matches!(
            Config::from_pairs([("uidl", "x")]),
            Err(Error::Invalid(_))
        ));
        let bad = [("uidl", "dovecot"), ("uidl_format", "%m")];
        assert!(matches!(Config::from_pairs(bad), Err(Error::Invalid(_))));
        assert!(matches!(
            Config::from_pairs([("rot", "/m")]),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn missing_mailbox_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        assert!(c.open("nobody", None).unwrap().list().unwrap().is_empty());
        assert!(
            c.open("nobody", Some("Junk"))
                .unwrap()
                .list()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn listing_order_and_skips() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        put(root, "cur/1700000002.M1P1.h:2,S", b"c\n");
        put(root, "new/1700000001.M2P1.h", b"b\n");
        put(root, "cur/1700000001.M1P1.h:2,", b"a\n");
        put(root, "cur/900000000.M1P1.h", b"old\n"); // numerically older
        put(root, "new/garbage", b"x\n");
        put(root, "new/.hidden", b"x\n");
        put(root, "tmp/1600000000.M1P1.h", b"x\n");
        fs::create_dir_all(root.join("u/cur/1500000000.dir")).unwrap();
        let list = config(root).open("u", None).unwrap().list().unwrap();
        assert_eq!(
            keys(&list),
            [
                "cur/900000000.M1P1.h",
                "cur/1700000001.M1P1.h:2,",
                "new/1700000001.M2P1.h",
                "cur/1700000002.M1P1.h:2,S",
                "new/garbage",
            ]
        );
        assert_eq!(list[1].size, 3);
        assert_eq!(list[1].stored_size, 2);
    }

    #[test]
    fn a_message_in_both_dirs_is_listed_once() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "new/1700000000.M1P1.h", b"a\n");
        put(tmp.path(), "cur/1700000000.M1P1.h:2,S", b"a\n");
        let list = config(tmp.path()).open("u", None).unwrap().list().unwrap();
        assert_eq!(keys(&list), ["cur/1700000000.M1P1.h:2,S"]);
    }

    #[test]
    fn crlf_sizes() {
        assert_eq!(size_of(&[b"a\nb\n"]), 6);
        assert_eq!(size_of(&[b"a\r\nb\r\n"]), 6);
        assert_eq!(size_of(&[b"a\r\nb\n"]), 6);
        assert_eq!(size_of(&[b"a\nb"]), 6);
        assert_eq!(size_of(&[b"a\r"]), 4);
        assert_eq!(size_of(&[b"a\r", b"\nb\n"]), 6);
        assert_eq!(size_of(&[b"a", b"\n", b"\n"]), 5);
        assert_eq!(size_of(&[]), 0);
    }

    #[test]
    fn file_size_with_cr_at_chunk_boundary() {
        let tmp = tempfile::tempdir().unwrap();
        let mut data = vec![b'x'; SCAN_CHUNK - 1];
        data.extend_from_slice(b"\r\nline\nend"); // '\r' is the chunk's last byte
        put(tmp.path(), "new/1700000000.M1P1.h", &data);
        let list = config(tmp.path()).open("u", None).unwrap().list().unwrap();
        assert_eq!(list[0].stored_size, data.len() as u64);
        assert_eq!(list[0].size, data.len() as u64 + 1 + 2);
    }

    #[test]
    fn w_field_is_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "cur/1700000000.M1P1.h,S=3,W=999:2,S", b"abc");
        let list = config(tmp.path()).open("u", None).unwrap().list().unwrap();
        assert_eq!((list[0].size, list[0].stored_size), (999, 3));
        assert_eq!(list[0].uid, "1700000000.M1P1.h,S=3,W=999");
    }

    #[test]
    fn uid_survives_move_and_flag_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let md = tmp.path().join("u");
        let c = config(tmp.path());
        put(tmp.path(), "new/1700000000.M1P1.h,S=2", b"a\n");
        let first = c.open("u", None).unwrap().list().unwrap()[0].uid.clone();
        assert_eq!(first, "1700000000.M1P1.h,S=2");
        fs::create_dir_all(md.join("cur")).unwrap();
        fs::rename(
            md.join("new/1700000000.M1P1.h,S=2"),
            md.join("cur/1700000000.M1P1.h,S=2:2,S"),
        )
        .unwrap();
        assert_eq!(c.open("u", None).unwrap().list().unwrap()[0].uid, first);
        fs::rename(
            md.join("cur/1700000000.M1P1.h,S=2:2,S"),
            md.join("cur/1700000000.M1P1.h,S=2:2,RS"),
        )
        .unwrap();
        assert_eq!(c.open("u", None).unwrap().list().unwrap()[0].uid, first);
    }

    #[test]
    fn repeated_uidls_are_made_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Message 2's migrated UIDL equals the one Dovecot's format gives 1,
        // and message 3's equals the base name of a message not listed.
        put(
            root,
            "dovecot-uidlist",
            b"3 V1 N4\n1 :1.a\n2 P0000000100000001 :2.a\n3 P4.a :3.a\n",
        );
        for name in ["cur/1.a:2,S", "cur/2.a:2,S", "new/3.a", "new/4.a"] {
            put(root, name, b"x\n");
        }
        let md = dovecot(root).open("u", None).unwrap();
        let uids: Vec<String> = md.list().unwrap().into_iter().map(|e| e.uid).collect();
        assert_eq!(uids[0], "0000000100000001");
        assert_eq!(uids[1], "2.a");
        assert_eq!(uids[2], "4.a");
        assert!(uids[3].starts_with('h') && uids[3].len() == 17, "{uids:?}");
        assert!(uids.iter().all(|u| valid_uidl(u)));
        // Stable from one listing to the next.
        let again: Vec<String> = md.list().unwrap().into_iter().map(|e| e.uid).collect();
        assert_eq!(again, uids);
    }

    #[test]
    fn dovecot_mode_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        put(
            root,
            "dovecot-uidlist",
            b"3 V1234 N9 G00\n\
              7 :1600000000.M1P1.h\n\
              3 Plegacy-uidl :1800000000.M1P1.h\n\
              5 P :1700000000.M1P1.h,S=2\n\
              8 Pbad\x01uidl :1750000000.M1P1.h\n",
        );
        put(root, "cur/1600000000.M1P1.h:2,S", b"a\n");
        put(root, "new/1800000000.M1P1.h", b"b\n");
        put(root, "cur/1700000000.M1P1.h,S=2:2,", b"c\n");
        put(root, "cur/1750000000.M1P1.h", b"d\n");
        put(root, "new/1500000000.M1P1.h", b"e\n"); // not in the uidlist
        let list = dovecot(root).open("u", None).unwrap().list().unwrap();
        let got: Vec<(&str, &str)> = list
            .iter()
            .map(|e| (e.key.as_str(), e.uid.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("new/1800000000.M1P1.h", "legacy-uidl"),
                ("cur/1700000000.M1P1.h,S=2:2,", "1700000000.M1P1.h,S=2"),
                ("cur/1600000000.M1P1.h:2,S", "00000007000004d2"),
                ("cur/1750000000.M1P1.h", "1750000000.M1P1.h"),
                ("new/1500000000.M1P1.h", "1500000000.M1P1.h"),
            ]
        );
        // Without a uidlist, dovecot mode behaves like poplar mode.
        fs::remove_file(root.join("u/dovecot-uidlist")).unwrap();
        let list = dovecot(root).open("u", None).unwrap().list().unwrap();
        assert_eq!(list[0].uid, "1500000000.M1P1.h");
    }

    #[test]
    fn read_ranges() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "cur/1700000000.M1P1.h:2,S", b"hello world");
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        let key = "cur/1700000000.M1P1.h:2,S";
        assert_eq!(md.read(key, 0, 5).unwrap(), b"hello");
        assert_eq!(md.read(key, 6, 100).unwrap(), b"world");
        assert_eq!(md.read(key, 11, 5).unwrap(), b"");
        assert_eq!(md.read(key, 1000, 5).unwrap(), b"");
        assert_eq!(md.read(key, 0, 0).unwrap(), b"");
        assert!(matches!(
            md.read("cur/1700000009.M1P1.h", 0, 5),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn read_is_capped() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "new/1", &vec![b'x'; MAX_READ as usize + 10]);
        let md_config = config(tmp.path());
        let md = md_config.open("u", None).unwrap();
        assert_eq!(
            md.read("new/1", 0, u32::MAX).unwrap().len(),
            MAX_READ as usize
        );
    }

    #[test]
    fn read_follows_a_moved_message() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "new/1700000000.M1P1.h", b"body");
        fs::create_dir_all(tmp.path().join("u/cur")).unwrap();
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        let key = md.list().unwrap()[0].key.clone();
        let dir = tmp.path().join("u");
        fs::rename(dir.join(&key), dir.join("cur/1700000000.M1P1.h:2,S")).unwrap();
        assert_eq!(md.read(&key, 0, 10).unwrap(), b"body");
        fs::rename(
            dir.join("cur/1700000000.M1P1.h:2,S"),
            dir.join("cur/1700000000.M1P1.h:2,RS"),
        )
        .unwrap();
        assert_eq!(
            md.read("cur/1700000000.M1P1.h:2,S", 0, 10).unwrap(),
            b"body"
        );
        fs::remove_file(dir.join("cur/1700000000.M1P1.h:2,RS")).unwrap();
        assert!(matches!(md.read(&key, 0, 10), Err(Error::NotFound(_))));
    }

    #[test]
    fn commit_counts_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        for name in ["new/1.a", "cur/2.a:2,S", "cur/3.a:2,S", "cur/4.a:2,"] {
            put(tmp.path(), name, b"x\n");
        }
        fs::remove_file(dir.join("cur/3.a:2,S")).unwrap(); // another client took it
        fs::rename(dir.join("new/1.a"), dir.join("cur/1.a:2,S")).unwrap(); // moved
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        let keys: Vec<String> = ["new/1.a", "cur/2.a:2,S", "cur/3.a:2,S"]
            .map(String::from)
            .to_vec();
        let report = commit(&md, &keys).unwrap();
        assert_eq!(
            report,
            CommitReport {
                deleted: 2,
                missing: 1
            }
        );
        assert_eq!(keys_of(&md), ["cur/4.a:2,"]);
        assert_eq!(commit(&md, &[]).unwrap(), CommitReport::default());
    }

    fn keys_of(md: &Maildir) -> Vec<String> {
        md.list().unwrap().into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn invalid_names_and_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let long = "a".repeat(256);
        for user in ["", ".", "..", "a/b", "a\0b", long.as_str()] {
            assert!(
                matches!(c.open(user, None), Err(Error::Invalid(_))),
                "{user:?}"
            );
        }
        for folder in ["", ".", "..", ".Junk", "a/b", "a\0", long.as_str()] {
            assert!(
                matches!(c.open("u", Some(folder)), Err(Error::Invalid(_))),
                "{folder:?}"
            );
        }
        assert!(c.open(&"a".repeat(255), Some("Junk.2024")).is_ok());

        put(tmp.path(), "cur/1.a", b"x\n");
        let md = c.open("u", None).unwrap();
        for key in [
            "",
            "x",
            "new/",
            "tmp/1.a",
            "new/.x",
            "cur/a/b",
            "../u/cur/1.a",
            "cur/..",
            "cur",
        ] {
            assert!(
                matches!(md.read(key, 0, 1), Err(Error::Invalid(_))),
                "{key:?}"
            );
        }
        let keys = vec!["cur/1.a".to_string(), "tmp/1.a".to_string()];
        assert!(matches!(commit(&md, &keys), Err(Error::Invalid(_))));
        assert_eq!(keys_of(&md), ["cur/1.a"]); // nothing was deleted
    }

    fn usage(messages: u64, octets: u64) -> Usage {
        Usage { messages, octets }
    }

    #[test]
    fn usage_counts_the_inbox_and_every_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // The inbox: 2 + 3 + 4 octets (the ,S= field is trusted).
        put(root, "cur/1700000001.M1P1.h:2,S", b"ab");
        put(root, "new/1700000002.M1P1.h", b"abc");
        put(root, "new/1700000003.M1P1.h,S=4", b"much longer than 4");
        // Folders, a Maildir++ sub-folder among them: 5 + 6 + 7 octets.
        put(root, ".Junk/cur/1700000004.M1P1.h:2,", b"12345");
        put(root, ".Junk/maildirfolder", b"");
        put(root, ".Sent/new/1700000005.M1P1.h", b"123456");
        put(
            root,
            ".Lists.rust/cur/1700000006.M1P1.h,S=7:2,S",
            b"1234567",
        );
        let c = config(root);
        assert_eq!(c.usage("u").unwrap(), usage(6, 27));
        // Each part is what a listing of it adds up to.
        let mut sum = Usage::default();
        for folder in [None, Some("Junk"), Some("Sent"), Some("Lists.rust")] {
            let list = c.open("u", folder).unwrap().list().unwrap();
            sum.add(usage(
                list.len() as u64,
                list.iter().map(|e| e.stored_size).sum(),
            ));
        }
        assert_eq!(sum, usage(6, 27));

        // Not mail: tmp/ (the inbox's and a folder's), dot-files,
        // directories among the messages, a dot-file that is not a
        // directory, names no folder can have, directories without a dot
        // (Courier's keywords), and an empty folder.
        put(root, "tmp/1700000007.M1P1.h", b"in flight");
        put(root, ".Junk/tmp/1700000008.M1P1.h", b"in flight");
        put(root, "new/.hidden", b"x");
        put(root, ".Sent/cur/.hidden", b"x");
        fs::create_dir_all(root.join("u/cur/1700000009.dir")).unwrap();
        put(root, ".notafolder", b"x");
        put(root, "..dotdot/cur/1700000010.M1P1.h", b"x");
        put(root, "courierimapkeywords/new/1700000011.M1P1.h", b"x");
        put(root, "dovecot-uidlist", b"3 V1 N1\n");
        fs::create_dir_all(root.join("u/.Empty/cur")).unwrap();
        assert_eq!(c.usage("u").unwrap(), usage(6, 27));

        // A message in both new/ and cur/ counts once, as it is listed.
        put(root, "cur/1700000002.M1P1.h:2,S", b"abc");
        assert_eq!(c.usage("u").unwrap(), usage(6, 27));
    }

    #[cfg(unix)]
    #[test]
    fn usage_follows_a_linked_folder_and_skips_other_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        put(root, "new/1700000001.M1P1.h", b"ab");
        fs::create_dir_all(root.join("elsewhere/cur")).unwrap();
        fs::write(root.join("elsewhere/cur/1700000002.M1P1.h"), b"abc").unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("u/.Archive")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("u/.Dangling")).unwrap();
        let c = config(root);
        assert_eq!(c.usage("u").unwrap(), usage(2, 5));
        assert_eq!(
            c.open("u", Some("Archive")).unwrap().list().unwrap().len(),
            1
        );
    }

    #[test]
    fn usage_of_a_user_without_mail_is_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        assert_eq!(c.usage("nobody").unwrap(), Usage::default());
        fs::create_dir_all(tmp.path().join("empty")).unwrap();
        assert_eq!(c.usage("empty").unwrap(), Usage::default());
        for bad in ["", "..", "a/b"] {
            assert!(matches!(c.usage(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn received_comes_from_the_name_else_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "cur/1700000000.M1P1.h:2,S", b"a\n");
        put(tmp.path(), "new/garbage", b"b\n");
        let path = tmp.path().join("u/new/garbage");
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        let list = config(tmp.path()).open("u", None).unwrap().list().unwrap();
        assert_eq!(list[0].received, 1_700_000_000);
        assert_eq!(list[1].received, 1_600_000_000);
    }

    #[test]
    fn trashed_messages_are_hidden_but_count() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "cur/1.a:2,ST", b"gone\n");
        put(tmp.path(), "cur/2.a:2,S", b"here\n");
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        assert_eq!(keys(&md.list().unwrap()), ["cur/2.a:2,S"]);
        assert_eq!(md.list_with(true).unwrap().len(), 2);
        assert_eq!(c.usage("u").unwrap(), usage(2, 10));
        // Still readable by its key.
        assert_eq!(md.read("cur/1.a:2,ST", 0, 10).unwrap(), b"gone\n");
    }

    #[test]
    fn kept_uidls_win() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "cur/1.a:2,S", b"a\n");
        put(tmp.path(), "cur/2.a:2,S", b"b\n");
        put(tmp.path(), "poplar-uidlist", b"legacy-1 1.a\n2.a 9.gone\n");
        let md = config(tmp.path()).open("u", None).unwrap();
        let uids: Vec<String> = md.list().unwrap().into_iter().map(|e| e.uid).collect();
        // The kept "2.a" belongs to a message that is gone: no clash.
        assert_eq!(uids, ["legacy-1", "2.a"]);
        put(
            tmp.path(),
            "poplar-uidlist",
            b"legacy-1 1.a\nlegacy-1 2.a\n",
        );
        let uids: Vec<String> = md.list().unwrap().into_iter().map(|e| e.uid).collect();
        assert_eq!(uids[0], "legacy-1");
        assert_ne!(uids[1], "legacy-1", "made unique");
    }

    fn three_messages(root: &Path) {
        put(root, "new/1.a,S=2", b"1\n");
        put(root, "cur/2.a,S=2:2,S", b"2\n");
        put(root, "cur/3.a,S=2:2,", b"3\n");
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commit_flag_hides_and_keeps() {
        let tmp = tempfile::tempdir().unwrap();
        three_messages(tmp.path());
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        let uids: Vec<String> = md.list().unwrap().into_iter().map(|e| e.uid).collect();
        let delete = strings(&["new/1.a,S=2", "cur/2.a,S=2:2,S", "cur/9.gone"]);
        let report = md
            .commit(&delete, &DeleAction::Flag, None, &[], 0, || Ok(()))
            .unwrap();
        assert_eq!(
            report,
            CommitReport {
                deleted: 2,
                missing: 1
            }
        );
        assert_eq!(keys(&md.list().unwrap()), ["cur/3.a,S=2:2,"]);
        let all = md.list_with(true).unwrap();
        assert_eq!(
            keys(&all),
            ["cur/1.a,S=2:2,T", "cur/2.a,S=2:2,ST", "cur/3.a,S=2:2,"]
        );
        // Their UIDLs did not change, and they still count for quotas.
        let all_uids: Vec<String> = all.into_iter().map(|e| e.uid).collect();
        assert_eq!(all_uids, uids);
        assert_eq!(c.usage("u").unwrap(), usage(3, 6));
    }

    #[test]
    fn commit_move_to_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        three_messages(tmp.path());
        put(tmp.path(), "poplar-uidlist", b"kept-2 2.a,S=2\n");
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        let trash = c.open("u", Some("Trash")).unwrap();
        let before: HashMap<String, String> = md
            .list()
            .unwrap()
            .into_iter()
            .map(|e| (e.uid, e.key))
            .collect();
        let delete = strings(&["new/1.a,S=2", "cur/2.a,S=2:2,S"]);
        let action = DeleAction::MoveTo("Trash".into());
        let report = md
            .commit(&delete, &action, Some(&trash), &[], 0, || Ok(()))
            .unwrap();
        assert_eq!(report.deleted, 2);
        assert_eq!(keys(&md.list().unwrap()), ["cur/3.a,S=2:2,"]);
        // Created as a Maildir++ folder; names (and so UIDLs) kept.
        assert!(tmp.path().join("u/.Trash/maildirfolder").is_file());
        let moved = trash.list().unwrap();
        assert_eq!(keys(&moved), ["new/1.a,S=2", "cur/2.a,S=2:2,S"]);
        for e in &moved {
            assert!(before.contains_key(&e.uid), "{e:?}");
        }
        assert_eq!(moved[1].uid, "kept-2");
        assert_eq!(c.folders("u").unwrap(), ["Trash"]);
        // Moving within the folder itself is refused, changing nothing.
        let err = trash
            .commit(
                &strings(&["new/1.a,S=2"]),
                &action,
                Some(&trash),
                &[],
                0,
                || Ok(()),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
        assert_eq!(trash.list().unwrap().len(), 2);
    }

    #[test]
    fn commit_fence_runs_after_checks_and_before_changes() {
        let tmp = tempfile::tempdir().unwrap();
        three_messages(tmp.path());
        let md = config(tmp.path()).open("u", None).unwrap();
        let ran = std::cell::Cell::new(false);
        // A bad key: refused before the fence.
        let bad = strings(&["new/1.a,S=2", "tmp/x"]);
        let err = md.commit(&bad, &DeleAction::Expunge, None, &[], 0, || {
            ran.set(true);
            Ok(())
        });
        assert!(matches!(err, Err(Error::Invalid(_))));
        assert!(!ran.get());
        // A lost lease: nothing changes.
        let all = strings(&["new/1.a,S=2", "cur/2.a,S=2:2,S", "cur/3.a,S=2:2,"]);
        let err = md.commit(&all, &DeleAction::Expunge, None, &all, 5, || {
            Err(Error::LeaseLost("gone".into()))
        });
        assert!(matches!(err, Err(Error::LeaseLost(_))));
        assert_eq!(md.list().unwrap().len(), 3);
        assert!(!tmp.path().join("u/poplar-retrieved").exists());
    }

    #[test]
    fn commit_records_retrievals_of_what_stays() {
        let tmp = tempfile::tempdir().unwrap();
        three_messages(tmp.path());
        let md = config(tmp.path()).open("u", None).unwrap();
        let retrieved = strings(&["new/1.a,S=2", "cur/2.a,S=2:2,S"]);
        let delete = strings(&["new/1.a,S=2"]);
        md.commit(&delete, &DeleAction::Expunge, None, &retrieved, 100, || {
            Ok(())
        })
        .unwrap();
        let map = crate::retrieved::read_retrieved(md.dir()).unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(map["2.a,S=2"], 100);
        // A later retrieval keeps the first time.
        md.commit(
            &[],
            &DeleAction::Expunge,
            None,
            &retrieved[1..],
            200,
            || Ok(()),
        )
        .unwrap();
        assert_eq!(
            crate::retrieved::read_retrieved(md.dir()).unwrap()["2.a,S=2"],
            100
        );
    }

    #[test]
    fn users_and_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        assert!(c.users(None, 10).unwrap().is_empty());
        for user in ["carol", "alice", "bob"] {
            fs::create_dir_all(tmp.path().join(user).join("cur")).unwrap();
        }
        fs::write(tmp.path().join("not-a-dir"), b"").unwrap();
        assert_eq!(c.users(None, 10).unwrap(), ["alice", "bob", "carol"]);
        assert_eq!(c.users(None, 2).unwrap(), ["alice", "bob"]);
        assert_eq!(c.users(Some("bob"), 10).unwrap(), ["carol"]);
        assert!(c.users(Some("carol"), 10).unwrap().is_empty());

        put(tmp.path(), ".Sent/cur/1.a", b"x");
        put(tmp.path(), ".Lists.rust/new/2.a", b"x");
        fs::create_dir_all(tmp.path().join("u/.OnlyLease")).unwrap();
        fs::create_dir_all(tmp.path().join("u/..Bad/cur")).unwrap();
        put(tmp.path(), ".notafolder", b"x");
        assert_eq!(c.folders("u").unwrap(), ["Lists.rust", "Sent"]);
        assert!(c.folders("nobody").unwrap().is_empty());
        assert!(matches!(c.folders("../x"), Err(Error::Invalid(_))));
    }
}
