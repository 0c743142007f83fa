//! Downgrading the header of an internationalized message (RFC 6532: UTF-8
//! in header fields) for a POP3 client that has not switched to UTF-8 mode
//! (RFC 6856), after RFC 6857. Only the top-level header block changes;
//! the body goes out as stored.
//!
//! Each header field whose value holds UTF-8 beyond ASCII is rewritten in
//! ASCII:
//! - address fields (From, To, Cc, …): a display name becomes RFC 2047
//!   encoded-words; an address whose domain is UTF-8 gets its A-labels
//!   (IDNA); an address whose local part is UTF-8 cannot be written in
//!   ASCII, so the mailbox becomes an empty group whose display name holds
//!   the original, encoded (RFC 6857 §3, allowed in From by RFC 6854);
//! - Message-ID, In-Reply-To and References become `Downgraded-Message-Id`,
//!   `Downgraded-In-Reply-To` and `Downgraded-References` with their value
//!   encoded (RFC 6857 registers these names);
//! - Content-Type and Content-Disposition parameters become RFC 2231
//!   `name*=utf-8''…` parameters;
//! - every other field (Subject, Received, X-…) is unstructured text: its
//!   words with UTF-8 become encoded-words.
//!
//! Fields that are ASCII, and fields with 8-bit bytes that are not UTF-8
//! (legacy mail that predates RFC 6532, which POP3 servers always passed
//! through), are left exactly as stored.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The longest header block that is downgraded; a longer one (no real
/// message has one) goes out as stored.
pub const MAX_HEADER: usize = 256 * 1024;

/// Longest encoded-word (RFC 2047 §2).
const MAX_ENCODED_WORD: usize = 75;
/// Header lines are folded before this many characters (RFC 5322 §2.1.1).
const FOLD_AT: usize = 76;

/// Address fields (RFC 5322 §3.6.2, §3.6.3, §3.6.6).
const ADDRESS_FIELDS: [&str; 11] = [
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
];

/// Whether a header block has a field with UTF-8 beyond ASCII.
pub fn is_internationalized(header: &[u8]) -> bool {
    fields(header).any(|f| needs_downgrade(f.raw))
}

/// The header block rewritten in ASCII, or `None` if no field needed it.
/// `header` is the stored header block: its lines up to and including the
/// empty line that ends it (or the whole message when it has none).
pub fn downgrade(header: &[u8]) -> Option<Vec<u8>> {
    if !is_internationalized(header) {
        return None;
    }
    let mut out = Vec::with_capacity(header.len() + header.len() / 2);
    for field in fields(header) {
        if needs_downgrade(field.raw) {
            let text = std::str::from_utf8(field.raw).expect("checked by needs_downgrade");
            out.extend_from_slice(downgrade_field(text).as_bytes());
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    Some(out)
}

/// The octets a header block takes on the wire: each bare LF becomes
/// CRLF, and an unfinished last line gets one (as the encoder sends it).
pub fn wire_len(bytes: &[u8]) -> u64 {
    let mut n = bytes.len() as u64;
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            n += 1;
        }
        prev = b;
    }
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        n += 2;
    }
    n
}

/// One header field as stored: its lines with their line endings, or the
/// empty line that ends the block, or a stray line.
struct Field<'a> {
    raw: &'a [u8],
}

fn fields(header: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut rest = header;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = line_end(rest, 0);
        let first_empty = rest[..end] == *b"\n" || rest[..end] == *b"\r\n";
        if !first_empty {
            // Continuation lines start with a space or a tab.
            while end < rest.len() && matches!(rest[end], b' ' | b'\t') {
                end = line_end(rest, end);
            }
        }
        let (field, tail) = rest.split_at(end);
        rest = tail;
        Some(Field { raw: field })
    })
}

/// Where the line starting at `from` ends (past its LF, or the end).
fn line_end(bytes: &[u8], from: usize) -> usize {
    memchr::memchr(b'\n', &bytes[from..]).map_or(bytes.len(), |i| from + i + 1)
}

/// A field needs downgrading when it is UTF-8 with something beyond ASCII.
fn needs_downgrade(raw: &[u8]) -> bool {
    !raw.is_ascii() && std::str::from_utf8(raw).is_ok()
}

/// Rewrites one field (UTF-8, not all ASCII) in ASCII.
fn downgrade_field(raw: &str) -> String {
    let eol = if raw.ends_with("\r\n") {
        "\r\n"
    } else if raw.ends_with('\n') {
        "\n"
    } else {
        ""
    };
    let body = &raw[..raw.len() - eol.len()];
    let Some((name, value)) = body.split_once(':').filter(|(n, _)| valid_name(n)) else {
        // Not a field (no name): its text, encoded, is all that is left.
        return fold("", &unstructured(&unfold(body)), eol);
    };
    let value = unfold(value);
    let value = value.trim_start_matches([' ', '\t']);
    let lower = name.to_ascii_lowercase();
    let (name, tokens) = match lower.as_str() {
        n if ADDRESS_FIELDS.contains(&n) => (name.to_string(), address_list(value)),
        "message-id" => ("Downgraded-Message-Id".to_string(), unstructured(value)),
        "in-reply-to" => ("Downgraded-In-Reply-To".to_string(), unstructured(value)),
        "references" => ("Downgraded-References".to_string(), unstructured(value)),
        "content-type" | "content-disposition" => match parameters(value) {
            Some(tokens) => (name.to_string(), tokens),
            None => (name.to_string(), unstructured(value)),
        },
        _ => (name.to_string(), unstructured(value)),
    };
    fold(&format!("{name}:"), &tokens, eol)
}

/// A field name: printable ASCII but no colon (RFC 5322 §3.6.8).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Undoes folding: each line break before white space goes.
fn unfold(value: &str) -> String {
    value.replace("\r\n", "").replace('\n', "")
}

/// Writes `start` and the tokens separated by spaces, folding before a
/// token that would take the line past [`FOLD_AT`].
fn fold(start: &str, tokens: &[String], eol: &str) -> String {
    let mut out = String::from(start);
    let mut line = start.len();
    let mut first = true;
    for t in tokens {
        if !first || !start.is_empty() {
            if line + 1 + t.len() > FOLD_AT && line > 1 {
                out.push_str(if eol.is_empty() { "\r\n" } else { eol });
                line = 0;
            }
            out.push(' ');
            line += 1;
        }
        out.push_str(t);
        line += t.len();
        first = false;
    }
    out.push_str(eol);
    out
}

/// Unstructured text: ASCII words as they are, each run of words with UTF-8
/// as encoded-words (the spaces between the run's words go inside them:
/// white space between adjacent encoded-words is dropped when decoding).
fn unstructured(value: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for word in value.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if word.is_ascii() {
            if !run.is_empty() {
                tokens.extend(encoded_words(&run.join(" ")));
                run.clear();
            }
            tokens.push(word.to_string());
        } else {
            run.push(word);
        }
    }
    if !run.is_empty() {
        tokens.extend(encoded_words(&run.join(" ")));
    }
    tokens
}

/// `text` as RFC 2047 encoded-words in UTF-8, none longer than 75
/// characters: Q (readable) unless B is much shorter (most scripts other
/// than Latin). The Q encoding used is the strict one allowed in phrases
/// (RFC 2047 §5 (3)).
fn encoded_words(text: &str) -> Vec<String> {
    let q_len: usize = text.bytes().map(|b| if q_plain(b) { 1 } else { 3 }).sum();
    let b_len = text.len().div_ceil(3) * 4;
    let q = q_len <= 2 * b_len;
    // "=?UTF-8?Q?" and "?=".
    let room = MAX_ENCODED_WORD - 12;
    let mut words = Vec::new();
    let mut chunk = String::new();
    let mut cost = 0;
    for c in text.chars() {
        let mut buf = [0u8; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        let c_cost = if q {
            bytes.iter().map(|&b| if q_plain(b) { 1 } else { 3 }).sum()
        } else {
            0
        };
        let fits = if q {
            cost + c_cost <= room
        } else {
            (chunk.len() + bytes.len()).div_ceil(3) * 4 <= room
        };
        if !fits && !chunk.is_empty() {
            words.push(encode_word(&chunk, q));
            chunk.clear();
            cost = 0;
        }
        chunk.push(c);
        cost += c_cost;
    }
    if !chunk.is_empty() {
        words.push(encode_word(&chunk, q));
    }
    words
}

/// Bytes the strict Q encoding writes as themselves (a space becomes `_`).
fn q_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'!' | b'*' | b'+' | b'-' | b'/' | b' ')
}

fn encode_word(text: &str, q: bool) -> String {
    if !q {
        return format!("=?UTF-8?B?{}?=", B64.encode(text));
    }
    let mut out = String::from("=?UTF-8?Q?");
    for b in text.bytes() {
        match b {
            b' ' => out.push('_'),
            b if q_plain(b) => out.push(b as char),
            b => out.push_str(&format!("={b:02X}")),
        }
    }
    out.push_str("?=");
    out
}

/// Scans an address list into its parts at the top level: mailboxes, and
/// the group punctuation (`:` and `;`) and commas between them. Quoted
/// strings, comments and angle-bracketed addresses are kept whole.
fn address_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut item = String::new();
    let (mut quoted, mut escaped, mut comment, mut angle) = (false, false, 0u32, false);
    let mut seen_angle = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            item.push(c);
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            '<' if !quoted && comment == 0 => {
                angle = true;
                seen_angle = true;
            }
            '>' if !quoted && comment == 0 => angle = false,
            ':' | ',' | ';' if !quoted && comment == 0 && !angle => {
                if c == ':' && seen_angle {
                    // A colon after an address: not a group; keep it.
                    item.push(c);
                    continue;
                }
                let part = item.trim();
                match c {
                    ':' => out.push(format!("{}:", group_name(part))),
                    _ if part.is_empty() => out.push(c.to_string()),
                    _ => out.push(format!("{}{c}", mailbox(part))),
                }
                item.clear();
                seen_angle = false;
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    if quoted || comment > 0 || angle {
        // Unbalanced: nothing here can be trusted to be an address.
        return vec![format!("{} :;", encoded_words(value.trim()).join(" "))];
    }
    let part = item.trim();
    if !part.is_empty() {
        out.push(mailbox(part));
    }
    // "a, b" was scanned as ["a,", "b"]; a group's ";" stands alone after
    // its last member ("m;" or ";").
    out
}

/// A group's display name, encoded if it has UTF-8.
fn group_name(name: &str) -> String {
    if name.is_ascii() {
        name.to_string()
    } else {
        encoded_words(&unquote(name)).join(" ")
    }
}

/// One mailbox (`name <addr>` or a bare `addr`) in ASCII.
fn mailbox(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let (display, addr) = match (text.find('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => (text[..open].trim(), &text[open + 1..close]),
        _ => ("", text),
    };
    match ascii_address(addr.trim()) {
        Some(addr) if display.is_empty() => addr,
        Some(addr) if display.is_ascii() => format!("{display} <{addr}>"),
        Some(addr) => format!("{} <{addr}>", encoded_words(&unquote(display)).join(" ")),
        // A UTF-8 local part has no ASCII form: the mailbox becomes an empty
        // group named after it (RFC 6857 §3.1.3, RFC 6854).
        None => format!("{} :;", encoded_words(text).join(" ")),
    }
}

/// An address in ASCII: as it is, or with its domain in A-labels (IDNA)
/// when only the domain is UTF-8; `None` when the local part is UTF-8.
fn ascii_address(addr: &str) -> Option<String> {
    if addr.is_ascii() {
        return Some(addr.to_string());
    }
    let (local, domain) = addr.rsplit_once('@')?;
    if !local.is_ascii() {
        return None;
    }
    let domain = idna::domain_to_ascii(domain).ok()?;
    Some(format!("{local}@{domain}"))
}

/// A display name without its quotes and quoting backslashes.
fn unquote(s: &str) -> String {
    let s = s.trim();
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if !escaped && c == '\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

/// `type/subtype; name=value; …` with each UTF-8 parameter value written
/// the RFC 2231 way (`name*=utf-8''percent-encoded`); `None` if anything
/// outside a parameter value is UTF-8.
fn parameters(value: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == ';' && !quoted {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    if quoted {
        return None;
    }
    parts.push(current);
    let mut tokens = Vec::new();
    let count = parts.len();
    for (i, part) in parts.iter().enumerate() {
        let part = part.trim();
        let sep = if i + 1 < count { ";" } else { "" };
        if part.is_ascii() {
            tokens.push(format!("{part}{sep}"));
            continue;
        }
        let (name, val) = part.split_once('=')?;
        let name = name.trim();
        if i == 0 || !name.is_ascii() || name.ends_with('*') {
            return None;
        }
        let val = unquote(val);
        let mut enc = format!("{name}*=utf-8''");
        for b in val.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        tokens.push(format!("{enc}{sep}"));
    }
    Some(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(header: &str) -> String {
        String::from_utf8(downgrade(header.as_bytes()).expect("downgraded")).unwrap()
    }

    /// Decodes encoded-words (test oracle, written from RFC 2047).
    fn decode_words(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        let mut last_was_word = false;
        while !rest.is_empty() {
            if let Some(start) = rest.find("=?UTF-8?") {
                let (before, from) = rest.split_at(start);
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                let body = &from[8..];
                let kind = &body[..1];
                let end = body[2..].find("?=").unwrap() + 2;
                let text = &body[2..end];
                let bytes = if kind == "B" {
                    B64.decode(text).unwrap()
                } else {
                    let mut v = Vec::new();
                    let t = text.as_bytes();
                    let mut i = 0;
                    while i < t.len() {
                        match t[i] {
                            b'_' => v.push(b' '),
                            b'=' => {
                                v.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                                i += 2;
                            }
                            b => v.push(b),
                        }
                        i += 1;
                    }
                    v
                };
                out.push_str(&String::from_utf8(bytes).unwrap());
                rest = &body[end + 2..];
                last_was_word = true;
            } else {
                out.push_str(rest);
                break;
            }
        }
        out
    }

    #[test]
    fn ascii_and_legacy_8bit_headers_are_left_alone() {
        assert!(downgrade(b"From: a@b\nSubject: hi\n\n").is_none());
        // Latin-1 bytes are not UTF-8: legacy mail, passed through.
        assert!(downgrade(b"Subject: caf\xe9\n\n").is_none());
        assert!(!is_internationalized(b"X: \xff\n\n"));
        assert!(is_internationalized("Subject: café\n\n".as_bytes()));
    }

    #[test]
    fn unstructured_words_become_encoded_words() {
        let out = down("Subject: Grüße aus Köln, bis bald\nX-Raw: café €\n\n");
        assert_eq!(
            out,
            "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus =?UTF-8?Q?K=C3=B6ln=2C?= bis bald\n\
             X-Raw: =?UTF-8?Q?caf=C3=A9_=E2=82=AC?=\n\n"
        );
        assert!(out.is_ascii());
        let subject = out
            .lines()
            .next()
            .unwrap()
            .strip_prefix("Subject: ")
            .unwrap();
        assert_eq!(decode_words(subject), "Grüße aus Köln, bis bald");
    }

    #[test]
    fn long_text_is_folded_into_short_words() {
        let text = "日本語のテキスト".repeat(12);
        let out = down(&format!("Subject: {text}\r\n\r\n"));
        assert!(out.is_ascii());
        for line in out.split("\r\n") {
            assert!(line.len() <= 78, "{line}");
        }
        for w in out.split([' ', '\r', '\n']).filter(|w| w.starts_with("=?")) {
            assert!(w.len() <= 75, "{w}");
            assert!(w.starts_with("=?UTF-8?B?"), "B is shorter for CJK: {w}");
        }
        let value = out
            .strip_prefix("Subject:")
            .unwrap()
            .strip_suffix("\r\n\r\n")
            .unwrap()
            .replace("\r\n", "");
        assert_eq!(decode_words(value.trim()), text);
        // CRLF kept as the line ending of the message.
        assert!(out.ends_with("\r\n\r\n"));
    }

    #[test]
    fn addresses() {
        let out = down(
            "From: \"Jörg Müller\" <joerg@example.de>\n\
             To: Ann <ann@bücher.example>, 用户@例子.广告, bob@example.org\n\
             Cc: Team Ω: x@example.org, Zoë <zoe@example.org>;\n\n",
        );
        assert!(out.is_ascii(), "{out}");
        let out = out.replace("\n ", " ");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>"
        );
        assert!(
            lines[1].starts_with("To: Ann <ann@xn--bcher-kva.example>, "),
            "{out}"
        );
        // The UTF-8 local part: an empty group that names the mailbox.
        let group = lines[1]
            .split(", ")
            .nth(1)
            .unwrap()
            .strip_suffix(" :;")
            .unwrap();
        assert_eq!(decode_words(group), "用户@例子.广告");
        assert!(lines[1].ends_with(" bob@example.org"), "{out}");
        assert!(
            lines[2].starts_with("Cc: =?UTF-8?Q?Team_=CE=A9?=: x@example.org,"),
            "{out}"
        );
        assert!(lines[2].ends_with("<zoe@example.org>;"), "{out}");
    }

    #[test]
    fn identifiers_and_parameters() {
        let out = down(
            "Message-ID: <ü@example.org>\n\
             Content-Type: text/plain; charset=utf-8; name=\"Übersicht.txt\"\n\
             Content-Disposition: attachment; filename=\"résumé.pdf\"\n\n",
        );
        let lines: Vec<&str> = out.lines().collect();
        let id = lines[0].strip_prefix("Downgraded-Message-Id: ").unwrap();
        assert_eq!(decode_words(id), "<ü@example.org>", "{out}");
        assert_eq!(
            lines[1],
            "Content-Type: text/plain; charset=utf-8; name*=utf-8''%C3%9Cbersicht.txt"
        );
        assert_eq!(
            lines[2],
            "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"
        );
    }

    #[test]
    fn unbalanced_address_fields_are_one_group() {
        let out = down("To: \"Zoë <zoe@example.org>\n\n");
        assert!(out.starts_with("To: =?UTF-8?"), "{out}");
        assert!(out.ends_with(" :;\n\n"), "{out}");
    }

    #[test]
    fn wire_length() {
        assert_eq!(wire_len(b"a\nb\r\n"), 6);
        assert_eq!(wire_len(b"a\nb"), 6);
        assert_eq!(wire_len(b""), 0);
    }

    #[test]
    fn header_without_a_body_and_without_a_final_newline() {
        let out = down("Subject: é");
        assert_eq!(out, "Subject: =?UTF-8?Q?=C3=A9?=");
    }
}
