//! Maildir names: user and folder names, message keys, the parts of a
//! message's file name (`<time>.<unique>,S=<n>,W=<n>:2,<flags>`), and new
//! unique names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::files::random_hex;

/// Checks a user or folder name: 1–255 bytes, no `/` or NUL, not `.` or
/// `..`.
pub fn check_name(what: &str, name: &str) -> Result<()> {
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

/// Checks a folder name: as [`check_name`], and not starting with `.`
/// (Maildir++ stores folder `F` as the directory `.F`).
pub fn check_folder(folder: &str) -> Result<()> {
    check_name("folder", folder)?;
    if folder.starts_with('.') {
        return Err(Error::Invalid(format!(
            "folder name {folder:?} starts with '.'"
        )));
    }
    Ok(())
}

/// Checks a key (`new/<name>` or `cur/<name>`) and returns its directory
/// and file name.
pub fn check_key(key: &str) -> Result<(&str, &str)> {
    let split = key
        .strip_prefix("new/")
        .map(|n| ("new", n))
        .or_else(|| key.strip_prefix("cur/").map(|n| ("cur", n)));
    match split {
        Some((sub, name))
            if !name.is_empty()
                && name.len() <= 255
                && !name.starts_with('.')
                && !name.contains(['/', '\0']) =>
        {
            Ok((sub, name))
        }
        _ => Err(Error::Invalid(format!("invalid message key {key:?}"))),
    }
}

/// The Maildir base name: the file name without its `:2,FLAGS` suffix.
pub fn base_name(name: &str) -> &str {
    name.split_once(':').map_or(name, |(base, _)| base)
}

/// The flags of a file name (after `:2,`), empty if it has none.
pub fn flags(name: &str) -> &str {
    name.split_once(":2,").map_or("", |(_, flags)| flags)
}

/// Whether the message is flagged deleted (Maildir's `T`, "trashed"):
/// POP3 listings leave it out.
pub fn is_trashed(name: &str) -> bool {
    flags(name).contains('T')
}

/// The file name with the `T` flag added (flags stay sorted, as the
/// Maildir specification asks). A name without an info part gets `:2,T`.
pub fn with_trashed(name: &str) -> String {
    let base = base_name(name);
    let mut flags: Vec<char> = flags(name).chars().collect();
    if !flags.contains(&'T') {
        flags.push('T');
    }
    flags.sort_unstable();
    let flags: String = flags.into_iter().collect();
    format!("{base}:2,{flags}")
}

/// The delivery time at the start of a Maildir name, if it has one.
pub fn timestamp(base: &str) -> Option<i64> {
    let head = base.split('.').next().unwrap_or("");
    if !head.is_empty() && head.len() <= 18 && head.bytes().all(|b| b.is_ascii_digit()) {
        head.parse().ok()
    } else {
        None
    }
}

/// The `,S=<n>` field of a base name: the size as stored.
pub fn s_size(base: &str) -> Option<u64> {
    field(base, "S=")
}

/// The `,W=<n>` field of a base name: the size with CRLF line endings.
pub fn w_size(base: &str) -> Option<u64> {
    field(base, "W=")
}

fn field(base: &str, prefix: &str) -> Option<u64> {
    base.split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix(prefix)?.parse().ok())
}

/// The base name with its `,S=` and `,W=` fields set to `stored` and
/// `crlf` (other fields kept, in order).
pub fn with_sizes(base: &str, stored: u64, crlf: u64) -> String {
    let mut parts = base.split(',');
    let mut out = parts.next().unwrap_or("").to_string();
    for part in parts {
        if !part.starts_with("S=") && !part.starts_with("W=") {
            out.push(',');
            out.push_str(part);
        }
    }
    out.push_str(&format!(",S={stored},W={crlf}"));
    out
}

/// A name for a new message, unique across instances and hosts sharing
/// the Maildir: `<secs>.M<micros>P<random>Q<counter>.poplar`. `secs` is the
/// delivery time (or a migrated message's received time); the listing
/// orders messages by it.
pub fn unique_name(secs: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_micros();
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = &random_hex()[..16];
    format!("{secs}.M{micros}P{random}Q{counter}.poplar")
}

/// Percent-encodes `%`, spaces, controls and DEL, so a value is one word.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '%' || c == ' ' || c.is_control() {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Undoes [`escape`]; `None` for a malformed escape or non-UTF-8 result.
pub fn unescape(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        assert_eq!(check_key("new/1.a").unwrap(), ("new", "1.a"));
        assert_eq!(check_key("cur/1.a:2,S").unwrap(), ("cur", "1.a:2,S"));
        for bad in [
            "", "x", "new/", "tmp/1.a", "new/.x", "cur/a/b", "cur/..", "cur",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_folder(".Junk").is_err());
        assert!(check_folder("Junk.2024").is_ok());
        assert!(check_name("user", "..").is_err());
    }

    #[test]
    fn flags_and_trash() {
        assert_eq!(flags("1.a:2,RS"), "RS");
        assert_eq!(flags("1.a"), "");
        assert!(!is_trashed("1.a:2,S"));
        assert!(is_trashed("1.a:2,ST"));
        assert_eq!(with_trashed("1.a:2,SR"), "1.a:2,RST");
        assert_eq!(with_trashed("1.a"), "1.a:2,T");
        assert_eq!(with_trashed("1.a:2,T"), "1.a:2,T");
        assert_eq!(with_trashed("1.a,S=3:2,"), "1.a,S=3:2,T");
    }

    #[test]
    fn name_fields() {
        assert_eq!(timestamp("1700000000.M1P1.h"), Some(1_700_000_000));
        assert_eq!(timestamp("garbage"), None);
        assert_eq!(s_size("1.a,S=12,W=14"), Some(12));
        assert_eq!(w_size("1.a,S=12,W=14"), Some(14));
        assert_eq!(w_size("1.a,S=12"), None);
        assert_eq!(with_sizes("1.a,S=1,X=y,W=2", 5, 7), "1.a,X=y,S=5,W=7");
        assert_eq!(with_sizes("1.a", 5, 7), "1.a,S=5,W=7");
        let a = unique_name(1_700_000_000);
        assert!(
            a.starts_with("1700000000.M") && a.ends_with(".poplar"),
            "{a}"
        );
        assert_ne!(a, unique_name(1_700_000_000));
    }
}
