//! UIDLs: how Poplar makes them from Maildir names, and the UIDLs it was
//! told to keep (a migration's `deliver` with a `uid`; a `check --repair`
//! that had to rename a file), in `poplar-uidlist`.
//!
//! # `poplar-uidlist`
//!
//! One record a line, `<uidl> <base name>` (the UIDL is 1–70 characters in
//! 0x21..0x7E, so it holds no space; the base name is the rest of the
//! line). A record names the UIDL of the message with that base name in
//! this Maildir, in place of the one the `uidl` mode would give it. Lines
//! are appended (with the user's lock held) and synced; an unfinished last
//! line (a crash while appending) and lines that do not parse are ignored.
//! `poplar storage gc` drops the records of messages that are gone.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Result, io_err};
use crate::files::{read_optional, replace_file};

/// The file of kept UIDLs in a Maildir.
pub const KEPT_FILE: &str = "poplar-uidlist";

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
pub fn unused_uid(base: &str, used: &HashSet<String>) -> String {
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

/// The kept UIDLs of the Maildir `dir`: base name -> UIDL. A later record
/// for the same base name wins.
pub fn read_kept(dir: &Path) -> Result<HashMap<String, String>> {
    let mut kept = HashMap::new();
    let Some(bytes) = read_optional(&dir.join(KEPT_FILE))? else {
        return Ok(kept);
    };
    let text = String::from_utf8_lossy(&bytes);
    // split_inclusive keeps each line's '\n': a line without one was cut
    // short by a crash and is not trusted.
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            continue;
        };
        if let Some((uid, base)) = line.split_once(' ')
            && valid_uidl(uid)
            && !base.is_empty()
        {
            kept.insert(base.to_string(), uid.to_string());
        }
    }
    Ok(kept)
}

/// Appends records (UIDL, base name) to the kept UIDLs of `dir`, synced.
/// The caller holds the user's lock.
pub fn add_kept(dir: &Path, records: &[(String, String)]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let path = dir.join(KEPT_FILE);
    let mut text = String::new();
    for (uid, base) in records {
        text.push_str(&format!("{uid} {base}\n"));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_err("cannot open", &path, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("cannot write", &path, e))
}

/// Rewrites the kept UIDLs of `dir` keeping only the records of `present`
/// base names; returns how many were dropped. The caller holds the user's
/// lock.
pub fn prune_kept(dir: &Path, present: &HashSet<String>) -> Result<usize> {
    let kept = read_kept(dir)?;
    let before = kept.len();
    let mut records: Vec<(&String, &String)> = kept
        .iter()
        .filter(|(base, _)| present.contains(*base))
        .collect();
    let dropped = before - records.len();
    if dropped == 0 {
        return Ok(0);
    }
    let path = dir.join(KEPT_FILE);
    if records.is_empty() {
        fs::remove_file(&path).map_err(|e| io_err("cannot remove", &path, e))?;
        return Ok(dropped);
    }
    records.sort();
    let text: String = records
        .iter()
        .map(|(base, uid)| format!("{uid} {base}\n"))
        .collect();
    replace_file(&path, text.as_bytes(), true)?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn kept_uidls_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(read_kept(dir).unwrap().is_empty());
        let rec = |u: &str, b: &str| (u.to_string(), b.to_string());
        add_kept(dir, &[rec("old-1", "1.a"), rec("old-2", "2.a b")]).unwrap();
        add_kept(dir, &[rec("newer", "1.a")]).unwrap();
        // A crash in the middle of an append leaves an unfinished line.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join(KEPT_FILE))
            .unwrap();
        file.write_all(b"\x01bad 3.a\nhalf 4.a").unwrap();
        let kept = read_kept(dir).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept["1.a"], "newer");
        assert_eq!(kept["2.a b"], "old-2");
        assert_eq!(kept.get("3.a"), None, "not a UIDL");
        assert_eq!(kept.get("4.a"), None, "unfinished line");

        let present: HashSet<String> = ["2.a b".to_string()].into();
        assert_eq!(prune_kept(dir, &present).unwrap(), 1);
        assert_eq!(read_kept(dir).unwrap().len(), 1);
        assert_eq!(prune_kept(dir, &present).unwrap(), 0);
        assert_eq!(prune_kept(dir, &HashSet::new()).unwrap(), 1);
        assert!(!dir.join(KEPT_FILE).exists());
    }
}
