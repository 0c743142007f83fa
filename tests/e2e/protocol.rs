//! Raw-byte POP3 transcripts against the real server: every command, every
//! error path, DELE/RSET/QUIT semantics across sessions, [IN-USE], STLS
//! injection, large messages with dot lines, pipelining.

use crate::harness::{Client, Options, TestServer, crlf, maildir_files, put_message};

const MSG1: &[u8] =
    b"From: a@example.org\nTo: alice@example.org\nSubject: one\n\nfirst body line\nsecond\n";
const MSG2: &[u8] =
    b"From: b@example.org\nSubject: two\n\n.starts with dot\n..two dots\nplain\n.\nend\n";
/// CRLF already, and no final line ending.
const MSG3: &[u8] =
    b"Subject: three\r\nX-Long: folded\r\n continuation\r\n\r\nbody without final newline";

/// A server with three messages for alice, stored as another MDA would.
fn alice_server() -> TestServer {
    alice_server_with(Options::default())
}

fn alice_server_with(opts: Options) -> TestServer {
    let s = TestServer::start_with(opts);
    let md = s.maildir("alice");
    put_message(&md, "cur", "1700000001.M1P1.test:2,S", MSG1);
    put_message(&md, "new", "1700000002.M2P2.test", MSG2);
    put_message(&md, "new", "1700000003.M3P3.test", MSG3);
    s
}

fn sizes() -> [usize; 3] {
    [crlf(MSG1).len(), crlf(MSG2).len(), crlf(MSG3).len()]
}

#[test]
fn greeting_and_capa_before_login() {
    let s = alice_server();
    let mut c = Client::plain(s.plain);
    let greeting = c.line();
    assert!(
        greeting.starts_with("+OK Poplar POP3 server ready <"),
        "{greeting}"
    );
    assert!(greeting.ends_with(">\r\n"));
    c.send("CAPA");
    let caps = String::from_utf8(c.multiline_raw()).unwrap();
    let first = c.cmd("NOOP");
    assert_eq!(first, "-ERR Command not valid before login\r\n");
    for cap in [
        "TOP",
        "UIDL",
        "USER",
        "SASL PLAIN LOGIN",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "STLS",
    ] {
        assert!(
            caps.contains(&format!("\r\n{cap}\r\n")) || caps.starts_with(&format!("{cap}\r\n")),
            "{cap} missing in {caps}"
        );
    }
    assert!(caps.contains("IMPLEMENTATION Poplar-"));
}

#[test]
fn full_transaction_transcript() {
    let s = alice_server();
    let [a, b, c3] = sizes();
    let total = a + b + c3;
    let mut c = s.connect();
    assert_eq!(c.cmd("USER alice"), "+OK Send your password\r\n");
    assert_eq!(
        c.cmd("PASS alice-pw"),
        format!("+OK Logged in, 3 messages ({total} octets)\r\n")
    );
    assert_eq!(c.cmd("STAT"), format!("+OK 3 {total}\r\n"));
    assert_eq!(
        c.cmd("LIST"),
        format!("+OK 3 messages ({total} octets)\r\n")
    );
    assert_eq!(
        c.multiline_raw(),
        format!("1 {a}\r\n2 {b}\r\n3 {c3}\r\n.\r\n").into_bytes()
    );
    assert_eq!(c.cmd("LIST 2"), format!("+OK 2 {b}\r\n"));
    assert_eq!(c.cmd("LIST 4"), "-ERR No such message\r\n");
    assert_eq!(c.cmd("UIDL"), "+OK Unique-ID listing follows\r\n");
    let uidl = String::from_utf8(c.multiline_raw()).unwrap();
    assert_eq!(
        uidl,
        "1 1700000001.M1P1.test\r\n2 1700000002.M2P2.test\r\n3 1700000003.M3P3.test\r\n.\r\n"
    );
    assert_eq!(c.cmd("UIDL 3"), "+OK 3 1700000003.M3P3.test\r\n");

    // RETR: exact bytes, CRLF, dot-stuffed on the wire.
    assert_eq!(c.cmd("RETR 2"), format!("+OK {b} octets\r\n"));
    let wire = c.multiline_raw();
    assert_eq!(
        wire,
        b"From: b@example.org\r\nSubject: two\r\n\r\n..starts with dot\r\n...two dots\r\nplain\r\n..\r\nend\r\n.\r\n"
    );
    assert_eq!(c.cmd("RETR 1"), format!("+OK {a} octets\r\n"));
    assert_eq!(c.multiline(), crlf(MSG1));
    assert_eq!(c.cmd("RETR 3"), format!("+OK {c3} octets\r\n"));
    let m3 = c.multiline();
    assert_eq!(m3, crlf(MSG3));
    assert_eq!(m3.len(), c3, "LIST size equals the octets sent");

    // TOP n k: header, blank line, k body lines.
    assert_eq!(c.cmd("TOP 1 0"), "+OK Top of message follows\r\n");
    assert_eq!(
        c.multiline_raw(),
        b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: one\r\n\r\n.\r\n"
    );
    c.ok("TOP 1 1");
    assert_eq!(
        c.multiline_raw(),
        b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: one\r\n\r\nfirst body line\r\n.\r\n"
    );
    c.ok("TOP 2 2");
    assert_eq!(
        c.multiline_raw(),
        b"From: b@example.org\r\nSubject: two\r\n\r\n..starts with dot\r\n...two dots\r\n.\r\n"
    );
    c.ok("TOP 3 100");
    assert_eq!(c.multiline(), crlf(MSG3));

    assert_eq!(c.cmd("NOOP"), "+OK Still here\r\n");
    assert_eq!(c.cmd("QUIT"), "+OK Poplar signing off\r\n");
    assert_eq!(c.rest(), "", "connection closed after QUIT");
    // One summary line per session at logout.
    let line = s.wait_for_log("session ended");
    for field in [
        "user=alice",
        "mechanism=USER",
        "tls=false",
        "retr=3",
        "top=4",
        "dele=0",
        "end=Quit",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    assert!(line.contains(&format!("retr_bytes={total}")), "{line}");
    assert_eq!(
        maildir_files(&s.maildir("alice")).len(),
        3,
        "nothing deleted"
    );
}

#[test]
fn dele_rset_quit_across_sessions() {
    let s = alice_server();
    let [a, b, c3] = sizes();
    let md = s.maildir("alice");

    // DELE hides the message until RSET.
    let mut c = s.login("alice", "alice-pw");
    assert_eq!(c.cmd("DELE 2"), "+OK Message 2 deleted\r\n");
    assert_eq!(c.cmd("DELE 2"), "-ERR Message already deleted\r\n");
    assert_eq!(c.cmd("STAT"), format!("+OK 2 {}\r\n", a + c3));
    c.ok("LIST");
    assert_eq!(
        c.multiline_raw(),
        format!("1 {a}\r\n3 {c3}\r\n.\r\n").into_bytes()
    );
    c.ok("UIDL");
    assert_eq!(
        c.multiline_raw(),
        b"1 1700000001.M1P1.test\r\n3 1700000003.M3P3.test\r\n.\r\n"
    );
    for cmd in ["RETR 2", "TOP 2 0", "LIST 2", "UIDL 2", "DELE 2"] {
        assert_eq!(c.cmd(cmd), "-ERR Message already deleted\r\n", "{cmd}");
    }
    assert_eq!(
        c.cmd("RSET"),
        format!("+OK 3 messages ({} octets)\r\n", a + b + c3)
    );
    c.ok("RETR 2");
    c.multiline_raw();
    // RSET, then QUIT: nothing deleted.
    c.ok("QUIT");
    assert_eq!(maildir_files(&md).len(), 3);

    // DELE then a dropped connection: nothing deleted.
    let mut c = s.login("alice", "alice-pw");
    c.ok("DELE 1");
    c.ok("DELE 3");
    drop(c);
    // The next login succeeds once the dropped session is gone, and sees
    // all three messages.
    let mut c = loop {
        let mut c = s.connect();
        c.ok("USER alice");
        let r = c.cmd("PASS alice-pw");
        if r.starts_with("+OK") {
            break c;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(c.cmd("STAT"), format!("+OK 3 {}\r\n", a + b + c3));

    // DELE then QUIT: deleted in UPDATE.
    c.ok("DELE 1");
    c.ok("DELE 3");
    assert_eq!(c.cmd("QUIT"), "+OK Poplar signing off\r\n");
    assert_eq!(
        maildir_files(&md),
        vec!["new/1700000002.M2P2.test".to_string()]
    );

    // The next session numbers from 1 again.
    let mut c = s.login("alice", "alice-pw");
    assert_eq!(c.cmd("STAT"), format!("+OK 1 {b}\r\n"));
    assert_eq!(c.cmd("UIDL 1"), "+OK 1 1700000002.M2P2.test\r\n");
    c.ok("QUIT");
}

#[test]
fn every_malformed_command_gets_err() {
    let s = alice_server();
    let mut c = s.connect();
    let before_login = [
        ("STAT", "-ERR Command not valid before login\r\n"),
        ("RETR 1", "-ERR Command not valid before login\r\n"),
        ("PASS alice-pw", "-ERR Give USER first\r\n"),
        ("USER", "-ERR Missing argument\r\n"),
        ("USER a b", "-ERR Too many arguments\r\n"),
        ("FROB", "-ERR Unknown command\r\n"),
        ("", "-ERR Empty command\r\n"),
        ("APOP alice", "-ERR Missing argument\r\n"),
        ("AUTH FOO", "-ERR Unsupported authentication mechanism\r\n"),
    ];
    for (cmd, want) in before_login {
        assert_eq!(c.cmd(cmd), want, "{cmd:?}");
    }
    c.ok("USER alice");
    assert_eq!(c.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed\r\n");
    c.ok("USER nobody");
    assert_eq!(
        c.cmd("PASS wrong"),
        "-ERR [AUTH] Authentication failed\r\n",
        "no user enumeration"
    );
    c.ok("USER alice");
    c.ok("PASS alice-pw");
    let transaction = [
        (
            "RETR 0",
            "-ERR Invalid message number: numbering starts at 1\r\n",
        ),
        ("RETR", "-ERR Missing argument\r\n"),
        ("RETR x", "-ERR Invalid number: expected digits only\r\n"),
        ("RETR -1", "-ERR Invalid number: expected digits only\r\n"),
        ("RETR 1 2", "-ERR Too many arguments\r\n"),
        ("RETR 4", "-ERR No such message\r\n"),
        ("RETR 4294967295", "-ERR No such message\r\n"),
        ("RETR 4294967296", "-ERR Invalid number: too large\r\n"),
        (
            "RETR 123456789012345678901234567890",
            "-ERR Invalid number: too large\r\n",
        ),
        (
            "DELE 0",
            "-ERR Invalid message number: numbering starts at 1\r\n",
        ),
        ("DELE", "-ERR Missing argument\r\n"),
        ("TOP 1", "-ERR Missing argument\r\n"),
        ("TOP 1 -1", "-ERR Invalid number: expected digits only\r\n"),
        ("TOP 1 2 3", "-ERR Too many arguments\r\n"),
        (
            "LIST 0",
            "-ERR Invalid message number: numbering starts at 1\r\n",
        ),
        ("LIST 1 1", "-ERR Too many arguments\r\n"),
        ("UIDL x", "-ERR Invalid number: expected digits only\r\n"),
        ("STAT 1", "-ERR Too many arguments\r\n"),
        ("NOOP x", "-ERR Too many arguments\r\n"),
        ("USER bob", "-ERR Already logged in\r\n"),
        ("STLS", "-ERR STLS is only valid before login\r\n"),
        ("XYZZY", "-ERR Unknown command\r\n"),
    ];
    for (cmd, want) in transaction {
        assert_eq!(c.cmd(cmd), want, "{cmd:?}");
    }
    // NUL and other control bytes, and non-ASCII: -ERR, nothing echoed.
    c.send_raw(b"STAT\0\r\n");
    assert_eq!(c.line(), "-ERR Invalid character in command\r\n");
    c.send_raw(b"RETR \x01\r\n");
    assert_eq!(c.line(), "-ERR Invalid character in command\r\n");
    c.send_raw(b"LIST \xff\xfe\r\n");
    assert_eq!(c.line(), "-ERR Invalid character in command\r\n");
    // The session is still fine.
    assert_eq!(c.cmd("STAT").split(' ').next(), Some("+OK"));
    // Over-long lines: -ERR each time, closed after the third.
    let long = format!("LIST {}", "1".repeat(300));
    assert_eq!(c.cmd(&long), "-ERR Line too long\r\n");
    assert_eq!(c.cmd("NOOP"), "+OK Still here\r\n");
    assert_eq!(c.cmd(&long), "-ERR Line too long\r\n");
    assert_eq!(
        c.cmd(&long),
        "-ERR Too many over-long lines, closing connection\r\n"
    );
    assert_eq!(c.rest(), "");
    // Nothing was deleted by any of it.
    assert_eq!(maildir_files(&s.maildir("alice")).len(), 3);
}

#[test]
fn second_login_to_same_maildrop_is_in_use() {
    let s = alice_server();
    let mut first = s.login("alice", "alice-pw");
    let mut second = s.connect();
    second.ok("USER alice");
    assert_eq!(
        second.cmd("PASS alice-pw"),
        "-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n"
    );
    // Still in AUTHORIZATION: another user works on the same connection.
    second.ok("USER frank");
    second.ok("PASS frank-pw");
    first.ok("STAT");
    first.ok("QUIT");
    let mut third = s.login("alice", "alice-pw");
    third.ok("QUIT");
}

#[test]
fn stls_discards_pipelined_plaintext() {
    let s = alice_server();
    let mut c = s.connect();
    // A man in the middle appends commands after STLS in the same packet.
    c.send_raw(b"STLS\r\nUSER alice\r\nCAPA\r\n");
    assert_eq!(c.line(), "+OK Begin TLS negotiation\r\n");
    let mut c = c.start_tls(&s.cert_path());
    // Inside TLS, the injected USER and CAPA were never executed: the first
    // reply is to our own command, and PASS finds no USER.
    assert_eq!(c.cmd("PASS alice-pw"), "-ERR Give USER first\r\n");
    c.send("CAPA");
    let caps = String::from_utf8(c.multiline_raw()).unwrap();
    assert!(!caps.contains("STLS"), "no STLS inside TLS: {caps}");
    assert!(caps.contains("\r\nUSER\r\n"));
    assert_eq!(c.cmd("STLS"), "-ERR Already using TLS\r\n");
    c.ok("USER alice");
    c.ok("PASS alice-pw");
    c.send("CAPA");
    let after = String::from_utf8(c.multiline_raw()).unwrap();
    assert!(
        !after.contains("STLS") && !after.contains("USER"),
        "{after}"
    );
    c.ok("QUIT");
}

#[test]
fn implicit_tls_session() {
    let s = alice_server();
    let mut c = Client::tls(s.tls, &s.cert_path());
    assert!(c.line().starts_with("+OK Poplar"));
    c.send("CAPA");
    let caps = String::from_utf8(c.multiline_raw()).unwrap();
    assert!(!caps.contains("STLS"));
    c.ok("USER alice");
    c.ok("PASS alice-pw");
    c.ok("RETR 1");
    assert_eq!(c.multiline(), crlf(MSG1));
    c.ok("QUIT");
}

#[test]
fn multi_megabyte_message_with_dot_lines() {
    let s = TestServer::start();
    let mut msg = b"From: big@example.org\nSubject: big\n\n".to_vec();
    let mut i = 0u64;
    while msg.len() < 6 * 1024 * 1024 {
        let line = match i % 4 {
            0 => format!(".dot line {i}\n"),
            1 => format!("..double {i}\n"),
            2 => ".\n".to_string(),
            _ => format!("ordinary line {i} {}\n", "x".repeat((i % 97) as usize)),
        };
        msg.extend_from_slice(line.as_bytes());
        i += 1;
    }
    put_message(&s.maildir("alice"), "new", "1700000010.M1P1.big", &msg);
    let expected = crlf(&msg);
    let mut c = s.login("alice", "alice-pw");
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {}\r\n", expected.len()));
    assert_eq!(
        c.cmd("RETR 1"),
        format!("+OK {} octets\r\n", expected.len())
    );
    let got = c.multiline();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "RETR of the big message differs");
    c.ok("TOP 1 3");
    assert_eq!(
        c.multiline_raw(),
        b"From: big@example.org\r\nSubject: big\r\n\r\n..dot line 0\r\n...double 1\r\n..\r\n.\r\n"
    );
    c.ok("QUIT");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let s = alice_server();
    let [a, b, c3] = sizes();
    let mut c = s.connect();
    c.send_raw(
        b"USER alice\r\nPASS alice-pw\r\nSTAT\r\nLIST 1\r\nDELE 1\r\nSTAT\r\nRETR 1\r\nTOP 2 0\r\nRSET\r\nNOOP\r\nQUIT\r\n",
    );
    assert_eq!(c.line(), "+OK Send your password\r\n");
    assert!(c.line().starts_with("+OK Logged in, 3 messages"));
    assert_eq!(c.line(), format!("+OK 3 {}\r\n", a + b + c3));
    assert_eq!(c.line(), format!("+OK 1 {a}\r\n"));
    assert_eq!(c.line(), "+OK Message 1 deleted\r\n");
    assert_eq!(c.line(), format!("+OK 2 {}\r\n", b + c3));
    assert_eq!(c.line(), "-ERR Message already deleted\r\n");
    assert_eq!(c.line(), "+OK Top of message follows\r\n");
    assert_eq!(
        c.multiline_raw(),
        b"From: b@example.org\r\nSubject: two\r\n\r\n.\r\n"
    );
    assert_eq!(
        c.line(),
        format!("+OK 3 messages ({} octets)\r\n", a + b + c3)
    );
    assert_eq!(c.line(), "+OK Still here\r\n");
    assert_eq!(c.line(), "+OK Poplar signing off\r\n");
    assert_eq!(c.rest(), "");
    assert_eq!(
        maildir_files(&s.maildir("alice")).len(),
        3,
        "RSET undid DELE"
    );
}

#[test]
fn every_password_scheme_logs_in_and_wrong_passwords_fail() {
    let s = TestServer::start();
    for (user, pw) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
        ("dave", "dave-pw"),
        ("erin", "erin-pw"),
    ] {
        let mut c = s.connect();
        c.ok(&format!("USER {user}"));
        assert_eq!(
            c.cmd(&format!("PASS {pw}x")),
            "-ERR [AUTH] Authentication failed\r\n",
            "{user} wrong password"
        );
        c.ok(&format!("USER {user}"));
        let r = c.cmd(&format!("PASS {pw}"));
        assert!(r.starts_with("+OK Logged in, 0 messages"), "{user}: {r}");
        c.ok("QUIT");
    }
}

#[test]
fn sasl_plain_login_and_apop() {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let s = alice_server();

    // AUTH PLAIN with an initial response.
    let mut c = s.connect();
    let r = c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice\0alice-pw")));
    assert!(r.starts_with("+OK Logged in, 3 messages"), "{r}");
    c.ok("QUIT");

    // AUTH PLAIN with a continuation, wrong password.
    let mut c = s.connect();
    assert_eq!(c.cmd("AUTH PLAIN"), "+ \r\n");
    assert_eq!(
        c.cmd(&b64(b"\0alice\0nope")),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    // Authorization identity other than the user: refused.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"frank\0alice\0alice-pw"))),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    // AUTH LOGIN.
    assert_eq!(c.cmd("AUTH LOGIN"), "+ VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd(&b64(b"bob")), "+ UGFzc3dvcmQ6\r\n");
    assert!(c.cmd(&b64(b"bob-pw")).starts_with("+OK Logged in"));
    c.ok("QUIT");

    // Cancel and garbage.
    let mut c = s.connect();
    assert_eq!(c.cmd("AUTH LOGIN"), "+ VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd("*"), "-ERR Authentication cancelled\r\n");
    assert_eq!(c.cmd("AUTH PLAIN"), "+ \r\n");
    assert_eq!(
        c.cmd("%%%"),
        "-ERR Invalid base64 in authentication response\r\n"
    );
    c.send("AUTH");
    assert_eq!(c.line(), "+OK Supported mechanisms follow\r\n");
    assert_eq!(c.multiline_raw(), b"PLAIN\r\nLOGIN\r\n.\r\n");

    // APOP: the host computes MD5(timestamp + secret); alice's secret is
    // stored in clear, bob's only as a hash.
    let mut c = Client::plain(s.plain);
    let greeting = c.line();
    let stamp = &greeting[greeting.find('<').unwrap()..=greeting.find('>').unwrap()];
    let digest = |pw: &str| {
        use md5::Digest;
        hex::encode(md5::Md5::digest(format!("{stamp}{pw}").as_bytes()))
    };
    assert_eq!(
        c.cmd(&format!("APOP alice {}", digest("wrong"))),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    assert_eq!(
        c.cmd(&format!("APOP bob {}", digest("bob-pw"))),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    let r = c.cmd(&format!("APOP alice {}", digest("alice-pw")));
    assert!(r.starts_with("+OK Logged in, 3 messages"), "{r}");
    c.ok("QUIT");
}

#[test]
fn plaintext_login_refused_before_tls_when_configured() {
    let s = alice_server_with(Options {
        plaintext_auth: "tls-only",
        ..Options::default()
    });
    let mut c = s.connect();
    assert!(
        c.cmd("USER alice")
            .starts_with("-ERR [AUTH] Plaintext authentication disallowed")
    );
    assert!(
        c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXB3")
            .starts_with("-ERR [AUTH] Plaintext")
    );
    c.send("CAPA");
    let caps = String::from_utf8(c.multiline_raw()).unwrap();
    assert!(!caps.contains("USER") && !caps.contains("SASL"), "{caps}");
    assert!(caps.contains("STLS"));
    c.ok("STLS");
    let mut c = c.start_tls(&s.cert_path());
    c.ok("USER alice");
    assert!(c.cmd("PASS alice-pw").starts_with("+OK Logged in"));
    c.ok("QUIT");
}

/// A listener on `[::]` (the packaged configuration's) also serves IPv4
/// clients, as IPv4-mapped addresses: 127.0.0.1 must still count as
/// loopback for "tls-or-loopback".
#[test]
fn ipv4_loopback_on_a_dual_stack_listener_may_log_in_without_tls() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = alice_server_with(Options {
        extra: format!("[[listener]]\naddress = \"[::]:{port}\"\n"),
        ..Options::default()
    });
    for host in ["127.0.0.1", "[::1]"] {
        let mut c = Client::plain(format!("{host}:{port}").parse().unwrap());
        assert!(c.line().starts_with("+OK "));
        c.ok("USER alice");
        let r = c.cmd("PASS alice-pw");
        assert!(r.starts_with("+OK Logged in"), "{host}: {r}");
        c.ok("QUIT");
    }
}

#[test]
fn capa_advertises_login_delay_and_expire_from_config() {
    let s = TestServer::start_with(Options {
        extra_pop3: "login_delay = 900\nexpire = \"NEVER\"".into(),
        ..Options::default()
    });
    let mut c = s.connect();
    c.send("CAPA");
    let caps = String::from_utf8(c.multiline_raw()).unwrap();
    assert!(caps.contains("\r\nLOGIN-DELAY 900\r\n"), "{caps}");
    assert!(caps.contains("\r\nEXPIRE NEVER\r\n"), "{caps}");
}

#[test]
fn uidls_are_stable_across_restarts_and_deliveries() {
    let s = alice_server();
    s.deliver("alice", b"Subject: delivered\n\nby poplar deliver\n");
    let uidl = |s: &TestServer| {
        let mut c = s.login("alice", "alice-pw");
        c.ok("UIDL");
        let u = c.multiline_raw();
        c.ok("QUIT");
        u
    };
    let before = uidl(&s);
    assert_eq!(
        String::from_utf8_lossy(&before).lines().count(),
        5,
        "4 messages + dot"
    );
    // Mark a message seen the way an IMAP server would (rename into cur/
    // with flags): its UIDL must not change.
    let md = s.maildir("alice");
    std::fs::rename(
        md.join("new/1700000002.M2P2.test"),
        md.join("cur/1700000002.M2P2.test:2,S"),
    )
    .unwrap();
    let dir = s.stop();
    let s = TestServer::start_in(dir, Options::default());
    assert_eq!(uidl(&s), before);
}

#[test]
fn delivered_message_is_fetched_byte_exact() {
    let s = TestServer::start();
    let msg = b"From: x@example.org\r\nSubject: via deliver\r\n\r\n.dot\r\nbody\r\n";
    s.deliver("frank", msg);
    // Delivery prepends the envelope fields.
    let mut stored = b"Return-Path: <>\r\nDelivered-To: frank\r\n".to_vec();
    stored.extend_from_slice(msg);
    let mut c = s.login("frank", "frank-pw");
    assert_eq!(c.cmd("STAT"), format!("+OK 1 {}\r\n", stored.len()));
    c.ok("RETR 1");
    assert_eq!(c.multiline(), stored);
    c.ok("QUIT");
    // Stored with LF line endings (`delivery.line_endings = "lf"`): S= is
    // the stored size, W= the size POP3 reports.
    let files = maildir_files(&s.maildir("frank"));
    assert_eq!(files.len(), 1);
    let lf = String::from_utf8(stored.clone())
        .unwrap()
        .replace("\r\n", "\n");
    let on_disk = std::fs::read(s.maildir("frank").join(&files[0])).unwrap();
    assert_eq!(on_disk, lf.as_bytes());
    assert!(files[0].starts_with("new/"), "{}", files[0]);
    assert!(
        files[0].contains(&format!(",S={},W={}", lf.len(), stored.len())),
        "{}",
        files[0]
    );
}

#[test]
fn storage_failure_gives_sys_temp_and_server_keeps_serving() {
    let s = alice_server();
    // frank's maildrop path is a plain file: the storage plugin cannot list it.
    std::fs::write(s.maildir("frank"), b"not a directory").unwrap();
    let mut c = s.connect();
    c.ok("USER frank");
    let r = c.cmd("PASS frank-pw");
    assert!(r.starts_with("-ERR [SYS/"), "{r}");
    s.wait_for_log("cannot open mailbox");
    // Still in AUTHORIZATION, and other users are served.
    c.ok("USER alice");
    assert!(c.cmd("PASS alice-pw").starts_with("+OK Logged in"));
    c.ok("QUIT");
}

#[test]
fn unreadable_passwd_file_gives_sys_temp() {
    let s = alice_server();
    std::fs::remove_file(s.dir.path().join("etc/passwd")).unwrap();
    let mut c = s.connect();
    c.ok("USER alice");
    assert_eq!(
        c.cmd("PASS alice-pw"),
        "-ERR [SYS/TEMP] Authentication is temporarily unavailable, try again later\r\n"
    );
}

#[test]
fn pre_login_autologout() {
    let s = TestServer::start_with(Options {
        auth_timeout_secs: 1,
        ..Options::default()
    });
    let mut c = s.connect();
    // Say nothing: the server ends the session on its own.
    assert_eq!(c.line(), "-ERR Autologout: idle for too long\r\n");
    assert_eq!(c.rest(), "");
}

#[test]
fn dovecot_uidl_mode_matches_dovecot_uidlist() {
    let s = alice_server_with(Options {
        storage_config: "uidl = \"dovecot\"".into(),
        ..Options::default()
    });
    // As Dovecot leaves it: UIDVALIDITY 1234567890 (0x499602d2); message 3
    // was migrated from another server and keeps its old UIDL (P field).
    std::fs::write(
        s.maildir("alice").join("dovecot-uidlist"),
        "3 V1234567890 N4 G3085f01b7f11094c501100008c4a11c1\n\
         1 :1700000001.M1P1.test\n\
         2 W200 :1700000002.M2P2.test\n\
         3 Pold-server-uidl-77 :1700000003.M3P3.test\n",
    )
    .unwrap();
    let mut c = s.login("alice", "alice-pw");
    c.ok("UIDL");
    assert_eq!(
        String::from_utf8(c.multiline_raw()).unwrap(),
        "1 00000001499602d2\r\n2 00000002499602d2\r\n3 old-server-uidl-77\r\n.\r\n"
    );
    c.ok("QUIT");
}

#[test]
fn login_delay_is_enforced() {
    let s = alice_server_with(Options {
        extra_pop3: "login_delay = 900".into(),
        ..Options::default()
    });
    let mut c = s.login("alice", "alice-pw");
    c.ok("QUIT");
    let mut again = s.connect();
    again.ok("USER alice");
    assert_eq!(
        again.cmd("PASS alice-pw"),
        "-ERR [LOGIN-DELAY] Logged in too recently, try again later\r\n"
    );
    // Other users are not affected.
    again.ok("USER bob");
    assert!(again.cmd("PASS bob-pw").starts_with("+OK"));
}

#[test]
fn per_address_connection_cap() {
    let s = TestServer::start_with(Options {
        trust_loopback: false,
        server: "max_connections_per_ip = 2\nfailed_login_delay_ms = 0".into(),
        ..Options::default()
    });
    let _a = s.connect();
    let _b = s.connect();
    let mut c = Client::plain(s.plain);
    assert_eq!(
        c.line(),
        "-ERR [SYS/TEMP] Too many connections from your address\r\n"
    );
    assert_eq!(c.rest(), "");
    drop(_a);
    // Once one closes, a new connection is served again.
    let mut d = loop {
        let mut d = Client::plain(s.plain);
        if d.line().starts_with("+OK") {
            break d;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    d.ok("CAPA");
}

#[test]
fn failed_login_penalty_grows_and_resets() {
    let s = TestServer::start_with(Options {
        trust_loopback: false,
        server: "failed_login_delay_ms = 100".into(),
        ..Options::default()
    });
    let mut c = s.connect();
    for _ in 0..3 {
        c.ok("USER alice");
        assert_eq!(c.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed\r\n");
    }
    // The answers were held back 100, 200, then 400 ms.
    s.wait_for_log("penalty_ms=400");
    assert!(s.log().contains("penalty_ms=100") && s.log().contains("penalty_ms=200"));
    // A successful login clears it: the next failure starts again at 100.
    c.ok("USER alice");
    assert!(c.cmd("PASS alice-pw").starts_with("+OK"));
    c.ok("QUIT");
    let mut c = s.connect();
    c.ok("USER bob");
    assert!(c.cmd("PASS nope").starts_with("-ERR [AUTH]"));
    let mut log = s.log();
    for _ in 0..200 {
        if log.matches("penalty_ms=").count() == 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = s.log();
    }
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("penalty_ms="))
        .unwrap();
    assert!(last.contains("penalty_ms=100"), "{last}");
}
