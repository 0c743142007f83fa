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

/// `GET path` on the admin listener; returns (status line, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn prometheus_metrics_count_sessions_logins_commands_plugins_and_deliveries() {
    let s = TestServer::start_with(Options {
        extra: "[admin]\nlisten = \"127.0.0.1:0\"\n\
                [lmtp]\nlisten = [\"127.0.0.1:0\"]\n"
            .into(),
        ..Options::default()
    });
    put_message(
        &s.maildir("alice"),
        "new",
        "1700000001.M1P1.t",
        b"Subject: a\n\nx\n",
    );
    let mut c = s.login("alice", "alice-pw");
    c.ok("STAT");
    c.ok("RETR 1");
    c.multiline_raw();
    c.ok("QUIT");
    let mut bad = s.connect();
    bad.ok("USER alice");
    assert!(bad.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    drop(bad);
    s.deliver("bob", b"Subject: d\n\nbody\n");
    s.wait_for_log("user=alice");
    // The dropped connection's session line may still be on its way.
    s.wait_for_log("end=ClientClosed");

    let admin = s.admin.expect("the admin listener");
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for line in [
        "poplar_sessions_total{outcome=\"quit\"} 1",
        "poplar_sessions_total{outcome=\"client-closed\"} 1",
        "poplar_logins_total{result=\"ok\"} 1",
        "poplar_logins_total{result=\"failed\"} 1",
        "poplar_commands_total{command=\"RETR\"} 1",
        "poplar_commands_total{command=\"PASS\"} 2",
        "poplar_connections_total 2",
    ] {
        assert!(body.lines().any(|l| l == line), "{line:?} not in:\n{body}");
    }
    for prefix in [
        "poplar_plugin_call_duration_seconds_count{plugin=\"auth\",operation=\"verify\"} ",
        "poplar_plugin_call_duration_seconds_count{plugin=\"storage\",operation=\"read\"} ",
        "poplar_plugin_call_duration_seconds_bucket{plugin=\"storage\",operation=\"list-messages\",le=\"+Inf\"} ",
        "poplar_bytes_sent_total ",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(prefix)),
            "{prefix:?} not in:\n{body}"
        );
    }
    // `poplar deliver` is a separate process: an LMTP delivery is what the
    // server counts.
    let mut lmtp = crate::delivery::lmtp_tcp(&s);
    lmtp.send_mail("a@b", &["bob@x"], "Subject: m\n\nx");
    let (_, body) = http_get(admin, "/metrics");
    assert!(
        body.contains("poplar_deliveries_total{verdict=\"stored\"} 1\n"),
        "{body}"
    );
    assert_eq!(
        http_get(admin, "/health"),
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert_eq!(http_get(admin, "/nope").0, "HTTP/1.1 404 Not Found");
}
