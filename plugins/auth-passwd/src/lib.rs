//! `auth-passwd`: a Poplar auth plugin that checks logins against a
//! Dovecot-style passwd-file (`user:password:uid:gid:gecos:home:shell:extra`).
//!
//! This file is only glue between the WIT world `auth-plugin` and the plain
//! Rust in the other modules; copy it as a template for your own plugin.
//!
//! # Configuration (`[<plugin>.config]`)
//!
//! | key              | default   | meaning |
//! |------------------|-----------|---------|
//! | `file`           | required  | path of the passwd-file inside the preopened directory, e.g. `/etc/poplar/passwd` |
//! | `default_scheme` | `"CRYPT"` | scheme of passwords written without a `{SCHEME}` prefix |
//! | `lowercase_user` | `false`   | lowercase login names and the file's user names before comparing |
//! | `oauth_hs256_secret` | unset | enables OAUTHBEARER/XOAUTH2: the HS256 key (≥ 32 bytes) shared with the token issuer |
//! | `oauth_issuer`   | unset     | required `iss` claim |
//! | `oauth_audience` | unset     | required `aud` claim (or member of it) |
//! | `oauth_user_claim` | `"sub"` | the claim that names the user (e.g. `email`) |
//!
//! Other keys are refused (every call temp-fails until they are fixed). The
//! file is parsed once and re-read when its size or modification time
//! changes; if it cannot be read, calls temp-fail.
//!
//! # Password schemes (case-insensitive)
//!
//! - `PLAIN`, `CLEAR`, `CLEARTEXT` (also `.B64` / `.HEX`)
//! - `SHA512-CRYPT` (`$6$`), `SHA256-CRYPT` (`$5$`)
//! - `BLF-CRYPT` (bcrypt: `$2y$`, `$2b$`, `$2a$`)
//! - `ARGON2ID`, `ARGON2I` (PHC strings `$argon2id$...`, `$argon2i$...`)
//! - `CRYPT`: any of the crypt formats above or MD5-crypt, chosen by
//!   prefix (DES crypt is refused)
//! - `SHA256`, `SHA512`, `SSHA256`, `SSHA512` (base64; `.HEX` / `.B64`)
//! - `SCRAM-SHA-256` (`<iterations>,<salt>,<stored key>,<server key>`)
//! - for migrated passwd-files only (weak; `poplar pw hash` never writes
//!   them): `MD5` and `MD5-CRYPT` (`$1$`), `PLAIN-MD5` (hex) and
//!   `LDAP-MD5` (base64), `SHA`, `SSHA`, `SMD5` (base64; `.HEX` / `.B64`),
//!   `CRAM-MD5` (Dovecot's 64 hex digits of HMAC-MD5 context)
//!
//! Mechanisms `USER`, `PLAIN` and `LOGIN` are checked here; `lookup-secret`
//! hands out `PLAIN` passwords (for APOP, SCRAM and CRAM-MD5) and
//! `SCRAM-SHA-256` verifiers; it answers `unavailable` for `cram-md5`
//! secrets (no `{CRAM-MD5}` scheme is read). Every login is granted with no
//! per-user POP3 policy (`policy: none`): the server's `[pop3]` settings
//! apply. `OAUTHBEARER` and `XOAUTH2` tokens are refused unless
//! `oauth_hs256_secret` is set; then they must be HS256 JSON Web Tokens
//! naming a user of the file (see `oauth.rs`).

wit_bindgen::generate!({ path: "../../wit", world: "auth-plugin" });

pub mod backend;
pub mod cache;
pub mod oauth;
pub mod passwd;
pub mod scheme;
#[cfg(test)]
mod test_util;

use std::sync::Mutex;

use backend::{Backend, Config, Level};
use exports::poplar::plugin::auth::{
    Decision, Grant, Guest, Login, Peer, ScramVerifier, Secret, SecretKind, SecretLookup,
    UserLookup,
};
use poplar::plugin::host;

/// The parsed passwd-file survives between calls on the same instance.
static BACKEND: Mutex<Backend> = Mutex::new(Backend::new());

fn log(level: Level, message: &str) {
    let level = match level {
        Level::Info => host::Level::Info,
        Level::Warn => host::Level::Warn,
    };
    host::log(level, message);
}

/// An instance's configuration never changes (a new configuration means a
/// new plugin version with new instances), so it is read and parsed once.
static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

fn with_backend<T>(f: impl FnOnce(&mut Backend, &Config) -> T) -> Result<T, String> {
    let config = match CONFIG.get() {
        Some(config) => config,
        None => {
            let parsed = Config::from_pairs(&host::config())?;
            CONFIG.get_or_init(|| parsed)
        }
    };
    let mut backend = BACKEND.lock().unwrap_or_else(|e| e.into_inner());
    Ok(f(&mut backend, config))
}

/// A successful login as `principal`. The passwd-file carries no per-user
/// POP3 policy yet, so the server's `[pop3]` settings apply to everyone.
fn grant(principal: String) -> Grant {
    Grant {
        principal,
        policy: None,
    }
}

struct Plugin;

impl Guest for Plugin {
    fn validate() -> Result<(), String> {
        with_backend(|b, config| b.check(config, &mut log))?
    }

    fn verify(attempt: Login) -> Decision {
        let login = backend::Login {
            user: &attempt.user,
            mechanism: &attempt.mechanism,
            credential: &attempt.credential,
            authzid: &attempt.authzid,
        };
        match with_backend(|b, config| b.verify(config, login, &mut log)) {
            Ok(backend::Decision::Allow(principal)) => Decision::Allow(grant(principal)),
            Ok(backend::Decision::Deny(why)) => Decision::Deny(why),
            Ok(backend::Decision::TempFail(why)) | Err(why) => Decision::TempFail(why),
        }
    }

    fn resolve_user(user: String) -> UserLookup {
        match with_backend(|b, config| b.resolve_user(config, &user, &mut log)) {
            Ok(Ok(Some(principal))) => UserLookup::Found(principal),
            Ok(Ok(None)) => UserLookup::Unknown,
            Ok(Err(why)) | Err(why) => UserLookup::TempFail(why),
        }
    }

    fn lookup_secret(user: String, kind: SecretKind, _peer: Peer) -> SecretLookup {
        let kind = match kind {
            SecretKind::Plaintext => backend::SecretKind::Plaintext,
            SecretKind::ScramSha256 => backend::SecretKind::ScramSha256,
            // No `{CRAM-MD5}` scheme is read yet: the host then offers
            // CRAM-MD5 only through a plaintext password, if it asks.
            SecretKind::CramMd5 => return SecretLookup::Unavailable,
        };
        match with_backend(|b, config| b.lookup_secret(config, &user, kind, &mut log)) {
            Ok(backend::Lookup::Found(secret, principal)) => {
                let secret = match secret {
                    backend::Secret::Plaintext(pw) => Secret::Plaintext(pw),
                    backend::Secret::ScramSha256(v) => Secret::ScramSha256(ScramVerifier {
                        salt: v.salt,
                        iterations: v.iterations,
                        stored_key: v.stored_key,
                        server_key: v.server_key,
                    }),
                };
                SecretLookup::Found((secret, grant(principal)))
            }
            Ok(backend::Lookup::Unavailable) => SecretLookup::Unavailable,
            Ok(backend::Lookup::TempFail(why)) | Err(why) => SecretLookup::TempFail(why),
        }
    }
}

// Only the wasm build exports the component's functions: their symbol names
// cannot be linked into a native library (which `cargo test` builds).
#[cfg(target_arch = "wasm32")]
export!(Plugin);
