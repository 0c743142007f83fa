//! When POP3 clients retrieved messages, for `EXPIRE` sweeps (`search`'s
//! `retrieved-before`): `<maildir>/poplar-retrieved`, one record a line,
//! `<unix seconds> <base name>`, the first retrieval of each message.
//!
//! `commit` rewrites the file (a sibling renamed over it) while it holds
//! the mailbox's lease, so writers never race; records of messages that
//! commit removed go with them, and `poplar storage gc` drops those of
//! messages removed otherwise. It is not synced: a record lost in a crash
//! only postpones an expiry.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::Result;
use crate::files::{read_optional, replace_file};

/// The retrieval file in a Maildir.
pub const RETRIEVED_FILE: &str = "poplar-retrieved";

/// Base name -> first retrieval time, of the Maildir `dir`.
pub fn read_retrieved(dir: &Path) -> Result<HashMap<String, i64>> {
    let mut map = HashMap::new();
    let Some(bytes) = read_optional(&dir.join(RETRIEVED_FILE))? else {
        return Ok(map);
    };
    for line in String::from_utf8_lossy(&bytes).lines() {
        if let Some((time, base)) = line.split_once(' ')
            && let Ok(time) = time.parse::<i64>()
            && !base.is_empty()
        {
            let first = map.entry(base.to_string()).or_insert(time);
            *first = (*first).min(time);
        }
    }
    Ok(map)
}

/// Records that the messages `bases` were retrieved at `now` (keeping an
/// earlier time where there is one) and forgets the records of `gone`;
/// `keep`, if given, is the set of base names to keep records for at all.
/// Writes only if something changed.
pub fn update_retrieved(
    dir: &Path,
    bases: &[String],
    gone: &HashSet<String>,
    keep: Option<&HashSet<String>>,
    now: i64,
) -> Result<usize> {
    let mut map = read_retrieved(dir)?;
    let before = map.clone();
    for base in bases {
        // A name with a line break cannot be a record (and is no Maildir
        // name this plugin lists).
        if !base.contains(['\n', '\r']) {
            map.entry(base.clone()).or_insert(now);
        }
    }
    map.retain(|base, _| !gone.contains(base) && keep.is_none_or(|k| k.contains(base)));
    if map == before {
        return Ok(0);
    }
    let dropped = before.keys().filter(|b| !map.contains_key(*b)).count();
    let mut records: Vec<(&String, &i64)> = map.iter().collect();
    records.sort();
    let text: String = records
        .iter()
        .map(|(base, time)| format!("{time} {base}\n"))
        .collect();
    replace_file(&dir.join(RETRIEVED_FILE), text.as_bytes(), false)?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn first_retrieval_wins_and_gone_ones_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let none = HashSet::new();
        update_retrieved(dir, &s(&["1.a", "2.a"]), &none, None, 100).unwrap();
        update_retrieved(dir, &s(&["2.a", "3.a", "bad\nname"]), &none, None, 200).unwrap();
        let map = read_retrieved(dir).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!((map["1.a"], map["2.a"], map["3.a"]), (100, 100, 200));
        let gone: HashSet<String> = ["1.a".to_string()].into();
        assert_eq!(update_retrieved(dir, &[], &gone, None, 300).unwrap(), 1);
        let keep: HashSet<String> = ["3.a".to_string()].into();
        assert_eq!(
            update_retrieved(dir, &[], &none, Some(&keep), 300).unwrap(),
            1
        );
        assert_eq!(read_retrieved(dir).unwrap().len(), 1);
    }
}
