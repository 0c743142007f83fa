//! Running as a service: SIGTERM drains sessions without applying half an
//! UPDATE, and systemd's notify protocol reports READY/RELOADING/STOPPING.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::harness::{Client, Options, TestServer, maildir_files, put_message};

#[test]
fn sigterm_tells_idle_sessions_and_deletes_nothing() {
    let mut s = TestServer::start();
    put_message(
        &s.maildir("alice"),
        "new",
        "1700000001.M1P1.t",
        b"Subject: a\n\nx\n",
    );
    let mut before_login = Client::plain(s.plain);
    before_login.line();
    let mut logged_in = s.login("alice", "alice-pw");
    logged_in.ok("DELE 1");
    s.signal("TERM");
    for c in [&mut before_login, &mut logged_in] {
        assert_eq!(c.line(), "-ERR [SYS/TEMP] Server shutting down\r\n");
        assert_eq!(c.rest(), "");
    }
    assert!(s.wait_for_exit().success());
    assert_eq!(
        maildir_files(&s.maildir("alice")),
        vec!["new/1700000001.M1P1.t".to_string()],
        "a session ended by shutdown does not enter UPDATE"
    );
    s.wait_for_log("all sessions ended");
}

#[test]
fn sd_notify_ready_reloading_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut s = TestServer::start_with(Options {
        env: vec![("NOTIFY_SOCKET".into(), path.display().to_string())],
        ..Options::default()
    });
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    assert_eq!(recv(), "READY=1\nSTATUS=Serving POP3");
    s.signal("HUP");
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(recv(), "READY=1\nSTATUS=Serving POP3");
    s.signal("TERM");
    assert_eq!(recv(), "STOPPING=1\nSTATUS=Shutting down");
    assert!(s.wait_for_exit().success());
}
