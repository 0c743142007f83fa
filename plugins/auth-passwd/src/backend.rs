//! The decisions: configuration, `verify` and `lookup-secret`, written
//! against plain Rust types so that they can be tested natively. `lib.rs`
//! only converts to and from the WIT types.

use std::path::PathBuf;

use crate::cache::Cache;
use crate::passwd::{Entry, valid_user};
use crate::scheme::{self, Scheme};

/// Longest credential we hash. SHA-crypt costs grow with the square of the
/// password length, so an unbounded one would be a cheap denial of service.
pub const MAX_CREDENTIAL_LEN: usize = 1024;

/// Severity of a log line (mapped onto the host's levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// The plugin configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Path of the passwd-file, as the plugin sees it (inside a preopen).
    pub file: PathBuf,
    /// Scheme of passwords written without a `{SCHEME}` prefix.
    pub default_scheme: Scheme,
    /// Lowercase login names (and the file's user names) before comparing.
    pub lowercase_user: bool,
    /// Bearer-token checking for OAUTHBEARER/XOAUTH2, if configured.
    pub oauth: Option<crate::oauth::OAuthConfig>,
}

impl Config {
    /// Reads the flattened config table. Unknown keys are errors, so that a
    /// misspelt option is noticed rather than silently ignored.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Config, String> {
        let mut file = None;
        let mut default_scheme = Scheme::Crypt;
        let mut lowercase_user = false;
        let mut oauth_secret = None;
        let mut oauth_issuer = None;
        let mut oauth_audience = None;
        let mut oauth_user_claim = "sub".to_string();
        for (key, value) in pairs {
            match key.as_str() {
                "oauth_hs256_secret" => oauth_secret = Some(value.as_bytes().to_vec()),
                "oauth_issuer" => oauth_issuer = Some(value.clone()),
                "oauth_audience" => oauth_audience = Some(value.clone()),
                "oauth_user_claim" => oauth_user_claim = value.clone(),
                "file" => file = Some(PathBuf::from(value)),
                "default_scheme" => {
                    default_scheme = value
                        .parse()
                        .map_err(|()| format!("config: unknown default_scheme {value:?}"))?;
                }
                "lowercase_user" => {
                    lowercase_user = value.parse().map_err(|_| {
                        format!("config: lowercase_user must be true or false, not {value:?}")
                    })?;
                }
                _ => return Err(format!("config: unknown key {key:?}")),
            }
        }
        let file = file
            .filter(|f| !f.as_os_str().is_empty())
            .ok_or("config: `file` (path of the passwd-file) is required")?;
        let oauth = match oauth_secret {
            Some(secret) if secret.len() >= 32 => Some(crate::oauth::OAuthConfig {
                secret,
                issuer: oauth_issuer,
                audience: oauth_audience,
                user_claim: oauth_user_claim,
            }),
            Some(_) => {
                return Err("config: oauth_hs256_secret must be at least 32 bytes".into());
            }
            None if oauth_issuer.is_some() || oauth_audience.is_some() => {
                return Err("config: oauth_issuer/oauth_audience need oauth_hs256_secret".into());
            }
            None => None,
        };
        Ok(Config {
            file,
            default_scheme,
            lowercase_user,
            oauth,
        })
    }

    fn normalize(&self, user: &str) -> String {
        if self.lowercase_user {
            user.to_lowercase()
        } else {
            user.to_owned()
        }
    }
}

/// One login attempt (see `auth.login` in the WIT).
#[derive(Clone, Copy, Debug)]
pub struct Login<'a> {
    pub user: &'a str,
    pub mechanism: &'a str,
    pub credential: &'a str,
    pub authzid: &'a str,
}

/// The answer to a login attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(String),
    Deny(String),
    TempFail(String),
}

/// Which stored secret the host asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    Plaintext,
    ScramSha256,
}

/// A stored secret handed to the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    Plaintext(String),
    ScramSha256(scheme::Scram),
}

/// The answer to a secret lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The secret and the principal.
    Found(Secret, String),
    Unavailable,
    TempFail(String),
}

/// Where log lines go.
pub type Log<'a> = &'a mut dyn FnMut(Level, &str);

/// The plugin's state between calls: only the passwd-file cache.
#[derive(Debug, Default)]
pub struct Backend {
    cache: Cache,
}

impl Backend {
    /// A backend with nothing cached yet.
    pub const fn new() -> Self {
        Backend {
            cache: Cache::new(),
        }
    }

    /// Decides a bearer-token login: the token must be valid and name a
    /// user of the passwd-file (the one the client named, if it did).
    fn verify_token(&mut self, config: &Config, login: Login<'_>, log: Log<'_>) -> Decision {
        let deny = |why: &str| Decision::Deny(why.to_owned());
        let Some(oauth) = &config.oauth else {
            return deny("OAuth mechanisms are not configured (oauth_hs256_secret)");
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let named = match crate::oauth::validate(oauth, login.credential, now) {
            Ok(user) => config.normalize(&user),
            Err(why) => return Decision::Deny(why),
        };
        if !login.user.is_empty() && config.normalize(login.user) != named {
            return deny("token is for another user");
        }
        if !valid_user(&named) {
            return deny("invalid user name in token");
        }
        match self.entry(config, &named, log) {
            Ok(Some(entry)) => Decision::Allow(entry.user.clone()),
            Ok(None) => deny("token names an unknown user"),
            Err(why) => Decision::TempFail(why),
        }
    }

    /// Decides one login attempt.
    pub fn verify(&mut self, config: &Config, login: Login<'_>, log: Log<'_>) -> Decision {
        let deny = |why: &str| Decision::Deny(why.to_owned());
        if matches!(login.mechanism, "OAUTHBEARER" | "XOAUTH2") {
            return self.verify_token(config, login, log);
        }
        if !matches!(login.mechanism, "USER" | "PLAIN" | "LOGIN") {
            return deny("mechanism unsupported by auth-passwd");
        }
        if !valid_user(login.user) {
            return deny("invalid user name");
        }
        let user = config.normalize(login.user);
        if !login.authzid.is_empty() && config.normalize(login.authzid) != user {
            return deny("authorization identity not permitted");
        }
        if login.credential.len() > MAX_CREDENTIAL_LEN {
            return deny("credential too long");
        }
        let entry = match self.entry(config, &user, log) {
            Ok(entry) => entry,
            Err(why) => return Decision::TempFail(why),
        };
        let Some(entry) = entry else {
            // Spend the time a real check would, so timing shows nothing.
            scheme::dummy_verify(login.credential);
            return deny("unknown user");
        };
        match scheme::verify(&entry.password, config.default_scheme, login.credential) {
            Ok(true) => Decision::Allow(entry.user.clone()),
            Ok(false) => deny("bad password"),
            Err(err) => {
                log(Level::Warn, &format!("user {user:?}: {err}"));
                scheme::dummy_verify(login.credential);
                Decision::Deny(format!("unusable password entry: {err}"))
            }
        }
    }

    /// Hands out a stored secret of the requested kind, if the user has one.
    pub fn lookup_secret(
        &mut self,
        config: &Config,
        user: &str,
        kind: SecretKind,
        log: Log<'_>,
    ) -> Lookup {
        if !valid_user(user) {
            return Lookup::Unavailable;
        }
        let user = config.normalize(user);
        let entry = match self.entry(config, &user, log) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Lookup::Unavailable,
            Err(why) => return Lookup::TempFail(why),
        };
        let secret = match kind {
            SecretKind::Plaintext => scheme::plaintext(&entry.password, config.default_scheme)
                .map(|pw| pw.map(Secret::Plaintext)),
            SecretKind::ScramSha256 => {
                scheme::scram_verifier(&entry.password, config.default_scheme)
                    .map(|v| v.map(Secret::ScramSha256))
            }
        };
        match secret {
            Ok(Some(secret)) => Lookup::Found(secret, entry.user.clone()),
            Ok(None) => Lookup::Unavailable,
            Err(err) => {
                log(Level::Warn, &format!("user {user:?}: {err}"));
                Lookup::Unavailable
            }
        }
    }

    /// Resolves a delivery recipient to its principal: `Ok(None)` for an
    /// unknown user, `Err` if the file cannot be read.
    pub fn resolve_user(
        &mut self,
        config: &Config,
        user: &str,
        log: Log<'_>,
    ) -> Result<Option<String>, String> {
        if !valid_user(user) {
            return Ok(None);
        }
        let user = config.normalize(user);
        Ok(self.entry(config, &user, log)?.map(|e| e.user.clone()))
    }

    /// Checks that the passwd-file can be read (done at startup).
    pub fn check(&mut self, config: &Config, log: Log<'_>) -> Result<(), String> {
        self.entry(config, "", log).map(|_| ())
    }

    /// The user's passwd-file line; `Err` if the file cannot be read.
    fn entry(
        &mut self,
        config: &Config,
        user: &str,
        log: Log<'_>,
    ) -> Result<Option<&Entry>, String> {
        let (file, reloaded) = self
            .cache
            .get(&config.file, config.lowercase_user)
            .map_err(|err| format!("cannot read passwd-file {}: {err}", config.file.display()))?;
        if reloaded {
            log(
                Level::Info,
                &format!(
                    "loaded {}: {} users, {} invalid lines skipped",
                    config.file.display(),
                    file.len(),
                    file.skipped_lines
                ),
            );
        }
        Ok(file.get(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::{DUMMY_RUNS, Scram};
    use crate::test_util::TempDir;

    const FILE: &str = "\
# test users
alice:{PLAIN}wonderland::::::
bob:$6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2scFtv/uamSo5z0
Carol:{SCRAM-SHA-256}4096,MDEyMzQ1Njc4OWFiY2RlZg==,tSgetjYW5SQlNzIxJAKMryuDGH8Snw5oWcj1eOW0ZyI=,bbZ1dJMgYYaKKR1fU1oGHkWJzi9OQY4yU8Fuksa1t70=
dave:{MD4}whatever
erin
frank:abhfCpXqd4GrI
";

    struct Fixture {
        dir: TempDir,
        config: Config,
        backend: Backend,
        logs: Vec<(Level, String)>,
    }

    impl Fixture {
        fn new(extra: &[(&str, &str)]) -> Self {
            let dir = TempDir::new();
            let path = dir.write("passwd", FILE);
            let mut pairs = vec![("file".to_owned(), path.display().to_string())];
            pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Fixture {
                dir,
                config: Config::from_pairs(&pairs).unwrap(),
                backend: Backend::default(),
                logs: Vec::new(),
            }
        }

        fn verify_with(
            &mut self,
            user: &str,
            mechanism: &str,
            credential: &str,
            authzid: &str,
        ) -> Decision {
            let login = Login {
                user,
                mechanism,
                credential,
                authzid,
            };
            let logs = &mut self.logs;
            self.backend.verify(&self.config, login, &mut |l, m| {
                logs.push((l, m.to_owned()))
            })
        }

        fn verify(&mut self, user: &str, credential: &str) -> Decision {
            self.verify_with(user, "USER", credential, "")
        }

        fn lookup(&mut self, user: &str, kind: SecretKind) -> Lookup {
            let logs = &mut self.logs;
            self.backend
                .lookup_secret(&self.config, user, kind, &mut |l, m| {
                    logs.push((l, m.to_owned()))
                })
        }
    }

    #[test]
    fn resolve_user_finds_principals_without_secrets() {
        let mut f = Fixture::new(&[("lowercase_user", "true")]);
        let mut log = |_: Level, _: &str| {};
        let mut resolve = |u: &str| f.backend.resolve_user(&f.config, u, &mut log);
        assert_eq!(resolve("alice"), Ok(Some("alice".into())));
        assert_eq!(resolve("CAROL"), Ok(Some("carol".into())));
        assert_eq!(resolve("nobody"), Ok(None));
        assert_eq!(resolve("a:b"), Ok(None));
        std::fs::remove_file(f.dir.path().join("passwd")).unwrap();
        assert!(
            f.backend
                .resolve_user(&f.config, "alice", &mut log)
                .is_err()
        );
    }

    fn allow(p: &str) -> Decision {
        Decision::Allow(p.to_owned())
    }

    fn deny(why: &str) -> Decision {
        Decision::Deny(why.to_owned())
    }

    fn dummy_runs() -> u32 {
        DUMMY_RUNS.with(|n| n.get())
    }

    #[test]
    fn config_keys() {
        let pairs = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = Config::from_pairs(&pairs(&[("file", "/etc/poplar/passwd")])).unwrap();
        assert_eq!(c.file, PathBuf::from("/etc/poplar/passwd"));
        assert_eq!(c.default_scheme, Scheme::Crypt);
        assert!(!c.lowercase_user);
        let c = Config::from_pairs(&pairs(&[
            ("default_scheme", "plain"),
            ("file", "/p"),
            ("lowercase_user", "true"),
        ]))
        .unwrap();
        assert_eq!(c.default_scheme, "PLAIN".parse().unwrap());
        assert!(c.lowercase_user);
        assert!(Config::from_pairs(&[]).is_err());
        assert!(Config::from_pairs(&pairs(&[("file", "")])).is_err());
        assert!(Config::from_pairs(&pairs(&[("file", "/p"), ("default_scheme", "MD4")])).is_err());
        assert!(Config::from_pairs(&pairs(&[("file", "/p"), ("lowercase_user", "yes")])).is_err());
        assert!(
            Config::from_pairs(&pairs(&[("file", "/p"), ("lowercase_users", "true")])).is_err()
        );
    }

    #[test]
    fn mechanisms() {
        let mut f = Fixture::new(&[]);
        for mech in ["USER", "PLAIN", "LOGIN"] {
            assert_eq!(
                f.verify_with("alice", mech, "wonderland", ""),
                allow("alice")
            );
        }
        assert_eq!(
            f.verify_with("alice", "CRAM-MD5", "wonderland", ""),
            deny("mechanism unsupported by auth-passwd")
        );
        // Without oauth_hs256_secret, tokens (even the password) are refused.
        for mech in ["OAUTHBEARER", "XOAUTH2"] {
            assert_eq!(
                f.verify_with("alice", mech, "wonderland", ""),
                deny("OAuth mechanisms are not configured (oauth_hs256_secret)")
            );
        }
    }

    #[test]
    fn bearer_tokens() {
        const KEY: &str = "0123456789abcdef0123456789abcdef";
        let mut f = Fixture::new(&[("oauth_hs256_secret", KEY), ("oauth_audience", "pop")]);
        let token = |sub: &str| {
            crate::oauth::tests::sign(
                KEY.as_bytes(),
                &format!(r#"{{"sub":"{sub}","aud":"pop","exp":4102444800}}"#),
            )
        };
        for mech in ["OAUTHBEARER", "XOAUTH2"] {
            assert_eq!(
                f.verify_with("alice", mech, &token("alice"), ""),
                allow("alice")
            );
            assert_eq!(f.verify_with("", mech, &token("alice"), ""), allow("alice"));
            assert_eq!(
                f.verify_with("bob", mech, &token("alice"), ""),
                deny("token is for another user")
            );
            assert_eq!(
                f.verify_with("", mech, &token("nobody"), ""),
                deny("token names an unknown user")
            );
            assert_eq!(
                f.verify_with("alice", mech, "wonderland", ""),
                deny("token is not a JWS compact serialization")
            );
        }
        let pairs = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(
            Config::from_pairs(&pairs(&[("file", "/p"), ("oauth_hs256_secret", "short")])).is_err()
        );
        assert!(Config::from_pairs(&pairs(&[("file", "/p"), ("oauth_issuer", "x")])).is_err());
    }

    #[test]
    fn passwords() {
        let mut f = Fixture::new(&[]);
        assert_eq!(f.verify("alice", "wonderland"), allow("alice"));
        assert_eq!(f.verify("alice", "Wonderland"), deny("bad password"));
        assert_eq!(f.verify("bob", "correct horse"), allow("bob"));
        assert_eq!(f.verify("bob", "wrong"), deny("bad password"));
        assert_eq!(f.verify("Carol", "correct horse"), allow("Carol"));
        assert_eq!(f.verify("Carol", "wrong"), deny("bad password"));
        // User names are case-sensitive by default.
        assert_eq!(f.verify("ALICE", "wonderland"), deny("unknown user"));
    }

    #[test]
    fn authzid() {
        let mut f = Fixture::new(&[]);
        assert_eq!(
            f.verify_with("alice", "PLAIN", "wonderland", "alice"),
            allow("alice")
        );
        assert_eq!(
            f.verify_with("alice", "PLAIN", "wonderland", "bob"),
            deny("authorization identity not permitted")
        );
        let mut f = Fixture::new(&[("lowercase_user", "true")]);
        assert_eq!(
            f.verify_with("Alice", "PLAIN", "wonderland", "ALICE"),
            allow("alice")
        );
    }

    #[test]
    fn bad_user_names() {
        let mut f = Fixture::new(&[]);
        for user in ["", "alice:x", "ali\0ce", "alice\r\n"] {
            assert_eq!(f.verify(user, "wonderland"), deny("invalid user name"));
        }
    }

    #[test]
    fn long_credentials_are_refused() {
        let mut f = Fixture::new(&[]);
        let long = "x".repeat(MAX_CREDENTIAL_LEN + 1);
        assert_eq!(f.verify("bob", &long), deny("credential too long"));
    }

    #[test]
    fn unknown_user_does_dummy_work() {
        let mut f = Fixture::new(&[]);
        let before = dummy_runs();
        assert_eq!(f.verify("mallory", "wonderland"), deny("unknown user"));
        assert_eq!(dummy_runs(), before + 1);
        // A known user does the real work instead.
        assert_eq!(f.verify("bob", "wrong"), deny("bad password"));
        assert_eq!(dummy_runs(), before + 1);
    }

    #[test]
    fn unusable_entries_deny_and_log() {
        let mut f = Fixture::new(&[]);
        let before = dummy_runs();
        let Decision::Deny(why) = f.verify("dave", "whatever") else {
            panic!("dave must be denied");
        };
        assert!(why.contains("MD4"), "{why}");
        assert!(
            f.logs
                .iter()
                .any(|(l, m)| *l == Level::Warn && m.contains("MD4"))
        );
        assert!(matches!(f.verify("erin", ""), Decision::Deny(_)));
        assert!(matches!(f.verify("erin", "x"), Decision::Deny(_)));
        let Decision::Deny(why) = f.verify("frank", "correct horse") else {
            panic!("DES crypt must be denied");
        };
        assert!(why.contains("DES"), "{why}");
        assert_eq!(dummy_runs(), before + 4);
        // Nothing secret reaches the log.
        for (_, line) in &f.logs {
            assert!(
                !line.contains("whatever") && !line.contains("correct horse"),
                "{line}"
            );
        }
    }

    #[test]
    fn lowercase_user() {
        let mut f = Fixture::new(&[("lowercase_user", "true")]);
        assert_eq!(f.verify("ALICE", "wonderland"), allow("alice"));
        assert_eq!(f.verify("CAROL", "correct horse"), allow("carol"));
    }

    #[test]
    fn default_scheme() {
        let mut f = Fixture::new(&[("default_scheme", "PLAIN")]);
        f.dir.write("passwd", "zed:bare-secret\n");
        assert_eq!(f.verify("zed", "bare-secret"), allow("zed"));
        assert_eq!(
            f.lookup("zed", SecretKind::Plaintext),
            Lookup::Found(Secret::Plaintext("bare-secret".into()), "zed".into())
        );
    }

    #[test]
    fn missing_file_is_temp_fail() {
        let mut f = Fixture::new(&[]);
        assert_eq!(f.verify("alice", "wonderland"), allow("alice"));
        std::fs::remove_file(f.dir.path().join("passwd")).unwrap();
        assert!(
            matches!(f.verify("alice", "wonderland"), Decision::TempFail(why) if why.contains("passwd"))
        );
        assert!(matches!(
            f.lookup("alice", SecretKind::Plaintext),
            Lookup::TempFail(_)
        ));
    }

    #[test]
    fn picks_up_edits() {
        let mut f = Fixture::new(&[]);
        assert_eq!(f.verify("alice", "wonderland"), allow("alice"));
        f.dir.write("passwd", "alice:{PLAIN}looking-glass\n");
        assert_eq!(f.verify("alice", "wonderland"), deny("bad password"));
        assert_eq!(f.verify("alice", "looking-glass"), allow("alice"));
        assert_eq!(f.verify("bob", "correct horse"), deny("unknown user"));
        let loads = f
            .logs
            .iter()
            .filter(|(l, m)| *l == Level::Info && m.starts_with("loaded"))
            .count();
        assert_eq!(loads, 2);
    }

    #[test]
    fn lookup_secret_kinds() {
        let mut f = Fixture::new(&[]);
        assert_eq!(
            f.lookup("alice", SecretKind::Plaintext),
            Lookup::Found(Secret::Plaintext("wonderland".into()), "alice".into())
        );
        assert_eq!(
            f.lookup("alice", SecretKind::ScramSha256),
            Lookup::Unavailable
        );
        assert_eq!(f.lookup("bob", SecretKind::Plaintext), Lookup::Unavailable);
        assert_eq!(
            f.lookup("bob", SecretKind::ScramSha256),
            Lookup::Unavailable
        );
        let Lookup::Found(
            Secret::ScramSha256(Scram {
                iterations, salt, ..
            }),
            principal,
        ) = f.lookup("Carol", SecretKind::ScramSha256)
        else {
            panic!("Carol has a SCRAM verifier");
        };
        assert_eq!(
            (iterations, salt.as_slice(), principal.as_str()),
            (4096, &b"0123456789abcdef"[..], "Carol")
        );
        assert_eq!(
            f.lookup("Carol", SecretKind::Plaintext),
            Lookup::Unavailable
        );
        assert_eq!(
            f.lookup("mallory", SecretKind::Plaintext),
            Lookup::Unavailable
        );
        assert_eq!(f.lookup("dave", SecretKind::Plaintext), Lookup::Unavailable);
        assert_eq!(f.lookup("erin", SecretKind::Plaintext), Lookup::Unavailable);
        assert_eq!(f.lookup("", SecretKind::Plaintext), Lookup::Unavailable);
    }
}
