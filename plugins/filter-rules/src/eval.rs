//! Evaluating [`Rules`] against one message. Generic over
//! [`MessageSource`], so that tests need no WIT bindings; the message is
//! consulted lazily (size, headers and body are fetched only when a rule
//! that needs them is reached, and at most once).

use crate::config::{Action, Condition, Rule, Rules, bare_address};

/// Largest range asked of the host in one `read` (its cap is 1 MiB).
const MAX_READ: u32 = 1024 * 1024;
/// Step in which the header block is read while looking for its end.
const HEADER_STEP: u32 = 8 * 1024;
/// How far the end of the header block is looked for. A message whose
/// header block is longer has, as far as body rules are concerned, no body.
pub const HEADER_SCAN_LIMIT: usize = 256 * 1024;

/// Read access to a message, as the WIT `message` resource offers it.
pub trait MessageSource {
    /// Total size in octets.
    fn size(&self) -> u64;
    /// Header fields `(name, value)`, unfolded, in order.
    fn headers(&self) -> Vec<(String, String)>;
    /// Up to `len` octets from `offset`; empty at or past the end.
    fn read(&self, offset: u64, len: u32) -> Vec<u8>;
}

/// The parts of the envelope that rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// `MAIL FROM`, empty for bounces.
    pub mail_from: &'a str,
    /// `RCPT TO`.
    pub rcpt_to: &'a str,
}

/// The outcome of evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Never `AddHeaders`: a deciding `add-headers` rule gives `Accept`.
    pub action: Action,
    pub add_headers: Vec<(String, String)>,
    /// Names of the rules that matched, in order; the last one decided
    /// unless it had `continue = true`.
    pub matched: Vec<String>,
}

/// The message facts fetched so far.
struct Facts<'a, M> {
    msg: &'a M,
    env: Envelope<'a>,
    body_limit: u64,
    size: Option<u64>,
    headers: Option<Vec<(String, String)>>,
    body: Option<Vec<u8>>,
}

impl<M: MessageSource> Facts<'_, M> {
    fn size(&mut self) -> u64 {
        *self.size.get_or_insert_with(|| self.msg.size())
    }

    fn headers(&mut self) -> &[(String, String)] {
        self.headers.get_or_insert_with(|| self.msg.headers())
    }

    fn body(&mut self) -> &[u8] {
        self.body
            .get_or_insert_with(|| read_body(self.msg, self.body_limit))
    }

    fn holds(&mut self, condition: &Condition) -> bool {
        match condition {
            Condition::FromIs(addr) => bare_address(self.env.mail_from).eq_ignore_ascii_case(addr),
            Condition::FromMatches(re) => re.is_match(bare_address(self.env.mail_from).as_bytes()),
            Condition::ToIs(addr) => bare_address(self.env.rcpt_to).eq_ignore_ascii_case(addr),
            Condition::ToMatches(re) => re.is_match(bare_address(self.env.rcpt_to).as_bytes()),
            Condition::SizeOver(n) => self.size() > *n,
            Condition::SizeUnder(n) => self.size() < *n,
            Condition::HeaderExists { name, present } => {
                let found = self
                    .headers()
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(name));
                found == *present
            }
            Condition::HeaderMatches { name, pattern } => self
                .headers()
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && pattern.is_match(v.as_bytes())),
            Condition::Body(pattern) => pattern.is_match(self.body()),
        }
    }

    fn matches(&mut self, rule: &Rule) -> bool {
        let result = if rule.any {
            rule.conditions.iter().any(|c| self.holds(c))
        } else {
            rule.conditions.iter().all(|c| self.holds(c))
        };
        result != rule.not
    }
}

impl Rules {
    /// Runs the rules in order over one message for one recipient.
    pub fn classify<M: MessageSource>(&self, env: Envelope<'_>, msg: &M) -> Verdict {
        let mut facts = Facts {
            msg,
            env,
            body_limit: self.body_limit,
            size: None,
            headers: None,
            body: None,
        };
        let mut folder: Option<&str> = None;
        let mut verdict = Verdict {
            action: Action::Accept,
            add_headers: Vec::new(),
            matched: Vec::new(),
        };
        for rule in &self.rules {
            if !facts.matches(rule) {
                continue;
            }
            verdict.matched.push(rule.name.clone());
            verdict.add_headers.extend(rule.add_headers.iter().cloned());
            if let Action::FileInto(f) = &rule.action {
                folder = Some(f);
            }
            if rule.keep_going {
                continue;
            }
            verdict.action = match &rule.action {
                Action::Accept | Action::AddHeaders | Action::FileInto(_) => deliver(folder),
                other => other.clone(),
            };
            return verdict;
        }
        verdict.action = deliver(folder);
        verdict
    }
}

fn deliver(folder: Option<&str>) -> Action {
    folder.map_or(Action::Accept, |f| Action::FileInto(f.to_string()))
}

/// Where the body starts in `buf` (just after the first empty line, CRLF or
/// LF), looking at lines that start at `from` or later.
fn body_start(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len())
        .filter(|&p| p == 0 || buf[p - 1] == b'\n')
        .find_map(|p| match &buf[p..] {
            [b'\n', ..] => Some(p + 1),
            [b'\r', b'\n', ..] => Some(p + 2),
            _ => None,
        })
}

/// Reads the first `limit` octets of the body (raw: no MIME decoding). The
/// header block is read in `HEADER_STEP` steps to find where the body
/// starts; nothing past `limit` octets of body is read. A read shorter than
/// asked (all asks are within the host's cap) means the end of the message.
pub fn read_body<M: MessageSource>(msg: &M, limit: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut at_end;
    let start = loop {
        let scanned = buf.len();
        let chunk = msg.read(scanned as u64, HEADER_STEP);
        at_end = chunk.len() < HEADER_STEP as usize;
        buf.extend_from_slice(&chunk);
        // A CRLF may straddle two reads: look again at the last two octets.
        if let Some(start) = body_start(&buf, scanned.saturating_sub(2)) {
            break start;
        }
        if at_end || buf.len() >= HEADER_SCAN_LIMIT {
            return Vec::new(); // no empty line (in reach): no body
        }
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut offset = buf.len() as u64;
    let mut body = buf.split_off(start);
    body.truncate(limit);
    while body.len() < limit && !at_end {
        let want = u32::try_from(limit - body.len()).map_or(MAX_READ, |n| n.min(MAX_READ));
        let chunk = msg.read(offset, want);
        at_end = chunk.len() < want as usize;
        offset += chunk.len() as u64;
        body.extend_from_slice(&chunk);
    }
    body
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::config::DEFAULT_BODY_LIMIT;

    /// An in-memory message that records what was read.
    struct Fake {
        bytes: Vec<u8>,
        /// Highest offset read so far (end of the furthest range).
        read_end: Cell<u64>,
        reads: Cell<u32>,
        header_calls: Cell<u32>,
        size_calls: Cell<u32>,
        log: RefCell<Vec<(u64, u32)>>,
    }

    impl Fake {
        fn new(bytes: impl Into<Vec<u8>>) -> Self {
            Fake {
                bytes: bytes.into(),
                read_end: Cell::new(0),
                reads: Cell::new(0),
                header_calls: Cell::new(0),
                size_calls: Cell::new(0),
                log: RefCell::new(Vec::new()),
            }
        }
    }

    impl MessageSource for Fake {
        fn size(&self) -> u64 {
            self.size_calls.set(self.size_calls.get() + 1);
            self.bytes.len() as u64
        }

        /// Like the host: fields up to the first empty line, unfolded.
        fn headers(&self) -> Vec<(String, String)> {
            self.header_calls.set(self.header_calls.get() + 1);
            let mut fields: Vec<(String, String)> = Vec::new();
            for raw in self.bytes.split(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(raw));
                if line.is_empty() {
                    break;
                }
                if line.starts_with([' ', '\t']) {
                    fields.last_mut().unwrap().1.push_str(&line);
                } else if let Some((name, value)) = line.split_once(':') {
                    fields.push((name.to_string(), value.trim_start().to_string()));
                }
            }
            fields
        }

        fn read(&self, offset: u64, len: u32) -> Vec<u8> {
            assert!(len <= MAX_READ, "read of {len} octets exceeds the host cap");
            self.reads.set(self.reads.get() + 1);
            self.log.borrow_mut().push((offset, len));
            let start = (offset as usize).min(self.bytes.len());
            let end = (start + len as usize).min(self.bytes.len());
            self.read_end.set(self.read_end.get().max(end as u64));
            self.bytes[start..end].to_vec()
        }
    }

    const FROM: &str = "sender@example.net";
    const TO: &str = "alice@example.org";

    fn env() -> Envelope<'static> {
        Envelope {
            mail_from: FROM,
            rcpt_to: TO,
        }
    }

    fn message(headers: &str, body: &str) -> Fake {
        Fake::new(
            format!("{headers}\r\n{body}")
                .replace("\n", "\r\n")
                .replace("\r\r", "\r"),
        )
    }

    fn sample() -> Fake {
        message(
            "From: Sender <sender@example.net>\nTo: alice@example.org\nSubject: Cheap VIAGRA now\n\
             Received: from a\nReceived: from relay.spam.example\nList-Id: News <news.example.org>\n",
            "Hello Alice,\nclick here to unsubscribe.\n",
        )
    }

    fn classify_with(config: &str, env: Envelope<'_>, msg: &Fake) -> Verdict {
        Rules::parse(config).unwrap().classify(env, msg)
    }

    fn classify(config: &str, msg: &Fake) -> Verdict {
        classify_with(config, env(), msg)
    }

    /// Whether a single-rule config (conditions only) matches `msg`.
    fn matches(conditions: &str, msg: &Fake) -> bool {
        let config = format!("[[rules]]\n{conditions}\naction = 'discard'");
        classify(&config, msg).action == Action::Discard
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_rules_or_no_match_accepts() {
        let msg = sample();
        let v = classify("", &msg);
        assert_eq!(v.action, Action::Accept);
        assert!(v.add_headers.is_empty() && v.matched.is_empty());
        let v = classify("[[rules]]\nsize_over = 1_000_000\naction = 'reject'", &msg);
        assert_eq!(v.action, Action::Accept);
        assert_eq!(msg.reads.get(), 0);
    }

    #[test]
    fn size_conditions() {
        let msg = sample();
        let size = msg.bytes.len();
        assert!(matches(&format!("size_over = {}", size - 1), &msg));
        assert!(!matches(&format!("size_over = {size}"), &msg));
        assert!(matches(&format!("size_under = {}", size + 1), &msg));
        assert!(!matches(&format!("size_under = {size}"), &msg));
    }

    #[test]
    fn header_conditions_ignore_case() {
        let msg = sample();
        assert!(matches("header = 'subject'\ncontains = 'viagra'", &msg));
        assert!(matches(
            "header = 'SUBJECT'\ncontains = 'Cheap Viagra'",
            &msg
        ));
        assert!(!matches("header = 'Subject'\ncontains = 'cialis'", &msg));
        assert!(!matches("header = 'To'\ncontains = 'viagra'", &msg));
        assert!(matches(
            "header = 'list-id'\nregex = '<news\\.example\\.org>$'",
            &msg
        ));
        assert!(matches("header = 'Subject'\nregex = '^cheap'", &msg));
        assert!(!matches("header = 'Subject'\nregex = '(?-i)^cheap'", &msg));
        assert!(!matches("header = 'Subject'\nregex = '^viagra'", &msg));
        // Any occurrence of a repeated field.
        assert!(matches(
            "header = 'Received'\ncontains = 'spam.example'",
            &msg
        ));
        assert!(matches("header = 'received'\nexists = true", &msg));
        assert!(!matches("header = 'X-Spam'\nexists = true", &msg));
        assert!(matches("header = 'X-Spam'\nexists = false", &msg));
        assert!(!matches("header = 'from'\nexists = false", &msg));
    }

    #[test]
    fn folded_headers_match_unfolded() {
        let msg = message("Subject: first part\n second part\n", "body\n");
        assert!(matches(
            "header = 'Subject'\ncontains = 'part second'",
            &msg
        ));
    }

    #[test]
    fn envelope_conditions() {
        let msg = sample();
        assert!(matches("from = 'Sender@Example.NET'", &msg));
        assert!(matches("from = '<sender@example.net>'", &msg));
        assert!(!matches("from = 'sender@example'", &msg));
        assert!(matches("from_regex = '@example\\.net$'", &msg));
        assert!(!matches("from_regex = '@example\\.org$'", &msg));
        assert!(matches("to = 'ALICE@example.org'", &msg));
        assert!(!matches("to = 'bob@example.org'", &msg));
        assert!(matches("to_regex = '^alice@'", &msg));
        // Angle brackets in the envelope are ignored too; `""` is a bounce.
        let config = "[[rules]]\nfrom = ''\nto_regex = '^a+@b$'\naction = 'discard'";
        let bounce = Envelope {
            mail_from: "<>",
            rcpt_to: "<aa@b>",
        };
        assert_eq!(classify_with(config, bounce, &msg).action, Action::Discard);
        assert_eq!(classify(config, &msg).action, Action::Accept);
    }

    #[test]
    fn body_conditions() {
        let msg = sample();
        assert!(matches("body_contains = 'CLICK HERE'", &msg));
        assert!(
            !matches("body_contains = 'Subject'", &msg),
            "headers are not body"
        );
        assert!(!matches("body_contains = 'buy now'", &msg));
        // Multi-line: ^ and $ at every line, even with CRLF.
        assert!(matches("body_regex = '^click here.*unsubscribe\\.$'", &msg));
        assert!(matches("body_regex = '^hello alice,$'", &msg));
        assert!(!matches("body_regex = '^alice'", &msg));
    }

    #[test]
    fn base64_is_not_decoded() {
        // "viagra for you" in base64: rules see the raw body text.
        let msg = message(
            "Subject: x\nContent-Transfer-Encoding: base64\n",
            "dmlhZ3JhIGZvciB5b3U=\n",
        );
        assert!(!matches("body_contains = 'viagra'", &msg));
        assert!(matches("body_contains = 'dmlhZ3JhIGZvciB5b3U='", &msg));
    }

    #[test]
    fn conditions_combine_with_all_any_and_not() {
        let msg = sample();
        let yes = "header = 'Subject'\ncontains = 'viagra'";
        let no = "size_over = 1_000_000";
        assert!(!matches(&format!("{yes}\n{no}"), &msg));
        assert!(matches(&format!("{yes}\n{no}\nany = true"), &msg));
        assert!(matches(
            &format!("{yes}\nfrom = 'sender@example.net'"),
            &msg
        ));
        assert!(!matches(&format!("{yes}\nnot = true"), &msg));
        assert!(matches(&format!("{no}\nnot = true"), &msg));
        assert!(matches(&format!("{yes}\n{no}\nnot = true"), &msg));
        assert!(!matches(
            &format!("{yes}\n{no}\nany = true\nnot = true"),
            &msg
        ));
        assert!(matches("", &msg), "no condition: always");
    }

    #[test]
    fn first_match_decides() {
        let msg = sample();
        let config = r#"
            [[rules]]
            name = "a"
            header = "Subject"
            contains = "nothing"
            action = "discard"
            [[rules]]
            name = "b"
            header = "Subject"
            contains = "viagra"
            action = "file-into"
            folder = "Junk"
            add_headers = { "X-Spam" = "yes" }
            [[rules]]
            name = "c"
            action = "reject"
        "#;
        let v = classify(config, &msg);
        assert_eq!(v.action, Action::FileInto("Junk".into()));
        assert_eq!(v.add_headers, headers(&[("X-Spam", "yes")]));
        assert_eq!(v.matched, ["b"]);

        let v = classify("[[rules]]\naction = 'reject'\nreason = 'No thanks'", &msg);
        assert_eq!(v.action, Action::Reject("No thanks".into()));
        let v = classify("[[rules]]\naction = 'temp-fail'", &msg);
        assert_eq!(
            v.action,
            Action::TempFail("Message deferred, try again later".into())
        );
        let v = classify(
            "[[rules]]\naction = 'accept'\n[[rules]]\naction = 'discard'",
            &msg,
        );
        assert_eq!(v.action, Action::Accept);
    }

    #[test]
    fn continue_accumulates_headers_and_folder() {
        let msg = sample();
        let config = r#"
            [[rules]]
            name = "tag"
            header = "List-Id"
            exists = true
            action = "add-headers"
            add_headers = { "X-Category" = "newsletter", "X-A" = "1" }
            continue = true
            [[rules]]
            name = "junk"
            header = "Subject"
            contains = "viagra"
            action = "file-into"
            folder = "Junk"
            continue = true
            [[rules]]
            name = "skipped"
            size_over = 1_000_000
            action = "discard"
            [[rules]]
            name = "news"
            header = "List-Id"
            contains = "news"
            action = "file-into"
            folder = "News"
            continue = true
        "#;
        // Nothing decides: the last folder chosen and all headers.
        let v = classify(config, &msg);
        assert_eq!(v.action, Action::FileInto("News".into()));
        assert_eq!(
            v.add_headers,
            headers(&[("X-A", "1"), ("X-Category", "newsletter")])
        );
        assert_eq!(v.matched, ["tag", "junk", "news"]);

        // `accept` and `add-headers` deliver into the folder chosen so far.
        for last in [
            "action = 'accept'",
            "action = 'add-headers'\nadd_headers = { X-Last = 'yes' }",
        ] {
            let v = classify(&format!("{config}\n[[rules]]\n{last}"), &msg);
            assert_eq!(v.action, Action::FileInto("News".into()));
        }
        // A later file-into, reject or discard overrides the folder.
        let v = classify(
            &format!("{config}\n[[rules]]\naction = 'reject'\nadd_headers = {{ X-B = '2' }}"),
            &msg,
        );
        assert_eq!(v.action, Action::Reject("Message rejected".into()));
        assert_eq!(v.add_headers.len(), 3);
        let v = classify(&format!("{config}\n[[rules]]\naction = 'discard'"), &msg);
        assert_eq!(v.action, Action::Discard);
        // Only headers collected, no folder: plain accept.
        let v = classify(
            "[[rules]]\naction = 'add-headers'\nadd_headers = { X-A = '1' }\ncontinue = true",
            &msg,
        );
        assert_eq!(v.action, Action::Accept);
        assert_eq!(v.add_headers, headers(&[("X-A", "1")]));
    }

    #[test]
    fn reads_lazily() {
        let msg = sample();
        let config = r#"
            [[rules]]
            from = "sender@example.net"
            action = "accept"
            [[rules]]
            header = "Subject"
            exists = true
            body_contains = "x"
            size_over = 1
            action = "discard"
        "#;
        classify(config, &msg);
        assert_eq!(
            (
                msg.size_calls.get(),
                msg.header_calls.get(),
                msg.reads.get()
            ),
            (0, 0, 0)
        );
        // Each fact is fetched at most once, however many rules use it.
        let rule = "[[rules]]\nsize_under = 1\nheader = 'A'\nexists = true\nbody_contains = 'zz'\nany = true\naction = 'discard'\n";
        let v = classify(&format!("{rule}{rule}").replace("'A'", "'B'"), &msg);
        assert_eq!(v.action, Action::Accept);
        assert_eq!((msg.size_calls.get(), msg.header_calls.get()), (1, 1));
        // A short message is read whole in one step.
        assert_eq!(*msg.log.borrow(), [(0, HEADER_STEP)]);
    }

    #[test]
    fn body_limit_is_respected() {
        let head = "Subject: big\n";
        let header_len = "Subject: big\r\n\r\n".len();
        let mut body = "a".repeat(99);
        body.push_str("NEEDLE");
        body.push_str(&"b".repeat(3 * 1024 * 1024));
        body.push_str("FAR");
        let msg = message(head, &body);
        let config = "body_limit = 105\n[[rules]]\nname='near'\nbody_contains = 'needle'\naction = 'add-headers'\nadd_headers = { X-Near = '1' }\ncontinue = true\n\
                      [[rules]]\nbody_contains = 'far'\naction = 'discard'";
        let v = classify(config, &msg);
        assert_eq!(v.action, Action::Accept);
        assert_eq!(v.matched, ["near"]);
        // One step of the header block, which already holds the body prefix.
        assert_eq!(msg.read_end.get(), HEADER_STEP as u64);

        // One octet short: the needle is cut off.
        let msg = message(head, &body);
        let v = classify(&config.replace("105", "104"), &msg);
        assert!(v.matched.is_empty());

        // A larger limit reads past the first step, in bounded ranges, and
        // never further than the header block plus the limit.
        for limit in [100_000u64, 2_000_000] {
            let msg = message(head, &body);
            let body = read_body(&msg, limit);
            assert_eq!(body.len() as u64, limit);
            assert!(body.starts_with(b"aaa"));
            assert_eq!(msg.read_end.get(), header_len as u64 + limit);
        }
        // The default limit does not reach the end of a long message.
        let msg = message(head, &body);
        assert!(!matches("body_contains = 'far'", &msg));
        assert_eq!(
            msg.read_end.get(),
            (header_len as u64 + DEFAULT_BODY_LIMIT).max(8192)
        );
        // A short message is read to its end, no further.
        let msg = message(head, "tiny\n");
        assert_eq!(read_body(&msg, 1000), b"tiny\r\n");
    }

    #[test]
    fn finds_the_body_start() {
        // LF only, CRLF, and an empty line straddling two read steps.
        assert_eq!(read_body(&Fake::new("A: 1\n\nbody"), 100), b"body");
        assert_eq!(read_body(&Fake::new("A: 1\r\n\r\nbody"), 100), b"body");
        assert_eq!(read_body(&Fake::new("\r\nbody"), 100), b"body");
        assert_eq!(read_body(&Fake::new("\nbody"), 100), b"body");
        for pad in 8186..8194 {
            let text = format!("A: {}\r\n\r\nbody", "x".repeat(pad));
            assert_eq!(read_body(&Fake::new(text), 100), b"body", "pad {pad}");
        }
        // No empty line: all header, no body.
        assert_eq!(read_body(&Fake::new("A: 1\r\nB: 2\r\n"), 100), b"");
        // A header block too long to scan counts as no body.
        let long = format!(
            "{}\r\nbody",
            "X-Pad: xxxxxxxxxxxxxxxxxxxxxxxx\r\n".repeat(10_000)
        );
        let msg = Fake::new(long);
        assert_eq!(read_body(&msg, 100), b"");
        assert!(msg.read_end.get() as usize <= HEADER_SCAN_LIMIT + HEADER_STEP as usize);
    }
}
