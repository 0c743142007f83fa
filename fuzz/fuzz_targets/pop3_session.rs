//! The POP3 session state machine, driven as the server drives it: client
//! bytes go through a `LineBuffer` (with the session's current line limit),
//! each line goes to `Session::on_line`, and every request the session makes
//! (verify a login, look up a secret, open the maildrop, stream a message,
//! start TLS, commit deletions) is answered with an outcome the fuzzer
//! chooses: allow/deny/tempfail, a clear-text password or a SCRAM verifier,
//! a listing with arbitrary sizes and uids or an error, arbitrary message
//! bytes in arbitrary chunks, a TLS handshake that works or fails. The
//! driver can also play a correct APOP, SASL PLAIN/LOGIN/OAUTHBEARER/XOAUTH2
//! and SCRAM-SHA-256(-PLUS) client, so logins succeed as well as fail.
//!
//! Invariants checked on every step:
//! - every reply is well formed: CRLF-terminated lines of printable ASCII
//!   (UTF-8 without control characters once the client issued `UTF8`),
//!   at most 512 octets (RFC 2449 §4; SASL challenges at most
//!   `MAX_SASL_LINE`), starting `+OK `, `-ERR ` or `+ `; a reply of several
//!   lines is `+OK` and ends with the `.` line, with dot-stuffing;
//! - a line after a `+ ` challenge is taken as the SASL response (the
//!   session may take lines of `MAX_SASL_LINE` then); any other line as a
//!   command, refused if over 255 octets (RFC 2449 §4) unless it is `AUTH`
//!   with an initial response;
//! - the phase, principal and TLS flag follow what happened (TRANSACTION
//!   only after a listing was handed over; TLS only after STLS; 255-octet
//!   lines after login);
//! - in TRANSACTION, STAT/LIST/UIDL match a model of the maildrop, deleted
//!   messages are never listed or sent, RSET undeletes, QUIT commits exactly
//!   the deleted keys;
//! - RETR/TOP streams are dot-stuffed, CRLF, terminated, and un-stuff back
//!   to the stored message (TOP: its header, blank line and N body lines);
//! - APOP succeeds exactly when the digest is MD5(timestamp + secret);
//!   SCRAM succeeds exactly when the client proved the password the auth
//!   plugin gave, and the server signature is right;
//! - no login that reveals a password or token (USER, PLAIN, LOGIN,
//!   OAUTHBEARER, XOAUTH2) reaches the auth plugin, and none is offered,
//!   where plaintext is not allowed; STLS is offered only before login on
//!   a connection that can start TLS and has not; -PLUS only with a channel
//!   binding;
//! - the failed-login flag is set only on an answer that refuses a login;
//! - `AUTH SCRAM-SHA-256-PLUS` without an initial response gets no
//!   challenge;
//! - RFC 6856: `UTF8` works exactly before login; `LANG` lists en, de and
//!   i-default, and a range answers `+OK <tag>` for the language RFC 4647
//!   lookup selects, after which the LIST/RSET texts are in it; USER/PASS
//!   reach the auth plugin in NFC, and SCRAM proves the SASLprep'd
//!   password; a client not in UTF-8 mode gets an internationalized header
//!   downgraded to ASCII (the rest of the message as stored) and the size
//!   RETR states changes by exactly what downgrading changed.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use md5::Md5;
use poplar_proto::pop3::command::{Command, parse};
use poplar_proto::pop3::downgrade;
use poplar_proto::pop3::scram::Verifier;
use poplar_proto::pop3::session::{
    Action, AuthOutcome, AuthRequest, Entry, MAX_COMMAND_LINE, MAX_SASL_LINE, MaildropError,
    Mechanisms, Phase, Secret, SecretKind, SecretOutcome, Session, SessionConfig, StorageFailure,
};
use poplar_proto::pop3::{Line, LineBuffer};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

type HmacSha256 = Hmac<Sha256>;

const STAMP: &str = "<4242.7.1700000000@fuzz.poplar.test>";
/// RFC 2449 §4: a response line is at most 512 octets, CRLF included.
const MAX_REPLY_LINE: usize = 512;
/// The host refuses listings with a larger stored size (1 TiB).
const MAX_STORED_SIZE: u64 = 1 << 40;
/// Bounds that keep one execution fast.
const MAX_STEPS: usize = 256;
const MAX_ENTRIES: usize = 40;
/// SCRAM iteration counts the client computes (the made-up verifiers for
/// clear-text passwords and unknown users use 4096).
const MAX_CLIENT_ITERATIONS: u32 = 4096;

#[derive(Arbitrary, Debug)]
enum Expire {
    Never,
    Days(u16),
}

#[derive(Arbitrary, Debug)]
struct Setup {
    apop: bool,
    stls: bool,
    login_delay: Option<u32>,
    expire: Option<Expire>,
    /// Bit i enables `Mechanisms::ALL[i]`.
    mechanisms: u8,
    secret: [u8; 32],
    tls: bool,
    /// The `tls-exporter` value of an implicit-TLS connection.
    binding: Option<[u8; 32]>,
    plaintext_without_tls: bool,
}

/// A SASL PLAIN message: authzid NUL authcid NUL password.
#[derive(Arbitrary, Debug)]
struct Plain {
    authzid: String,
    user: String,
    pass: String,
}

impl Plain {
    fn encode(&self) -> String {
        B64.encode(format!("{}\0{}\0{}", self.authzid, self.user, self.pass))
    }
}

#[derive(Arbitrary, Debug)]
enum Gs2 {
    N,
    Y,
    TlsExporter,
    Other(String),
}

/// A SCRAM client-first message.
#[derive(Arbitrary, Debug)]
struct ScramFirst {
    gs2: Gs2,
    /// `a=` the user (`Some(true)`), someone else, or none.
    authzid: Option<bool>,
    user: String,
    nonce: String,
}

#[derive(Arbitrary, Debug)]
struct OAuth {
    user: Option<String>,
    token: String,
    xoauth2_form: bool,
}

impl OAuth {
    fn encode(&self) -> String {
        let text = if self.xoauth2_form {
            format!(
                "user={}\x01auth=Bearer {}\x01\x01",
                self.user.as_deref().unwrap_or(""),
                self.token
            )
        } else {
            let a = match &self.user {
                Some(u) => format!("a={}", u.replace('=', "=3D").replace(',', "=2C")),
                None => String::new(),
            };
            format!(
                "n,{a},\x01host=pop.test\x01auth=Bearer {}\x01\x01",
                self.token
            )
        };
        B64.encode(text)
    }
}

/// What the client sends next. Structured commands get the fuzzer past
/// login quickly; `Raw` and `Line` let it send anything.
#[derive(Arbitrary, Debug)]
enum Client {
    User(String),
    Pass(String),
    /// APOP with the right digest for `secret`, which the secret lookup can
    /// then return; `upper` sends the digest in upper case.
    ApopGood {
        user: String,
        secret: String,
        upper: bool,
    },
    ApopAny(String, String),
    AuthList,
    AuthPlain(Option<Plain>),
    AuthPlainEmpty,
    AuthLogin(Option<String>),
    AuthScram {
        plus: bool,
        initial: Option<ScramFirst>,
    },
    AuthOAuth {
        xoauth2: bool,
        initial: Option<OAuth>,
    },
    Auth(String, Option<String>),
    /// SASL continuations.
    PlainResponse(Plain),
    ScramFirst(ScramFirst),
    /// The right client-final message for the exchange under way.
    ScramFinalGood,
    ScramFinalAny {
        cbind: Vec<u8>,
        nonce: String,
        proof: Vec<u8>,
    },
    OAuthResponse(OAuth),
    Base64(Vec<u8>),
    Empty,
    Cancel,
    Capa,
    Stls,
    Stat,
    List(Option<u8>),
    Uidl(Option<u8>),
    Retr(u8),
    Top(u8, u8),
    Dele(u8),
    Noop,
    Rset,
    Quit,
    Utf8,
    Lang(Option<LangRange>),
    /// Bytes as they come: part of a line, several lines, anything.
    Raw(Vec<u8>),
    /// One line of arbitrary bytes.
    Line(Vec<u8>),
    /// A line of `n` octets, likely over the limit.
    Long(u16),
}

/// A `LANG` argument.
#[derive(Arbitrary, Debug)]
enum LangRange {
    En,
    De,
    DeCh,
    Star,
    IDefault,
    Other(String),
}

impl LangRange {
    fn text(&self) -> String {
        match self {
            LangRange::En => "en".into(),
            LangRange::De => "de".into(),
            LangRange::DeCh => "DE-ch-1996".into(),
            LangRange::Star => "*".into(),
            LangRange::IDefault => "i-default".into(),
            LangRange::Other(s) => s.clone(),
        }
    }
}

/// The client's side of a SCRAM exchange.
#[derive(Default)]
struct ScramClient {
    gs2: String,
    bare: String,
    nonce: String,
    /// The client-first message as sent (base64).
    first: String,
    /// The line being handled carries that client-first message.
    current: bool,
    /// The last server-first message received.
    server_first: Option<String>,
    /// It was the last reply: the client-final is due.
    awaiting_final: bool,
    /// The password the auth plugin was told to have, and its principal.
    password: Option<(String, String)>,
    /// The correct client-final sent, the auth message and expected
    /// server signature, while its answer is awaited.
    good_final: Option<(Vec<u8>, Vec<u8>)>,
    /// Server-final checked: the exchange succeeded for this principal.
    verified: Option<String>,
}

/// The APOP digest of `secret` as a client types it (NFC, RFC 6856).
fn apop_digest(secret: &str) -> String {
    use md5::Digest as _;
    let mut h = Md5::new();
    h.update(STAMP.as_bytes());
    h.update(secret.nfc().collect::<String>().as_bytes());
    hex::encode(h.finalize())
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

/// RFC 5802 `Hi` (PBKDF2-HMAC-SHA-256, one block), written from the RFC.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&[0, 0, 0, 1]);
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

/// RFC 5802 `saslname`.
fn saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    fn first(&mut self, f: &ScramFirst) -> String {
        let user = saslname(&f.user);
        let flag = match &f.gs2 {
            Gs2::N => "n".to_string(),
            Gs2::Y => "y".to_string(),
            Gs2::TlsExporter => "p=tls-exporter".to_string(),
            Gs2::Other(o) => format!("p={o}"),
        };
        let authzid = match f.authzid {
            Some(true) => format!("a={user}"),
            Some(false) => "a=someone-else".to_string(),
            None => String::new(),
        };
        let nonce: String = f
            .nonce
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != ',')
            .collect();
        let nonce = if nonce.is_empty() {
            "n0nce".into()
        } else {
            nonce
        };
        self.gs2 = format!("{flag},{authzid},");
        self.bare = format!("n={user},r={nonce}");
        self.nonce = nonce;
        self.server_first = None;
        self.good_final = None;
        self.verified = None;
        self.first = B64.encode(format!("{}{}", self.gs2, self.bare));
        self.first.clone()
    }

    /// The correct client-final message for the last server-first, with the
    /// password given to the server (or a wrong one).
    fn good_final(&mut self, binding: Option<&[u8]>) -> String {
        let fallback = ("not the password".to_string(), String::new());
        let (password, _) = self.password.as_ref().unwrap_or(&fallback);
        let Some(sf) = &self.server_first else {
            return B64.encode("c=biws,r=none,p=AAAA");
        };
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0u32;
        for f in sf.split(',') {
            if let Some(v) = f.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = f.strip_prefix("s=") {
                salt = B64.decode(v).unwrap_or_default();
            } else if let Some(v) = f.strip_prefix("i=") {
                iterations = v.parse().unwrap_or(0);
            }
        }
        // RFC 5802 §5.1: the server's nonce extends the client's.
        assert!(
            nonce.starts_with(&self.nonce) && nonce.len() > self.nonce.len(),
            "server nonce {sf:?} for client nonce {:?}",
            self.nonce
        );
        assert!(iterations >= 1, "iteration count in {sf:?}");
        if iterations > MAX_CLIENT_ITERATIONS {
            return B64.encode("c=biws,r=none,p=AAAA");
        }
        let mut cbind = self.gs2.as_bytes().to_vec();
        if self.gs2.starts_with("p=") {
            cbind.extend_from_slice(binding.unwrap_or_default());
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind));
        let auth_message = format!("{},{sf},{without_proof}", self.bare);
        let salted = salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        let server_signature = hmac(&server_key, auth_message.as_bytes());
        let msg = format!("{without_proof},p={}", B64.encode(proof));
        let line = B64.encode(&msg);
        self.good_final = Some((line.clone().into_bytes(), server_signature.to_vec()));
        line
    }
}

impl Client {
    fn render(&self, d: &mut Driver) -> Vec<u8> {
        let num = |k: &str, n: &Option<u8>| match n {
            Some(n) => format!("{k} {n}"),
            None => k.to_string(),
        };
        let text = match self {
            Client::User(u) => format!("USER {u}"),
            Client::Pass(p) => format!("PASS {p}"),
            Client::ApopGood {
                user,
                secret,
                upper,
            } => {
                d.apop_secret = Some(secret.clone());
                let h = apop_digest(secret);
                let h = if *upper { h.to_ascii_uppercase() } else { h };
                format!("APOP {user} {h}")
            }
            Client::ApopAny(u, h) => format!("APOP {u} {h}"),
            Client::AuthList => "AUTH".into(),
            Client::AuthPlain(None) => "AUTH PLAIN".into(),
            Client::AuthPlain(Some(p)) => format!("AUTH PLAIN {}", p.encode()),
            Client::AuthPlainEmpty => "AUTH PLAIN =".into(),
            Client::AuthLogin(None) => "AUTH LOGIN".into(),
            Client::AuthLogin(Some(u)) => format!("AUTH LOGIN {}", B64.encode(u)),
            Client::AuthScram { plus, initial } => {
                let m = if *plus {
                    "SCRAM-SHA-256-PLUS"
                } else {
                    "SCRAM-SHA-256"
                };
                match initial {
                    Some(f) => format!("AUTH {m} {}", d.scram.first(f)),
                    None => format!("AUTH {m}"),
                }
            }
            Client::AuthOAuth { xoauth2, initial } => {
                let m = if *xoauth2 { "XOAUTH2" } else { "OAUTHBEARER" };
                match initial {
                    Some(o) => format!("AUTH {m} {}", o.encode()),
                    None => format!("AUTH {m}"),
                }
            }
            Client::Auth(m, None) => format!("AUTH {m}"),
            Client::Auth(m, Some(i)) => format!("AUTH {m} {i}"),
            Client::PlainResponse(p) => p.encode(),
            Client::ScramFirst(f) => d.scram.first(f),
            Client::ScramFinalGood => d.scram.good_final(d.binding.as_deref()),
            Client::ScramFinalAny {
                cbind,
                nonce,
                proof,
            } => B64.encode(format!(
                "c={},r={nonce},p={}",
                B64.encode(cbind),
                B64.encode(proof)
            )),
            Client::OAuthResponse(o) => o.encode(),
            Client::Base64(b) => B64.encode(b),
            Client::Empty => "=".into(),
            Client::Cancel => "*".into(),
            Client::Capa => "CAPA".into(),
            Client::Stls => "STLS".into(),
            Client::Stat => "STAT".into(),
            Client::List(n) => num("LIST", n),
            Client::Uidl(n) => num("UIDL", n),
            Client::Retr(n) => format!("RETR {n}"),
            Client::Top(n, k) => format!("TOP {n} {k}"),
            Client::Dele(n) => format!("DELE {n}"),
            Client::Noop => "NOOP".into(),
            Client::Utf8 => "UTF8".into(),
            Client::Lang(None) => "LANG".into(),
            Client::Lang(Some(r)) => format!("LANG {}", r.text()),
            Client::Rset => "RSET".into(),
            Client::Quit => "QUIT".into(),
            Client::Raw(b) => return b.clone(),
            Client::Line(b) => {
                let mut v = b.clone();
                v.extend_from_slice(b"\r\n");
                return v;
            }
            Client::Long(n) => {
                let mut v = vec![b'A'; *n as usize];
                v.extend_from_slice(b"\r\n");
                return v;
            }
        };
        let mut v = text.into_bytes();
        v.extend_from_slice(b"\r\n");
        v
    }
}

#[derive(Arbitrary, Debug)]
enum AuthChoice {
    Allow(String),
    Deny,
    TempFail,
}

#[derive(Arbitrary, Debug)]
enum SecretChoice {
    /// The secret of the last good APOP the client sent (or `fallback`).
    Recorded {
        fallback: String,
        principal: String,
    },
    Plaintext {
        secret: String,
        principal: String,
    },
    /// A SCRAM verifier for `password` (1 to 4 iterations, to stay fast).
    Verifier {
        password: String,
        salt: Vec<u8>,
        iterations: u8,
        principal: String,
    },
    Unavailable,
    TempFail,
}

#[derive(Arbitrary, Debug)]
enum MaildropChoice {
    Listing(Vec<EntrySpec>),
    InUse,
    LoginDelay,
    Temporary,
    Permanent,
}

#[derive(Arbitrary, Debug)]
struct EntrySpec {
    key: String,
    uid: Vec<u8>,
    stored: u64,
    small: bool,
    size_pick: u64,
}

/// A message for RETR/TOP, read by the host in chunks.
#[derive(Arbitrary, Debug, Default)]
struct Body {
    bytes: Vec<u8>,
    chunks: Vec<u8>,
}

/// The maildrop as the client should see it.
struct Drop {
    principal: String,
    entries: Vec<Entry>,
    deleted: Vec<bool>,
}

impl Drop {
    fn live(&self, msg: u32) -> Option<&Entry> {
        let i = (msg as usize).checked_sub(1)?;
        let e = self.entries.get(i)?;
        (!self.deleted[i]).then_some(e)
    }

    fn totals(&self) -> (usize, u64) {
        self.entries
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| !**d)
            .fold((0, 0), |(n, o), (e, _)| (n + 1, o + e.size))
    }
}

enum Flow {
    Go,
    End,
}

struct Driver {
    s: Session,
    input: LineBuffer,
    plaintext_without_tls: bool,
    stls_configured: bool,
    apop_enabled: bool,
    mechanisms: Mechanisms,
    tls: bool,
    /// The connection's `tls-exporter` value.
    binding: Option<Vec<u8>>,
    drop: Option<Drop>,
    /// The principal the last auth outcome allowed.
    allowed: Option<String>,
    /// The name of the last USER the session accepted.
    user_ok: Option<String>,
    /// The digest of the last APOP command the session parsed.
    apop_digest: Option<String>,
    apop_secret: Option<String>,
    scram: ScramClient,
    /// The last reply was a `+ ` challenge: the next line answers it.
    sasl_waiting: bool,
    /// The client issued `UTF8` (RFC 6856).
    utf8: bool,
    /// `LANG` chose German.
    german: bool,
}

fuzz_target!(|data: &[u8]| {
    match data.strip_prefix(TRANSCRIPT.as_bytes()) {
        Some(text) => {
            let (setup, clients, mut script) = Script::parse(text);
            run(setup, clients.into_iter().map(Ok), &mut script);
        }
        None => {
            let mut u = Unstructured::new(data);
            let Ok(setup) = Setup::arbitrary(&mut u) else {
                return;
            };
            // Client steps and outcomes are drawn from the same bytes, in
            // the order they are needed.
            let u = std::cell::RefCell::new(u);
            let clients = std::iter::from_fn(|| {
                let mut u = u.borrow_mut();
                (!u.is_empty()).then(|| Client::arbitrary(&mut u))
            });
            run(setup, clients, &mut Shared(&u));
        }
    }
});

fn run(setup: Setup, clients: impl Iterator<Item = arbitrary::Result<Client>>, o: &mut dyn Oracle) {
    let mut mechanisms = Mechanisms::none();
    for (i, name) in Mechanisms::ALL.iter().enumerate() {
        if setup.mechanisms & (1 << i) != 0 {
            assert!(mechanisms.enable(name));
        }
    }
    let config = SessionConfig {
        apop: setup.apop,
        stls: setup.stls,
        login_delay: setup.login_delay,
        expire: setup.expire.map(|e| match e {
            Expire::Never => "NEVER".to_string(),
            Expire::Days(d) => d.to_string(),
        }),
        mechanisms,
        secret: setup.secret,
    };
    let mut s = Session::new(config, setup.tls, setup.plaintext_without_tls, STAMP.into());
    let binding = setup.binding.filter(|_| setup.tls).map(|b| b.to_vec());
    s.set_channel_binding(binding.clone());
    let greeting = s.greeting();
    check_status(&greeting, false);
    assert!(greeting.starts_with(b"+OK "));
    assert_eq!(
        setup.apop,
        greeting.windows(STAMP.len()).any(|w| w == STAMP.as_bytes()),
        "the APOP timestamp is in the greeting exactly when APOP is on"
    );
    let mut d = Driver {
        s,
        input: LineBuffer::new(),
        plaintext_without_tls: setup.plaintext_without_tls,
        stls_configured: setup.stls,
        apop_enabled: setup.apop,
        mechanisms,
        tls: setup.tls,
        binding,
        drop: None,
        allowed: None,
        user_ok: None,
        apop_digest: None,
        apop_secret: None,
        scram: ScramClient::default(),
        sasl_waiting: false,
        utf8: false,
        german: false,
    };
    d.check_state();
    for client in clients.take(MAX_STEPS) {
        let Ok(client) = client else {
            break;
        };
        let bytes = client.render(&mut d);
        d.input.extend(&bytes);
        while let Some(line) = d.input.next_line(d.s.max_line()) {
            if let Flow::End = d.on_line(o, line) {
                return;
            }
        }
    }
}

/// `POPLAR_FUZZ_TRACE=1` prints the conversation to stderr, to read what
/// a crashing input does (`cargo fuzz run pop3_session ARTIFACT`).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("POPLAR_FUZZ_TRACE").is_some())
}

/// Where the outcomes of the session's requests come from.
trait Oracle {
    fn auth(&mut self) -> AuthChoice;
    fn secret(&mut self) -> SecretChoice;
    fn maildrop(&mut self) -> MaildropChoice;
    fn body(&mut self) -> Body;
    /// `None`: the handshake fails; else the `tls-exporter` value, if any.
    fn tls(&mut self) -> Option<Option<[u8; 32]>>;
    fn commit(&mut self) -> u8;
}

/// Outcomes drawn from the fuzzer's bytes (shared with the client steps).
struct Shared<'a, 'b>(&'b std::cell::RefCell<Unstructured<'a>>);

impl Oracle for Shared<'_, '_> {
    fn auth(&mut self) -> AuthChoice {
        AuthChoice::arbitrary(&mut self.0.borrow_mut()).unwrap_or(AuthChoice::Deny)
    }
    fn secret(&mut self) -> SecretChoice {
        SecretChoice::arbitrary(&mut self.0.borrow_mut()).unwrap_or(SecretChoice::Unavailable)
    }
    fn maildrop(&mut self) -> MaildropChoice {
        MaildropChoice::arbitrary(&mut self.0.borrow_mut()).unwrap_or(MaildropChoice::Temporary)
    }
    fn body(&mut self) -> Body {
        Body::arbitrary(&mut self.0.borrow_mut()).unwrap_or_default()
    }
    fn tls(&mut self) -> Option<Option<[u8; 32]>> {
        Option::<Option<[u8; 32]>>::arbitrary(&mut self.0.borrow_mut()).unwrap_or(None)
    }
    fn commit(&mut self) -> u8 {
        u8::arbitrary(&mut self.0.borrow_mut()).unwrap_or(0)
    }
}

/// An input that starts with this line is a readable transcript instead
/// of bytes for `arbitrary` (the seed corpus is written this way):
///
/// ```text
/// #!pop3
/// #config tls plaintext stls apop mech=PLAIN,SCRAM-SHA-256 binding
/// USER alice                   a client line, sent with CRLF
/// #allow alice                 the next login is allowed, as alice
/// #maildrop 120/118/uid-a 300/296/uid-b
/// RETR 1
/// #message                     the next message's stored bytes, one line
/// Subject: hi                  per line (LF endings), up to `#end`
///
/// .hello
/// #end
/// ```
///
/// Other directives: `#deny`, `#auth-tempfail`; `#secret PASSWORD
/// PRINCIPAL`, `#verifier ITERATIONS PASSWORD PRINCIPAL`, `#no-secret`,
/// `#secret-tempfail`; `#in-use`, `#login-delay`, `#maildrop-tempfail`,
/// `#maildrop-permfail`; `#chunks N…` (read sizes for the next message);
/// `#tls`, `#tls-binding`, `#tls-fail`; `#commit-ok`, `#commit-tempfail`,
/// `#commit-permfail`. Outcomes are queued per kind and used in order;
/// with none queued a login is denied, a lookup finds nothing, the maildrop
/// is temporarily unavailable, a message is empty, TLS fails, a commit
/// works. Client macros: `#apop USER SECRET` (the right digest),
/// `#plain USER PASSWORD` (`AUTH PLAIN` with the initial response),
/// `#b64 TEXT` (a base64 line), `#scram USER NONCE` and `#scram-plus USER
/// NONCE` (`AUTH SCRAM-SHA-256[-PLUS]` with client-first), `#scram-final`
/// (the right client-final), `#oauth USER TOKEN`, `#xoauth2 USER TOKEN`,
/// `#oauth-response USER TOKEN` (an OAUTHBEARER continuation),
/// `#raw TEXT` (sent as is, with `\r` and `\n` for CR and LF). Any
/// other line starting with `#` is sent as a client line.
const TRANSCRIPT: &str = "#!pop3\n";

#[derive(Default)]
struct Script {
    auth: std::collections::VecDeque<AuthChoice>,
    secret: std::collections::VecDeque<SecretChoice>,
    maildrop: std::collections::VecDeque<MaildropChoice>,
    body: std::collections::VecDeque<Body>,
    chunks: Vec<u8>,
    tls: std::collections::VecDeque<Option<Option<[u8; 32]>>>,
    commit: std::collections::VecDeque<u8>,
}

impl Script {
    fn parse(text: &[u8]) -> (Setup, Vec<Client>, Script) {
        let mut setup = Setup {
            apop: true,
            stls: true,
            login_delay: None,
            expire: None,
            mechanisms: 0b11,
            secret: [7; 32],
            tls: false,
            binding: None,
            plaintext_without_tls: true,
        };
        let mut clients = Vec::new();
        let mut script = Script::default();
        let mut lines = text.split(|&b| b == b'\n');
        while let Some(line) = lines.next() {
            let Some(directive) = line.strip_prefix(b"#") else {
                clients.push(Client::Line(line.to_vec()));
                continue;
            };
            let text = String::from_utf8_lossy(directive);
            let mut words = text.split(' ');
            let verb = words.next().unwrap_or("");
            let args: Vec<&str> = words.collect();
            let arg = |i: usize| args.get(i).copied().unwrap_or("").to_string();
            match verb {
                "config" => {
                    setup.apop = args.contains(&"apop");
                    setup.stls = args.contains(&"stls");
                    setup.tls = args.contains(&"tls");
                    setup.plaintext_without_tls = args.contains(&"plaintext");
                    setup.binding = args.contains(&"binding").then_some([0xcb; 32]);
                    setup.mechanisms = 0;
                    for a in &args {
                        if let Some(list) = a.strip_prefix("mech=") {
                            for m in list.split(',') {
                                if let Some(i) = Mechanisms::ALL.iter().position(|n| *n == m) {
                                    setup.mechanisms |= 1 << i;
                                }
                            }
                        } else if let Some(d) = a.strip_prefix("login-delay=") {
                            setup.login_delay = d.parse().ok();
                        } else if let Some(e) = a.strip_prefix("expire=") {
                            setup.expire = Some(match e.parse() {
                                Ok(days) => Expire::Days(days),
                                Err(_) => Expire::Never,
                            });
                        }
                    }
                }
                "allow" => script.auth.push_back(AuthChoice::Allow(arg(0))),
                "deny" => script.auth.push_back(AuthChoice::Deny),
                "auth-tempfail" => script.auth.push_back(AuthChoice::TempFail),
                "secret" => script.secret.push_back(SecretChoice::Plaintext {
                    secret: arg(0),
                    principal: arg(1),
                }),
                "verifier" => script.secret.push_back(SecretChoice::Verifier {
                    iterations: arg(0).parse::<u8>().unwrap_or(1).saturating_sub(1),
                    password: arg(1),
                    salt: b"fuzz salt".to_vec(),
                    principal: arg(2),
                }),
                "no-secret" => script.secret.push_back(SecretChoice::Unavailable),
                "secret-tempfail" => script.secret.push_back(SecretChoice::TempFail),
                "maildrop" => {
                    let specs = args
                        .iter()
                        .map(|e| {
                            let mut f = e.split('/');
                            let size: u64 = f.next().unwrap_or("").parse().unwrap_or(0);
                            let stored: u64 = f.next().unwrap_or("").parse().unwrap_or(0);
                            EntrySpec {
                                key: format!("cur/{e}"),
                                uid: f.next().unwrap_or("").as_bytes().to_vec(),
                                stored,
                                small: false,
                                size_pick: size,
                            }
                        })
                        .collect();
                    script.maildrop.push_back(MaildropChoice::Listing(specs));
                }
                "in-use" => script.maildrop.push_back(MaildropChoice::InUse),
                "login-delay" => script.maildrop.push_back(MaildropChoice::LoginDelay),
                "maildrop-tempfail" => script.maildrop.push_back(MaildropChoice::Temporary),
                "maildrop-permfail" => script.maildrop.push_back(MaildropChoice::Permanent),
                "chunks" => script.chunks = args.iter().filter_map(|n| n.parse().ok()).collect(),
                "message" => {
                    let mut bytes = Vec::new();
                    for l in lines.by_ref() {
                        if l == b"#end" {
                            break;
                        }
                        bytes.extend_from_slice(l);
                        bytes.push(b'\n');
                    }
                    let chunks = std::mem::take(&mut script.chunks);
                    script.body.push_back(Body { bytes, chunks });
                }
                "tls" => script.tls.push_back(Some(None)),
                "tls-binding" => script.tls.push_back(Some(Some([0xcb; 32]))),
                "tls-fail" => script.tls.push_back(None),
                "commit-ok" => script.commit.push_back(0),
                "commit-tempfail" => script.commit.push_back(1),
                "commit-permfail" => script.commit.push_back(2),
                "apop" => clients.push(Client::ApopGood {
                    user: arg(0),
                    secret: arg(1),
                    upper: false,
                }),
                "plain" => clients.push(Client::AuthPlain(Some(Plain {
                    authzid: String::new(),
                    user: arg(0),
                    pass: arg(1),
                }))),
                "b64" => clients.push(Client::Base64(args.join(" ").into_bytes())),
                "scram" | "scram-plus" => clients.push(Client::AuthScram {
                    plus: verb == "scram-plus",
                    initial: Some(ScramFirst {
                        gs2: if verb == "scram-plus" {
                            Gs2::TlsExporter
                        } else {
                            Gs2::N
                        },
                        authzid: None,
                        user: arg(0),
                        nonce: arg(1),
                    }),
                }),
                "scram-final" => clients.push(Client::ScramFinalGood),
                "oauth" | "xoauth2" => clients.push(Client::AuthOAuth {
                    xoauth2: verb == "xoauth2",
                    initial: Some(OAuth {
                        user: Some(arg(0)),
                        token: arg(1),
                        xoauth2_form: verb == "xoauth2",
                    }),
                }),
                "oauth-response" => clients.push(Client::OAuthResponse(OAuth {
                    user: Some(arg(0)),
                    token: arg(1),
                    xoauth2_form: false,
                })),
                "raw" => {
                    let text = args.join(" ").replace("\\r", "\r").replace("\\n", "\n");
                    clients.push(Client::Raw(text.into_bytes()))
                }
                _ => clients.push(Client::Line(line.to_vec())),
            }
        }
        (setup, clients, script)
    }
}

impl Oracle for Script {
    fn auth(&mut self) -> AuthChoice {
        self.auth.pop_front().unwrap_or(AuthChoice::Deny)
    }
    fn secret(&mut self) -> SecretChoice {
        self.secret.pop_front().unwrap_or(SecretChoice::Unavailable)
    }
    fn maildrop(&mut self) -> MaildropChoice {
        self.maildrop
            .pop_front()
            .unwrap_or(MaildropChoice::Temporary)
    }
    fn body(&mut self) -> Body {
        self.body.pop_front().unwrap_or_default()
    }
    fn tls(&mut self) -> Option<Option<[u8; 32]>> {
        self.tls.pop_front().unwrap_or(None)
    }
    fn commit(&mut self) -> u8 {
        self.commit.pop_front().unwrap_or(0)
    }
}

impl Driver {
    fn plaintext_allowed(&self) -> bool {
        self.tls || self.plaintext_without_tls
    }

    fn check_state(&self) {
        let want = if self.drop.is_some() {
            Phase::Transaction
        } else {
            Phase::Authorization
        };
        assert_eq!(self.s.phase(), want);
        assert_eq!(
            self.s.principal(),
            self.drop.as_ref().map(|d| d.principal.as_str())
        );
        assert_eq!(self.s.tls(), self.tls);
        if self.drop.is_some() {
            assert_eq!(
                self.s.max_line(),
                MAX_COMMAND_LINE,
                "line limit after login"
            );
        }
    }

    fn on_line(&mut self, o: &mut dyn Oracle, line: Line) -> Flow {
        // RFC 5034: a line right after a `+ ` challenge is a SASL response.
        let in_sasl = self.sasl_waiting;
        if in_sasl {
            assert!(self.s.max_line() >= MAX_SASL_LINE, "SASL response limit");
        }
        let cmd = match (&line, in_sasl) {
            // RFC 2449 §4: commands are at most 255 octets with CRLF; AUTH
            // with an initial response may be longer (OAuth tokens).
            (Line::Complete(l), false)
                if l.len() + 2 > MAX_COMMAND_LINE
                    && !(self.drop.is_none()
                        && l.len() > 5
                        && l[..5].eq_ignore_ascii_case(b"AUTH ")) =>
            {
                None
            }
            (Line::Complete(l), false) => parse(l).ok(),
            _ => None,
        };
        // Is this line the right SCRAM client-final?
        let good_final = match (&line, &self.scram.good_final) {
            (Line::Complete(l), Some((sent, _))) if self.scram.awaiting_final && l == sent => {
                self.scram.server_first = None;
                self.scram.good_final.take()
            }
            _ => None,
        };
        let complete = matches!(line, Line::Complete(_));
        // Does this line carry the client-first message the driver made?
        self.scram.current = match &line {
            Line::Complete(l) if !self.scram.first.is_empty() => {
                let first = self.scram.first.as_bytes();
                l == first || (l.ends_with(first) && l[..l.len() - first.len()].ends_with(b" "))
            }
            _ => false,
        };
        if tracing() {
            match &line {
                Line::Complete(l) => eprintln!("C: {}", String::from_utf8_lossy(l)),
                Line::TooLong => eprintln!("C: <line too long>"),
            }
        }
        let action = self.s.on_line(line);
        let last = self.s.take_last_command();
        if !complete || !in_sasl {
            assert_eq!(last, cmd.as_ref().map(Command::name));
        }
        if let Some(Command::Apop { digest, .. }) = &cmd {
            self.apop_digest = Some(digest.clone());
        }
        if let Some((_, server_signature)) = good_final {
            self.scram_final_answer(&action, &server_signature);
        }
        if let Action::OpenMaildrop { principal } = &action {
            // Only a SCRAM exchange logs in straight from a client line.
            let verified = self.scram.verified.take();
            assert_eq!(verified.as_ref(), Some(principal), "login without proof");
        }
        let flow = self.perform(o, action, cmd.as_ref());
        if let Flow::Go = flow {
            self.check_state();
        }
        flow
    }

    /// The answer to a correct SCRAM client-final: server-final with the
    /// right signature when the server had the password the client used.
    fn scram_final_answer(&mut self, action: &Action, server_signature: &[u8]) {
        let Action::Reply(bytes) = action else {
            panic!("client-final answered with {action:?}");
        };
        let Some((_, principal)) = &self.scram.password else {
            assert!(
                bytes.starts_with(b"-ERR [AUTH]"),
                "no password, yet {bytes:?}"
            );
            return;
        };
        let challenge = bytes
            .strip_prefix(b"+ ")
            .and_then(|b| b.strip_suffix(b"\r\n"))
            .unwrap_or_else(|| panic!("good proof refused: {}", String::from_utf8_lossy(bytes)));
        let server_final = B64.decode(challenge).expect("base64 server-final");
        let want = format!("v={}", B64.encode(server_signature));
        assert_eq!(server_final, want.as_bytes(), "server signature");
        self.scram.verified = Some(principal.clone());
    }

    /// Carries out an action and the ones it leads to, as the host does.
    fn perform(&mut self, o: &mut dyn Oracle, mut action: Action, cmd: Option<&Command>) -> Flow {
        // Only the first action answers the client's line directly.
        let mut direct = true;
        loop {
            if tracing() {
                match &action {
                    Action::Reply(b) | Action::Quit(b) | Action::Close(b) | Action::StartTls(b) => {
                        eprint!("S: {}", String::from_utf8_lossy(b))
                    }
                    Action::SendMessage { head, key, .. } => {
                        eprint!("S: <message {key:?}> {}", String::from_utf8_lossy(head))
                    }
                    other => eprintln!("S: <{other:?}>"),
                }
            }
            action = match action {
                Action::Reply(bytes) => {
                    self.check_reply(&bytes, cmd, direct);
                    return Flow::Go;
                }
                Action::Quit(bytes) => {
                    check_status(&bytes, self.utf8);
                    assert!(bytes.starts_with(b"+OK "));
                    assert!(matches!(cmd, Some(Command::Quit)));
                    if let Some(d) = &self.drop {
                        assert!(!d.deleted.contains(&true), "QUIT dropped deletions");
                    }
                    return Flow::End;
                }
                Action::Close(bytes) => {
                    check_status(&bytes, self.utf8);
                    assert!(bytes.starts_with(b"-ERR "));
                    return Flow::End;
                }
                Action::Verify(req) => {
                    self.check_verify(&req, cmd);
                    let choice = o.auth();
                    let outcome = match choice {
                        AuthChoice::Allow(p) => {
                            self.allowed = Some(p.clone());
                            AuthOutcome::Allow { principal: p }
                        }
                        AuthChoice::Deny => AuthOutcome::Deny,
                        AuthChoice::TempFail => AuthOutcome::TempFail,
                    };
                    let deny = outcome == AuthOutcome::Deny;
                    let next = self.s.on_auth(outcome);
                    assert_eq!(self.s.take_auth_failure(), deny);
                    next
                }
                Action::LookupSecret { user, kind } => self.lookup_secret(o, &user, kind, cmd),
                Action::OpenMaildrop { principal } => {
                    assert!(self.drop.is_none());
                    assert_eq!(Some(&principal), self.allowed.as_ref());
                    let choice = o.maildrop();
                    let result = match choice {
                        MaildropChoice::Listing(specs) => Ok(listing(specs)),
                        MaildropChoice::InUse => Err(MaildropError::InUse),
                        MaildropChoice::LoginDelay => Err(MaildropError::LoginDelay),
                        MaildropChoice::Temporary => Err(MaildropError::Temporary),
                        MaildropChoice::Permanent => Err(MaildropError::Permanent),
                    };
                    let next = self.s.on_maildrop(principal.clone(), result.clone());
                    let Action::Reply(bytes) = &next else {
                        panic!("on_maildrop: {next:?}");
                    };
                    if tracing() {
                        eprint!("S: {}", String::from_utf8_lossy(bytes));
                    }
                    self.sasl_waiting = false;
                    self.scram.awaiting_final = false;
                    check_status(bytes, self.utf8);
                    assert!(!self.s.take_auth_failure());
                    assert_eq!(
                        self.s.login_mechanism().is_some(),
                        result.is_ok(),
                        "login mechanism"
                    );
                    match result {
                        Ok(entries) => {
                            assert!(bytes.starts_with(b"+OK "));
                            let n = entries.len();
                            self.drop = Some(Drop {
                                principal,
                                entries,
                                deleted: vec![false; n],
                            });
                        }
                        Err(_) => assert!(bytes.starts_with(b"-ERR ")),
                    }
                    return Flow::Go;
                }
                Action::SendMessage {
                    head,
                    octets,
                    key,
                    stored_size,
                    encoder,
                } => {
                    assert!(direct);
                    let drop = self.drop.as_ref().expect("a message sent before login");
                    let (msg, top) = match cmd {
                        Some(Command::Retr(m)) => (*m, None),
                        Some(Command::Top { msg, lines }) => (*msg, Some(*lines)),
                        other => panic!("message sent for {other:?}"),
                    };
                    let e = drop.live(msg).expect("a deleted or missing message sent");
                    assert_eq!((&key, stored_size), (&e.key, e.stored_size));
                    check_status(&head, self.utf8);
                    self.sasl_waiting = false;
                    self.scram.awaiting_final = false;
                    let octets_word = if self.german { "Oktette" } else { "octets" };
                    match top {
                        None => {
                            assert_eq!(
                                head,
                                format!("+OK {} {octets_word}\r\n", e.size).as_bytes()
                            );
                            assert_eq!(octets, Some(e.size));
                        }
                        Some(_) => {
                            assert!(head.starts_with(b"+OK "));
                            assert_eq!(octets, None);
                        }
                    }
                    let body = o.body();
                    let change = check_message(&body, encoder, top, !self.utf8);
                    // The host states the size it sends (RFC 6856).
                    if top.is_none() && change != 0 {
                        let sent = e.size.saturating_add_signed(change);
                        assert_eq!(
                            self.s.retr_head(sent),
                            format!("+OK {sent} {octets_word}\r\n").as_bytes()
                        );
                    }
                    return Flow::Go;
                }
                Action::StartTls(bytes) => {
                    check_status(&bytes, self.utf8);
                    assert!(bytes.starts_with(b"+OK "));
                    assert!(matches!(cmd, Some(Command::Stls)));
                    assert!(self.stls_configured && !self.tls && self.drop.is_none());
                    // The host drops what was pipelined behind STLS.
                    self.input.clear();
                    let Some(binding) = o.tls() else {
                        return Flow::End; // handshake failed
                    };
                    let binding = binding.map(|b| b.to_vec());
                    self.s.on_tls_started(binding.clone());
                    self.tls = true;
                    self.binding = binding;
                    self.user_ok = None;
                    self.scram = ScramClient::default();
                    self.sasl_waiting = false;
                    self.scram.awaiting_final = false;
                    // Nothing said before TLS holds inside it.
                    self.utf8 = false;
                    self.german = false;
                    return Flow::Go;
                }
                Action::Commit { principal, keys } => {
                    assert!(matches!(cmd, Some(Command::Quit)));
                    let drop = self.drop.as_ref().expect("commit before login");
                    assert_eq!(principal, drop.principal);
                    let want: Vec<&String> = drop
                        .entries
                        .iter()
                        .zip(&drop.deleted)
                        .filter(|(_, d)| **d)
                        .map(|(e, _)| &e.key)
                        .collect();
                    assert!(!want.is_empty(), "commit with nothing deleted");
                    assert_eq!(keys.iter().collect::<Vec<_>>(), want);
                    let result = match o.commit() % 3 {
                        0 => Ok(()),
                        1 => Err(StorageFailure::Temporary),
                        _ => Err(StorageFailure::Permanent),
                    };
                    let ok = result.is_ok();
                    let reply = self.s.on_commit(result);
                    if tracing() {
                        eprint!("S: {}", String::from_utf8_lossy(&reply));
                    }
                    check_status(&reply, self.utf8);
                    assert_eq!(reply.starts_with(b"+OK "), ok);
                    return Flow::End;
                }
                // A newer session may ask for things this driver does not
                // know yet: stop there rather than guess.
                #[allow(unreachable_patterns)]
                _ => return Flow::End,
            };
            direct = false;
        }
    }

    fn lookup_secret(
        &mut self,
        o: &mut dyn Oracle,
        user: &str,
        kind: SecretKind,
        cmd: Option<&Command>,
    ) -> Action {
        assert!(self.drop.is_none(), "secret lookup after login");
        let apop = match kind {
            SecretKind::Plaintext => {
                assert!(self.apop_enabled, "APOP while disabled");
                assert!(matches!(cmd, Some(Command::Apop { .. })));
                Some(self.apop_digest.take().expect("APOP digest"))
            }
            SecretKind::ScramSha256 => {
                assert!(!user.is_empty());
                self.scram.password = None;
                None
            }
        };
        let choice = o.secret();
        let verifier = matches!(choice, SecretChoice::Verifier { .. });
        let (outcome, password) = match choice {
            SecretChoice::Recorded {
                fallback,
                principal,
            } => {
                let secret = self.apop_secret.clone().unwrap_or(fallback);
                (
                    SecretOutcome::Found {
                        secret: Secret::Plaintext(secret.clone()),
                        principal: principal.clone(),
                    },
                    Some((secret, principal)),
                )
            }
            SecretChoice::Plaintext { secret, principal } => (
                SecretOutcome::Found {
                    secret: Secret::Plaintext(secret.clone()),
                    principal: principal.clone(),
                },
                Some((secret, principal)),
            ),
            SecretChoice::Verifier {
                password,
                salt,
                iterations,
                principal,
            } => (
                SecretOutcome::Found {
                    secret: Secret::ScramSha256(Verifier::from_password(
                        password.as_bytes(),
                        &salt,
                        1 + u32::from(iterations % 4),
                    )),
                    principal: principal.clone(),
                },
                // A verifier is no clear-text password: APOP must fail.
                Some((password, principal)).filter(|_| apop.is_none()),
            ),
            SecretChoice::Unavailable => (SecretOutcome::Unavailable, None),
            SecretChoice::TempFail => (SecretOutcome::TempFail, None),
        };
        let next = self.s.on_secret(outcome);
        let failed = self.s.take_auth_failure();
        match apop {
            Some(digest) => {
                let good = password
                    .as_ref()
                    .filter(|(secret, _)| apop_digest(secret).eq_ignore_ascii_case(&digest));
                if let Some((_, principal)) = good {
                    self.allowed = Some(principal.clone());
                    assert!(matches!(next, Action::OpenMaildrop { .. }), "{next:?}");
                    assert!(!failed);
                } else {
                    assert!(
                        !matches!(next, Action::OpenMaildrop { .. }),
                        "bad APOP digest"
                    );
                }
            }
            None => {
                // SCRAM: the server-first message follows (or a refusal).
                assert!(!matches!(next, Action::OpenMaildrop { .. }));
                assert!(!failed, "no SCRAM proof was checked yet");
                // The client hashes the SASLprep'd password (RFC 5802); one
                // SASLprep refuses matches nothing it can send. A stored
                // verifier was made from the password as it is.
                let password = password.and_then(|(pw, principal)| {
                    if verifier {
                        return Some((pw, principal));
                    }
                    let prepared = stringprep::saslprep(&pw).ok()?.into_owned();
                    Some((prepared, principal))
                });
                if let Some((_, principal)) = &password {
                    self.allowed = Some(principal.clone());
                }
                self.scram.password = password;
            }
        }
        next
    }

    fn check_verify(&self, req: &AuthRequest, cmd: Option<&Command>) {
        assert!(self.drop.is_none(), "login while logged in");
        if matches!(
            req.mechanism,
            "USER" | "PLAIN" | "LOGIN" | "OAUTHBEARER" | "XOAUTH2"
        ) {
            assert!(
                self.plaintext_allowed(),
                "{} login where plaintext is not allowed",
                req.mechanism
            );
        }
        let enabled = |m: &str| {
            let mut probe = Mechanisms::none();
            probe.enable(m);
            // The mechanism's flag is on in the configuration.
            let mut both = self.mechanisms;
            both.enable(m);
            both == self.mechanisms && probe != Mechanisms::none()
        };
        match req.mechanism {
            "USER" => {
                let Some(Command::Pass(p)) = cmd else {
                    panic!("USER login for {cmd:?}")
                };
                // RFC 6856: names and passwords in NFC.
                assert_eq!(req.credential, p.nfc().collect::<String>());
                let user = self.user_ok.as_ref().map(|u| u.nfc().collect::<String>());
                assert_eq!(Some(&req.user), user.as_ref());
            }
            "PLAIN" => {
                assert!(!req.user.is_empty());
                assert!(enabled("PLAIN"));
            }
            m => assert!(enabled(m), "{m} used but not enabled"),
        }
    }

    fn check_reply(&mut self, bytes: &[u8], cmd: Option<&Command>, direct: bool) {
        check_status(bytes, self.utf8);
        let continuation = bytes.starts_with(b"+ ");
        self.sasl_waiting = continuation;
        // -PLUS takes client-first only as the initial response: asked for
        // without one it is refused before any challenge.
        if let Some(Command::Auth {
            mechanism: Some(m),
            initial: None,
        }) = cmd.filter(|_| direct)
            && m.eq_ignore_ascii_case("SCRAM-SHA-256-PLUS")
        {
            assert!(!continuation, "-PLUS challenge without initial response");
        }
        if self.s.take_auth_failure() {
            assert!(
                bytes.starts_with(b"-ERR [AUTH]") || continuation,
                "failed-login flag on {}",
                String::from_utf8_lossy(bytes)
            );
        }
        self.scram.awaiting_final = false;
        if let Some(challenge) = bytes.strip_prefix(b"+ ") {
            let decoded = B64
                .decode(&challenge[..challenge.len() - 2])
                .unwrap_or_default();
            if decoded.starts_with(b"r=") && self.scram.current {
                self.scram.server_first = Some(String::from_utf8(decoded).unwrap());
                self.scram.awaiting_final = true;
            } else {
                self.scram.server_first = None;
            }
        }
        let ok = bytes.starts_with(b"+OK ");
        let lines = crlf_lines(bytes);
        let multi = lines.len() > 1;
        let Some(cmd) = cmd.filter(|_| direct) else {
            return;
        };
        if let Command::Capa = cmd {
            assert!(ok && multi, "CAPA");
            let has = |cap: &str| lines.contains(&cap.as_bytes());
            assert_eq!(
                has("STLS"),
                self.drop.is_none() && self.stls_configured && !self.tls,
                "STLS offered wrongly"
            );
            if has("USER") {
                assert!(self.plaintext_allowed() && self.drop.is_none());
            }
            if let Some(sasl) = lines.iter().find_map(|l| l.strip_prefix(b"SASL ")) {
                assert!(self.drop.is_none(), "SASL offered after login");
                self.check_offered(sasl.split(|&b| b == b' '));
            }
            return;
        }
        match cmd {
            Command::Utf8 => {
                assert_eq!(ok, self.drop.is_none(), "UTF8 is valid before login only");
                self.utf8 |= ok;
                return;
            }
            Command::Lang(None) => {
                assert!(ok && multi, "LANG list");
                let tags: Vec<&[u8]> = lines[1..lines.len() - 1]
                    .iter()
                    .map(|l| l.split(|&b| b == b' ').next().unwrap())
                    .collect();
                assert_eq!(tags, [&b"en"[..], b"de", b"i-default"]);
                return;
            }
            Command::Lang(Some(range)) => {
                match lang_lookup(range) {
                    Some(tag) => {
                        let want = format!("+OK {tag} ");
                        assert!(bytes.starts_with(want.as_bytes()), "LANG {range:?}");
                        self.german = tag == "de";
                    }
                    None => assert!(!ok, "LANG {range:?} accepted"),
                }
                return;
            }
            _ => {}
        }
        if let Command::Auth {
            mechanism: None, ..
        } = cmd
        {
            if self.drop.is_none() {
                assert!(ok && multi, "AUTH list");
                self.check_offered(lines[1..lines.len() - 1].iter().copied());
            } else {
                assert!(!ok);
            }
            return;
        }
        let Some(drop) = &mut self.drop else {
            // AUTHORIZATION.
            match cmd {
                Command::Stat
                | Command::List(_)
                | Command::Uidl(_)
                | Command::Retr(_)
                | Command::Top { .. }
                | Command::Dele(_)
                | Command::Noop
                | Command::Rset => assert!(!ok, "{cmd:?} before login"),
                Command::User(u) => {
                    assert_eq!(ok, self.plaintext_allowed());
                    if ok {
                        self.user_ok = Some(u.clone());
                    }
                }
                _ => {}
            }
            return;
        };
        // TRANSACTION: compare with the model.
        match cmd {
            Command::Stat => {
                let (n, o) = drop.totals();
                assert_eq!(bytes, format!("+OK {n} {o}\r\n").as_bytes());
            }
            Command::List(None) | Command::Uidl(None) => {
                assert!(ok && multi);
                let want: Vec<String> = drop
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.deleted[*i])
                    .map(|(i, e)| match cmd {
                        Command::List(_) => format!("{} {}", i + 1, e.size),
                        _ => format!("{} {}", i + 1, e.uid),
                    })
                    .collect();
                let got: Vec<String> = lines[1..lines.len() - 1]
                    .iter()
                    .map(|l| String::from_utf8(l.to_vec()).unwrap())
                    .collect();
                assert_eq!(got, want);
                if let Command::List(_) = cmd {
                    let (n, o) = drop.totals();
                    let head = format!("+OK {}", listing_text(self.german, n, o));
                    assert_eq!(lines[0], head.as_bytes());
                }
            }
            Command::List(Some(m)) | Command::Uidl(Some(m)) => match drop.live(*m) {
                Some(e) => {
                    let v = match cmd {
                        Command::List(_) => e.size.to_string(),
                        _ => e.uid.clone(),
                    };
                    assert_eq!(bytes, format!("+OK {m} {v}\r\n").as_bytes());
                }
                None => assert!(!ok, "{cmd:?} of a deleted or missing message"),
            },
            Command::Retr(m) | Command::Top { msg: m, .. } => {
                assert!(
                    drop.live(*m).is_none(),
                    "{cmd:?} answered without the message"
                );
                assert!(!ok);
            }
            Command::Dele(m) => {
                let live = drop.live(*m).is_some();
                assert_eq!(ok, live, "{cmd:?}");
                if live {
                    drop.deleted[*m as usize - 1] = true;
                }
            }
            Command::Rset => {
                assert!(ok);
                drop.deleted.iter_mut().for_each(|d| *d = false);
                let (n, o) = drop.totals();
                assert_eq!(
                    bytes,
                    format!("+OK {}\r\n", listing_text(self.german, n, o)).as_bytes()
                );
            }
            Command::Noop => assert!(ok),
            Command::Stls
            | Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. } => assert!(!ok, "{cmd:?} after login"),
            Command::Capa | Command::Quit | Command::Utf8 | Command::Lang(_) => unreachable!(),
        }
    }

    /// The SASL mechanisms offered (CAPA or AUTH): enabled ones only, none
    /// that reveals a secret where plaintext is not allowed, -PLUS only
    /// with a channel binding.
    fn check_offered<'b>(&self, names: impl Iterator<Item = &'b [u8]>) {
        for name in names {
            let name = std::str::from_utf8(name).unwrap();
            let mut probe = self.mechanisms;
            assert!(probe.enable(name), "unknown mechanism {name:?} offered");
            assert_eq!(probe, self.mechanisms, "{name} offered but not enabled");
            if !name.starts_with("SCRAM-") {
                assert!(self.plaintext_allowed(), "{name} offered without TLS");
            }
            if name == "SCRAM-SHA-256-PLUS" {
                assert!(self.binding.is_some(), "-PLUS without channel binding");
            }
        }
    }
}

/// A listing that keeps the host's `storage.entry` contract: uids of 1 to
/// 70 printable octets, unique; stored size at most 1 TiB; size at most
/// twice the stored size plus 2.
fn listing(specs: Vec<EntrySpec>) -> Vec<Entry> {
    specs
        .into_iter()
        .take(MAX_ENTRIES)
        .enumerate()
        .map(|(i, s)| {
            // `i.` makes it unique: no `.` follows.
            let mut uid = format!("{i}.");
            uid.extend(s.uid.iter().take(60).map(|&b| match b {
                b'.' => '_',
                0x21..=0x7e => b as char,
                _ => (0x21 + b % 94) as char,
            }));
            let stored = if s.small {
                s.stored % 4096
            } else {
                s.stored % (MAX_STORED_SIZE + 1)
            };
            Entry {
                key: s.key,
                size: s.size_pick % (stored * 2 + 3),
                stored_size: stored,
                uid,
            }
        })
        .collect()
}

/// The lines of `bytes`, which ends with CRLF and has no LF without a CR
/// before it, without their CRLF (a bare CR inside a line stays).
fn crlf_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    assert_eq!(v.pop(), Some(&b""[..]), "no LF at the end");
    v.into_iter()
        .map(|l| l.strip_suffix(b"\r").expect("LF without CR"))
        .collect()
}

/// The text of LIST and RSET, in English or German.
fn listing_text(german: bool, n: usize, octets: u64) -> String {
    if german {
        format!("{n} Nachrichten ({octets} Oktette)")
    } else {
        format!("{n} messages ({octets} octets)")
    }
}

/// The tag `LANG range` selects, by RFC 4647 lookup (written from the RFC
/// independently of the server): `*` and `i-default` are the default; else
/// shorten the range a subtag at a time until `en` or `de` is left.
fn lang_lookup(range: &str) -> Option<&'static str> {
    let range = range.to_ascii_lowercase();
    match range.as_str() {
        "*" => return Some("en"),
        "i-default" => return Some("i-default"),
        _ => {}
    }
    let mut subtags: Vec<&str> = range.split('-').collect();
    while !subtags.is_empty() {
        match subtags.join("-").as_str() {
            "en" => return Some("en"),
            "de" => return Some("de"),
            _ => {}
        }
        subtags.pop();
        // A single-character subtag cannot end a range.
        if subtags.last().is_some_and(|s| s.len() == 1) {
            subtags.pop();
        }
    }
    None
}

/// A status reply (single or multi-line): see the module doc. Its text is
/// printable ASCII, or UTF-8 without control characters in UTF-8 mode.
fn check_status(bytes: &[u8], utf8: bool) {
    let show = String::from_utf8_lossy(bytes);
    assert!(bytes.ends_with(b"\r\n"), "no CRLF at the end: {show:?}");
    for (i, w) in bytes.windows(2).enumerate() {
        assert_eq!(
            w[1] == b'\n',
            w[0] == b'\r',
            "bare CR or LF at {i}: {show:?}"
        );
    }
    assert!(bytes[0] != b'\n');
    let lines = crlf_lines(bytes);
    // A SASL challenge may be as long as the responses the server takes.
    let limit = if bytes.starts_with(b"+ ") {
        MAX_SASL_LINE
    } else {
        MAX_REPLY_LINE
    };
    for l in &lines {
        assert!(
            l.len() + 2 <= limit,
            "{}-octet reply line: {show:?}",
            l.len() + 2
        );
        let printable = if utf8 {
            std::str::from_utf8(l).is_ok_and(|t| !t.chars().any(char::is_control))
        } else {
            l.iter().all(|b| (0x20..=0x7e).contains(b))
        };
        assert!(printable, "unprintable reply: {show:?}");
    }
    let first = lines[0];
    assert!(
        first.starts_with(b"+OK ") || first.starts_with(b"-ERR ") || first.starts_with(b"+ "),
        "bad status line: {show:?}"
    );
    if lines.len() > 1 {
        assert!(
            first.starts_with(b"+OK "),
            "multi-line reply not +OK: {show:?}"
        );
        assert_eq!(*lines.last().unwrap(), b".", "unterminated: {show:?}");
        for l in &lines[1..lines.len() - 1] {
            assert!(
                !l.starts_with(b".") || l.starts_with(b".."),
                "not dot-stuffed: {show:?}"
            );
        }
    }
}

/// Streams `body` through the encoder as the host does and checks the
/// result against the stored message, with its header downgraded if
/// `downgrading` (a client not in UTF-8 mode). Returns the octets
/// downgrading added.
fn check_message(
    body: &Body,
    mut encoder: poplar_proto::pop3::encode::MessageEncoder,
    top: Option<u32>,
    downgrading: bool,
) -> i64 {
    let mut out = Vec::new();
    let mut rest = &body.bytes[..];
    let mut sizes = body.chunks.iter().cycle();
    while !rest.is_empty() && !encoder.is_done() {
        let n = sizes.next().map_or(rest.len(), |&n| (n as usize).max(1));
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        encoder.encode(chunk, &mut out);
        rest = tail;
        if !encoder.size_settled() {
            assert!(out.is_empty(), "output before the size is settled");
        }
    }
    encoder.settle_at_end(&mut out);
    assert!(encoder.size_settled());
    let change = encoder.size_change();
    encoder.finish(&mut out);

    // What the client is to get: the stored message, its header block
    // downgraded for a client not in UTF-8 mode.
    // A field is internationalized when it is UTF-8 with something beyond
    // ASCII; a field with bytes that are not UTF-8 is legacy 8-bit mail.
    let header_len = header_end(&body.bytes);
    let header = &body.bytes[..header_len];
    let intl = |f: &[u8]| !f.is_ascii() && std::str::from_utf8(f).is_ok();
    let expected: Vec<u8> = match downgrading.then(|| downgrade::downgrade(header)).flatten() {
        Some(new) => {
            assert!(
                header_fields(header).into_iter().any(intl),
                "downgraded {header:?}"
            );
            assert!(
                !header_fields(&new).into_iter().any(intl),
                "a downgraded header still has UTF-8: {new:?}"
            );
            [&new[..], &body.bytes[header_len..]].concat()
        }
        None => {
            assert!(
                !(downgrading
                    && header_len <= downgrade::MAX_HEADER
                    && header_fields(header).into_iter().any(intl)),
                "internationalized header sent as stored"
            );
            body.bytes.clone()
        }
    };
    if top.is_none() {
        assert_eq!(
            change,
            downgrade::wire_len(&expected) as i64 - downgrade::wire_len(&body.bytes) as i64,
            "size change"
        );
    }
    let body = &Body {
        bytes: expected,
        chunks: Vec::new(),
    };

    let show = String::from_utf8_lossy(&out);
    if tracing() {
        eprint!("{show}");
    }
    assert!(out.ends_with(b".\r\n"), "no terminator: {show:?}");
    // Every LF is part of a CRLF; a bare CR may stay inside a line.
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF: {show:?}");
        }
    }
    let mut sent = Vec::new();
    for l in crlf_lines(&out).split_last().unwrap().1 {
        // Dot-stuffing: the client removes one leading dot.
        assert!(!l.starts_with(b".") || l.starts_with(b".."), "{show:?}");
        sent.push(l.strip_prefix(b".").unwrap_or(l));
    }
    // The stored message with every line ending made CRLF and a last line
    // ending added, as lines.
    let mut norm = Vec::new();
    for (i, &b) in body.bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || body.bytes[i - 1] != b'\r') {
            norm.push(b'\r');
        }
        norm.push(b);
    }
    if !norm.is_empty() && !norm.ends_with(b"\r\n") {
        norm.extend_from_slice(b"\r\n");
    }
    let stored = if norm.is_empty() {
        Vec::new()
    } else {
        crlf_lines(&norm)
    };
    let want = match top {
        None => stored.len(),
        Some(k) => match stored.iter().position(|l| l.is_empty()) {
            Some(blank) => stored.len().min(blank + 1 + k as usize),
            None => stored.len(),
        },
    };
    assert_eq!(sent, stored[..want], "TOP {top:?}: {show:?}");
    change
}

/// The fields of a header block (continuation lines start with a space or
/// a tab), each with its line endings.
fn header_fields(header: &[u8]) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for (i, &b) in header.iter().enumerate() {
        let next = i + 1;
        if b == b'\n' && !matches!(header.get(next), Some(b' ' | b'\t')) {
            fields.push(&header[start..next]);
            start = next;
        }
    }
    if start < header.len() {
        fields.push(&header[start..]);
    }
    fields
}

/// The length of a message's header block: up to and including the empty
/// line, or the whole message if it has none.
fn header_end(msg: &[u8]) -> usize {
    let mut start = 0;
    while start < msg.len() {
        let end = msg[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| start + i + 1);
        if &msg[start..end] == b"\n" || &msg[start..end] == b"\r\n" {
            return end;
        }
        start = end;
    }
    msg.len()
}
