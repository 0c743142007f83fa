//! What a plugin may reach is granted per plugin in the config, and
//! nothing else: environment variables (`env`), networks (`network`), and a
//! pinned file (`sha256`). The hostile test filter tries on request (see
//! tests/plugins/hostile-filter) and reports what it got in a header of
//! the delivered message.
//!
//! What each attempt gets:
//! - a TCP connection from a plugin with no `network` grant: refused by the
//!   sandbox (`X-Hostile-Net: refused: …`), even to loopback;
//! - with `network = ["127.0.0.1/32"]`: 127.0.0.1 connects, 127.0.0.2 is
//!   still refused;
//! - an environment variable of the server's own environment: `unset`
//!   inside the plugin; a granted one: its configured value;
//! - a plugin file whose SHA-256 differs from its `sha256` pin: the server
//!   refuses to start (`check-config` exits 78 naming both digests), and a
//!   hot reload to a different file is refused while the old version keeps
//!   filtering;
//! - a compiled plugin in the cache that the server did not write (here:
//!   another plugin's genuine native code, planted under the auth plugin's
//!   name): not loaded; the log says so, and the plugin is compiled again.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::delivery::{fetch_all, lmtp_config, lmtp_tcp};
use crate::harness::{Options, PLUGIN_DIR, POPLAR, TestServer, prepare};

/// A server whose delivery chain is the hostile filter with `grants` in
/// its table; the filter file is copied to `hostile.wasm` beside the config.
fn server_with(grants: &str, env: Vec<(String, String)>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(PLUGIN_DIR).join("hostile_filter.wasm"),
        dir.path().join("hostile.wasm"),
    )
    .unwrap();
    TestServer::start_in(dir, options(grants, env))
}

fn options(grants: &str, env: Vec<(String, String)>) -> Options {
    Options {
        env,
        ..lmtp_config(&format!(
            "[delivery]\nchain = [{{ filter = \"hostile\", on_failure = \"tempfail\" }}]\n\
             watch_interval_ms = 100\n\
             [filter.hostile]\npath = \"hostile.wasm\"\ntimeout_ms = 2000\nmemory_mb = 32\n{grants}\n"
        ))
    }
}

/// Delivers one message per subject to alice, and returns the value of
/// `header` in each as fetched back over POP3.
fn probe(s: &TestServer, subjects: &[String], header: &str) -> Vec<String> {
    // Each probe is a new message: the same bytes again would be taken for
    // an MTA's retry of the first delivery and stored once.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut lmtp = lmtp_tcp(s);
    for subject in subjects {
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replies = lmtp.send_mail(
            "probe@example.org",
            &["alice@example.org"],
            &format!("Subject: {subject}\nMessage-ID: <probe-{n}@test>\n\nprobe\n"),
        );
        assert!(replies[0].starts_with("250"), "{replies:?}");
    }
    let msgs = fetch_all(s, "alice", "alice-pw");
    let mut c = s.login("alice", "alice-pw");
    for i in 1..=msgs.len() {
        c.ok(&format!("DELE {i}"));
    }
    c.ok("QUIT");
    msgs.iter()
        .map(|m| {
            let text = String::from_utf8_lossy(m);
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{header}: ")))
                .unwrap_or_else(|| panic!("no {header} in {text}"))
                .to_string()
        })
        .collect()
}

/// A listener that accepts in the background, so a connect succeeds.
fn listener(ip: &str) -> (TcpListener, String) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    l.set_nonblocking(true).unwrap();
    (l, addr)
}

#[test]
fn no_network_and_no_environment_unless_granted() {
    let (_l, addr) = listener("127.0.0.1");
    let leak = vec![("POPLAR_TEST_SECRET".to_string(), "leaked".to_string())];
    let s = server_with("", leak.clone());
    let got = probe(&s, &[format!("NET {addr}")], "X-Hostile-Net");
    assert!(got[0].starts_with("refused"), "{got:?}");
    let got = probe(&s, &["ENV POPLAR_TEST_SECRET".into()], "X-Hostile-Env");
    assert_eq!(got, ["unset"]);

    let (_l2, addr2) = listener("127.0.0.2");
    let s = server_with(
        "env = { GREETING = \"hello\" }\nnetwork = [\"127.0.0.1/32\"]",
        leak,
    );
    let got = probe(
        &s,
        &[format!("NET {addr}"), format!("NET {addr2}")],
        "X-Hostile-Net",
    );
    assert_eq!(got[0], "connected", "{got:?}");
    assert!(got[1].starts_with("refused"), "{got:?}");
    let got = probe(
        &s,
        &["ENV GREETING".into(), "ENV POPLAR_TEST_SECRET".into()],
        "X-Hostile-Env",
    );
    assert_eq!(got, ["hello", "unset"]);
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn pinned_plugin_files() {
    let wasm = Path::new(PLUGIN_DIR).join("hostile_filter.wasm");
    let good = sha256_hex(&wasm);
    let wrong = "0".repeat(64);

    // check-config (and so `serve`) refuses a file that does not match.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&wasm, dir.path().join("hostile.wasm")).unwrap();
    let config = prepare(
        dir.path(),
        &options(&format!("sha256 = \"{wrong}\""), vec![]),
    );
    let out = Command::new(POPLAR)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!("has SHA-256 {good}, but the config pins {wrong}")),
        "{err}"
    );

    // Pinned to the right digest it runs; a swapped file is not loaded.
    let s = server_with(&format!("sha256 = \"{good}\""), vec![]);
    assert_eq!(
        probe(&s, &["plain".into()], "X-Hostile"),
        ["passed"],
        "pinned filter runs"
    );
    let other = Path::new(PLUGIN_DIR).join("filter_rules.wasm");
    let tmp = s.dir.path().join("hostile.wasm.new");
    std::fs::copy(&other, &tmp).unwrap();
    std::fs::rename(&tmp, s.dir.path().join("hostile.wasm")).unwrap();
    s.wait_for_log("but the config pins");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        probe(&s, &["plain".into()], "X-Hostile"),
        ["passed"],
        "the old, pinned version keeps filtering"
    );
}

#[test]
fn planted_native_code_in_the_plugin_cache_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let opts = Options {
        cache_dir: Some(cache.clone()),
        ..Options::default()
    };
    let s = TestServer::start_in(dir, opts.clone());
    s.login("alice", "alice-pw").ok("QUIT");
    let dir = s.stop();

    let compiled = cache.join("compiled");
    let auth_digest = sha256_hex(&Path::new(PLUGIN_DIR).join("auth_passwd.wasm"));
    let storage_digest = sha256_hex(&Path::new(PLUGIN_DIR).join("storage_maildir.wasm"));
    let artifact = |digest: &str| {
        std::fs::read_dir(&compiled)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(digest))
            .unwrap_or_else(|| panic!("no cached artifact for {digest}"))
    };
    let auth_artifact = artifact(&auth_digest);
    let genuine = std::fs::read(&auth_artifact).unwrap();
    std::fs::copy(artifact(&storage_digest), &auth_artifact).unwrap();

    let s = TestServer::start_in(dir, opts);
    let line = s.wait_for_log("failed its integrity check");
    assert!(line.contains(&auth_digest), "{line}");
    // The auth plugin is the real one again (storage code could not even
    // be linked as an auth plugin), and its artifact was rewritten.
    s.login("alice", "alice-pw").ok("QUIT");
    assert_eq!(std::fs::read(&auth_artifact).unwrap(), genuine);
    assert_eq!(s.log().matches("failed its integrity check").count(), 1);
}
