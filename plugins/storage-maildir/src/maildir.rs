//! Maildir++ storage on a plain directory tree, with no dependency on the
//! plugin bindings: everything here works on a `std::path::Path` and is
//! tested natively. See the crate docs for the behaviour it implements.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest range one `read` returns.
pub const MAX_READ: u32 = 1 << 20;
/// Chunk size for reading a message being delivered.
const DELIVER_CHUNK: u32 = 256 * 1024;
/// Chunk size for scanning a stored file to compute its CRLF size.
const SCAN_CHUNK: usize = 64 * 1024;

/// How old a file left in `tmp/` must be before delivery removes it.
pub const TMP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(36 * 3600);

/// Why an operation failed; lib.rs maps these onto `storage-error`.
#[derive(Debug)]
pub enum Error {
    /// A bad name, key or configuration value (retrying will not help).
    Invalid(String),
    /// The message does not exist.
    NotFound(String),
    /// An I/O failure, probably passing.
    Io(String),
}

type Result<T> = std::result::Result<T, Error>;

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Io(format!("{what} {}: {e}", path.display()))
}

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
                expand_uidl(format, 1, 1, "base", "guid")
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

    /// The Maildir of `user` (its inbox, or folder `folder`), after checking
    /// both names.
    pub fn open(&self, user: &str, folder: Option<&str>) -> Result<Maildir> {
        check_name("user", user)?;
        let mut dir = self.root.join(user);
        if let Some(folder) = folder {
            check_name("folder", folder)?;
            if folder.starts_with('.') {
                return Err(Error::Invalid(format!(
                    "folder name {folder:?} starts with '.'"
                )));
            }
            dir.push(format!(".{folder}"));
        }
        Ok(Maildir {
            dir,
            is_folder: folder.is_some(),
            uidl: self.uidl.clone(),
            log: self.log,
        })
    }

    /// The whole of `user`'s mail: the inbox and every Maildir++ folder
    /// (each directory `<root>/<user>/.<name>` whose name [`Config::open`]
    /// accepts as a folder), counted by [`Maildir::usage`]. A user with no
    /// directory yet has none.
    pub fn usage(&self, user: &str) -> Result<Usage> {
        let inbox = self.open(user, None)?;
        let mut total = inbox.usage()?;
        let entries = match fs::read_dir(&inbox.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(total),
            Err(e) => return Err(io_err("cannot list", &inbox.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("cannot list", &inbox.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // no mailbox can name it
            };
            let Some(folder) = name.strip_prefix('.') else {
                continue; // cur/, new/, tmp/, dovecot-uidlist, ...
            };
            if folder.starts_with('.') || check_name("folder", folder).is_err() {
                continue;
            }
            // A directory, or a link to one (as `open` would follow it).
            let is_dir = match entry.file_type() {
                Ok(t) if t.is_symlink() => fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()),
                Ok(t) => t.is_dir(),
                Err(_) => false,
            };
            if is_dir {
                total.add(self.open(user, Some(folder))?.usage()?);
            }
        }
        (self.log)(&format!(
            "usage of {user}: {} messages, {} octets",
            total.messages, total.octets
        ));
        Ok(total)
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.contains(['/', '\0'])
        || name == "."
        || name == "..";
    if bad {
        return Err(Error::Invalid(format!("invalid {what} name {name:?}")));
    }
    Ok(())
}

/// One message of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub stored_size: u64,
    pub uid: String,
}

/// How much mail a user (or one Maildir) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub messages: u64,
    /// Octets as stored.
    pub octets: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.messages = self.messages.saturating_add(other.messages);
        self.octets = self.octets.saturating_add(other.octets);
    }
}

/// What `commit` did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CommitReport {
    pub deleted: u32,
    pub missing: u32,
}

/// One Maildir: a user's inbox or one of their folders.
pub struct Maildir {
    dir: PathBuf,
    is_folder: bool,
    uidl: Uidl,
    log: fn(&str),
}

impl Maildir {
    fn log(&self, msg: &str) {
        (self.log)(msg)
    }

    /// The messages of `new/` and `cur/`: base name -> (key, stored
    /// size). `new/` is read before `cur/` and `cur/` wins, so a message
    /// moved between the two scans shows up once, under its current name.
    /// A missing Maildir is empty.
    fn scan(&self) -> Result<HashMap<String, (String, u64)>> {
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
                found.insert(
                    base_name(&name).to_string(),
                    (format!("{sub}/{name}"), stored),
                );
            }
        }
        Ok(found)
    }

    /// Lists `new/` and `cur/`, oldest first. A missing Maildir is empty.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let found = self.scan()?;

        let uidlist = match &self.uidl {
            Uidl::Poplar => None,
            Uidl::Dovecot { .. } => self.read_uidlist()?,
        };

        let mut sorted = Vec::with_capacity(found.len());
        for (base, (key, stored_size)) in found {
            let size = match w_size(&base) {
                Some(size) => size,
                None => match crlf_size_of_file(&self.dir.join(&key)) {
                    Ok(size) => size,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("cannot read", &self.dir.join(&key), e)),
                },
            };
            let record = uidlist.as_ref().and_then(|list| list.records.get(&base));
            let (uid, rank) = match (record, &self.uidl, &uidlist) {
                (Some(rec), Uidl::Dovecot { format }, Some(list)) => {
                    (self.dovecot_uid(rec, list, format, &base), rec.rank())
                }
                _ => (poplar_uid(&base), (2, 0, 0)),
            };
            let order = (rank, timestamp(&base), base);
            sorted.push((
                order,
                Entry {
                    key,
                    size,
                    stored_size,
                    uid,
                },
            ));
        }
        // Base names are unique here, so this order is total.
        sorted.sort_by(|a, b| a.0.cmp(&b.0));

        // UIDLs must be unique (the host refuses a listing that repeats
        // one). Only a dovecot-uidlist can make two equal (a `P` field equal
        // to another message's UIDL); the first in the listing keeps it.
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
    /// directories once), without reading any message. A missing Maildir
    /// has none.
    pub fn usage(&self) -> Result<Usage> {
        let found = self.scan()?;
        Ok(Usage {
            messages: found.len() as u64,
            octets: found.values().fold(0, |sum, &(_, n)| sum.saturating_add(n)),
        })
    }

    fn read_uidlist(&self) -> Result<Option<UidList>> {
        let path = self.dir.join("dovecot-uidlist");
        let text = match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("cannot read", &path, e)),
        };
        let list = parse_uidlist(&text);
        match &list {
            None => self.log(&format!("{}: unknown format, ignored", path.display())),
            Some(UidList {
                skipped,
                first_skipped: Some((line, why)),
                ..
            }) => self.log(&format!(
                "{}: skipped {skipped} malformed line(s); first: line {line}: {why}",
                path.display()
            )),
            Some(_) => {}
        }
        Ok(list)
    }

    fn dovecot_uid(&self, rec: &UidRecord, list: &UidList, format: &str, base: &str) -> String {
        let uidl = match rec.pop3_uidl.as_deref() {
            Some("") => base.to_string(), // Dovecot: an empty P means "the base name"
            Some(p) => p.to_string(),
            None => {
                let guid = rec.guid.as_deref().unwrap_or(base);
                expand_uidl(format, rec.uid, list.validity, base, guid).unwrap_or_default()
            }
        };
        if valid_uidl(&uidl) {
            uidl
        } else {
            self.log(&format!(
                "UIDL {uidl:?} from dovecot-uidlist is not valid, using own"
            ));
            poplar_uid(base)
        }
    }

    /// Finds the file for `key`: the named file, or (if another client moved
    /// it or changed its flags) a file with the same base name in `cur/` or
    /// `new/`. `None` if the message is gone.
    fn resolve(&self, key: &str) -> Result<Option<PathBuf>> {
        let name = check_key(key)?;
        let path = self.dir.join(key);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => return Ok(Some(path)),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot stat", &path, e)),
        }
        let base = base_name(name);
        for sub in ["cur", "new"] {
            let dir = self.dir.join(sub);
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot list", &dir, e)),
            };
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(other) = file_name.to_str() else {
                    continue;
                };
                if !other.starts_with('.') && base_name(other) == base {
                    self.log(&format!("{key} was moved to {sub}/{other}"));
                    return Ok(Some(dir.join(other)));
                }
            }
        }
        Ok(None)
    }

    /// Reads up to `len` (at most [`MAX_READ`]) stored octets of `key` from
    /// `offset`; an empty result means end of message.
    pub fn read(&self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let gone = || Error::NotFound(format!("message {key} not found"));
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

    /// Deletes the messages of `keys`. All keys are checked and resolved
    /// before anything is removed.
    pub fn commit(&self, keys: &[String]) -> Result<CommitReport> {
        for key in keys {
            check_key(key)?;
        }
        let mut report = CommitReport::default();
        let mut paths = Vec::with_capacity(keys.len());
        for key in keys {
            match self.resolve(key)? {
                Some(path) => paths.push(path),
                None => report.missing += 1,
            }
        }
        let mut failure = None;
        for path in &paths {
            match fs::remove_file(path) {
                Ok(()) => report.deleted += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => report.missing += 1,
                Err(e) => failure = Some(format!("cannot delete {}: {e}", path.display())),
            }
        }
        if report.deleted > 0 {
            for sub in ["cur", "new"] {
                if let Err(e) = sync_dir(&self.dir.join(sub)) {
                    self.log(&format!("fsync of {sub}/ failed: {e}"));
                }
            }
        }
        self.log(&format!(
            "commit in {}: {} deleted, {} already gone",
            self.dir.display(),
            report.deleted,
            report.missing
        ));
        match failure {
            Some(msg) => Err(Error::Io(format!(
                "{msg} ({} of {} messages deleted)",
                report.deleted,
                keys.len()
            ))),
            None => Ok(report),
        }
    }

    /// Stores a new message, pulling it in chunks from `read_chunk(offset,
    /// len)` (an empty chunk ends it): written to `tmp/`, synced, then
    /// renamed into `new/`. Returns the new key.
    pub fn deliver(&self, read_chunk: impl FnMut(u64, u32) -> Vec<u8>) -> Result<String> {
        for sub in ["tmp", "new", "cur"] {
            let path = self.dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| io_err("cannot create", &path, e))?;
        }
        if self.is_folder {
            let marker = self.dir.join("maildirfolder");
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&marker)
                .map_err(|e| io_err("cannot create", &marker, e))?;
        }

        self.sweep_tmp();
        let (name, file) = self.create_tmp()?;
        let tmp = self.dir.join("tmp").join(&name);
        let result = self.write_and_publish(&name, file, read_chunk);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes files that a crashed delivery left in `tmp/` more than
    /// [`TMP_MAX_AGE`] ago (as qmail and Dovecot do); they were never
    /// visible as messages. Failures are ignored: this is housekeeping.
    fn sweep_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        let now = std::time::SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > TMP_MAX_AGE);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn create_tmp(&self) -> Result<(String, File)> {
        let mut attempts = 0;
        loop {
            let name = unique_name();
            let path = self.dir.join("tmp").join(&name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((name, file)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempts < 10 => attempts += 1,
                Err(e) => return Err(io_err("cannot create", &path, e)),
            }
        }
    }

    fn write_and_publish(
        &self,
        name: &str,
        mut file: File,
        mut read_chunk: impl FnMut(u64, u32) -> Vec<u8>,
    ) -> Result<String> {
        let tmp = self.dir.join("tmp").join(name);
        let mut size = CrlfSize::default();
        let mut stored = 0u64;
        loop {
            let chunk = read_chunk(stored, DELIVER_CHUNK);
            if chunk.is_empty() {
                break;
            }
            size.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| io_err("cannot write", &tmp, e))?;
            stored += chunk.len() as u64;
        }
        file.sync_all()
            .map_err(|e| io_err("cannot fsync", &tmp, e))?;
        drop(file);

        let final_name = format!("{name},S={stored},W={}", size.finish());
        let dest = self.dir.join("new").join(&final_name);
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(Error::Io(format!("{} already exists", dest.display())));
        }
        fs::rename(&tmp, &dest).map_err(|e| io_err("cannot rename into", &dest, e))?;
        if let Err(e) = sync_dir(&self.dir.join("new")) {
            let _ = fs::remove_file(&dest);
            return Err(io_err("cannot fsync", &self.dir.join("new"), e));
        }
        self.log(&format!(
            "delivered new/{final_name} to {}",
            self.dir.display()
        ));
        Ok(format!("new/{final_name}"))
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

/// Checks a key (`new/<name>` or `cur/<name>`) and returns its file name.
fn check_key(key: &str) -> Result<&str> {
    let name = key
        .strip_prefix("new/")
        .or_else(|| key.strip_prefix("cur/"));
    match name {
        Some(name)
            if !name.is_empty()
                && name.len() <= 255
                && !name.starts_with('.')
                && !name.contains(['/', '\0']) =>
        {
            Ok(name)
        }
        _ => Err(Error::Invalid(format!("invalid message key {key:?}"))),
    }
}

/// Fsyncs a directory so that a rename or unlink in it is durable. Platforms
/// that cannot open or sync a directory are not an error.
fn sync_dir(path: &Path) -> io::Result<()> {
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

/// A name for a new message, unique across instances and hosts sharing the
/// Maildir: `<secs>.M<micros>P<random>Q<counter>.poplar`.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState is seeded from the system's randomness (WASI's in wasm).
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(now.as_nanos());
    hasher.write_u64(counter);
    let random = hasher.finish();
    format!(
        "{}.M{}P{random:016x}Q{counter}.poplar",
        now.as_secs(),
        now.subsec_micros()
    )
}

/// The Maildir base name: the file name without its `:2,FLAGS` suffix.
pub fn base_name(name: &str) -> &str {
    name.split_once(':').map_or(name, |(base, _)| base)
}

/// The delivery time at the start of a Maildir name; names without one sort
/// last.
fn timestamp(base: &str) -> u64 {
    let head = base.split('.').next().unwrap_or("");
    if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) {
        head.parse().unwrap_or(u64::MAX)
    } else {
        u64::MAX
    }
}

/// The `,S=<n>` field of a base name: the size as stored.
fn s_size(base: &str) -> Option<u64> {
    base.split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix("S=")?.parse().ok())
}

/// The `,W=<n>` field of a base name: the size with CRLF line endings.
fn w_size(base: &str) -> Option<u64> {
    base.split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix("W=")?.parse().ok())
}

/// Whether `s` may be used as a POP3 unique-id (RFC 1939: 1 to 70
/// characters in 0x21..0x7E).
pub fn valid_uidl(s: &str) -> bool {
    (1..=70).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The UIDL of a message in "poplar" mode: its base name if that is a valid
/// UIDL, else `h` followed by the 64-bit FNV-1a hash of the base name in 16
/// hex digits.
pub fn poplar_uid(base: &str) -> String {
    if valid_uidl(base) {
        base.to_string()
    } else {
        format!("h{:016x}", fnv1a64(base.as_bytes()))
    }
}

/// A UIDL for the message with base name `base` that is not in `used`:
/// its poplar UIDL, else `h` and a hash of the base name and a counter.
fn unused_uid(base: &str, used: &HashSet<String>) -> String {
    let own = poplar_uid(base);
    if !used.contains(&own) {
        return own;
    }
    (1u64..)
        .map(|n| format!("h{:016x}", fnv1a64(format!("{base}#{n}").as_bytes())))
        .find(|uid| !used.contains(uid))
        .unwrap_or(own) // unreachable: `used` is finite
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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

fn crlf_size_of_file(path: &Path) -> io::Result<u64> {
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

/// The parts of a `dovecot-uidlist` this plugin uses.
#[derive(Debug, Default)]
struct UidList {
    validity: u64,
    /// Keyed by base name.
    records: HashMap<String, UidRecord>,
    /// Lines that could not be parsed and were skipped.
    skipped: usize,
    /// The first of them: its line number (1-based) and what is wrong.
    first_skipped: Option<(usize, &'static str)>,
}

impl UidList {
    fn skip(&mut self, line: usize, why: &'static str) {
        self.skipped += 1;
        self.first_skipped.get_or_insert((line, why));
    }
}

#[derive(Debug, Default, PartialEq)]
struct UidRecord {
    uid: u64,
    pop3_uidl: Option<String>,
    pop3_order: Option<u64>,
    guid: Option<String>,
}

impl UidRecord {
    /// Dovecot's POP3 order: messages with an `O` number first, by that
    /// number, then the others by UID (`O0` counts as no number, as in
    /// Dovecot's sort).
    fn rank(&self) -> (u8, u64, u64) {
        match self.pop3_order {
            Some(order) => (0, order, self.uid),
            None => (1, self.uid, 0),
        }
    }
}

/// Parses `dovecot-uidlist`: version 3 (`3 V<validity> N<next> ...`, lines
/// `<uid> [<key><value> ...] :<filename>`), or versions 1 and 2
/// (`1 <validity> <next>`, lines `<uid> [<flags>] <filename>`). `None` if
/// the header is not recognised. Bad lines are skipped and counted in
/// `skipped`; nothing in the text makes this panic.
fn parse_uidlist(text: &str) -> Option<UidList> {
    let mut lines = text.lines();
    let mut header = lines.next()?.split_ascii_whitespace();
    let version = header.next()?;
    let mut list = UidList::default();
    match version {
        "3" => {
            list.validity = header.find_map(|f| f.strip_prefix('V')?.parse().ok())?;
        }
        "1" | "2" => list.validity = header.next()?.parse().ok()?,
        _ => return None,
    }
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        if line.trim().is_empty() {
            continue;
        }
        let Some((uid, rest)) = line.split_once(' ') else {
            list.skip(number, "no file name");
            continue;
        };
        let uid = match uid.parse::<u64>() {
            Ok(uid) if uid > 0 && uid <= u64::from(u32::MAX) => uid,
            _ => {
                list.skip(number, "the UID is not a number from 1 to 2^32-1");
                continue;
            }
        };
        let mut rec = UidRecord {
            uid,
            ..UidRecord::default()
        };
        let filename = if version == "3" {
            let (fields, filename) = match rest.strip_prefix(':') {
                Some(filename) => ("", filename),
                None => match rest.split_once(" :") {
                    Some(parts) => parts,
                    None => {
                        list.skip(number, "no ':' before the file name");
                        continue;
                    }
                },
            };
            for field in fields.split_ascii_whitespace() {
                let mut chars = field.chars();
                let key = chars.next();
                let value = chars.as_str();
                match key {
                    Some('P') => rec.pop3_uidl = Some(value.to_string()),
                    Some('O') => rec.pop3_order = value.parse().ok().filter(|&o| o > 0),
                    Some('G') => rec.guid = Some(value.to_string()).filter(|g| !g.is_empty()),
                    _ => {} // W, S and future extensions
                }
            }
            filename
        } else {
            rest.split_ascii_whitespace().last().unwrap_or("")
        };
        let base = base_name(filename);
        if base.is_empty() {
            list.skip(number, "empty file name");
            continue;
        }
        if list.records.contains_key(base) {
            list.skip(number, "the file is listed twice");
            continue;
        }
        list.records.insert(base.to_string(), rec);
    }
    Some(list)
}

/// Expands a Dovecot `pop3_uidl_format` (its 2.x syntax):
/// `%u` UID, `%v` UIDVALIDITY, `%f` base file name, `%g` GUID, `%%`. A
/// conversion may carry a width (`%08u` pads with zeros, `%8u` cuts to 8
/// characters, as Dovecot does) and `X` or `x` to print a number in
/// hexadecimal. Dovecot prints `%X` in lower case, and so does this.
pub fn expand_uidl(
    format: &str,
    uid: u64,
    validity: u64,
    base: &str,
    guid: &str,
) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = format;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let spec = &rest[pos + 1..];
        let digits = spec.bytes().take_while(u8::is_ascii_digit).count();
        let width: usize = spec[..digits].parse().unwrap_or(0);
        if width > 70 {
            return Err(format!("width {width} is over 70"));
        }
        let hex = matches!(spec.as_bytes().get(digits), Some(b'X' | b'x'));
        let at = digits + usize::from(hex);
        let value = match spec[at..].chars().next() {
            Some('%') => "%".to_string(),
            Some('u') => uid.to_string(),
            Some('v') => validity.to_string(),
            Some('f') => base.to_string(),
            Some('g') => guid.to_string(),
            Some(other) => return Err(format!("unsupported variable %{other}")),
            None => return Err("format ends inside a %-conversion".to_string()),
        };
        rest = &spec[at + 1..];

        let value = if hex {
            // Like Dovecot, a value that is not a number counts as 0.
            format!("{:x}", value.parse::<u64>().unwrap_or(0))
        } else {
            value
        };
        if width == 0 {
            out.push_str(&value);
        } else if spec.starts_with('0') {
            // "%08u": pad with zeros, never cut.
            out.extend(std::iter::repeat_n(
                '0',
                width.saturating_sub(value.chars().count()),
            ));
            out.push_str(&value);
        } else {
            // "%8u": Dovecot keeps at most 8 characters.
            out.extend(value.chars().take(width));
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn weird_names_are_hashed() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        let long = "1".repeat(71);
        let uid = poplar_uid(&long);
        assert_eq!(uid, format!("h{:016x}", fnv1a64(long.as_bytes())));
        assert_eq!(uid.len(), 17);
        assert!(valid_uidl(&uid));
        assert_eq!(poplar_uid(&long), uid); // stable
        assert!(poplar_uid("caf\u{e9}").starts_with('h'));
        assert!(poplar_uid("a b").starts_with('h'));
        assert_eq!(poplar_uid(&"1".repeat(70)), "1".repeat(70));
    }

    #[test]
    fn uidl_format_expansion() {
        let e = |f: &str| expand_uidl(f, 0xabc, 1234, "1700.M1.h", "g1").unwrap();
        assert_eq!(e("%08Xu%08Xv"), "00000abc000004d2");
        assert_eq!(e("%08xu"), "00000abc");
        assert_eq!(e("%Xu"), "abc");
        assert_eq!(e("%u.%v"), "2748.1234");
        assert_eq!(e("%f/%g/%%"), "1700.M1.h/g1/%");
        assert_eq!(e("%4f"), "1700");
        assert_eq!(e("%06u"), "002748");
        assert_eq!(e("%02u"), "2748"); // zero padding never cuts
        assert!(expand_uidl("%m", 1, 1, "", "").is_err());
        assert!(expand_uidl("abc%", 1, 1, "", "").is_err());
        assert!(expand_uidl("%08X", 1, 1, "", "").is_err());
        assert!(expand_uidl("%99u", 1, 1, "", "").is_err());
        assert_eq!(
            expand_uidl("\u{e9}%u\u{e9}", 1, 1, "", "").unwrap(),
            "\u{e9}1\u{e9}"
        );
    }

    #[test]
    fn uidlist_v3() {
        let text = "3 V1234 N5 G0123abcd\n\
                    1 :1700000000.M1P1.h,S=2\n\
                    2 W10 Plegacy-uidl :1700000001.M1P1.h\n\
                    3 GXYZ S7 :1700000002.M1P1.h:2,S\n\
                    4 P :1700000003.M1P1.h\n\
                    5 O1 :1700000004.M1P1.h\n\
                    junk\n";
        let list = parse_uidlist(text).unwrap();
        assert_eq!(list.validity, 1234);
        assert_eq!(list.records.len(), 5);
        assert_eq!(list.records["1700000000.M1P1.h,S=2"].uid, 1);
        let rec = &list.records["1700000001.M1P1.h"];
        assert_eq!(rec.pop3_uidl.as_deref(), Some("legacy-uidl"));
        assert_eq!(
            list.records["1700000002.M1P1.h"].guid.as_deref(),
            Some("XYZ")
        );
        assert_eq!(
            list.records["1700000003.M1P1.h"].pop3_uidl.as_deref(),
            Some("")
        );
        assert_eq!(list.records["1700000004.M1P1.h"].pop3_order, Some(1));
        assert_eq!(
            (list.skipped, list.first_skipped),
            (1, Some((7, "no file name")))
        );
        assert!(parse_uidlist("9 V1\n").is_none());
        assert!(parse_uidlist("3 N5 G00\n").is_none()); // no UIDVALIDITY
        assert!(parse_uidlist("").is_none());
    }

    #[test]
    fn uidlist_malformed_lines_are_skipped() {
        let text = "3 V7 N9\n\
                    1 :1.a\n\
                    \n\
                    x :2.a\n\
                    0 :3.a\n\
                    99999999999 :4.a\n\
                    5 W10 5.a\n\
                    6 \u{e9}t\u{e9} \u{e9} P\u{e9} :6.a\n\
                    7 :\n\
                    8 :1.a:2,S\n\
                    9 O0 Ox O :9.a\n\
                    10 :10.a:2,S\r\n";
        let list = parse_uidlist(text).unwrap();
        assert_eq!(list.skipped, 6);
        assert_eq!(
            list.first_skipped,
            Some((4, "the UID is not a number from 1 to 2^32-1"))
        );
        let mut names: Vec<&str> = list.records.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["1.a", "10.a", "6.a", "9.a"]);
        assert_eq!(list.records["1.a"].uid, 1); // the first of the two
        assert_eq!(list.records["6.a"].pop3_uidl.as_deref(), Some("\u{e9}"));
        assert_eq!(list.records["9.a"].pop3_order, None);
        assert_eq!(list.records["9.a"].rank(), (1, 9, 0));
    }

    #[test]
    fn uidlist_parser_never_panics() {
        // Random lines over an alphabet of the format's own pieces, with
        // multi-byte characters where a field key would be.
        let pieces = [
            "3",
            " ",
            "V",
            "N",
            "G",
            ":",
            "P",
            "O",
            "W",
            "S",
            "1",
            "0",
            "\n",
            "\u{e9}",
            "\u{1F600}",
            ":2,",
            "99999999999999999999999",
            "\r",
            "\0",
            "x",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut text = String::from(if next().is_multiple_of(3) {
                "1 5 6\n"
            } else {
                "3 V5 N6\n"
            });
            for _ in 0..next() % 40 {
                text.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let _ = parse_uidlist(&text);
            let _ = parse_uidlist(&text[text.find('\n').map_or(0, |i| i + 1)..]);
        }
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
    fn uidlist_v1() {
        let list =
            parse_uidlist("1 1234 3\n1 1700000000.M1P1.h\n2 1700000001.M1P1.h:2,S\n").unwrap();
        assert_eq!(list.validity, 1234);
        assert_eq!(list.records["1700000000.M1P1.h"].uid, 1);
        assert_eq!(list.records["1700000001.M1P1.h"].uid, 2);
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
        let report = md.commit(&keys).unwrap();
        assert_eq!(
            report,
            CommitReport {
                deleted: 2,
                missing: 1
            }
        );
        assert_eq!(keys_of(&md), ["cur/4.a:2,"]);
        assert_eq!(md.commit(&[]).unwrap(), CommitReport::default());
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
        assert!(matches!(md.commit(&keys), Err(Error::Invalid(_))));
        assert_eq!(keys_of(&md), ["cur/1.a"]); // nothing was deleted
    }

    fn chunks_of(data: &[u8]) -> impl FnMut(u64, u32) -> Vec<u8> + '_ {
        move |offset, len| {
            let start = (offset as usize).min(data.len());
            let end = (start + len as usize).min(data.len());
            data[start..end].to_vec()
        }
    }

    #[test]
    fn deliver_is_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        let mut data = Vec::new();
        for i in 0..60_000 {
            data.extend_from_slice(format!("line {i}\n").as_bytes()); // LF only, > 256 KiB
        }
        data.extend_from_slice(b"no newline");
        let calls = std::cell::Cell::new(0);
        let mut source = chunks_of(&data);
        let key = md
            .deliver(|offset, len| {
                calls.set(calls.get() + 1);
                assert_eq!(fs::read_dir(tmp.path().join("u/new")).unwrap().count(), 0);
                source(offset, len)
            })
            .unwrap();
        assert!(calls.get() > 2);
        let (stored, crlf) = (data.len() as u64, data.len() as u64 + 60_000 + 2);
        assert!(key.starts_with("new/"), "{key}");
        assert!(
            key.ends_with(&format!(".poplar,S={stored},W={crlf}")),
            "{key}"
        );
        assert_eq!(fs::read_dir(tmp.path().join("u/tmp")).unwrap().count(), 0);
        assert_eq!(fs::read(tmp.path().join("u").join(&key)).unwrap(), data);
        let list = md.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].size, list[0].stored_size), (crlf, stored));
        assert_eq!(
            crlf_size_of_file(&tmp.path().join("u").join(&key)).unwrap(),
            crlf
        );
        assert!(valid_uidl(&list[0].uid));
        assert!(!tmp.path().join("u/maildirfolder").exists());

        let key2 = md.deliver(chunks_of(b"x\r\n")).unwrap();
        assert_ne!(key, key2);
        assert_eq!(md.list().unwrap().len(), 2);
    }

    #[test]
    fn deliver_into_new_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let md = c.open("u", Some("Junk")).unwrap();
        let key = md.deliver(chunks_of(b"Subject: x\r\n\r\nhi\r\n")).unwrap();
        let dir = tmp.path().join("u/.Junk");
        assert!(dir.join("maildirfolder").is_file());
        assert!(dir.join("cur").is_dir() && dir.join("tmp").is_dir());
        assert_eq!(md.read(&key, 0, 100).unwrap(), b"Subject: x\r\n\r\nhi\r\n");
        assert!(c.open("u", None).unwrap().list().unwrap().is_empty());
    }

    #[test]
    fn failed_delivery_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        let dir = tmp.path().join("u");
        let data = vec![b'x'; 600_000];
        let mut source = chunks_of(&data);
        let result = md.deliver(|offset, len| {
            if offset == 0 {
                // Sabotage the rename: new/ becomes a regular file.
                fs::remove_dir(dir.join("new")).unwrap();
                fs::write(dir.join("new"), b"").unwrap();
            }
            source(offset, len)
        });
        assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn delivery_sweeps_stale_tmp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let md = c.open("u", None).unwrap();
        md.deliver(chunks_of(b"x\r\n")).unwrap();
        let dir = tmp.path().join("u/tmp");
        // Left by crashed deliveries: one long ago, one just now.
        let stale = dir.join("1.crashed");
        let fresh = dir.join("2.in-flight");
        fs::write(&stale, b"partial").unwrap();
        fs::write(&fresh, b"partial").unwrap();
        let long_ago =
            std::time::SystemTime::now() - TMP_MAX_AGE - std::time::Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        md.deliver(chunks_of(b"y\r\n")).unwrap();
        assert!(!stale.exists(), "stale tmp file removed");
        assert!(fresh.exists(), "a recent one may still be in use");
        assert_eq!(md.list().unwrap().len(), 2);
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
    fn usage_grows_with_deliveries_to_inbox_and_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        c.open("u", None)
            .unwrap()
            .deliver(chunks_of(b"one\n"))
            .unwrap();
        assert_eq!(c.usage("u").unwrap(), usage(1, 4));
        c.open("u", Some("Junk"))
            .unwrap()
            .deliver(chunks_of(b"two\r\n"))
            .unwrap();
        c.open("u", Some("Junk"))
            .unwrap()
            .deliver(chunks_of(b"three"))
            .unwrap();
        assert_eq!(c.usage("u").unwrap(), usage(3, 14));
        // Another user's mail is theirs.
        assert_eq!(c.usage("v").unwrap(), Usage::default());
    }
}
