//! Operator commands: `poplar pw hash` (its hashes log in through the real
//! auth-passwd plugin), `poplar plugin check` on the built plugins and on
//! files that are not components, and `--log-format json`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Options, PASSWD, PLUGIN_DIR, POPLAR, TestServer};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `poplar ARGS` with `stdin` as its standard input.
fn poplar(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(POPLAR)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused invocation may exit before reading its input (EPIPE).
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// `poplar pw hash --password-stdin` with extra arguments; the password
/// field it printed.
fn pw_hash(args: &[&str], password: &str) -> String {
    let mut all = vec!["pw", "hash", "--password-stdin"];
    all.extend_from_slice(args);
    let out = poplar(&all, format!("{password}\n").as_bytes());
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let field = stdout.strip_suffix('\n').expect("one line");
    assert!(!field.contains('\n'), "{stdout}");
    field.to_string()
}

/// Tries USER/PASS; true if the server accepted the password.
fn can_log_in(s: &TestServer, user: &str, password: &str) -> bool {
    let mut c = s.connect();
    c.ok(&format!("USER {user}"));
    let reply = c.cmd(&format!("PASS {password}"));
    if reply.starts_with("+OK") {
        c.ok("STAT");
        c.ok("QUIT");
        true
    } else {
        assert!(reply.starts_with("-ERR [AUTH]"), "{user}: {reply}");
        false
    }
}

#[test]
fn pw_hash_every_scheme_logs_in_over_pop3() {
    let password = "Tr0ub4dor & 3 horses";
    let schemes: [(&str, &[&str], &str); 7] = [
        ("sha512", &[], "{SHA512-CRYPT}$6$rounds=5000$"),
        (
            "sha256",
            &["--scheme", "SHA256-CRYPT"],
            "{SHA256-CRYPT}$5$rounds=5000$",
        ),
        ("blf", &["--scheme", "BLF-CRYPT"], "{BLF-CRYPT}$2y$12$"),
        (
            "argon2",
            &["--scheme", "ARGON2ID"],
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$",
        ),
        (
            "argon2-small",
            &[
                "-s",
                "argon2id",
                "--memory",
                "4096",
                "-r",
                "2",
                "--parallelism",
                "2",
            ],
            "{ARGON2ID}$argon2id$v=19$m=4096,t=2,p=2$",
        ),
        (
            "scram",
            &["--scheme", "SCRAM-SHA-256"],
            "{SCRAM-SHA-256}4096,",
        ),
        (
            "plain",
            &["--scheme", "plain"],
            "{PLAIN}Tr0ub4dor & 3 horses",
        ),
    ];
    let mut passwd = PASSWD.to_string();
    for (user, args, prefix) in schemes {
        let field = pw_hash(args, password);
        assert!(field.starts_with(prefix), "{user}: {field}");
        passwd.push_str(&format!("op-{user}:{field}::::::\n"));
    }
    // Fresh salt every time.
    assert_ne!(pw_hash(&[], password), pw_hash(&[], password));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), &passwd).unwrap();
    let s = TestServer::start_in(dir, Options::default());
    for (user, _, _) in schemes {
        let user = format!("op-{user}");
        assert!(can_log_in(&s, &user, password), "{user} with the password");
        assert!(
            !can_log_in(&s, &user, "Tr0ub4dor & 3 horse"),
            "{user} with a wrong password"
        );
    }
    // The users already in the file still work.
    assert!(can_log_in(&s, "alice", "alice-pw"));
}

#[test]
fn pw_hash_options_and_refusals() {
    assert!(pw_hash(&["--rounds", "6000"], "x").starts_with("{SHA512-CRYPT}$6$rounds=6000$"));
    assert!(pw_hash(&["-s", "BLF-CRYPT", "-r", "5"], "x").starts_with("{BLF-CRYPT}$2y$05$"));
    assert!(
        pw_hash(&["-s", "SCRAM-SHA-256", "-r", "5000"], "x").starts_with("{SCRAM-SHA-256}5000,")
    );
    // A colon cannot stand in a passwd-file field.
    assert_eq!(pw_hash(&["-s", "PLAIN"], "a:b"), "{PLAIN.B64}YTpi");
    // CRLF line endings are stripped too.
    let out = poplar(
        &["pw", "hash", "--password-stdin", "-s", "PLAIN"],
        b"pw\r\nignored\n",
    );
    assert_eq!(text(&out.stdout), "{PLAIN}pw\n");

    let refused: [(&[&str], &[u8], i32, &str); 7] = [
        (
            &["-s", "PLAIN", "-r", "5"],
            b"x\n",
            64,
            "PLAIN takes no --rounds",
        ),
        (&["-r", "10"], b"x\n", 64, "--rounds for SHA512-CRYPT"),
        (
            &["-s", "BLF-CRYPT", "--memory", "64"],
            b"x\n",
            64,
            "apply to ARGON2ID",
        ),
        (&["-s", "SCRAM-SHA-256", "-r", "1"], b"x\n", 64, "--rounds"),
        (&[], b"\n", 64, "empty"),
        (&[], b"", 64, "no password"),
        (&["-s", "MD5"], b"x\n", 2, "invalid value"),
    ];
    for (args, stdin, code, needle) in refused {
        let mut all = vec!["pw", "hash", "--password-stdin"];
        all.extend_from_slice(args);
        let out = poplar(&all, stdin);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }

    // Without --password-stdin, standard input must be a terminal.
    let out = Command::new(POPLAR)
        .args(["pw", "hash"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--password-stdin"),
        "{}",
        text(&out.stderr)
    );
}

/// A pseudo-terminal: the master side (the keyboard and screen) and the
/// slave side (the program's terminal).
struct Pty {
    master: std::fs::File,
    slave: std::fs::File,
}

impl Pty {
    fn open() -> Pty {
        // SAFETY: plain libc calls on a descriptor we own; every result is
        // checked.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            let master = OwnedFd::from_raw_fd(fd);
            assert_eq!(libc::grantpt(fd), 0);
            assert_eq!(libc::unlockpt(fd), 0);
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
            let path = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_str()
                .unwrap()
                .to_string();
            let slave = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(path)
                .unwrap();
            Pty {
                master: master.into(),
                slave,
            }
        }
    }

    /// Whether the terminal echoes what is typed.
    fn echoes(&self) -> bool {
        // SAFETY: termios is plain data, filled in by tcgetattr.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(self.slave.as_raw_fd(), &mut t), 0);
            t.c_lflag & libc::ECHO != 0
        }
    }
}

/// Everything the terminal shows, collected by a thread.
fn collect(master: &std::fs::File) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut reader = master.try_clone().unwrap();
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        // Ends with EIO once no process holds the slave side open.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    seen
}

fn wait_for(seen: &Mutex<Vec<u8>>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if text(&seen.lock().unwrap()).contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "the terminal never showed {needle:?}: {:?}",
        text(&seen.lock().unwrap())
    );
}

/// Runs `poplar pw hash -s PLAIN` on a terminal, typing `first` and
/// `second` at the prompts. Returns its output and what the terminal shows.
fn pw_hash_on_a_terminal(first: &str, second: &str) -> (Output, Arc<Mutex<Vec<u8>>>) {
    let pty = Pty::open();
    assert!(pty.echoes(), "a new terminal echoes");
    let seen = collect(&pty.master);
    let child = Command::new(POPLAR)
        .args(["pw", "hash", "--scheme", "PLAIN"])
        .stdin(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = pty.master.try_clone().unwrap();
    // Typed only once echo is off: the prompt comes after.
    wait_for(&seen, "Enter new password: ");
    keys.write_all(format!("{first}\n").as_bytes()).unwrap();
    wait_for(&seen, "Retype new password: ");
    keys.write_all(format!("{second}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(pty.echoes(), "echo is back on after the command");
    (out, seen)
}

#[test]
fn pw_hash_reads_from_a_terminal_without_echo() {
    let (out, seen) = pw_hash_on_a_terminal("s3cret pw", "s3cret pw");
    let shown = text(&seen.lock().unwrap());
    assert!(out.status.success(), "{shown}");
    assert_eq!(text(&out.stdout), "{PLAIN}s3cret pw\n");
    assert!(
        !shown.contains("s3cret"),
        "the password was echoed: {shown:?}"
    );

    let (out, seen) = pw_hash_on_a_terminal("s3cret pw", "s3cret pq");
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty());
    wait_for(&seen, "do not match");
    let shown = text(&seen.lock().unwrap());
    assert!(!shown.contains("s3cret"), "{shown:?}");
}

/// `poplar plugin check FILE [ARGS]`.
fn plugin_check(file: &Path, args: &[&str]) -> Output {
    Command::new(POPLAR)
        .args(["plugin", "check"])
        .arg(file)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The world lines of a report: `(world, satisfied)`.
fn worlds(report: &str) -> Vec<(String, bool)> {
    let start = report.find("worlds:\n").expect("a worlds section") + "worlds:\n".len();
    report[start..]
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let mut words = l.split_whitespace();
            let world = words.next().unwrap().to_string();
            (world, words.next() == Some("yes"))
        })
        .collect()
}

fn satisfied(report: &str) -> Vec<String> {
    worlds(report)
        .into_iter()
        .filter(|(_, yes)| *yes)
        .map(|(w, _)| w)
        .collect()
}

#[test]
fn plugin_check_on_the_built_plugins() {
    let dir = Path::new(PLUGIN_DIR);

    let storage = dir.join("storage_maildir.wasm");
    let out = plugin_check(&storage, &[]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert_eq!(satisfied(&report), ["storage-plugin"], "{report}");
    assert_eq!(worlds(&report).len(), 4, "{report}");
    let bytes = std::fs::read(&storage).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert!(report.contains(&format!("sha256:  {digest}\n")), "{report}");
    assert!(
        report.contains(&format!("size:    {} bytes\n", bytes.len())),
        "{report}"
    );
    for needle in [
        "exports (1):\n  poplar:plugin/storage@0.2.0\n",
        "  poplar:plugin/host@0.2.0\n",
        "  poplar:plugin/message@0.2.0\n",
        "wasi:filesystem/preopens@0.2",
        "imports Poplar does not provide: none\n",
    ] {
        assert!(report.contains(needle), "{needle:?} not in {report}");
    }
    assert!(
        plugin_check(&storage, &["--world", "storage"])
            .status
            .success()
    );

    let bayes = dir.join("filter_bayes.wasm");
    let out = plugin_check(&bayes, &[]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert_eq!(
        satisfied(&report),
        ["filter-plugin", "trainable-filter-plugin"],
        "{report}"
    );
    for world in ["filter", "trainable-filter"] {
        let out = plugin_check(&bayes, &["--world", world]);
        assert!(out.status.success(), "{world}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("OK: implements"), "{world}");
    }
    assert_eq!(
        plugin_check(&bayes, &["--world", "auth"]).status.code(),
        Some(1)
    );

    // A plain filter is not trainable.
    let rules = dir.join("filter_rules.wasm");
    let out = plugin_check(&rules, &["--world", "trainable-filter"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("poplar:plugin/trainer@0.2.0"));
    assert_eq!(satisfied(&text(&out.stdout)), ["filter-plugin"]);

    let auth = dir.join("auth_passwd.wasm");
    let out = plugin_check(&auth, &["--world", "storage"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not implement storage-plugin")
            && err.contains("does not export poplar:plugin/storage@0.2.0"),
        "{err}"
    );
    assert_eq!(satisfied(&text(&out.stdout)), ["auth-plugin"]);
    assert!(plugin_check(&auth, &["--world", "auth"]).status.success());
}

#[test]
fn plugin_check_refuses_what_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "core WebAssembly module, not a component",
        ),
        (
            "garbage.wasm",
            b"MZ\x90\0 this is not wasm",
            "not a WebAssembly component",
        ),
        ("empty.wasm", b"", "not a WebAssembly component"),
        (
            "truncated.wasm",
            b"\0asm\x0d\0\x01\0\x07\xff",
            "not a valid component",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        for args in [&[][..], &["--world", "filter"]] {
            let out = plugin_check(&path, args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{name}: {err}");
            assert!(err.contains(needle), "{name}: {needle:?} not in {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let out = plugin_check(&dir.path().join("missing.wasm"), &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn json_logs_carry_the_logout_fields() {
    let s = TestServer::start_with(Options {
        env: vec![("POPLAR_LOG_FORMAT".into(), "json".into())],
        ..Options::default()
    });
    let mut c = s.login("alice", "alice-pw");
    c.ok("QUIT");
    let line = s.wait_for_log("session ended");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["message"], "session ended", "{line}");
    assert_eq!(v["level"], "INFO", "{line}");
    assert_eq!(v["user"], "alice", "{line}");
    assert_eq!(v["mechanism"], "USER", "{line}");
    assert_eq!(v["retr"], 0, "{line}");
    assert_eq!(v["end"], "Quit", "{line}");
    let peer = v["peer"].as_str().unwrap_or_else(|| panic!("{line}"));
    assert!(peer.starts_with("127.0.0.1:"), "{line}");
    assert!(v["timestamp"].is_string(), "{line}");
    // Every line is JSON, the startup lines too.
    for l in s.log().lines() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(l);
        assert!(
            parsed.is_ok_and(|v| v.is_object()),
            "not a JSON object: {l}"
        );
    }
}

#[test]
fn log_format_option_is_checked() {
    let out = Command::new(POPLAR)
        .args(["--log-format", "xml", "plugin", "check", "x.wasm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("xml"));
    // Global: accepted after the subcommand too.
    let out = poplar(
        &[
            "pw",
            "hash",
            "--password-stdin",
            "-s",
            "PLAIN",
            "--log-format",
            "json",
        ],
        b"x\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------------
// `poplar mailbox`: list, stats, search and expunge through the real plugins,
// and the `[quota]` checked at delivery.

/// Runs `poplar mailbox VERB USER ARGS --config <the server's config>`.
fn mailbox(s: &TestServer, verb: &str, user: &str, args: &[&str]) -> Output {
    let config = s.dir.path().join("poplar.toml");
    let mut all = vec!["mailbox", verb, user, "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    poplar(&all, b"")
}

/// `poplar mailbox ... --json`, which must succeed: the document.
fn mailbox_json(s: &TestServer, verb: &str, user: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = mailbox(s, verb, user, &all);
    assert!(
        out.status.success(),
        "{verb} {args:?}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// The UIDLs `poplar mailbox search` finds (exit 1 when none).
fn search_uids(s: &TestServer, args: &[&str]) -> Vec<String> {
    let mut all = args.to_vec();
    all.push("--json");
    let out = mailbox(s, "search", "alice", &all);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{args:?}: {}", text(&out.stderr)));
    let uids: Vec<String> = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["uid"].as_str().unwrap().to_string())
        .collect();
    let want = if uids.is_empty() { 1 } else { 0 };
    assert_eq!(out.status.code(), Some(want), "{args:?}");
    uids
}

const INVOICE: &str = "1700000001.M1P1.test";
const LUNCH: &str = "1700000002.M1P1.test";
const BIG: &str = "1700000003.M1P1.test";

/// alice's inbox: an invoice from Bob (2023), a lunch note with an encoded
/// sender and a folded subject (2024), and a large undated message whose
/// file is from 2020 with a needle near its end.
fn mailbox_fixture() -> TestServer {
    let s = TestServer::start();
    let md = s.maildir("alice");
    crate::harness::put_message(
        &md,
        "new",
        INVOICE,
        b"From: Bob Builder <bob@example.org>\r\n\
          Subject: Invoice 42\r\n\
          Date: Tue, 14 Nov 2023 22:13:21 +0000\r\n\
          \r\n\
          Please pay the INVOICE by Friday.\r\n",
    );
    crate::harness::put_message(
        &md,
        "cur",
        &format!("{LUNCH}:2,S"),
        "From: =?UTF-8?Q?Ren=C3=A9e?= <renee@example.org>\n\
         Subject: Lunch\n tomorrow?\n\
         X-Mailer: Pigeon 2.0\n\
         Date: Fri, 1 Mar 2024 09:00:00 +0100 (CET)\n\
         \n\
         See you at noon.\n"
            .as_bytes(),
    );
    let mut big = b"From: carol@example.org\nSubject: logs\n\n".to_vec();
    while big.len() < 300_000 {
        big.extend_from_slice(b"2020-01-01 00:00:00 nothing happened here\n");
    }
    big.extend_from_slice(b"and then a NEEDLE\n");
    crate::harness::put_message(&md, "cur", &format!("{BIG}:2,S"), &big);
    let jan_2020 = std::time::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
    std::fs::File::options()
        .write(true)
        .open(md.join("cur").join(format!("{BIG}:2,S")))
        .unwrap()
        .set_modified(jan_2020)
        .unwrap();
    s
}

#[test]
fn mailbox_list_and_stats() {
    let s = mailbox_fixture();
    let out = mailbox(&s, "list", "alice", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("#  UIDL"), "{table}");
    assert!(
        lines[1].starts_with(&format!("1  {INVOICE}"))
            && lines[1].contains("2023-11-14 22:13")
            && lines[1].contains("Invoice 42"),
        "{table}"
    );
    assert!(
        lines[2].contains("2024-03-01 08:00") && lines[2].contains("Renée <renee@example.org>"),
        "{table}"
    );
    assert!(
        lines[2].contains("Lunch tomorrow?"),
        "folding undone: {table}"
    );
    assert!(lines[4].starts_with("3 messages ("), "{table}");

    let doc = mailbox_json(&s, "list", "alice", &[]);
    let msgs = doc["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["uid"], INVOICE);
    assert_eq!(msgs[1]["number"], 2);
    assert_eq!(msgs[1]["subject"], "Lunch tomorrow?");
    assert_eq!(msgs[2]["date"], serde_json::Value::Null);
    assert_eq!(doc["folder"], serde_json::Value::Null);

    let out = mailbox(&s, "stats", "alice", &[]);
    let stats = text(&out.stdout);
    assert!(stats.contains("messages   3 (no limit)"), "{stats}");
    assert!(stats.contains("quota      no quota"), "{stats}");
    let doc = mailbox_json(&s, "stats", "alice", &[]);
    assert_eq!(doc["messages"], 3);
    let stored: u64 = msgs
        .iter()
        .map(|m| m["stored_size"].as_u64().unwrap())
        .sum();
    assert_eq!(doc["stored_octets"], stored);
    assert_eq!(doc["usage"]["messages"], 3, "no folders: the inbox is all");
    assert_eq!(doc["usage"]["octets"], stored);
    assert_eq!(doc["quota"]["messages"], serde_json::Value::Null);
    assert_eq!(doc["full"], false);

    // An empty folder, and a user the auth plugin does not know.
    let doc = mailbox_json(&s, "list", "alice", &["--folder", "Junk"]);
    assert_eq!(doc["messages"].as_array().unwrap().len(), 0);
    let out = mailbox(&s, "list", "nobody", &[]);
    assert_eq!(out.status.code(), Some(67), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown user \"nobody\""));
    // A configuration that does not load.
    let out = poplar(
        &["mailbox", "stats", "alice", "--config", "/nonexistent.toml"],
        b"",
    );
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn mailbox_search_criteria() {
    let s = mailbox_fixture();
    assert_eq!(search_uids(&s, &["--from", "BOB"]), [INVOICE]);
    assert_eq!(search_uids(&s, &["--from", "renée"]), [LUNCH]);
    assert_eq!(search_uids(&s, &["--subject", "lunch TOMORROW"]), [LUNCH]);
    assert_eq!(search_uids(&s, &["--header", "x-mailer:pigeon"]), [LUNCH]);
    assert_eq!(search_uids(&s, &["--header", "X-Mailer:"]), [LUNCH]);
    assert_eq!(search_uids(&s, &["--body", "invoice"]), [INVOICE]);
    assert_eq!(search_uids(&s, &["--body", "needle"]), [BIG]);
    // Dates: the Date field, else the file's time (2020 for the big one).
    assert_eq!(search_uids(&s, &["--since", "2024-01-01"]), [LUNCH]);
    assert_eq!(search_uids(&s, &["--before", "2024-01-01"]), [INVOICE, BIG]);
    assert_eq!(
        search_uids(
            &s,
            &["--since", "2023-11-14T22:13:21Z", "--before", "2023-11-15"]
        ),
        [INVOICE]
    );
    assert_eq!(search_uids(&s, &["--larger", "100K"]), [BIG]);
    assert_eq!(search_uids(&s, &["--smaller", "100K"]), [INVOICE, LUNCH]);
    // Criteria are ANDed.
    assert_eq!(
        search_uids(&s, &["--header", "X-Mailer:pigeon", "--body", "noon"]),
        [LUNCH]
    );
    assert!(search_uids(&s, &["--header", "X-Mailer:pigeon", "--body", "invoice"]).is_empty());
    assert!(search_uids(&s, &["--body", "no such text anywhere"]).is_empty());

    // The table for people, and its exit code when nothing matches.
    let out = mailbox(&s, "search", "alice", &["--subject", "invoice"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("1 message ("),
        "{}",
        text(&out.stdout)
    );
    let out = mailbox(&s, "search", "alice", &["--subject", "nothing like it"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("0 messages (0 octets) in alice's inbox"));

    // Bad criteria are usage errors (64) that say what is wrong.
    for (args, needle) in [
        (
            &["--since", "2024-13-45"][..],
            "--since \"2024-13-45\": not a date",
        ),
        (&["--before", "last tuesday"][..], "--before"),
        (&["--larger", "huge"][..], "--larger \"huge\": not a size"),
        (&["--header", "no colon"][..], "NAME:TEXT"),
    ] {
        let out = mailbox(&s, "search", "alice", args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn mailbox_expunge_then_pop3_sees_the_rest() {
    let s = mailbox_fixture();
    let md = s.maildir("alice");
    let before = crate::harness::maildir_files(&md);
    assert_eq!(before.len(), 3);

    // Refusals remove nothing.
    let out = mailbox(&s, "expunge", "alice", &[]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let out = mailbox(&s, "expunge", "alice", &["--all", "--from", "bob"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let out = mailbox(&s, "expunge", "alice", &["--uid", INVOICE, "no-such-uidl"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-uidl"));
    let out = mailbox(&s, "expunge", "alice", &["--since", "soon"]);
    assert_eq!(out.status.code(), Some(64));
    // A dry run shows what would go.
    let out = mailbox(&s, "expunge", "alice", &["--from", "bob", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains(INVOICE), "{shown}");
    assert!(shown.contains("dry run: would expunge 1 message from alice's inbox"));
    assert_eq!(crate::harness::maildir_files(&md), before);

    // By UIDL, then by criteria.
    let out = mailbox(&s, "expunge", "alice", &["--uid", INVOICE]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("expunged 1 message from alice's inbox"));
    let doc = mailbox_json(&s, "expunge", "alice", &["--subject", "lunch"]);
    assert_eq!(doc["deleted"], 1);
    assert_eq!(doc["dry_run"], false);
    assert_eq!(doc["messages"][0]["uid"], LUNCH);

    // POP3 sees only the big message.
    let mut c = s.login("alice", "alice-pw");
    let stat = c.ok("STAT");
    assert!(stat.starts_with("+OK 1 "), "{stat}");
    c.ok("UIDL");
    assert_eq!(
        text(&c.multiline()),
        format!("1 {BIG}\r\n"),
        "only the big message is left"
    );
    c.ok("RETR 1");
    assert!(text(&c.multiline()).ends_with("and then a NEEDLE\r\n"));
    c.ok("QUIT");
    assert_eq!(crate::harness::maildir_files(&md).len(), 1);

    // --all empties the mailbox.
    let out = mailbox(&s, "expunge", "alice", &["--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(crate::harness::maildir_files(&md).is_empty());
}

/// `poplar deliver --user USER [--folder FOLDER]` with `message`; its
/// output.
fn deliver_raw(s: &TestServer, user: &str, folder: Option<&str>, message: &[u8]) -> Output {
    let config = s.dir.path().join("poplar.toml");
    let mut args = vec![
        "deliver",
        "--config",
        config.to_str().unwrap(),
        "--user",
        user,
    ];
    if let Some(folder) = folder {
        args.extend(["--folder", folder]);
    }
    poplar(&args, message)
}

/// `GET /metrics` on the admin listener.
fn metrics(addr: std::net::SocketAddr) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).unwrap();
    body
}

/// The quota counts a user's whole mail: the inbox and every folder
/// (`user+Folder@` delivers into a folder, so a per-mailbox count would let
/// anyone past it).
#[test]
fn quota_refuses_delivery_when_the_mailbox_is_full() {
    let opts = crate::delivery::lmtp_config(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [quota]\nmessages = 100\nbytes = 0\n\
         [quota.users.alice]\nmessages = 2\n\
         [quota.users.frank]\nbytes = 700\n",
    );
    let s = TestServer::start_with(opts);
    let inbox = s.maildir("alice");
    let junk = inbox.join(".Junk");
    let mut lmtp = crate::delivery::lmtp_tcp(&s);
    // One into the inbox, one into a folder: together they fill the quota.
    let replies = lmtp.send_mail("a@example.org", &["alice@x"], "Subject: 1\n\nx");
    assert_eq!(replies, ["250 2.0.0 <alice@x> Saved\r\n"]);
    let replies = lmtp.send_mail("a@example.org", &["alice+Junk@x"], "Subject: 2\n\nx");
    assert_eq!(replies, ["250 2.0.0 <alice+Junk@x> Saved\r\n"]);
    let (full_inbox, full_junk) = (
        crate::harness::maildir_files(&inbox),
        crate::harness::maildir_files(&junk),
    );
    assert_eq!((full_inbox.len(), full_junk.len()), (1, 1));

    // The third is refused for alice, into the inbox and into any folder
    // alike, permanently, with 5.2.2; bob is not affected.
    let replies = lmtp.send_mail(
        "a@example.org",
        &["alice@x", "alice+Junk@x", "alice+Other@x", "bob@x"],
        "Subject: 3\n\nx",
    );
    assert_eq!(
        replies,
        [
            "552 5.2.2 <alice@x> Mailbox full\r\n",
            "552 5.2.2 <alice+Junk@x> Mailbox full\r\n",
            "552 5.2.2 <alice+Other@x> Mailbox full\r\n",
            "250 2.0.0 <bob@x> Saved\r\n"
        ]
    );
    assert_eq!(crate::harness::maildir_files(&inbox), full_inbox);
    assert_eq!(crate::harness::maildir_files(&junk), full_junk);
    assert!(!inbox.join(".Other").exists(), "nothing created");
    // `poplar deliver` exits 73 (EX_CANTCREAT) and says why, for the inbox
    // and for a folder.
    for folder in [None, Some("Junk")] {
        let out = deliver_raw(&s, "alice", folder, b"Subject: 4\n\nx\n");
        assert_eq!(
            out.status.code(),
            Some(73),
            "{folder:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("mailbox full (2 of 2 messages)"),
            "{folder:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(crate::harness::maildir_files(&inbox), full_inbox);
    assert_eq!(crate::harness::maildir_files(&junk), full_junk);
    // POP3 still shows the inbox's message, and the folder's.
    let mut c = s.login("alice", "alice-pw");
    assert!(c.ok("STAT").starts_with("+OK 1 "));
    c.ok("QUIT");
    let mut c = s.login("alice+Junk", "alice-pw");
    assert!(c.ok("STAT").starts_with("+OK 1 "));
    c.ok("QUIT");

    // stats shows the user's usage (inbox and folders) against the quota,
    // and the selected mailbox's own count apart.
    let stats = text(&mailbox(&s, "stats", "alice", &[]).stdout);
    assert!(
        stats.contains("messages   2 of 2 (100%), inbox and folders together"),
        "{stats}"
    );
    assert!(stats.contains("full: new mail is refused"), "{stats}");
    assert!(stats.contains("mailbox    inbox: 1 message, "), "{stats}");
    let doc = mailbox_json(&s, "stats", "alice", &[]);
    assert_eq!(doc["usage"]["messages"], 2);
    assert_eq!(doc["messages"], 1, "the inbox's own");
    assert_eq!(doc["quota"]["messages"], 2);
    assert_eq!(doc["quota"]["octets"], serde_json::Value::Null);
    assert_eq!(doc["full"], true);
    let octets = |files: &[String], dir: &Path| -> u64 {
        files
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
            .sum()
    };
    let (inbox_octets, junk_octets) = (octets(&full_inbox, &inbox), octets(&full_junk, &junk));
    assert_eq!(doc["stored_octets"], inbox_octets);
    assert_eq!(doc["usage"]["octets"], inbox_octets + junk_octets);
    let doc = mailbox_json(&s, "stats", "alice", &["--folder", "Junk"]);
    assert_eq!(
        (&doc["folder"], &doc["messages"]),
        (&"Junk".into(), &1.into())
    );
    assert_eq!(doc["stored_octets"], junk_octets);
    assert_eq!(doc["usage"]["messages"], 2);
    assert_eq!(doc["full"], true);
    let stats = text(&mailbox(&s, "stats", "alice", &["--folder", "Junk"]).stdout);
    assert!(
        stats.contains("mailbox    folder Junk: 1 message, "),
        "{stats}"
    );
    let doc = mailbox_json(&s, "stats", "bob", &[]);
    assert_eq!(doc["quota"]["messages"], 100, "the default applies");
    assert_eq!(doc["usage"]["messages"], 1);
    assert_eq!(doc["full"], false);

    // The octet limit counts what the message would add, to what the inbox
    // and the folders hold together.
    let body = format!("Subject: big\n\n{}\n", "y".repeat(300));
    let replies = lmtp.send_mail("a@example.org", &["frank@x"], &body);
    assert_eq!(replies, ["250 2.0.0 <frank@x> Saved\r\n"]);
    let replies = lmtp.send_mail("a@example.org", &["frank+Archive@x"], &body);
    assert_eq!(replies, ["552 5.2.2 <frank+Archive@x> Mailbox full\r\n"]);
    assert_eq!(crate::harness::maildir_files(&s.maildir("frank")).len(), 1);
    assert!(!s.maildir("frank").join(".Archive").exists());
    let stats = text(&mailbox(&s, "stats", "frank", &["--folder", "Archive"]).stdout);
    assert!(
        stats.contains("octets     ") && stats.contains(" of 700 ("),
        "{stats}"
    );
    assert!(
        stats.contains("mailbox    folder Archive: 0 messages, 0 octets"),
        "{stats}"
    );

    // Room made by an expunge in the folder lets mail in again, to either.
    let out = mailbox(&s, "expunge", "alice", &["--folder", "Junk", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replies = lmtp.send_mail("a@example.org", &["alice@x"], "Subject: 5\n\nx");
    assert_eq!(replies, ["250 2.0.0 <alice@x> Saved\r\n"]);
    let replies = lmtp.send_mail("a@example.org", &["alice+Junk@x"], "Subject: 6\n\nx");
    assert_eq!(replies, ["552 5.2.2 <alice+Junk@x> Mailbox full\r\n"]);
    assert_eq!(crate::harness::maildir_files(&inbox).len(), 2);
    assert!(crate::harness::maildir_files(&junk).is_empty());

    let body = metrics(s.admin.expect("the admin listener"));
    assert!(
        body.contains("poplar_deliveries_total{verdict=\"over-quota\"} 5\n"),
        "{body}"
    );
}

#[test]
fn mailbox_search_through_another_storage_plugin() {
    // The hostile test storage: its own naive search for alice, a trap for
    // the user `panic`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        format!("{PASSWD}panic:{{PLAIN}}pw\n"),
    )
    .unwrap();
    let s = TestServer::start_in(
        dir,
        Options {
            storage_plugin: Some(crate::harness::PluginOverride {
                path: Path::new(PLUGIN_DIR).join("hostile_storage.wasm"),
                timeout_ms: 300,
                memory_mb: 32,
            }),
            ..Options::default()
        },
    );
    assert_eq!(search_uids(&s, &["--body", "SECOND message"]), ["uid-two"]);
    assert_eq!(search_uids(&s, &["--from", "a@example"]), ["uid-one"]);
    let out = mailbox(&s, "search", "panic", &["--body", "x"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("poplar mailbox search: plugin storage trapped"),
        "{err}"
    );
}
