//! Parsing one POP3 command line (RFC 1939, 2449, 2595, 5034, 6856) into a
//! [`Command`]. Pure code: no I/O, no session state.
//!
//! The parser is strict: a missing or extra argument, a message number that
//! is zero, not a plain decimal number or too large, a NUL or other control
//! character, or bytes that are not UTF-8 is a [`ParseError`], which the
//! session answers with `-ERR`. Arguments may be UTF-8 (RFC 6856 `UTF8
//! USER`: user names and passwords); keywords are ASCII. Error texts never
//! contain the client's bytes.

use std::fmt;

/// A parsed POP3 command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    Pass(String),
    Apop {
        user: String,
        digest: String,
    },
    /// `AUTH` alone lists mechanisms; otherwise a mechanism and an optional
    /// initial response (still base64, `=` for an empty one).
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Capa,
    Stls,
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Top {
        msg: u32,
        lines: u32,
    },
    Dele(u32),
    Noop,
    Rset,
    Quit,
    /// RFC 6856 §2: switch the session to UTF-8 mode.
    Utf8,
    /// RFC 6856 §3: `LANG` alone lists the languages; `LANG range` picks
    /// one for the text of later replies.
    Lang(Option<String>),
}

impl Command {
    /// The command keyword, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Uidl(_) => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Top { .. } => "TOP",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Quit => "QUIT",
            Command::Utf8 => "UTF8",
            Command::Lang(_) => "LANG",
        }
    }
}

/// Why a command line was refused. The `Display` text is what follows
/// `-ERR ` in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    Unknown,
    MissingArgument,
    ExtraArgument,
    NotANumber,
    /// Message number 0: numbers start at 1.
    Zero,
    /// A number too large to be a message number or line count.
    Overflow,
    /// NUL, another control character, or bytes that are not UTF-8.
    BadByte,
    ArgumentTooLong,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "Empty command",
            ParseError::Unknown => "Unknown command",
            ParseError::MissingArgument => "Missing argument",
            ParseError::ExtraArgument => "Too many arguments",
            ParseError::NotANumber => "Invalid number: expected digits only",
            ParseError::Zero => "Invalid message number: numbering starts at 1",
            ParseError::Overflow => "Invalid number: too large",
            ParseError::BadByte => "Invalid character in command",
            ParseError::ArgumentTooLong => "Argument too long",
        })
    }
}

/// Longest argument accepted for USER/APOP names, digests and SASL
/// mechanism names (RFC 1939 allows 40; RFC 5034 initial responses are
/// longer and are limited by the line length instead).
const MAX_NAME_ARG: usize = 255;

/// Parses one command line, without its line ending.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    // RFC 1939 commands are printable ASCII (PASS may carry spaces); RFC
    // 6856 lets arguments be UTF-8. No control character anywhere: a NUL,
    // CR or ESC in a name is never a real user and could forge log lines.
    let line = std::str::from_utf8(line).map_err(|_| ParseError::BadByte)?;
    if line.chars().any(char::is_control) {
        return Err(ParseError::BadByte);
    }
    if line.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let (keyword, rest) = match line.split_once(' ') {
        Some((k, r)) => (k, Some(r)),
        None => (line, None),
    };
    let keyword = keyword.to_ascii_uppercase();
    let args = |n_min: usize, n_max: usize| -> Result<Vec<&str>, ParseError> {
        let parts: Vec<&str> = match rest {
            None => Vec::new(),
            // Arguments are separated by single spaces; tolerate trailing
            // spaces, which some clients send, but nothing else.
            Some(r) => r.trim_end_matches(' ').split(' ').collect(),
        };
        let parts: Vec<&str> = if parts == [""] { Vec::new() } else { parts };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ParseError::ExtraArgument);
        }
        if parts.len() < n_min {
            return Err(ParseError::MissingArgument);
        }
        if parts.len() > n_max {
            return Err(ParseError::ExtraArgument);
        }
        Ok(parts)
    };
    let name = |s: &str| -> Result<String, ParseError> {
        if s.len() > MAX_NAME_ARG {
            Err(ParseError::ArgumentTooLong)
        } else {
            Ok(s.to_string())
        }
    };
    Ok(match keyword.as_str() {
        "USER" => Command::User(name(args(1, 1)?[0])?),
        "PASS" => {
            // The whole rest of the line is the password (RFC 1939 §7 allows
            // spaces in it).
            match rest {
                Some(r) if !r.is_empty() => Command::Pass(r.to_string()),
                _ => return Err(ParseError::MissingArgument),
            }
        }
        "APOP" => {
            let a = args(2, 2)?;
            Command::Apop {
                user: name(a[0])?,
                digest: name(a[1])?,
            }
        }
        "AUTH" => {
            let a = args(0, 2)?;
            Command::Auth {
                mechanism: a.first().map(|m| name(m)).transpose()?,
                initial: a.get(1).map(|s| s.to_string()),
            }
        }
        "CAPA" => no_args(args(0, 0)?, Command::Capa),
        "STLS" => no_args(args(0, 0)?, Command::Stls),
        "STAT" => no_args(args(0, 0)?, Command::Stat),
        "NOOP" => no_args(args(0, 0)?, Command::Noop),
        "RSET" => no_args(args(0, 0)?, Command::Rset),
        "QUIT" => no_args(args(0, 0)?, Command::Quit),
        "UTF8" => no_args(args(0, 0)?, Command::Utf8),
        "LANG" => Command::Lang(args(0, 1)?.first().map(|r| name(r)).transpose()?),
        "LIST" => Command::List(args(0, 1)?.first().map(|s| msg_number(s)).transpose()?),
        "UIDL" => Command::Uidl(args(0, 1)?.first().map(|s| msg_number(s)).transpose()?),
        "RETR" => Command::Retr(msg_number(args(1, 1)?[0])?),
        "DELE" => Command::Dele(msg_number(args(1, 1)?[0])?),
        "TOP" => {
            let a = args(2, 2)?;
            Command::Top {
                msg: msg_number(a[0])?,
                lines: number(a[1])?,
            }
        }
        _ => return Err(ParseError::Unknown),
    })
}

fn no_args(_checked: Vec<&str>, cmd: Command) -> Command {
    cmd
}

/// A non-negative decimal number: digits only, no sign, fits in u32.
fn number(s: &str) -> Result<u32, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::NotANumber);
    }
    s.parse::<u32>().map_err(|_| ParseError::Overflow)
}

/// A message number: a [`number`] that is at least 1.
fn msg_number(s: &str) -> Result<u32, ParseError> {
    match number(s)? {
        0 => Err(ParseError::Zero),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, ParseError> {
        parse(s.as_bytes())
    }

    #[test]
    fn simple_commands_any_case() {
        assert_eq!(p("STAT"), Ok(Command::Stat));
        assert_eq!(p("stat"), Ok(Command::Stat));
        assert_eq!(p("NoOp"), Ok(Command::Noop));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("RSET"), Ok(Command::Rset));
        assert_eq!(p("CAPA"), Ok(Command::Capa));
        assert_eq!(p("STLS"), Ok(Command::Stls));
        assert_eq!(p("STAT "), Ok(Command::Stat), "trailing space tolerated");
    }

    #[test]
    fn message_number_arguments() {
        assert_eq!(p("LIST"), Ok(Command::List(None)));
        assert_eq!(p("LIST 3"), Ok(Command::List(Some(3))));
        assert_eq!(p("UIDL 1"), Ok(Command::Uidl(Some(1))));
        assert_eq!(p("RETR 12"), Ok(Command::Retr(12)));
        assert_eq!(p("DELE 4294967295"), Ok(Command::Dele(u32::MAX)));
        assert_eq!(p("TOP 1 0"), Ok(Command::Top { msg: 1, lines: 0 }));
        assert_eq!(p("TOP 2 10"), Ok(Command::Top { msg: 2, lines: 10 }));
    }

    #[test]
    fn message_number_errors() {
        assert_eq!(p("RETR 0"), Err(ParseError::Zero));
        assert_eq!(p("RETR"), Err(ParseError::MissingArgument));
        assert_eq!(p("RETR x"), Err(ParseError::NotANumber));
        assert_eq!(p("RETR -1"), Err(ParseError::NotANumber));
        assert_eq!(p("RETR +1"), Err(ParseError::NotANumber));
        assert_eq!(p("RETR 1.0"), Err(ParseError::NotANumber));
        assert_eq!(p("RETR 4294967296"), Err(ParseError::Overflow));
        assert_eq!(
            p("RETR 99999999999999999999999999"),
            Err(ParseError::Overflow)
        );
        assert_eq!(p("RETR 1 2"), Err(ParseError::ExtraArgument));
        assert_eq!(p("RETR  1"), Err(ParseError::ExtraArgument));
        assert_eq!(p("DELE"), Err(ParseError::MissingArgument));
        assert_eq!(p("LIST 0"), Err(ParseError::Zero));
        assert_eq!(p("LIST 1 2"), Err(ParseError::ExtraArgument));
        assert_eq!(p("TOP 1"), Err(ParseError::MissingArgument));
        assert_eq!(p("TOP 1 x"), Err(ParseError::NotANumber));
        assert_eq!(p("TOP 0 1"), Err(ParseError::Zero));
        assert_eq!(p("TOP 1 2 3"), Err(ParseError::ExtraArgument));
        assert_eq!(p("TOP 1 4294967296"), Err(ParseError::Overflow));
    }

    #[test]
    fn no_argument_commands_refuse_arguments() {
        for c in ["STAT", "NOOP", "RSET", "QUIT", "CAPA", "STLS", "UTF8"] {
            assert_eq!(p(&format!("{c} x")), Err(ParseError::ExtraArgument), "{c}");
        }
    }

    #[test]
    fn authorization_commands() {
        assert_eq!(p("USER alice"), Ok(Command::User("alice".into())));
        assert_eq!(p("USER"), Err(ParseError::MissingArgument));
        assert_eq!(p("USER a b"), Err(ParseError::ExtraArgument));
        assert_eq!(
            p("PASS secret word"),
            Ok(Command::Pass("secret word".into()))
        );
        assert_eq!(p("PASS"), Err(ParseError::MissingArgument));
        assert_eq!(p("PASS "), Err(ParseError::MissingArgument));
        assert_eq!(
            p("APOP bob c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop {
                user: "bob".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into()
            })
        );
        assert_eq!(p("APOP bob"), Err(ParseError::MissingArgument));
        assert_eq!(
            p("AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(
            p("AUTH PLAIN AGEAYg=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AGEAYg==".into())
            })
        );
        assert_eq!(p("AUTH PLAIN a b"), Err(ParseError::ExtraArgument));
        assert_eq!(
            p(&format!("USER {}", "a".repeat(300))),
            Err(ParseError::ArgumentTooLong)
        );
    }

    #[test]
    fn rfc6856_commands_and_utf8_arguments() {
        assert_eq!(p("UTF8"), Ok(Command::Utf8));
        assert_eq!(p("utf8"), Ok(Command::Utf8));
        assert_eq!(p("LANG"), Ok(Command::Lang(None)));
        assert_eq!(p("lang de-CH"), Ok(Command::Lang(Some("de-CH".into()))));
        assert_eq!(p("LANG *"), Ok(Command::Lang(Some("*".into()))));
        assert_eq!(p("LANG de en"), Err(ParseError::ExtraArgument));
        assert_eq!(p("USER j\u{f6}rg"), Ok(Command::User("j\u{f6}rg".into())));
        assert_eq!(
            p("PASS gr\u{fc}n \u{e9}t\u{e9} \u{2603}"),
            Ok(Command::Pass("gr\u{fc}n \u{e9}t\u{e9} \u{2603}".into()))
        );
        assert_eq!(
            p("APOP \u{7530}\u{4e2d} c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop {
                user: "\u{7530}\u{4e2d}".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into()
            })
        );
        // Keywords stay ASCII; numbers stay digits.
        assert_eq!(p("ST\u{c4}T"), Err(ParseError::Unknown));
        assert_eq!(p("RETR \u{661}"), Err(ParseError::NotANumber));
    }

    #[test]
    fn bad_bytes_and_unknown() {
        assert_eq!(parse(b"STAT\0"), Err(ParseError::BadByte));
        assert_eq!(parse(b"USER a\x01"), Err(ParseError::BadByte));
        assert_eq!(parse(b"USER \xc3"), Err(ParseError::BadByte), "cut UTF-8");
        assert_eq!(parse(b"USER \xe9"), Err(ParseError::BadByte), "Latin-1");
        assert_eq!(
            parse(b"USER a\xc2\x85b"),
            Err(ParseError::BadByte),
            "C1 NEL"
        );
        assert_eq!(parse(b"USER a\x7fb"), Err(ParseError::BadByte), "DEL");
        assert_eq!(parse(b"PASS a\tb"), Err(ParseError::BadByte));
        assert_eq!(p(""), Err(ParseError::Empty));
        assert_eq!(p("   "), Err(ParseError::Empty));
        assert_eq!(p("FOO"), Err(ParseError::Unknown));
        assert_eq!(p("RETRX 1"), Err(ParseError::Unknown));
        assert_eq!(p(" STAT"), Err(ParseError::Unknown));
    }

    #[test]
    fn error_texts_never_echo_input() {
        for e in [
            ParseError::Empty,
            ParseError::Unknown,
            ParseError::MissingArgument,
            ParseError::ExtraArgument,
            ParseError::NotANumber,
            ParseError::Zero,
            ParseError::Overflow,
            ParseError::BadByte,
            ParseError::ArgumentTooLong,
        ] {
            let text = e.to_string();
            assert!(!text.is_empty() && text.is_ascii());
        }
    }
}
