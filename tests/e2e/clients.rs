//! Real POP3 clients against the real server: Python poplib, curl,
//! fetchmail, mpop and openssl s_client (mutt and neomutt in `mutt.rs`),
//! over plain POP3 (loopback), STLS and implicit TLS, each fetching a whole
//! mailbox of awkward messages and compared byte for byte with what the
//! server must deliver.
//!
//! The matrix runs twice: with the default SASL mechanisms (PLAIN, LOGIN)
//! and with every password mechanism on (`Offered::Every`, as
//! examples/poplar.toml suggests). Each cell names the mechanism the client
//! must log in with and checks it in the server's logout line
//! (`mechanism=`):
//!
//! | client | default: plain | STLS | implicit TLS | every: plain | STLS | implicit TLS |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | poplib (USER/PASS by script) | USER | USER | USER | USER | USER | USER |
//! | curl (knows no SCRAM) | PLAIN | PLAIN | PLAIN | PLAIN | PLAIN | PLAIN |
//! | fetchmail (`auth password`; every: `auth any`) | USER | USER | USER | USER | USER | USER |
//! | mpop (user/plain/login; every: `auth on`) | USER | PLAIN | LOGIN | SCRAM-SHA-256 | PLAIN | PLAIN |
//! | openssl s_client (USER/PASS by script) | - | USER | USER | - | USER | USER |
//!
//! None of these clients issues `UTF8` (RFC 6856), so the message whose
//! header has UTF-8 (message 5) reaches them with that header downgraded
//! (RFC 6857: encoded-words), and its RETR `+OK` states the size sent;
//! LIST and STAT state the size as stored.
//!
//! What each client does to a message on its own, and what the tests
//! therefore expect (`wire` = the message as sent, un-dot-stuffed: the
//! stored message, its header downgraded if it has UTF-8, with LF turned
//! into CRLF and a final CRLF added, i.e. `crlf(sent)`):
//!
//! - poplib `retr()`: the lines of `wire` without their CRLF, un-dot-stuffed;
//!   `octets` = `wire.len()`.
//! - curl: `wire` exactly (curl un-dot-stuffs and drops the terminator).
//! - fetchmail with an MDA: by default (`stripcr`, the default with an MDA)
//!   `wire` with CRLF turned into LF; with `no stripcr` + `forcecr`, `wire`
//!   exactly. `set invisible` stops its Received header, `no rewrite` its
//!   address rewriting. It always ends the header block with its own empty
//!   line, so a message with no header/body separator gains one.
//! - mpop to a Maildir: `wire` with CRLF turned into LF; `received_header
//!   off` stops its Received header.
//!
//! Certificates: every TLS client trusts the test certificate through its
//! own CA-file option (poplib `cafile`, curl `--cacert`, fetchmail
//! `sslcertfile` + `sslcertck`, mpop `tls_trust_file`, openssl `-CAfile`)
//! and connects to 127.0.0.1. All but fetchmail check that address against
//! the certificate's IP SAN; fetchmail matches only the CN and DNS SANs, so
//! it is told to expect `localhost` with `sslcommonname`.
//!
//! A client that is not installed fails the test with how to install it.
//! Every client runs under a deadline, so a hung client fails instead of
//! hanging the run.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::{Options, TestServer, crlf, maildir_files, put_message};

/// How long one client run may take before it is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(180);

/// The SASL mechanisms the server offers in a cell of the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Offered {
    /// The default: PLAIN and LOGIN.
    Default,
    /// Every password mechanism, as examples/poplar.toml suggests.
    Every,
}

impl Offered {
    pub(crate) fn options(self) -> Options {
        match self {
            Offered::Default => Options::default(),
            Offered::Every => Options {
                extra_pop3:
                    r#"sasl_mechanisms = ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]"#
                        .into(),
                ..Options::default()
            },
        }
    }
}

/// Every session `user` logged in so far logged in with `mechanism`, as
/// the server's logout lines say (and there was at least one).
pub(crate) fn assert_logged_in_with(s: &TestServer, user: &str, mechanism: &str) {
    let who = format!(" user={user} ");
    s.wait_for_log(&who);
    let log = s.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session ended") && l.contains(&who))
        .collect();
    assert!(!lines.is_empty(), "no session of {user}:\n{log}");
    for line in lines {
        assert!(
            line.contains(&format!("{who}mechanism={mechanism} ")),
            "{user} should have logged in with {mechanism}: {line}"
        );
    }
}

// ---------------------------------------------------------------------------
// The mailbox
// ---------------------------------------------------------------------------

/// A message as stored in alice's Maildir.
pub(crate) struct Stored {
    sub: &'static str,
    name: &'static str,
    bytes: Vec<u8>,
    /// The header block as a client not in UTF-8 mode gets it, when the
    /// stored one has UTF-8 (RFC 6857), written out here by hand.
    downgraded_header: Option<&'static [u8]>,
}

impl Stored {
    /// The UIDL: the Maildir base name (flags stripped).
    pub(crate) fn uid(&self) -> &str {
        self.name.split(':').next().unwrap()
    }

    /// What a POP3 client (not in UTF-8 mode) receives once the
    /// dot-stuffing is undone.
    pub(crate) fn wire(&self) -> Vec<u8> {
        match self.downgraded_header {
            None => crlf(&self.bytes),
            Some(header) => {
                let end = self
                    .bytes
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .expect("a header block")
                    + 2;
                crlf(&[header, &self.bytes[end..]].concat())
            }
        }
    }

    /// The size LIST and STAT state: the stored message in CRLF.
    pub(crate) fn listed(&self) -> usize {
        crlf(&self.bytes).len()
    }
}

/// The messages, in the order the server numbers them (by delivery time).
pub(crate) fn mailbox() -> Vec<Stored> {
    let mut big = b"From: big@example.org\nSubject: big, with dot lines\n\n".to_vec();
    let mut i = 0u64;
    while big.len() < 3 * 1024 * 1024 {
        let line = match i % 7 {
            0 => format!(".dot line {i}\n"),
            1 => format!("..two dots {i}\n"),
            2 => ".\n".to_string(),
            3 => "\n".to_string(),
            4 => format!("ordinary line {i} {}\n", "x".repeat((i % 300) as usize)),
            5 => "...\n".to_string(),
            _ => format!("8-bit \u{e9}t\u{e9} {i} .\n"),
        };
        big.extend_from_slice(line.as_bytes());
        i += 1;
    }
    vec![
        Stored {
            sub: "cur",
            name: "1700000001.M1P1.test:2,S",
            bytes: b"From: a@example.org\nTo: alice@example.org\nSubject: plain\nMessage-ID: <1@example.org>\n\nfirst body line\nsecond\n".to_vec(),
            downgraded_header: None,
        },
        Stored {
            sub: "new",
            name: "1700000002.M2P2.test",
            bytes: b"From: b@example.org\nSubject: dots\n\n.starts with dot\n..two dots\n.\n. dot space\n...\nmiddle\n\n.\nend\n".to_vec(),
            downgraded_header: None,
        },
        Stored {
            // Stored with CRLF already, a folded header, a lone dot as the
            // last line.
            sub: "new",
            name: "1700000003.M3P3.test",
            bytes: b"From: c@example.org\r\nSubject: stored with CRLF\r\nX-Long: folded\r\n\tcontinuation\r\n\r\nbody with crlf\r\n..\r\n.\r\n".to_vec(),
            downgraded_header: None,
        },
        Stored {
            sub: "new",
            name: "1700000004.M4P4.test",
            bytes: b"From: d@example.org\nSubject: no final newline\n\nfirst\n.last line without newline".to_vec(),
            downgraded_header: None,
        },
        Stored {
            sub: "new",
            name: "1700000005.M5P5.test",
            bytes: b"From: e@example.org\nSubject: 8-bit\nX-Raw: caf\xc3\xa9 \xe2\x82\xac\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\ncaf\xe9 na\xefve \xff\xfe\x80\x81\n\xa0.not a dot line\n".to_vec(),
            // The UTF-8 field as RFC 2047 encoded-words; the 8-bit body
            // as stored.
            downgraded_header: Some(b"From: e@example.org\nSubject: 8-bit\nX-Raw: =?UTF-8?Q?caf=C3=A9_=E2=82=AC?=\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n"),
        },
        Stored {
            // A header and no body: no empty line at all.
            sub: "new",
            name: "1700000006.M6P6.test",
            bytes: b"From: f@example.org\nSubject: headers only\n".to_vec(),
            downgraded_header: None,
        },
        Stored {
            sub: "new",
            name: "1700000007.M7P7.test",
            bytes: big,
            downgraded_header: None,
        },
    ]
}

/// A server whose alice has `mailbox()`.
pub(crate) fn alice_server(opts: Options) -> (TestServer, Vec<Stored>) {
    let s = TestServer::start_with(opts);
    let msgs = mailbox();
    let md = s.maildir("alice");
    for m in &msgs {
        put_message(&md, m.sub, m.name, &m.bytes);
    }
    (s, msgs)
}

pub(crate) fn total_size(msgs: &[Stored]) -> usize {
    msgs.iter().map(|m| m.listed()).sum()
}

/// The UIDs (Maildir base names) left in a Maildir.
pub(crate) fn uids_in(maildir: &Path) -> BTreeSet<String> {
    maildir_files(maildir)
        .iter()
        .map(|f| {
            let name = f.split_once('/').unwrap().1;
            name.split(':').next().unwrap().to_string()
        })
        .collect()
}

/// The UIDs of `msgs` except the 1-based numbers in `deleted`.
pub(crate) fn uids_except(msgs: &[Stored], deleted: &[usize]) -> BTreeSet<String> {
    msgs.iter()
        .enumerate()
        .filter(|(i, _)| !deleted.contains(&(i + 1)))
        .map(|(_, m)| m.uid().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Expected transformations
// ---------------------------------------------------------------------------

/// The lines of a CRLF text, without their CRLF.
fn lines_of(wire: &[u8]) -> Vec<Vec<u8>> {
    wire.split_inclusive(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r\n").expect("line ends in CRLF").to_vec())
        .collect()
}

/// The header lines and the empty line after them (all lines if there is
/// no empty line): what `TOP n 0` returns.
fn top0_lines(wire: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in lines_of(wire) {
        let end = line.is_empty();
        out.push(line);
        if end {
            break;
        }
    }
    out
}

/// CRLF turned into LF.
pub(crate) fn to_lf(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    let mut i = 0;
    while i < wire.len() {
        if wire[i] == b'\r' && wire.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(wire[i]);
        i += 1;
    }
    out
}

/// Whether a CRLF message has an empty line ending its header.
pub(crate) fn has_header_end(wire: &[u8]) -> bool {
    wire.starts_with(b"\r\n") || wire.windows(4).any(|w| w == b"\r\n\r\n")
}

// ---------------------------------------------------------------------------
// Comparing
// ---------------------------------------------------------------------------

fn preview(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(120)];
    let more = if bytes.len() > cut.len() { "..." } else { "" };
    format!("\"{}\"{more}", cut.escape_ascii())
}

/// Where two byte strings differ, readably (messages can be megabytes, too
/// big for assert_eq's output).
fn difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(40);
    format!(
        "got {} bytes, want {}; first difference at byte {at}:\n  got  ...{}\n  want ...{}",
        got.len(),
        want.len(),
        preview(&got[from..]),
        preview(&want[from..])
    )
}

fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        panic!("{what}: {}", difference(got, want));
    }
}

fn assert_lines(what: &str, got: &[Vec<u8>], want: &[Vec<u8>]) {
    if got == want {
        return;
    }
    if got.len() != want.len() {
        panic!("{what}: got {} lines, want {}", got.len(), want.len());
    }
    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
    panic!(
        "{what}: line {} differs: got {}, want {}",
        i + 1,
        preview(&got[i]),
        preview(&want[i])
    );
}

/// Every wanted message is among the delivered files exactly once, and
/// nothing else was delivered (clients that deliver through an MDA or into
/// a Maildir give no reliable order, so files are matched by content).
pub(crate) fn assert_delivered(client: &str, mut got: Vec<(String, Vec<u8>)>, want: &[Vec<u8>]) {
    let mut missing = Vec::new();
    for (i, w) in want.iter().enumerate() {
        match got.iter().position(|(_, g)| g == w) {
            Some(pos) => {
                got.remove(pos);
            }
            None => missing.push(i),
        }
    }
    if missing.is_empty() && got.is_empty() {
        return;
    }
    let mut report = format!(
        "{client}: {} of {} messages did not arrive byte-exact; {} delivered file(s) unmatched",
        missing.len(),
        want.len(),
        got.len()
    );
    for &i in &missing {
        let w = &want[i];
        // Compare with the unmatched file that shares the most leading bytes.
        let best = got
            .iter()
            .max_by_key(|(_, g)| g.iter().zip(w.iter()).take_while(|(a, b)| a == b).count());
        report.push_str(&format!("\nmessage {}: want {}", i + 1, preview(w)));
        if let Some((name, g)) = best {
            report.push_str(&format!("\n  closest file {name}: {}", difference(g, w)));
        }
    }
    for (name, g) in &got {
        report.push_str(&format!("\nunmatched file {name}: {}", preview(g)));
    }
    panic!("{report}");
}

/// The files in a directory, with their contents.
pub(crate) fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// Running clients
// ---------------------------------------------------------------------------

/// Fails the test, saying how to install it, if `tool` is not on the PATH.
pub(crate) fn require(tool: &str, package: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    assert!(
        found,
        "`{tool}` is not installed (not found on PATH); the end-to-end client tests need it. \
         Install it with `apt-get install {package}` (tests/run.sh does so when run as root)."
    );
}

/// A self-signed certificate the test server does not use.
fn other_certificate() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("other.pem");
    poplar::net::tls::ensure_self_signed(&cert, &dir.path().join("other-key.pem")).unwrap();
    (dir, cert)
}

pub(crate) struct Run {
    what: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Run {
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Both outputs, for failure messages.
    pub(crate) fn output(&self) -> String {
        format!(
            "{} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status,
            self.stdout(),
            self.stderr()
        )
    }

    pub(crate) fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "{}", self.output());
        self
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let handle = std::thread::spawn(move || {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, handle)
}

/// Runs a client with `input` on stdin; kills it and fails the test if it
/// has not finished by the deadline.
pub(crate) fn run(what: &str, cmd: &mut Command, input: &[u8]) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Closing stdin (dropping it) after the input is the client's EOF.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (out, out_done) = drain(child.stdout.take().unwrap());
    let (err, err_done) = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {DEADLINE:?} and was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out.lock().unwrap()),
                String::from_utf8_lossy(&err.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes reach EOF once every process holding them has exited.
    while !(out_done.is_finished() && err_done.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "{what} exited but its output pipes stayed open"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stdout = out.lock().unwrap().clone();
    let stderr = err.lock().unwrap().clone();
    Run {
        what: what.to_string(),
        status,
        stdout,
        stderr,
    }
}

/// The three ways in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Transport {
    /// Plain POP3 on the loopback (plaintext login allowed there).
    Plain,
    /// Plain port, upgraded with STLS.
    Stls,
    /// Implicit TLS port.
    Implicit,
}

impl Transport {
    pub(crate) fn port(self, s: &TestServer) -> u16 {
        match self {
            Transport::Plain | Transport::Stls => s.plain.port(),
            Transport::Implicit => s.tls.port(),
        }
    }
}

pub(crate) fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub(crate) fn path_str(p: &Path) -> &str {
    let s = p.to_str().expect("temp paths are UTF-8");
    assert!(
        !s.contains([' ', '"', '\'', '$', '\\']),
        "path unsuitable for a client's config file: {s}"
    );
    s
}

// ---------------------------------------------------------------------------
// Python poplib
// ---------------------------------------------------------------------------

/// Logs in, then capa/stat/list/uidl, retr and top of every message, dele
/// of the given numbers and quit. Prints one result per line; byte strings
/// as comma-separated hex lines, each prefixed with `x`.
const POPLIB_FETCH: &str = r#"
import poplib, ssl, sys

mode, host, port, cafile, user, password, deletes = sys.argv[1:8]
port = int(port)
deletes = [int(n) for n in deletes.split(",") if n]

def hexlines(lines):
    return ",".join("x" + line.hex() for line in lines)

out = []
def emit(*parts):
    out.append(" ".join(str(p) for p in parts))

# Verifies the chain against the test certificate and the host (IP SAN).
ctx = ssl.create_default_context(cafile=cafile)
if mode == "implicit":
    pop = poplib.POP3_SSL(host, port, context=ctx, timeout=60)
else:
    pop = poplib.POP3(host, port, timeout=60)
emit("welcome", pop.getwelcome().decode())
if mode != "implicit":
    emit("capa-before", *sorted(pop.capa()))
if mode == "stls":
    emit("stls", pop.stls(context=ctx).decode())
emit("tls", isinstance(pop.sock, ssl.SSLSocket))
emit("capa", *sorted(pop.capa()))
emit("user", pop.user(user).decode())
emit("pass", pop.pass_(password).decode())
count, size = pop.stat()
emit("stat", count, size)
resp, items, _ = pop.list()
for item in items:
    emit("list", item.decode())
resp, items, _ = pop.uidl()
for item in items:
    emit("uidl", item.decode())
for n in range(1, count + 1):
    resp, lines, octets = pop.retr(n)
    emit("retr", n, octets, hexlines(lines))
for n in range(1, count + 1):
    resp, lines, octets = pop.top(n, 0)
    emit("top", n, hexlines(lines))
for n in deletes:
    emit("dele", n, pop.dele(n).decode())
count, size = pop.stat()
emit("stat-after-dele", count, size)
emit("quit", pop.quit().decode())
print("\n".join(out))
"#;

/// With plaintext logins refused before TLS: USER must fail with
/// error_proto, then STLS and the same login succeed.
const POPLIB_REFUSED: &str = r#"
import poplib, ssl, sys

host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
pop = poplib.POP3(host, port, timeout=60)
print("capa", *sorted(pop.capa()))
try:
    pop.user("alice")
    print("user accepted")
except poplib.error_proto as e:
    print("error_proto", e.args[0].decode())
pop.stls(context=ssl.create_default_context(cafile=cafile))
print("capa-tls", *sorted(pop.capa()))
pop.user("alice")
pop.pass_("alice-pw")
print("stat", *pop.stat())
pop.quit()
"#;

fn python(script: &str, args: &[String]) -> Run {
    require("python3", "python3");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.py");
    std::fs::write(&path, script).unwrap();
    run(
        "python3 poplib",
        Command::new("python3").arg(&path).args(args),
        b"",
    )
}

fn unhex_lines(field: &str) -> Vec<Vec<u8>> {
    if field.is_empty() {
        return Vec::new();
    }
    field
        .split(',')
        .map(|l| hex::decode(l.strip_prefix('x').expect("x-prefixed hex line")).unwrap())
        .collect()
}

fn poplib_fetches_whole_mailbox(transport: Transport, offered: Offered) {
    let (s, msgs) = alice_server(offered.options());
    let deletes = [2usize, 6];
    let mode = match transport {
        Transport::Plain => "plain",
        Transport::Stls => "stls",
        Transport::Implicit => "implicit",
    };
    let r = python(
        POPLIB_FETCH,
        &[
            mode.into(),
            "127.0.0.1".into(),
            transport.port(&s).to_string(),
            s.cert_path().display().to_string(),
            "alice".into(),
            "alice-pw".into(),
            deletes.map(|n| n.to_string()).join(","),
        ],
    );
    r.assert_success();
    let out = r.stdout();
    let field = |key: &str| -> Vec<&str> {
        out.lines()
            .filter_map(|l| {
                let (k, rest) = l.split_once(' ').unwrap_or((l, ""));
                (k == key).then_some(rest)
            })
            .collect()
    };
    let one = |key: &str| -> &str {
        let v = field(key);
        assert_eq!(v.len(), 1, "{key} in poplib output:\n{out}");
        v[0]
    };

    assert!(one("welcome").starts_with("+OK Poplar"), "{out}");
    let caps: BTreeSet<&str> = one("capa").split(' ').collect();
    for cap in ["TOP", "UIDL", "USER", "SASL", "RESP-CODES", "PIPELINING"] {
        assert!(caps.contains(cap), "{cap} missing from CAPA: {caps:?}");
    }
    match transport {
        Transport::Plain => {
            assert!(caps.contains("STLS"), "{caps:?}");
            assert_eq!(one("tls"), "False");
        }
        Transport::Stls => {
            assert!(one("capa-before").split(' ').any(|c| c == "STLS"));
            assert_eq!(one("stls"), "+OK Begin TLS negotiation");
            assert!(!caps.contains("STLS"), "STLS offered inside TLS: {caps:?}");
            assert_eq!(one("tls"), "True");
        }
        Transport::Implicit => {
            assert!(!caps.contains("STLS"), "STLS offered inside TLS: {caps:?}");
            assert_eq!(one("tls"), "True");
        }
    }
    let total = total_size(&msgs);
    assert_eq!(
        one("pass"),
        format!("+OK Logged in, {} messages ({total} octets)", msgs.len())
    );
    assert_eq!(one("stat"), format!("{} {total}", msgs.len()));
    let want_list: Vec<String> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", i + 1, m.listed()))
        .collect();
    assert_eq!(field("list"), want_list);
    let want_uidl: Vec<String> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", i + 1, m.uid()))
        .collect();
    assert_eq!(field("uidl"), want_uidl);

    let retrs = field("retr");
    assert_eq!(retrs.len(), msgs.len());
    for (i, (m, line)) in msgs.iter().zip(&retrs).enumerate() {
        let mut parts = line.splitn(3, ' ');
        assert_eq!(parts.next(), Some((i + 1).to_string().as_str()));
        let octets: usize = parts.next().unwrap().parse().unwrap();
        let lines = unhex_lines(parts.next().unwrap_or(""));
        let wire = m.wire();
        assert_lines(
            &format!("poplib retr({}) [{}]", i + 1, m.uid()),
            &lines,
            &lines_of(&wire),
        );
        assert_eq!(octets, wire.len(), "poplib retr({}) octets", i + 1);
    }
    let tops = field("top");
    assert_eq!(tops.len(), msgs.len());
    for (i, (m, line)) in msgs.iter().zip(&tops).enumerate() {
        let (n, hexed) = line.split_once(' ').unwrap_or((line, ""));
        assert_eq!(n, (i + 1).to_string());
        assert_lines(
            &format!("poplib top({}, 0)", i + 1),
            &unhex_lines(hexed),
            &top0_lines(&m.wire()),
        );
    }
    let want_dele: Vec<String> = deletes
        .iter()
        .map(|n| format!("{n} +OK Message {n} deleted"))
        .collect();
    assert_eq!(field("dele"), want_dele);
    let left: usize = deletes.iter().map(|&n| msgs[n - 1].listed()).sum();
    assert_eq!(
        one("stat-after-dele"),
        format!("{} {}", msgs.len() - deletes.len(), total - left)
    );
    assert_eq!(one("quit"), "+OK Poplar signing off");
    // QUIT removed exactly the deleted messages.
    assert_eq!(uids_in(&s.maildir("alice")), uids_except(&msgs, &deletes));
    assert_logged_in_with(&s, "alice", "USER");
}

#[test]
fn poplib_plain() {
    poplib_fetches_whole_mailbox(Transport::Plain, Offered::Default);
}

#[test]
fn poplib_stls() {
    poplib_fetches_whole_mailbox(Transport::Stls, Offered::Default);
}

#[test]
fn poplib_implicit_tls() {
    poplib_fetches_whole_mailbox(Transport::Implicit, Offered::Default);
}

#[test]
fn poplib_plain_every_mechanism() {
    poplib_fetches_whole_mailbox(Transport::Plain, Offered::Every);
}

#[test]
fn poplib_stls_every_mechanism() {
    poplib_fetches_whole_mailbox(Transport::Stls, Offered::Every);
}

#[test]
fn poplib_implicit_tls_every_mechanism() {
    poplib_fetches_whole_mailbox(Transport::Implicit, Offered::Every);
}

#[test]
fn poplib_plaintext_user_refused_when_tls_required() {
    let (s, msgs) = alice_server(Options {
        plaintext_auth: "tls-only",
        ..Options::default()
    });
    let r = python(
        POPLIB_REFUSED,
        &[
            "127.0.0.1".into(),
            s.plain.port().to_string(),
            s.cert_path().display().to_string(),
        ],
    );
    r.assert_success();
    let out = r.stdout();
    let mut lines = out.lines();
    let capa = lines.next().unwrap();
    assert!(
        capa.contains(" STLS") && !capa.contains(" USER") && !capa.contains(" SASL"),
        "{out}"
    );
    let refused = lines.next().unwrap();
    assert!(
        refused.starts_with("error_proto -ERR [AUTH] Plaintext authentication disallowed"),
        "{out}"
    );
    let capa_tls = lines.next().unwrap();
    assert!(
        capa_tls.contains(" USER") && !capa_tls.contains(" STLS"),
        "{out}"
    );
    assert_eq!(
        lines.next().unwrap(),
        format!("stat {} {}", msgs.len(), total_size(&msgs))
    );
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

pub(crate) fn curl(what: &str, args: &[String]) -> Run {
    require("curl", "curl");
    run(
        what,
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "120"])
            .args(args),
        b"",
    )
}

/// curl's URL and TLS options for a transport, with the test certificate
/// trusted and 127.0.0.1 checked against its IP SAN.
fn curl_target(s: &TestServer, transport: Transport) -> (String, Vec<String>) {
    let cacert = vec!["--cacert".to_string(), s.cert_path().display().to_string()];
    match transport {
        Transport::Plain => (format!("pop3://127.0.0.1:{}", s.plain.port()), vec![]),
        Transport::Stls => (
            format!("pop3://127.0.0.1:{}", s.plain.port()),
            [vec!["--ssl-reqd".to_string()], cacert].concat(),
        ),
        Transport::Implicit => (format!("pop3s://127.0.0.1:{}", s.tls.port()), cacert),
    }
}

fn curl_fetches_whole_mailbox(transport: Transport, offered: Offered) {
    let (s, msgs) = alice_server(offered.options());
    let (base, tls) = curl_target(&s, transport);
    let auth = ["-u".to_string(), "alice:alice-pw".to_string()];

    // LIST, verbose to see how the session went.
    let list = curl(
        "curl LIST",
        &[
            tls.clone(),
            auth.to_vec(),
            vec!["-v".into(), format!("{base}/")],
        ]
        .concat(),
    );
    list.assert_success();
    let want: String = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, m.listed()))
        .collect();
    assert_eq!(list.stdout(), want, "{}", list.output());
    let log = list.stderr();
    match transport {
        Transport::Plain => assert!(!log.contains("SSL connection"), "{log}"),
        Transport::Stls => {
            assert!(log.contains("> STLS"), "{log}");
            assert!(log.contains("SSL connection using"), "{log}");
        }
        Transport::Implicit => {
            assert!(!log.contains("> STLS"), "{log}");
            assert!(log.contains("SSL connection using"), "{log}");
        }
    }

    // UIDL.
    let uidl = curl(
        "curl UIDL",
        &[
            tls.clone(),
            auth.to_vec(),
            vec!["-X".into(), "UIDL".into(), format!("{base}/")],
        ]
        .concat(),
    );
    uidl.assert_success();
    let want: String = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, m.uid()))
        .collect();
    assert_eq!(uidl.stdout(), want);

    // RETR every message, one URL each, in one curl run (curl reuses the
    // connection).
    let out = tempfile::tempdir().unwrap();
    let mut args = [tls.clone(), auth.to_vec()].concat();
    for n in 1..=msgs.len() {
        args.push(format!("{base}/{n}"));
        args.push("-o".into());
        args.push(out.path().join(format!("{n}.eml")).display().to_string());
    }
    curl("curl RETR", &args).assert_success();
    for (i, m) in msgs.iter().enumerate() {
        let got = std::fs::read(out.path().join(format!("{}.eml", i + 1))).unwrap();
        assert_bytes(
            &format!("curl RETR {} [{}] over {transport:?}", i + 1, m.uid()),
            &got,
            &m.wire(),
        );
    }

    // DELE 2 (no transfer), then QUIT deletes it.
    let dele = curl(
        "curl DELE",
        &[
            tls,
            auth.to_vec(),
            vec!["-X".into(), "DELE".into(), "-I".into(), format!("{base}/2")],
        ]
        .concat(),
    );
    dele.assert_success();
    assert_eq!(uids_in(&s.maildir("alice")), uids_except(&msgs, &[2]));
    // curl prefers PLAIN to LOGIN and knows no SCRAM.
    assert!(log.contains("> AUTH PLAIN"), "{log}");
    assert_logged_in_with(&s, "alice", "PLAIN");
}

#[test]
fn curl_plain() {
    curl_fetches_whole_mailbox(Transport::Plain, Offered::Default);
}

#[test]
fn curl_stls() {
    curl_fetches_whole_mailbox(Transport::Stls, Offered::Default);
}

#[test]
fn curl_implicit_tls() {
    curl_fetches_whole_mailbox(Transport::Implicit, Offered::Default);
}

#[test]
fn curl_plain_every_mechanism() {
    curl_fetches_whole_mailbox(Transport::Plain, Offered::Every);
}

#[test]
fn curl_stls_every_mechanism() {
    curl_fetches_whole_mailbox(Transport::Stls, Offered::Every);
}

#[test]
fn curl_implicit_tls_every_mechanism() {
    curl_fetches_whole_mailbox(Transport::Implicit, Offered::Every);
}

#[test]
fn curl_wrong_password_is_login_denied() {
    let (s, _) = alice_server(Options::default());
    for transport in [Transport::Plain, Transport::Implicit] {
        let (base, tls) = curl_target(&s, transport);
        let r = curl(
            "curl with a wrong password",
            &[
                tls,
                vec!["-u".into(), "alice:wrong".into(), format!("{base}/")],
            ]
            .concat(),
        );
        // CURLE_LOGIN_DENIED
        assert_eq!(r.code(), Some(67), "{}", r.output());
        assert!(r.stdout.is_empty());
    }
}

#[test]
fn curl_needs_stls_when_tls_required() {
    let (s, msgs) = alice_server(Options {
        plaintext_auth: "tls-only",
        ..Options::default()
    });
    let (base, _) = curl_target(&s, Transport::Plain);
    let attempt = |user: &str| {
        let r = curl(
            "curl without STLS",
            &["-v".into(), "-u".into(), user.into(), format!("{base}/")],
        );
        // CAPA on the plain connection offers neither USER nor SASL, so
        // curl never sends the password in the clear...
        let log = r.stderr();
        for cmd in ["> USER", "> PASS", "> AUTH"] {
            assert!(!log.contains(cmd), "{cmd} sent in the clear:\n{log}");
        }
        // ...and falls back to APOP (the greeting carries a timestamp).
        assert!(log.contains("> APOP "), "{}", r.output());
        r
    };
    // bob's password is stored only as a hash, so APOP cannot work for him:
    // without STLS he cannot log in at all.
    let bob = attempt("bob:bob-pw");
    // CURLE_LOGIN_DENIED
    assert_eq!(bob.code(), Some(67), "{}", bob.output());
    assert!(bob.stdout.is_empty(), "{}", bob.output());
    // alice's secret is stored in clear: APOP is not a plaintext login and
    // is allowed before TLS (as Dovecot allows it).
    let alice = attempt("alice:alice-pw");
    alice.assert_success();
    assert!(alice.stderr().contains("< +OK Logged in"));

    // With --ssl-reqd both log in with their password inside TLS.
    let (base, tls) = curl_target(&s, Transport::Stls);
    let ok = curl(
        "curl with STLS",
        &[
            tls.clone(),
            vec!["-u".into(), "alice:alice-pw".into(), format!("{base}/1")],
        ]
        .concat(),
    );
    ok.assert_success();
    assert_bytes("curl RETR 1 after STLS", &ok.stdout, &msgs[0].wire());
    let ok = curl(
        "curl with STLS",
        &[
            tls,
            vec![
                "-v".into(),
                "-u".into(),
                "bob:bob-pw".into(),
                format!("{base}/"),
            ],
        ]
        .concat(),
    );
    ok.assert_success();
    assert!(
        ok.stderr().contains("< +OK Logged in, 0 messages"),
        "{}",
        ok.output()
    );
}

// ---------------------------------------------------------------------------
// fetchmail
// ---------------------------------------------------------------------------

struct Fetchmail {
    home: tempfile::TempDir,
    out: PathBuf,
}

impl Fetchmail {
    fn new() -> Fetchmail {
        require("fetchmail", "fetchmail");
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("delivered");
        std::fs::create_dir(&out).unwrap();
        Fetchmail { home, out }
    }

    /// Writes the rc file and runs one poll with `auth password`, trusting
    /// the certificate in `trust`.
    fn poll(
        &self,
        s: &TestServer,
        transport: Transport,
        password: &str,
        keep_cr: bool,
        trust: &Path,
    ) -> Run {
        self.poll_with(s, transport, "password", password, keep_cr, trust)
    }

    /// Writes the rc file and runs one poll with the `auth` method given.
    fn poll_with(
        &self,
        s: &TestServer,
        transport: Transport,
        auth: &str,
        password: &str,
        keep_cr: bool,
        trust: &Path,
    ) -> Run {
        let home = path_str(self.home.path());
        let out = path_str(&self.out);
        let cert = path_str(trust);
        // fetchmail matches the certificate's CN and DNS SANs only, not IP
        // SANs: connect to 127.0.0.1 but check the name localhost.
        let verify = format!(
            "sslcertck sslcertfile \"{cert}\" sslcommonname \"localhost\" sslproto \"tls1.2+\""
        );
        let tls = match transport {
            // No STLS at all (sslproto "" disables it).
            Transport::Plain => "sslproto \"\"".to_string(),
            Transport::Stls => verify,
            Transport::Implicit => format!("ssl {verify}"),
        };
        let cr = if keep_cr { "no stripcr forcecr" } else { "" };
        let rc = format!(
            r#"set no syslog
set invisible
set idfile "{home}/fetchids"
poll 127.0.0.1 protocol pop3 port {port} auth {auth} timeout 60
  user "alice" there with password "{password}" is "alice" here
  keep fetchall no rewrite {cr}
  {tls}
  mda "cat > $(mktemp {out}/msg.XXXXXX)"
"#,
            port = transport.port(s),
        );
        let rc_path = self.home.path().join("fetchmailrc");
        write_private(&rc_path, &rc);
        run(
            "fetchmail",
            Command::new("fetchmail")
                .args(["--nodetach", "--verbose", "-f"])
                .arg(&rc_path)
                // As root the lock file would be /var/run/fetchmail.pid,
                // shared by all tests.
                .arg("--pidfile")
                .arg(self.home.path().join("fetchmail.pid"))
                // No ~/.fetchmailrc, ~/.fetchids or lock file of the user
                // running the tests; no FETCHMAILUSER/USER/LOGNAME, so the
                // MDA runs as the current user.
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", self.home.path())
                .env("FETCHMAILHOME", self.home.path())
                .env("LC_ALL", "C"),
            b"",
        )
    }
}

fn fetchmail_fetches_whole_mailbox(transport: Transport, keep_cr: bool, offered: Offered) {
    let (s, msgs) = alice_server(offered.options());
    let f = Fetchmail::new();
    // With every mechanism on, fetchmail chooses (it knows no SCRAM).
    let auth = match offered {
        Offered::Default => "password",
        Offered::Every => "any",
    };
    let r = f.poll_with(&s, transport, auth, "alice-pw", keep_cr, &s.cert_path());
    // 0: mail was retrieved.
    assert_eq!(r.code(), Some(0), "{}", r.output());
    let log = r.stdout() + &r.stderr();
    match transport {
        Transport::Plain => assert!(!log.contains("POP3> STLS"), "{log}"),
        Transport::Stls => assert!(log.contains("POP3> STLS"), "{log}"),
        Transport::Implicit => assert!(!log.contains("POP3> STLS"), "{log}"),
    }
    if transport != Transport::Plain {
        assert!(
            !log.contains("verification error") && !log.contains("mismatch"),
            "{log}"
        );
    }
    let want: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| {
            let mut w = m.wire();
            if !has_header_end(&w) {
                w.extend_from_slice(b"\r\n");
            }
            if keep_cr { w } else { to_lf(&w) }
        })
        .collect();
    assert_delivered(
        &format!("fetchmail over {transport:?}"),
        files_in(&f.out),
        &want,
    );
    // `keep`: nothing deleted.
    assert_eq!(uids_in(&s.maildir("alice")), uids_except(&msgs, &[]));
    assert!(log.contains("POP3> USER alice"), "{log}");
    assert_logged_in_with(&s, "alice", "USER");
}

#[test]
fn fetchmail_plain_strips_cr() {
    fetchmail_fetches_whole_mailbox(Transport::Plain, false, Offered::Default);
}

#[test]
fn fetchmail_stls() {
    fetchmail_fetches_whole_mailbox(Transport::Stls, true, Offered::Default);
}

#[test]
fn fetchmail_implicit_tls() {
    fetchmail_fetches_whole_mailbox(Transport::Implicit, true, Offered::Default);
}

#[test]
fn fetchmail_plain_every_mechanism() {
    fetchmail_fetches_whole_mailbox(Transport::Plain, false, Offered::Every);
}

#[test]
fn fetchmail_stls_every_mechanism() {
    fetchmail_fetches_whole_mailbox(Transport::Stls, true, Offered::Every);
}

#[test]
fn fetchmail_implicit_tls_every_mechanism() {
    fetchmail_fetches_whole_mailbox(Transport::Implicit, true, Offered::Every);
}

#[test]
fn fetchmail_login_failures() {
    let (s, _) = alice_server(Options::default());
    let f = Fetchmail::new();
    let r = f.poll(&s, Transport::Implicit, "wrong", true, &s.cert_path());
    // 3: authentication failed.
    assert_eq!(r.code(), Some(3), "{}", r.output());
    assert!(files_in(&f.out).is_empty());

    // A certificate fetchmail was not told to trust: no login at all.
    let (_other_dir, other) = other_certificate();
    for transport in [Transport::Stls, Transport::Implicit] {
        let r = f.poll(&s, transport, "alice-pw", true, &other);
        // 2: socket error (the TLS handshake was abandoned).
        assert_eq!(r.code(), Some(2), "{}", r.output());
        let log = r.stdout() + &r.stderr();
        assert!(log.contains("certificate verif"), "{log}");
        assert!(!log.contains("POP3> USER"), "{log}");
        assert!(files_in(&f.out).is_empty());
    }
    drop(s);

    let (s, _) = alice_server(Options {
        plaintext_auth: "tls-only",
        ..Options::default()
    });
    let r = f.poll(&s, Transport::Plain, "alice-pw", true, &s.cert_path());
    assert_eq!(r.code(), Some(3), "{}", r.output());
    assert!(
        (r.stdout() + &r.stderr()).contains("Plaintext authentication disallowed"),
        "{}",
        r.output()
    );
    assert!(files_in(&f.out).is_empty());
}

// ---------------------------------------------------------------------------
// mpop
// ---------------------------------------------------------------------------

struct Mpop {
    home: tempfile::TempDir,
    maildir: PathBuf,
}

impl Mpop {
    fn new() -> Mpop {
        require("mpop", "mpop");
        let home = tempfile::tempdir().unwrap();
        let maildir = home.path().join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        Mpop { home, maildir }
    }

    /// Runs mpop once for alice with a method per transport (user, plain,
    /// login); `trust` is the tls_trust_file value.
    fn fetch(&self, s: &TestServer, transport: Transport, trust: &str) -> Run {
        let auth = match transport {
            Transport::Plain => "user",
            Transport::Stls => "plain",
            Transport::Implicit => "login",
        };
        self.fetch_with(s, transport, auth, trust)
    }

    /// Runs mpop once for alice with the `auth` method given (`on`: mpop
    /// chooses).
    fn fetch_with(&self, s: &TestServer, transport: Transport, auth: &str, trust: &str) -> Run {
        let (tls, starttls) = match transport {
            Transport::Plain => ("off", "on"),
            Transport::Stls => ("on", "on"),
            Transport::Implicit => ("on", "off"),
        };
        let rc = format!(
            r#"defaults
timeout 60
account alice
host 127.0.0.1
port {port}
user alice
passwordeval "echo alice-pw"
auth {auth}
tls {tls}
tls_starttls {starttls}
tls_trust_file {trust}
delivery maildir {maildir}
keep on
received_header off
uidls_file {home}/uidls
"#,
            port = transport.port(s),
            maildir = path_str(&self.maildir),
            home = path_str(self.home.path()),
        );
        let rc_path = self.home.path().join("mpoprc");
        write_private(&rc_path, &rc);
        run(
            "mpop",
            Command::new("mpop")
                .arg(format!("--file={}", rc_path.display()))
                .arg("alice")
                .env("HOME", self.home.path())
                .env("LC_ALL", "C"),
            b"",
        )
    }

    fn delivered(&self) -> Vec<(String, Vec<u8>)> {
        assert!(files_in(&self.maildir.join("tmp")).is_empty());
        assert!(files_in(&self.maildir.join("cur")).is_empty());
        files_in(&self.maildir.join("new"))
    }
}

/// `auth` is mpop's method, `expect` the mechanism it must log in with.
fn mpop_fetches_whole_mailbox(transport: Transport, offered: Offered, auth: &str, expect: &str) {
    let (s, mut msgs) = alice_server(offered.options());
    let m = Mpop::new();
    let cert = s.cert_path();
    let cert = path_str(&cert);
    let r = m.fetch_with(&s, transport, auth, cert);
    r.assert_success();
    let want: Vec<Vec<u8>> = msgs.iter().map(|m| to_lf(&m.wire())).collect();
    assert_delivered(&format!("mpop over {transport:?}"), m.delivered(), &want);
    // mpop recorded exactly the server's UIDLs.
    let uidls = std::fs::read_to_string(m.home.path().join("uidls")).unwrap();
    let recorded: BTreeSet<&str> = uidls
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
        .collect();
    let want_uids: BTreeSet<&str> = msgs.iter().map(|m| m.uid()).collect();
    assert_eq!(recorded, want_uids, "{uidls}");

    // Again: the UIDLs are unchanged, so nothing is new.
    let r = m.fetch_with(&s, transport, auth, cert);
    r.assert_success();
    assert_eq!(m.delivered().len(), msgs.len(), "{}", r.output());

    // A new delivery: only that one is fetched.
    let extra = Stored {
        sub: "new",
        name: "1700000100.M9P9.test",
        bytes: b"From: g@example.org\nSubject: later\n\n.later\n".to_vec(),
        downgraded_header: None,
    };
    put_message(&s.maildir("alice"), extra.sub, extra.name, &extra.bytes);
    msgs.push(extra);
    let r = m.fetch_with(&s, transport, auth, cert);
    r.assert_success();
    let want: Vec<Vec<u8>> = msgs.iter().map(|m| to_lf(&m.wire())).collect();
    assert_delivered(
        &format!("mpop over {transport:?}, third run"),
        m.delivered(),
        &want,
    );
    // `keep on`: nothing deleted.
    assert_eq!(uids_in(&s.maildir("alice")), uids_except(&msgs, &[]));
    assert_logged_in_with(&s, "alice", expect);
}

#[test]
fn mpop_plain() {
    mpop_fetches_whole_mailbox(Transport::Plain, Offered::Default, "user", "USER");
}

#[test]
fn mpop_stls() {
    mpop_fetches_whole_mailbox(Transport::Stls, Offered::Default, "plain", "PLAIN");
}

#[test]
fn mpop_implicit_tls() {
    mpop_fetches_whole_mailbox(Transport::Implicit, Offered::Default, "login", "LOGIN");
}

// With every mechanism on, mpop (`auth on`) chooses SCRAM-SHA-256 without
// TLS and PLAIN inside TLS (it prefers PLAIN once the channel is secure).

#[test]
fn mpop_plain_every_mechanism() {
    mpop_fetches_whole_mailbox(Transport::Plain, Offered::Every, "on", "SCRAM-SHA-256");
}

#[test]
fn mpop_stls_every_mechanism() {
    mpop_fetches_whole_mailbox(Transport::Stls, Offered::Every, "on", "PLAIN");
}

#[test]
fn mpop_implicit_tls_every_mechanism() {
    mpop_fetches_whole_mailbox(Transport::Implicit, Offered::Every, "on", "PLAIN");
}

#[test]
fn mpop_refuses_untrusted_certificate_and_plaintext_when_tls_required() {
    // The system CAs do not include the self-signed test certificate.
    let (s, _) = alice_server(Options::default());
    let m = Mpop::new();
    for transport in [Transport::Stls, Transport::Implicit] {
        let r = m.fetch(&s, transport, "system");
        assert!(!r.status.success(), "{}", r.output());
        assert!(m.delivered().is_empty());
    }
    drop(s);

    let (s, _) = alice_server(Options {
        plaintext_auth: "tls-only",
        ..Options::default()
    });
    let r = m.fetch(&s, Transport::Plain, "system");
    assert!(!r.status.success(), "{}", r.output());
    assert!(
        r.stderr().contains("Plaintext authentication disallowed"),
        "{}",
        r.output()
    );
    assert!(m.delivered().is_empty());
    // With STLS it works.
    let cert = s.cert_path();
    m.fetch(&s, Transport::Stls, path_str(&cert))
        .assert_success();
    assert_eq!(m.delivered().len(), mailbox().len());
}

// ---------------------------------------------------------------------------
// openssl s_client
// ---------------------------------------------------------------------------

fn s_client(s: &TestServer, transport: Transport, verify: &[&str], input: &str) -> Run {
    require("openssl", "openssl");
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", transport.port(s)));
    if transport == Transport::Stls {
        cmd.args(["-starttls", "pop3"]);
    }
    // -crlf: our LF lines go out as CRLF; -ign_eof: keep reading after
    // stdin ends, until the server closes the connection after QUIT.
    cmd.args(["-crlf", "-ign_eof", "-verify_return_error"])
        .args(verify);
    run("openssl s_client", &mut cmd, input.as_bytes())
}

#[test]
fn openssl_s_client_stls_and_implicit_tls() {
    openssl_s_client_logs_in(Offered::Default);
}

#[test]
fn openssl_s_client_stls_and_implicit_tls_every_mechanism() {
    openssl_s_client_logs_in(Offered::Every);
}

fn openssl_s_client_logs_in(offered: Offered) {
    let (s, msgs) = alice_server(offered.options());
    let cert = s.cert_path().display().to_string();
    let total = total_size(&msgs);
    for (transport, name_check) in [
        (Transport::Stls, ["-verify_hostname", "localhost"]),
        (Transport::Implicit, ["-verify_ip", "127.0.0.1"]),
    ] {
        let verify = ["-CAfile", &cert, name_check[0], name_check[1]];
        let r = s_client(
            &s,
            transport,
            &verify,
            "USER alice\nPASS alice-pw\nSTAT\nQUIT\n",
        );
        r.assert_success();
        let out = r.stdout();
        assert!(out.contains("Verify return code: 0 (ok)"), "{}", r.output());
        assert!(
            out.contains(&format!(
                "+OK Logged in, {} messages ({total} octets)\r\n",
                msgs.len()
            )),
            "{}",
            r.output()
        );
        assert!(
            out.contains(&format!("\r\n+OK {} {total}\r\n", msgs.len())),
            "{}",
            r.output()
        );
        assert!(out.contains("+OK Poplar signing off\r\n"), "{}", r.output());
        if transport == Transport::Implicit {
            assert!(out.contains("+OK Poplar POP3 server ready <"), "{out}");
        }
    }
    assert_logged_in_with(&s, "alice", "USER");
}

#[test]
fn openssl_s_client_rejects_unverified_certificate() {
    let (s, _) = alice_server(Options::default());
    let cert = s.cert_path().display().to_string();
    for transport in [Transport::Stls, Transport::Implicit] {
        // Only the system CAs: the self-signed certificate is not trusted.
        let r = s_client(&s, transport, &[], "QUIT\n");
        assert!(!r.status.success(), "{}", r.output());
        assert!(r.stderr().contains("verify error"), "{}", r.output());
        assert!(!r.stdout().contains("signing off"), "{}", r.output());
        // Trusted, but for another name.
        let r = s_client(
            &s,
            transport,
            &["-CAfile", &cert, "-verify_hostname", "mail.example.org"],
            "QUIT\n",
        );
        assert!(!r.status.success(), "{}", r.output());
        assert!(r.stderr().contains("verify error"), "{}", r.output());
    }
}
