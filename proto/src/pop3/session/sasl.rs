//! SASL exchanges (RFC 5034): the mechanisms a listener offers, and one
//! function per mechanism for the client's responses.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::super::lang::Text;
use super::super::reply::Code;
use super::super::scram::{ClientFirst, Exchange, ScramError, Verifier};
use super::authorization::Pending;
use super::i18n::saslprep;
use super::{Action, AuthRequest, Secret, SecretKind, SecretOutcome, Session, State};

/// Which SASL mechanisms a listener offers (RFC 5034). Mechanisms that
/// reveal a password or token (PLAIN, LOGIN, OAUTHBEARER, XOAUTH2) follow
/// the plaintext policy like USER/PASS; SCRAM is offered on any
/// connection; SCRAM-SHA-256-PLUS only over TLS 1.3, where `tls-exporter`
/// channel binding exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mechanisms {
    pub plain: bool,
    pub login: bool,
    pub scram_sha256: bool,
    pub scram_sha256_plus: bool,
    pub oauthbearer: bool,
    pub xoauth2: bool,
}

impl Default for Mechanisms {
    /// PLAIN and LOGIN, which every password backend can verify.
    fn default() -> Self {
        Mechanisms {
            plain: true,
            login: true,
            scram_sha256: false,
            scram_sha256_plus: false,
            oauthbearer: false,
            xoauth2: false,
        }
    }
}

impl Mechanisms {
    /// Every mechanism name this server implements.
    pub const ALL: [&'static str; 6] = [
        "PLAIN",
        "LOGIN",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "OAUTHBEARER",
        "XOAUTH2",
    ];

    /// None enabled.
    pub fn none() -> Self {
        Mechanisms {
            plain: false,
            login: false,
            scram_sha256: false,
            scram_sha256_plus: false,
            oauthbearer: false,
            xoauth2: false,
        }
    }

    /// Enables a mechanism by its (case-insensitive) name; false if this
    /// server does not implement it.
    pub fn enable(&mut self, name: &str) -> bool {
        let flag = match name.to_ascii_uppercase().as_str() {
            "PLAIN" => &mut self.plain,
            "LOGIN" => &mut self.login,
            "SCRAM-SHA-256" => &mut self.scram_sha256,
            "SCRAM-SHA-256-PLUS" => &mut self.scram_sha256_plus,
            "OAUTHBEARER" => &mut self.oauthbearer,
            "XOAUTH2" => &mut self.xoauth2,
            _ => return false,
        };
        *flag = true;
        true
    }
}

#[derive(Debug)]
pub(super) enum Sasl {
    Plain,
    LoginUser,
    LoginPass {
        user: String,
    },
    /// Waiting for the SCRAM client-first message.
    ScramFirst {
        plus: bool,
    },
    /// Waiting for the SCRAM client-final message.
    ScramFinal {
        exchange: Box<Exchange>,
        principal: String,
    },
    /// The proof was good and server-final sent; waiting for the client's
    /// empty response (RFC 5034 §4: `+OK` carries no data).
    ScramVerified {
        principal: String,
    },
    OAuth {
        xoauth2: bool,
    },
    /// The token was refused and the error challenge sent; waiting for the
    /// client's dummy response (RFC 7628 §3.2.3).
    OAuthRefused,
}

impl Session {
    /// `AUTH mechanism [initial-response]`: starts an exchange.
    pub(super) fn start_sasl(&mut self, mech: &str, initial: Option<String>) -> Action {
        let m = self.config.mechanisms;
        let mech = mech.to_ascii_uppercase();
        // (mechanism, enabled, needs the plaintext policy)
        let (chosen, enabled, clear) = match mech.as_str() {
            "PLAIN" => (Sasl::Plain, m.plain, true),
            "LOGIN" => (Sasl::LoginUser, m.login, true),
            "SCRAM-SHA-256" => (Sasl::ScramFirst { plus: false }, m.scram_sha256, false),
            "SCRAM-SHA-256-PLUS" => (
                Sasl::ScramFirst { plus: true },
                self.offered_mechanisms().contains(&"SCRAM-SHA-256-PLUS"),
                false,
            ),
            "OAUTHBEARER" => (Sasl::OAuth { xoauth2: false }, m.oauthbearer, true),
            "XOAUTH2" => (Sasl::OAuth { xoauth2: true }, m.xoauth2, true),
            _ => (Sasl::Plain, false, false),
        };
        self.trying = Mechanisms::ALL.into_iter().find(|n| *n == mech);
        if !enabled {
            return Action::Reply(self.err_text(Text::UnsupportedMechanism));
        }
        if clear && !self.plaintext_allowed() {
            return self.plaintext_refused();
        }
        // -PLUS takes its client-first message only as the initial
        // response. RFC 5034 would have the server send an empty challenge
        // instead, but the clients that ask for -PLUS this way without
        // being able to bind to the channel (GNU SASL builds of mutt and
        // neomutt pick -PLUS whenever it is offered and never hand GNU
        // SASL the tls-exporter value) answer that challenge with `*` and
        // never read the `-ERR` that RFC 5034 then requires; they would
        // read it as the answer to their next command (APOP), and every
        // answer after it one command late, so the server logged them in
        // while they read a failure. Refused here, before any challenge,
        // they move on to their next mechanism in step.
        if matches!(chosen, Sasl::ScramFirst { plus: true }) && initial.is_none() {
            return Action::Reply(self.err_text(Text::PlusNeedsInitialResponse));
        }
        self.continue_sasl(chosen);
        match initial {
            None => Action::Reply(self.sasl_prompt()),
            Some(ir) => self.sasl_response(ir.as_bytes()),
        }
    }

    /// The exchange goes on with the client's next line.
    fn continue_sasl(&mut self, next: Sasl) {
        if let State::Authorization { sasl, .. } = &mut self.state {
            *sasl = Some(next);
        }
    }

    /// Remembers work asked of the network layer until its answer comes.
    fn wait_for(&mut self, work: Pending) {
        if let State::Authorization { pending, .. } = &mut self.state {
            *pending = Some(work);
        }
    }

    /// A fresh, unpredictable SCRAM server nonce: distinct per connection
    /// (the APOP timestamp is) and per attempt.
    fn scram_nonce(&mut self) -> String {
        self.sasl_attempts += 1;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.config.secret).expect("HMAC takes any key length");
        mac.update(self.timestamp.as_bytes());
        mac.update(&self.sasl_attempts.to_be_bytes());
        B64.encode(&mac.finalize().into_bytes()[..18])
    }

    fn sasl_prompt(&self) -> Vec<u8> {
        match &self.state {
            State::Authorization {
                sasl: Some(Sasl::LoginUser),
                ..
            } => format!("+ {}\r\n", B64.encode("Username:")).into_bytes(),
            State::Authorization {
                sasl: Some(Sasl::LoginPass { .. }),
                ..
            } => format!("+ {}\r\n", B64.encode("Password:")).into_bytes(),
            _ => b"+ \r\n".to_vec(),
        }
    }

    /// A client line while a SASL exchange is in progress (or the initial
    /// response of `AUTH`): decoded here, then handed to the mechanism.
    pub(super) fn sasl_response(&mut self, line: &[u8]) -> Action {
        let State::Authorization { sasl, .. } = &mut self.state else {
            unreachable!("SASL only runs in AUTHORIZATION")
        };
        let Some(mech) = sasl.take() else {
            unreachable!("sasl_response needs an exchange")
        };
        if line == b"*" {
            return Action::Reply(self.err_text(Text::Cancelled));
        }
        // `=` is an empty response (RFC 5034 §4).
        let empty = line == b"=";
        let decoded = if empty {
            Vec::new()
        } else {
            match B64.decode(line) {
                Ok(d) => d,
                Err(_) => return Action::Reply(self.err_text(Text::InvalidBase64)),
            }
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Action::Reply(self.err_code_text(Code::Auth, Text::AuthFailed));
        };
        match mech {
            Sasl::Plain => self.plain(text, empty),
            Sasl::LoginUser => self.login_user(text),
            Sasl::LoginPass { user } => self.login_pass(user, &text),
            Sasl::ScramFirst { plus } => self.scram_first(&text, plus),
            Sasl::ScramFinal {
                exchange,
                principal,
            } => self.scram_final(&exchange, principal, &text),
            Sasl::ScramVerified { principal } => self.scram_verified(principal, &text),
            Sasl::OAuth { xoauth2 } => self.oauth(xoauth2, text, empty),
            Sasl::OAuthRefused => Action::Reply(self.err_code_text(Code::Auth, Text::AuthFailed)),
        }
    }

    /// PLAIN (RFC 4616): `authzid NUL authcid NUL password`.
    fn plain(&mut self, text: String, empty: bool) -> Action {
        if text.is_empty() && empty {
            // Empty initial response: ask for the real one.
            self.continue_sasl(Sasl::Plain);
            return Action::Reply(b"+ \r\n".to_vec());
        }
        let parts: Vec<&str> = text.split('\0').collect();
        match parts.as_slice() {
            [authzid, authcid, _]
                if !name_ok(authcid) || !(authzid.is_empty() || name_ok(authzid)) =>
            {
                Action::Reply(self.err_code_text(Code::Auth, Text::MalformedUser))
            }
            // RFC 4616 §2: the server prepares all three with SASLprep.
            [authzid, authcid, password] => {
                match (saslprep(authzid), saslprep(authcid), saslprep(password)) {
                    (Some(authzid), Some(authcid), Some(password)) => Action::Verify(AuthRequest {
                        user: authcid.into_owned(),
                        mechanism: "PLAIN",
                        credential: password.into_owned(),
                        authzid: authzid.into_owned(),
                    }),
                    _ => Action::Reply(self.err_code_text(Code::Auth, Text::Unprepared)),
                }
            }
            _ => Action::Reply(self.err_code_text(Code::Auth, Text::MalformedPlain)),
        }
    }

    /// LOGIN's first answer: the user name (SASLprep'd, as GNU SASL
    /// suggests for this unspecified mechanism).
    fn login_user(&mut self, text: String) -> Action {
        if !name_ok(&text) {
            return Action::Reply(self.err_code_text(Code::Auth, Text::MalformedUser));
        }
        let Some(user) = saslprep(&text) else {
            return Action::Reply(self.err_code_text(Code::Auth, Text::Unprepared));
        };
        let user = user.into_owned();
        self.continue_sasl(Sasl::LoginPass { user });
        Action::Reply(self.sasl_prompt())
    }

    /// LOGIN's second answer: the password.
    fn login_pass(&self, user: String, password: &str) -> Action {
        match saslprep(password) {
            Some(password) => Action::Verify(AuthRequest {
                user,
                mechanism: "LOGIN",
                credential: password.into_owned(),
                authzid: String::new(),
            }),
            None => Action::Reply(self.err_code_text(Code::Auth, Text::Unprepared)),
        }
    }

    /// SCRAM's client-first message (RFC 5802 §5.1): look up the verifier.
    fn scram_first(&mut self, text: &str, plus: bool) -> Action {
        let offered = self.channel_binding.is_some() && self.config.mechanisms.scram_sha256_plus;
        match ClientFirst::parse(text, plus, offered) {
            Ok(first) if !name_ok(&first.user) => {
                Action::Reply(self.err_code_text(Code::Auth, Text::MalformedUser))
            }
            // RFC 5802 §5.1: the server looks the name up SASLprep'd.
            Ok(first) => match saslprep(&first.user).map(|u| u.into_owned()) {
                Some(user) => {
                    self.wait_for(Pending::Scram { first });
                    Action::LookupSecret {
                        user,
                        kind: SecretKind::ScramSha256,
                    }
                }
                None => Action::Reply(self.err_code_text(Code::Auth, Text::Unprepared)),
            },
            Err(e) => Action::Reply(self.scram_refusal(&e)),
        }
    }

    /// SCRAM's client-final message: check the proof, send server-final.
    fn scram_final(&mut self, exchange: &Exchange, principal: String, text: &str) -> Action {
        match exchange.finish(text) {
            Ok(server_final) => {
                self.continue_sasl(Sasl::ScramVerified { principal });
                Action::Reply(format!("+ {}\r\n", B64.encode(server_final)).into_bytes())
            }
            Err(e) => {
                self.auth_failed = e == ScramError::Proof;
                Action::Reply(self.scram_refusal(&e))
            }
        }
    }

    /// OAUTHBEARER (RFC 7628) and XOAUTH2: the user and the bearer token
    /// go to the auth plugin.
    fn oauth(&mut self, xoauth2: bool, text: String, empty: bool) -> Action {
        if text.is_empty() && empty && !xoauth2 {
            self.continue_sasl(Sasl::OAuth { xoauth2 });
            return Action::Reply(b"+ \r\n".to_vec());
        }
        let parsed = if xoauth2 {
            parse_xoauth2(&text)
        } else {
            parse_oauthbearer(&text)
        };
        match parsed {
            // The user may be empty here: the token names it.
            Some((user, _)) if !user.is_empty() && !name_ok(&user) => {
                Action::Reply(self.err_code_text(Code::Auth, Text::MalformedUser))
            }
            Some((user, token)) => {
                self.wait_for(Pending::OAuth { xoauth2 });
                Action::Verify(AuthRequest {
                    user,
                    mechanism: if xoauth2 { "XOAUTH2" } else { "OAUTHBEARER" },
                    credential: token,
                    authzid: String::new(),
                })
            }
            None => Action::Reply(self.err_code_text(Code::Auth, Text::MalformedOAuth)),
        }
    }

    /// A refused OAuth token: RFC 7628 §3.2.2 sends an error challenge;
    /// the client answers with a dummy response and only then is told the
    /// exchange failed.
    pub(super) fn oauth_refused(&mut self, xoauth2: bool) -> Action {
        self.continue_sasl(Sasl::OAuthRefused);
        let status = if xoauth2 {
            r#"{"status":"401","schemes":"Bearer"}"#
        } else {
            r#"{"status":"invalid_token","schemes":"bearer"}"#
        };
        Action::Reply(format!("+ {}\r\n", B64.encode(status)).into_bytes())
    }

    /// Starts a SCRAM exchange with the user's verifier (or a made-up one
    /// for a user without one, which then fails like a wrong password).
    pub(super) fn scram_secret(&mut self, first: ClientFirst, outcome: SecretOutcome) -> Action {
        let made_up = || Verifier::unmatchable(&first.user, &self.config.secret);
        let (verifier, real, principal) = match outcome {
            SecretOutcome::Found {
                secret: Secret::ScramSha256(v),
                principal,
            } => (v, true, principal),
            SecretOutcome::Found {
                secret: Secret::Plaintext(pw),
                principal,
            } => match saslprep(&pw) {
                // The client hashes the SASLprep'd password (RFC 5802
                // §2.2); a stored one SASLprep refuses matches nothing a
                // client can send.
                Some(pw) => {
                    // A stable per-user salt, so clients may cache the key.
                    let salt = made_up();
                    let v = Verifier::from_password(pw.as_bytes(), &salt.salt, salt.iterations);
                    (v, true, principal)
                }
                None => (made_up(), false, String::new()),
            },
            SecretOutcome::Unavailable => (made_up(), false, String::new()),
            SecretOutcome::TempFail => return self.auth_temp_fail(),
        };
        let nonce = self.scram_nonce();
        match Exchange::new(first, verifier, real, &nonce, self.channel_binding.clone()) {
            Ok(exchange) => {
                let reply = format!("+ {}\r\n", B64.encode(exchange.server_first())).into_bytes();
                self.continue_sasl(Sasl::ScramFinal {
                    exchange: Box::new(exchange),
                    principal,
                });
                Action::Reply(reply)
            }
            Err(e) => Action::Reply(self.scram_refusal(&e)),
        }
    }

    /// After SCRAM's server-final message the client sends an empty
    /// response (RFC 5034 §4: `+OK` carries no data); only then is the
    /// login done.
    fn scram_verified(&self, principal: String, text: &str) -> Action {
        if text.is_empty() {
            Action::OpenMaildrop { principal }
        } else {
            Action::Reply(self.err_code_text(Code::Auth, Text::ExpectedEmpty))
        }
    }

    /// The answer to a failed SCRAM exchange. A wrong password and an
    /// unknown user read the same; protocol errors say what was wrong.
    fn scram_refusal(&self, e: &ScramError) -> Vec<u8> {
        let text = match e {
            ScramError::Proof => Text::AuthFailed,
            other => Text::AuthFailedBecause(other.to_string()),
        };
        self.err_code_text(Code::Auth, text)
    }
}

/// Whether a user name from a SASL exchange may reach the auth plugin: not
/// empty, and no control characters (the parser holds command lines to
/// the same; a newline or NUL in a name is never a real user and could
/// forge log lines).
fn name_ok(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}

/// OAUTHBEARER's initial client response (RFC 7628 §3.1):
/// `gs2-header %x01 *(key=value %x01) %x01`. Returns the user named in the
/// GS2 header (may be empty) and the bearer token.
fn parse_oauthbearer(text: &str) -> Option<(String, String)> {
    let (gs2, rest) = text.split_once('\x01')?;
    let mut gs2 = gs2.splitn(3, ',');
    if !matches!(gs2.next()?, "n" | "y") {
        return None;
    }
    let user = match gs2.next()? {
        "" => String::new(),
        a => a
            .strip_prefix("a=")?
            .replace("=2C", ",")
            .replace("=3D", "="),
    };
    let token = bearer_token(rest)?;
    Some((user, token))
}

/// XOAUTH2's client response: `user=U %x01 auth=Bearer T %x01 %x01`.
fn parse_xoauth2(text: &str) -> Option<(String, String)> {
    let (first, rest) = text.split_once('\x01')?;
    let user = first.strip_prefix("user=")?.to_string();
    let token = bearer_token(rest)?;
    Some((user, token))
}

/// The token of the `auth=Bearer …` pair among %x01-separated key=value
/// pairs that end with an empty one.
fn bearer_token(pairs: &str) -> Option<String> {
    let body = pairs.strip_suffix("\x01\x01")?;
    body.split('\x01').find_map(|kv| {
        let v = kv.strip_prefix("auth=")?;
        let (scheme, token) = v.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
            .then(|| token.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    use super::super::fixtures::*;
    use super::super::*;
    use crate::pop3::scram::Verifier;

    #[test]
    fn sasl_plain_initial_response_and_continuation() {
        let mut s = session();
        // "\0alice\0pw"
        match s.on_line(line("AUTH PLAIN AGFsaWNlAHB3")) {
            Action::Verify(r) => {
                assert_eq!(
                    (r.user.as_str(), r.credential.as_str(), r.mechanism),
                    ("alice", "pw", "PLAIN")
                );
            }
            other => panic!("{other:?}"),
        }
        let mut s = session();
        assert_eq!(reply(s.on_line(line("AUTH plain"))), "+ \r\n");
        assert_eq!(s.max_line(), MAX_SASL_LINE);
        assert!(matches!(s.on_line(line("AGFsaWNlAHB3")), Action::Verify(_)));
        s.on_auth(AuthOutcome::Deny);
        let long = format!("USER {}", "u".repeat(300));
        assert_eq!(reply(s.on_line(line(&long))), "-ERR Line too long\r\n");
        s.on_auth(AuthOutcome::Allow {
            principal: "alice".into(),
        });
        s.on_maildrop("alice".into(), Ok(entries()));
        assert_eq!(s.max_line(), MAX_COMMAND_LINE);
        let mut s = session();
        assert_eq!(reply(s.on_line(line("AUTH PLAIN ="))), "+ \r\n");
        assert!(matches!(s.on_line(line("AGFsaWNlAHB3")), Action::Verify(_)));
    }

    #[test]
    fn sasl_login_and_cancel_and_garbage() {
        let mut s = session();
        assert_eq!(reply(s.on_line(line("AUTH LOGIN"))), "+ VXNlcm5hbWU6\r\n");
        assert_eq!(reply(s.on_line(line("YWxpY2U="))), "+ UGFzc3dvcmQ6\r\n");
        match s.on_line(line("cHc=")) {
            Action::Verify(r) => {
                assert_eq!((r.user.as_str(), r.credential.as_str()), ("alice", "pw"))
            }
            other => panic!("{other:?}"),
        }
        let mut s = session();
        s.on_line(line("AUTH LOGIN"));
        assert_eq!(
            reply(s.on_line(line("*"))),
            "-ERR Authentication cancelled\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("NOOP"))),
            "-ERR Command not valid before login\r\n"
        );
        let mut s = session();
        s.on_line(line("AUTH PLAIN"));
        assert_eq!(
            reply(s.on_line(line("!!!notbase64"))),
            "-ERR Invalid base64 in authentication response\r\n"
        );
        let mut s = session();
        // "alice\0pw": only one NUL.
        assert_eq!(
            reply(s.on_line(line("AUTH PLAIN YWxpY2UAcHc="))),
            "-ERR [AUTH] Malformed PLAIN response\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH CRAM-MD5"))),
            "-ERR Unsupported authentication mechanism\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH"))),
            "+OK Supported mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        );
    }

    #[test]
    fn sasl_user_names_with_control_characters_are_refused() {
        let malformed = "-ERR [AUTH] Malformed user name\r\n";
        let mut s = with_mechanisms(&Mechanisms::ALL, true, Some(vec![1; 32]));
        for ir in ["\0a\nb\0pw", "\0\0pw", "x\ty\0a\0pw"] {
            let line = format!("AUTH PLAIN {}", B64.encode(ir));
            assert_eq!(reply(s.on_line(self::line(&line))), malformed, "{ir:?}");
        }
        assert_eq!(reply(s.on_line(line("AUTH LOGIN"))), "+ VXNlcm5hbWU6\r\n");
        assert_eq!(reply(s.on_line(line(&B64.encode("a\rb")))), malformed);
        assert_eq!(reply(s.on_line(line("AUTH LOGIN"))), "+ VXNlcm5hbWU6\r\n");
        assert_eq!(reply(s.on_line(line("="))), malformed, "empty LOGIN name");
        let first = B64.encode("n,,n=a\u{7f}b,r=abc");
        assert_eq!(
            reply(s.on_line(line(&format!("AUTH SCRAM-SHA-256 {first}")))),
            malformed
        );
        let xo = B64.encode("user=a\nb\x01auth=Bearer t\x01\x01");
        assert_eq!(
            reply(s.on_line(line(&format!("AUTH XOAUTH2 {xo}")))),
            malformed
        );
        assert!(!s.take_auth_failure());
    }

    #[test]
    fn long_auth_initial_responses_are_accepted() {
        // An OAuth token does not fit in 255 octets; clients send it anyway.
        let mut s = with_mechanisms(&["OAUTHBEARER"], true, None);
        let token = "t".repeat(1000);
        let ir = B64.encode(format!("n,,\x01auth=Bearer {token}\x01\x01"));
        match s.on_line(line(&format!("AUTH OAUTHBEARER {ir}"))) {
            Action::Verify(r) => assert_eq!(r.credential, token),
            other => panic!("{other:?}"),
        }
    }

    /// A SCRAM client for the tests, written from RFC 5802 independently of
    /// the server side.
    fn client_final(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        cbind_input: &[u8],
    ) -> (String, String) {
        let mut it = server_first.split(',');
        let nonce = it.next().unwrap().strip_prefix("r=").unwrap();
        let salt = B64
            .decode(it.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iters: u32 = it
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let mac = |k: &[u8], d: &[u8]| {
            let mut m = Hmac::<Sha256>::new_from_slice(k).unwrap();
            m.update(d);
            m.finalize().into_bytes().to_vec()
        };
        let mut u = mac(password.as_bytes(), &[&salt[..], &[0, 0, 0, 1]].concat());
        let mut salted = u.clone();
        for _ in 1..iters {
            u = mac(password.as_bytes(), &u);
            salted.iter_mut().zip(&u).for_each(|(a, b)| *a ^= b);
        }
        let client_key = mac(&salted, b"Client Key");
        let stored: Vec<u8> = <Sha256 as sha2::Digest>::digest(&client_key).to_vec();
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind_input));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = mac(&stored, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        let server_sig = mac(&mac(&salted, b"Server Key"), auth_message.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={}", B64.encode(server_sig)),
        )
    }

    /// Runs a SCRAM exchange to the end; returns the last action.
    fn scram_login(
        s: &mut Session,
        mech: &str,
        gs2: &str,
        cb: &[u8],
        stored: SecretOutcome,
        password: &str,
    ) -> Action {
        let bare = "n=alice,r=clientnonce123";
        let first = B64.encode(format!("{gs2}{bare}"));
        // -PLUS takes client-first only as the initial response.
        let sent = if mech.ends_with("-PLUS") {
            s.on_line(line(&format!("AUTH {mech} {first}")))
        } else {
            assert_eq!(reply(s.on_line(line(&format!("AUTH {mech}")))), "+ \r\n");
            s.on_line(line(&first))
        };
        match sent {
            Action::LookupSecret { user, kind } => {
                assert_eq!((user.as_str(), kind), ("alice", SecretKind::ScramSha256))
            }
            other => return other,
        }
        let r = reply(s.on_secret(stored));
        if !r.starts_with("+ ") {
            return Action::Reply(r.into_bytes());
        }
        let server_first = unb64_challenge(&r);
        assert!(
            server_first.starts_with("r=clientnonce123"),
            "{server_first}"
        );
        let cbind = [gs2.as_bytes(), cb].concat();
        let (fin, expect_v) = client_final(password, bare, &server_first, &cbind);
        match s.on_line(line(&B64.encode(fin))) {
            Action::Reply(r) if r.starts_with(b"+ ") => {
                let r = String::from_utf8(r).unwrap();
                assert_eq!(unb64_challenge(&r), expect_v);
                s.on_line(line(""))
            }
            other => other,
        }
    }

    fn verifier(pw: &str) -> SecretOutcome {
        SecretOutcome::Found {
            secret: Secret::ScramSha256(Verifier::from_password(pw.as_bytes(), b"salt", 4096)),
            principal: "alice".into(),
        }
    }

    #[test]
    fn scram_sha256_login() {
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let a = scram_login(&mut s, "SCRAM-SHA-256", "n,,", b"", verifier("pw"), "pw");
        assert!(matches!(a, Action::OpenMaildrop { principal } if principal == "alice"));
        // A clear-text secret works too: the session derives a verifier.
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let plain = SecretOutcome::Found {
            secret: Secret::Plaintext("pw".into()),
            principal: "alice".into(),
        };
        let a = scram_login(&mut s, "SCRAM-SHA-256", "n,,", b"", plain, "pw");
        assert!(matches!(a, Action::OpenMaildrop { .. }));
    }

    #[test]
    fn scram_wrong_password_and_unknown_user_read_the_same() {
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let a = scram_login(&mut s, "SCRAM-SHA-256", "n,,", b"", verifier("pw"), "bad");
        assert_eq!(reply(a), "-ERR [AUTH] Authentication failed\r\n");
        assert!(s.take_auth_failure());
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let a = scram_login(
            &mut s,
            "SCRAM-SHA-256",
            "n,,",
            b"",
            SecretOutcome::Unavailable,
            "pw",
        );
        assert_eq!(reply(a), "-ERR [AUTH] Authentication failed\r\n");
        assert!(s.take_auth_failure());
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        let a = scram_login(
            &mut s,
            "SCRAM-SHA-256",
            "n,,",
            b"",
            SecretOutcome::TempFail,
            "pw",
        );
        assert!(reply(a).starts_with("-ERR [SYS/TEMP]"));
        // The session is usable again afterwards.
        assert!(reply(s.on_line(line("CAPA"))).starts_with("+OK"));
    }

    #[test]
    fn scram_plus_binds_to_the_tls_exporter() {
        let cb = vec![9u8; 32];
        let mut s = with_mechanisms(
            &["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"],
            true,
            Some(cb.clone()),
        );
        let a = scram_login(
            &mut s,
            "SCRAM-SHA-256-PLUS",
            "p=tls-exporter,,",
            &cb,
            verifier("pw"),
            "pw",
        );
        assert!(matches!(a, Action::OpenMaildrop { .. }));
        // Another connection's exporter value (a relayed exchange) fails.
        let mut s = with_mechanisms(&["SCRAM-SHA-256-PLUS"], true, Some(cb));
        let a = scram_login(
            &mut s,
            "SCRAM-SHA-256-PLUS",
            "p=tls-exporter,,",
            &[1; 32],
            verifier("pw"),
            "pw",
        );
        assert_eq!(
            reply(a),
            "-ERR [AUTH] Authentication failed: channel binding: channel binding data differ\r\n"
        );
        // A client claiming the server offers no binding, when it does: a
        // downgrade, refused.
        let mut s = with_mechanisms(
            &["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"],
            true,
            Some(vec![9; 32]),
        );
        let a = scram_login(&mut s, "SCRAM-SHA-256", "y,,", b"", verifier("pw"), "pw");
        assert!(reply(a).starts_with("-ERR [AUTH] Authentication failed: channel binding"));
    }

    #[test]
    fn plus_without_initial_response_is_refused_before_any_challenge() {
        // What mutt/neomutt (GNU SASL) do with -PLUS on offer: AUTH without
        // an initial response, then their next mechanism. The refusal
        // comes at once, so APOP's answer is APOP's.
        let mut s = with_mechanisms(
            &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"],
            true,
            Some(vec![9; 32]),
        );
        assert_eq!(
            reply(s.on_line(line("AUTH SCRAM-SHA-256-PLUS"))),
            "-ERR SCRAM-SHA-256-PLUS needs the client-first message with AUTH \
             (an initial response); use another mechanism\r\n"
        );
        assert!(!s.take_auth_failure(), "no credentials were tried");
        assert!(matches!(
            s.on_line(line("APOP mrose c4c9334bac560ecc979e58001b3e22fb")),
            Action::LookupSecret { .. }
        ));
        // With the initial response it runs (see scram_plus_binds_...).
        let mut s = with_mechanisms(&["SCRAM-SHA-256-PLUS"], true, Some(vec![9; 32]));
        let first = B64.encode("p=tls-exporter,,n=alice,r=abc");
        assert!(matches!(
            s.on_line(line(&format!("AUTH SCRAM-SHA-256-PLUS {first}"))),
            Action::LookupSecret { .. }
        ));
    }

    #[test]
    fn sasl_names_and_passwords_are_saslprepped() {
        let mut s = with_mechanisms(&["PLAIN", "LOGIN", "SCRAM-SHA-256"], true, None);
        // PLAIN: soft hyphen dropped, NBSP made a space, ª folded to a.
        let ir = B64.encode("\0\u{aa}lice\0p\u{ad}w\u{a0}d");
        match s.on_line(line(&format!("AUTH PLAIN {ir}"))) {
            Action::Verify(r) => {
                assert_eq!((r.user.as_str(), r.credential.as_str()), ("alice", "pw d"))
            }
            other => panic!("{other:?}"),
        }
        // A private-use character is prohibited (RFC 4013 §2.3).
        let unprepared =
            "-ERR [AUTH] User name or password has characters SASLprep does not allow\r\n";
        let ir = B64.encode("\0alice\0\u{e000}");
        assert_eq!(
            reply(s.on_line(line(&format!("AUTH PLAIN {ir}")))),
            unprepared
        );
        // LOGIN: both answers.
        s.on_line(line("AUTH LOGIN"));
        s.on_line(line(&B64.encode("\u{2168}")));
        match s.on_line(line(&B64.encode("I\u{ad}X"))) {
            Action::Verify(r) => {
                assert_eq!((r.user.as_str(), r.credential.as_str()), ("IX", "IX"))
            }
            other => panic!("{other:?}"),
        }
        s.on_line(line("AUTH LOGIN"));
        assert_eq!(reply(s.on_line(line(&B64.encode("\u{e000}")))), unprepared);
        // SCRAM: the name is looked up SASLprep'd, and a clear-text secret
        // is SASLprep'd before the verifier is derived, as the client does
        // to the password it hashes.
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], true, None);
        let first = B64.encode("n,,n=\u{2168},r=abc");
        match s.on_line(line(&format!("AUTH SCRAM-SHA-256 {first}"))) {
            Action::LookupSecret { user, .. } => assert_eq!(user, "IX"),
            other => panic!("{other:?}"),
        }
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], true, None);
        let stored = SecretOutcome::Found {
            secret: Secret::Plaintext("p\u{ad}w\u{a0}d".into()),
            principal: "alice".into(),
        };
        let a = scram_login(&mut s, "SCRAM-SHA-256", "n,,", b"", stored, "pw d");
        assert!(matches!(a, Action::OpenMaildrop { .. }), "{a:?}");
    }

    #[test]
    fn scram_garbage_and_cancel() {
        let mut s = with_mechanisms(&["SCRAM-SHA-256"], false, None);
        assert_eq!(
            reply(s.on_line(line(&format!(
                "AUTH SCRAM-SHA-256 {}",
                B64.encode("n,,r=x")
            )))),
            "-ERR [AUTH] Authentication failed: malformed SCRAM message: no user name\r\n"
        );
        assert_eq!(reply(s.on_line(line("AUTH SCRAM-SHA-256"))), "+ \r\n");
        assert_eq!(
            reply(s.on_line(line("*"))),
            "-ERR Authentication cancelled\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH SCRAM-SHA-256 !!!"))),
            "-ERR Invalid base64 in authentication response\r\n"
        );
        assert!(
            !s.take_auth_failure(),
            "protocol errors are not failed logins"
        );
    }

    #[test]
    fn oauthbearer_and_xoauth2() {
        let mut s = with_mechanisms(&["OAUTHBEARER", "XOAUTH2"], true, None);
        let ir = B64.encode("n,a=alice@example.org,\x01host=x\x01auth=Bearer tok123\x01\x01");
        match s.on_line(line(&format!("AUTH OAUTHBEARER {ir}"))) {
            Action::Verify(r) => {
                assert_eq!(
                    (r.user.as_str(), r.mechanism, r.credential.as_str()),
                    ("alice@example.org", "OAUTHBEARER", "tok123")
                );
            }
            other => panic!("{other:?}"),
        }
        // Refused: an error challenge, a dummy response, then -ERR.
        let r = reply(s.on_auth(AuthOutcome::Deny));
        assert!(unb64_challenge(&r).contains("invalid_token"), "{r}");
        assert_eq!(
            reply(s.on_line(line("AQ=="))),
            "-ERR [AUTH] Authentication failed\r\n"
        );
        let ir = B64.encode("user=bob\x01auth=Bearer t0k\x01\x01");
        match s.on_line(line(&format!("AUTH XOAUTH2 {ir}"))) {
            Action::Verify(r) => {
                assert_eq!((r.user.as_str(), r.credential.as_str()), ("bob", "t0k"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.on_auth(AuthOutcome::Allow {
                principal: "bob".into()
            }),
            Action::OpenMaildrop { .. }
        ));
        for bad in ["user=bob\x01\x01", "n,,\x01auth=Basic x\x01\x01", "garbage"] {
            let mut s = with_mechanisms(&["OAUTHBEARER"], true, None);
            assert_eq!(
                reply(s.on_line(line(&format!("AUTH OAUTHBEARER {}", B64.encode(bad))))),
                "-ERR [AUTH] Malformed OAuth response\r\n",
                "{bad:?}"
            );
        }
    }
}
