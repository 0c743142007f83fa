//! The POP3 command parser on arbitrary bytes.
//!
//! Besides "never panics", checks what the parser promises: only UTF-8
//! without control characters is accepted (RFC 6856 lets arguments be
//! UTF-8), the keyword is ASCII, the command's name is the line's keyword
//! (UTF8 and LANG included), arguments
//! are pieces of the input and within their limits, message numbers start
//! at 1, the keyword's case does not matter, trailing spaces are tolerated
//! (except in PASS, where they are part of the password), and a parsed
//! command written back in canonical form parses to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poplar_proto::pop3::command::{Command, parse};

/// RFC 1939 names are limited; the parser allows up to this many octets.
const MAX_NAME_ARG: usize = 255;

fuzz_target!(|line: &[u8]| {
    let Ok(cmd) = parse(line) else {
        if let Err(e) = parse(line) {
            let text = e.to_string();
            assert!(!text.is_empty() && text.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        }
        return;
    };
    let Ok(text) = std::str::from_utf8(line) else {
        panic!("accepted bytes that are not UTF-8: {line:?} -> {cmd:?}");
    };
    assert!(
        !text.chars().any(char::is_control),
        "accepted a control character: {text:?} -> {cmd:?}"
    );
    let keyword = text.split(' ').next().unwrap();
    assert!(keyword.is_ascii(), "non-ASCII keyword {text:?} -> {cmd:?}");
    assert_eq!(
        keyword.to_ascii_uppercase(),
        cmd.name(),
        "{text:?} parsed as {cmd:?}"
    );

    // Arguments come from the input and respect their limits.
    let from_input = |s: &str| {
        assert!(s.len() < line.len(), "{s:?} longer than the line {text:?}");
        assert!(text.contains(s), "{s:?} not in {text:?}");
    };
    match &cmd {
        Command::User(u) => {
            from_input(u);
            assert!(!u.is_empty() && u.len() <= MAX_NAME_ARG && !u.contains(' '));
        }
        Command::Pass(p) => {
            from_input(p);
            assert!(!p.is_empty());
        }
        Command::Apop { user, digest } => {
            for a in [user, digest] {
                from_input(a);
                assert!(!a.is_empty() && a.len() <= MAX_NAME_ARG && !a.contains(' '));
            }
        }
        Command::Auth { mechanism, initial } => {
            if let Some(m) = mechanism {
                from_input(m);
                assert!(!m.is_empty() && m.len() <= MAX_NAME_ARG && !m.contains(' '));
            } else {
                assert!(initial.is_none(), "an initial response without mechanism");
            }
            if let Some(i) = initial {
                from_input(i);
                assert!(!i.is_empty() && !i.contains(' '));
            }
        }
        Command::List(Some(n)) | Command::Uidl(Some(n)) | Command::Retr(n) | Command::Dele(n) => {
            assert_ne!(*n, 0)
        }
        Command::Top { msg, .. } => assert_ne!(*msg, 0),
        Command::Lang(Some(range)) => {
            from_input(range);
            assert!(!range.is_empty() && range.len() <= MAX_NAME_ARG && !range.contains(' '));
        }
        _ => {}
    }

    // The keyword is case-insensitive.
    let mut flipped = line.to_vec();
    for b in &mut flipped[..keyword.len()] {
        if b.is_ascii_alphabetic() {
            *b ^= 0x20;
        }
    }
    assert_eq!(parse(&flipped), Ok(cmd.clone()), "case of {text:?}");

    // Trailing spaces are tolerated, and are part of a PASS password.
    let mut spaced = line.to_vec();
    spaced.extend_from_slice(b"  ");
    match &cmd {
        Command::Pass(p) => {
            assert_eq!(parse(&spaced), Ok(Command::Pass(format!("{p}  "))))
        }
        _ => assert_eq!(parse(&spaced), Ok(cmd.clone()), "{text:?} plus spaces"),
    }

    // The canonical form parses back to the same command.
    let canonical = canonical(&cmd);
    assert_eq!(
        parse(canonical.as_bytes()),
        Ok(cmd.clone()),
        "{text:?} -> {canonical:?}"
    );
});

fn canonical(cmd: &Command) -> String {
    let opt = |k: &str, n: &Option<u32>| match n {
        Some(n) => format!("{k} {n}"),
        None => k.to_string(),
    };
    match cmd {
        Command::User(u) => format!("USER {u}"),
        Command::Pass(p) => format!("PASS {p}"),
        Command::Apop { user, digest } => format!("APOP {user} {digest}"),
        Command::Auth {
            mechanism: None, ..
        } => "AUTH".into(),
        Command::Auth {
            mechanism: Some(m),
            initial: None,
        } => format!("AUTH {m}"),
        Command::Auth {
            mechanism: Some(m),
            initial: Some(i),
        } => format!("AUTH {m} {i}"),
        Command::List(n) => opt("LIST", n),
        Command::Uidl(n) => opt("UIDL", n),
        Command::Retr(n) => format!("RETR {n}"),
        Command::Dele(n) => format!("DELE {n}"),
        Command::Top { msg, lines } => format!("TOP {msg} {lines}"),
        Command::Lang(Some(range)) => format!("LANG {range}"),
        other => other.name().to_string(),
    }
}
