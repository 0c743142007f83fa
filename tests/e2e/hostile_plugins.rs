//! Hostile auth and storage plugins: each misbehaviour gets a clean,
//! exact answer, the server keeps serving other clients, and no mail is
//! lost or touched outside the mail root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::harness::{
    Client, Options, PASSWD, PLUGIN_DIR, PluginOverride, TestServer, crlf, maildir_files,
    put_message,
};

const AUTH_TEMP: &str =
    "-ERR [SYS/TEMP] Authentication is temporarily unavailable, try again later\r\n";
const AUTH_FAILED: &str = "-ERR [AUTH] Authentication failed\r\n";
const MAILBOX_TEMP: &str =
    "-ERR [SYS/TEMP] Mailbox is temporarily unavailable, try again later\r\n";

/// Alice's Maildir on the hostile-auth servers.
const ALICE_MAIL: [(&str, &str, &[u8]); 2] = [
    (
        "cur",
        "1700000001.M1P1.test:2,S",
        b"Subject: kept 1\n\nfirst\n",
    ),
    (
        "new",
        "1700000002.M2P2.test",
        b"Subject: kept 2\n\nsecond\n",
    ),
];

/// The two messages the hostile storage plugin serves (as sent).
const STORED: [&[u8]; 2] = [
    b"Subject: one\r\nFrom: a@example.org\r\n\r\nThe first message.\r\n",
    b"Subject: two\r\nFrom: b@example.org\r\n\r\nThe second message.\r\n",
];

fn hostile(file: &str, timeout_ms: u64) -> Option<PluginOverride> {
    Some(PluginOverride {
        path: Path::new(PLUGIN_DIR).join(file),
        timeout_ms,
        memory_mb: 32,
    })
}

/// Sends USER/PASS and returns the answer to PASS.
fn try_login(s: &TestServer, user: &str, password: &str) -> String {
    let mut c = s.connect();
    c.ok(&format!("USER {user}"));
    let reply = c.cmd(&format!("PASS {password}"));
    let _ = c.cmd("QUIT");
    reply
}

/// Every file and directory under `root`, relative to it.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out
}

/// A server whose auth plugin is the hostile one (over the real Maildir
/// storage), with two messages for alice (password `ok`).
fn hostile_auth_server(timeout_ms: u64) -> TestServer {
    let s = TestServer::start_with(Options {
        auth_plugin: hostile("hostile_auth.wasm", timeout_ms),
        ..Options::default()
    });
    for (sub, name, content) in ALICE_MAIL {
        put_message(&s.maildir("alice"), sub, name, content);
    }
    s
}

/// Alice logs in, sees both her messages intact, and leaves them there.
fn alice_reads_everything(s: &TestServer) {
    let before = maildir_files(&s.maildir("alice"));
    let mut c = s.login("alice", "ok");
    let total: usize = ALICE_MAIL.iter().map(|m| crlf(m.2).len()).sum();
    assert_eq!(c.cmd("STAT"), format!("+OK 2 {total}\r\n"));
    for (i, (_, _, content)) in ALICE_MAIL.iter().enumerate() {
        c.ok(&format!("RETR {}", i + 1));
        assert_eq!(c.multiline(), crlf(content));
    }
    c.ok("QUIT");
    let after = maildir_files(&s.maildir("alice"));
    assert_eq!(after.len(), 2, "{after:?}");
    // RETR may move new/ to cur/ (seen); nothing is removed.
    let base = |v: &[String]| -> BTreeSet<String> {
        v.iter()
            .map(|f| {
                f.rsplit('/')
                    .next()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(base(&before), base(&after));
}

#[test]
fn hostile_auth_fails_closed() {
    let s = hostile_auth_server(300);
    for user in ["panic", "loop", "alloc", "sleep", "overflow"] {
        let started = std::time::Instant::now();
        assert_eq!(try_login(&s, user, "ok"), AUTH_TEMP, "{user}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{user} took {:?}",
            started.elapsed()
        );
        // Between two bad ones, a normal login still works.
        alice_reads_everything(&s);
    }
    s.wait_for_log("hostile auth panicked on purpose");
    s.wait_for_log("exceeded its 300 ms deadline");
    // A wrong password is still an ordinary failure.
    assert_eq!(try_login(&s, "alice", "nope"), AUTH_FAILED);
}

/// Logs in as `flood` (100000 `host::log` calls of 10 KiB, then deny) on a
/// server with a deadline long enough for the plugin to finish, so its own
/// answer is what the client gets. Returns the answer and the log octets
/// and lines the login produced.
fn flood() -> (String, usize, usize) {
    let s = hostile_auth_server(60_000);
    let before = s.log().len();
    let started = std::time::Instant::now();
    let reply = try_login(&s, "flood", "ok");
    let took = started.elapsed();
    alice_reads_everything(&s);
    let log = s.log();
    let flood = &log[before..];
    let lines = flood.lines().filter(|l| l.contains("xxxxxxxx")).count();
    let longest = flood.lines().map(str::len).max().unwrap_or(0);
    eprintln!(
        "log flood: {} octets, {lines} plugin lines, longest {longest} octets, login took {took:?}",
        flood.len()
    );
    // host::log truncates each line at 2 KiB (plus the log line's prefix).
    assert!(longest < 2048 + 200, "a line of {longest} octets");
    assert!(flood.contains("x [truncated]"));
    (reply, flood.len(), lines)
}

#[test]
fn hostile_auth_log_flood() {
    let (reply, _, _) = flood();
    assert_eq!(reply, AUTH_FAILED);
}

/// The host keeps at most 100 log lines per plugin call, and says once
/// that it dropped the rest: a login that logs 100000 lines of 10 KiB
/// writes a few hundred KiB, not 213 MB.
#[test]
fn hostile_auth_log_flood_is_rate_limited() {
    let (reply, octets, lines) = flood();
    assert_eq!(reply, AUTH_FAILED);
    assert!(lines <= 100, "{lines} plugin lines kept");
    assert!(
        octets < 1 << 20,
        "one login wrote {octets} octets of log in {lines} lines"
    );
}

#[test]
fn hostile_auth_evil_principal_gets_no_access() {
    let s = hostile_auth_server(300);
    let root = s.dir.path().to_path_buf();
    let outside = root.parent().unwrap().join("etc");
    let outside_before = outside.exists().then(|| tree(&outside));
    let before = tree(&root);
    let reply = try_login(&s, "evil-principal", "ok");
    assert!(
        reply.starts_with("-ERR [SYS/PERM] ") || reply.starts_with("-ERR [SYS/TEMP] "),
        "{reply}"
    );
    eprintln!("evil principal got: {reply:?}");
    alice_reads_everything(&s);
    // Nothing was created or removed anywhere in the server's folder
    // (alice's reads may only have moved new/ to cur/).
    let strip = |t: BTreeSet<PathBuf>| -> BTreeSet<PathBuf> {
        t.into_iter()
            .filter(|p| !p.starts_with("mail/alice"))
            .collect()
    };
    assert_eq!(strip(before), strip(tree(&root)));
    assert!(!root.join("etc/cur").exists() && !root.join("etc/new").exists());
    assert_eq!(outside.exists().then(|| tree(&outside)), outside_before);
}

/// A server whose storage plugin is the hostile one; the passwd-file knows
/// the hostile storage's trigger users (password `pw`) and alice.
fn hostile_storage_server() -> TestServer {
    hostile_storage_server_with(Options::default())
}

/// The same, on top of `opts` (for LMTP, quotas).
fn hostile_storage_server_with(opts: Options) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    let mut passwd = PASSWD.to_string();
    for user in [
        "bad-uid",
        "dup-uid",
        "huge-size",
        "panic",
        "loop",
        "short-read",
    ] {
        passwd.push_str(&format!("{user}:{{PLAIN}}pw\n"));
    }
    std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
    TestServer::start_in(
        dir,
        Options {
            storage_plugin: hostile("hostile_storage.wasm", 300),
            ..opts
        },
    )
}

/// A normal user of the hostile storage sees its honest two messages.
fn normal_user_reads_everything(s: &TestServer) {
    let mut c = s.login("alice", "alice-pw");
    let total: usize = STORED.iter().map(|m| m.len()).sum();
    assert_eq!(c.cmd("STAT"), format!("+OK 2 {total}\r\n"));
    c.ok("UIDL");
    assert_eq!(c.multiline(), b"1 uid-one\r\n2 uid-two\r\n");
    for (i, content) in STORED.iter().enumerate() {
        c.ok(&format!("RETR {}", i + 1));
        assert_eq!(c.multiline(), *content);
    }
    c.ok("QUIT");
}

#[test]
fn hostile_storage_bad_listings_are_refused() {
    let s = hostile_storage_server();
    for (user, problem) in [
        (
            "bad-uid",
            r#"entry 1 (key "m1") has an invalid uid "has space" (9 octets)"#.to_string(),
        ),
        (
            "dup-uid",
            r#"entry 2 (key "m2") repeats the uid "uid-one""#.to_string(),
        ),
        (
            "huge-size",
            format!(
                r#"entry 2 (key "m2") claims a size of {} octets for {} stored octets"#,
                u64::MAX,
                STORED[1].len()
            ),
        ),
    ] {
        assert_eq!(try_login(&s, user, "pw"), MAILBOX_TEMP, "{user}");
        let line = s.wait_for_log(&problem);
        assert!(
            line.contains("storage plugin returned a bad listing"),
            "{line}"
        );
        assert!(line.contains("storage"), "{line}");
        normal_user_reads_everything(&s);
    }
    // The refused logins held no lock: the same user is refused again the
    // same way, not told the mailbox is in use.
    assert_eq!(try_login(&s, "dup-uid", "pw"), MAILBOX_TEMP);
}

#[test]
fn hostile_storage_panic_and_loop() {
    let s = hostile_storage_server();
    for user in ["panic", "loop"] {
        assert_eq!(try_login(&s, user, "pw"), MAILBOX_TEMP, "{user}");
        normal_user_reads_everything(&s);
    }
    s.wait_for_log("hostile storage panicked on purpose");
    s.wait_for_log("exceeded its 300 ms deadline");
    // Once more each, to show a failed instance leaves no lock behind.
    for user in ["panic", "loop"] {
        assert_eq!(try_login(&s, user, "pw"), MAILBOX_TEMP, "{user}");
    }
    normal_user_reads_everything(&s);
}

/// The storage lists 1060 octets but `read` ends after 60. A failure
/// after `+OK` cannot be reported in-band: the host sends what it has and
/// closes the connection without the terminating `.`, so the client knows
/// the message is incomplete.
#[test]
fn hostile_storage_short_read() {
    let s = hostile_storage_server();
    let mut c: Client = s.login("short-read", "pw");
    let claimed = STORED[0].len() + 1000;
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {claimed}\r\n"));
    assert_eq!(c.cmd("RETR 1"), format!("+OK {claimed} octets\r\n"));
    // Fewer octets than listed came: the message must not be terminated
    // as if it were complete.
    let mut got = Vec::new();
    loop {
        let line = c.line_bytes();
        assert_ne!(
            line,
            b".\r\n",
            "the short message was terminated: {:?}",
            String::from_utf8_lossy(&got)
        );
        if line.is_empty() {
            break; // EOF: the connection was closed mid-message.
        }
        got.extend_from_slice(&line);
    }
    assert_eq!(got, STORED[0]);
    normal_user_reads_everything(&s);
}

/// The quota check asks the storage for the user's `usage`: a plugin that
/// traps or hangs there tempfails the delivery (the MTA retries) rather than
/// let mail past the quota, and the other recipients are served. The usage
/// it reports is what the quota is checked against.
#[test]
fn hostile_storage_usage_fails_closed() {
    let s = hostile_storage_server_with(crate::delivery::lmtp_config(
        "[quota]\nmessages = 3\n[quota.users.bob]\nmessages = 2\n",
    ));
    let mut lmtp = crate::delivery::lmtp_tcp(&s);
    let replies = lmtp.send_mail(
        "a@example.org",
        &["panic@x", "loop@x", "alice@x", "bob@x"],
        "Subject: q\n\nx",
    );
    assert_eq!(
        replies,
        [
            "451 4.3.0 <panic@x> Mailbox temporarily unavailable\r\n",
            "451 4.3.0 <loop@x> Mailbox temporarily unavailable\r\n",
            "250 2.0.0 <alice@x> Saved\r\n",
            "552 5.2.2 <bob@x> Mailbox full\r\n",
        ]
    );
    s.wait_for_log("hostile storage panicked on purpose");
    s.wait_for_log("exceeded its 300 ms deadline");
    normal_user_reads_everything(&s);
}
