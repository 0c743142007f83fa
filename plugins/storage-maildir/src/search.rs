//! The storage interface's `search`: finds messages by header fields, body
//! text, date and size, where the mail is. Like [`crate::maildir`] it needs
//! no plugin bindings and is tested natively.
//!
//! How a message is matched (every condition given must hold):
//!
//! - Size: the listing's size (CRLF octets), compared strictly (`larger`,
//!   `smaller`). Checked first: it needs no reading.
//! - Header fields: the header block is read in chunks up to the empty line
//!   (at most [`HEADER_LIMIT`] octets) and parsed with `mailparse`, the same
//!   parser the host uses for the filters' `headers()`: folding undone,
//!   RFC 2047 encoded-words decoded. Names compare without case, values by
//!   case-insensitive substring (Unicode lower case).
//! - Date: the first `Date:` field ([`parse_date`]: `mailparse`'s reading
//!   of RFC 5322 dates); without one that parses, the file's modification
//!   time (Maildir sets it at delivery), and failing that the timestamp
//!   that starts the Maildir name. `since` is inclusive, `before` exclusive.
//! - Retrieval (`retrieved-before`): the first time a POP3 session that
//!   retrieved the message committed, as recorded in the mailbox's
//!   `poplar-retrieved`; a message never retrieved does not match.
//! - Messages flagged deleted (`T`) are not searched, as POP3 does not list
//!   them.
//! - Body text: first the raw body, streamed in [`CHUNK`]-octet reads with
//!   the tail of each chunk carried over, so a match across two reads is
//!   found and a huge message never sits in memory whole. Text that is
//!   still missing is then looked for in the decoded text parts (quoted-
//!   printable, base64, charsets) of messages up to [`DECODE_LIMIT`]
//!   octets.

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use crate::error::Error;
use crate::maildir::{Config, MAX_READ};
use crate::names::base_name;
use crate::retrieved::read_retrieved;

/// Octets per read while scanning a body.
pub const CHUNK: u32 = MAX_READ;
/// The most octets read while looking for the end of the header block;
/// whatever is past it counts as body.
pub const HEADER_LIMIT: usize = 1 << 20;
/// Messages up to this size also have their MIME text parts decoded and
/// searched when the raw body did not match.
pub const DECODE_LIMIT: u64 = 8 << 20;

/// What to look for (the WIT `search-criteria`, in plain Rust types).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Criteria {
    /// (field name, text its value must contain); empty text: just present.
    pub headers: Vec<(String, String)>,
    /// Text the body must contain, each.
    pub body: Vec<String>,
    /// Date at or after (Unix seconds).
    pub since: Option<i64>,
    /// Date strictly before (Unix seconds).
    pub before: Option<i64>,
    /// Size strictly greater than.
    pub larger: Option<u64>,
    /// Size strictly smaller than.
    pub smaller: Option<u64>,
    /// First retrieved strictly before (Unix seconds).
    pub retrieved_before: Option<i64>,
}

/// Where one message's bytes come from.
pub trait Source {
    /// Up to `len` octets from `offset`; empty at the end of the message.
    fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, Error>;
    /// When the message was stored, in Unix seconds, if known.
    fn stored_at(&mut self) -> Option<i64>;
}

/// Criteria with their texts lower-cased once, ready to match many messages.
pub struct Matcher {
    headers: Vec<(String, String)>,
    body: Vec<String>,
    since: Option<i64>,
    before: Option<i64>,
    larger: Option<u64>,
    smaller: Option<u64>,
    chunk: u32,
}

impl Matcher {
    pub fn new(c: &Criteria) -> Matcher {
        Matcher {
            headers: c
                .headers
                .iter()
                .map(|(name, text)| (name.trim().to_string(), text.to_lowercase()))
                .collect(),
            body: c
                .body
                .iter()
                .filter(|t| !t.is_empty())
                .map(|t| t.to_lowercase())
                .collect(),
            since: c.since,
            before: c.before,
            larger: c.larger,
            smaller: c.smaller,
            chunk: CHUNK,
        }
    }

    /// Whether the message of `size` (the listing's size) read from `src`
    /// matches. Reads only as much as the criteria need.
    pub fn matches(&self, size: u64, src: &mut impl Source) -> Result<bool, Error> {
        if self.larger.is_some_and(|n| size <= n) || self.smaller.is_some_and(|n| size >= n) {
            return Ok(false);
        }
        let dated = self.since.is_some() || self.before.is_some();
        if self.headers.is_empty() && self.body.is_empty() && !dated {
            return Ok(true);
        }
        let (header_block, body_offset) = self.read_header_block(src)?;
        let fields = parse_fields(&header_block);
        for (name, text) in &self.headers {
            let found = fields
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.to_lowercase().contains(text));
            if !found {
                return Ok(false);
            }
        }
        if dated {
            let date = fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Date"))
                .and_then(|(_, v)| parse_date(v))
                .or_else(|| src.stored_at());
            let Some(date) = date else {
                return Ok(false); // no date at all: a date condition cannot hold
            };
            if self.since.is_some_and(|s| date < s) || self.before.is_some_and(|b| date >= b) {
                return Ok(false);
            }
        }
        if self.body.is_empty() {
            return Ok(true);
        }
        let mut missing = self.scan_raw_body(src, body_offset)?;
        if !missing.is_empty() && size <= DECODE_LIMIT {
            missing = self.scan_decoded(src, missing)?;
        }
        Ok(missing.is_empty())
    }

    /// Reads the header block (without the empty line that ends it) and
    /// returns it with the offset where the body starts.
    fn read_header_block(&self, src: &mut impl Source) -> Result<(Vec<u8>, u64), Error> {
        let mut buf = Vec::new();
        loop {
            if let Some(end) = header_end(&buf) {
                let body = end.body;
                buf.truncate(end.header);
                return Ok((buf, body as u64));
            }
            if buf.len() >= HEADER_LIMIT {
                buf.truncate(HEADER_LIMIT);
                let len = buf.len() as u64;
                return Ok((buf, len));
            }
            let want = (HEADER_LIMIT - buf.len()).min(self.chunk as usize) as u32;
            let part = src.read(buf.len() as u64, want)?;
            if part.is_empty() {
                let len = buf.len() as u64;
                return Ok((buf, len)); // no empty line: all header, no body
            }
            buf.extend_from_slice(&part);
        }
    }

    /// Streams the body from `offset`; returns the texts not found in it.
    fn scan_raw_body(&self, src: &mut impl Source, mut offset: u64) -> Result<Vec<String>, Error> {
        let mut missing: Vec<&str> = self.body.iter().map(String::as_str).collect();
        let keep = missing.iter().map(|t| t.chars().count()).max().unwrap_or(1) - 1;
        let mut pending = Vec::new(); // an incomplete UTF-8 sequence at a chunk's end
        let mut carry = String::new(); // the lower-cased tail of the text so far
        loop {
            let part = src.read(offset, self.chunk)?;
            let done = part.is_empty();
            offset += part.len() as u64;
            pending.extend_from_slice(&part);
            let cut = if done {
                pending.len()
            } else {
                pending.len() - incomplete_utf8_tail(&pending)
            };
            let text = String::from_utf8_lossy(&pending[..cut]).to_lowercase();
            pending.drain(..cut);
            carry.push_str(&text);
            missing.retain(|t| !carry.contains(t));
            if missing.is_empty() || done {
                break;
            }
            carry = last_chars(&carry, keep).to_string();
        }
        Ok(missing.into_iter().map(str::to_string).collect())
    }

    /// Looks for `missing` in the decoded text parts of the whole message;
    /// returns the texts still not found.
    fn scan_decoded(
        &self,
        src: &mut impl Source,
        mut missing: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        let mut whole = Vec::new();
        loop {
            let part = src.read(whole.len() as u64, self.chunk)?;
            if part.is_empty() || whole.len() as u64 > DECODE_LIMIT {
                break;
            }
            whole.extend_from_slice(&part);
        }
        let Ok(mail) = mailparse::parse_mail(&whole) else {
            return Ok(missing);
        };
        for part in mail.parts() {
            let textual = part.ctype.mimetype.starts_with("text/") && part.subparts.is_empty();
            if !textual {
                continue;
            }
            let Ok(text) = part.get_body() else {
                continue;
            };
            let text = text.to_lowercase();
            missing.retain(|t| !text.contains(t.as_str()));
            if missing.is_empty() {
                break;
            }
        }
        Ok(missing)
    }
}

/// Where the header block ends: its length without the empty line, and the
/// offset of the body after it.
struct HeaderEnd {
    header: usize,
    body: usize,
}

fn header_end(buf: &[u8]) -> Option<HeaderEnd> {
    // An empty header block: the message starts with the empty line.
    if buf.starts_with(b"\n") {
        return Some(HeaderEnd { header: 0, body: 1 });
    }
    if buf.starts_with(b"\r\n") {
        return Some(HeaderEnd { header: 0, body: 2 });
    }
    let mut i = 0;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos; // end of a line; is the next line empty?
        match &buf[nl + 1..] {
            [b'\n', ..] => {
                return Some(HeaderEnd {
                    header: nl + 1,
                    body: nl + 2,
                });
            }
            [b'\r', b'\n', ..] => {
                return Some(HeaderEnd {
                    header: nl + 1,
                    body: nl + 3,
                });
            }
            _ => i = nl + 1,
        }
    }
    None
}

/// The fields of a header block, decoded. Parsing stops at the first line
/// that is not a field (a broken header block keeps what came before it).
fn parse_fields(block: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < block.len() {
        match mailparse::parse_header(&block[at..]) {
            Ok((field, used)) if used > 0 => {
                fields.push((field.get_key(), field.get_value()));
                at += used;
            }
            _ => break,
        }
    }
    fields
}

/// How many octets at the end of `buf` are the start of a UTF-8 sequence
/// that the next chunk completes.
fn incomplete_utf8_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation octet: look further back for the lead
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0, // ASCII or not a lead octet
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// The last `n` characters of `s`.
fn last_chars(s: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    match s.char_indices().rev().nth(n - 1) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

/// The time of a `Date:` field value, in Unix seconds, read by
/// `mailparse::dateparse` (the RFC 5322 form with a day name, comment or
/// zone name, and two-digit years). That parser is lenient: text with no
/// date in it comes out as the epoch, so the epoch itself counts as no date
/// (the search then uses the time the message was stored).
pub fn parse_date(value: &str) -> Option<i64> {
    mailparse::dateparse(value).ok().filter(|&t| t != 0)
}

/// Searches the Maildir of `user` (or its `folder`): the keys of the
/// messages that match, in listing order.
pub fn search(
    config: &Config,
    user: &str,
    folder: Option<&str>,
    criteria: &Criteria,
) -> Result<Vec<String>, Error> {
    let maildir = config.open(user, folder)?; // checks both names
    let retrieved = match criteria.retrieved_before {
        Some(_) => read_retrieved(maildir.dir())?,
        None => Default::default(),
    };
    let matcher = Matcher::new(criteria);
    let mut keys = Vec::new();
    for entry in maildir.list()? {
        if let Some(before) = criteria.retrieved_before {
            let name = entry.key.split_once('/').map_or("", |(_, n)| n);
            let retrieved_at = retrieved.get(base_name(name));
            if retrieved_at.is_none_or(|&at| at >= before) {
                continue; // never retrieved, or not long enough ago
            }
        }
        let mut src = Stored {
            read: |offset, len| maildir.read(&entry.key, offset, len),
            path: maildir.dir().join(&entry.key),
            key: &entry.key,
        };
        match matcher.matches(entry.size, &mut src) {
            Ok(true) => keys.push(entry.key),
            Ok(false) => {}
            Err(Error::NotFound(_)) => {} // removed since the listing
            Err(e) => return Err(e),
        }
    }
    Ok(keys)
}

/// A stored message: reads through the Maildir, dated by its file.
struct Stored<'a, F> {
    read: F,
    path: PathBuf,
    key: &'a str,
}

impl<F: FnMut(u64, u32) -> Result<Vec<u8>, Error>> Source for Stored<'_, F> {
    fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
        (self.read)(offset, len)
    }

    fn stored_at(&mut self) -> Option<i64> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        // Moved since the listing: the delivery time that starts the name.
        mtime.or_else(|| {
            let name = self.key.rsplit('/').next().unwrap_or(self.key);
            base_name(name).split('.').next()?.parse().ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message in memory.
    struct Mem {
        bytes: Vec<u8>,
        stored: Option<i64>,
        reads: usize,
    }

    impl Mem {
        fn new(bytes: &[u8]) -> Mem {
            Mem {
                bytes: bytes.to_vec(),
                stored: None,
                reads: 0,
            }
        }
    }

    impl Source for Mem {
        fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
            self.reads += 1;
            let start = (offset as usize).min(self.bytes.len());
            let end = start.saturating_add(len as usize).min(self.bytes.len());
            Ok(self.bytes[start..end].to_vec())
        }
        fn stored_at(&mut self) -> Option<i64> {
            self.stored
        }
    }

    fn hits(c: &Criteria, msg: &[u8]) -> bool {
        Matcher::new(c)
            .matches(msg.len() as u64, &mut Mem::new(msg))
            .unwrap()
    }

    fn header(name: &str, text: &str) -> Criteria {
        Criteria {
            headers: vec![(name.into(), text.into())],
            ..Criteria::default()
        }
    }

    fn body(text: &str) -> Criteria {
        Criteria {
            body: vec![text.into()],
            ..Criteria::default()
        }
    }

    const PLAIN: &[u8] = b"From: Alice Example <alice@example.org>\r\n\
        Subject: Quarterly\r\n report, draft\r\n\
        Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n\
        \r\n\
        Hello Bob,\r\nthe numbers are in.\r\n";

    #[test]
    fn no_criteria_match_everything_without_reading() {
        let mut m = Mem::new(PLAIN);
        assert!(
            Matcher::new(&Criteria::default())
                .matches(10, &mut m)
                .unwrap()
        );
        assert_eq!(m.reads, 0);
    }

    #[test]
    fn headers_match_by_name_and_case_insensitive_substring() {
        assert!(hits(&header("from", "ALICE@example"), PLAIN));
        assert!(hits(&header("FROM", "alice example"), PLAIN));
        assert!(!hits(&header("From", "bob"), PLAIN));
        assert!(!hits(&header("To", ""), PLAIN), "absent field");
        assert!(hits(&header("Subject", ""), PLAIN), "present field");
        // Folding is undone.
        assert!(hits(&header("Subject", "quarterly report, draft"), PLAIN));
        // A header text is not looked for in the body, nor the reverse.
        assert!(!hits(&header("Subject", "numbers"), PLAIN));
        assert!(!hits(&body("quarterly"), PLAIN));
    }

    #[test]
    fn encoded_words_are_decoded() {
        let msg = "Subject: =?UTF-8?B?w4l0w6kgw6AgUGFyaXM=?=\n\
                   From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>\n\nx\n";
        assert!(hits(&header("Subject", "été à paris"), msg.as_bytes()));
        assert!(hits(&header("Subject", "ÉTÉ"), msg.as_bytes()));
        assert!(hits(&header("From", "andré"), msg.as_bytes()));
        assert!(!hits(&header("Subject", "=?UTF-8"), msg.as_bytes()));
    }

    #[test]
    fn every_condition_must_hold() {
        let mut c = header("From", "alice");
        c.body.push("numbers".into());
        c.headers.push(("Subject".into(), "report".into()));
        assert!(hits(&c, PLAIN));
        c.body.push("absent".into());
        assert!(!hits(&c, PLAIN));
    }

    #[test]
    fn sizes_are_strict_and_need_no_reading() {
        let c = Criteria {
            larger: Some(100),
            smaller: Some(200),
            ..Criteria::default()
        };
        let m = Matcher::new(&c);
        let mut src = Mem::new(PLAIN);
        assert!(m.matches(150, &mut src).unwrap());
        assert!(!m.matches(100, &mut src).unwrap());
        assert!(!m.matches(200, &mut src).unwrap());
        assert_eq!(src.reads, 0);
    }

    #[test]
    fn dates_come_from_the_header_else_the_file() {
        // 2003-07-01 08:52:37 UTC
        let at = 1_057_049_557;
        let since = |s| Criteria {
            since: Some(s),
            ..Criteria::default()
        };
        let before = |b| Criteria {
            before: Some(b),
            ..Criteria::default()
        };
        assert!(hits(&since(at), PLAIN), "since is inclusive");
        assert!(!hits(&since(at + 1), PLAIN));
        assert!(!hits(&before(at), PLAIN), "before is exclusive");
        assert!(hits(&before(at + 1), PLAIN));

        let undated = b"Subject: x\n\nbody\n";
        let m = Matcher::new(&since(1000));
        let mut src = Mem::new(undated);
        assert!(!m.matches(10, &mut src).unwrap(), "no date at all");
        src.stored = Some(1000);
        assert!(m.matches(10, &mut src).unwrap(), "the file's time");
        let bad = b"Date: sometime soon\n\nbody\n";
        let mut src = Mem::new(bad);
        src.stored = Some(999);
        assert!(
            !m.matches(10, &mut src).unwrap(),
            "unparsable Date falls back"
        );
    }

    #[test]
    fn body_search_crosses_chunk_boundaries() {
        let mut msg = b"Subject: big\r\n\r\n".to_vec();
        for _ in 0..5000 {
            msg.extend_from_slice(b"filler line, nothing to see here\r\n");
        }
        msg.extend_from_slice("the NEEDLE in a haystack, naïve café\r\n".as_bytes());
        for _ in 0..100 {
            msg.extend_from_slice(b"more filler\r\n");
        }
        // Every chunk size puts the boundary somewhere else in the needle,
        // including inside the two-octet "ï" and "é".
        for chunk in [7, 13, 64, 1000, 4096] {
            let mut m = Matcher::new(&body("needle in a HAYSTACK"));
            m.chunk = chunk;
            assert!(m.matches(msg.len() as u64, &mut Mem::new(&msg)).unwrap());
            let mut m = Matcher::new(&body("NAÏVE CAFÉ"));
            m.chunk = chunk;
            assert!(m.matches(msg.len() as u64, &mut Mem::new(&msg)).unwrap());
            let mut m = Matcher::new(&body("needle in a haystack!"));
            m.chunk = chunk;
            assert!(!m.matches(msg.len() as u64, &mut Mem::new(&msg)).unwrap());
        }
    }

    #[test]
    fn body_search_stops_reading_at_the_first_match() {
        let mut msg = b"Subject: big\n\nneedle first\n".to_vec();
        msg.resize(10 << 20, b'x');
        let mut m = Matcher::new(&body("needle"));
        m.chunk = 4096;
        let mut src = Mem::new(&msg);
        assert!(m.matches(msg.len() as u64, &mut src).unwrap());
        assert!(src.reads <= 3, "{} reads", src.reads);
    }

    #[test]
    fn encoded_bodies_are_decoded_when_small() {
        let msg = b"Subject: qp\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/alternative; boundary=b\r\n\r\n\
            --b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\n\
            Caf=E9 cr=E8me, a very long line that is soft=\r\n wrapped\r\n\
            --b\r\nContent-Type: text/html; charset=utf-8\r\n\
            Content-Transfer-Encoding: base64\r\n\r\n\
            PHA+U2VjcmV0IHdvcmQ8L3A+\r\n--b--\r\n";
        assert!(hits(&body("café crème"), msg));
        assert!(hits(&body("soft wrapped"), msg));
        assert!(hits(&body("secret WORD"), msg), "base64 html part");
        assert!(hits(&body("text/plain"), msg), "raw octets count too");
        assert!(!hits(&body("nowhere"), msg));
    }

    #[test]
    fn header_block_edge_cases() {
        // No empty line: everything is header, there is no body.
        assert!(hits(&header("Subject", "only"), b"Subject: only headers"));
        assert!(!hits(&body("only"), b"Subject: only headers"));
        // An empty header block.
        assert!(hits(&body("just"), b"\r\njust a body"));
        assert!(!hits(&header("Subject", ""), b"\njust a body"));
        // A broken line ends the fields; the body is still found.
        let broken = b"Subject: ok\nthis is no field\nFrom: x\n\nbody text\n";
        assert!(hits(&header("Subject", "ok"), broken));
        assert!(hits(&body("body text"), broken));
        // A header block longer than HEADER_LIMIT is cut there.
        let mut huge = b"Subject: first\n".to_vec();
        while huge.len() < HEADER_LIMIT + 100 {
            huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
        }
        huge.extend_from_slice(b"X-Late: yes\n\nbody\n");
        assert!(hits(&header("Subject", "first"), &huge));
        assert!(!hits(&header("X-Late", ""), &huge));
    }

    #[test]
    fn dates_by_mailparse() {
        let base = 1_057_049_557; // 2003-07-01 08:52:37 UTC
        for (text, want) in [
            ("Tue, 1 Jul 2003 10:52:37 +0200", Some(base)),
            ("1 Jul 2003 10:52:37 +0200", Some(base)),
            ("Tue,  01 Jul 2003 08:52:37 +0000 (UTC)", Some(base)),
            ("Tue, 1 Jul 2003 04:52:37 EDT", Some(base)),
            ("Tue, 1 Jul 2003 08:52:37 GMT", Some(base)),
            ("Tue, 1 Jul 03 08:52:37 +0000", Some(base)),
            ("Tuesday, 1 July 2003 08:52:37 +0000", Some(base)),
            ("Tue, 1 Jul 2003 08:52:37", Some(base)),
            ("29 Feb 2024 12:00:00 +0000", Some(1_709_208_000)),
            ("1 Jan 99 00:00:00 +0000", Some(915_148_800)),
            // Not dates: the search falls back to the time stored.
            ("32 Jan 2003 00:00:00 +0000", None),
            ("1 Foo 2003 00:00:00 +0000", None),
            ("31 Dec 1969 23:59:59 +0000", None),
            ("1 Jan 1970 00:00:00 +0000", None),
            ("2003-07-01T08:52:37Z", None),
            ("sometime soon", None),
            ("", None),
        ] {
            assert_eq!(parse_date(text), want, "{text:?}");
        }
    }

    #[test]
    fn searches_a_maildir() {
        let root = tempfile::tempdir().unwrap();
        let md = root.path().join("alice");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        std::fs::write(md.join("cur/1000.a.host:2,S"), PLAIN).unwrap();
        std::fs::write(md.join("new/2000.b.host"), b"Subject: other\n\nnumbers\n").unwrap();
        let config = Config::from_pairs([("root", root.path().to_str().unwrap())]).unwrap();
        let keys = |c: &Criteria| search(&config, "alice", None, c).unwrap();
        assert_eq!(
            keys(&body("numbers")),
            ["cur/1000.a.host:2,S", "new/2000.b.host"]
        );
        assert_eq!(keys(&header("Subject", "other")), ["new/2000.b.host"]);
        assert!(keys(&header("Subject", "nothing")).is_empty());
        // The undated message is dated by its file.
        let recent = Criteria {
            since: Some(1_500_000_000),
            ..Criteria::default()
        };
        assert_eq!(keys(&recent), ["new/2000.b.host"]);
        // A mailbox that does not exist has no matches; bad names are errors.
        assert!(
            search(&config, "nobody", None, &body("x"))
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            search(&config, "../etc", None, &body("x")),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn retrieved_before_and_flagged_messages() {
        let root = tempfile::tempdir().unwrap();
        let md = root.path().join("alice");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).unwrap();
        }
        std::fs::write(md.join("cur/1000.a.host:2,S"), PLAIN).unwrap();
        std::fs::write(md.join("cur/2000.b.host:2,S"), PLAIN).unwrap();
        std::fs::write(md.join("cur/3000.c.host:2,S"), PLAIN).unwrap();
        std::fs::write(md.join("cur/4000.d.host:2,ST"), PLAIN).unwrap();
        std::fs::write(
            md.join("poplar-retrieved"),
            "100 1000.a.host\n200 2000.b.host\n50 4000.d.host\n",
        )
        .unwrap();
        let config = Config::from_pairs([("root", root.path().to_str().unwrap())]).unwrap();
        let expire = |before| Criteria {
            retrieved_before: Some(before),
            ..Criteria::default()
        };
        let keys = |c: &Criteria| search(&config, "alice", None, c).unwrap();
        assert_eq!(keys(&expire(200)), ["cur/1000.a.host:2,S"]);
        assert_eq!(
            keys(&expire(201)),
            ["cur/1000.a.host:2,S", "cur/2000.b.host:2,S"]
        );
        assert!(keys(&expire(100)).is_empty(), "strictly before");
        // The flagged-deleted message is never found.
        assert_eq!(keys(&Criteria::default()).len(), 3);
        let mut both = expire(1000);
        both.headers.push(("Subject".into(), "quarterly".into()));
        assert_eq!(keys(&both).len(), 2);
    }
}
