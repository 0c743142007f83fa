//! The maildrop lease across nodes: two `poplar serve` processes (nodes `a`
//! and `b`, as two front-ends on one NFS mount would be) serve the same
//! Maildir root. One session per maildrop holds across them (`[IN-USE]`);
//! a killed node's lease expires after the TTL, but the same node started
//! again takes its own lease back at once; a node stopped past its lease
//! cannot commit (fencing); `poplar mailbox expunge` respects the lease;
//! one MTA retry of the same message stores it once.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Options, POPLAR, TestServer, maildir_files, put_message};

/// The lease TTL of these tests, in seconds.
const TTL: u64 = 3;

fn options() -> Options {
    Options {
        server: format!("lease_ttl_secs = {TTL}"),
        ..Options::default()
    }
}

/// Node `a` on a fresh folder with two messages for alice.
fn node_a() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail/alice");
    put_message(
        &maildir,
        "cur",
        "1700000001.M1P1.host:2,S",
        b"Subject: one\n\nfirst\n",
    );
    put_message(
        &maildir,
        "cur",
        "1700000002.M1P1.host:2,S",
        b"Subject: two\n\nsecond\n",
    );
    let mut opts = options();
    opts.env.push(("POPLAR_NODE".into(), "a".into()));
    TestServer::start_in(dir, opts)
}

/// Another node on the same folder and configuration file as `of`.
fn node_on(of: &TestServer, node: &str) -> TestServer {
    let mut command = Command::new(POPLAR);
    command
        .args(["serve", "--config"])
        .arg(of.dir.path().join("poplar.toml"))
        .env("POPLAR_NODE", node);
    TestServer::launch(tempfile::tempdir().unwrap(), command)
}

/// Logs alice in on `node` and, if that works, QUITs at once (so the lease
/// is released before this returns); the first line of the answer to PASS.
fn try_login(node: &TestServer) -> String {
    let mut c = node.connect();
    c.ok("USER alice");
    let r = c.cmd("PASS alice-pw");
    if r.starts_with("+OK") {
        c.ok("QUIT");
    }
    r
}

/// Tries to log in until it works (at most 30 s); how many refusals came
/// first, each of which must have been `[IN-USE]`.
fn login_when_free(node: &TestServer) -> usize {
    for refused in 0..300 {
        let r = try_login(node);
        if r.starts_with("+OK") {
            return refused;
        }
        assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the maildrop never became free")
}

#[test]
fn one_session_per_maildrop_across_nodes() {
    let a = node_a();
    let b = node_on(&a, "b");
    let mut first = a.login("alice", "alice-pw");
    let r = try_login(&b);
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    b.wait_for_log("login refused: maildrop in use");
    // A second session on the same node is refused too.
    assert!(try_login(&a).starts_with("-ERR [IN-USE]"));
    // Other users are not affected.
    let mut bob = b.login("bob", "bob-pw");
    bob.ok("QUIT");
    // QUIT releases the lease before its answer: b logs in at once.
    first.ok("QUIT");
    let mut second = b.login("alice", "alice-pw");
    assert!(second.ok("STAT").starts_with("+OK 2 "));
    second.ok("QUIT");
}

#[test]
fn a_killed_nodes_lease_expires_and_a_restarted_node_takes_its_own_back() {
    let a = node_a();
    let b = node_on(&a, "b");
    let mut held = a.login("alice", "alice-pw");
    held.ok("DELE 1");
    // Node a dies with the session open: nothing is deleted.
    let dir = a.stop();
    assert_eq!(maildir_files(&dir.path().join("mail/alice")).len(), 2);
    // Node b must wait for the lease to expire: it is refused at first.
    let r = try_login(&b);
    assert!(r.starts_with("-ERR [IN-USE]"), "{r}");
    // Node a, started again, is the same node with a new incarnation: it
    // takes its own lease back at once.
    let mut opts = options();
    opts.env.push(("POPLAR_NODE".into(), "a".into()));
    let a = TestServer::start_in(dir, opts);
    let mut again = a.login("alice", "alice-pw");
    assert!(again.ok("STAT").starts_with("+OK 2 "));
    again.ok("QUIT");
    // Now kill a with a session open, and let b wait out the TTL.
    let _held = a.login("alice", "alice-pw");
    let dir = a.stop();
    let refused = login_when_free(&b);
    assert!(refused > 0, "b logged in before a's lease expired");
    assert_eq!(maildir_files(&dir.path().join("mail/alice")).len(), 2);
}

#[test]
fn a_node_stopped_past_its_lease_cannot_commit() {
    let a = node_a();
    let b = node_on(&a, "b");
    let mut held = a.login("alice", "alice-pw");
    held.ok("DELE 1");
    held.ok("DELE 2");
    a.signal("STOP");
    // While a is frozen its lease runs out and b takes the maildrop.
    let refused = login_when_free(&b);
    assert!(refused > 0, "b logged in while a's lease was still valid");
    // b's session ended with its QUIT; then a wakes up and its client says
    // QUIT.
    a.signal("CONT");
    let r = held.cmd("QUIT");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert_eq!(
        maildir_files(&a.maildir("alice")).len(),
        2,
        "nothing deleted"
    );
    a.wait_for_log("maildrop lease was lost");
    // And alice can log in again afterwards (on either node).
    let mut after = a.login("alice", "alice-pw");
    assert!(after.ok("STAT").starts_with("+OK 2 "));
    after.ok("QUIT");
}

#[test]
fn mailbox_expunge_waits_for_the_lease() {
    let a = node_a();
    let mut session = a.login("alice", "alice-pw");
    let expunge = || {
        Command::new(POPLAR)
            .args(["mailbox", "expunge", "alice", "--all", "-c"])
            .arg(a.dir.path().join("poplar.toml"))
            .output()
            .unwrap()
    };
    let out = expunge();
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by session a/"), "{err}");
    assert_eq!(maildir_files(&a.maildir("alice")).len(), 2);
    // The session still works and sees everything.
    assert!(session.ok("STAT").starts_with("+OK 2 "));
    session.ok("QUIT");
    let out = expunge();
    assert!(out.status.success(), "{out:?}");
    assert!(maildir_files(&a.maildir("alice")).is_empty());
}

/// An MTA that retries a delivery whose answer it lost stores the message
/// once: the delivery id (message, principal, folder) is the same.
#[test]
fn the_same_delivery_twice_stores_one_message() {
    let a = node_a();
    let message = b"From: x@example.org\nSubject: retry\nMessage-ID: <r@x>\n\nonce\n";
    a.deliver("bob", message);
    a.deliver("bob", message);
    assert_eq!(maildir_files(&a.maildir("bob")).len(), 1);
    // Another folder is another delivery.
    let mut child = Command::new(POPLAR)
        .args([
            "deliver", "--user", "bob", "--folder", "Archive", "--config",
        ])
        .arg(a.dir.path().join("poplar.toml"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), message).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(maildir_files(&a.maildir("bob").join(".Archive")).len(), 1);
    assert_eq!(maildir_files(&a.maildir("bob")).len(), 1);
}

/// `poplar session list` shows who holds which maildrop on which node;
/// `poplar session kick` ends the session wherever it is, deleting nothing.
#[test]
fn session_list_and_kick() {
    let a = node_a();
    let b = node_on(&a, "b");
    let mut held = b.login("alice", "alice-pw");
    held.ok("DELE 1");
    let poplar = |args: &[&str]| {
        Command::new(POPLAR)
            .args(args)
            .arg("-c")
            .arg(a.dir.path().join("poplar.toml"))
            .output()
            .unwrap()
    };
    let out = poplar(&["session", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sessions = doc["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{doc}");
    assert_eq!(sessions[0]["user"], "alice");
    assert_eq!(sessions[0]["node"], "b");
    assert!(sessions[0]["session"].as_str().unwrap().starts_with("b/"));
    assert!(
        sessions[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let table = String::from_utf8(poplar(&["session", "list"]).stdout).unwrap();
    assert!(
        table.starts_with("USER") && table.contains("alice"),
        "{table}"
    );
    // Kick: the lease is broken; node b ends the session at its next
    // renewal with [SYS/TEMP], and DELE 1 is not applied.
    let out = poplar(&["session", "kick", "alice"]);
    assert!(out.status.success(), "{out:?}");
    let r = held.line();
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    assert_eq!(maildir_files(&a.maildir("alice")).len(), 2);
    b.wait_for_log("maildrop lease was lost");
    let out = poplar(&["session", "kick", "alice"]);
    assert_eq!(out.status.code(), Some(1), "nobody left to kick: {out:?}");
    // alice can log in again at once.
    let mut again = a.login("alice", "alice-pw");
    assert!(again.ok("STAT").starts_with("+OK 2 "));
    again.ok("QUIT");
}
