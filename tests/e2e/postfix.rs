//! A real Postfix in front of Poplar: mail is accepted by Postfix over SMTP
//! on loopback, handed to Poplar over LMTP, and fetched back over POP3.
//!
//! Each test runs its own throwaway Postfix instance (its own
//! `config_directory`, queue, data directory, log file and SMTP port), never
//! the system one, and stops it when the test ends, pass or fail. Postfix
//! must be installed (`.ci/run` installs it) and the tests must run as root,
//! as `postfix start` requires: without either they fail, they never skip.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::delivery::{fetch_all, lmtp_config};
use crate::harness::TestServer;

/// How long anything asynchronous (a delivery, a log line) may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// The message sent through Postfix. It has every header field Postfix's
/// cleanup would otherwise add, so it must arrive byte for byte; its body
/// has lines that start with a dot, and a line that is a lone dot.
const MESSAGE: &str = "From: Frank <frank@example.org>\r\n\
To: alice@example.org, bob@example.org\r\n\
Subject: through Postfix\r\n\
Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
Message-ID: <postfix-e2e@example.org>\r\n\
\r\n\
Hello from Postfix.\r\n\
.this line starts with a dot\r\n\
..and this one with two\r\n\
.\r\n\
the line above is a lone dot\r\n\
\tindented with a tab, and a trailing space \r\n\
end\r\n";

/// Finds one of Postfix's programs in PATH or the usual sbin folders.
fn postfix_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: install postfix (see .ci/run)"))
}

/// A private Postfix instance under a temporary folder: `etc/` (main.cf,
/// master.cf), `queue/`, `data/` and `maillog`. Stopped on drop.
struct Postfix {
    dir: tempfile::TempDir,
    /// Where its smtpd listens.
    smtp: SocketAddr,
    /// Poplar's LMTP address it delivers to.
    lmtp: SocketAddr,
}

impl Postfix {
    /// Writes the configuration and starts the instance, handing every
    /// recipient in example.org to `lmtp`.
    fn start(lmtp: SocketAddr) -> Postfix {
        let postfix = postfix_program("postfix");
        let euid = std::fs::metadata("/proc/self").map(|m| m.uid());
        assert_eq!(
            euid.ok(),
            Some(0),
            "the Postfix tests must run as root (as on CI): `postfix start` is reserved for the superuser"
        );
        let dir = tempfile::tempdir().unwrap();
        // Postfix's daemons run as the `postfix` user and must reach the
        // queue below this folder (created 0700).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        // The queue folder must be owned by root (we are root); post-install,
        // run by `postfix start`, creates its sub-folders and `data/` with
        // the owners and modes Postfix wants.
        std::fs::create_dir(dir.path().join("queue")).unwrap();
        std::fs::write(dir.path().join("etc/main.cf"), main_cf(dir.path(), lmtp)).unwrap();

        // The SMTP port is chosen by binding port 0 and releasing it; if
        // something else takes it before Postfix does, start fails and we
        // try another.
        let mut failures = String::new();
        for _ in 0..3 {
            let smtp = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            std::fs::write(dir.path().join("etc/master.cf"), master_cf(smtp)).unwrap();
            let (ok, out) = run_in(dir.path(), &postfix, &["start"]);
            if ok {
                let pf = Postfix { dir, smtp, lmtp };
                pf.expect_banner();
                return pf;
            }
            failures.push_str(&format!("postfix start on {smtp}: {out}\n"));
        }
        panic!(
            "postfix did not start:\n{failures}--- maillog ---\n{}",
            std::fs::read_to_string(dir.path().join("maillog")).unwrap_or_default()
        );
    }

    fn run(&self, program: &Path, args: &[&str]) -> (bool, String) {
        run_in(self.dir.path(), program, args)
    }

    /// Checks that the port answers with this instance's greeting.
    fn expect_banner(&self) {
        let mut c = Smtp::connect(self.smtp);
        assert_eq!(c.reply(), "220 mx.test ESMTP Postfix\r\n");
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    }

    /// Postfix's log so far.
    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits until the log has a line containing every one of `needles`
    /// and returns it.
    fn wait_for_log(&self, needles: &[&str]) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .maillog()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_string();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "Postfix never logged a line with {needles:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `postqueue -f`: retry all deferred mail now.
    fn flush(&self) {
        let (ok, out) = self.run(&postfix_program("postqueue"), &["-f"]);
        assert!(ok, "postqueue -f: {out}");
    }

    /// `postqueue -p`: the queue listing.
    fn queue(&self) -> String {
        let (ok, out) = self.run(&postfix_program("postqueue"), &["-p"]);
        assert!(ok, "postqueue -p: {out}");
        out
    }

    /// The `relay=` Postfix logs for deliveries to Poplar.
    fn relay(&self) -> String {
        format!("relay=127.0.0.1[127.0.0.1]:{}", self.lmtp.port())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // `postfix stop` signals the master, which stops its children; it
        // escalates to SIGKILL itself after five seconds.
        let (ok, out) = self.run(&postfix_program("postfix"), &["stop"]);
        if !ok {
            eprintln!("postfix stop failed: {out}");
        }
    }
}

/// Runs a Postfix command (`postfix`, `postqueue`) on the instance under
/// `root`; returns whether it succeeded and what it printed. Output goes to
/// a file, not a pipe: the master daemon that `postfix start` leaves behind
/// must not hold a pipe of ours open.
fn run_in(root: &Path, program: &Path, args: &[&str]) -> (bool, String) {
    let out_path = root.join("command.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let status = Command::new(program)
        .arg("-c")
        .arg(root.join("etc"))
        .args(args)
        .env_remove("MAIL_CONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    (status.success(), text)
}

fn main_cf(root: &Path, lmtp: SocketAddr) -> String {
    let root = root.display();
    format!(
        "# A throwaway Postfix for one Poplar test: loopback only; every recipient
# in example.org goes to Poplar over LMTP; nothing ever leaves the machine.
compatibility_level = 3.6
multi_instance_enable = no
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = mx.test
mydomain = mx.test
myorigin = $myhostname
mydestination = example.org
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# No local recipient table: Poplar decides who exists (550 over LMTP).
local_recipient_maps =
local_transport = lmtp:inet:{lmtp}
lmtp_host_lookup = native
default_transport = error:5.7.1 this test sends no mail off the machine
relay_transport = error:5.7.1 this test sends no mail off the machine
alias_maps =
alias_database =
smtpd_peername_lookup = no
smtputf8_enable = no
biff = no
delay_warning_time = 0h
# Deferred mail is retried only when the test flushes the queue.
queue_run_delay = 300s
minimal_backoff_time = 300s
maximal_backoff_time = 300s
"
    )
}

fn master_cf(smtp: SocketAddr) -> String {
    format!(
        "# service type  private unpriv chroot wakeup maxproc command
{smtp} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"
    )
}

/// Poplar with LMTP on loopback, and a Postfix delivering to it. On a
/// failure, both logs are printed.
struct Rig {
    postfix: Postfix,
    poplar: TestServer,
}

impl Rig {
    fn start() -> Rig {
        let poplar = TestServer::start_with(lmtp_config(""));
        let lmtp = poplar
            .lmtp
            .iter()
            .find_map(|a| a.parse::<SocketAddr>().ok())
            .expect("an LMTP TCP listener");
        Rig {
            postfix: Postfix::start(lmtp),
            poplar,
        }
    }

    /// Waits until `user`'s inbox holds `n` messages and returns them.
    fn wait_for_mail(&self, user: &str, password: &str, n: usize) -> Vec<Vec<u8>> {
        let start = Instant::now();
        loop {
            let got = fetch_all(&self.poplar, user, password);
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{user} never got {n} message(s)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Postfix maillog ---\n{}\n--- Postfix queue ---\n{}\n--- Poplar log ---\n{}",
                self.postfix.maillog(),
                self.postfix.run(&postfix_program("postqueue"), &["-p"]).1,
                self.poplar.log()
            );
        }
    }
}

/// A raw SMTP client.
struct Smtp {
    r: BufReader<TcpStream>,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> Smtp {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Smtp {
            r: BufReader::new(tcp),
        }
    }

    /// Reads a whole (possibly multi-line) reply.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).unwrap();
            assert!(line.ends_with("\r\n"), "cut reply: {all}{line:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Opens a session and sends the envelope; returns the RCPT replies.
    fn start_mail(addr: SocketAddr, from: &str, rcpts: &[&str]) -> (Smtp, Vec<String>) {
        let mut c = Smtp::connect(addr);
        assert_eq!(c.reply(), "220 mx.test ESMTP Postfix\r\n");
        let ehlo = c.cmd("EHLO client.test");
        assert!(ehlo.starts_with("250-mx.test\r\n"), "{ehlo}");
        assert!(ehlo.contains("250-8BITMIME\r\n"), "{ehlo}");
        assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")), "250 2.1.0 Ok\r\n");
        let replies = rcpts
            .iter()
            .map(|r| c.cmd(&format!("RCPT TO:<{r}>")))
            .collect();
        (c, replies)
    }

    /// Sends DATA and the message (dot-stuffed), then QUIT; returns the
    /// queue id from "250 2.0.0 Ok: queued as ID".
    fn data(mut self, message: &str) -> String {
        assert_eq!(self.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
        let mut data = String::new();
        for line in message.split_inclusive("\r\n") {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
        }
        data.push_str(".\r\n");
        self.send(data.as_bytes());
        let queued = self.reply();
        let qid = queued
            .strip_prefix("250 2.0.0 Ok: queued as ")
            .unwrap_or_else(|| panic!("DATA not accepted: {queued}"))
            .trim_end()
            .to_string();
        assert_eq!(self.cmd("QUIT"), "221 2.0.0 Bye\r\n");
        qid
    }
}

/// Splits a fetched message into its first `n` header fields (each with
/// its continuation lines, without the final CRLF) and the rest.
fn leading_fields(msg: &[u8], n: usize) -> (Vec<String>, &[u8]) {
    let mut fields: Vec<String> = Vec::new();
    let mut rest = msg;
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a header line")
            + 2;
        let line = std::str::from_utf8(&rest[..end - 2]).unwrap();
        let continuation = line.starts_with([' ', '\t']);
        if !continuation && fields.len() == n {
            return (fields, rest);
        }
        if continuation {
            let last = fields.last_mut().expect("a field before a continuation");
            last.push_str("\r\n");
            last.push_str(line);
        } else {
            fields.push(line.to_string());
        }
        rest = &rest[end..];
    }
}

/// Checks a copy Poplar stored for `rcpt`: Poplar's two trace fields, then
/// Postfix's `Received:` naming the queue id, then the message unchanged.
fn assert_relayed_copy(got: &[u8], rcpt: &str, qid: &str) {
    let text = String::from_utf8_lossy(got);
    let (fields, rest) = leading_fields(got, 3);
    assert_eq!(fields[0], "Return-Path: <frank@example.org>", "{text}");
    assert_eq!(fields[1], format!("Delivered-To: {rcpt}"), "{text}");
    let received = &fields[2];
    assert!(
        received.starts_with("Received: from client.test (unknown [127.0.0.1])\r\n\t"),
        "{text}"
    );
    assert!(
        received.contains(&format!("by mx.test (Postfix) with ESMTP id {qid}")),
        "{text}"
    );
    assert_eq!(
        String::from_utf8_lossy(rest),
        MESSAGE,
        "the message changed on the way"
    );
}

#[test]
fn postfix_relays_to_poplar_over_lmtp() {
    let rig = Rig::start();
    let pf = &rig.postfix;

    // Postfix has no recipient table, so it takes all three at RCPT time.
    let (smtp, replies) = Smtp::start_mail(
        pf.smtp,
        "frank@example.org",
        &["alice@example.org", "bob@example.org", "nobody@example.org"],
    );
    assert_eq!(replies, vec!["250 2.1.5 Ok\r\n"; 3]);
    let qid = smtp.data(MESSAGE);

    // alice and bob get the message through Postfix, intact.
    let alice = rig.wait_for_mail("alice", "alice-pw", 1);
    let bob = rig.wait_for_mail("bob", "bob-pw", 1);
    assert_relayed_copy(&alice[0], "alice@example.org", &qid);
    assert_relayed_copy(&bob[0], "bob@example.org", &qid);

    // Postfix logged the LMTP deliveries to Poplar and, for nobody,
    // Poplar's 550 and a bounce.
    let relay = pf.relay();
    for rcpt in ["alice@example.org", "bob@example.org"] {
        let line = pf.wait_for_log(&[&qid, &format!("to=<{rcpt}>"), "status=sent"]);
        assert!(line.contains(" postfix/lmtp["), "{line}");
        assert!(line.contains(&relay), "{line}");
        assert!(
            line.contains(&format!("(250 2.0.0 <{rcpt}> Saved)")),
            "{line}"
        );
    }
    let line = pf.wait_for_log(&[&qid, "to=<nobody@example.org>", "status=bounced"]);
    assert!(line.contains(" postfix/lmtp["), "{line}");
    assert!(line.contains(&relay), "{line}");
    assert!(
        line.contains(
            "said: 550 5.1.1 User unknown in this mail system (in reply to RCPT TO command)"
        ),
        "{line}"
    );

    // The bounce went back to the sender, frank, through Poplar too.
    let frank = rig.wait_for_mail("frank", "frank-pw", 1);
    let bounce = String::from_utf8_lossy(&frank[0]);
    assert!(
        bounce.starts_with("Return-Path: <>\r\nDelivered-To: frank@example.org\r\n"),
        "{bounce}"
    );
    let about_our_message = format!("\r\nX-Postfix-Queue-ID: {qid}\r\n");
    for needle in [
        about_our_message.as_str(),
        "\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.test>\r\n",
        "\r\nSubject: Undelivered Mail Returned to Sender\r\n",
        "\r\nFinal-Recipient: rfc822; nobody@example.org\r\n",
        "\r\nStatus: 5.1.1\r\n",
        "550 5.1.1 User unknown in this mail system",
    ] {
        assert!(bounce.contains(needle), "{needle:?} missing in:\n{bounce}");
    }
    assert!(
        !bounce.contains("Final-Recipient: rfc822; alice@"),
        "{bounce}"
    );
    assert!(
        !bounce.contains("Final-Recipient: rfc822; bob@"),
        "{bounce}"
    );

    // Once Postfix is done with the message, nobody has a second copy.
    pf.wait_for_log(&[&format!("{qid}: removed")]);
    assert_eq!(fetch_all(&rig.poplar, "alice", "alice-pw").len(), 1);
    assert_eq!(fetch_all(&rig.poplar, "bob", "bob-pw").len(), 1);
    assert_eq!(fetch_all(&rig.poplar, "frank", "frank-pw").len(), 1);
}

#[test]
fn postfix_keeps_mail_poplar_cannot_store_yet() {
    let rig = Rig::start();
    let pf = &rig.postfix;
    // bob's Maildir is a regular file: storing fails, a temporary error
    // (as root, permission tricks would not bite).
    let bob_dir = rig.poplar.maildir("bob");
    std::fs::write(&bob_dir, "not a Maildir").unwrap();

    let (smtp, replies) = Smtp::start_mail(pf.smtp, "frank@example.org", &["bob@example.org"]);
    assert_eq!(replies, vec!["250 2.1.5 Ok\r\n"]);
    let qid = smtp.data(MESSAGE);

    // Poplar answers 451 after DATA; Postfix defers and keeps the message.
    let line = pf.wait_for_log(&[&qid, "to=<bob@example.org>", "status=deferred"]);
    assert!(line.contains(" postfix/lmtp["), "{line}");
    assert!(line.contains(&pf.relay()), "{line}");
    assert!(
        line.contains("said: 451 4.3.0 <bob@example.org> Mailbox temporarily unavailable"),
        "{line}"
    );
    let queue = pf.queue();
    assert!(queue.contains(&qid), "{queue}");
    assert!(queue.contains("bob@example.org"), "{queue}");
    assert!(
        !pf.maillog().contains(&format!("{qid}: removed")),
        "the deferred message left the queue"
    );

    // The mailbox is repaired; a queue flush delivers the message, once.
    std::fs::remove_file(&bob_dir).unwrap();
    pf.flush();
    let bob = rig.wait_for_mail("bob", "bob-pw", 1);
    assert_relayed_copy(&bob[0], "bob@example.org", &qid);
    let line = pf.wait_for_log(&[&qid, "to=<bob@example.org>", "status=sent"]);
    assert!(line.contains(&pf.relay()), "{line}");
    pf.wait_for_log(&[&format!("{qid}: removed")]);
    assert!(pf.queue().contains("Mail queue is empty"));
    assert_eq!(fetch_all(&rig.poplar, "bob", "bob-pw").len(), 1);
    // Delivered in the end, so no bounce and no warning for the sender.
    assert!(fetch_all(&rig.poplar, "frank", "frank-pw").is_empty());
}
