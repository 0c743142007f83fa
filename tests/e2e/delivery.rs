//! Delivery end to end: LMTP over TCP and a Unix socket, per-recipient
//! replies, size limits, folders, the filter chain with a deliberately
//! hostile filter, failure policies, and hot reload under load.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::harness::{Options, PLUGIN_DIR, TestServer, maildir_files};

/// A raw LMTP client.
pub struct Lmtp<S: std::io::Read + Write> {
    r: BufReader<S>,
}

impl<S: std::io::Read + Write> Lmtp<S> {
    fn new(stream: S) -> Self {
        let mut c = Lmtp {
            r: BufReader::new(stream),
        };
        assert!(c.line().starts_with("220 "));
        c
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.r.read_line(&mut s).unwrap();
        s
    }

    /// Sends a line and reads a (possibly multi-line) reply.
    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }

    fn send(&mut self, line: &str) {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed; got so far: {all:?}");
            all.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// A whole transaction; returns the per-recipient replies after DATA.
    pub fn send_mail(&mut self, from: &str, rcpts: &[&str], body: &str) -> Vec<String> {
        assert!(self.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        let mut accepted = 0;
        for r in rcpts {
            if self.cmd(&format!("RCPT TO:<{r}>")).starts_with("250") {
                accepted += 1;
            }
        }
        assert!(self.cmd("DATA").starts_with("354"));
        let mut data = String::new();
        for line in body.split('\n') {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.r.get_mut().write_all(data.as_bytes()).unwrap();
        (0..accepted).map(|_| self.line()).collect()
    }
}

pub fn lmtp_tcp(s: &TestServer) -> Lmtp<std::net::TcpStream> {
    let addr = s
        .lmtp
        .iter()
        .find(|a| a.parse::<std::net::SocketAddr>().is_ok())
        .expect("an LMTP TCP listener");
    let tcp = std::net::TcpStream::connect(addr.as_str()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut c = Lmtp::new(tcp);
    assert!(c.cmd("LHLO test.client").starts_with("250-"));
    c
}

pub fn lmtp_config(extra: &str) -> Options {
    Options {
        extra: format!("[lmtp]\nlisten = [\"127.0.0.1:0\"]\nunix_socket = \"lmtp.sock\"\n{extra}"),
        ..Options::default()
    }
}

/// Copies the hostile filter next to the config (so tests can replace it).
fn install_hostile(dir: &Path) {
    std::fs::copy(
        Path::new(PLUGIN_DIR).join("hostile_filter.wasm"),
        dir.join("hostile.wasm"),
    )
    .unwrap();
}

fn start_hostile(policy: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    install_hostile(dir.path());
    TestServer::start_in(dir, hostile_server_opts(policy))
}

/// A chain of just the hostile test filter, failing as `policy` says.
fn hostile_server_opts(policy: &str) -> Options {
    lmtp_config(&format!(
        "[delivery]\nchain = [{{ filter = \"hostile\", on_failure = \"{policy}\" }}]\n\
         watch_interval_ms = 100\n\
         [filter.hostile]\npath = \"hostile.wasm\"\ntimeout_ms = 300\nmemory_mb = 32\n",
    ))
}

/// The messages in a user's inbox (or folder) as fetched over POP3.
pub fn fetch_all(s: &TestServer, login: &str, password: &str) -> Vec<Vec<u8>> {
    let mut c = s.login(login, password);
    let stat = c.cmd("STAT");
    let n: usize = stat.split(' ').nth(1).unwrap().parse().unwrap();
    let mut out = Vec::new();
    for i in 1..=n {
        c.ok(&format!("RETR {i}"));
        out.push(c.multiline());
    }
    c.ok("QUIT");
    out
}

#[test]
fn lmtp_transcript_per_recipient_replies_and_folders() {
    let s = TestServer::start_with(lmtp_config(""));
    let mut c = lmtp_tcp(&s);
    assert_eq!(c.cmd("HELO x"), "500 5.5.1 This is LMTP: use LHLO\r\n");
    assert_eq!(
        c.cmd("MAIL FROM:<sender@example.org> SIZE=200 BODY=8BITMIME"),
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@example.org>"), "250 2.1.5 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<nobody@example.org>"),
        "550 5.1.1 User unknown in this mail system\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<frank+Work@example.org>"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(c.cmd("RCPT TO:<../etc@example.org>").get(..3), Some("550"));
    assert!(c.cmd("DATA").starts_with("354 "));
    c.r.get_mut()
        .write_all(b"Subject: hello\r\n\r\n..starts with a dot\r\nend\r\n.\r\n")
        .unwrap();
    assert_eq!(c.line(), "250 2.0.0 <alice@example.org> Saved\r\n");
    assert_eq!(c.line(), "250 2.0.0 <frank+Work@example.org> Saved\r\n");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");

    let alice = fetch_all(&s, "alice", "alice-pw");
    assert_eq!(
        alice,
        vec![
            b"Return-Path: <sender@example.org>\r\nDelivered-To: alice@example.org\r\n\
              Subject: hello\r\n\r\n.starts with a dot\r\nend\r\n"
                .to_vec()
        ]
    );
    // frank's copy went to his Work folder: the inbox is empty, and the
    // folder is reached by logging in as frank+Work.
    assert!(fetch_all(&s, "frank", "frank-pw").is_empty());
    let work = fetch_all(&s, "frank+Work", "frank-pw");
    assert_eq!(work.len(), 1);
    assert!(work[0].starts_with(b"Return-Path: <sender@example.org>\r\nDelivered-To: frank+Work@"));
    assert!(s.maildir("frank").join(".Work/maildirfolder").exists());
}

#[test]
fn lmtp_size_limits_and_bad_commands() {
    let s = TestServer::start_with(lmtp_config("[delivery]\nmax_message_size = 2048\n"));
    let mut c = lmtp_tcp(&s);
    assert_eq!(
        c.cmd("MAIL FROM:<a@b> SIZE=999999"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert!(c.cmd("RCPT TO:<alice@x>").starts_with("503 "));
    assert!(c.cmd("DATA").starts_with("503 "));
    let big = "x".repeat(100);
    let body = std::iter::repeat_n(big.as_str(), 40)
        .collect::<Vec<_>>()
        .join("\n");
    let replies = c.send_mail("a@b", &["alice@x", "bob@x"], &body);
    assert_eq!(
        replies,
        vec![
            "552 5.3.4 Message too big\r\n",
            "552 5.3.4 Message too big\r\n"
        ]
    );
    assert!(c.cmd("FROB").starts_with("500 5.5.1"));
    assert!(c.cmd("MAIL FROM:<a@b> X-UNKNOWN=1").starts_with("555 "));
    // The session still works, and nothing of the big message was stored.
    assert_eq!(
        c.send_mail("a@b", &["alice@x"], "Subject: small\n\nok"),
        vec!["250 2.0.0 <alice@x> Saved\r\n"]
    );
    assert_eq!(maildir_files(&s.maildir("alice")).len(), 1);
    assert!(maildir_files(&s.maildir("bob")).is_empty());
}

#[test]
fn lmtp_over_unix_socket() {
    let s = TestServer::start_with(lmtp_config(""));
    let path = s.lmtp.iter().find(|a| a.ends_with("lmtp.sock")).unwrap();
    let mut c = Lmtp::new(UnixStream::connect(path).unwrap());
    assert!(c.cmd("LHLO local").starts_with("250-"));
    assert_eq!(
        c.send_mail("", &["bob@example.org"], "Subject: via socket\n\nhi"),
        vec!["250 2.0.0 <bob@example.org> Saved\r\n"]
    );
    let got = fetch_all(&s, "bob", "bob-pw");
    assert_eq!(
        got,
        vec![
            b"Return-Path: <>\r\nDelivered-To: bob@example.org\r\nSubject: via socket\r\n\r\nhi\r\n"
                .to_vec()
        ]
    );
}

#[test]
fn hostile_filter_fail_closed() {
    let s = start_hostile("tempfail");
    let mut c = lmtp_tcp(&s);
    let send = |c: &mut Lmtp<_>, subject: &str| {
        c.send_mail("x@y", &["alice@x"], &format!("Subject: {subject}\n\nbody"))
            .remove(0)
    };
    // Each bad behaviour gets its own answer; none takes the server down.
    assert_eq!(
        send(&mut c, "REJECT"),
        "550 5.7.1 <alice@x> hostile filter says no\r\n"
    );
    for subject in ["PANIC", "LOOP", "ALLOC"] {
        assert_eq!(
            send(&mut c, subject),
            "451 4.3.0 <alice@x> Filter temporarily unavailable, try again later\r\n",
            "{subject}"
        );
    }
    // The guest's own panic message and the deadline reach the log.
    s.wait_for_log("hostile filter panicked on purpose");
    s.wait_for_log("exceeded its 300 ms deadline");
    // A folder the storage refuses: the message lands in the inbox.
    assert_eq!(send(&mut c, "BADFOLDER"), "250 2.0.0 <alice@x> Saved\r\n");
    assert_eq!(send(&mut c, "fine"), "250 2.0.0 <alice@x> Saved\r\n");
    let got = fetch_all(&s, "alice", "alice-pw");
    assert_eq!(got.len(), 2, "only the two accepted messages were stored");
    for m in &got {
        let needle = b"\r\nX-Hostile: passed\r\n";
        assert!(m.windows(needle.len()).any(|w| w == needle));
    }
    assert!(!s.mail_root().join("escape").exists());
    assert!(!s.maildir("alice").join(".._escape").exists());
    assert!(maildir_files(&s.maildir("alice").join("tmp")).is_empty());
    // POP3 is still served.
    s.login("bob", "bob-pw").ok("QUIT");
}

#[test]
fn hostile_filter_fail_open() {
    let s = start_hostile("accept");
    let mut c = lmtp_tcp(&s);
    let reply = c
        .send_mail("x@y", &["alice@x"], "Subject: PANIC\n\nbody")
        .remove(0);
    assert_eq!(reply, "250 2.0.0 <alice@x> Saved\r\n");
    let got = fetch_all(&s, "alice", "alice-pw");
    assert!(
        got[0].starts_with(
            b"Return-Path: <x@y>\r\nDelivered-To: alice@x\r\nX-Poplar-Filter-Failed: hostile\r\n"
        ),
        "{}",
        String::from_utf8_lossy(&got[0])
    );
}

#[test]
fn poplar_deliver_runs_the_filters() {
    let s = start_hostile("tempfail");
    let run = |subject: &str| {
        let mut child = std::process::Command::new(crate::harness::POPLAR)
            .args(["deliver", "--config"])
            .arg(s.dir.path().join("poplar.toml"))
            .args(["--user", "alice", "--from", "mta@example.org"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("Subject: {subject}\n\nbody\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert_eq!(run("fine").status.code(), Some(0));
    let rejected = run("REJECT");
    assert_eq!(rejected.status.code(), Some(77));
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("hostile filter says no"));
    assert_eq!(
        run("PANIC").status.code(),
        Some(75),
        "EX_TEMPFAIL: the MTA retries"
    );
    let got = fetch_all(&s, "alice", "alice-pw");
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with(
        b"Return-Path: <mta@example.org>\r\nDelivered-To: alice\r\nX-Hostile: passed\r\n"
    ));
}

/// Appends a custom section: the same behaviour, a different file (and so
/// a different version).
fn variant(wasm: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut payload = Vec::new();
    leb("poplar-test".len(), &mut payload);
    payload.extend_from_slice(b"poplar-test");
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend(payload);
    out
}

fn sha_prefix(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))[..12].to_string()
}

#[test]
fn hot_reload_under_a_steady_stream_of_deliveries() {
    let s = start_hostile("tempfail");
    let original = std::fs::read(s.dir.path().join("hostile.wasm")).unwrap();
    let v1 = variant(&original, "v1");
    let v2 = variant(&original, "v2");
    let broken = b"\0asm\x0d\0\x01\0 this is not a component".to_vec();

    // Deliver continuously from another thread until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let addr = s.lmtp[0].clone();
        std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(addr.as_str()).unwrap();
            let mut c = Lmtp::new(tcp);
            c.cmd("LHLO stream");
            let mut replies = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 20 {
                let body = format!("Subject: stream {i}\n\nmessage {i}");
                replies.extend(c.send_mail("s@x", &["alice@x"], &body));
                i += 1;
            }
            replies
        })
    };
    let replace = |bytes: &[u8]| {
        // Write beside, then rename over: the way to replace a file atomically.
        let tmp = s.dir.path().join("hostile.wasm.new");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, s.dir.path().join("hostile.wasm")).unwrap();
    };
    replace(&v1);
    s.wait_for_log(&format!("new={}", sha_prefix(&v1)));
    replace(&broken);
    s.wait_for_log("new version refused");
    replace(&v2);
    s.wait_for_log(&format!("new={}", sha_prefix(&v2)));
    // In-place rewrite (not atomic): a half-written file may be seen and
    // refused; the complete one must be taken in the end.
    std::fs::write(s.dir.path().join("hostile.wasm"), &original).unwrap();
    s.wait_for_log(&format!("new={}", sha_prefix(&original)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let replies = sender.join().unwrap();

    assert!(replies.len() >= 20);
    for r in &replies {
        assert!(
            r.starts_with("250 2.0.0"),
            "a delivery failed during reload: {r}"
        );
    }
    // Every delivery names exactly one filter version, never the broken one,
    // and the stream saw the versions change.
    // The log is read from the server's stderr in the background: wait for
    // the last delivery's line.
    let mut log = s.log();
    for _ in 0..200 {
        if log.lines().filter(|l| l.contains(" delivery ")).count() >= replies.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        log = s.log();
    }
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" delivery ")).collect();
    assert_eq!(lines.len(), replies.len());
    let mut seen = std::collections::BTreeSet::new();
    for l in &lines {
        let versions: Vec<&str> = l
            .match_indices("hostile@")
            .map(|(i, _)| &l[i + 8..i + 20])
            .collect();
        assert_eq!(versions.len(), 1, "{l}");
        assert_ne!(versions[0], sha_prefix(&broken));
        seen.insert(versions[0].to_string());
    }
    assert!(seen.len() >= 2, "the switch was observed: {seen:?}");
    assert_eq!(
        fetch_all(&s, "alice", "alice-pw").len(),
        replies.len(),
        "no message lost"
    );
}

#[test]
fn sighup_reloads_filters() {
    let s = start_hostile("tempfail");
    let original = std::fs::read(s.dir.path().join("hostile.wasm")).unwrap();
    let v3 = variant(&original, "v3");
    // SIGHUP reloads whether or not the watcher has noticed the change.
    std::fs::write(s.dir.path().join("hostile.wasm"), &v3).unwrap();
    let pid = s.pid();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    s.wait_for_log(&format!("new={}", sha_prefix(&v3)));
    let mut c = lmtp_tcp(&s);
    assert_eq!(
        c.send_mail("a@b", &["alice@x"], "Subject: after hup\n\nx"),
        vec!["250 2.0.0 <alice@x> Saved\r\n"]
    );
}

#[test]
fn rules_filter_files_rejects_and_tags() {
    let s = TestServer::start_with(lmtp_config(&format!(
        r#"[delivery]
chain = [{{ filter = "rules" }}]
[filter.rules]
path = "{PLUGIN_DIR}/filter_rules.wasm"
[filter.rules.config]
[[filter.rules.config.rules]]
name = "newsletter"
header = "List-Id"
exists = true
action = "add-headers"
add_headers = {{ "X-Category" = "newsletter" }}
continue = true
[[filter.rules.config.rules]]
name = "spam-subject"
header = "Subject"
contains = "[spam]"
action = "file-into"
folder = "Junk"
[[filter.rules.config.rules]]
name = "blocked"
from = "blocked@example.org"
action = "reject"
reason = "You are blocked"
[[filter.rules.config.rules]]
name = "drop"
body_regex = "^DISCARD-ME$"
action = "discard"
"#
    )));
    let mut c = lmtp_tcp(&s);
    let mut send = |from: &str, body: &str| c.send_mail(from, &["carol@x"], body).remove(0);
    assert_eq!(
        send("a@b", "Subject: [SPAM] buy\nList-Id: <l.x>\n\nhi"),
        "250 2.0.0 <carol@x> Saved\r\n"
    );
    assert_eq!(
        send("blocked@example.org", "Subject: hi\n\nhi"),
        "550 5.7.1 <carol@x> You are blocked\r\n"
    );
    assert_eq!(
        send("a@b", "Subject: x\n\nfirst\nDISCARD-ME\n"),
        "250 2.0.0 <carol@x> Accepted and discarded\r\n"
    );
    assert_eq!(
        send("a@b", "Subject: normal\n\nhello"),
        "250 2.0.0 <carol@x> Saved\r\n"
    );
    let inbox = fetch_all(&s, "carol", "carol-pw");
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].ends_with(b"Subject: normal\r\n\r\nhello\r\n"));
    let junk = fetch_all(&s, "carol+Junk", "carol-pw");
    assert_eq!(junk.len(), 1);
    assert!(
        junk[0].starts_with(
            b"Return-Path: <a@b>\r\nDelivered-To: carol@x\r\nX-Category: newsletter\r\n"
        ),
        "{}",
        String::from_utf8_lossy(&junk[0])
    );
}

/// A small labelled corpus: spam and ham with different vocabularies.
fn write_corpus(dir: &Path, kind: &str, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let words: &[&str] = if kind == "spam" {
        &[
            "viagra", "winner", "lottery", "cheap", "pills", "bitcoin", "prize", "casino", "offer",
        ]
    } else {
        &[
            "meeting",
            "agenda",
            "report",
            "quarterly",
            "lunch",
            "review",
            "project",
            "budget",
            "team",
        ]
    };
    for i in 0..n {
        let body: Vec<&str> = (0..30)
            .map(|j| words[(i * 7 + j * 3) % words.len()])
            .collect();
        let msg = format!(
            "From: {kind}{i}@example.org\nSubject: {} {}\n\n{}\n",
            words[i % words.len()],
            words[(i + 3) % words.len()],
            body.join(" ")
        );
        std::fs::write(dir.join(format!("{i}.eml")), msg).unwrap();
    }
}

#[test]
fn bayes_filter_trains_and_files_spam() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bayes")).unwrap();
    write_corpus(&dir.path().join("corpus/spam"), "spam", 30);
    write_corpus(&dir.path().join("corpus/ham"), "ham", 30);
    let opts = lmtp_config(&format!(
        r#"[delivery]
chain = [{{ filter = "bayes", on_failure = "accept" }}]
[filter.bayes]
path = "{PLUGIN_DIR}/filter_bayes.wasm"
dirs = [{{ host = "bayes", guest = "/data", writable = true }}]
[filter.bayes.config]
model = "/data/bayes.model"
"#
    ));
    crate::harness::prepare(dir.path(), &opts);
    let train = std::process::Command::new(crate::harness::POPLAR)
        .args(["filter", "train", "--config"])
        .arg(dir.path().join("poplar.toml"))
        .args(["--plugin", "bayes", "--spam"])
        .arg(dir.path().join("corpus/spam"))
        .arg("--ham")
        .arg(dir.path().join("corpus/ham"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&train.stdout);
    assert!(
        train.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&train.stderr)
    );
    assert!(
        out.contains("training bayes on 30 spam and 30 ham messages"),
        "{out}"
    );
    assert!(
        dir.path().join("bayes/bayes.model").is_file(),
        "the model is in the granted dir"
    );

    let s = TestServer::start_in(dir, opts);
    let mut c = lmtp_tcp(&s);
    let spam = "Subject: winner lottery prize\n\ncheap pills casino bitcoin offer winner prize";
    let ham = "Subject: project meeting\n\nagenda for the quarterly budget review with the team";
    assert_eq!(
        c.send_mail("x@y", &["erin@x"], spam),
        vec!["250 2.0.0 <erin@x> Saved\r\n"]
    );
    assert_eq!(
        c.send_mail("x@y", &["erin@x"], ham),
        vec!["250 2.0.0 <erin@x> Saved\r\n"]
    );
    let inbox = fetch_all(&s, "erin", "erin-pw");
    assert_eq!(inbox.len(), 1);
    let inbox = String::from_utf8_lossy(&inbox[0]).into_owned();
    assert!(
        inbox.contains("Subject: project meeting") && inbox.contains("X-Spam-Score: 0."),
        "{inbox}"
    );
    assert!(!inbox.contains("X-Spam-Flag"), "{inbox}");
    let junk = fetch_all(&s, "erin+Junk", "erin-pw");
    assert_eq!(junk.len(), 1);
    let junk = String::from_utf8_lossy(&junk[0]).into_owned();
    assert!(
        junk.contains("X-Spam-Flag: YES") && junk.contains("Subject: winner"),
        "{junk}"
    );
}
