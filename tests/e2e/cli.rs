//! The command line: `check-config`, startup failures that must be clear
//! messages (not panics), `deliver` exit codes, and the demo.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::{Options, POPLAR, TestServer, prepare};

fn poplar(args: &[&str], config: &Path) -> Output {
    Command::new(POPLAR)
        .args(args)
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config prepared in a temp dir, with `edit` applied to its text.
fn config_with(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = prepare(dir.path(), &Options::default());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    (dir, path)
}

/// `serve` must fail at startup, with exit code 78 and `needle` in the
/// message, without a panic.
fn serve_fails(path: &Path, needle: &str) {
    let out = poplar(&["serve", "--config"], path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn check_config_accepts_good_and_names_the_bad_key() {
    let (_d, good) = config_with(|t| t);
    let out = poplar(&["check-config"], &good);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let cases: [(&str, &str, &str); 4] = [
        (
            "plaintext_auth = \"tls-or-loopback\"",
            "plaintext_auth = \"sometimes\"",
            "plaintext_auth",
        ),
        (
            "[pop3]",
            "[pop3]\nidle_timeout_secs = 30",
            "idle_timeout_secs",
        ),
        ("[pop3]", "[pop3]\ncolour = \"blue\"", "colour"),
        ("auth_passwd.wasm", "missing.wasm", "auth.path"),
    ];
    for (from, to, key) in cases {
        let (_d, bad) = config_with(|t| t.replacen(from, to, 1));
        let out = poplar(&["check-config"], &bad);
        assert_eq!(out.status.code(), Some(78), "{key}");
        assert!(stderr(&out).contains(key), "{key} not in {}", stderr(&out));
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/poplar.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    assert!(
        text.contains("[storage.config]"),
        "the example documents plugin config"
    );
}

#[test]
fn unreadable_passwd_file_is_a_startup_error() {
    let (dir, path) = config_with(|t| t);
    std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
    serve_fails(&path, "cannot read passwd-file");
}

#[test]
fn bad_certificate_is_a_startup_error() {
    let (dir, path) = config_with(|t| t);
    std::fs::write(dir.path().join("cert.pem"), "garbage").unwrap();
    serve_fails(&path, "tls.cert");
    std::fs::remove_file(dir.path().join("key.pem")).unwrap();
    std::fs::remove_file(dir.path().join("cert.pem")).unwrap();
    poplar::net::tls::ensure_self_signed(&dir.path().join("cert.pem"), &dir.path().join("k2.pem"))
        .unwrap();
    serve_fails(&path, "tls.key");
}

#[test]
fn wrong_plugin_files_are_startup_errors() {
    // A core module instead of a component.
    let (dir, path) = config_with(|t| {
        t.replacen(
            &format!("{}/auth_passwd.wasm", crate::harness::PLUGIN_DIR),
            "core.wasm",
            1,
        )
    });
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    serve_fails(&path, "core wasm module");
    // The storage component where an auth component belongs.
    let (_d, path) = config_with(|t| {
        t.replacen(
            &format!("{}/auth_passwd.wasm", crate::harness::PLUGIN_DIR),
            &format!("{}/storage_maildir.wasm", crate::harness::PLUGIN_DIR),
            1,
        )
    });
    serve_fails(&path, "auth-plugin");
    // A plugin config the plugin refuses.
    let (_d, path) = config_with(|t| t.replacen("root = \"/mail\"", "root = \"/nowhere\"", 1));
    serve_fails(&path, "mail root /nowhere");
}

#[test]
fn deliver_exit_codes() {
    let s = TestServer::start();
    let cfg = s.dir.path().join("poplar.toml");
    let run = |user: &str, input: &[u8]| {
        use std::io::Write;
        let mut child = Command::new(POPLAR)
            .args(["deliver", "--config"])
            .arg(&cfg)
            .args(["--user", user])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    assert_eq!(
        run("alice", b"Subject: hi\n\nbody\n").status.code(),
        Some(0)
    );
    // Unknown users, and a user name that would escape the mail root:
    // EX_NOUSER, nothing written anywhere.
    for user in ["nobody", "../evil"] {
        let out = run(user, b"Subject: hi\n\nbody\n");
        assert_eq!(out.status.code(), Some(67), "{}", stderr(&out));
    }
    assert!(!s.dir.path().join("evil").exists());
    assert!(!s.maildir("nobody").exists());
    // An empty message.
    assert_eq!(run("alice", b"").status.code(), Some(65));
    assert_eq!(crate::harness::maildir_files(&s.maildir("alice")).len(), 1);
}
