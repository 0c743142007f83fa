//! Just enough MIME to find the text of a message: multipart bodies,
//! nested messages, base64 and quoted-printable, charsets, and RFC 2047
//! encoded words in header fields. Lenient throughout: spam is often
//! malformed on purpose, and a body cut short by `max_scan` is normal.

/// Deepest nesting of multiparts and messages followed.
const MAX_DEPTH: usize = 8;
/// Most leaf parts looked at in one message.
const MAX_PARTS: usize = 64;

/// A leaf of the MIME tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// A `text/*` part, decoded to a string; `html` for `text/html`.
    Text { html: bool, text: String },
    /// Any other part (an attachment): its type and file name, unread.
    Other {
        mime: String,
        filename: Option<String>,
    },
}

/// A parsed `Content-Type` (or `Content-Disposition`) value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype` (or the disposition), lower case.
    pub mime: String,
    /// Parameters, names in lower case, values unquoted.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn parse(value: &str) -> ContentType {
        let mut pieces = split_unquoted(value, ';').into_iter();
        let mime = pieces
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let params = pieces
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                Some((name.trim().to_ascii_lowercase(), value.replace('\\', "")))
            })
            .collect();
        ContentType { mime, params }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits at `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// The value of the first header field called `name` (any case).
pub fn field<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Finds the leaf parts of a message from its header fields and body.
pub fn parts(headers: &[(String, String)], body: &[u8]) -> Vec<Part> {
    let mut out = Vec::new();
    walk(headers, body, 0, &mut out);
    out
}

fn walk(headers: &[(String, String)], body: &[u8], depth: usize, out: &mut Vec<Part>) {
    if out.len() >= MAX_PARTS {
        return;
    }
    let ctype = ContentType::parse(field(headers, "Content-Type").unwrap_or("text/plain"));
    let mime = if ctype.mime.contains('/') {
        ctype.mime.as_str()
    } else {
        "text/plain"
    };
    if depth < MAX_DEPTH {
        if mime.starts_with("multipart/") {
            if let Some(bodies) = ctype
                .param("boundary")
                .and_then(|b| split_multipart(body, b))
            {
                for part in bodies {
                    let (headers, body) = split_part(part);
                    walk(&headers, body, depth + 1, out);
                }
                return;
            }
        } else if mime == "message/rfc822" {
            let body = decode_transfer(headers, body);
            let (headers, body) = split_part(&body);
            walk(&headers, body, depth + 1, out);
            return;
        }
    }
    if mime.starts_with("text/") || mime.starts_with("multipart/") {
        let bytes = decode_transfer(headers, body);
        let text = decode_charset(&bytes, ctype.param("charset").unwrap_or("us-ascii"));
        out.push(Part::Text {
            html: mime == "text/html",
            text,
        });
    } else {
        let disposition = ContentType::parse(field(headers, "Content-Disposition").unwrap_or(""));
        let filename = disposition
            .param("filename")
            .or(ctype.param("name"))
            .map(decode_words);
        out.push(Part::Other {
            mime: mime.to_owned(),
            filename,
        });
    }
}

/// The bodies between `--boundary` lines. A missing closing line (a body
/// cut short) ends the last part at the end of the input. `None` when the
/// boundary never occurs.
fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = body[pos..end].trim_ascii_end();
        if let Some(rest) = line.strip_prefix(delimiter.as_bytes())
            && (rest.is_empty() || rest == b"--")
        {
            if let Some(start) = current {
                parts.push(trim_line_end(&body[start..pos]));
            }
            if rest == b"--" {
                return Some(parts);
            }
            current = Some(end);
        }
        pos = end;
    }
    let start = current?;
    parts.push(&body[start..]);
    Some(parts)
}

/// Drops the line ending that belongs to the following delimiter line.
fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// Splits a body part (or an embedded message) into its unfolded header
/// fields and its body.
pub fn split_part(bytes: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i + 1);
        let line = &bytes[pos..end];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = end;
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(&text);
            }
        } else if let Some((name, value)) = text.split_once(':') {
            fields.push((name.trim_end().to_owned(), value.trim_start().to_owned()));
        }
    }
    (fields, &bytes[pos.min(bytes.len())..])
}

/// Undoes the part's `Content-Transfer-Encoding`.
fn decode_transfer(headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let encoding = field(headers, "Content-Transfer-Encoding").unwrap_or("");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "base64" => decode_base64(body),
        "quoted-printable" => decode_qp(body),
        _ => body.to_vec(),
    }
}

/// Decodes base64, skipping anything outside the alphabet (line breaks,
/// junk) and stopping at padding; a trailing partial group yields what it
/// can.
pub fn decode_base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Decodes quoted-printable: `=XX` escapes and `=` soft line breaks; a
/// malformed escape is kept as it is.
pub fn decode_qp(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c != b'=' {
            out.push(c);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        // A soft line break: `=`, optional trailing blanks, line end.
        let blanks = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        match &rest[blanks..] {
            [b'\r', b'\n', ..] => i += 1 + blanks + 2,
            [b'\n', ..] => i += 1 + blanks + 1,
            [] => i += 1 + blanks,
            [h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                out.push(hex(*h) << 4 | hex(*l));
                i += 3;
            }
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Turns bytes in `charset` into a string. UTF-8 (and ASCII) are decoded as
/// such; any other charset is read as UTF-8 when valid, else as Latin-1,
/// which is close enough for tokens in the common Western charsets.
pub fn decode_charset(bytes: &[u8], charset: &str) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) if charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8") => {
            String::from_utf8_lossy(bytes).into_owned()
        }
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Decodes RFC 2047 encoded words (`=?utf-8?B?...?=`, `=?latin1?Q?...?=`) in a
/// header value; whitespace between two encoded words is dropped.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, word) = rest.split_at(start);
        match decode_word(word) {
            Some((text, len)) => {
                if !(after_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&text);
                rest = &word[len..];
                after_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &word[2..];
                after_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Longest encoded text looked for in one encoded word (RFC 2047 allows
/// 75 characters for the whole word).
const MAX_WORD: usize = 80;

/// Decodes one encoded word at the start of `s`: its text and its length.
fn decode_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    // An encoded word is at most 75 characters (RFC 2047): look no further,
    // so that a long value full of `=?` costs linear time.
    let window = inner
        .char_indices()
        .nth(MAX_WORD)
        .map_or(inner.len(), |(i, _)| i);
    let end = inner[..window].find("?=")?;
    let text = &inner[..end];
    if charset.is_empty() || text.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => decode_base64(text.as_bytes()),
        "Q" | "q" => decode_qp(text.replace('_', " ").as_bytes()),
        _ => return None,
    };
    let len = s.len() - inner.len() + end + 2;
    // `charset*language` (RFC 2231) is allowed; the language is ignored.
    let charset = charset.split('*').next().unwrap_or(charset);
    Some((decode_charset(&bytes, charset), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(html: bool, text: &str) -> Part {
        Part::Text {
            html,
            text: text.to_owned(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn base64_is_lenient() {
        assert_eq!(decode_base64(b"aGVsbG8gd29y\r\nbGQ="), b"hello world");
        assert_eq!(decode_base64(b"aGVs bG8*"), b"hello");
        // Cut short mid-group: the complete octets survive.
        assert_eq!(decode_base64(b"aGVsbG8gd2"), b"hello w");
    }

    #[test]
    fn quoted_printable() {
        assert_eq!(decode_qp(b"caf=C3=A9 =\r\nsoft"), "café soft".as_bytes());
        assert_eq!(decode_qp(b"a=  \nb=3d=3D"), b"ab==");
        assert_eq!(decode_qp(b"100=% =zz end="), b"100=% =zz end");
    }

    #[test]
    fn encoded_words() {
        assert_eq!(
            decode_words("=?UTF-8?B?Q2hlYXA=?= =?utf-8?Q?_p=C3=AFlls?= now"),
            "Cheap pïlls now"
        );
        assert_eq!(decode_words("=?iso-8859-1?q?caf=E9?="), "café");
        assert_eq!(decode_words("plain =? not a word"), "plain =? not a word");
    }

    #[test]
    fn content_type_parameters() {
        let ct = ContentType::parse("Multipart/Mixed; boundary=\"a;b\"; charset=UTF-8");
        assert_eq!(ct.mime, "multipart/mixed");
        assert_eq!(ct.param("boundary"), Some("a;b"));
        assert_eq!(ct.param("charset"), Some("UTF-8"));
    }

    #[test]
    fn multipart_with_encodings_and_attachment() {
        let body = b"preamble\r\n\
--XX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
caf=C3=A9 lunch\r\n\
--XX\r\n\
Content-Type: multipart/alternative; boundary=YY\r\n\
\r\n\
--YY\r\n\
Content-Type: text/html\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
PGI+Qm9sZDwvYj4=\r\n\
--YY--\r\n\
--XX\r\n\
Content-Type: application/pdf; name=\"offer.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--XX--\r\n\
epilogue\r\n";
        let h = headers(&[("Content-Type", "multipart/mixed; boundary=XX")]);
        assert_eq!(
            parts(&h, body),
            vec![
                text(false, "café lunch"),
                text(true, "<b>Bold</b>"),
                Part::Other {
                    mime: "application/pdf".into(),
                    filename: Some("offer.pdf".into())
                },
            ]
        );
    }

    #[test]
    fn truncated_and_broken_multiparts() {
        let h = headers(&[("Content-Type", "multipart/mixed; boundary=b")]);
        // Cut short by max_scan: the last part runs to the end.
        assert_eq!(
            parts(&h, b"--b\n\nfirst\n--b\n\nsecond, cut sho"),
            vec![text(false, "first"), text(false, "second, cut sho")]
        );
        // The boundary never occurs: the body is read as text.
        assert_eq!(parts(&h, b"just text\n"), vec![text(false, "just text\n")]);
    }

    #[test]
    fn embedded_message_and_latin1() {
        let h = headers(&[("Content-Type", "message/rfc822")]);
        let body = b"Subject: inner\nContent-Type: text/plain; charset=iso-8859-1\n\nna\xefve\n";
        assert_eq!(parts(&h, body), vec![text(false, "naïve\n")]);
    }
}
