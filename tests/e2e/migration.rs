//! Migration from Dovecot: a Maildir and passwd-file that the real Dovecot
//! (Debian's `dovecot-core` and `dovecot-pop3d`) served are served by
//! Poplar as they are, with the storage plugin's `uidl = "dovecot"`, and a
//! POP3 client sees the same messages under the same numbers, UIDLs and
//! contents, so it downloads nothing again.
//!
//! Each test writes a minimal `dovecot.conf` into its temporary folder,
//! runs `dovecot -F` on a free loopback port, fetches with Python's
//! `poplib`, deletes a message (so the `dovecot-uidlist` has history),
//! stops Dovecot, starts Poplar on the same mail root and passwd-file, and
//! compares.
//!
//! Running as root (as CI does), Dovecot's mail processes run as `nobody`,
//! since Dovecot refuses mail access as UID 0, and the Maildir is handed to
//! `nobody` (Poplar, as root, reads it all the same). As another user, every
//! Dovecot process runs as that user.
//!
//! Dovecot missing fails the tests: tests/run.sh, run as root, installs it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::delivery::{lmtp_config, lmtp_tcp};
use crate::harness::{Options, PASSWD, TestServer, put_message};

/// The migrated user: its password is a SHA512-CRYPT hash in the shared
/// passwd-file, which both servers must verify.
const USER: &str = "bob";
const PASSWORD: &str = "bob-pw";

// ---------------------------------------------------------------------------
// Dovecot
// ---------------------------------------------------------------------------

/// Finds an executable on PATH or in the sbin directories (which a
/// non-root PATH often lacks).
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The `dovecot` binary; fails the test, saying how to get it, if Dovecot
/// or its POP3 server is not installed.
fn dovecot_binary() -> PathBuf {
    const HOW: &str = "run tests/run.sh as root (CI does; it installs the Debian packages \
                       dovecot-core and dovecot-pop3d), or apt-get install them";
    let Some(dovecot) = find_program("dovecot") else {
        panic!("Dovecot is not installed (no `dovecot` on PATH or in /usr/sbin): {HOW}");
    };
    let pop3 = ["/usr/lib/dovecot/pop3", "/usr/libexec/dovecot/pop3"];
    assert!(
        pop3.iter().any(|p| Path::new(p).is_file()),
        "Dovecot's POP3 server is not installed (none of {pop3:?}): {HOW}"
    );
    dovecot
}

/// `id <flag> <user>`, as a number.
fn id_of(flag: &str, user: Option<&str>) -> u32 {
    let out = Command::new("id")
        .arg(flag)
        .args(user)
        .output()
        .expect("run id");
    assert!(out.status.success(), "id {flag} {user:?} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `id <flag>` (`-un`, `-gn`): this process's user or group name.
fn name_of(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().expect("run id");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A free loopback port (bound, then released for Dovecot to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Dovecot serving POP3 from `<root>/mail/<user>` with the
/// passwd-file `<root>/etc/passwd`.
struct Dovecot {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Dovecot {
    fn start(root: &Path, uidl_format: &str) -> Dovecot {
        use std::os::unix::fs::PermissionsExt;
        let binary = dovecot_binary();
        let dir = root.join("dovecot");
        for sub in ["run", "state"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Dovecot's unprivileged processes (auth, login, the mail process)
        // must reach the passwd-file, the sockets and the Maildir through
        // the test's folder, which tempfile makes 0700.
        for d in [root, &root.join("etc"), &root.join("mail"), &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        let root_user = id_of("-u", None) == 0;
        let (uid, gid, process_users) = if root_user {
            let (uid, gid) = (id_of("-u", Some("nobody")), id_of("-g", Some("nobody")));
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(root.join("mail"))
                .status()
                .unwrap();
            assert!(status.success(), "chown of the Maildir failed");
            (uid, gid, String::new())
        } else {
            // Every process as this user, in no chroot (that needs root).
            let (me, group) = (name_of("-un"), name_of("-gn"));
            (
                id_of("-u", None),
                id_of("-g", None),
                format!(
                    "default_internal_user = {me}\ndefault_login_user = {me}\n\
                     default_internal_group = {group}\n\
                     service anvil {{\n  chroot =\n}}\n\
                     service pop3-login {{\n  chroot =\n}}\n"
                ),
            )
        };

        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join("dovecot.log");
        let root_s = root.display();
        let conf = format!(
            "protocols = pop3
listen = 127.0.0.1
base_dir = {root_s}/dovecot/run
state_dir = {root_s}/dovecot/state
log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
{process_users}first_valid_uid = 1
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{root_s}/mail/%u
pop3_uidl_format = {uidl_format}
passdb {{
  driver = passwd-file
  args = {root_s}/etc/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root_s}/mail/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
",
            log = log.display(),
            port = addr.port(),
        );
        let conf_path = dir.join("dovecot.conf");
        std::fs::write(&conf_path, conf).unwrap();

        let mut child = Command::new(&binary)
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));

        // Ready when it greets on the POP3 port.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!(
                    "dovecot exited ({status}) before serving:\n{stderr}\nlog:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(tcp) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                use std::io::BufRead;
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut greeting = String::new();
                let _ = std::io::BufReader::new(tcp).read_line(&mut greeting);
                if greeting.starts_with("+OK") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "dovecot did not start serving on {addr}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Dovecot { child, addr, log }
    }

    /// What Dovecot logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops Dovecot (SIGTERM, as an operator would) and waits until it and
    /// its processes are gone.
    fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals our own child, which has not been waited for.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not stop on SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: signals our own child, which has not been waited for.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            for _ in 0..100 {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// The client: Python poplib
// ---------------------------------------------------------------------------

/// Logs in, records STAT, LIST, UIDL and every message (RETR), deletes the
/// messages numbered in the remaining arguments, QUITs, and prints JSON.
const POPLIB_SNAPSHOT: &str = r#"
import json, poplib, sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
deletes = [int(n) for n in sys.argv[5:]]
pop = poplib.POP3(host, port, timeout=60)
pop.user(user)
pop.pass_(password)
count, size = pop.stat()
out = {
    "stat": [count, size],
    "list": [l.decode() for l in pop.list()[1]],
    "uidl": [l.decode() for l in pop.uidl()[1]],
    "retr": [b"\r\n".join(pop.retr(n)[1]).hex() for n in range(1, count + 1)],
}
for n in deletes:
    pop.dele(n)
out["quit"] = pop.quit().decode()
print(json.dumps(out))
"#;

/// What a POP3 client saw of a maildrop.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    stat: (u64, u64),
    /// `(number, size)` from LIST.
    list: Vec<(u32, u64)>,
    /// `(number, unique-id)` from UIDL.
    uidl: Vec<(u32, String)>,
    /// Each message as RETR gave it (lines joined with CRLF, un-dot-stuffed).
    retr: Vec<Vec<u8>>,
}

fn pair<T: std::str::FromStr>(line: &serde_json::Value) -> (u32, T)
where
    T::Err: std::fmt::Debug,
{
    let line = line.as_str().unwrap();
    let (n, rest) = line.split_once(' ').unwrap();
    (n.parse().unwrap(), rest.parse().unwrap())
}

/// Runs the poplib client against `addr` as the migrated user, deleting
/// the messages numbered in `deletes` before QUIT. `server_log` is shown if
/// it fails.
fn poplib_snapshot(addr: SocketAddr, deletes: &[u32], server_log: impl Fn() -> String) -> Snapshot {
    assert!(
        find_program("python3").is_some(),
        "python3 is not installed: run tests/run.sh as root, or apt-get install python3"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("snapshot.py");
    std::fs::write(&script, POPLIB_SNAPSHOT).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args([USER, PASSWORD])
        .args(deletes.iter().map(u32::to_string))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "poplib against {addr} failed: {}\n{stdout}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server_log()
    );
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let array = |key: &str| v[key].as_array().unwrap().clone();
    let stat = array("stat");
    Snapshot {
        stat: (stat[0].as_u64().unwrap(), stat[1].as_u64().unwrap()),
        list: array("list").iter().map(pair).collect(),
        uidl: array("uidl").iter().map(pair).collect(),
        retr: array("retr")
            .iter()
            .map(|m| hex::decode(m.as_str().unwrap()).unwrap())
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// A test folder laid out for both servers: `etc/passwd` (the harness's
/// users, hashes included) and `mail/<user>/`.
fn migration_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
    std::fs::create_dir_all(dir.path().join("mail")).unwrap();
    dir
}

fn maildir(root: &Path) -> PathBuf {
    root.join("mail").join(USER)
}

/// Poplar on `root` (the same mail root and passwd-file Dovecot used),
/// with Dovecot UIDLs and an LMTP listener.
fn start_poplar(root: tempfile::TempDir, uidl_format: &str) -> TestServer {
    TestServer::start_in(
        root,
        Options {
            storage_config: format!("uidl = \"dovecot\"\nuidl_format = \"{uidl_format}\"\n"),
            ..lmtp_config("")
        },
    )
}

/// The UIDLs of a listing, in message-number order.
fn uidls(s: &Snapshot) -> Vec<&str> {
    s.uidl.iter().map(|(_, u)| u.as_str()).collect()
}

#[test]
fn dovecot_maildir_is_served_with_dovecot_uidls() {
    let dir = migration_root();
    let root = dir.path().to_path_buf();
    let md = maildir(&root);
    // Mail from before Dovecot: some already seen (cur/, with flags), one
    // with CRLF line endings, one whose last line has no line ending, one
    // with lines that need dot-stuffing; some not yet seen (new/).
    let messages: [(&str, &str, &[u8]); 8] = [
        ("cur", "1600000001.M1P1.old:2,S", b"Subject: one\n\nfirst\n"),
        (
            "cur",
            "1600000002.M1P1.old:2,RS",
            b"Subject: two\r\n\r\nCRLF already\r\n",
        ),
        (
            "cur",
            "1600000003.M1P1.old:2,",
            b"Subject: three\n\nno line ending at the end",
        ),
        (
            "cur",
            "1600000004.M1P1.old,S=26,W=29:2,S",
            b"Subject: four\n\nsized name\n",
        ),
        (
            "cur",
            "1650000000.M9P9.other:2,FS",
            b"Subject: five\n\nflagged\n",
        ),
        (
            "new",
            "1700000001.M1P1.new",
            b"Subject: six\n\n.\n..dots\n.x\n",
        ),
        ("new", "1700000002.M1P1.new", b"Subject: seven\n\nseven\n"),
        ("new", "1700000003.M1P1.new", b"Subject: eight\n\neight\n"),
    ];
    for (sub, name, content) in messages {
        put_message(&md, sub, name, content);
    }
    // As an earlier migration into Dovecot left it: messages 1-4 have
    // UIDs; the POP3 server before Dovecot gave message 1 the UIDL
    // `legacy-uidl-1` (P), message 4's UIDL is its file name (empty P), and
    // messages 2 and 1 come first, in that order (O). Dovecot adds the
    // others at its first session.
    std::fs::write(
        md.join("dovecot-uidlist"),
        "3 V1234567890 N20 G3085f01b7f11094c501100008c4a11c1\n\
         3 Plegacy-uidl-1 O2 :1600000001.M1P1.old\n\
         5 O1 :1600000002.M1P1.old\n\
         7 :1600000003.M1P1.old\n\
         9 P :1600000004.M1P1.old,S=26,W=29\n",
    )
    .unwrap();

    let format = "%08Xu%08Xv"; // Dovecot's default pop3_uidl_format
    let dovecot = Dovecot::start(&root, format);
    // First session: fetch everything, delete the sixth message.
    let first = poplib_snapshot(dovecot.addr, &[6], || dovecot.log());
    assert_eq!(first.stat.0, 8, "{first:?}\n{}", dovecot.log());
    assert_eq!(
        &uidls(&first)[..4],
        [
            "00000005499602d2",              // O1
            "legacy-uidl-1",                 // O2, P
            "00000007499602d2",              // by UID
            "1600000004.M1P1.old,S=26,W=29", // empty P
        ],
        "Dovecot itself did not list as expected: {first:?}"
    );
    // The rest got UIDs from 20 (N20) on.
    for uid in &uidls(&first)[4..] {
        let (hex_uid, validity) = uid.split_at(8);
        assert!(u32::from_str_radix(hex_uid, 16).unwrap() >= 20, "{first:?}");
        assert_eq!(validity, "499602d2");
    }
    // Second session: the state after the deletion, which Poplar must show.
    let before = poplib_snapshot(dovecot.addr, &[], || dovecot.log());
    let log = dovecot.log();
    dovecot.stop();
    assert_eq!(before.stat.0, 7, "{before:?}\n{log}");
    assert_eq!(
        uidls(&before),
        uidls(&first)
            .into_iter()
            .enumerate()
            .filter(|&(i, _)| i != 5)
            .map(|(_, u)| u)
            .collect::<Vec<_>>()
    );
    assert!(
        std::fs::read_dir(md.join("new")).unwrap().next().is_none(),
        "Dovecot moves what it listed into cur/"
    );
    let uidlist = std::fs::read(md.join("dovecot-uidlist")).unwrap();

    let poplar = start_poplar(dir, format);
    let after = poplib_snapshot(poplar.plain, &[], || poplar.log());
    assert_eq!(after.uidl, before.uidl, "UIDL differs from Dovecot's");
    assert_eq!(after.retr, before.retr, "RETR differs from Dovecot's");
    // LIST: the same sizes (octets with CRLF line endings), except for the
    // message whose last line has no line ending. Both servers send it
    // with a CRLF added before the terminating ".", but Dovecot does not
    // count those 2 octets in LIST and Poplar does (its storage contract:
    // the size is exactly what RETR sends). UIDLs, not sizes, are what
    // clients use to recognise messages they have.
    let unterminated = before
        .retr
        .iter()
        .position(|m| m.ends_with(b"no line ending at the end"))
        .expect("the unterminated message");
    let expected: Vec<(u32, u64)> = before
        .list
        .iter()
        .enumerate()
        .map(|(i, &(n, size))| (n, if i == unterminated { size + 2 } else { size }))
        .collect();
    assert_eq!(after.list, expected, "LIST differs from Dovecot's");
    assert_eq!(after.stat, (before.stat.0, before.stat.1 + 2));

    // New mail arrives over LMTP: it comes last with a UIDL of its own, and
    // the migrated messages keep theirs.
    let replies = lmtp_tcp(&poplar).send_mail(
        "sender@example.org",
        &[&format!("{USER}@example.org")],
        "Subject: after the migration\n\nnew mail\n",
    );
    assert!(replies[0].starts_with("250"), "{replies:?}");
    let later = poplib_snapshot(poplar.plain, &[], || poplar.log());
    assert_eq!(later.uidl.len(), after.uidl.len() + 1, "{later:?}");
    assert_eq!(later.uidl[..after.uidl.len()], after.uidl[..]);
    assert_eq!(later.list[..after.list.len()], after.list[..]);
    let (n, new_uid) = later.uidl.last().unwrap();
    assert_eq!(*n as usize, after.uidl.len() + 1);
    assert!(
        !after.uidl.iter().any(|(_, u)| u == new_uid),
        "the new message reuses an old UIDL: {new_uid}"
    );
    assert!(String::from_utf8_lossy(later.retr.last().unwrap()).contains("after the migration"));

    // Poplar never touches Dovecot's uidlist.
    assert_eq!(
        std::fs::read(poplar.maildir(USER).join("dovecot-uidlist")).unwrap(),
        uidlist,
        "Poplar changed dovecot-uidlist"
    );
}

/// A `pop3_uidl_format` that uses every variable and width Poplar supports
/// (`%f` base file name, `%g` GUID, which a Maildir without `G` fields
/// takes from the file name, a cut `%4g`, zero padding, hex, `%%`), on a
/// Maildir whose uidlist Dovecot made itself.
#[test]
fn dovecot_uidl_format_variables_match() {
    let dir = migration_root();
    let root = dir.path().to_path_buf();
    let md = maildir(&root);
    put_message(&md, "cur", "1600000001.M1P1.h:2,S", b"Subject: a\n\na\n");
    put_message(&md, "new", "1600000002.M1P1.h,S=14", b"Subject: b\n\nb\n");
    put_message(&md, "new", "1600000003.M1P1.h", b"Subject: c\n\nc\n");

    let format = "%f|%4g|%08u|%Xv|%%|%05Xu|%3Xv";
    let dovecot = Dovecot::start(&root, format);
    poplib_snapshot(dovecot.addr, &[1], || dovecot.log());
    let before = poplib_snapshot(dovecot.addr, &[], || dovecot.log());
    dovecot.stop();
    assert_eq!(before.uidl.len(), 2, "{before:?}");
    assert!(
        before.uidl[0]
            .1
            .starts_with("1600000002.M1P1.h,S=14|1600|00000002|"),
        "{before:?}"
    );

    let poplar = start_poplar(dir, format);
    let after = poplib_snapshot(poplar.plain, &[], || poplar.log());
    assert_eq!(after.uidl, before.uidl);
    assert_eq!(after.list, before.list);
    assert_eq!(after.retr, before.retr);
}

/// The passwd-file schemes an operator brings from Dovecot, each hashed at
/// test time by Dovecot's own `doveadm pw` (and `openssl passwd -1` for a
/// bare `$1$` crypt): every user logs in with USER/PASS, and a wrong
/// password is refused the same way for each.
#[test]
fn passwd_schemes_from_doveadm_and_openssl_log_in() {
    let doveadm = find_program("doveadm").unwrap_or_else(|| {
        panic!("`doveadm` is not installed; apt-get install dovecot-core (tests/run.sh does)")
    });
    crate::clients::require("openssl", "openssl");
    let password = "Tr0ub4dor & 3";
    let schemes = [
        "MD5",
        "MD5-CRYPT",
        "PLAIN-MD5",
        "LDAP-MD5",
        "LDAP-MD5.HEX",
        "SHA",
        "SHA.HEX",
        "SSHA",
        "SSHA.HEX",
        "SMD5",
        "SMD5.HEX",
        "CRAM-MD5",
    ];
    let mut passwd = String::from(PASSWD);
    let mut users = Vec::new();
    for (i, scheme) in schemes.iter().enumerate() {
        let out = Command::new(&doveadm)
            .args(["pw", "-s", scheme, "-p", password])
            .output()
            .unwrap();
        assert!(out.status.success(), "doveadm pw -s {scheme}: {out:?}");
        let hash = String::from_utf8(out.stdout).unwrap();
        let hash = hash.trim();
        assert!(hash.starts_with(&format!("{{{scheme}}}")), "{hash}");
        let user = format!("m{i}");
        passwd.push_str(&format!("{user}:{hash}\n"));
        users.push((user, scheme.to_string()));
    }
    let out = Command::new("openssl")
        .args(["passwd", "-1", password])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let crypt = String::from_utf8(out.stdout).unwrap();
    assert!(crypt.starts_with("$1$"), "{crypt}");
    passwd.push_str(&format!("mcrypt:{{CRYPT}}{}\n", crypt.trim()));
    users.push(("mcrypt".into(), "CRYPT $1$".into()));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), &passwd).unwrap();
    let s = TestServer::start_in(dir, Options::default());
    for (user, scheme) in &users {
        let mut c = s.connect();
        c.ok(&format!("USER {user}"));
        let r = c.cmd(&format!("PASS {password}"));
        assert!(r.starts_with("+OK Logged in"), "{scheme}: {r}\n{}", s.log());
        c.ok("QUIT");
        let mut c = s.connect();
        c.ok(&format!("USER {user}"));
        assert_eq!(
            c.cmd("PASS Tr0ub4dor & 4"),
            "-ERR [AUTH] Authentication failed\r\n",
            "{scheme}"
        );
    }
    assert!(!s.log().contains("unknown password scheme"), "{}", s.log());
}
