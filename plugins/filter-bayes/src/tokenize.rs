//! Turning a message into the set of tokens the classifier counts.
//!
//! - Words: runs of letters and digits, lower-cased, 3 to 20 characters
//!   (longer ones only leave a `long:<length/10*10>` token). Runs of single
//!   letters (`v-i-a-g-r-a`) are joined. An ALL-CAPS word of 4 or more
//!   letters also gives `upper:<word>`, and a word whose case flips twice
//!   (`ViAgRa`) gives `mixedcase`. Amounts give `money:$` and
//!   `money:$<digits>`.
//! - Header fields, after decoding RFC 2047 encoded words:
//!   `subject:<word>`; `from:<word>`, `to:<word>` (To and Cc),
//!   `reply-to:<word>`, with `<field>:domain:<domain>` for each address's
//!   domain and its parents, `to:count:<n>` and `reply-to:differs`;
//!   `received:<n>` (how many `Received` fields) and, for the hosts their
//!   `from` clauses name, `received:<domain>` (and parents) and
//!   `received:ip:<network>`; `message-id:<domain>`; `x-mailer:<word>`;
//!   `content-type:<type>`, `charset:<charset>`, `cte:<encoding>`; and
//!   `header:<name>` for every field present.
//! - The body: the text parts (plain and HTML, after base64 or
//!   quoted-printable decoding; HTML is stripped and leaves `html:<element>`
//!   tokens), links (`url:<host>` and its parent domains down to
//!   `url:<tld>`, `url:ip`, `url:userinfo`), other parts (`part:<type>`,
//!   `filename:<extension>`), `body:htmlonly` / `body:notext`, and the
//!   message size (`size:<log2>`).

use std::collections::HashSet;

use crate::html;
use crate::mime::{self, ContentType, Part};
use crate::source::Scanned;

/// Words shorter than this (in characters) are dropped.
const MIN_WORD: usize = 3;
/// Words longer than this are replaced by a `long:` token.
const MAX_WORD: usize = 20;
/// Longest token kept, in octets (longer ones are cut).
const MAX_TOKEN: usize = 64;
/// Longest URL scheme looked for (`https`).
const MAX_SCHEME: usize = 10;
/// Longest host name (with user info and port) looked at.
const MAX_HOST: usize = 300;
/// Most distinct tokens taken from one message.
const MAX_PER_MESSAGE: usize = 20_000;

/// The distinct tokens of a message, sorted.
pub fn tokens(msg: &Scanned) -> Vec<String> {
    let mut t = Tokens::default();
    header_tokens(&msg.headers, &mut t);
    t.add("size:", &(64 - msg.size.leading_zeros()).to_string());
    let (mut plain, mut html) = (0, 0);
    for part in mime::parts(&msg.headers, &msg.body) {
        match part {
            Part::Text { html: false, text } => {
                plain += 1;
                t.urls(&text);
                t.text("", &text);
            }
            Part::Text { html: true, text } => {
                html += 1;
                let stripped = html::strip(&text);
                for tag in &stripped.tags {
                    t.add("html:", tag);
                }
                for link in &stripped.links {
                    t.url(link);
                }
                t.urls(&stripped.text);
                t.text("", &stripped.text);
            }
            Part::Other { mime, filename } => {
                t.add("part:", &mime);
                if let Some((_, ext)) = filename.as_deref().and_then(|f| f.rsplit_once('.')) {
                    t.add("filename:", &ext.to_lowercase());
                }
            }
        }
    }
    match (plain, html) {
        (0, 0) => t.add("body:", "notext"),
        (0, _) => t.add("body:", "htmlonly"),
        _ => {}
    }
    let mut tokens: Vec<String> = t.set.into_iter().collect();
    tokens.sort_unstable();
    tokens
}

fn header_tokens(headers: &[(String, String)], t: &mut Tokens) {
    let mut received = 0;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        t.add("header:", &lower);
        match lower.as_str() {
            "subject" => {
                let subject = mime::decode_words(value);
                t.text("subject:", &subject);
                if subject.contains('!') {
                    t.add("subject:", "!");
                }
            }
            "from" | "to" | "cc" | "reply-to" => {
                let text = mime::decode_words(value);
                let prefix = if lower == "cc" { "to" } else { &lower };
                t.text(&format!("{prefix}:"), &text);
                let found = domains(&text);
                for domain in &found {
                    t.domain(&format!("{prefix}:domain:"), domain);
                }
                if prefix == "to" {
                    let count = text.matches('@').count().min(10);
                    t.add("to:count:", &count.to_string());
                }
                if lower == "reply-to" {
                    let from = mime::field(headers, "From").map(domains);
                    if found
                        .iter()
                        .any(|d| !from.as_ref().is_some_and(|f| f.contains(d)))
                    {
                        t.add("reply-to:", "differs");
                    }
                }
            }
            "received" => {
                received += 1;
                received_tokens(value, t);
            }
            "message-id" => match domains(value).first() {
                Some(domain) => t.add("message-id:", domain),
                None => t.add("message-id:", "malformed"),
            },
            "x-mailer" | "user-agent" => t.text("x-mailer:", value),
            "content-type" => {
                let ct = ContentType::parse(value);
                t.add("content-type:", &ct.mime);
                if let Some(charset) = ct.param("charset") {
                    t.add("charset:", &charset.to_ascii_lowercase());
                }
            }
            "content-transfer-encoding" => t.add("cte:", &value.trim().to_ascii_lowercase()),
            _ => {}
        }
    }
    t.add("received:", &received.min(10).to_string());
}

/// Tokens for the hosts a `Received` field's `from` clause names: their
/// domains (`received:mail.example.org`, `received:example.org`, …) and
/// the networks of their IPv4 addresses (`received:ip:192.0.2`,
/// `received:ip:192.0`, `received:ip:192`).
fn received_tokens(value: &str, t: &mut Tokens) {
    let from = value.split(" by ").next().unwrap_or("");
    let from = from.trim_start().strip_prefix("from").unwrap_or(from);
    for word in from.split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '-')) {
        let word = word.trim_matches('.').to_lowercase();
        if !word.contains('.') {
            continue;
        }
        let octets: Vec<&str> = word.split('.').collect();
        if octets.len() == 4 && octets.iter().all(|o| o.parse::<u8>().is_ok()) {
            for n in 1..4 {
                t.add("received:ip:", &octets[..n].join("."));
            }
        } else {
            t.domain("received:", &word);
        }
    }
}

/// The domains of the addresses in a header value, lower case.
fn domains(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in value.match_indices('@') {
        let domain: String = value[i + 1..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '.' | '-'))
            .take(MAX_HOST)
            .collect();
        let domain = domain.trim_matches('.').to_lowercase();
        if domain.contains('.') && !out.contains(&domain) {
            out.push(domain);
        }
    }
    out
}

/// A message's token set under construction.
#[derive(Default)]
struct Tokens {
    set: HashSet<String>,
}

impl Tokens {
    /// Adds `prefix` + `token`, with whitespace and controls replaced (the
    /// model file is tab-separated) and cut to [`MAX_TOKEN`] octets.
    fn add(&mut self, prefix: &str, token: &str) {
        if self.set.len() >= MAX_PER_MESSAGE || token.is_empty() {
            return;
        }
        let mut s = String::with_capacity(prefix.len() + token.len());
        for c in prefix.chars().chain(token.chars()) {
            if s.len() + c.len_utf8() > MAX_TOKEN {
                break;
            }
            s.push(if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            });
        }
        self.set.insert(s);
    }

    /// Adds the words of a text, and the shape tokens (see the module doc).
    fn text(&mut self, prefix: &str, text: &str) {
        let mut single = String::new();
        let mut last_end = 0;
        let mut start = None;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            if c.is_alphanumeric() {
                start.get_or_insert(i);
                continue;
            }
            let Some(s) = start.take() else { continue };
            let word = &text[s..i];
            if word.chars().nth(1).is_none() {
                // Join single letters separated by one character each.
                if !single.is_empty() && s != last_end + 1 {
                    self.joined(prefix, &single);
                    single.clear();
                }
                single.push_str(word);
                last_end = i;
                continue;
            }
            self.joined(prefix, &single);
            single.clear();
            self.word(prefix, word);
        }
        self.joined(prefix, &single);
        self.money(prefix, text);
    }

    fn joined(&mut self, prefix: &str, letters: &str) {
        if letters.chars().count() >= 4 {
            self.word(prefix, letters);
            self.add(prefix, "spaced");
        }
    }

    fn word(&mut self, prefix: &str, word: &str) {
        let len = word.chars().count();
        if len > MAX_WORD {
            self.add(prefix, &format!("long:{}", len / 10 * 10));
            return;
        }
        if len < MIN_WORD {
            return;
        }
        let lower = word.to_lowercase();
        if len >= 4 && word.chars().all(char::is_uppercase) {
            self.add(prefix, &format!("upper:{lower}"));
        }
        let flips = word
            .chars()
            .zip(word.chars().skip(1))
            .filter(|(a, b)| a.is_lowercase() && b.is_uppercase())
            .count();
        if flips >= 2 {
            self.add(prefix, "mixedcase");
        }
        self.add(prefix, &lower);
    }

    /// `money:$` and `money:$<digits before the decimal point>` for every
    /// amount written with a currency sign before it.
    fn money(&mut self, prefix: &str, text: &str) {
        for (i, sign) in text.match_indices(['$', '€', '£']) {
            let amount: String = text[i + sign.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(char::is_ascii_digit)
                .collect();
            if !amount.is_empty() {
                self.add(prefix, &format!("money:{sign}"));
                self.add(prefix, &format!("money:{sign}{}", amount.len()));
            }
        }
    }

    /// Finds `http://`, `https://` and `www.` links in a text.
    fn urls(&mut self, text: &str) {
        let lower = text.to_ascii_lowercase();
        for pattern in ["http://", "https://", "www."] {
            // Matches inside a host already looked at are skipped, so that
            // `www.www.www…` costs linear time.
            let mut skip_to = 0;
            for (i, _) in lower.match_indices(pattern) {
                if i < skip_to || pattern == "www." && lower[..i].ends_with("//") {
                    continue;
                }
                skip_to = i + self.url(&lower[i..]);
            }
        }
    }

    /// Adds the host tokens of a link; returns how many octets of it were
    /// looked at (a bounded prefix).
    fn url(&mut self, link: &str) -> usize {
        let scheme = link
            .char_indices()
            .take(MAX_SCHEME + 1)
            .find(|(_, c)| !c.is_ascii_alphabetic())
            .map_or(0, |(i, _)| i);
        let rest = if scheme > 0 && link[scheme..].starts_with("://") {
            &link[scheme + 3..]
        } else if link
            .get(..4)
            .is_some_and(|w| w.eq_ignore_ascii_case("www."))
        {
            link
        } else {
            return scheme.max(1);
        };
        let authority: String = rest
            .chars()
            .take_while(|&c| !("/?#\\\"'<>()[]".contains(c) || c.is_whitespace()))
            .take(MAX_HOST)
            .collect();
        let seen = link.len() - rest.len() + authority.len();
        let host = match authority.rsplit_once('@') {
            Some((_, host)) => {
                self.add("url:", "userinfo");
                host
            }
            None => &authority,
        };
        let host = host.split(':').next().unwrap_or("");
        let host = host.trim_end_matches('.').to_lowercase();
        if host.split('.').all(|l| l.parse::<u8>().is_ok()) {
            if host.contains('.') {
                self.add("url:", "ip");
            }
        } else if host.contains('.') {
            self.domain("url:", &host);
        }
        seen
    }

    /// Adds a domain and its parents up to four levels (`a.b.example.org`,
    /// `b.example.org`, `example.org`, `org`).
    fn domain(&mut self, prefix: &str, domain: &str) {
        self.add(prefix, domain);
        for (i, _) in domain.rmatch_indices('.').take(4) {
            self.add(prefix, &domain[i + 1..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens_of(raw: &str) -> Vec<String> {
        use crate::source::{MessageSource, scan};
        let msg = crate::test_util::Raw::new(raw.as_bytes());
        let scanned = scan(&msg, u64::MAX);
        assert_eq!(scanned.headers, msg.headers());
        tokens(&scanned)
    }

    fn has(tokens: &[String], expected: &[&str]) {
        for e in expected {
            assert!(
                tokens.iter().any(|t| t == e),
                "{e:?} missing from {tokens:?}"
            );
        }
    }

    fn lacks(tokens: &[String], unexpected: &[&str]) {
        for u in unexpected {
            assert!(!tokens.iter().any(|t| t == u), "{u:?} in {tokens:?}");
        }
    }

    #[test]
    fn words_and_shapes() {
        let mut t = Tokens::default();
        t.text(
            "",
            "Cheap ViAgRa, FREE v-i-a-g-r-a at a b pills; $1,000,000 or €50 \
             Pneumonoultramicroscopicsilicovolcanoconiosis",
        );
        let mut got: Vec<_> = t.set.into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            [
                "000",
                "cheap",
                "free",
                "long:40",
                "mixedcase",
                "money:$",
                "money:$7",
                "money:€",
                "money:€2",
                "pills",
                "spaced",
                "upper:free",
                "viagra",
            ]
        );
    }

    #[test]
    fn headers_give_prefixed_tokens() {
        let t = tokens_of(
            "Received: from a\nReceived: from mx.bad.example ([203.0.113.7]) by mx.home.example\n\
             From: \"Bank Security\" <alert@secure-bank.example.ru>\n\
             Reply-To: payout@mail.example.cn\n\
             To: alice@example.org, bob@example.org\n\
             Subject: =?utf-8?B?VXJnZW50IGFjdGlvbiByZXF1aXJlZCE=?=\n\
             Message-ID: <123@secure-bank.example.ru>\n\
             X-Mailer: Mass Mailer 5\n\
             \nhello there\n",
        );
        has(
            &t,
            &[
                "received:2",
                "received:mx.bad.example",
                "received:bad.example",
                "received:example",
                "received:ip:203.0.113",
                "received:ip:203",
                "from:bank",
                "from:security",
                "from:domain:secure-bank.example.ru",
                "reply-to:differs",
                "to:count:2",
                "to:domain:example.org",
                "subject:urgent",
                "subject:action",
                "subject:!",
                "message-id:secure-bank.example.ru",
                "x-mailer:mass",
                "header:x-mailer",
                "hello",
                "there",
                "size:9",
            ],
        );
        lacks(&t, &["received:mx.home.example", "received:ip:203.0.113.7"]);
    }

    #[test]
    fn base64_html_part_is_decoded_and_stripped() {
        // <p>Best <b>PR</b>ICES at <a href="http://www.pills.example.ru/x">our shop</a></p>
        let t = tokens_of(
            "Content-Type: text/html; charset=utf-8\n\
             Content-Transfer-Encoding: base64\n\n\
             PHA+QmVzdCA8Yj5QUjwvYj5JQ0VTIGF0IDxhIGhyZWY9Imh0dHA6Ly93d3cucGls\n\
             bHMuZXhhbXBsZS5ydS94Ij5vdXIgc2hvcDwvYT48L3A+\n",
        );
        has(
            &t,
            &[
                "best",
                "prices",
                "upper:prices",
                "shop",
                "html:a",
                "html:b",
                "url:www.pills.example.ru",
                "url:example.ru",
                "body:htmlonly",
                "cte:base64",
                "charset:utf-8",
            ],
        );
        lacks(&t, &["href", "phaq"]);
    }

    #[test]
    fn multipart_quoted_printable_and_attachment() {
        let t = tokens_of(
            "Content-Type: multipart/mixed; boundary=\"=_b\"\n\n\
             --=_b\n\
             Content-Type: text/plain; charset=iso-8859-1\n\
             Content-Transfer-Encoding: quoted-printable\n\n\
             Caf=E9 menu for the off=\nsite, see https://user@203.0.113.9/login\n\
             --=_b\n\
             Content-Type: application/octet-stream; name=\"invoice.PDF.exe\"\n\
             Content-Transfer-Encoding: base64\n\n\
             TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAA\n\
             --=_b--\n",
        );
        has(
            &t,
            &[
                "café",
                "menu",
                "offsite",
                "url:userinfo",
                "url:ip",
                "part:application/octet-stream",
                "filename:exe",
                "content-type:multipart/mixed",
            ],
        );
        lacks(&t, &["tvqqaamaaaaeaaaa", "long:50", "caf", "body:htmlonly"]);
    }

    /// Random fragments of the syntax the tokenizer looks for, glued
    /// together: nothing may panic (a panic is a trap in the plugin).
    #[test]
    fn junk_does_not_panic() {
        #[rustfmt::skip]
        const FIELDS: &[&str] = &[
            "Content-Type: multipart/mixed; boundary=b\n", "Content-Type: text/html\n",
            "Content-Type: message/rfc822\n", "Content-Transfer-Encoding: base64\n",
            "Content-Transfer-Encoding: quoted-printable\n", "Content-Type: text/plain; charset=x\n",
            "Subject: =?utf-8?B?w6k=?= =?x?Q?=C3?= =?\n", "From: é@é.é <@>\n", "Received: from é.é [1.2.3.é]\n",
            "Reply-To: a@.\n", "X: \u{1F600}\n", "\n",
        ];
        #[rustfmt::skip]
        const PIECES: &[&str] = &[
            "\n", "\r\n", "--b\n", "--b--\n", "<", ">", "<!--", "-->", "<a href=", "<img src='", "\"",
            "'", "&", "&#", "&#x", ";", "&#99999999;", "=", "=C3", "=\n", "é", "€", "ü", "\u{1F600}",
            "$", "€1,000", "http://", "https://x@", "www.", "wéé", "wwé", ".", "@", "a", "ViAgRa",
            "v-i-a", " ", "\t", "<script>", "</script", "<style", "?=", "=?", "\u{0}", "&shy;",
        ];
        let mut rng = crate::corpus::Rng::new(42);
        for _ in 0..5000 {
            let mut text: String = (0..rng.range(0, 4)).map(|_| *rng.pick(FIELDS)).collect();
            text.push('\n');
            text.extend((0..rng.range(1, 40)).map(|_| *rng.pick(PIECES)));
            let mut bytes = text.into_bytes();
            // Cut anywhere, even inside a UTF-8 sequence, as max_scan does.
            bytes.truncate(rng.range(0, bytes.len()));
            let msg = crate::test_util::Raw::new(&bytes);
            let t = tokens(&crate::source::scan(&msg, u64::MAX));
            assert!(t.iter().all(|t| !t.contains(char::is_whitespace)));
        }
    }

    /// Inputs that would take quadratic time in a careless tokenizer; a
    /// plugin call has a deadline.
    #[test]
    fn pathological_inputs_take_linear_time() {
        let n = 100_000;
        let raw = format!(
            "Subject: {}\nTo: {}\nReply-To: {}\nContent-Type: text/html\n\n{}{}{}",
            "=?".repeat(n),
            "@a".repeat(n),
            "@b".repeat(n / 10),
            "www.".repeat(n),
            "<a href=www.".repeat(n / 10),
            "&#1".repeat(n),
        );
        let start = std::time::Instant::now();
        tokens_of(&raw);
        let elapsed = start.elapsed();
        assert!(elapsed.as_secs() < 10, "{elapsed:?}");
    }

    #[test]
    fn tokens_never_hold_whitespace() {
        let t = tokens_of("Content-Type: text/weird stuff\tx\nX-Mailer: a\tb\n\nbody\n");
        assert!(t.iter().all(|t| !t.contains(char::is_whitespace)), "{t:?}");
        has(&t, &["content-type:text/weird_stuff_x"]);
    }
}
