//! `poplar storage …` for Maildir: `migrate` (nothing to do), `gc`
//! (collect what crashed or finished work left behind) and `check` (find
//! what disagrees, repair what is safe).

use std::fs;
use std::path::Path;

use crate::deliver::{IDS_DIR, TMP_MAX_AGE, id_of_tmp};
use crate::error::{Error, Result, io_err};
use crate::files::{mtime, names_in, random_hex};
use crate::lease::{self, Holder, Lease};
use crate::lock::{self, UserLock};
use crate::maildir::{Config, Maildir, crlf_size_of_file};
use crate::names::{base_name, s_size, w_size, with_sizes};
use crate::{retrieved, uidl};

/// What a maintenance task did (the WIT `maintenance-report`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<String>,
    pub fixed: u64,
    pub summary: String,
}

impl Report {
    fn found(&mut self, line: String) {
        self.findings.push(line);
    }
}

/// Seconds since a file was last modified (0 if unknown).
fn age_of(path: &Path, now: i64) -> i64 {
    fs::symlink_metadata(path)
        .ok()
        .and_then(|m| mtime(&m))
        .map_or(0, |t| now.saturating_sub(t))
}

/// Leftovers of the plugin's own whole-file writes and lock breaks
/// (`poplar-*.<hex>.new`, `poplar-lease.<hex>.breaking`,
/// `poplar.lock.break`, ...) in `dir`.
fn leftovers(dir: &Path) -> Result<Vec<String>> {
    Ok(names_in(dir)?
        .into_iter()
        .filter(|n| {
            n.starts_with("poplar")
                && (n.ends_with(".new") || n.ends_with(".breaking") || n.ends_with(".break"))
        })
        .collect())
}

impl Config {
    /// `poplar storage migrate`: a Maildir has no schema.
    pub fn migrate(&self) -> Report {
        Report {
            summary: "storage-maildir keeps no schema: nothing to migrate".into(),
            ..Report::default()
        }
    }

    /// `poplar storage gc`: what crashed work and finished sessions left
    /// behind, unchanged for more than `grace` seconds:
    ///
    /// - files in `tmp/`: a delivery a crash stopped after its marker is
    ///   finished (the message appears); other files are removed;
    /// - leases that expired, and user locks taken, longer ago;
    /// - leftovers of the plugin's own file writes;
    /// - delivery-id markers whose message is gone;
    /// - records of kept UIDLs and retrieval times of messages that are
    ///   gone (not while a session holds the mailbox).
    pub fn gc(&self, grace: u64, now: i64) -> Result<Report> {
        let grace = i64::try_from(grace).unwrap_or(i64::MAX);
        let mut report = Report::default();
        let (mut tmp_files, mut finished, mut markers, mut records) = (0, 0, 0, 0);
        let users = self.users(None, u32::MAX)?;
        for user in &users {
            let user_dir = self.user_dir(user)?;
            if lock::break_if_stale(&user_dir, grace)? {
                report.found(format!("{user}: removed a stale user lock"));
                report.fixed += 1;
            }
            let _lock = UserLock::acquire(&user_dir)?;
            for dir in [user_dir.clone(), user_dir.join(IDS_DIR)] {
                for name in leftovers(&dir)? {
                    let path = dir.join(&name);
                    if age_of(&path, now) > grace && fs::remove_file(&path).is_ok() {
                        report.found(format!("removed leftover {}", path.display()));
                        report.fixed += 1;
                    }
                }
            }
            for maildir in self.maildirs(user)? {
                let dir = maildir.dir().to_path_buf();
                for name in names_in(&dir.join("tmp"))? {
                    let path = dir.join("tmp").join(&name);
                    if age_of(&path, now) <= grace || !path.is_file() {
                        continue;
                    }
                    if self.finish_crashed(&maildir, &name)? {
                        report.found(format!(
                            "finished a delivery a crash interrupted: {}",
                            path.display()
                        ));
                        finished += 1;
                    } else if fs::remove_file(&path).is_ok() {
                        tmp_files += 1;
                    }
                }
                if let Some(what) = lease::break_if_stale(&dir, now, grace)? {
                    report.found(format!("{}: removed a {what}", maildir.name()));
                    report.fixed += 1;
                }
                for name in leftovers(&dir)? {
                    let path = dir.join(&name);
                    if age_of(&path, now) > grace && fs::remove_file(&path).is_ok() {
                        report.found(format!("removed leftover {}", path.display()));
                        report.fixed += 1;
                    }
                }
                let present = maildir.base_names()?;
                records += uidl::prune_kept(&dir, &present)?;
                if lease::current(&dir, now)?.is_none() {
                    records += retrieved::update_retrieved(
                        &dir,
                        &[],
                        &Default::default(),
                        Some(&present),
                        now,
                    )?;
                }
            }
            markers += self.gc_markers(user, &user_dir, grace, now)?;
        }
        report.fixed += (tmp_files + finished + markers + records) as u64;
        report.summary = format!(
            "gc of {} users (grace {grace} s): finished {finished} interrupted deliveries, \
             removed {tmp_files} temporary files, {markers} delivery ids of messages gone, \
             {records} records of messages gone; {} other fixes",
            users.len(),
            report.findings.len() - finished
        );
        Ok(report)
    }

    /// Removes the delivery-id markers of `user` older than `grace` whose
    /// message (and temporary file) is gone; returns how many.
    fn gc_markers(&self, user: &str, user_dir: &Path, grace: i64, now: i64) -> Result<usize> {
        let ids = user_dir.join(IDS_DIR);
        let mut removed = 0;
        for name in names_in(&ids)? {
            let path = ids.join(&name);
            if age_of(&path, now) <= grace || name.contains('.') {
                continue; // recent, or a leftover handled above
            }
            if self.marker_message_exists(user, &path)? {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Whether the message (or temporary file) a marker names exists. An
    /// unreadable marker counts as naming nothing.
    fn marker_message_exists(&self, user: &str, marker: &Path) -> Result<bool> {
        let Some(bytes) = crate::files::read_optional(marker)? else {
            return Ok(false);
        };
        let text = String::from_utf8_lossy(&bytes);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(crate::names::unescape)
        };
        let folder = match field("folder").as_deref() {
            Some("-") => None,
            Some(f) => match f.strip_prefix('+') {
                Some(f) => Some(f.to_string()),
                None => return Ok(false),
            },
            None => return Ok(false),
        };
        let (Some(key), Some(tmp)) = (field("key"), field("tmp")) else {
            return Ok(false);
        };
        let Ok(maildir) = self.open(user, folder.as_deref()) else {
            return Ok(false);
        };
        Ok(maildir.resolve(&key).ok().flatten().is_some()
            || maildir.dir().join("tmp").join(tmp).is_file())
    }

    /// `poplar storage check`: what disagrees in every Maildir, and with
    /// `repair` the safe fixes:
    ///
    /// - `S=`/`W=` fields of a message name that disagree with the file
    ///   (a wrong `W=` makes POP3 announce a wrong size): repaired by
    ///   renaming the file with the right fields, keeping its UIDL in
    ///   `poplar-uidlist` (under a lease, so no session sees it change);
    /// - entries of `new/` and `cur/` that are not messages (directories,
    ///   dot files, names that are not UTF-8): reported, left alone;
    /// - files in `tmp/` older than 36 hours: finished or removed, as `gc`;
    /// - broken leases (expired, or unreadable): removed; leftovers of the
    ///   plugin's own writes: removed;
    /// - delivery-id markers that do not parse: removed.
    pub fn check(&self, repair: bool, now: i64) -> Result<Report> {
        let mut report = Report::default();
        let (mut maildirs, mut messages) = (0u64, 0u64);
        let users = self.users(None, u32::MAX)?;
        for user in &users {
            let user_dir = self.user_dir(user)?;
            for maildir in self.maildirs(user)? {
                maildirs += 1;
                messages += self.check_maildir(&maildir, repair, now, &mut report)?;
            }
            let ids = user_dir.join(IDS_DIR);
            for name in names_in(&ids)? {
                let path = ids.join(&name);
                let bytes = crate::files::read_optional(&path)?.unwrap_or_default();
                let readable = std::str::from_utf8(&bytes)
                    .is_ok_and(|t| t.starts_with("poplar-delivery 1\n") && t.ends_with('\n'));
                if !readable && age_of(&path, now) > 60 {
                    report.found(format!("unreadable delivery-id marker {}", path.display()));
                    if !repair || fs::remove_file(&path).is_ok() {
                        report.fixed += 1;
                    }
                }
            }
            if lock::is_stale(&user_dir)? {
                report.found(format!(
                    "{user}: stale user lock (left by a process that died)"
                ));
                if !repair || lock::break_if_stale(&user_dir, 0)? {
                    report.fixed += 1;
                }
            }
        }
        let verb = if repair {
            "repaired"
        } else {
            "repairable with --repair"
        };
        report.summary = format!(
            "checked {} users, {maildirs} mailboxes, {messages} messages: {} findings, {} {verb}",
            users.len(),
            report.findings.len(),
            report.fixed
        );
        if !repair {
            report.fixed = 0;
        }
        Ok(report)
    }

    /// Checks one Maildir; returns how many messages it holds.
    fn check_maildir(
        &self,
        maildir: &Maildir,
        repair: bool,
        now: i64,
        report: &mut Report,
    ) -> Result<u64> {
        let dir = maildir.dir();
        let name = maildir.name();
        // Stray entries.
        for sub in ["new", "cur"] {
            let path = dir.join(sub);
            let Ok(entries) = fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let what = match file_name.to_str() {
                    None => Some("a name that is not UTF-8"),
                    Some(n) if n.starts_with('.') => Some("a dot file"),
                    Some(_) => match fs::metadata(entry.path()) {
                        Ok(m) if m.is_file() => None,
                        Ok(_) => Some("not a regular file"),
                        Err(_) => Some("a dangling link"),
                    },
                };
                if let Some(what) = what {
                    report.found(format!(
                        "{name}: stray entry {} ({what}; not listed, left alone)",
                        entry.path().display()
                    ));
                }
            }
        }
        // Old files in tmp/.
        let tmp_age = TMP_MAX_AGE.as_secs() as i64;
        for file in names_in(&dir.join("tmp"))? {
            let path = dir.join("tmp").join(&file);
            if age_of(&path, now) <= tmp_age || !path.is_file() {
                continue;
            }
            let marked = id_of_tmp(&file).is_some();
            report.found(format!(
                "{name}: {} left in tmp/ by a failed delivery{}",
                path.display(),
                if marked {
                    " (its delivery can be finished)"
                } else {
                    ""
                }
            ));
            if !repair {
                report.fixed += 1;
            } else {
                let _lock = UserLock::acquire(&self.user_dir(maildir.user())?)?;
                if self.finish_crashed(maildir, &file)? || fs::remove_file(&path).is_ok() {
                    report.fixed += 1;
                }
            }
        }
        // Leases and leftovers.
        let stale = if repair {
            lease::break_if_stale(dir, now, 0)?
        } else {
            lease::stale(dir, now, 0)?
        };
        if let Some(what) = stale {
            report.found(format!("{name}: broken lease: {what}"));
            report.fixed += 1;
        }
        for file in leftovers(dir)? {
            let path = dir.join(&file);
            if age_of(&path, now) > 3600 {
                report.found(format!("{name}: leftover {}", path.display()));
                if !repair || fs::remove_file(&path).is_ok() {
                    report.fixed += 1;
                }
            }
        }
        // Sizes in names.
        let entries = maildir.list_with(true)?;
        let mut wrong = Vec::new();
        for entry in &entries {
            let path = dir.join(&entry.key);
            let file = entry.key.split_once('/').map_or("", |(_, f)| f);
            let base = base_name(file);
            let (s, w) = (s_size(base), w_size(base));
            if s.is_none() && w.is_none() {
                continue;
            }
            let stored = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(_) => continue, // gone since the listing
            };
            let crlf = match w {
                Some(_) => crlf_size_of_file(&path).map_err(|e| io_err("cannot read", &path, e))?,
                None => 0,
            };
            let s_bad = s.is_some_and(|s| s != stored);
            let w_bad = w.is_some_and(|w| w != crlf);
            if s_bad || w_bad {
                report.found(format!(
                    "{name}: {}: the name says S={} W={}, the file has {stored} octets ({crlf} with CRLF)",
                    entry.key,
                    s.map_or("-".into(), |s| s.to_string()),
                    w.map_or("-".into(), |w| w.to_string()),
                ));
                wrong.push((entry.clone(), stored, crlf));
            }
        }
        if !repair {
            report.fixed += wrong.len() as u64;
        } else if !wrong.is_empty() {
            report.fixed += self.repair_sizes(maildir, &wrong, now, report)?;
        }
        Ok(entries.len() as u64)
    }

    /// Renames messages whose `S=`/`W=` fields are wrong, keeping their
    /// UIDLs, under a lease of the mailbox; returns how many were fixed.
    fn repair_sizes(
        &self,
        maildir: &Maildir,
        wrong: &[(crate::maildir::Entry, u64, u64)],
        now: i64,
        report: &mut Report,
    ) -> Result<u64> {
        let holder = Holder {
            node: "poplar storage check".into(),
            incarnation: random_hex(),
            session: "repair".into(),
            peer: String::new(),
        };
        let lease = Lease::new(holder, now, 300);
        if let Err(by) = lease::take(maildir.dir(), &lease, now)? {
            report.found(format!(
                "{}: sizes not repaired: the mailbox is in use (node {:?})",
                maildir.name(),
                by.node
            ));
            return Ok(0);
        }
        let _lock = UserLock::acquire(&self.user_dir(maildir.user())?);
        let result = (|| -> Result<u64> {
            let mut fixed = 0;
            let mut kept = Vec::new();
            for (entry, stored, crlf) in wrong {
                let (sub, file) = entry.key.split_once('/').unwrap_or(("cur", &entry.key));
                let base = base_name(file);
                let flags = &file[base.len()..];
                let renamed = format!("{}{flags}", with_sizes(base, *stored, *crlf));
                let from = maildir.dir().join(&entry.key);
                let to = maildir.dir().join(sub).join(&renamed);
                // The UIDL first, so that no listing sees a new one.
                kept.push((entry.uid.clone(), base_name(&renamed).to_string()));
                uidl::add_kept(maildir.dir(), &kept[kept.len() - 1..])?;
                fs::rename(&from, &to).map_err(|e| io_err("cannot rename", &from, e))?;
                fixed += 1;
            }
            Ok(fixed)
        })();
        let _ = lease::release(maildir.dir(), &lease.id, now);
        result.map_err(|e| Error::Io(format!("repair of {}: {}", maildir.name(), e.message())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::{Crash, Quota, Request};
    use crate::files::now as wall_now;
    use std::time::{Duration, SystemTime};

    fn config(root: &Path) -> Config {
        Config::from_pairs([("root", root.to_str().unwrap())]).unwrap()
    }

    fn put(root: &Path, rel: &str, data: &[u8]) {
        let path = root.join("u").join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn age(path: &Path, secs: u64) {
        let when = SystemTime::now() - Duration::from_secs(secs);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn request<'a>(id: &str, data: &'a [u8]) -> Request<'a> {
        Request {
            user: "u".into(),
            folder: None,
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

    #[test]
    fn migrate_has_nothing_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let report = config(tmp.path()).migrate();
        assert!(report.summary.contains("nothing to migrate"));
        assert_eq!(report.fixed, 0);
    }

    #[test]
    fn gc_collects_what_is_old_enough() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let now = wall_now();
        // A delivery that crashed after its marker; one that crashed before.
        c.deliver_until(
            vec![request(&"a".repeat(64), b"saved\n")],
            now,
            Some(Crash::AfterMarkers),
        );
        fs::remove_file(tmp.path().join("u").join(crate::lock::LOCK_FILE)).unwrap();
        put(tmp.path(), "tmp/1.junk", b"partial");
        // A message delivered and since deleted: its marker is garbage.
        let d = c
            .deliver(vec![request(&"b".repeat(64), b"gone\n")], now)
            .pop()
            .unwrap()
            .unwrap();
        fs::remove_file(tmp.path().join("u").join(&d.key)).unwrap();
        // An expired lease, a kept UIDL of a message that is gone.
        let old = Lease::new(Holder::default(), now - 7200, 60);
        lease::take(&tmp.path().join("u"), &old, now - 7200)
            .unwrap()
            .unwrap();
        put(tmp.path(), "poplar-uidlist", b"x-1 9.gone\n");

        // With a grace longer than their age, nothing goes but the record
        // of a message that is gone (no grace needed: nothing is in flight
        // while gc holds the user's lock).
        let report = c.gc(86_400, now).unwrap();
        assert_eq!(report.fixed, 1, "{report:?}");
        assert!(report.summary.contains("1 records"), "{}", report.summary);
        assert_eq!(c.open("u", None).unwrap().list().unwrap().len(), 0);

        // Make everything an hour old, then collect with a 10 min grace.
        for entry in walk(tmp.path()) {
            age(&entry, 3600);
        }
        let report = c.gc(600, now).unwrap();
        let list = c.open("u", None).unwrap().list().unwrap();
        assert_eq!(list.len(), 1, "the interrupted delivery was finished");
        assert_eq!(
            c.open("u", None)
                .unwrap()
                .read(&list[0].key, 0, 10)
                .unwrap(),
            b"saved\n"
        );
        assert!(
            report.summary.contains("finished 1 interrupted"),
            "{}",
            report.summary
        );
        assert!(
            report.summary.contains("removed 1 temporary files"),
            "{}",
            report.summary
        );
        assert!(
            report.summary.contains("1 delivery ids"),
            "{}",
            report.summary
        );
        assert!(
            lease::current(&tmp.path().join("u"), now)
                .unwrap()
                .is_none()
        );
        assert!(!tmp.path().join("u/poplar-lease").exists());
        assert!(
            fs::read_dir(tmp.path().join("u/tmp"))
                .unwrap()
                .next()
                .is_none()
        );
        // The finished delivery's marker stays (its message exists).
        assert_eq!(
            fs::read_dir(tmp.path().join("u/poplar-ids"))
                .unwrap()
                .count(),
            1
        );
        // Idempotent.
        assert_eq!(c.gc(600, now).unwrap().fixed, 0);
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn check_finds_and_repairs_sizes_keeping_uidls() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let now = wall_now();
        put(tmp.path(), "cur/1.a,S=4,W=6:2,S", b"a\nb\n"); // right
        put(tmp.path(), "cur/2.a,S=9,W=9:2,S", b"a\nb\n"); // wrong both
        put(tmp.path(), "new/3.a,W=4", b"abc\n"); // wrong W (5 with CRLF)
        fs::create_dir_all(tmp.path().join("u/cur/4.dir")).unwrap();
        put(tmp.path(), "new/.hidden", b"x");
        let md = c.open("u", None).unwrap();
        let before = md.list().unwrap();

        let report = c.check(false, now).unwrap();
        assert_eq!(report.fixed, 0);
        let text = report.findings.join("\n");
        assert!(
            text.contains(
                "cur/2.a,S=9,W=9:2,S: the name says S=9 W=9, the file has 4 octets (6 with CRLF)"
            ),
            "{text}"
        );
        assert!(
            text.contains("new/3.a,W=4: the name says S=- W=4"),
            "{text}"
        );
        assert!(text.contains("4.dir (not a regular file"), "{text}");
        assert!(text.contains(".hidden (a dot file"), "{text}");
        assert_eq!(report.findings.len(), 4, "{text}");
        assert!(report.summary.contains("4 findings"), "{}", report.summary);

        // A session holds the mailbox: sizes are not touched.
        let session = Lease::new(
            Holder {
                node: "n1".into(),
                ..Holder::default()
            },
            now,
            60,
        );
        lease::take(md.dir(), &session, now).unwrap().unwrap();
        let report = c.check(true, now).unwrap();
        assert!(
            report.findings.iter().any(|f| f.contains("in use")),
            "{report:?}"
        );
        assert_eq!(md.list().unwrap(), before);
        lease::release(md.dir(), &session.id, now).unwrap();

        let report = c.check(true, now).unwrap();
        assert_eq!(report.fixed, 2, "{report:?}");
        let after = md.list().unwrap();
        let keys: Vec<&str> = after.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cur/1.a,S=4,W=6:2,S",
                "cur/2.a,S=4,W=6:2,S",
                "new/3.a,S=4,W=5"
            ]
        );
        let uids =
            |l: &[crate::maildir::Entry]| l.iter().map(|e| e.uid.clone()).collect::<Vec<_>>();
        assert_eq!(uids(&after), uids(&before), "UIDLs kept");
        assert_eq!(after[2].size, 5);
        // Only the strays are left to report, and they are left alone.
        let report = c.check(false, now).unwrap();
        assert_eq!(report.findings.len(), 2, "{report:?}");
        assert!(tmp.path().join("u/cur/4.dir").is_dir());
    }

    #[test]
    fn check_repairs_broken_leases_and_markers() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let now = wall_now();
        put(tmp.path(), "poplar-lease", b"poplar-lease 1\nid");
        age(&tmp.path().join("u/poplar-lease"), 3600);
        put(tmp.path(), "poplar-ids/feed", b"garbage");
        age(&tmp.path().join("u/poplar-ids/feed"), 3600);
        let report = c.check(false, now).unwrap();
        let text = report.findings.join("\n");
        assert!(
            text.contains("broken lease: unreadable lease file"),
            "{text}"
        );
        assert!(text.contains("unreadable delivery-id marker"), "{text}");
        assert!(tmp.path().join("u/poplar-lease").exists());
        let report = c.check(true, now).unwrap();
        assert_eq!(report.fixed, 2, "{report:?}");
        assert!(!tmp.path().join("u/poplar-lease").exists());
        assert!(!tmp.path().join("u/poplar-ids/feed").exists());
        assert!(c.check(false, now).unwrap().findings.is_empty());
    }
}
