//! RFC 6856 end to end, as raw transcripts: `UTF8` and `UTF8 USER` in CAPA,
//! the `UTF8` command, `LANG` (listing, selection by RFC 4647 lookup,
//! `i-default`, `*`), UTF-8 user names and passwords (Net-Unicode for
//! USER/PASS, SASLprep for SASL, with mpop and curl too), and messages with
//! UTF-8 header fields: as stored to a client in UTF-8 mode, downgraded
//! (RFC 6857) to one that is not.
//!
//! What each bad input gets:
//! - `UTF8` after login: `-ERR UTF8 is only valid before login`;
//! - `LANG` with a language not on offer: `-ERR` (the language stays);
//! - a SASL name or password with a character SASLprep prohibits:
//!   `-ERR [AUTH] User name or password has characters SASLprep does not
//!   allow`, before the auth plugin is asked;
//! - bytes that are not UTF-8 in a command: `-ERR Invalid character in
//!   command`.

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::clients::{curl, path_str, require, run, write_private};
use crate::harness::{Options, PASSWD, TestServer, crlf, put_message};

/// jörg's password hash, made with `openssl passwd -6 -salt saltsalt 'grün'`
/// (the password in NFC, as it is typed).
const JOERG: &str = "jörg:{SHA512-CRYPT}$6$saltsalt$rpNkq7Sua6DwuHZnlFfghVE6NFsx1XUa0obJiNXPuue0etyJPh.hdMPp9wzpGbYi0XPm4.B6Kui4ba6tmXW881";

/// zoë's password in clear, with a soft hyphen SASLprep removes: SCRAM
/// works with what the client types ("pässwort"), as the server SASLpreps
/// a clear-text secret before it derives the verifier.
const ZOE: &str = "zoë:{PLAIN}p\u{ad}ässwort";

/// A message whose header fields carry UTF-8 (RFC 6532).
const INTL: &str = "From: \"Jörg Müller\" <joerg@bücher.example>\n\
To: 用户@例子.广告\n\
Subject: Grüße aus Köln\n\
Message-ID: <ü@example.org>\n\
\n\
Grüße, Jörg\n";

/// The same header as a client not in UTF-8 mode gets it (RFC 6857),
/// written out by hand.
const INTL_DOWNGRADED: &str = "From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@xn--bcher-kva.example>\r\n\
To: =?UTF-8?B?55So5oi3QOS+i+WtkC7lub/lkYo=?= :;\r\n\
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus =?UTF-8?Q?K=C3=B6ln?=\r\n\
Downgraded-Message-Id: =?UTF-8?Q?=3C=C3=BC=40example=2Eorg=3E?=\r\n\
\r\n\
Grüße, Jörg\r\n";

/// A server that knows jörg (a UTF-8 name, a hash of a UTF-8 password)
/// with INTL in his mailbox, zoë (a clear-text UTF-8 password) and alice,
/// with a message each.
fn server(opts: Options) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        format!("{PASSWD}{JOERG}\n{ZOE}\n"),
    )
    .unwrap();
    let md = dir.path().join("mail").join("jörg");
    put_message(&md, "new", "1700000001.M1P1.test", INTL.as_bytes());
    let md = dir.path().join("mail").join("zoë");
    put_message(&md, "new", "1700000003.M3P3.test", b"Subject: hi\n\nzoe\n");
    let md = dir.path().join("mail").join("alice");
    put_message(
        &md,
        "new",
        "1700000002.M2P2.test",
        b"Subject: hi\n\nhello\n",
    );
    TestServer::start_in(dir, opts)
}

fn capa(c: &mut crate::harness::Client) -> String {
    c.ok("CAPA");
    String::from_utf8(c.multiline_raw()).unwrap()
}

#[test]
fn capa_announces_utf8_and_lang() {
    let s = server(Options::default());
    let mut c = s.connect();
    let caps = capa(&mut c);
    assert!(caps.contains("\r\nUTF8 USER\r\n"), "{caps}");
    assert!(caps.contains("\r\nLANG\r\n"), "{caps}");
    c.ok("USER alice");
    c.ok("PASS alice-pw");
    // After login USER is gone, and with it UTF8's USER argument.
    let caps = capa(&mut c);
    assert!(
        caps.contains("\r\nUTF8\r\n") && caps.contains("\r\nLANG\r\n"),
        "{caps}"
    );
    drop(c);
    // Where USER is refused before TLS, so is the USER argument.
    let s = server(Options {
        plaintext_auth: "tls-only",
        ..Options::default()
    });
    let caps = capa(&mut s.connect());
    assert!(
        caps.contains("\r\nUTF8\r\n") && !caps.contains("USER"),
        "{caps}"
    );
}

#[test]
fn utf8_command_before_login_only() {
    let s = server(Options::default());
    let mut c = s.connect();
    assert_eq!(c.cmd("UTF8"), "+OK UTF-8 mode on\r\n");
    assert_eq!(c.cmd("utf8"), "+OK UTF-8 mode on\r\n");
    c.ok("USER alice");
    c.ok("PASS alice-pw");
    assert_eq!(c.cmd("UTF8"), "-ERR UTF8 is only valid before login\r\n");
    assert_eq!(c.cmd("UTF8 x"), "-ERR Too many arguments\r\n");
}

#[test]
fn lang_lists_selects_and_translates() {
    let s = server(Options::default());
    let mut c = s.connect();
    assert_eq!(c.cmd("LANG"), "+OK Language listing follows\r\n");
    assert_eq!(
        c.multiline_raw(),
        b"en English\r\nde Deutsch\r\ni-default Default language\r\n.\r\n"
    );
    // RFC 4647 lookup: de-AT-1996 falls back to de.
    assert_eq!(c.cmd("LANG de-AT-1996"), "+OK de Sprache gewechselt\r\n");
    // Without UTF8 the text is ASCII: umlauts spelt out.
    assert_eq!(
        c.cmd("STAT"),
        "-ERR Befehl erst nach der Anmeldung erlaubt\r\n"
    );
    assert_eq!(c.cmd("CAPA"), "+OK Liste der Faehigkeiten folgt\r\n");
    c.multiline_raw();
    assert_eq!(
        c.cmd("LANG fr"),
        "-ERR Diese Sprache gibt es nicht; LANG allein listet alle\r\n"
    );
    assert_eq!(c.cmd("USER alice"), "+OK Bitte das Passwort senden\r\n");
    assert_eq!(
        c.cmd("PASS wrong"),
        "-ERR [AUTH] Anmeldung fehlgeschlagen\r\n"
    );
    // In UTF-8 mode the real letters, as UTF-8 on the wire.
    assert_eq!(c.cmd("UTF8"), "+OK UTF-8-Modus an\r\n");
    c.send("CAPA");
    assert_eq!(
        c.line_bytes(),
        "+OK Liste der Fähigkeiten folgt\r\n".as_bytes()
    );
    c.multiline_raw();
    assert_eq!(
        c.cmd("LANG i-default"),
        "+OK i-default Language changed\r\n"
    );
    assert_eq!(c.cmd("LANG de"), "+OK de Sprache gewechselt\r\n");
    assert_eq!(c.cmd("LANG *"), "+OK en Language changed\r\n");
    // Valid after login too; numbers and response codes stay.
    assert_eq!(c.cmd("USER alice"), "+OK Send your password\r\n");
    let size = crlf(b"Subject: hi\n\nhello\n").len();
    assert_eq!(
        c.cmd("PASS alice-pw"),
        format!("+OK Logged in, 1 messages ({size} octets)\r\n")
    );
    assert_eq!(c.cmd("LANG de"), "+OK de Sprache gewechselt\r\n");
    assert_eq!(
        c.cmd("LIST"),
        format!("+OK 1 Nachrichten ({size} Oktette)\r\n")
    );
    c.multiline_raw();
    assert_eq!(c.cmd("RETR 2"), "-ERR Keine solche Nachricht\r\n");
    assert_eq!(c.cmd("QUIT"), "+OK Poplar verabschiedet sich\r\n");
}

#[test]
fn utf8_user_names_and_passwords() {
    let s = server(Options {
        extra_pop3: r#"sasl_mechanisms = ["PLAIN", "LOGIN", "SCRAM-SHA-256"]"#.into(),
        ..Options::default()
    });
    // USER/PASS: typed decomposed (o + U+0308), normalised to NFC.
    let mut c = s.connect();
    assert_eq!(c.cmd("USER jo\u{308}rg"), "+OK Send your password\r\n");
    assert!(
        c.cmd("PASS gru\u{308}n")
            .starts_with("+OK Logged in, 1 messages")
    );
    c.ok("QUIT");
    // SASL PLAIN: SASLprep drops the soft hyphen.
    let mut c = s.connect();
    let ir = B64.encode("\0jörg\0gr\u{ad}ün");
    assert!(
        c.cmd(&format!("AUTH PLAIN {ir}"))
            .starts_with("+OK Logged in, 1 messages")
    );
    c.ok("QUIT");
    // A private-use character is prohibited: refused before the plugin.
    let mut c = s.connect();
    let ir = B64.encode("\0jörg\0\u{e000}");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {ir}")),
        "-ERR [AUTH] User name or password has characters SASLprep does not allow\r\n"
    );
    // Bytes that are not UTF-8 are no name.
    c.send_raw(b"USER j\xf6rg\r\n");
    assert_eq!(c.line(), "-ERR Invalid character in command\r\n");
    drop(c);
    s.wait_for_log(" user=jörg mechanism=PLAIN ");

    // Real clients: curl (PLAIN) and mpop (GNU SASL, SCRAM-SHA-256, which
    // SASLpreps the name and the password it hashes).
    let r = curl(
        "curl as jörg",
        &[
            "-u".into(),
            "jörg:grün".into(),
            format!("pop3://127.0.0.1:{}/1", s.plain.port()),
        ],
    );
    r.assert_success();
    // curl un-dot-stuffs; no UTF8, so the header is downgraded.
    assert_eq!(r.stdout(), INTL_DOWNGRADED);
    let r = crate::sasl::mpop(&s, "zoë", "scram-sha-256", "pässwort", false);
    assert_eq!(r.code(), Some(0), "{}\n{}", r.output(), s.log());
    s.wait_for_log(" user=zoë mechanism=SCRAM-SHA-256 ");
}

#[test]
fn utf8_headers_as_stored_in_utf8_mode_downgraded_otherwise() {
    let s = server(Options::default());
    let listed = crlf(INTL.as_bytes()).len();
    let sent = INTL_DOWNGRADED.len();
    // Not in UTF-8 mode: the header downgraded; RETR states what it sends,
    // LIST what is stored.
    let mut c = s.connect();
    c.ok("USER jörg");
    c.ok("PASS grün");
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {listed}\r\n"));
    assert_eq!(c.cmd("RETR 1"), format!("+OK {sent} octets\r\n"));
    assert_eq!(c.multiline(), INTL_DOWNGRADED.as_bytes());
    assert_eq!(c.cmd("TOP 1 0"), "+OK Top of message follows\r\n");
    let top = c.multiline();
    assert_eq!(
        top,
        INTL_DOWNGRADED.as_bytes()[..INTL_DOWNGRADED.find("\r\n\r\n").unwrap() + 4]
    );
    assert!(top.is_ascii());
    c.ok("QUIT");
    // In UTF-8 mode: exactly as stored.
    let mut c = s.connect();
    c.ok("UTF8");
    c.ok("USER jörg");
    c.ok("PASS grün");
    assert_eq!(c.cmd("RETR 1"), format!("+OK {listed} octets\r\n"));
    assert_eq!(c.multiline(), crlf(INTL.as_bytes()));
    c.ok("QUIT");
    // The mailbox is untouched.
    assert_eq!(
        std::fs::read(s.maildir("jörg").join("new/1700000001.M1P1.test")).unwrap(),
        INTL.as_bytes()
    );
}

/// A Python poplib client that does not know UTF8 gets the downgraded
/// header; after `utf8()` (poplib's RFC 6856 support) it gets the message
/// as stored.
#[test]
fn poplib_with_and_without_utf8() {
    require("python3", "python3");
    let s = server(Options::default());
    let script = r#"
import poplib, sys
port = int(sys.argv[1])
for utf8 in (False, True):
    pop = poplib.POP3("127.0.0.1", port, timeout=60)
    if utf8:
        print("utf8", pop.utf8().decode())
    pop.user("jörg")
    pop.pass_("grün")
    resp, lines, octets = pop.retr(1)
    print(resp.decode(), octets, "\\n".join(l.decode("utf-8") for l in lines).encode("unicode_escape").decode())
    pop.quit()
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("utf8.py");
    write_private(&path, script);
    let r = run(
        "python3 poplib utf8",
        Command::new("python3")
            .arg(path_str(&path))
            .arg(s.plain.port().to_string())
            .env("PYTHONIOENCODING", "utf-8"),
        b"",
    );
    r.assert_success();
    let out = r.stdout();
    let lines: Vec<&str> = out.lines().collect();
    let sent = INTL_DOWNGRADED.len();
    assert!(
        lines[0].starts_with(&format!(
            "+OK {sent} octets {sent} From: =?UTF-8?Q?J=C3=B6rg"
        )),
        "{out}"
    );
    assert_eq!(lines[1], "utf8 +OK UTF-8 mode on", "{out}");
    let listed = crlf(INTL.as_bytes()).len();
    assert!(
        lines[2].starts_with(&format!(
            "+OK {listed} octets {listed} From: \"J\\xf6rg M\\xfcller\""
        )),
        "{out}"
    );
}
