//! Dovecot compatibility: reading a Maildir's `dovecot-uidlist` and
//! expanding `pop3_uidl_format`, so that UIDLs stay what Dovecot showed
//! and clients that leave mail on the server do not download it again
//! after a migration. The uidlist is only read, never written.

use std::collections::HashMap;
use std::path::Path;

use crate::error::Result;
use crate::files::read_optional;
use crate::names::base_name;
use crate::uidl::{poplar_uid, valid_uidl};

/// Reads `<dir>/dovecot-uidlist`; `None` if there is none or its format is
/// unknown. Skipped lines are logged (their count and the first one).
pub fn read_uidlist(dir: &Path, log: fn(&str)) -> Result<Option<UidList>> {
    let path = dir.join("dovecot-uidlist");
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    let list = parse_uidlist(&String::from_utf8_lossy(&bytes));
    match &list {
        None => log(&format!("{}: unknown format, ignored", path.display())),
        Some(UidList {
            skipped,
            first_skipped: Some((line, why)),
            ..
        }) => log(&format!(
            "{}: skipped {skipped} malformed line(s); first: line {line}: {why}",
            path.display()
        )),
        Some(_) => {}
    }
    Ok(list)
}

impl UidList {
    /// The UIDL and POP3 order of the message with base name `base`, if
    /// the uidlist has it: its `P` field (an empty one means the base name),
    /// else `format` expanded. A UIDL that is not valid is replaced by the
    /// message's `poplar` one (and logged).
    pub fn uid_of(&self, base: &str, format: &str, log: fn(&str)) -> Option<(String, Rank)> {
        let rec = self.records.get(base)?;
        let uidl = match rec.pop3_uidl.as_deref() {
            Some("") => base.to_string(),
            Some(p) => p.to_string(),
            None => {
                let guid = rec.guid.as_deref().unwrap_or(base);
                expand_uidl(format, rec.uid, self.validity, base, guid).unwrap_or_default()
            }
        };
        let uidl = if valid_uidl(&uidl) {
            uidl
        } else {
            log(&format!(
                "UIDL {uidl:?} from dovecot-uidlist is not valid, using own"
            ));
            poplar_uid(base)
        };
        Some((uidl, rec.rank()))
    }
}

/// Where a message comes in Dovecot's POP3 order (smaller first); messages
/// the uidlist does not know get [`UNLISTED`].
pub type Rank = (u8, u64, u64);

/// The rank of a message the uidlist does not know: after all it does.
pub const UNLISTED: Rank = (2, 0, 0);

/// The parts of a `dovecot-uidlist` this plugin uses.
#[derive(Debug, Default)]
pub struct UidList {
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
pub struct UidRecord {
    uid: u64,
    pop3_uidl: Option<String>,
    pop3_order: Option<u64>,
    guid: Option<String>,
}

impl UidRecord {
    /// Dovecot's POP3 order: messages with an `O` number first, by that
    /// number, then the others by UID (`O0` counts as no number, as in
    /// Dovecot's sort).
    fn rank(&self) -> Rank {
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
pub fn parse_uidlist(text: &str) -> Option<UidList> {
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
    fn uidlist_v1() {
        let list =
            parse_uidlist("1 1234 3\n1 1700000000.M1P1.h\n2 1700000001.M1P1.h:2,S\n").unwrap();
        assert_eq!(list.validity, 1234);
        assert_eq!(list.records["1700000000.M1P1.h"].uid, 1);
        assert_eq!(list.records["1700000001.M1P1.h"].uid, 2);
    }
}
