//! The LMTP protocol (RFC 2033, with RFC 5321 command syntax, RFC 1870
//! SIZE, RFC 6152 8BITMIME, RFC 2920 PIPELINING, RFC 2034 enhanced status
//! codes), sans I/O.
//!
//! [`LmtpSession`] takes lines and returns an [`LmtpAction`]: a reply to
//! send, or, after the end of DATA, a [`Transaction`] for the network layer
//! to deliver; the network layer then sends one reply per accepted
//! recipient, in RCPT order, as LMTP requires.

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4: 512).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest text line inside DATA, CRLF included (RFC 5321: 1000). Longer
/// lines are accepted (many MTAs send them) but counted against the size.
pub const MAX_DATA_LINE: usize = 64 * 1024;
/// Most recipients in one transaction (RFC 5321 asks for at least 100).
pub const MAX_RECIPIENTS: usize = 1000;

/// What the session needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct LmtpConfig {
    /// Our name in the greeting and LHLO reply.
    pub hostname: String,
    /// Largest message accepted, in octets.
    pub max_message_size: u64,
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given in RCPT TO, without the angle brackets.
    pub address: String,
    /// The principal the recipient resolved to.
    pub user: String,
    /// A folder named by the address's `+detail`, if any.
    pub folder: Option<String>,
}

/// A complete mail transaction, ready to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The reverse path, empty for bounces.
    pub mail_from: String,
    pub recipients: Vec<Recipient>,
    /// The message, dot-unstuffed, with CRLF line endings as received.
    pub message: Vec<u8>,
}

/// What the network layer must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum LmtpAction {
    /// Send these bytes.
    Reply(Vec<u8>),
    /// Resolve this recipient's user (ask the auth plugin), then call
    /// [`LmtpSession::on_recipient`].
    ResolveRecipient { address: String, local: String },
    /// Deliver, then send one reply per recipient (in order).
    Deliver(Transaction),
    /// Send the bytes and close the connection.
    Close(Vec<u8>),
}

/// The result of resolving a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientLookup {
    Found(String),
    Unknown,
    TempFail,
}

#[derive(Debug)]
enum State {
    /// Waiting for LHLO.
    Greeted,
    /// LHLO done, no transaction.
    Ready,
    /// MAIL given; recipients so far.
    Mail {
        from: String,
        recipients: Vec<Recipient>,
    },
    /// Reading message data.
    Data {
        from: String,
        recipients: Vec<Recipient>,
        message: Vec<u8>,
        /// The message outgrew the limit: keep reading, then refuse it.
        too_big: bool,
    },
}

/// One LMTP connection's protocol state.
#[derive(Debug)]
pub struct LmtpSession {
    config: LmtpConfig,
    state: State,
    /// `+detail` of the recipient being resolved.
    pending_folder: Option<String>,
    pending_address: Option<String>,
}

fn reply(code: u16, enhanced: &str, text: &str) -> Vec<u8> {
    format!("{code} {enhanced} {text}\r\n").into_bytes()
}

/// Splits `<path> params...` after `FROM:`/`TO:`. Returns the path without
/// brackets and the parameters.
fn parse_path(rest: &str) -> Option<(String, Vec<String>)> {
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = &rest[..end];
    if path.contains(['<', '>', ' ']) {
        return None;
    }
    let params = rest[end + 1..]
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    // A source route (`@a,@b:user@c`) is allowed and ignored (RFC 5321 §4.1.2).
    let path = match path.rsplit_once(':') {
        Some((route, addr)) if route.starts_with('@') => addr,
        _ => path,
    };
    Some((path.to_string(), params))
}

impl LmtpSession {
    pub fn new(config: LmtpConfig) -> Self {
        LmtpSession {
            config,
            state: State::Greeted,
            pending_folder: None,
            pending_address: None,
        }
    }

    pub fn greeting(&self) -> Vec<u8> {
        format!("220 {} LMTP Poplar ready\r\n", self.config.hostname).into_bytes()
    }

    /// The longest line accepted next, CRLF included.
    pub fn max_line(&self) -> usize {
        match self.state {
            State::Data { .. } => MAX_DATA_LINE,
            _ => MAX_COMMAND_LINE,
        }
    }

    /// True while reading message data.
    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data { .. })
    }

    /// A line was longer than [`max_line`](Self::max_line).
    pub fn on_long_line(&mut self) -> LmtpAction {
        if let State::Data { too_big, .. } = &mut self.state {
            // Cannot be stored faithfully: refuse the message at its end.
            *too_big = true;
            return LmtpAction::Reply(Vec::new());
        }
        LmtpAction::Reply(reply(500, "5.5.2", "Line too long"))
    }

    /// Handles one line (without CRLF).
    pub fn on_line(&mut self, line: &[u8]) -> LmtpAction {
        if let State::Data { .. } = self.state {
            return self.data_line(line);
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return LmtpAction::Reply(reply(500, "5.5.2", "Invalid characters in command"));
        };
        if text.bytes().any(|b| b < 0x20 && b != b'\t') {
            return LmtpAction::Reply(reply(500, "5.5.2", "Invalid characters in command"));
        }
        let (verb, rest) = match text.split_once(' ') {
            Some((v, r)) => (v.to_ascii_uppercase(), r),
            None => (text.to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "LHLO" => {
                if rest.trim().is_empty() {
                    return LmtpAction::Reply(reply(501, "5.5.4", "LHLO needs a domain"));
                }
                self.state = State::Ready;
                LmtpAction::Reply(
                    format!(
                        "250-{}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n\
                         250-8BITMIME\r\n250 SIZE {}\r\n",
                        self.config.hostname, self.config.max_message_size
                    )
                    .into_bytes(),
                )
            }
            "HELO" | "EHLO" => LmtpAction::Reply(reply(500, "5.5.1", "This is LMTP: use LHLO")),
            "MAIL" => self.mail(rest),
            "RCPT" => self.rcpt(rest),
            "DATA" => self.data(rest),
            // RFC 5321 §4.1.1.5: RSET takes no arguments.
            "RSET" if !rest.trim().is_empty() => {
                LmtpAction::Reply(reply(501, "5.5.4", "RSET takes no arguments"))
            }
            "RSET" => {
                if !matches!(self.state, State::Greeted) {
                    self.state = State::Ready;
                }
                LmtpAction::Reply(reply(250, "2.0.0", "Ok"))
            }
            "NOOP" => LmtpAction::Reply(reply(250, "2.0.0", "Ok")),
            "VRFY" => LmtpAction::Reply(reply(252, "2.5.0", "Cannot verify, try delivering")),
            "QUIT" => LmtpAction::Close(reply(221, "2.0.0", "Bye")),
            "BDAT" => LmtpAction::Reply(reply(502, "5.5.1", "CHUNKING is not supported")),
            _ => LmtpAction::Reply(reply(500, "5.5.1", "Unknown command")),
        }
    }

    fn mail(&mut self, rest: &str) -> LmtpAction {
        match self.state {
            State::Greeted => return LmtpAction::Reply(reply(503, "5.5.1", "Send LHLO first")),
            State::Mail { .. } => {
                return LmtpAction::Reply(reply(503, "5.5.1", "Nested MAIL command"));
            }
            _ => {}
        }
        let Some(rest) = strip_keyword(rest, "FROM:") else {
            return LmtpAction::Reply(reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"));
        };
        let Some((from, params)) = parse_path(rest) else {
            return LmtpAction::Reply(reply(501, "5.1.7", "Invalid sender address"));
        };
        for p in &params {
            let (key, value) = p.split_once('=').unwrap_or((p, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(n) if n > self.config.max_message_size => {
                        return LmtpAction::Reply(reply(
                            552,
                            "5.3.4",
                            "Message size exceeds fixed maximum message size",
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return LmtpAction::Reply(reply(501, "5.5.4", "Invalid SIZE parameter"));
                    }
                },
                "BODY" => {
                    if !matches!(value.to_ascii_uppercase().as_str(), "7BIT" | "8BITMIME") {
                        return LmtpAction::Reply(reply(501, "5.5.4", "Invalid BODY parameter"));
                    }
                }
                _ => {
                    return LmtpAction::Reply(reply(555, "5.5.4", "Unsupported MAIL parameter"));
                }
            }
        }
        self.state = State::Mail {
            from,
            recipients: Vec::new(),
        };
        LmtpAction::Reply(reply(250, "2.1.0", "Ok"))
    }

    fn rcpt(&mut self, rest: &str) -> LmtpAction {
        let State::Mail { recipients, .. } = &self.state else {
            return LmtpAction::Reply(reply(503, "5.5.1", "Send MAIL first"));
        };
        if recipients.len() >= MAX_RECIPIENTS {
            return LmtpAction::Reply(reply(452, "4.5.3", "Too many recipients"));
        }
        let Some(rest) = strip_keyword(rest, "TO:") else {
            return LmtpAction::Reply(reply(501, "5.5.4", "Syntax: RCPT TO:<address>"));
        };
        let Some((address, params)) = parse_path(rest) else {
            return LmtpAction::Reply(reply(501, "5.1.3", "Invalid recipient address"));
        };
        if !params.is_empty() {
            return LmtpAction::Reply(reply(555, "5.5.4", "Unsupported RCPT parameter"));
        }
        let local = address
            .rsplit_once('@')
            .map_or(address.as_str(), |(l, _)| l);
        let (local, folder) = match local.split_once('+') {
            Some((l, detail)) if !detail.is_empty() => (l, Some(detail.to_string())),
            Some((l, _)) => (l, None),
            None => (local, None),
        };
        if local.is_empty() {
            return LmtpAction::Reply(reply(501, "5.1.3", "Invalid recipient address"));
        }
        self.pending_folder = folder;
        self.pending_address = Some(address.clone());
        LmtpAction::ResolveRecipient {
            local: local.to_string(),
            address,
        }
    }

    /// The result of [`LmtpAction::ResolveRecipient`].
    pub fn on_recipient(&mut self, lookup: RecipientLookup) -> LmtpAction {
        let folder = self.pending_folder.take();
        let Some(address) = self.pending_address.take() else {
            return LmtpAction::Reply(reply(503, "5.5.1", "No recipient pending"));
        };
        let State::Mail { recipients, .. } = &mut self.state else {
            return LmtpAction::Reply(reply(503, "5.5.1", "Send MAIL first"));
        };
        match lookup {
            RecipientLookup::Found(user) => {
                recipients.push(Recipient {
                    address,
                    user,
                    folder,
                });
                LmtpAction::Reply(reply(250, "2.1.5", "Ok"))
            }
            RecipientLookup::Unknown => {
                LmtpAction::Reply(reply(550, "5.1.1", "User unknown in this mail system"))
            }
            RecipientLookup::TempFail => LmtpAction::Reply(reply(
                451,
                "4.3.0",
                "Temporary failure looking up the recipient",
            )),
        }
    }

    fn data(&mut self, rest: &str) -> LmtpAction {
        if !rest.trim().is_empty() {
            return LmtpAction::Reply(reply(501, "5.5.4", "DATA takes no arguments"));
        }
        match std::mem::replace(&mut self.state, State::Ready) {
            State::Mail { from, recipients } if !recipients.is_empty() => {
                self.state = State::Data {
                    from,
                    recipients,
                    message: Vec::new(),
                    too_big: false,
                };
                LmtpAction::Reply(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n".to_vec())
            }
            State::Mail { from, recipients } => {
                self.state = State::Mail { from, recipients };
                LmtpAction::Reply(reply(503, "5.5.1", "No valid recipients"))
            }
            other => {
                self.state = other;
                LmtpAction::Reply(reply(503, "5.5.1", "Send MAIL and RCPT first"))
            }
        }
    }

    fn data_line(&mut self, line: &[u8]) -> LmtpAction {
        let State::Data {
            message, too_big, ..
        } = &mut self.state
        else {
            unreachable!("data_line is only called in DATA")
        };
        if line == b"." {
            let State::Data {
                from,
                recipients,
                message,
                too_big,
            } = std::mem::replace(&mut self.state, State::Ready)
            else {
                unreachable!()
            };
            if too_big {
                let r = reply(552, "5.3.4", "Message too big");
                return LmtpAction::Reply(r.repeat(recipients.len()));
            }
            return LmtpAction::Deliver(Transaction {
                mail_from: from,
                recipients,
                message,
            });
        }
        if *too_big {
            return LmtpAction::Reply(Vec::new());
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        if message.len() as u64 + line.len() as u64 + 2 > self.config.max_message_size {
            *too_big = true;
            message.clear();
            message.shrink_to_fit();
            return LmtpAction::Reply(Vec::new());
        }
        message.extend_from_slice(line);
        message.extend_from_slice(b"\r\n");
        LmtpAction::Reply(Vec::new())
    }
}

/// Strips a case-insensitive keyword such as `FROM:`.
fn strip_keyword<'a>(s: &'a str, keyword: &str) -> Option<&'a str> {
    let head = s.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &s[keyword.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> LmtpSession {
        LmtpSession::new(LmtpConfig {
            hostname: "mx.test".into(),
            max_message_size: 1000,
        })
    }

    fn text(a: LmtpAction) -> String {
        match a {
            LmtpAction::Reply(b) | LmtpAction::Close(b) => String::from_utf8(b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn ready() -> LmtpSession {
        let mut s = session();
        assert!(text(s.on_line(b"LHLO client.test")).starts_with("250-mx.test\r\n"));
        s
    }

    fn with_rcpt() -> LmtpSession {
        let mut s = ready();
        assert_eq!(text(s.on_line(b"MAIL FROM:<a@b.c>")), "250 2.1.0 Ok\r\n");
        assert_eq!(
            s.on_line(b"RCPT TO:<alice+Work@example.org>"),
            LmtpAction::ResolveRecipient {
                address: "alice+Work@example.org".into(),
                local: "alice".into()
            }
        );
        assert_eq!(
            text(s.on_recipient(RecipientLookup::Found("alice".into()))),
            "250 2.1.5 Ok\r\n"
        );
        s
    }

    #[test]
    fn lhlo_lists_extensions() {
        let mut s = session();
        assert_eq!(s.greeting(), b"220 mx.test LMTP Poplar ready\r\n");
        assert_eq!(
            text(s.on_line(b"LHLO x")),
            "250-mx.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE 1000\r\n"
        );
    }

    #[test]
    fn commands_out_of_order() {
        let mut s = session();
        assert_eq!(
            text(s.on_line(b"MAIL FROM:<a@b>")),
            "503 5.5.1 Send LHLO first\r\n"
        );
        assert_eq!(
            text(s.on_line(b"EHLO x")),
            "500 5.5.1 This is LMTP: use LHLO\r\n"
        );
        let mut s = ready();
        assert_eq!(
            text(s.on_line(b"RCPT TO:<a@b>")),
            "503 5.5.1 Send MAIL first\r\n"
        );
        assert_eq!(
            text(s.on_line(b"DATA")),
            "503 5.5.1 Send MAIL and RCPT first\r\n"
        );
        s.on_line(b"MAIL FROM:<>");
        assert_eq!(
            text(s.on_line(b"DATA")),
            "503 5.5.1 No valid recipients\r\n"
        );
        assert_eq!(
            text(s.on_line(b"MAIL FROM:<>")),
            "503 5.5.1 Nested MAIL command\r\n"
        );
        assert_eq!(text(s.on_line(b"RSET")), "250 2.0.0 Ok\r\n");
        assert_eq!(
            text(s.on_line(b"RSET x")),
            "501 5.5.4 RSET takes no arguments\r\n"
        );
        assert_eq!(text(s.on_line(b"MAIL FROM:<>")), "250 2.1.0 Ok\r\n");
    }

    #[test]
    fn syntax_errors() {
        let mut s = ready();
        assert!(text(s.on_line(b"MAIL a@b")).starts_with("501 "));
        assert!(text(s.on_line(b"MAIL FROM:a@b")).starts_with("501 "));
        assert!(text(s.on_line(b"MAIL FROM:<a@b> SIZE=x")).starts_with("501 "));
        assert!(text(s.on_line(b"MAIL FROM:<a@b> FOO=1")).starts_with("555 "));
        assert!(text(s.on_line(b"MAIL FROM:<a@b> SIZE=5000")).starts_with("552 5.3.4"));
        assert_eq!(text(s.on_line(b"FROB")), "500 5.5.1 Unknown command\r\n");
        assert!(text(s.on_line(b"NOOP\x01")).starts_with("500 5.5.2"));
        assert_eq!(
            text(s.on_line(b"mail from:<@relay:a@b> BODY=8BITMIME SIZE=10")),
            "250 2.1.0 Ok\r\n"
        );
        assert!(text(s.on_line(b"RCPT TO:<>")).starts_with("501 "));
        assert!(text(s.on_line(b"RCPT TO:<a@b> NOTIFY=NEVER")).starts_with("555 "));
    }

    #[test]
    fn unknown_and_tempfail_recipients() {
        let mut s = ready();
        s.on_line(b"MAIL FROM:<>");
        s.on_line(b"RCPT TO:<nobody@x>");
        assert!(text(s.on_recipient(RecipientLookup::Unknown)).starts_with("550 5.1.1"));
        s.on_line(b"RCPT TO:<busy@x>");
        assert!(text(s.on_recipient(RecipientLookup::TempFail)).starts_with("451 4.3.0"));
        assert_eq!(
            text(s.on_line(b"DATA")),
            "503 5.5.1 No valid recipients\r\n"
        );
    }

    #[test]
    fn data_is_unstuffed_and_delivered() {
        let mut s = with_rcpt();
        assert!(text(s.on_line(b"DATA")).starts_with("354 "));
        assert!(s.in_data());
        for l in [&b"Subject: x"[..], b"", b"..dot", b"body"] {
            assert_eq!(s.on_line(l), LmtpAction::Reply(Vec::new()));
        }
        match s.on_line(b".") {
            LmtpAction::Deliver(t) => {
                assert_eq!(t.mail_from, "a@b.c");
                assert_eq!(t.recipients[0].user, "alice");
                assert_eq!(t.recipients[0].folder.as_deref(), Some("Work"));
                assert_eq!(t.message, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
            }
            other => panic!("{other:?}"),
        }
        assert!(!s.in_data());
        // A new transaction may follow.
        assert_eq!(text(s.on_line(b"MAIL FROM:<>")), "250 2.1.0 Ok\r\n");
    }

    #[test]
    fn oversized_data_is_refused_per_recipient() {
        let mut s = with_rcpt();
        s.on_line(b"RCPT TO:<bob@x>");
        s.on_recipient(RecipientLookup::Found("bob".into()));
        s.on_line(b"DATA");
        for _ in 0..30 {
            s.on_line(&[b'x'; 60]);
        }
        assert_eq!(
            text(s.on_line(b".")),
            "552 5.3.4 Message too big\r\n552 5.3.4 Message too big\r\n"
        );
        let mut s = with_rcpt();
        s.on_line(b"DATA");
        assert_eq!(s.max_line(), MAX_DATA_LINE);
        s.on_long_line();
        assert!(text(s.on_line(b".")).starts_with("552 "));
    }
}
