//! Strong authentication end to end: SCRAM-SHA-256 with mpop (GNU SASL),
//! SCRAM-SHA-256-PLUS with `tls-exporter` channel binding over TLS 1.3 (a
//! client written here from RFC 5802/9266, independently of the server),
//! and OAUTHBEARER/XOAUTH2 bearer tokens with curl and mpop, checked by the
//! default auth plugin (`oauth_hs256_secret`).
//!
//! What each bad input gets:
//! - wrong SCRAM password, or a user that does not exist: the same
//!   `-ERR [AUTH] Authentication failed` after a full exchange;
//! - a SCRAM-PLUS proof bound to another TLS connection's exporter:
//!   `-ERR [AUTH] Authentication failed: channel binding: …`;
//! - `y` (no binding) from a client the server offered -PLUS to: refused as
//!   a downgrade;
//! - `AUTH SCRAM-SHA-256-PLUS` without the client-first message as initial
//!   response: `-ERR` before any challenge (see the mutt tests);
//! - an expired, forged or other user's token: the RFC 7628 error challenge,
//!   then `-ERR [AUTH]` (curl exits 67, "login denied").

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use sha2::{Digest, Sha256};

use crate::clients::{Run, curl, path_str, require, run, write_private};
use crate::harness::{Options, POPLAR, TestServer, put_message};

const OAUTH_KEY: &str = "test-key-test-key-test-key-test-key";

fn mechanisms() -> String {
    r#"sasl_mechanisms = ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "OAUTHBEARER", "XOAUTH2"]"#
        .into()
}

/// A server offering every mechanism, with `grace` stored as a SCRAM
/// verifier made by `poplar pw hash`, and one message for alice and grace.
fn server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(POPLAR)
        .args([
            "pw",
            "hash",
            "--scheme",
            "SCRAM-SHA-256",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"grace-pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let verifier = String::from_utf8(out.stdout).unwrap();
    assert!(verifier.starts_with("{SCRAM-SHA-256}"), "{verifier}");
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        format!("{}grace:{}", crate::harness::PASSWD, verifier.trim_end()) + "\n",
    )
    .unwrap();
    for user in ["alice", "grace"] {
        let md = dir.path().join("mail").join(user);
        put_message(
            &md,
            "new",
            "1.M1P1.test",
            format!("Subject: for {user}\n\nhello\n").as_bytes(),
        );
    }
    TestServer::start_in(
        dir,
        Options {
            extra_pop3: mechanisms(),
            auth_config: format!("oauth_hs256_secret = \"{OAUTH_KEY}\"\noauth_audience = \"pop\""),
            ..Options::default()
        },
    )
}

// ---------------------------------------------------------------------------
// A SCRAM-SHA-256(-PLUS) client, from RFC 5802 and RFC 9266.
// ---------------------------------------------------------------------------

/// HMAC-SHA-256 (RFC 2104), spelled out.
fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::digest([pad(0x36), data.to_vec()].concat());
    Sha256::digest([pad(0x5c), inner.to_vec()].concat()).to_vec()
}

/// Client side of one exchange: `first_bare` was sent; returns the final
/// message and the server signature to expect.
fn scram_final(
    password: &str,
    first_bare: &str,
    server_first: &str,
    cbind_input: &[u8],
) -> (String, String) {
    let attrs: Vec<(&str, &str)> = server_first
        .split(',')
        .map(|kv| kv.split_at(2))
        .map(|(k, v)| (k.trim_end_matches('='), v))
        .collect();
    let get = |k: &str| attrs.iter().find(|(a, _)| *a == k).unwrap().1;
    let salt = B64.decode(get("s")).unwrap();
    let iterations: u32 = get("i").parse().unwrap();
    let mut block = mac(
        password.as_bytes(),
        &[&salt[..], &1u32.to_be_bytes()].concat(),
    );
    let mut salted = block.clone();
    for _ in 1..iterations {
        block = mac(password.as_bytes(), &block);
        for (s, b) in salted.iter_mut().zip(&block) {
            *s ^= b;
        }
    }
    let client_key = mac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let without_proof = format!("c={},r={}", B64.encode(cbind_input), get("r"));
    let auth = format!("{first_bare},{server_first},{without_proof}");
    let signature = mac(&stored_key, auth.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let server_signature = mac(&mac(&salted, b"Server Key"), auth.as_bytes());
    (
        format!("{without_proof},p={}", B64.encode(proof)),
        format!("v={}", B64.encode(server_signature)),
    )
}

/// A TLS client that can read the connection's exporter value.
struct TlsClient {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    fn connect(s: &TestServer) -> TlsClient {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(s.cert_path()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(s.tls).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = TlsClient {
            stream: BufReader::new(rustls::StreamOwned::new(conn, tcp)),
        };
        assert!(c.line().starts_with("+OK"));
        c
    }

    fn exporter(&self) -> Vec<u8> {
        self.stream
            .get_ref()
            .conn
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap()
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stream.read_line(&mut l).unwrap();
        l
    }

    fn cmd(&mut self, line: &str) -> String {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.line()
    }

    fn multiline(&mut self) -> String {
        let mut all = String::new();
        loop {
            let l = self.line();
            if l == ".\r\n" || l.is_empty() {
                return all;
            }
            all.push_str(&l);
        }
    }

    /// Runs SCRAM-SHA-256-PLUS for `user`, binding to `binding` (this
    /// connection's exporter value, or another one's); returns the answer
    /// to the final message, or the first `-ERR`.
    fn scram_plus(&mut self, user: &str, password: &str, binding: &[u8]) -> String {
        let gs2 = "p=tls-exporter,,";
        let bare = format!("n={user},r=rfc9266clientnonce");
        let r = self.cmd(&format!(
            "AUTH SCRAM-SHA-256-PLUS {}",
            B64.encode(format!("{gs2}{bare}"))
        ));
        let Some(challenge) = r.strip_prefix("+ ") else {
            return r;
        };
        let server_first = String::from_utf8(B64.decode(challenge.trim_end()).unwrap()).unwrap();
        let cbind = [gs2.as_bytes(), binding].concat();
        let (fin, expect) = scram_final(password, &bare, &server_first, &cbind);
        let r = self.cmd(&B64.encode(fin));
        let Some(challenge) = r.strip_prefix("+ ") else {
            return r;
        };
        let server_final = String::from_utf8(B64.decode(challenge.trim_end()).unwrap()).unwrap();
        assert_eq!(server_final, expect, "server signature");
        self.cmd("")
    }
}

#[test]
fn scram_sha256_plus_binds_to_the_tls_connection() {
    let s = server();
    let mut c = TlsClient::connect(&s);
    c.cmd("CAPA");
    let caps = c.multiline();
    assert!(
        caps.contains("SASL PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS OAUTHBEARER XOAUTH2\r\n"),
        "{caps}"
    );
    // Without the initial response: refused at once, no challenge.
    assert_eq!(
        c.cmd("AUTH SCRAM-SHA-256-PLUS"),
        "-ERR SCRAM-SHA-256-PLUS needs the client-first message with AUTH \
         (an initial response); use another mechanism\r\n"
    );
    // Bound to another connection's exporter (what a relaying attacker
    // would have): refused.
    let other = TlsClient::connect(&s);
    let r = c.scram_plus("grace", "grace-pw", &other.exporter());
    assert!(
        r.starts_with("-ERR [AUTH] Authentication failed: channel binding"),
        "{r}"
    );
    // Wrong password, and a user that does not exist: the same answer.
    let binding = c.exporter();
    assert_eq!(
        c.scram_plus("grace", "wrong", &binding),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    assert_eq!(
        c.scram_plus("nobody", "grace-pw", &binding),
        "-ERR [AUTH] Authentication failed\r\n"
    );
    // Stored verifier (grace) and clear-text entry (alice) both work.
    let r = c.scram_plus("grace", "grace-pw", &binding);
    assert!(r.starts_with("+OK Logged in, 1 messages"), "{r}");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = TlsClient::connect(&s);
    let binding = c.exporter();
    let r = c.scram_plus("alice", "alice-pw", &binding);
    assert!(r.starts_with("+OK Logged in"), "{r}");
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert!(c.multiline().contains("for alice"));
}

#[test]
fn scram_plus_is_not_offered_without_tls() {
    let s = server();
    let mut c = s.connect();
    let caps = {
        c.ok("CAPA");
        String::from_utf8(c.multiline()).unwrap()
    };
    assert!(caps.contains("SCRAM-SHA-256 "), "{caps}");
    assert!(!caps.contains("-PLUS"), "{caps}");
    assert_eq!(
        c.cmd("AUTH SCRAM-SHA-256-PLUS"),
        "-ERR Unsupported authentication mechanism\r\n"
    );
    // A client that says "y" (it would bind, but thinks we cannot) is fine
    // here, where -PLUS is not offered.
    let gs2 = "y,,";
    let bare = "n=grace,r=abcdef";
    let r = c.cmd(&format!(
        "AUTH SCRAM-SHA-256 {}",
        B64.encode(format!("{gs2}{bare}"))
    ));
    let server_first = String::from_utf8(
        B64.decode(r.strip_prefix("+ ").unwrap().trim_end())
            .unwrap(),
    )
    .unwrap();
    let (fin, _) = scram_final("grace-pw", bare, &server_first, gs2.as_bytes());
    assert!(c.cmd(&B64.encode(fin)).starts_with("+ "));
    assert!(c.cmd("").starts_with("+OK Logged in"));
}

// ---------------------------------------------------------------------------
// mpop (GNU SASL) for SCRAM-SHA-256, OAUTHBEARER and XOAUTH2.
// ---------------------------------------------------------------------------

pub(crate) fn mpop(s: &TestServer, user: &str, auth: &str, secret: &str, tls: bool) -> Run {
    require("mpop", "mpop");
    let home = tempfile::tempdir().unwrap();
    let maildir = home.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let cert = s.cert_path();
    let (port, tls_keys) = if tls {
        (
            s.tls.port(),
            format!(
                "tls on\ntls_starttls off\ntls_trust_file {}",
                path_str(&cert)
            ),
        )
    } else {
        (s.plain.port(), "tls off".to_string())
    };
    let rc = format!(
        "defaults\ntimeout 60\naccount a\nhost 127.0.0.1\nport {port}\nuser {user}\n\
         passwordeval \"echo {secret}\"\nauth {auth}\n{tls_keys}\n\
         delivery maildir {md}\nkeep on\nuidls_file {home}/uidls\n",
        md = path_str(&maildir),
        home = path_str(home.path()),
    );
    let rc_path = home.path().join("mpoprc");
    write_private(&rc_path, &rc);
    let r = run(
        &format!("mpop auth {auth}"),
        Command::new("mpop")
            .arg(format!("--file={}", rc_path.display()))
            .arg("a")
            .env("HOME", home.path())
            .env("LC_ALL", "C"),
        b"",
    );
    if r.code() == Some(0) {
        let got = std::fs::read_dir(maildir.join("new")).unwrap().count();
        assert_eq!(got, 1, "mpop {auth} fetched {got} messages\n{}", r.output());
    }
    r
}

#[test]
fn mpop_scram_sha256() {
    let s = server();
    for (user, pw, tls) in [
        ("grace", "grace-pw", false),
        ("alice", "alice-pw", false),
        ("grace", "grace-pw", true),
    ] {
        let r = mpop(&s, user, "scram-sha-256", pw, tls);
        assert!(
            r.code() == Some(0),
            "{}\n--- server ---\n{}",
            r.output(),
            s.log()
        );
    }
    let r = mpop(&s, "grace", "scram-sha-256", "nope", false);
    assert_ne!(r.code(), Some(0), "{}", r.output());
    assert!(
        r.stderr()
            .contains("authentication failed (method SCRAM-SHA-256)"),
        "{}",
        r.output()
    );
    s.wait_for_log("login failed: challenge-response did not verify");
}

/// An HS256 token as an identity provider would issue it.
fn token(sub: &str, aud: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let head = B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let body = B64URL.encode(format!(
        r#"{{"sub":"{sub}","aud":"{aud}","exp":{}}}"#,
        now + exp_offset
    ));
    let sig = B64URL.encode(mac(
        OAUTH_KEY.as_bytes(),
        format!("{head}.{body}").as_bytes(),
    ));
    format!("{head}.{body}.{sig}")
}

#[test]
fn mpop_oauthbearer_and_xoauth2() {
    let s = server();
    let good = token("alice", "pop", 600);
    mpop(&s, "alice", "oauthbearer", &good, true).assert_success();
    mpop(&s, "alice", "xoauth2", &good, true).assert_success();
    for (what, bad) in [
        ("expired", token("alice", "pop", -3600)),
        ("another audience", token("alice", "imap", 600)),
        ("another user's", token("bob", "pop", 600)),
        ("a password", "alice-pw".to_string()),
    ] {
        let r = mpop(&s, "alice", "oauthbearer", &bad, true);
        assert_ne!(r.code(), Some(0), "{what} token accepted: {}", r.output());
    }
    // Each was refused by the token check, for its own reason.
    for reason in [
        "token expired",
        "token audience does not match",
        "token is for another user",
        "token is not a JWS compact serialization",
    ] {
        s.wait_for_log(reason);
    }
}

#[test]
fn curl_oauthbearer() {
    let s = server();
    let cert = s.cert_path();
    let base = format!("pop3s://127.0.0.1:{}/", s.tls.port());
    let args = |tok: &str| -> Vec<String> {
        vec![
            "--cacert".into(),
            cert.display().to_string(),
            "-u".into(),
            "alice:".into(),
            "--oauth2-bearer".into(),
            tok.into(),
            "-v".into(),
            base.clone(),
        ]
    };
    let r = curl("curl OAUTHBEARER", &args(&token("alice", "pop", 600)));
    r.assert_success();
    assert!(r.stderr().contains("AUTH OAUTHBEARER"), "{}", r.output());
    assert_eq!(r.stdout(), "1 29\r\n", "{}", r.output());
    let r = curl("curl bad token", &args(&token("alice", "pop", -3600)));
    assert_eq!(r.code(), Some(67), "{}", r.output());
    let log = s.log();
    assert!(log.contains("token expired"), "{log}");
}
