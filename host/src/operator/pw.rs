//! `poplar pw hash`: makes the password field of a Dovecot-style
//! passwd-file line, `{SCHEME}hash`, in a scheme the auth-passwd plugin
//! checks. Salts come from the operating system's random generator.
//!
//! The password is read from the terminal with echo turned off (asked
//! twice), or as one line from standard input (`--password-stdin`).

use std::fmt;
use std::io::{BufRead, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Longest password accepted, in bytes.
const MAX_PASSWORD: usize = 4096;

/// Argon2id defaults, as Dovecot writes them: 64 MiB, 3 passes, 1 lane.
pub const ARGON2_MEMORY_KIB: u32 = 65536;
pub const ARGON2_TIME: u32 = 3;
pub const ARGON2_PARALLELISM: u32 = 1;
/// SCRAM-SHA-256 iterations: RFC 7677's minimum, Dovecot's default.
pub const SCRAM_ITERATIONS: u32 = 4096;
/// SHA-crypt rounds when not given (the algorithm's own default).
pub const SHA_CRYPT_ROUNDS: u32 = 5000;

/// A scheme `pw hash` can write. The names are Dovecot's. The MD5 and SHA-1
/// schemes auth-passwd still reads for migrated passwd-files (`MD5-CRYPT`,
/// `PLAIN-MD5`, `SHA`, `SSHA`, `SMD5`, `CRAM-MD5`) are weak and not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheme {
    #[value(name = "SHA512-CRYPT")]
    Sha512Crypt,
    #[value(name = "SHA256-CRYPT")]
    Sha256Crypt,
    #[value(name = "BLF-CRYPT")]
    BlfCrypt,
    #[value(name = "ARGON2ID")]
    Argon2id,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "PLAIN")]
    Plain,
}

impl Scheme {
    /// The Dovecot name, as written between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Argon2id => "ARGON2ID",
            Scheme::ScramSha256 => "SCRAM-SHA-256",
            Scheme::Plain => "PLAIN",
        }
    }
}

/// Cost options. `None` means the scheme's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    /// SHA-crypt rounds, bcrypt cost, Argon2 passes (t), SCRAM iterations.
    pub rounds: Option<u32>,
    /// Argon2 memory in KiB (m).
    pub memory_kib: Option<u32>,
    /// Argon2 lanes (p).
    pub parallelism: Option<u32>,
}

/// Why no hash was printed.
#[derive(Debug, PartialEq, Eq)]
pub enum PwError {
    /// A bad option or password: the operator can fix it.
    Usage(String),
    /// The password could not be read.
    Io(String),
    /// The random generator or a hash function failed.
    Internal(String),
}

impl PwError {
    /// The sysexits code to exit with.
    pub fn exit_code(&self) -> u8 {
        match self {
            PwError::Usage(_) => 64,
            PwError::Io(_) => 74,
            PwError::Internal(_) => 70,
        }
    }
}

impl fmt::Display for PwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PwError::Usage(m) | PwError::Io(m) | PwError::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PwError {}

fn usage(msg: impl Into<String>) -> PwError {
    PwError::Usage(msg.into())
}

/// Hashes `password` with fresh random salt. Returns the whole password
/// field, `{SCHEME}data`.
pub fn hash(scheme: Scheme, cost: Cost, password: &str) -> Result<String, PwError> {
    check_cost(scheme, cost)?;
    if password.is_empty() {
        return Err(usage("the password is empty"));
    }
    // Hash the password as the server will compare it (RFC 6856): USER/
    // PASS in NFC; SCRAM clients prove the SASLprep'd password (RFC 5802).
    let prepared = match scheme {
        Scheme::ScramSha256 => stringprep::saslprep(password)
            .map_err(|_| {
                usage(
                    "the password has characters SASLprep does not allow \
                     (control, private-use or unassigned); SCRAM cannot use it",
                )
            })?
            .into_owned(),
        _ => {
            use unicode_normalization::UnicodeNormalization as _;
            password.nfc().collect()
        }
    };
    let password = prepared.as_str();
    let pw = password.as_bytes();
    let rounds = cost.rounds;
    let data = match scheme {
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => sha_crypt(
            scheme,
            pw,
            &random::<12>()?,
            rounds.unwrap_or(SHA_CRYPT_ROUNDS),
        )?,
        Scheme::BlfCrypt => {
            if pw.len() > 72 {
                return Err(usage(
                    "BLF-CRYPT uses only the first 72 bytes of a password; \
                     choose another scheme for longer ones",
                ));
            }
            bcrypt::hash_with_salt(pw, rounds.unwrap_or(bcrypt::DEFAULT_COST), random()?)
                .map_err(|e| usage(format!("BLF-CRYPT: {e}")))?
                .format_for_version(bcrypt::Version::TwoY)
        }
        Scheme::Argon2id => argon2id(
            pw,
            &random::<16>()?,
            cost.memory_kib.unwrap_or(ARGON2_MEMORY_KIB),
            rounds.unwrap_or(ARGON2_TIME),
            cost.parallelism.unwrap_or(ARGON2_PARALLELISM),
        )?,
        Scheme::ScramSha256 => {
            scram_sha256(pw, &random::<16>()?, rounds.unwrap_or(SCRAM_ITERATIONS))
        }
        Scheme::Plain => return Ok(plain(password)),
    };
    Ok(format!("{{{}}}{data}", scheme.name()))
}

/// Refuses options that mean nothing for the scheme, and costs out of range.
fn check_cost(scheme: Scheme, cost: Cost) -> Result<(), PwError> {
    let name = scheme.name();
    if scheme != Scheme::Argon2id && (cost.memory_kib.is_some() || cost.parallelism.is_some()) {
        return Err(usage(format!(
            "--memory and --parallelism apply to ARGON2ID, not {name}"
        )));
    }
    let Some(rounds) = cost.rounds else {
        return Ok(());
    };
    let range = match scheme {
        Scheme::Plain => return Err(usage("PLAIN takes no --rounds")),
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => 1_000..=999_999_999,
        Scheme::BlfCrypt => 4..=31,
        Scheme::Argon2id => 1..=u32::MAX,
        Scheme::ScramSha256 => SCRAM_ITERATIONS..=u32::MAX,
    };
    if range.contains(&rounds) {
        Ok(())
    } else {
        Err(usage(format!(
            "--rounds for {name} must be between {} and {}",
            range.start(),
            range.end()
        )))
    }
}

/// `len` bytes from the operating system's random generator.
fn random<const N: usize>() -> Result<[u8; N], PwError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)
        .map_err(|e| PwError::Internal(format!("no random numbers from the system: {e}")))?;
    Ok(buf)
}

/// `$6$rounds=N$salt$hash` or `$5$...`.
fn sha_crypt(scheme: Scheme, pw: &[u8], salt: &[u8], rounds: u32) -> Result<String, PwError> {
    use sha_crypt::{Algorithm, Params, PasswordHasher as _, ShaCrypt};
    let alg = if scheme == Scheme::Sha256Crypt {
        Algorithm::Sha256Crypt
    } else {
        Algorithm::Sha512Crypt
    };
    let params = Params::new(rounds).map_err(|e| usage(format!("--rounds: {e}")))?;
    ShaCrypt::new(alg, params)
        .hash_password_with_salt(pw, salt)
        .map(|h| h.to_string())
        .map_err(|e| PwError::Internal(format!("SHA-crypt: {e}")))
}

/// The PHC string `$argon2id$v=19$m=..,t=..,p=..$salt$hash`, 32-byte hash.
fn argon2id(pw: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<String, PwError> {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
    let params =
        Params::new(m, t, p, None).map_err(|e| usage(format!("Argon2 parameters: {e}")))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(pw, salt)
        .map(|h| h.to_string())
        .map_err(|e| PwError::Internal(format!("Argon2: {e}")))
}

/// Dovecot's `<iterations>,<salt>,<stored key>,<server key>` (RFC 5802
/// keys, base64): the session's own SCRAM derivation.
fn scram_sha256(pw: &[u8], salt: &[u8], iterations: u32) -> String {
    poplar_proto::pop3::scram::Verifier::from_password(pw, salt, iterations).to_dovecot()
}

/// `{PLAIN}password`, or `{PLAIN.B64}` when the password holds a byte that
/// cannot stand in a passwd-file field (a colon or a control character).
fn plain(password: &str) -> String {
    if password.chars().any(|c| c == ':' || c.is_control()) {
        format!("{{PLAIN.B64}}{}", BASE64.encode(password))
    } else {
        format!("{{PLAIN}}{password}")
    }
}

/// Reads the password: from standard input (one line) with
/// `from_stdin`, else from the terminal without echo, asked twice.
pub fn read_password(from_stdin: bool) -> Result<String, PwError> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    if from_stdin {
        return read_line(&mut input)?.ok_or_else(|| usage("no password on standard input"));
    }
    if !std::io::IsTerminal::is_terminal(&stdin) {
        return Err(usage(
            "standard input is not a terminal: pass --password-stdin to read the password from it",
        ));
    }
    let _no_echo = tty::NoEcho::new()?;
    let ask = |prompt: &str, input: &mut dyn BufRead| {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        read_line(input)?.ok_or_else(|| usage("no password given"))
    };
    let first = ask("Enter new password: ", &mut input)?;
    let second = ask("Retype new password: ", &mut input)?;
    if first != second {
        return Err(usage("the passwords do not match"));
    }
    Ok(first)
}

/// One line without its line ending; `None` at end of input.
fn read_line(input: &mut dyn BufRead) -> Result<Option<String>, PwError> {
    let mut buf = Vec::new();
    input
        .take(MAX_PASSWORD as u64 + 2)
        .read_until(b'\n', &mut buf)
        .map_err(|e| PwError::Io(format!("reading the password: {e}")))?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > MAX_PASSWORD {
        return Err(usage(format!(
            "the password is longer than {MAX_PASSWORD} bytes"
        )));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| usage("the password is not UTF-8"))
}

/// Turning terminal echo off for the duration of a password prompt.
mod tty {
    use std::sync::OnceLock;

    use super::PwError;

    /// The terminal settings before echo was turned off, for the signal
    /// handler (set once: they are the same for every prompt).
    static SAVED: OnceLock<libc::termios> = OnceLock::new();

    /// Echo off on standard input until dropped. A signal that ends the
    /// process meanwhile restores the terminal first.
    pub struct NoEcho {
        saved: libc::termios,
    }

    impl NoEcho {
        pub fn new() -> Result<NoEcho, PwError> {
            let io = |what: &str| {
                PwError::Io(format!(
                    "{what} the terminal: {}",
                    std::io::Error::last_os_error()
                ))
            };
            // SAFETY: termios is plain data; tcgetattr fills it in.
            let mut saved: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: fd 0 and a valid pointer.
            if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
                return Err(io("reading the settings of"));
            }
            let _ = SAVED.set(saved);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                let handler: extern "C" fn(libc::c_int) = restore_and_die;
                // SAFETY: the handler only calls async-signal-safe functions.
                unsafe { libc::signal(sig, handler as libc::sighandler_t) };
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            // The newline the user types is still shown.
            quiet.c_lflag |= libc::ECHONL;
            // SAFETY: fd 0 and a valid pointer. TCSAFLUSH drops anything
            // typed ahead, which would have been echoed.
            if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) } != 0 {
                return Err(io("turning off echo on"));
            }
            Ok(NoEcho { saved })
        }
    }

    impl Drop for NoEcho {
        fn drop(&mut self) {
            // SAFETY: fd 0 and a valid pointer.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                // SAFETY: restoring the default action.
                unsafe { libc::signal(sig, libc::SIG_DFL) };
            }
        }
    }

    extern "C" fn restore_and_die(sig: libc::c_int) {
        if let Some(saved) = SAVED.get() {
            // SAFETY: tcsetattr, signal and raise are async-signal-safe.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
        // SAFETY: as above; the default action then ends the process.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "correct horse";

    fn data(stored: &str, scheme: Scheme) -> &str {
        stored
            .strip_prefix(&format!("{{{}}}", scheme.name()))
            .unwrap_or_else(|| panic!("{stored} lacks the {} prefix", scheme.name()))
    }

    #[test]
    fn scram_matches_a_fixed_vector() {
        // The same verifier as auth-passwd's scheme tests (made with Python's
        // hashlib.pbkdf2_hmac and hmac).
        assert_eq!(
            scram_sha256(PW.as_bytes(), b"0123456789abcdef", 4096),
            "4096,MDEyMzQ1Njc4OWFiY2RlZg==,tSgetjYW5SQlNzIxJAKMryuDGH8Snw5oWcj1eOW0ZyI=,bbZ1dJMgYYaKKR1fU1oGHkWJzi9OQY4yU8Fuksa1t70="
        );
    }

    #[test]
    fn passwords_are_normalised_as_the_server_compares_them() {
        use sha_crypt::{PasswordVerifier as _, ShaCrypt};
        // Typed decomposed, hashed in NFC: PASS (normalised) matches.
        let stored = hash(Scheme::Sha512Crypt, Cost::default(), "gru\u{308}n").unwrap();
        let d = data(&stored, Scheme::Sha512Crypt);
        assert!(
            ShaCrypt::default()
                .verify_password(b"gr\xc3\xbcn", d)
                .is_ok()
        );
        // SCRAM: SASLprep (soft hyphen dropped); a private-use character is
        // refused.
        let a = hash(Scheme::ScramSha256, Cost::default(), "p\u{ad}w").unwrap();
        let iterations_salt: Vec<&str> = data(&a, Scheme::ScramSha256).split(',').collect();
        let salt = base64::engine::general_purpose::STANDARD
            .decode(iterations_salt[1])
            .unwrap();
        assert_eq!(
            data(&a, Scheme::ScramSha256),
            scram_sha256(b"pw", &salt, SCRAM_ITERATIONS)
        );
        assert!(matches!(
            hash(Scheme::ScramSha256, Cost::default(), "\u{e000}"),
            Err(PwError::Usage(_))
        ));
    }

    #[test]
    fn sha_crypt_hashes_verify() {
        use sha_crypt::{PasswordVerifier as _, ShaCrypt};
        for scheme in [Scheme::Sha512Crypt, Scheme::Sha256Crypt] {
            let stored = hash(scheme, Cost::default(), PW).unwrap();
            let d = data(&stored, scheme);
            let prefix = if scheme == Scheme::Sha512Crypt {
                "$6$rounds=5000$"
            } else {
                "$5$rounds=5000$"
            };
            assert!(d.starts_with(prefix), "{d}");
            assert!(
                ShaCrypt::default()
                    .verify_password(PW.as_bytes(), d)
                    .is_ok()
            );
            assert!(ShaCrypt::default().verify_password(b"wrong", d).is_err());
        }
        let stored = hash(
            Scheme::Sha512Crypt,
            Cost {
                rounds: Some(6000),
                ..Cost::default()
            },
            PW,
        )
        .unwrap();
        assert!(
            stored.starts_with("{SHA512-CRYPT}$6$rounds=6000$"),
            "{stored}"
        );
    }

    #[test]
    fn salts_differ() {
        let a = hash(Scheme::Sha256Crypt, Cost::default(), PW).unwrap();
        let b = hash(Scheme::Sha256Crypt, Cost::default(), PW).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn bcrypt_and_argon2() {
        let cost = Cost {
            rounds: Some(4),
            ..Cost::default()
        };
        let stored = hash(Scheme::BlfCrypt, cost, PW).unwrap();
        let d = data(&stored, Scheme::BlfCrypt);
        assert!(d.starts_with("$2y$04$"), "{d}");
        assert!(bcrypt::verify(PW, d).unwrap());
        assert!(!bcrypt::verify("wrong", d).unwrap());

        let cost = Cost {
            rounds: Some(1),
            memory_kib: Some(256),
            parallelism: Some(2),
        };
        let stored = hash(Scheme::Argon2id, cost, PW).unwrap();
        let d = data(&stored, Scheme::Argon2id);
        assert!(d.starts_with("$argon2id$v=19$m=256,t=1,p=2$"), "{d}");
        use argon2::{Argon2, PasswordVerifier as _};
        assert!(Argon2::default().verify_password(PW.as_bytes(), d).is_ok());
    }

    #[test]
    fn plain_falls_back_to_base64() {
        assert_eq!(
            hash(Scheme::Plain, Cost::default(), PW).unwrap(),
            "{PLAIN}correct horse"
        );
        assert_eq!(
            hash(Scheme::Plain, Cost::default(), "a:b").unwrap(),
            "{PLAIN.B64}YTpi"
        );
    }

    #[test]
    fn bad_options_are_usage_errors() {
        let rounds = |n| Cost {
            rounds: Some(n),
            ..Cost::default()
        };
        for (scheme, cost) in [
            (Scheme::Plain, rounds(5)),
            (Scheme::Sha512Crypt, rounds(10)),
            (Scheme::BlfCrypt, rounds(32)),
            (Scheme::ScramSha256, rounds(100)),
            (
                Scheme::BlfCrypt,
                Cost {
                    memory_kib: Some(1024),
                    ..Cost::default()
                },
            ),
        ] {
            let err = hash(scheme, cost, PW).unwrap_err();
            assert_eq!(err.exit_code(), 64, "{scheme:?} {cost:?}: {err}");
        }
        assert!(matches!(
            hash(Scheme::Sha512Crypt, Cost::default(), ""),
            Err(PwError::Usage(_))
        ));
        assert!(matches!(
            hash(Scheme::BlfCrypt, Cost::default(), &"x".repeat(73)),
            Err(PwError::Usage(_))
        ));
    }

    #[test]
    fn lines_lose_their_ending() {
        let mut input: &[u8] = b"pass word\r\nnext\n";
        assert_eq!(read_line(&mut input).unwrap().as_deref(), Some("pass word"));
        assert_eq!(read_line(&mut input).unwrap().as_deref(), Some("next"));
        assert_eq!(read_line(&mut input).unwrap(), None);
        let mut last: &[u8] = b"no newline";
        assert_eq!(read_line(&mut last).unwrap().as_deref(), Some("no newline"));
        let long = vec![b'x'; MAX_PASSWORD + 10];
        assert!(read_line(&mut long.as_slice()).is_err());
        let mut bad: &[u8] = b"\xff\n";
        assert!(read_line(&mut bad).is_err());
    }
}
