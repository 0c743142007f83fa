//! Delivery: storing a batch of messages, each atomically, durably,
//! once per delivery id, and within its user's quota.
//!
//! # Steps, for a batch
//!
//! 1. Each message is written to `tmp/<unique>-<id>` of its Maildir (of
//!    the inbox while the target folder does not exist yet, so that a
//!    refused delivery creates no folder) in 256 KiB chunks, counting its
//!    stored octets (`S=`) and CRLF octets (`W=`) as it goes, and fsynced.
//!    (A migration's `received` time becomes the name's timestamp and the
//!    file's modification time.)
//! 2. Each `tmp/` directory is fsynced once.
//! 3. For each user, in name order, under the user's lock
//!    ([`crate::lock`]): a delivery id that has a marker
//!    (`<root>/<user>/poplar-ids/<id>`) was stored before and is answered
//!    with the first key (`duplicate`); otherwise the quota is checked
//!    against the user's usage (counted once, then kept up to date for the
//!    rest of the batch), a migrated UIDL is checked against the mailbox's
//!    and recorded in `poplar-uidlist`, the target folder is created if
//!    needed, and a marker naming the final key and the temporary file is
//!    written and fsynced. The ids directory is fsynced once, then every
//!    message is renamed into `new/` and the lock is released.
//! 4. Each `new/` directory is fsynced once; only then are the answers
//!    given (group commit: one directory fsync per directory per batch).
//!
//! # After a crash
//!
//! - Before a marker is durable: the id is unknown; the MTA (which got no
//!   answer) delivers again and the message is stored then. The temporary
//!   file is swept later.
//! - Marker durable, rename not: the marker names the temporary file,
//!   which is complete (synced in step 1, its directory in step 2). The
//!   next delivery of the id, or `poplar storage gc`, renames it into
//!   `new/` and answers `duplicate` with the first key.
//! - Rename durable: the next delivery of the id finds the message and
//!   answers `duplicate`; one that finds neither message nor temporary
//!   file knows the message was stored and since deleted, and stores
//!   nothing either.
//!
//! Markers are kept until `poplar storage gc` finds them older than its
//! grace period with their message gone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result, io_err};
use crate::files::{create_exclusive, read_optional, sync_dir};
use crate::lock::UserLock;
use crate::maildir::{Config, CrlfSize, Maildir, Usage};
use crate::names::{base_name, check_key, escape, unescape, unique_name};
use crate::uidl::{self, poplar_uid, valid_uidl};

/// Chunk size for reading a message being delivered.
const DELIVER_CHUNK: u32 = 256 * 1024;

/// The directory of delivery-id markers in a user's directory.
pub const IDS_DIR: &str = "poplar-ids";

/// How old a file left in `tmp/` must be before a delivery removes it (as
/// qmail and Dovecot do); `poplar storage gc` takes its own grace.
pub const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

/// The quota a delivery must stay within (the WIT `quota`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub messages: Option<u64>,
    pub octets: Option<u64>,
}

impl Quota {
    fn is_limited(&self) -> bool {
        self.messages.is_some() || self.octets.is_some()
    }

    /// Why a user holding `usage` cannot take `incoming` more octets.
    fn refusal(&self, usage: Usage, incoming: u64) -> Option<String> {
        if let Some(max) = self.messages
            && usage.messages.saturating_add(1) > max
        {
            return Some(format!("{} of {max} messages", usage.messages));
        }
        if let Some(max) = self.octets
            && usage.octets.saturating_add(incoming) > max
        {
            return Some(format!(
                "{} octets held + {incoming} incoming > {max}",
                usage.octets
            ));
        }
        None
    }
}

/// One message to store (the WIT `delivery`, with the message as a
/// function that reads `len` octets at `offset`, empty at the end).
pub struct Request<'a> {
    pub user: String,
    pub folder: Option<String>,
    pub id: String,
    pub quota: Quota,
    pub uid: Option<String>,
    pub received: Option<i64>,
    pub read: Box<dyn FnMut(u64, u32) -> Vec<u8> + 'a>,
}

/// A stored message (the WIT `delivered`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub key: String,
    pub uid: String,
    pub duplicate: bool,
}

/// Where a simulated crash stops a delivery (tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Temporary files written and synced.
    AfterTmp,
    /// Markers written, their directory not yet synced.
    AfterMarkers,
    /// Messages renamed into `new/`, not yet synced.
    AfterRename,
}

/// A delivery-id marker: what was stored under the id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    folder: Option<String>,
    /// The key the message got (`new/<name>`).
    key: String,
    /// Its temporary file's name in `tmp/`.
    tmp: String,
    uid: String,
}

const MARKER_MAGIC: &str = "poplar-delivery 1";

impl Marker {
    fn to_bytes(&self) -> Vec<u8> {
        let folder = self
            .folder
            .as_deref()
            .map_or("-".to_string(), |f| format!("+{}", escape(f)));
        format!(
            "{MARKER_MAGIC}\nfolder {folder}\nkey {}\ntmp {}\nuid {}\n",
            escape(&self.key),
            escape(&self.tmp),
            escape(&self.uid)
        )
        .into_bytes()
    }

    fn parse(bytes: &[u8]) -> Option<Marker> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != MARKER_MAGIC {
            return None;
        }
        let mut field = |name: &str| -> Option<String> {
            let (key, value) = lines.next()?.split_once(' ')?;
            (key == name).then_some(value.to_string())
        };
        let folder = match field("folder")?.as_str() {
            "-" => None,
            f => Some(unescape(f.strip_prefix('+')?)?),
        };
        Some(Marker {
            folder,
            key: unescape(&field("key")?)?,
            tmp: unescape(&field("tmp")?)?,
            uid: unescape(&field("uid")?)?,
        })
    }
}

/// The marker file of delivery `id` in `user_dir`.
fn marker_path(user_dir: &Path, id: &str) -> PathBuf {
    user_dir.join(IDS_DIR).join(id)
}

/// A delivery id: 64 hex digits (the host's SHA-256), lower-cased.
fn check_id(id: &str) -> Result<String> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(Error::Invalid(format!(
            "delivery id {id:?} is not 64 hex digits"
        )))
    }
}

/// The delivery id at the end of a temporary file's name, if any.
pub fn id_of_tmp(name: &str) -> Option<&str> {
    let (_, id) = name.rsplit_once('-')?;
    check_id(id).ok().map(|_| id)
}

/// A temporary file's path relative to the user's directory.
fn tmp_relative(maildir: &Maildir, name: &str) -> String {
    match maildir.folder() {
        Some(folder) => format!(".{folder}/tmp/{name}"),
        None => format!("tmp/{name}"),
    }
}

/// `rel` (a marker's `tmp`) under `user_dir`, if it stays there.
fn under_user(user_dir: &Path, rel: &str) -> Option<PathBuf> {
    rel.split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
        .then(|| user_dir.join(rel))
}

/// A message written to `tmp/` (step 1), waiting for its user's turn.
struct Staged {
    /// Its place in the batch.
    index: usize,
    /// Where it goes.
    maildir: Maildir,
    user_dir: PathBuf,
    id: String,
    quota: Quota,
    uid: Option<String>,
    /// Its temporary file, relative to `user_dir`.
    tmp: String,
    /// `new/<unique>,S=..,W=..`
    key: String,
    stored: u64,
}

impl Staged {
    fn tmp_path(&self) -> PathBuf {
        self.user_dir.join(&self.tmp)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.tmp_path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn discard(&self) {
        let _ = fs::remove_file(self.tmp_path());
    }
}

impl Config {
    /// Stores a batch of messages; one answer per request, in order. See
    /// the module documentation for the steps.
    pub fn deliver(&self, batch: Vec<Request<'_>>, now: i64) -> Vec<Result<Delivered>> {
        self.deliver_until(batch, now, None)
    }

    /// [`Config::deliver`], stopping dead at `crash` (tests simulate a
    /// crash with it: nothing is cleaned up, the lock stays taken).
    pub fn deliver_until(
        &self,
        batch: Vec<Request<'_>>,
        now: i64,
        crash: Option<Crash>,
    ) -> Vec<Result<Delivered>> {
        let mut answers: Vec<Option<Result<Delivered>>> = Vec::new();
        answers.resize_with(batch.len(), || None);

        // 1. Write every message to tmp/.
        let mut staged = Vec::new();
        for (index, request) in batch.into_iter().enumerate() {
            match self.stage(index, request, now) {
                Ok(s) => staged.push(s),
                Err(e) => answers[index] = Some(Err(e)),
            }
        }
        // 2. One fsync per tmp/ directory.
        let tmp_dirs: BTreeSet<PathBuf> = staged.iter().map(Staged::tmp_dir).collect();
        for dir in tmp_dirs {
            if let Err(e) = sync_dir(&dir) {
                let err = io_err("cannot fsync", &dir, e);
                staged.retain(|s| {
                    let failed = s.tmp_dir() == dir;
                    if failed {
                        s.discard();
                        answers[s.index] = Some(Err(err.clone()));
                    }
                    !failed
                });
            }
        }
        if crash == Some(Crash::AfterTmp) {
            return Vec::new();
        }

        // 3. Per user, under the user's lock.
        let mut by_user: BTreeMap<String, Vec<Staged>> = BTreeMap::new();
        for s in staged {
            by_user
                .entry(s.maildir.user().to_string())
                .or_default()
                .push(s);
        }
        let mut new_dirs: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        for group in by_user.into_values() {
            let done = self.store_for_user(group, &mut answers, &mut new_dirs, crash);
            if done.is_none() {
                return Vec::new(); // crashed
            }
        }

        // 4. One fsync per new/ directory, then the answers.
        for (dir, indexes) in new_dirs {
            if let Err(e) = sync_dir(&dir) {
                let err = io_err("cannot fsync", &dir, e);
                for index in indexes {
                    if matches!(answers[index], Some(Ok(_))) {
                        answers[index] = Some(Err(err.clone()));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(Error::Io("no answer (internal error)".into()))))
            .collect()
    }

    /// Step 1 for one request: checks it and writes the message to `tmp/`.
    fn stage(&self, index: usize, mut request: Request<'_>, now: i64) -> Result<Staged> {
        let maildir = self.open(&request.user, request.folder.as_deref())?;
        let user_dir = self.user_dir(&request.user)?;
        let id = check_id(&request.id)?;
        if let Some(uid) = &request.uid
            && !valid_uidl(uid)
        {
            return Err(Error::Invalid(format!(
                "uid {uid:?} is not a valid UIDL (1 to 70 characters in 0x21..0x7E)"
            )));
        }
        // Written where it goes if that folder exists; else in the inbox, so
        // that a refused delivery creates no folder.
        let staging = if maildir.dir().join("tmp").is_dir() {
            self.open(&request.user, request.folder.as_deref())?
        } else {
            self.open(&request.user, None)?
        };
        staging.create()?;
        sweep_tmp(&staging, &user_dir);

        let unique = unique_name(request.received.unwrap_or(now));
        let name = format!("{unique}-{id}");
        let tmp = tmp_relative(&staging, &name);
        let tmp_path = user_dir.join(&tmp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| io_err("cannot create", &tmp_path, e))?;
        let written = write_message(file, &tmp_path, &mut request.read, request.received);
        let (stored, crlf) = match written {
            Ok(sizes) => sizes,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        Ok(Staged {
            index,
            maildir,
            user_dir,
            id,
            quota: request.quota,
            uid: request.uid,
            tmp,
            key: format!("new/{unique},S={stored},W={crlf}"),
            stored,
        })
    }

    /// Step 3 for one user's messages. `None` if a simulated crash stopped
    /// it.
    fn store_for_user(
        &self,
        group: Vec<Staged>,
        answers: &mut [Option<Result<Delivered>>],
        new_dirs: &mut BTreeMap<PathBuf, Vec<usize>>,
        crash: Option<Crash>,
    ) -> Option<()> {
        let Some(first) = group.first() else {
            return Some(());
        };
        let user_dir = first.user_dir.clone();
        let lock = match UserLock::acquire(&user_dir) {
            Ok(lock) => lock,
            Err(e) => {
                for s in &group {
                    s.discard();
                    answers[s.index] = Some(Err(e.clone()));
                }
                return Some(());
            }
        };
        let mut usage: Option<Usage> = None;
        let mut uids: HashMap<PathBuf, HashSet<String>> = HashMap::new();
        let mut in_batch: HashMap<String, Delivered> = HashMap::new();
        let mut accepted: Vec<(Staged, Marker)> = Vec::new();
        for s in group {
            match self.admit(&s, &mut usage, &mut uids, &mut in_batch, new_dirs) {
                Ok(Admitted::Duplicate(d)) => {
                    s.discard();
                    answers[s.index] = Some(Ok(d));
                }
                Ok(Admitted::New(marker)) => accepted.push((s, marker)),
                Err(e) => {
                    s.discard();
                    answers[s.index] = Some(Err(e));
                }
            }
        }
        if crash == Some(Crash::AfterMarkers) {
            std::mem::forget(lock);
            return None;
        }
        if !accepted.is_empty()
            && let Err(e) = sync_dir(&user_dir.join(IDS_DIR))
        {
            // Not known durable: undo, as if these were never delivered.
            let err = io_err("cannot fsync", &user_dir.join(IDS_DIR), e);
            for (s, _) in accepted.drain(..) {
                let _ = fs::remove_file(marker_path(&user_dir, &s.id));
                s.discard();
                answers[s.index] = Some(Err(err.clone()));
            }
        }
        for (s, marker) in accepted {
            let dest = s.maildir.dir().join(&s.key);
            match fs::rename(s.tmp_path(), &dest) {
                Ok(()) => {
                    (self.log)(&format!("delivered {} to {}", s.key, s.maildir.name()));
                    new_dirs
                        .entry(s.maildir.dir().join("new"))
                        .or_default()
                        .push(s.index);
                    answers[s.index] = Some(Ok(Delivered {
                        key: marker.key,
                        uid: marker.uid,
                        duplicate: false,
                    }));
                }
                // The marker stays: a retry of the id finishes the job.
                Err(e) => answers[s.index] = Some(Err(io_err("cannot rename into", &dest, e))),
            }
        }
        if crash == Some(Crash::AfterRename) {
            std::mem::forget(lock);
            return None;
        }
        drop(lock);
        Some(())
    }

    /// Decides one staged message with the user's lock held: a duplicate
    /// (answered), or new (its marker written and synced).
    fn admit(
        &self,
        s: &Staged,
        usage: &mut Option<Usage>,
        uids: &mut HashMap<PathBuf, HashSet<String>>,
        in_batch: &mut HashMap<String, Delivered>,
        new_dirs: &mut BTreeMap<PathBuf, Vec<usize>>,
    ) -> Result<Admitted> {
        if let Some(first) = in_batch.get(&s.id) {
            return Ok(Admitted::Duplicate(first.clone()));
        }
        let marker_file = marker_path(&s.user_dir, &s.id);
        if let Some(bytes) = read_optional(&marker_file)? {
            let delivered = self.recover(s, &bytes, new_dirs)?;
            in_batch.insert(s.id.clone(), delivered.clone());
            return Ok(Admitted::Duplicate(delivered));
        }
        if s.quota.is_limited() {
            let current = match usage {
                Some(u) => *u,
                None => *usage.insert(self.usage(s.maildir.user())?),
            };
            if let Some(why) = s.quota.refusal(current, s.stored) {
                // The host names the user; the text says by how much.
                return Err(Error::OverQuota(why));
            }
        }
        let base = base_name(&s.key["new/".len()..]).to_string();
        let uid = match &s.uid {
            Some(uid) => {
                let taken = match uids.get_mut(s.maildir.dir()) {
                    Some(set) => set,
                    None => {
                        let listed = s.maildir.list_with(true)?;
                        let set = listed.into_iter().map(|e| e.uid).collect();
                        uids.entry(s.maildir.dir().to_path_buf()).or_insert(set)
                    }
                };
                if !taken.insert(uid.clone()) {
                    return Err(Error::Invalid(format!(
                        "uid {uid:?} is already used by another message of {}",
                        s.maildir.name()
                    )));
                }
                uidl::add_kept(s.maildir.dir(), &[(uid.clone(), base)])?;
                uid.clone()
            }
            None => poplar_uid(&base),
        };
        s.maildir.create()?;
        let marker = Marker {
            folder: s.maildir.folder().map(str::to_string),
            key: s.key.clone(),
            tmp: s.tmp.clone(),
            uid,
        };
        let ids = s.user_dir.join(IDS_DIR);
        fs::create_dir_all(&ids).map_err(|e| io_err("cannot create", &ids, e))?;
        if !create_exclusive(&marker_file, &marker.to_bytes(), true)? {
            // Impossible with the lock held, unless another process broke
            // the lock as stale: retrying is safe.
            return Err(Error::Io(format!(
                "{} appeared while the lock was held; try again",
                marker_file.display()
            )));
        }
        if let Some(u) = usage.as_mut() {
            u.add(Usage {
                messages: 1,
                octets: s.stored,
            });
        }
        in_batch.insert(
            s.id.clone(),
            Delivered {
                key: marker.key.clone(),
                uid: marker.uid.clone(),
                duplicate: true,
            },
        );
        Ok(Admitted::New(marker))
    }

    /// A delivery id stored before: finds the first delivery's message,
    /// finishing it if a crash stopped it before its rename.
    fn recover(
        &self,
        s: &Staged,
        bytes: &[u8],
        new_dirs: &mut BTreeMap<PathBuf, Vec<usize>>,
    ) -> Result<Delivered> {
        let marker_file = marker_path(&s.user_dir, &s.id);
        let Some(marker) = Marker::parse(bytes) else {
            return Err(Error::Io(format!(
                "{} is unreadable; `poplar storage check --repair` removes it",
                marker_file.display()
            )));
        };
        let delivered = Delivered {
            key: marker.key.clone(),
            uid: marker.uid.clone(),
            duplicate: true,
        };
        let maildir = self.open(s.maildir.user(), marker.folder.as_deref())?;
        check_key(&marker.key)?;
        if maildir.resolve(&marker.key)?.is_some() {
            return Ok(delivered);
        }
        if let Some(tmp) = under_user(&s.user_dir, &marker.tmp)
            && tmp.is_file()
        {
            maildir.create()?;
            let dest = maildir.dir().join(&marker.key);
            fs::rename(&tmp, &dest).map_err(|e| io_err("cannot rename into", &dest, e))?;
            (self.log)(&format!(
                "finished delivery {} of a crashed process: {}",
                s.id, marker.key
            ));
            new_dirs
                .entry(maildir.dir().join("new"))
                .or_default()
                .push(s.index);
        }
        // Else the message was stored, then deleted: nothing to store.
        Ok(delivered)
    }

    /// Finishes the delivery whose temporary file is `tmp_name` in the
    /// `tmp/` of `staging`, if its marker names that file and its message
    /// is missing (for `gc`); `true` if it did. The caller holds the user's
    /// lock.
    pub fn finish_crashed(&self, staging: &Maildir, tmp_name: &str) -> Result<bool> {
        let Some(id) = id_of_tmp(tmp_name) else {
            return Ok(false);
        };
        let user_dir = self.user_dir(staging.user())?;
        let Some(marker) = read_optional(&marker_path(&user_dir, id))?
            .as_deref()
            .and_then(Marker::parse)
        else {
            return Ok(false);
        };
        let Ok(maildir) = self.open(staging.user(), marker.folder.as_deref()) else {
            return Ok(false);
        };
        if marker.tmp != tmp_relative(staging, tmp_name)
            || check_key(&marker.key).is_err()
            || maildir.resolve(&marker.key)?.is_some()
        {
            return Ok(false);
        }
        maildir.create()?;
        let dest = maildir.dir().join(&marker.key);
        fs::rename(staging.dir().join("tmp").join(tmp_name), &dest)
            .map_err(|e| io_err("cannot rename into", &dest, e))?;
        sync_dir(&maildir.dir().join("new")).map_err(|e| io_err("cannot fsync", &dest, e))?;
        Ok(true)
    }
}

/// What [`Config::admit`] decided.
enum Admitted {
    Duplicate(Delivered),
    New(Marker),
}

/// Writes the message from `read` into `file`, syncs it, and returns its
/// stored and CRLF sizes. A `received` time becomes its modification time.
fn write_message(
    mut file: File,
    path: &Path,
    read: &mut dyn FnMut(u64, u32) -> Vec<u8>,
    received: Option<i64>,
) -> Result<(u64, u64)> {
    let mut size = CrlfSize::default();
    let mut stored = 0u64;
    loop {
        let chunk = read(stored, DELIVER_CHUNK);
        if chunk.is_empty() {
            break;
        }
        size.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| io_err("cannot write", path, e))?;
        stored += chunk.len() as u64;
    }
    if let Some(secs) = received.and_then(|r| u64::try_from(r).ok()) {
        let when = std::time::UNIX_EPOCH + Duration::from_secs(secs);
        file.set_modified(when)
            .map_err(|e| io_err("cannot set the time of", path, e))?;
    }
    file.sync_all()
        .map_err(|e| io_err("cannot fsync", path, e))?;
    Ok((stored, size.finish()))
}

/// Removes files that a crashed delivery left in `tmp/` more than
/// [`TMP_MAX_AGE`] ago; they were never visible as messages. One that a
/// delivery marker names is left for the retry or `gc` to finish.
/// Failures are ignored: this is housekeeping.
fn sweep_tmp(maildir: &Maildir, user_dir: &Path) {
    let Ok(entries) = fs::read_dir(maildir.dir().join("tmp")) else {
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
        let name = entry.file_name();
        let marked = name
            .to_str()
            .and_then(id_of_tmp)
            .is_some_and(|id| marker_path(user_dir, id).exists());
        if old && !marked {
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LOCK_FILE;
    use crate::maildir::crlf_size_of_file;

    fn config(root: &Path) -> Config {
        Config::from_pairs([("root", root.to_str().unwrap())]).unwrap()
    }

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn request<'a>(user: &str, folder: Option<&str>, id: &str, data: &'a [u8]) -> Request<'a> {
        Request {
            user: user.into(),
            folder: folder.map(str::to_string),
            id: id.into(),
            quota: Quota::default(),
            uid: None,
            received: None,
            read: Box::new(move |offset, len| {
                let start = (offset as usize).min(data.len());
                let end = (start + len as usize).min(data.len());
                data[start..end].to_vec()
            }),
        }
    }

    fn one(c: &Config, r: Request<'_>) -> Result<Delivered> {
        c.deliver(vec![r], crate::files::now()).pop().unwrap()
    }

    fn listing(c: &Config, user: &str, folder: Option<&str>) -> Vec<crate::maildir::Entry> {
        c.open(user, folder).unwrap().list().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v = crate::files::names_in(dir).unwrap();
        v.sort();
        v
    }

    #[test]
    fn deliver_is_atomic_and_sized() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let mut data = Vec::new();
        for i in 0..60_000 {
            data.extend_from_slice(format!("line {i}\n").as_bytes()); // LF only, > 256 KiB
        }
        data.extend_from_slice(b"no newline");
        let calls = std::cell::Cell::new(0);
        let new_dir = tmp.path().join("u/new");
        let mut inner = request("u", None, &id(1), &data).read;
        let mut r = request("u", None, &id(1), &data);
        r.read = Box::new(|offset, len| {
            calls.set(calls.get() + 1);
            // Nothing is visible while the message is being written.
            assert_eq!(names(&new_dir).len(), 0);
            inner(offset, len)
        });
        let d = one(&c, r).unwrap();
        assert!(calls.get() > 2);
        let (stored, crlf) = (data.len() as u64, data.len() as u64 + 60_000 + 2);
        assert!(d.key.starts_with("new/"), "{d:?}");
        assert!(
            d.key.ends_with(&format!(".poplar,S={stored},W={crlf}")),
            "{d:?}"
        );
        assert!(!d.duplicate);
        assert!(names(&tmp.path().join("u/tmp")).is_empty());
        assert_eq!(fs::read(tmp.path().join("u").join(&d.key)).unwrap(), data);
        let list = listing(&c, "u", None);
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].size, list[0].stored_size), (crlf, stored));
        assert_eq!(list[0].uid, d.uid);
        assert_eq!(
            crlf_size_of_file(&tmp.path().join("u").join(&d.key)).unwrap(),
            crlf
        );
        assert!(valid_uidl(&list[0].uid));
        assert!(!tmp.path().join("u/maildirfolder").exists());
        assert!(
            !tmp.path().join("u").join(LOCK_FILE).exists(),
            "lock released"
        );
    }

    #[test]
    fn deliver_into_new_folder_and_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let msg = b"Subject: x\r\n\r\nhi\r\n";
        let answers = c.deliver(
            vec![
                request("u", Some("Junk"), &id(1), msg),
                request("u", None, &id(2), b"two\n"),
                request("v", None, &id(3), b"three\n"),
                request("../x", None, &id(4), b"bad\n"),
                request("u", None, "not-an-id", b"bad\n"),
                request("u", None, &id(2), b"two\n"), // the same id again
            ],
            crate::files::now(),
        );
        let ok: Vec<&Delivered> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(ok.len(), 4, "{answers:?}");
        assert!(matches!(answers[3], Err(Error::Invalid(_))));
        assert!(matches!(answers[4], Err(Error::Invalid(_))));
        let (second, again) = (answers[1].as_ref().unwrap(), answers[5].as_ref().unwrap());
        assert!(!second.duplicate && again.duplicate);
        assert_eq!(second.key, again.key);
        let dir = tmp.path().join("u/.Junk");
        assert!(dir.join("maildirfolder").is_file());
        let key = &answers[0].as_ref().unwrap().key;
        assert_eq!(
            c.open("u", Some("Junk"))
                .unwrap()
                .read(key, 0, 100)
                .unwrap(),
            msg
        );
        assert_eq!(listing(&c, "u", None).len(), 1);
        assert_eq!(listing(&c, "v", None).len(), 1);
    }

    #[test]
    fn a_delivery_id_is_stored_once() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let first = one(&c, request("u", None, &id(7), b"hello\n")).unwrap();
        let again = one(&c, request("u", None, &id(7), b"hello\n")).unwrap();
        assert_eq!(
            (again.key.as_str(), again.duplicate),
            (first.key.as_str(), true)
        );
        assert_eq!(again.uid, first.uid);
        assert_eq!(listing(&c, "u", None).len(), 1);
        assert!(
            names(&tmp.path().join("u/tmp")).is_empty(),
            "the retry's copy went"
        );
        // Even after the message was retrieved and deleted.
        fs::remove_file(tmp.path().join("u").join(&first.key)).unwrap();
        let later = one(&c, request("u", None, &id(7), b"hello\n")).unwrap();
        assert!(later.duplicate);
        assert!(listing(&c, "u", None).is_empty());
        // A moved (read, flagged) message is still found.
        let d = one(&c, request("u", None, &id(8), b"x\n")).unwrap();
        let name = &d.key["new/".len()..];
        fs::rename(
            tmp.path().join("u").join(&d.key),
            tmp.path().join("u/cur").join(format!("{name}:2,S")),
        )
        .unwrap();
        assert!(
            one(&c, request("u", None, &id(8), b"x\n"))
                .unwrap()
                .duplicate
        );
        assert_eq!(listing(&c, "u", None).len(), 1);
    }

    #[test]
    fn quota_is_checked_in_the_store_step() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let limited = |id: &str, data: &'static [u8], messages, octets| {
            let mut r = request("u", None, id, data);
            r.quota = Quota { messages, octets };
            r
        };
        one(&c, limited(&id(1), b"12345\n", Some(2), None)).unwrap();
        // The inbox and folders count together; the batch counts as it goes.
        let answers = c.deliver(
            vec![
                {
                    let mut r = limited(&id(2), b"abc\n", Some(2), None);
                    r.folder = Some("Junk".into());
                    r
                },
                limited(&id(3), b"refused\n", Some(2), None),
            ],
            crate::files::now(),
        );
        assert!(answers[0].is_ok());
        let Err(Error::OverQuota(why)) = &answers[1] else {
            panic!("{answers:?}");
        };
        assert!(why.contains("2 of 2 messages"), "{why}");
        // Octets: 10 held; 4 more fit 14, 5 more do not.
        let err = one(&c, limited(&id(4), b"abcd\n", None, Some(14))).unwrap_err();
        assert!(matches!(err, Error::OverQuota(_)), "{err:?}");
        one(&c, limited(&id(5), b"abc\n", None, Some(14))).unwrap();
        assert_eq!(
            c.usage("u").unwrap(),
            Usage {
                messages: 3,
                octets: 14
            }
        );
        // A duplicate is no new mail: not refused for the quota.
        assert!(
            one(&c, limited(&id(5), b"abc\n", Some(1), None))
                .unwrap()
                .duplicate
        );
        assert!(names(&tmp.path().join("u/tmp")).is_empty());
    }

    #[test]
    fn a_refused_delivery_creates_no_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        one(&c, request("u", None, &id(1), b"fills it\n")).unwrap();
        let mut r = request("u", Some("Other"), &id(2), b"refused\n");
        r.quota = Quota {
            messages: Some(1),
            octets: None,
        };
        assert!(matches!(one(&c, r), Err(Error::OverQuota(_))));
        assert!(!tmp.path().join("u/.Other").exists());
        assert!(names(&tmp.path().join("u/tmp")).is_empty());
        // Accepted, it is created, and a crash before the rename is
        // finished from the inbox's tmp/ by the retry.
        let now = crate::files::now();
        c.deliver_until(
            vec![request("u", Some("Other"), &id(3), b"kept\n")],
            now,
            Some(Crash::AfterMarkers),
        );
        make_lock_stale(&tmp.path().join("u"));
        assert_eq!(names(&tmp.path().join("u/tmp")).len(), 1);
        let retry = one(&c, request("u", Some("Other"), &id(3), b"kept\n")).unwrap();
        assert!(retry.duplicate);
        assert_eq!(listing(&c, "u", Some("Other")).len(), 1);
        assert!(tmp.path().join("u/.Other/maildirfolder").is_file());
        assert!(names(&tmp.path().join("u/tmp")).is_empty());
    }

    /// Parallel deliveries to one user (threads standing for processes or
    /// nodes) never store more than the quota allows.
    #[test]
    fn parallel_deliveries_cannot_overshoot_the_quota() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let stored = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let (c, stored) = (&c, &stored);
                s.spawn(move || {
                    for n in 0..10u8 {
                        let mut r = request("u", None, &id(t * 10 + n), b"msg\n");
                        r.quota = Quota {
                            messages: Some(17),
                            octets: None,
                        };
                        match one(c, r) {
                            Ok(_) => {
                                stored.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Err(Error::OverQuota(_)) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                });
            }
        });
        assert_eq!(stored.load(std::sync::atomic::Ordering::SeqCst), 17);
        assert_eq!(listing(&c, "u", None).len(), 17);
    }

    #[test]
    fn migration_keeps_uid_and_received() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let mut r = request("u", None, &id(1), b"old mail\n");
        r.uid = Some("dovecot-000042".into());
        r.received = Some(1_500_000_000);
        let d = one(&c, r).unwrap();
        assert_eq!(d.uid, "dovecot-000042");
        assert!(d.key.starts_with("new/1500000000."), "{d:?}");
        let list = listing(&c, "u", None);
        assert_eq!(list[0].uid, "dovecot-000042");
        assert_eq!(list[0].received, 1_500_000_000);
        let mtime = fs::metadata(tmp.path().join("u").join(&d.key)).unwrap();
        assert_eq!(crate::files::mtime(&mtime), Some(1_500_000_000));
        // Listed in received order among newer mail.
        one(&c, request("u", None, &id(2), b"new mail\n")).unwrap();
        assert_eq!(listing(&c, "u", None)[0].uid, "dovecot-000042");
        // Another message with the same UIDL is refused; so is a bad UIDL.
        let mut r = request("u", None, &id(3), b"other\n");
        r.uid = Some("dovecot-000042".into());
        assert!(matches!(one(&c, r), Err(Error::Invalid(_))));
        let mut r = request("u", None, &id(4), b"other\n");
        r.uid = Some("has space".into());
        assert!(matches!(one(&c, r), Err(Error::Invalid(_))));
        // Re-running the migration: the same ids are duplicates, not errors.
        let mut r = request("u", None, &id(1), b"old mail\n");
        r.uid = Some("dovecot-000042".into());
        let again = one(&c, r).unwrap();
        assert!(again.duplicate && again.uid == "dovecot-000042");
        assert_eq!(listing(&c, "u", None).len(), 2);
    }

    fn make_lock_stale(user_dir: &Path) {
        let old = format!(
            "dead {}\n",
            crate::files::now() - crate::lock::LOCK_STALE - 1
        );
        fs::write(user_dir.join(LOCK_FILE), old).unwrap();
    }

    /// A crash at each step of a delivery, then the MTA's retry: the
    /// message ends up stored exactly once.
    #[test]
    fn crash_points() {
        for crash in [Crash::AfterTmp, Crash::AfterMarkers, Crash::AfterRename] {
            let tmp = tempfile::tempdir().unwrap();
            let c = config(tmp.path());
            let user_dir = tmp.path().join("u");
            let now = crate::files::now();
            let crashed = c.deliver_until(
                vec![request("u", None, &id(1), b"precious\n")],
                now,
                Some(crash),
            );
            assert!(crashed.is_empty());
            if crash != Crash::AfterTmp {
                // The dead process still "holds" the user's lock.
                assert!(user_dir.join(LOCK_FILE).exists());
                make_lock_stale(&user_dir);
            }
            let retry = one(&c, request("u", None, &id(1), b"precious\n")).unwrap();
            let list = listing(&c, "u", None);
            assert_eq!(list.len(), 1, "{crash:?}");
            let read = c
                .open("u", None)
                .unwrap()
                .read(&list[0].key, 0, 100)
                .unwrap();
            assert_eq!(read, b"precious\n", "{crash:?}");
            assert_eq!(retry.duplicate, crash != Crash::AfterTmp, "{crash:?}");
            assert_eq!(retry.uid, list[0].uid);
            // Another retry is a duplicate of the same message.
            let again = one(&c, request("u", None, &id(1), b"precious\n")).unwrap();
            assert!(again.duplicate && again.key == retry.key);
            // Only the crashed attempt's tmp file (AfterTmp: no marker) is
            // left, for the sweep.
            let left = names(&user_dir.join("tmp"));
            assert_eq!(
                left.len(),
                usize::from(crash == Crash::AfterTmp),
                "{left:?}"
            );
        }
    }

    /// A crash after the marker but before the rename, found by `gc`
    /// rather than by a retry.
    #[test]
    fn gc_finishes_a_crashed_delivery() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let now = crate::files::now();
        c.deliver_until(
            vec![request("u", None, &id(1), b"precious\n")],
            now,
            Some(Crash::AfterMarkers),
        );
        let md = c.open("u", None).unwrap();
        let tmp_name = names(&tmp.path().join("u/tmp")).pop().unwrap();
        assert_eq!(id_of_tmp(&tmp_name), Some(id(1).as_str()));
        assert!(c.finish_crashed(&md, &tmp_name).unwrap());
        assert_eq!(md.list().unwrap().len(), 1);
        assert!(!c.finish_crashed(&md, &tmp_name).unwrap());
    }

    #[test]
    fn a_failed_delivery_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let dir = tmp.path().join("u");
        let data = vec![b'x'; 600_000];
        let mut inner = request("u", None, &id(1), &data).read;
        let mut r = request("u", None, &id(1), &data);
        let sabotage = dir.clone();
        r.read = Box::new(move |offset, len| {
            if offset == 0 {
                // Break the Maildir while the message is written: new/
                // becomes a regular file.
                fs::remove_dir(sabotage.join("new")).unwrap();
                fs::write(sabotage.join("new"), b"").unwrap();
            }
            inner(offset, len)
        });
        let result = one(&c, r);
        assert!(matches!(result, Err(Error::Io(_))), "{result:?}");
        assert!(names(&dir.join("tmp")).is_empty(), "no temporary file");
        assert!(names(&dir.join(IDS_DIR)).is_empty(), "no delivery id");
        // Repaired, the MTA's retry stores it.
        fs::remove_file(dir.join("new")).unwrap();
        let retry = one(&c, request("u", None, &id(1), &data)).unwrap();
        assert!(!retry.duplicate);
        assert_eq!(listing(&c, "u", None).len(), 1);
    }

    #[test]
    fn delivery_sweeps_stale_tmp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        one(&c, request("u", None, &id(1), b"x\r\n")).unwrap();
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
        one(&c, request("u", None, &id(2), b"y\r\n")).unwrap();
        assert!(!stale.exists(), "stale tmp file removed");
        assert!(fresh.exists(), "a recent one may still be in use");
        assert_eq!(listing(&c, "u", None).len(), 2);
    }

    #[test]
    fn markers_round_trip() {
        let m = Marker {
            folder: Some("Odd name\nwith break".into()),
            key: "new/1.a,S=1,W=2".into(),
            tmp: format!(".Odd/tmp/1.a-{}", id(1)),
            uid: "u-1".into(),
        };
        assert_eq!(Marker::parse(&m.to_bytes()), Some(m.clone()));
        let inbox = Marker { folder: None, ..m };
        assert_eq!(Marker::parse(&inbox.to_bytes()), Some(inbox.clone()));
        let bytes = inbox.to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(Marker::parse(&bytes[..cut]), None);
        }
    }
}
