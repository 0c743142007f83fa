//! Running as a service: SIGTERM drains sessions without applying half an
//! UPDATE, systemd's notify protocol reports READY/RELOADING/STOPPING,
//! SIGHUP reloads the whole configuration (or refuses a broken one and
//! keeps serving), sockets passed by systemd are served, and root is
//! dropped for `server.user`.

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{
    Client, Options, POPLAR, TestServer, maildir_files, prepare, put_message, tls_wrap,
};

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
        "poplar_plugin_call_duration_seconds_bucket{plugin=\"storage\",operation=\"open\",le=\"+Inf\"} ",
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

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
    env: (String, String),
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Notify {
            sock,
            env: ("NOTIFY_SOCKET".into(), path.display().to_string()),
            _dir: dir,
        }
    }

    fn recv(&self) -> String {
        let mut buf = [0u8; 1024];
        let n = self.sock.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// After a SIGHUP: RELOADING=1, then the READY=1 message (returned).
    fn reload_result(&self) -> String {
        let reloading = self.recv();
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        let ready = self.recv();
        assert!(ready.starts_with("READY=1\nSTATUS="), "{ready}");
        ready
    }
}

/// A TLS handshake and greeting on `addr`, trusting only `cert`.
fn tls_greeting(addr: SocketAddr, cert: &Path) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = tls_wrap(tcp, cert);
    let mut line = String::new();
    std::io::BufReader::new(&mut tls)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line)
}

fn capa(c: &mut Client) -> String {
    c.ok("CAPA");
    String::from_utf8(c.multiline_raw()).unwrap()
}

fn config_path(s: &TestServer) -> std::path::PathBuf {
    s.dir.path().join("poplar.toml")
}

#[test]
fn sighup_reloads_certificate_policy_and_settings_without_dropping_sessions() {
    let notify = Notify::new();
    let opts = Options {
        env: vec![notify.env.clone()],
        extra: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    };
    let s = TestServer::start_with(opts.clone());
    assert_eq!(notify.recv(), "READY=1\nSTATUS=Serving POP3");
    let message = b"Subject: kept\n\nstill here\n";
    put_message(&s.maildir("alice"), "new", "1700000001.M1P1.t", message);
    put_message(&s.maildir("frank"), "new", "1700000002.M1P1.t", message);

    // Two sessions logged in before the reload: one over TLS, one plain.
    let old_cert = s.dir.path().join("old-cert.pem");
    std::fs::copy(s.cert_path(), &old_cert).unwrap();
    let mut tls_session = Client::tls(s.tls, &old_cert);
    assert!(tls_session.line().starts_with("+OK"));
    tls_session.ok("USER alice");
    tls_session.ok("PASS alice-pw");
    let mut plain_session = s.login("frank", "frank-pw");
    let before = capa(&mut s.connect());
    assert!(before.contains("\r\nUSER\r\n"), "{before}");
    assert!(!before.contains("LOGIN-DELAY"), "{before}");

    // A new certificate and key, a stricter plaintext policy, LOGIN-DELAY,
    // a changed auth plugin configuration, and an extra listener (which
    // needs a restart).
    std::fs::remove_file(s.cert_path()).unwrap();
    std::fs::remove_file(s.dir.path().join("key.pem")).unwrap();
    poplar::net::tls::ensure_self_signed(&s.cert_path(), &s.dir.path().join("key.pem")).unwrap();
    prepare(
        s.dir.path(),
        &Options {
            plaintext_auth: "tls-only",
            extra_pop3: "login_delay = 900".into(),
            auth_config: "lowercase_user = \"true\"".into(),
            extra: format!("{}[[listener]]\naddress = \"127.0.0.1:0\"\n", opts.extra),
            ..opts.clone()
        },
    );
    s.signal("HUP");
    assert_eq!(notify.reload_result(), "READY=1\nSTATUS=Serving POP3");
    s.wait_for_log("configuration reloaded");
    assert!(
        s.wait_for_log("plugin reloaded")
            .contains("plugin=\"auth\"")
    );
    let warning = s.wait_for_log("[[listener]] changed");
    assert!(
        warning.contains("WARN") && warning.contains("restart"),
        "{warning}"
    );

    // New handshakes present the new certificate.
    let refused = tls_greeting(s.tls, &old_cert).unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    assert!(
        tls_greeting(s.tls, &s.cert_path())
            .unwrap()
            .starts_with("+OK")
    );
    // New sessions get the new policy: no USER before TLS, LOGIN-DELAY.
    let after = capa(&mut s.connect());
    assert!(!after.contains("\r\nUSER\r\n"), "{after}");
    assert!(after.contains("LOGIN-DELAY 900"), "{after}");
    let mut c = s.connect();
    c.send("USER frank");
    assert!(
        c.line().starts_with("-ERR"),
        "plaintext USER is refused now"
    );

    // The sessions from before keep going, on the settings they began with.
    assert!(!capa(&mut plain_session).contains("LOGIN-DELAY"));
    for c in [&mut tls_session, &mut plain_session] {
        c.ok("RETR 1");
        assert_eq!(c.multiline(), crate::harness::crlf(message));
        c.ok("QUIT");
    }
    // New logins go through the reloaded auth plugin (which now ignores
    // case), and LOGIN-DELAY is enforced: from the last login the storage
    // recorded, so alice, who logged in before the reload, must wait too.
    let login = |user: &str, password: &str, expect: &str| {
        let mut c = Client::tls(s.tls, &s.cert_path());
        c.line();
        c.ok(&format!("USER {user}"));
        let r = c.cmd(&format!("PASS {password}"));
        assert!(r.starts_with(expect), "{user}: {r}");
        c
    };
    login("BOB", "bob-pw", "+OK").ok("QUIT");
    login("bob", "bob-pw", "-ERR [LOGIN-DELAY]");
    login("ALICE", "alice-pw", "-ERR [LOGIN-DELAY]");

    let (_, metrics) = http_get(s.admin.unwrap(), "/metrics");
    assert!(
        metrics.contains("poplar_config_reloads_total{result=\"ok\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn sighup_refuses_a_broken_config_and_keeps_serving() {
    let notify = Notify::new();
    let opts = Options {
        env: vec![notify.env.clone()],
        extra: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    };
    let s = TestServer::start_with(opts.clone());
    assert_eq!(notify.recv(), "READY=1\nSTATUS=Serving POP3");
    put_message(
        &s.maildir("alice"),
        "new",
        "1700000001.M1P1.t",
        b"Subject: a\n\nx\n",
    );
    let mut session = s.login("alice", "alice-pw");
    let good = std::fs::read_to_string(config_path(&s)).unwrap();

    let broken = [
        ("[pop3\nthis is not TOML", "poplar.toml"),
        (
            &*good.replacen("cert = \"cert.pem\"", "cert = \"missing.pem\"", 1),
            "missing.pem",
        ),
        // The storage plugin's own validation refuses it.
        (
            &*good.replacen("root = \"/mail\"", "root = \"/nowhere\"", 1),
            "/nowhere",
        ),
    ];
    for (i, (text, named)) in broken.iter().enumerate() {
        std::fs::write(config_path(&s), text).unwrap();
        s.signal("HUP");
        let status = notify.reload_result();
        assert!(
            status.starts_with("READY=1\nSTATUS=Reload failed") && status.contains(named),
            "{status}"
        );
        // One error line per refusal, naming the reason.
        let refusals: Vec<String> = (0..200)
            .find_map(|_| {
                let lines: Vec<String> = s
                    .log()
                    .lines()
                    .filter(|l| l.contains("reload refused"))
                    .map(str::to_string)
                    .collect();
                if lines.len() > i {
                    return Some(lines);
                }
                std::thread::sleep(Duration::from_millis(50));
                None
            })
            .expect("an error line for the refused reload");
        assert!(
            refusals[i].contains("ERROR") && refusals[i].contains(named),
            "{}",
            refusals[i]
        );
        // The old configuration keeps serving, old and new sessions alike.
        session.ok("NOOP");
        let mut c = s.login("bob", "bob-pw");
        c.ok("STAT");
        c.ok("QUIT");
        assert!(
            tls_greeting(s.tls, &s.cert_path())
                .unwrap()
                .starts_with("+OK")
        );
    }
    session.ok("RETR 1");
    session.multiline();
    session.ok("QUIT");

    std::fs::write(config_path(&s), &good).unwrap();
    s.signal("HUP");
    assert_eq!(notify.reload_result(), "READY=1\nSTATUS=Serving POP3");
    let (_, metrics) = http_get(s.admin.unwrap(), "/metrics");
    for line in [
        "poplar_config_reloads_total{result=\"failed\"} 3",
        "poplar_config_reloads_total{result=\"ok\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
}

/// Runs `poplar serve` as systemd would with socket activation: `listeners`
/// at fds 3, 4, ..., `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` set
/// to the server's own pid (the shell's `$$`, kept across `exec`).
fn activated(config: &Path, listeners: &[&TcpListener], names: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(POPLAR)
        .args(["serve", "--config"])
        .arg(config)
        .env("LISTEN_FDS", listeners.len().to_string())
        .env("LISTEN_FDNAMES", names);
    let fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    // SAFETY: the hook only calls fcntl and dup2, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first: a source may sit where a target goes.
            let mut moved = [0i32; 8];
            for (i, fd) in fds.iter().enumerate() {
                moved[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in moved[..fds.len()].iter().enumerate() {
                // dup2 clears close-on-exec on the copy: it survives exec.
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn socket_activation_serves_on_the_passed_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let config = prepare(dir.path(), &Options::default());
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").unwrap();
    let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    // The plain listener is found by its address; the TLS one (configured
    // on port 0) by its FileDescriptorName.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "address = \"127.0.0.1:0\"\ntls = \"starttls\"",
        &format!("address = \"{plain_addr}\"\ntls = \"starttls\""),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let cmd = activated(&config, &[&plain, &tls], "pop3:pop3s");
    let s = TestServer::launch(dir, cmd);
    drop((plain, tls));
    assert_eq!((s.plain, s.tls), (plain_addr, tls_addr));
    s.wait_for_log("using the socket passed by the service manager, fd 3");
    s.wait_for_log("using the socket passed by the service manager by name, fd 4");

    put_message(
        &s.maildir("alice"),
        "new",
        "1700000001.M1P1.t",
        b"Subject: a\n\nhello\n",
    );
    let mut c = s.login("alice", "alice-pw");
    c.ok("RETR 1");
    assert_eq!(c.multiline(), b"Subject: a\r\n\r\nhello\r\n");
    c.ok("QUIT");
    let mut t = Client::tls(s.tls, &s.cert_path());
    assert!(t.line().starts_with("+OK"));
    t.ok("USER alice");
    t.ok("PASS alice-pw");
    t.ok("QUIT");
}

/// `poplar serve` with `server.user`, expected to refuse to start; returns
/// its standard error.
fn refused_start(dir: &Path, user: &str, as_nobody: bool) -> String {
    let config = prepare(
        dir,
        &Options {
            server: format!("user = \"{user}\""),
            ..Options::default()
        },
    );
    let mut cmd = Command::new(POPLAR);
    cmd.args(["serve", "--config"]).arg(&config);
    if as_nobody {
        let nobody = poplar::service::privileges::lookup("nobody", None).unwrap();
        chown_tree(dir, nobody.uid, nobody.gid);
        // SAFETY: only async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(nobody.gid) != 0
                    || libc::setuid(nobody.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "started anyway");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    String::from_utf8(out.stderr).unwrap()
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn server_user_that_cannot_be_honoured_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused_start(dir.path(), "no-such-user-poplar", false);
    assert!(
        err.contains("server.user = \"no-such-user-poplar\": no such user"),
        "{err}"
    );
    // Switching users needs root: not root (here: as nobody, if the tests
    // run as root), it is an error that says so, not a silent no-op.
    let err = refused_start(dir.path(), "root", is_root());
    assert!(
        err.contains("server.user = \"root\": cannot switch to uid 0") && err.contains("not root"),
        "{err}"
    );
}

#[test]
fn root_drops_privileges_to_server_user_before_serving() {
    if !is_root() {
        // Covered by the refusal test above; dropping needs root.
        eprintln!("skipped: not running as root");
        return;
    }
    let nobody = poplar::service::privileges::lookup("nobody", None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        server: "user = \"nobody\"".into(),
        ..Options::default()
    };
    prepare(dir.path(), &opts);
    let maildir = dir.path().join("mail/alice");
    put_message(
        &maildir,
        "new",
        "1700000001.M1P1.t",
        b"Subject: a\n\nhello\n",
    );
    // The key is read as root: it stays root's own.
    chown_tree(dir.path(), nobody.uid, nobody.gid);
    std::os::unix::fs::chown(dir.path().join("key.pem"), Some(0), Some(0)).unwrap();
    std::fs::set_permissions(
        dir.path().join("key.pem"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let s = TestServer::start_in(dir, opts);
    s.wait_for_log("dropped root privileges");
    // Every thread runs as nobody.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap();
    let want = |id: u32| format!("\t{id}\t{id}\t{id}\t{id}");
    let mut threads = 0;
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name).map(str::to_string))
                .unwrap()
        };
        assert_eq!(field("Uid:"), want(nobody.uid), "{status}");
        assert_eq!(field("Gid:"), want(nobody.gid), "{status}");
        assert_eq!(field("CapEff:").trim(), "0000000000000000", "{status}");
        threads += 1;
    }
    assert!(threads > 1);
    // The unreadable key will not reload: the operator is told at startup.
    s.wait_for_log("tls.key is not readable by user nobody");

    let mut c = s.login("alice", "alice-pw");
    c.ok("RETR 1");
    assert_eq!(c.multiline(), b"Subject: a\r\n\r\nhello\r\n");
    c.ok("DELE 1");
    c.ok("QUIT");
    assert!(
        maildir_files(&s.maildir("alice")).is_empty(),
        "deleted as nobody"
    );
}

#[test]
fn sighup_applies_a_new_filter_chain_to_new_lmtp_connections() {
    use crate::delivery::{lmtp_config, lmtp_tcp};
    let s = TestServer::start_with(lmtp_config(""));
    let mut before = lmtp_tcp(&s);
    prepare(
        s.dir.path(),
        &lmtp_config(&format!(
            r#"[delivery]
chain = [{{ filter = "rules" }}]
[filter.rules]
path = "{}/filter_rules.wasm"
[[filter.rules.config.rules]]
name = "blocked"
header = "Subject"
contains = "[blocked]"
action = "reject"
reason = "Blocked here"
"#,
            crate::harness::PLUGIN_DIR
        )),
    );
    s.signal("HUP");
    s.wait_for_log("configuration reloaded");
    s.wait_for_log("filter chain replaced");
    let blocked = "Subject: [blocked] offer\n\nx";
    let mut after = lmtp_tcp(&s);
    let refused = after.send_mail("a@b", &["alice@x"], blocked);
    assert!(
        refused[0].starts_with("550 5.7.1") && refused[0].contains("Blocked here"),
        "{refused:?}"
    );
    // The LMTP connection opened before the reload keeps its delivery path.
    assert_eq!(
        before.send_mail("a@b", &["alice@x"], blocked),
        vec!["250 2.0.0 <alice@x> Saved\r\n"]
    );
}
