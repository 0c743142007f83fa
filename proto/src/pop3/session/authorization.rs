//! The AUTHORIZATION state (RFC 1939 §4): USER/PASS, APOP, STLS and the
//! start of AUTH; the answers of the auth plugin and the maildrop open
//! that end it.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::super::command::Command;
use super::super::lang::Text;
use super::super::reply::Code;
use super::super::scram::ClientFirst;
use super::i18n::net_unicode;
use super::transaction::Maildrop;
use super::{
    Action, AuthOutcome, AuthRequest, Entry, MaildropError, Secret, SecretKind, SecretOutcome,
    Session, State,
};

/// Work the session asked the network layer for and is waiting on.
#[derive(Debug)]
pub(super) enum Pending {
    /// An APOP digest waiting for the clear-text secret.
    Apop(String),
    /// A SCRAM client-first message waiting for the verifier.
    Scram { first: ClientFirst },
    /// An OAuth token being verified (a refusal gets an error challenge).
    OAuth { xoauth2: bool },
}

impl Session {
    pub(super) fn plaintext_refused(&self) -> Action {
        Action::Reply(self.err_code_text(Code::Auth, Text::PlaintextRefused))
    }

    /// The answer to a login the auth plugin could not decide now.
    pub(super) fn auth_temp_fail(&self) -> Action {
        Action::Reply(self.err_code_text(Code::SysTemp, Text::AuthTempFail))
    }

    /// The answer to a refused login (wrong password, unknown user).
    pub(super) fn auth_refused(&mut self) -> Action {
        self.auth_failed = true;
        Action::Reply(self.err_code_text(Code::Auth, Text::AuthFailed))
    }

    pub(super) fn authorization(&mut self, cmd: Command) -> Action {
        let plaintext_ok = self.plaintext_allowed();
        let State::Authorization { user, pending, .. } = &mut self.state else {
            unreachable!("authorization() is only called in AUTHORIZATION")
        };
        match cmd {
            Command::User(name) => {
                if !plaintext_ok {
                    return self.plaintext_refused();
                }
                // RFC 6856 `UTF8 USER`: names and passwords in
                // Net-Unicode form, so every way of typing `é` is one.
                *user = Some(net_unicode(&name).into_owned());
                Action::Reply(self.ok_text(Text::SendPassword))
            }
            Command::Pass(password) => match user.take() {
                None => Action::Reply(self.err_text(Text::GiveUserFirst)),
                Some(name) => {
                    self.trying = Some("USER");
                    Action::Verify(AuthRequest {
                        user: name,
                        mechanism: "USER",
                        credential: net_unicode(&password).into_owned(),
                        authzid: String::new(),
                    })
                }
            },
            Command::Apop { user: name, digest } => {
                *user = None;
                if !self.config.apop {
                    return Action::Reply(self.err_text(Text::ApopDisabled));
                }
                *pending = Some(Pending::Apop(digest.to_ascii_lowercase()));
                self.trying = Some("APOP");
                Action::LookupSecret {
                    user: net_unicode(&name).into_owned(),
                    kind: SecretKind::Plaintext,
                }
            }
            Command::Auth {
                mechanism: None, ..
            } => Action::Reply(self.multi_text(Text::MechanismsFollow, self.offered_mechanisms())),
            Command::Auth {
                mechanism: Some(mech),
                initial,
            } => {
                *user = None;
                self.start_sasl(&mech, initial)
            }
            Command::Stls => {
                if self.tls {
                    Action::Reply(self.err_text(Text::AlreadyTls))
                } else if !self.config.stls {
                    Action::Reply(self.err_text(Text::StlsUnavailable))
                } else {
                    *user = None;
                    Action::StartTls(self.ok_text(Text::BeginTls))
                }
            }
            _ => Action::Reply(self.err_text(Text::NotBeforeLogin)),
        }
    }

    /// The auth plugin's decision on the last [`Action::Verify`].
    pub fn on_auth(&mut self, outcome: AuthOutcome) -> Action {
        let oauth = match &mut self.state {
            State::Authorization { pending, .. } => match pending.take() {
                Some(Pending::OAuth { xoauth2 }) => Some(xoauth2),
                _ => None,
            },
            _ => None,
        };
        match outcome {
            AuthOutcome::Allow { principal } => Action::OpenMaildrop { principal },
            AuthOutcome::Deny => match oauth {
                Some(xoauth2) => {
                    self.auth_failed = true;
                    self.oauth_refused(xoauth2)
                }
                None => self.auth_refused(),
            },
            AuthOutcome::TempFail => self.auth_temp_fail(),
        }
    }

    /// The auth plugin's answer to [`Action::LookupSecret`] (APOP, SCRAM).
    pub fn on_secret(&mut self, outcome: SecretOutcome) -> Action {
        let pending = match &mut self.state {
            State::Authorization { pending, .. } => pending.take(),
            _ => None,
        };
        match pending {
            Some(Pending::Apop(digest)) => self.apop_secret(digest, outcome),
            Some(Pending::Scram { first }) => self.scram_secret(first, outcome),
            _ => Action::Reply(self.err_code_text(Code::Auth, Text::AuthFailed)),
        }
    }

    fn apop_secret(&mut self, digest: String, outcome: SecretOutcome) -> Action {
        match outcome {
            SecretOutcome::Found {
                secret: Secret::ScramSha256(_),
                ..
            } => self.auth_refused(),
            SecretOutcome::Found {
                secret: Secret::Plaintext(secret),
                principal,
            } => {
                let mut h = Md5::new();
                h.update(self.timestamp.as_bytes());
                // The client digests the password as it types it: in
                // Net-Unicode form, as the stored one is taken here.
                h.update(net_unicode(&secret).as_bytes());
                let expected = hex::encode(h.finalize());
                if bool::from(expected.as_bytes().ct_eq(digest.as_bytes())) {
                    Action::OpenMaildrop { principal }
                } else {
                    self.auth_refused()
                }
            }
            SecretOutcome::Unavailable => self.auth_refused(),
            SecretOutcome::TempFail => self.auth_temp_fail(),
        }
    }

    /// The result of [`Action::OpenMaildrop`]: the listing, or why not.
    pub fn on_maildrop(
        &mut self,
        principal: String,
        result: Result<Vec<Entry>, MaildropError>,
    ) -> Action {
        match result {
            Ok(entries) => {
                let deleted = vec![false; entries.len()];
                let drop = Maildrop {
                    principal: principal.clone(),
                    entries,
                    deleted,
                };
                let (n, octets) = drop.totals();
                self.state = State::Transaction(drop);
                self.principal = Some(principal);
                self.logged_in_with = self.trying.take();
                Action::Reply(self.ok_text(Text::LoggedIn {
                    messages: n,
                    octets,
                }))
            }
            Err(e) => {
                let (code, text) = match e {
                    MaildropError::InUse => (Code::InUse, Text::InUse),
                    MaildropError::LoginDelay => (Code::LoginDelay, Text::LoginDelay),
                    MaildropError::Temporary => (Code::SysTemp, Text::MailboxTemp),
                    MaildropError::Permanent => (Code::SysPerm, Text::MailboxPerm),
                };
                Action::Reply(self.err_code_text(code, text))
            }
        }
    }

    /// TLS is up after [`Action::StartTls`]: start over in AUTHORIZATION.
    /// `channel_binding` is the `tls-exporter` value if TLS 1.3 was
    /// negotiated (see [`Session::set_channel_binding`]).
    pub fn on_tls_started(&mut self, channel_binding: Option<Vec<u8>>) {
        self.tls = true;
        self.channel_binding = channel_binding;
        // RFC 2595 §4: nothing said before TLS carries over into it.
        self.utf8 = false;
        self.lang = Default::default();
        self.state = State::Authorization {
            user: None,
            sasl: None,
            pending: None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;

    #[test]
    fn transaction_commands_before_login_are_refused() {
        let mut s = session();
        for c in [
            "STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "UIDL", "TOP 1 1",
        ] {
            assert_eq!(
                reply(s.on_line(line(c))),
                "-ERR Command not valid before login\r\n",
                "{c}"
            );
        }
        assert_eq!(s.phase(), Phase::Authorization);
    }

    #[test]
    fn pass_without_user_and_failed_login() {
        let mut s = session();
        assert_eq!(reply(s.on_line(line("PASS x"))), "-ERR Give USER first\r\n");
        s.on_line(line("USER bob"));
        assert!(matches!(s.on_line(line("PASS wrong")), Action::Verify(_)));
        assert_eq!(
            reply(s.on_auth(AuthOutcome::Deny)),
            "-ERR [AUTH] Authentication failed\r\n"
        );
        // The USER must be given again after a failed PASS.
        assert_eq!(reply(s.on_line(line("PASS x"))), "-ERR Give USER first\r\n");
        s.on_line(line("USER bob"));
        s.on_line(line("PASS x"));
        assert_eq!(
            reply(s.on_auth(AuthOutcome::TempFail)),
            "-ERR [SYS/TEMP] Authentication is temporarily unavailable, try again later\r\n"
        );
    }

    #[test]
    fn in_use_and_other_maildrop_errors_stay_in_authorization() {
        for (e, want) in [
            (MaildropError::InUse, "-ERR [IN-USE] "),
            (MaildropError::LoginDelay, "-ERR [LOGIN-DELAY] "),
            (MaildropError::Temporary, "-ERR [SYS/TEMP] "),
            (MaildropError::Permanent, "-ERR [SYS/PERM] "),
        ] {
            let mut s = session();
            s.on_line(line("USER a"));
            s.on_line(line("PASS b"));
            s.on_auth(AuthOutcome::Allow {
                principal: "a".into(),
            });
            assert!(reply(s.on_maildrop("a".into(), Err(e))).starts_with(want));
            assert_eq!(s.phase(), Phase::Authorization);
        }
    }

    #[test]
    fn plaintext_refused_without_tls_unless_allowed() {
        let mut s = Session::new(config(), false, false, STAMP.into());
        assert!(reply(s.on_line(line("USER a"))).starts_with("-ERR [AUTH] Plaintext"));
        assert!(reply(s.on_line(line("AUTH PLAIN AGEAYg=="))).starts_with("-ERR [AUTH] Plaintext"));
        let caps = reply(s.on_line(line("CAPA")));
        assert!(!caps.contains("USER") && !caps.contains("SASL"));
        assert!(caps.contains("STLS"));
        s.on_line(line("STLS"));
        s.on_tls_started(None);
        assert_eq!(
            reply(s.on_line(line("USER a"))),
            "+OK Send your password\r\n"
        );
    }

    #[test]
    fn stls_unavailable_without_certificate() {
        let mut c = config();
        c.stls = false;
        let mut s = Session::new(c, false, true, STAMP.into());
        assert_eq!(
            reply(s.on_line(line("STLS"))),
            "-ERR STLS is not available on this port\r\n"
        );
        assert!(!reply(s.on_line(line("CAPA"))).contains("STLS"));
    }

    #[test]
    fn failed_logins_are_flagged_for_the_penalty() {
        let mut s = session();
        s.on_line(line("USER a"));
        s.on_line(line("PASS b"));
        assert!(!s.take_auth_failure());
        s.on_auth(AuthOutcome::Deny);
        assert!(s.take_auth_failure());
        assert!(!s.take_auth_failure(), "cleared once taken");
        s.on_line(line("APOP a 0123456789abcdef0123456789abcdef"));
        s.on_secret(SecretOutcome::Unavailable);
        assert!(s.take_auth_failure());
        let mut strict = Session::new(config(), false, false, STAMP.into());
        strict.on_line(line("USER a"));
        assert!(
            !strict.take_auth_failure(),
            "a refused plaintext USER is no failed login"
        );
    }

    #[test]
    fn login_mechanism_is_the_one_that_worked() {
        let allow = || AuthOutcome::Allow {
            principal: "mrose".into(),
        };
        assert_eq!(logged_in().login_mechanism(), Some("USER"));
        // A refused APOP, then AUTH plain (any case) that works.
        let mut s = session();
        assert_eq!(s.login_mechanism(), None);
        s.on_line(line("APOP mrose c4c9334bac560ecc979e58001b3e22fb"));
        s.on_secret(SecretOutcome::Unavailable);
        s.on_line(line("auth plain AG1yb3NlAHB3"));
        let Action::OpenMaildrop { principal } = s.on_auth(allow()) else {
            panic!()
        };
        assert_eq!(s.login_mechanism(), None, "not before the maildrop is open");
        s.on_maildrop(principal, Ok(entries()));
        assert_eq!(s.login_mechanism(), Some("PLAIN"));
        // APOP that works.
        let mut s = session();
        s.on_line(line("APOP mrose c4c9334bac560ecc979e58001b3e22fb"));
        s.on_secret(SecretOutcome::Found {
            secret: Secret::Plaintext("tanstaaf".into()),
            principal: "mrose".into(),
        });
        s.on_maildrop("mrose".into(), Ok(entries()));
        assert_eq!(s.login_mechanism(), Some("APOP"));
        // A maildrop that cannot be opened is no login.
        let mut s = session();
        s.on_line(line("USER mrose"));
        s.on_line(line("PASS pw"));
        s.on_auth(allow());
        s.on_maildrop("mrose".into(), Err(MaildropError::InUse));
        assert_eq!(s.login_mechanism(), None);
    }

    #[test]
    fn apop_digest_checked_by_host() {
        // RFC 1939 §7 example: secret "tanstaaf".
        let mut s = session();
        match s.on_line(line("APOP mrose C4C9334BAC560ECC979E58001B3E22FB")) {
            Action::LookupSecret { user, kind } => {
                assert_eq!((user.as_str(), kind), ("mrose", SecretKind::Plaintext))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.on_secret(SecretOutcome::Found {
                secret: Secret::Plaintext("tanstaaf".into()),
                principal: "mrose".into()
            }),
            Action::OpenMaildrop { .. }
        ));
        let mut s = session();
        s.on_line(line("APOP mrose c4c9334bac560ecc979e58001b3e22fb"));
        assert_eq!(
            reply(s.on_secret(SecretOutcome::Found {
                secret: Secret::Plaintext("wrong".into()),
                principal: "mrose".into()
            })),
            "-ERR [AUTH] Authentication failed\r\n"
        );
        let mut s = session();
        s.on_line(line("APOP mrose c4c9334bac560ecc979e58001b3e22fb"));
        assert_eq!(
            reply(s.on_secret(SecretOutcome::Unavailable)),
            "-ERR [AUTH] Authentication failed\r\n"
        );
    }
}
