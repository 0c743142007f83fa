//! The maildrop lease: one POP3 session per mailbox (RFC 1939 §8) across
//! every Poplar process and node that shares the mail root.
//!
//! # The lease file
//!
//! A mailbox (an inbox or a folder) is leased while its Maildir holds the
//! file `poplar-lease`:
//!
//! ```text
//! poplar-lease 1
//! id 0f3c...                (32 hex digits, unique per lease)
//! node mx1
//! incarnation 1733300000-4711
//! session 42
//! peer 192.0.2.7:51234
//! since 1733300100
//! expires 1733300160
//! ```
//!
//! Values are percent-encoded (`%`, controls, spaces). The token handed to
//! the host is `<id>:<user>` or `<id>:<user>/<folder>`, so that `renew` and
//! `release`, which get no mailbox, find the file.
//!
//! # Rules
//!
//! - Taking: the file is created with `O_EXCL` (atomic on a local disk and
//!   on NFS); whoever creates it holds the lease.
//! - A lease of the **same node with another incarnation** was left by a
//!   process that is gone: it is broken at once. A lease of another node
//!   (or of this process) is broken only [`BREAK_GRACE`] seconds after it
//!   expired. A file that does not parse (being written, or cut short by a
//!   crash) counts as held until it is [`UNREADABLE_GRACE`] seconds old.
//! - Breaking is [`break_stale`]: of several processes judging the same
//!   stale lease one removes it and the others find the new lease, never
//!   removing it.
//! - Renewing rewrites the file (a sibling renamed over it) with a new
//!   expiry, only while the lease has not expired: after that a breaker may
//!   already be at work, so a late renewal reports the lease lost instead of
//!   writing over someone else's.
//! - Commit's fencing ([`check`]): the file must still hold the lease's id
//!   and the lease must not have expired.
//! - Lease files are not synced: if the machine holding a lease crashes,
//!   its sessions are gone too, and a lease lost with them only frees the
//!   mailbox sooner.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::files::{
    break_stale, create_exclusive, mtime, read_optional, remove_exact, replace_file,
};
use crate::names::{escape, unescape};

/// The lease file in a Maildir.
pub const LEASE_FILE: &str = "poplar-lease";

/// Seconds past its expiry before another node's lease may be broken: room
/// for clocks that disagree a little and for a renewal in flight.
pub const BREAK_GRACE: i64 = 2;

/// Seconds a lease file that cannot be parsed counts as held.
pub const UNREADABLE_GRACE: i64 = 30;

const MAGIC: &str = "poplar-lease 1";

/// Who holds, or asks for, a lease (the WIT `holder`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    pub node: String,
    pub incarnation: String,
    pub session: String,
    pub peer: String,
}

impl Holder {
    /// Stands for the writer of a lease file that cannot be read.
    fn unknown() -> Holder {
        Holder {
            node: "(unknown: the lease file is unreadable)".into(),
            ..Holder::default()
        }
    }
}

/// One lease, as its file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique per lease; the first part of the token.
    pub id: String,
    pub holder: Holder,
    /// When it was taken and when it expires unless renewed (Unix seconds).
    pub since: i64,
    pub expires: i64,
}

impl Lease {
    /// A new lease for `holder`, from `now` for `ttl` seconds.
    pub fn new(holder: Holder, now: i64, ttl: u32) -> Lease {
        Lease {
            id: crate::files::random_hex(),
            holder,
            since: now,
            expires: now.saturating_add(i64::from(ttl)),
        }
    }

    /// The file's contents.
    pub fn to_bytes(&self) -> Vec<u8> {
        let h = &self.holder;
        format!(
            "{MAGIC}\nid {}\nnode {}\nincarnation {}\nsession {}\npeer {}\nsince {}\nexpires {}\n",
            escape(&self.id),
            escape(&h.node),
            escape(&h.incarnation),
            escape(&h.session),
            escape(&h.peer),
            self.since,
            self.expires
        )
        .into_bytes()
    }

    /// Parses a lease file; `None` unless it is complete and well formed.
    pub fn parse(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != MAGIC {
            return None;
        }
        let mut field = |name: &str| -> Option<String> {
            let (key, value) = lines.next()?.split_once(' ')?;
            (key == name).then(|| unescape(value))?
        };
        let lease = Lease {
            id: field("id")?,
            holder: Holder {
                node: field("node")?,
                incarnation: field("incarnation")?,
                session: field("session")?,
                peer: field("peer")?,
            },
            since: field("since")?.parse().ok()?,
            expires: field("expires")?.parse().ok()?,
        };
        (!lease.id.is_empty()).then_some(lease)
    }

    /// Whether the lease still holds at `now`.
    pub fn held_at(&self, now: i64) -> bool {
        now < self.expires
    }
}

/// A lease token, split: `<id>:<user>[/<folder>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub folder: Option<&'a str>,
}

impl<'a> Token<'a> {
    /// The token the host gets for lease `id` on the mailbox.
    pub fn format(id: &str, user: &str, folder: Option<&str>) -> String {
        match folder {
            Some(folder) => format!("{id}:{user}/{folder}"),
            None => format!("{id}:{user}"),
        }
    }

    /// Splits a token; `None` if it is not one of ours. The names in it
    /// are checked by whoever opens the mailbox they name.
    pub fn parse(token: &'a str) -> Option<Token<'a>> {
        let (id, mailbox) = token.split_once(':')?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let (user, folder) = match mailbox.split_once('/') {
            Some((user, folder)) => (user, Some(folder)),
            None => (mailbox, None),
        };
        Some(Token { id, user, folder })
    }
}

/// What a lease file holds.
enum State {
    Free,
    /// A lease, with the file's exact bytes (for [`break_stale`]).
    Held(Lease, Vec<u8>),
    /// Bytes that do not parse, and the file's age in seconds.
    Unreadable(Vec<u8>, i64),
}

fn read_state(path: &Path, now: i64) -> Result<State> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(State::Free);
    };
    if let Some(lease) = Lease::parse(&bytes) {
        return Ok(State::Held(lease, bytes));
    }
    // Gone since the read: as good as free (the caller tries again).
    let age = match fs::metadata(path) {
        Ok(meta) => mtime(&meta).map_or(0, |t| now.saturating_sub(t)),
        Err(_) => return Ok(State::Free),
    };
    Ok(State::Unreadable(bytes, age))
}

/// Takes the lease of the Maildir `dir` (created if missing) for `lease`'s
/// holder: `Ok(Ok(()))` when taken, `Ok(Err(holder))` when someone else
/// holds it.
pub fn take(dir: &Path, lease: &Lease, now: i64) -> Result<std::result::Result<(), Holder>> {
    // Checked only when needed (a mailbox with no mail yet): a login costs
    // no extra file-system call.
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| crate::error::io_err("cannot create", dir, e))?;
    }
    let path = dir.join(LEASE_FILE);
    let mine = lease.to_bytes();
    let mut last = Holder::unknown();
    // A few rounds: each lost race means someone else just took, broke or
    // is breaking the lease, and the next round sees who.
    for _ in 0..8 {
        if create_exclusive(&path, &mine, false)? {
            return Ok(Ok(()));
        }
        let seen = match read_state(&path, now)? {
            State::Free => continue,
            State::Held(other, bytes) => {
                let same_node = other.holder.node == lease.holder.node;
                let crashed = same_node && other.holder.incarnation != lease.holder.incarnation;
                let expired = now >= other.expires.saturating_add(BREAK_GRACE);
                if !crashed && !expired {
                    return Ok(Err(other.holder));
                }
                last = other.holder;
                bytes
            }
            State::Unreadable(bytes, age) => {
                if age < UNREADABLE_GRACE {
                    return Ok(Err(Holder::unknown()));
                }
                bytes
            }
        };
        if !break_stale(&path, &seen, now)? {
            // Another process is breaking it: give it a moment.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Ok(Err(last))
}

/// Commit's fencing: `Ok` if the lease `id` on `dir` is still held at
/// `now`, else `LeaseLost` saying why.
pub fn check(dir: &Path, id: &str, now: i64) -> Result<()> {
    let lost = |why: String| {
        Err(Error::LeaseLost(format!(
            "lease on {}: {why}",
            dir.display()
        )))
    };
    match read_state(&dir.join(LEASE_FILE), now)? {
        State::Held(lease, _) if lease.id == id => {
            if lease.held_at(now) {
                Ok(())
            } else {
                lost(format!("expired {} s ago", now - lease.expires))
            }
        }
        State::Held(lease, _) => lost(format!(
            "taken over by node {:?} (session {:?})",
            lease.holder.node, lease.holder.session
        )),
        State::Free => lost("broken (no lease file)".into()),
        State::Unreadable(..) => lost("the lease file is unreadable".into()),
    }
}

/// Extends lease `id` on `dir` to `now + ttl`, if `holder` holds it and it
/// has not expired. `false` if it is lost.
pub fn renew(dir: &Path, id: &str, holder: &Holder, ttl: u32, now: i64) -> Result<bool> {
    let path = dir.join(LEASE_FILE);
    let State::Held(mut lease, _) = read_state(&path, now)? else {
        return Ok(false);
    };
    let ours = lease.id == id
        && lease.holder.node == holder.node
        && lease.holder.incarnation == holder.incarnation;
    if !ours || !lease.held_at(now) {
        return Ok(false);
    }
    lease.expires = now.saturating_add(i64::from(ttl));
    replace_file(&path, &lease.to_bytes(), false)?;
    Ok(true)
}

/// Gives lease `id` on `dir` back; a lease no longer held is not an error.
pub fn release(dir: &Path, id: &str, now: i64) -> Result<()> {
    let path = dir.join(LEASE_FILE);
    if let State::Held(lease, bytes) = read_state(&path, now)?
        && lease.id == id
    {
        // Just read, and ours: no one else writes it while it holds our id.
        remove_exact(&path, &bytes)?;
    }
    Ok(())
}

/// The lease held on `dir` at `now`, if any.
pub fn current(dir: &Path, now: i64) -> Result<Option<Lease>> {
    match read_state(&dir.join(LEASE_FILE), now)? {
        State::Held(lease, _) if lease.held_at(now) => Ok(Some(lease)),
        _ => Ok(None),
    }
}

/// Ends whatever lease `dir` has; `true` if there was one that held.
pub fn break_lease(dir: &Path, now: i64) -> Result<bool> {
    let path = dir.join(LEASE_FILE);
    let held = match read_state(&path, now)? {
        State::Free => return Ok(false),
        State::Held(lease, _) => lease.held_at(now),
        State::Unreadable(..) => false,
    };
    match fs::remove_file(&path) {
        Ok(()) => Ok(held),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(crate::error::io_err("cannot remove", &path, e)),
    }
}

/// The lease file of `dir` if it is stale at `now`: expired more than
/// `grace` seconds ago (at least [`BREAK_GRACE`]), or unreadable for as
/// long (at least [`UNREADABLE_GRACE`]). What it is, for the operator, and
/// its bytes.
fn judge_stale(dir: &Path, now: i64, grace: i64) -> Result<Option<(String, Vec<u8>)>> {
    Ok(match read_state(&dir.join(LEASE_FILE), now)? {
        State::Held(lease, bytes)
            if now >= lease.expires.saturating_add(grace.max(BREAK_GRACE)) =>
        {
            Some((
                format!(
                    "lease of node {:?} (session {:?}) expired {} s ago",
                    lease.holder.node,
                    lease.holder.session,
                    now - lease.expires
                ),
                bytes,
            ))
        }
        State::Unreadable(bytes, age) if age >= grace.max(UNREADABLE_GRACE) => {
            Some((format!("unreadable lease file, {age} s old"), bytes))
        }
        _ => None,
    })
}

/// What is stale about the lease file of `dir`, if anything (see
/// [`break_if_stale`]).
pub fn stale(dir: &Path, now: i64, grace: i64) -> Result<Option<String>> {
    Ok(judge_stale(dir, now, grace)?.map(|(what, _)| what))
}

/// Removes the lease file of `dir` if it expired more than `grace` seconds
/// ago (or is unreadable as long); returns what it was.
pub fn break_if_stale(dir: &Path, now: i64, grace: i64) -> Result<Option<String>> {
    let Some((what, bytes)) = judge_stale(dir, now, grace)? else {
        return Ok(None);
    };
    Ok(break_stale(&dir.join(LEASE_FILE), &bytes, now)?.then_some(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(node: &str, incarnation: &str, session: &str) -> Holder {
        Holder {
            node: node.into(),
            incarnation: incarnation.into(),
            session: session.into(),
            peer: "192.0.2.7:51234".into(),
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn file_format_round_trips_odd_values() {
        let lease = Lease {
            id: "00ff".into(),
            holder: Holder {
                node: "node one%\n".into(),
                incarnation: "\u{e9}t\u{e9}".into(),
                session: String::new(),
                peer: "[2001:db8::1]:110".into(),
            },
            since: -5,
            expires: NOW,
        };
        let bytes = lease.to_bytes();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 8);
        assert_eq!(Lease::parse(&bytes), Some(lease));
        // Cut short anywhere, it does not parse.
        for cut in 0..bytes.len() {
            assert_eq!(Lease::parse(&bytes[..cut]), None, "{cut}");
        }
        assert_eq!(Lease::parse(b"poplar-lease 2\n"), None);
    }

    #[test]
    fn tokens() {
        let t = Token::format("ab12", "alice", Some("Junk"));
        assert_eq!(
            Token::parse(&t),
            Some(Token {
                id: "ab12",
                user: "alice",
                folder: Some("Junk")
            })
        );
        let t = Token::format("ab12", "a:b", None);
        assert_eq!(Token::parse(&t).unwrap().user, "a:b");
        for bad in ["", "nohex", ":alice", "xyz:alice", "ab12"] {
            assert_eq!(Token::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_holder_at_a_time_then_expiry() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        let a = Lease::new(holder("n1", "i1", "s1"), NOW, 60);
        assert_eq!(take(&dir, &a, NOW).unwrap(), Ok(()));
        // Another node: refused until the lease expired BREAK_GRACE ago.
        let b = Lease::new(holder("n2", "i1", "s9"), NOW, 60);
        assert_eq!(take(&dir, &b, NOW + 30).unwrap(), Err(a.holder.clone()));
        assert_eq!(take(&dir, &b, NOW + 60).unwrap(), Err(a.holder.clone()));
        // The same process, another session: also refused.
        let a2 = Lease::new(holder("n1", "i1", "s2"), NOW, 60);
        assert_eq!(take(&dir, &a2, NOW + 1).unwrap(), Err(a.holder.clone()));
        check(&dir, &a.id, NOW + 59).unwrap();
        assert!(matches!(
            check(&dir, &a.id, NOW + 60),
            Err(Error::LeaseLost(_))
        ));
        // Past the grace: node 2 takes it; node 1's lease is lost.
        let later = NOW + 60 + BREAK_GRACE;
        let b = Lease::new(b.holder, later, 60);
        assert_eq!(take(&dir, &b, later).unwrap(), Ok(()));
        let err = check(&dir, &a.id, later).unwrap_err();
        assert!(
            err.message().contains("taken over by node \"n2\""),
            "{err:?}"
        );
        assert!(!renew(&dir, &a.id, &a.holder, 60, later).unwrap());
        // Releasing a lost lease is fine and leaves the new holder alone.
        release(&dir, &a.id, later).unwrap();
        check(&dir, &b.id, later).unwrap();
        release(&dir, &b.id, later).unwrap();
        assert!(matches!(
            check(&dir, &b.id, later),
            Err(Error::LeaseLost(_))
        ));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "nothing left");
    }

    #[test]
    fn a_restarted_node_takes_its_old_leases_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        let before = Lease::new(holder("n1", "boot-1", "s1"), NOW, 600);
        assert_eq!(take(&dir, &before, NOW).unwrap(), Ok(()));
        // The process crashed; its successor (same node, new incarnation)
        // logs the user in again right away.
        let after = Lease::new(holder("n1", "boot-2", "s1"), NOW + 1, 600);
        assert_eq!(take(&dir, &after, NOW + 1).unwrap(), Ok(()));
        assert!(matches!(
            check(&dir, &before.id, NOW + 1),
            Err(Error::LeaseLost(_))
        ));
        check(&dir, &after.id, NOW + 1).unwrap();
        // But another node may not use that shortcut.
        let other = Lease::new(holder("n2", "boot-1", "s1"), NOW + 2, 600);
        assert_eq!(take(&dir, &other, NOW + 2).unwrap(), Err(after.holder));
    }

    #[test]
    fn renewal_extends_only_a_held_lease() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        let a = Lease::new(holder("n1", "i1", "s1"), NOW, 60);
        take(&dir, &a, NOW).unwrap().unwrap();
        assert!(renew(&dir, &a.id, &a.holder, 60, NOW + 50).unwrap());
        check(&dir, &a.id, NOW + 100).unwrap();
        assert_eq!(
            current(&dir, NOW + 100).unwrap().unwrap().expires,
            NOW + 110
        );
        // Wrong holder or id: lost, and the file is untouched.
        assert!(!renew(&dir, &a.id, &holder("n2", "i1", "s1"), 60, NOW + 101).unwrap());
        assert!(!renew(&dir, &a.id, &holder("n1", "i2", "s1"), 60, NOW + 101).unwrap());
        assert!(!renew(&dir, "beef", &a.holder, 60, NOW + 101).unwrap());
        // Too late: expired, even if nobody took it yet.
        assert!(!renew(&dir, &a.id, &a.holder, 60, NOW + 110).unwrap());
        assert_eq!(
            current(&dir, NOW + 109).unwrap().unwrap().expires,
            NOW + 110
        );
        assert_eq!(current(&dir, NOW + 110).unwrap(), None);
    }

    #[test]
    fn unreadable_lease_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(LEASE_FILE), b"poplar-lease 1\nid ab").unwrap();
        let real_now = crate::files::now();
        let b = Lease::new(holder("n2", "i1", "s1"), real_now, 60);
        // Just written (perhaps still being written): held.
        assert_eq!(take(&dir, &b, real_now).unwrap(), Err(Holder::unknown()));
        assert!(stale(&dir, real_now, 0).unwrap().is_none());
        // Old enough: a crash cut it short; it is broken.
        let later = real_now + UNREADABLE_GRACE;
        assert!(stale(&dir, later, 0).unwrap().is_some());
        assert_eq!(take(&dir, &b, later).unwrap(), Ok(()));
    }

    #[test]
    fn breaking() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        assert!(!break_lease(&dir, NOW).unwrap());
        let a = Lease::new(holder("n1", "i1", "s1"), NOW, 60);
        take(&dir, &a, NOW).unwrap().unwrap();
        assert!(break_lease(&dir, NOW + 1).unwrap());
        assert!(matches!(
            check(&dir, &a.id, NOW + 1),
            Err(Error::LeaseLost(_))
        ));
        assert!(!renew(&dir, &a.id, &a.holder, 60, NOW + 1).unwrap());
    }

    /// Two "nodes" race for the same mailbox many times over; each round
    /// exactly one gets it, and neither ever holds it while the other does.
    #[test]
    fn racing_nodes_never_both_hold() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        fs::create_dir_all(&dir).unwrap();
        for round in 0..200 {
            // Every few rounds the mailbox starts with a stale lease, so
            // the racers also race to break it.
            let now = crate::files::now();
            if round % 3 == 0 {
                let old = Lease::new(holder("n0", "i0", "old"), now - 1000, 60);
                fs::write(dir.join(LEASE_FILE), old.to_bytes()).unwrap();
            }
            let won: Vec<Lease> = std::thread::scope(|s| {
                let racers: Vec<_> = ["n1", "n2", "n3"]
                    .into_iter()
                    .map(|node| {
                        let dir = &dir;
                        s.spawn(move || {
                            let lease = Lease::new(holder(node, "i1", "s"), now, 60);
                            take(dir, &lease, now).unwrap().ok().map(|()| lease)
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .filter_map(|r| r.join().unwrap())
                    .collect()
            });
            assert_eq!(won.len(), 1, "round {round}: {won:?}");
            check(&dir, &won[0].id, now).unwrap();
            release(&dir, &won[0].id, now).unwrap();
            let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
            assert!(left.is_empty(), "round {round}: {left:?}");
        }
    }
}
