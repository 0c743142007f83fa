//! The LMTP session, driven as the delivery server drives it: client bytes
//! through a `LineBuffer` with the session's line limit, `on_line` or
//! `on_long_line` per line, and recipient lookups answered found / unknown /
//! tempfail as the fuzzer chooses.
//!
//! Invariants: every reply is one or more CRLF lines `ddd-text` … `ddd text`
//! with one 2xx–5xx code, printable and at most 512 octets, whose enhanced
//! status code (if any) has the same class; lines inside DATA get no reply;
//! the transaction follows the replies (MAIL only after LHLO, RCPT only
//! after MAIL, DATA only with a recipient); a delivered message is exactly
//! the dot-unstuffed DATA lines with CRLF, within the size limit, for the
//! accepted recipients in order; a message over the limit or with an
//! over-long line is refused once per recipient instead.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use poplar_proto::lmtp::{
    LmtpAction, LmtpConfig, LmtpSession, MAX_COMMAND_LINE, MAX_DATA_LINE, MAX_RECIPIENTS,
    RecipientLookup,
};
use poplar_proto::pop3::{Line, LineBuffer};

const HOST: &str = "mx.fuzz.poplar.test";
const MAX_STEPS: usize = 512;
/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
const MAX_REPLY_LINE: usize = 512;

#[derive(Arbitrary, Debug)]
enum Param {
    Size(u32),
    SizeText(String),
    Body(bool),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Client {
    Lhlo(String),
    Ehlo,
    Mail(String, Vec<Param>),
    Rcpt(String, Option<String>),
    /// `RCPT TO:<local+detail@domain>`.
    RcptParts(String, Option<String>, String),
    Data,
    /// A line of message text (dot-stuffed as a client would).
    Text(Vec<u8>),
    Dot,
    Rset,
    Noop,
    Vrfy(String),
    Bdat,
    Quit,
    Raw(Vec<u8>),
    Line(Vec<u8>),
    Long(u16),
}

impl Client {
    fn render(&self) -> Vec<u8> {
        let text = match self {
            Client::Lhlo(h) => format!("LHLO {h}"),
            Client::Ehlo => "EHLO client.test".into(),
            Client::Mail(from, params) => {
                let mut s = format!("MAIL FROM:<{from}>");
                for p in params {
                    match p {
                        Param::Size(n) => s += &format!(" SIZE={n}"),
                        Param::SizeText(t) => s += &format!(" SIZE={t}"),
                        Param::Body(true) => s += " BODY=8BITMIME",
                        Param::Body(false) => s += " BODY=7BIT",
                        Param::Other(o) => s += &format!(" {o}"),
                    }
                }
                s
            }
            Client::Rcpt(to, None) => format!("RCPT TO:<{to}>"),
            Client::Rcpt(to, Some(p)) => format!("RCPT TO:<{to}> {p}"),
            Client::RcptParts(l, None, d) => format!("RCPT TO:<{l}@{d}>"),
            Client::RcptParts(l, Some(x), d) => format!("RCPT TO:<{l}+{x}@{d}>"),
            Client::Data => "DATA".into(),
            Client::Text(t) => {
                let mut v = Vec::new();
                if t.first() == Some(&b'.') {
                    v.push(b'.');
                }
                v.extend(t.iter().filter(|&&b| b != b'\n'));
                v.extend_from_slice(b"\r\n");
                return v;
            }
            Client::Dot => ".".into(),
            Client::Rset => "RSET".into(),
            Client::Noop => "NOOP".into(),
            Client::Vrfy(a) => format!("VRFY {a}"),
            Client::Bdat => "BDAT 10 LAST".into(),
            Client::Quit => "QUIT".into(),
            Client::Raw(b) => return b.clone(),
            Client::Line(b) => {
                let mut v = b.clone();
                v.extend_from_slice(b"\r\n");
                return v;
            }
            Client::Long(n) => {
                let mut v = vec![b'x'; *n as usize];
                v.extend_from_slice(b"\r\n");
                return v;
            }
        };
        let mut v = text.into_bytes();
        v.extend_from_slice(b"\r\n");
        v
    }
}

#[derive(Arbitrary, Debug)]
enum Lookup {
    Found(String),
    Unknown,
    TempFail,
}

/// What the replies so far say about the session.
#[derive(Default)]
struct Model {
    greeted: bool,
    mail: bool,
    /// Users of the accepted recipients.
    rcpts: Vec<String>,
    data: Option<Data>,
}

struct Data {
    message: Vec<u8>,
    long_line: bool,
}

/// An input that starts with this line is a readable transcript instead
/// of bytes for `arbitrary` (the seed corpus is written this way): each
/// line is sent with CRLF, except the directives `#max N` (the size limit,
/// first), `#found USER`, `#unknown`, `#tempfail` (recipient lookups, used
/// in order; none left: unknown) and `#long N` (a line of N octets).
const TRANSCRIPT: &str = "#!lmtp\n";

trait Oracle {
    fn lookup(&mut self) -> Lookup;
}

impl Oracle for Unstructured<'_> {
    fn lookup(&mut self) -> Lookup {
        Lookup::arbitrary(self).unwrap_or(Lookup::Unknown)
    }
}

impl Oracle for std::collections::VecDeque<Lookup> {
    fn lookup(&mut self) -> Lookup {
        self.pop_front().unwrap_or(Lookup::Unknown)
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(text) = data.strip_prefix(TRANSCRIPT.as_bytes()) {
        let mut max = 10_000;
        let mut lookups = std::collections::VecDeque::new();
        let mut clients = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            let t = String::from_utf8_lossy(line);
            let (verb, arg) = t.split_once(' ').unwrap_or((&t, ""));
            match verb {
                "#max" => max = arg.parse().unwrap_or(max),
                "#found" => lookups.push_back(Lookup::Found(arg.to_string())),
                "#unknown" => lookups.push_back(Lookup::Unknown),
                "#tempfail" => lookups.push_back(Lookup::TempFail),
                "#long" => clients.push(Client::Long(arg.parse().unwrap_or(u16::MAX))),
                _ => clients.push(Client::Line(line.to_vec())),
            }
        }
        run(max, clients.into_iter(), &mut lookups);
        return;
    }
    let mut u = Unstructured::new(data);
    let Ok(limit) = u16::arbitrary(&mut u) else {
        return;
    };
    // Client steps and lookups are drawn from the same bytes, in the order
    // they are needed.
    let mut steps = Vec::new();
    while !u.is_empty() && steps.len() < MAX_STEPS {
        match Client::arbitrary(&mut u) {
            Ok(c) => steps.push(c),
            Err(_) => break,
        }
    }
    // What is left answers the lookups.
    run(u64::from(limit) * 4, steps.into_iter(), &mut u);
});

fn run(max: u64, clients: impl Iterator<Item = Client>, o: &mut dyn Oracle) {
    let mut s = LmtpSession::new(LmtpConfig {
        hostname: HOST.into(),
        max_message_size: max,
    });
    check_reply(&s.greeting());
    let mut input = LineBuffer::new();
    let mut m = Model::default();
    for client in clients.take(MAX_STEPS) {
        input.extend(&client.render());
        loop {
            let limit = s.max_line();
            assert_eq!(s.in_data(), m.data.is_some());
            assert_eq!(
                limit,
                if m.data.is_some() {
                    MAX_DATA_LINE
                } else {
                    MAX_COMMAND_LINE
                }
            );
            let Some(line) = input.next_line(limit) else {
                break;
            };
            if !step(&mut s, &mut m, o, line, max) {
                return;
            }
        }
    }
}

/// `POPLAR_FUZZ_TRACE=1` prints the conversation to stderr, to read what
/// a crashing input does (`cargo fuzz run lmtp_session ARTIFACT`).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("POPLAR_FUZZ_TRACE").is_some())
}

/// One line; false once the connection is closed.
fn step(s: &mut LmtpSession, m: &mut Model, o: &mut dyn Oracle, line: Line, max: u64) -> bool {
    if tracing() {
        match &line {
            Line::Complete(l) => eprintln!("C: {}", String::from_utf8_lossy(l)),
            Line::TooLong => eprintln!("C: <line too long>"),
        }
    }
    if let Some(d) = &mut m.data {
        let text = match line {
            Line::TooLong => {
                d.long_line = true;
                assert_eq!(s.on_long_line(), LmtpAction::Reply(Vec::new()));
                return true;
            }
            Line::Complete(l) => l,
        };
        let action = s.on_line(&text);
        if text != b"." {
            let t = text.strip_prefix(b".").unwrap_or(&text);
            d.message.extend_from_slice(t);
            d.message.extend_from_slice(b"\r\n");
            assert_eq!(action, LmtpAction::Reply(Vec::new()), "reply inside DATA");
            return true;
        }
        let fits = !d.long_line && d.message.len() as u64 <= max;
        match action {
            LmtpAction::Deliver(t) => {
                if tracing() {
                    eprintln!("S: <deliver {t:?}>");
                }
                assert!(
                    fits,
                    "delivered a message over the limit or with a long line"
                );
                assert_eq!(t.message, d.message);
                let users: Vec<&String> = t.recipients.iter().map(|r| &r.user).collect();
                assert_eq!(users, m.rcpts.iter().collect::<Vec<_>>());
            }
            LmtpAction::Reply(r) => {
                assert!(!fits, "refused a message that fits: {}", d.message.len());
                check_reply(&r);
                let one = b"552 5.3.4 Message too big\r\n";
                assert_eq!(r, one.repeat(m.rcpts.len()), "one refusal per recipient");
            }
            other => panic!("end of DATA: {other:?}"),
        }
        m.data = None;
        m.mail = false;
        m.rcpts.clear();
        return true;
    }

    let (action, verb) = match line {
        Line::TooLong => (s.on_long_line(), String::new()),
        Line::Complete(l) => {
            // A command is text: UTF-8 without control characters but tab.
            let text = std::str::from_utf8(&l)
                .ok()
                .filter(|t| !t.bytes().any(|b| b < 0x20 && b != b'\t'));
            let verb = match text {
                Some(t) => t.split(' ').next().unwrap().to_ascii_uppercase(),
                None => String::new(),
            };
            let action = s.on_line(&l);
            if text.is_none() {
                assert!(matches!(&action, LmtpAction::Reply(r) if r.starts_with(b"500 ")));
            }
            (action, verb)
        }
    };
    let reply = match action {
        LmtpAction::Reply(r) => r,
        LmtpAction::Close(r) => {
            check_reply(&r);
            assert_eq!(verb, "QUIT");
            return false;
        }
        LmtpAction::ResolveRecipient { address, local } => {
            assert_eq!(verb, "RCPT");
            assert!(m.mail, "RCPT accepted without MAIL");
            assert!(m.rcpts.len() < MAX_RECIPIENTS);
            assert!(
                !local.is_empty() && address.starts_with(&local),
                "{address:?} {local:?}"
            );
            let lookup = match o.lookup() {
                Lookup::Found(user) => RecipientLookup::Found(user),
                Lookup::Unknown => RecipientLookup::Unknown,
                Lookup::TempFail => RecipientLookup::TempFail,
            };
            let found = match &lookup {
                RecipientLookup::Found(user) => Some(user.clone()),
                _ => None,
            };
            let r = match s.on_recipient(lookup) {
                LmtpAction::Reply(r) => r,
                other => panic!("on_recipient: {other:?}"),
            };
            check_reply(&r);
            assert_eq!(r.starts_with(b"250 "), found.is_some());
            m.rcpts.extend(found);
            return true;
        }
        LmtpAction::Deliver(t) => panic!("delivery outside DATA: {t:?}"),
    };
    check_reply(&reply);
    let ok = reply.starts_with(b"250");
    match verb.as_str() {
        "LHLO" if ok => {
            m.greeted = true;
            m.mail = false;
            m.rcpts.clear();
        }
        "MAIL" if ok => {
            assert!(m.greeted && !m.mail, "MAIL accepted out of order");
            m.mail = true;
            m.rcpts.clear();
        }
        // RSET with an argument is a syntax error (501) and resets nothing.
        "RSET" if !ok => assert!(reply.starts_with(b"501 "), "RSET refused"),
        "RSET" => {
            m.mail = false;
            m.rcpts.clear();
        }
        "DATA" if reply.starts_with(b"354 ") => {
            assert!(m.mail && !m.rcpts.is_empty(), "DATA without recipients");
            m.data = Some(Data {
                message: Vec::new(),
                long_line: false,
            });
        }
        "RCPT" => assert!(!ok),
        _ => {}
    }
    true
}

/// One or more lines `ddd-text`, last `ddd text`, one code, CRLF.
fn check_reply(bytes: &[u8]) {
    let show = String::from_utf8_lossy(bytes);
    if tracing() {
        eprint!("S: {show}");
    }
    assert!(bytes.ends_with(b"\r\n"), "{show:?}");
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    lines.pop();
    let lines: Vec<&[u8]> = lines
        .into_iter()
        .map(|l| {
            l.strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("bare LF: {show:?}"))
        })
        .collect();
    assert!(
        !lines.iter().any(|l| l.contains(&b'\r')),
        "bare CR: {show:?}"
    );
    let code = &lines[0][..3.min(lines[0].len())];
    assert!(
        code.len() == 3 && (b'2'..=b'5').contains(&code[0]) && code.iter().all(u8::is_ascii_digit),
        "{show:?}"
    );
    // Several replies in one (the refusal per recipient) are each checked.
    let mut expect_new = true;
    let mut current = code;
    for (i, l) in lines.iter().enumerate() {
        assert!(l.len() + 2 <= MAX_REPLY_LINE, "{show:?}");
        assert!(l.iter().all(|b| (0x20..=0x7e).contains(b)), "{show:?}");
        assert!(l.len() >= 4, "{show:?}");
        if expect_new {
            current = &l[..3];
        } else {
            assert_eq!(&l[..3], current, "one code per reply: {show:?}");
        }
        match l[3] {
            b'-' => {
                assert!(i + 1 < lines.len(), "last line continues: {show:?}");
                expect_new = false;
            }
            b' ' => expect_new = true,
            _ => panic!("{show:?}"),
        }
        // An enhanced status code has the reply's class (RFC 3463).
        let text = &l[4..];
        if text.len() >= 2 && text[0].is_ascii_digit() && text[1] == b'.' {
            assert_eq!(text[0], l[0], "enhanced code class: {show:?}");
        }
    }
}
