//! RFC 6856: the `UTF8` command (UTF-8 mode), the `LANG` command (the
//! language of reply text), and the normalisation of UTF-8 user names and
//! passwords before they reach the auth plugin: Net-Unicode (RFC 5198,
//! NFC) for USER/PASS and APOP, SASLprep (RFC 4013) for SASL mechanisms.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use super::super::lang::{self, LANGUAGES, Text};
use super::super::reply::ok;
use super::{Phase, Session};

impl Session {
    /// `UTF8` (RFC 6856 §2): valid before login only. Later messages go
    /// out with their UTF-8 header fields as stored, and reply text may be
    /// UTF-8.
    pub(super) fn utf8_command(&mut self) -> Vec<u8> {
        if self.phase() != Phase::Authorization {
            return self.err_text(Text::Utf8AfterLogin);
        }
        self.utf8 = true;
        self.ok_text(Text::Utf8Enabled)
    }

    /// `LANG` (RFC 6856 §3): alone, the languages on offer; with a language
    /// range, switch the reply text to the language it selects. The answer
    /// names the tag selected, then says so in that language.
    pub(super) fn lang_command(&mut self, range: Option<String>) -> Vec<u8> {
        let Some(range) = range else {
            let lines = LANGUAGES.map(|(tag, name)| format!("{tag} {name}"));
            return self.multi_text(Text::LanguagesFollow, lines);
        };
        match lang::select(&range) {
            Some((chosen, tag)) => {
                self.lang = chosen;
                ok(&format!("{tag} {}", self.say(Text::LanguageChanged)))
            }
            None => self.err_text(Text::NoSuchLanguage),
        }
    }
}

/// A USER/PASS or APOP user name or password in Net-Unicode form (RFC
/// 5198: NFC; control characters never get this far, the parser refuses
/// them), so that `é` typed as one code point or as `e` and a combining
/// accent is the same name.
pub(super) fn net_unicode(s: &str) -> Cow<'_, str> {
    if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.nfc().collect())
    }
}

/// A SASL user name or password prepared with SASLprep (RFC 4013, as a
/// query: unassigned code points allowed), as RFC 4616 (PLAIN) and RFC
/// 5802 (SCRAM) ask; `None` if it has a character SASLprep prohibits.
pub(super) fn saslprep(s: &str) -> Option<Cow<'_, str>> {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Some(Cow::Borrowed(s));
    }
    stringprep::saslprep(s).ok()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::*;

    #[test]
    fn net_unicode_composes() {
        // "é" as e + U+0301 becomes U+00E9.
        assert_eq!(net_unicode("Jose\u{301}"), "Jos\u{e9}");
        assert_eq!(net_unicode("Jos\u{e9}"), "Jos\u{e9}");
        assert!(matches!(net_unicode("alice"), Cow::Borrowed(_)));
        // NFC keeps compatibility characters (unlike SASLprep's NFKC).
        assert_eq!(net_unicode("\u{fb01}"), "\u{fb01}");
    }

    #[test]
    fn saslprep_maps_and_refuses() {
        // RFC 4013 §3 examples: soft hyphen removed, NBSP mapped to space,
        // ligature and Roman numeral folded by NFKC, ASCII control refused.
        assert_eq!(saslprep("I\u{ad}X").as_deref(), Some("IX"));
        assert_eq!(saslprep("user").as_deref(), Some("user"));
        assert_eq!(saslprep("USER").as_deref(), Some("USER"));
        assert_eq!(saslprep("\u{aa}").as_deref(), Some("a"));
        assert_eq!(saslprep("\u{2168}").as_deref(), Some("IX"));
        assert_eq!(saslprep("a\u{a0}b").as_deref(), Some("a b"));
        assert_eq!(saslprep("\u{7}"), None);
        // A bidi string that starts with RTL and ends with LTR.
        assert_eq!(saslprep("\u{627}1"), None);
    }

    #[test]
    fn user_pass_and_apop_names_are_net_unicode() {
        let mut s = session();
        // "Jörg" typed with a combining diaeresis; a password likewise.
        s.on_line(line("USER Jo\u{308}rg"));
        match s.on_line(line("PASS gru\u{308}n")) {
            Action::Verify(r) => {
                assert_eq!(r.user, "J\u{f6}rg");
                assert_eq!(r.credential, "gr\u{fc}n");
            }
            other => panic!("{other:?}"),
        }
        // APOP: the digest of the password in NFC matches a secret stored
        // decomposed.
        let mut s = session();
        let digest = {
            use md5::{Digest, Md5};
            let mut h = Md5::new();
            h.update(STAMP.as_bytes());
            h.update("gr\u{fc}n".as_bytes());
            hex::encode(h.finalize())
        };
        match s.on_line(line(&format!("APOP Jo\u{308}rg {digest}"))) {
            Action::LookupSecret { user, .. } => assert_eq!(user, "J\u{f6}rg"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.on_secret(SecretOutcome::Found {
                secret: Secret::Plaintext("gru\u{308}n".into()),
                principal: "j".into(),
            }),
            Action::OpenMaildrop { .. }
        ));
    }

    #[test]
    fn utf8_before_login_only_and_reset_by_stls() {
        let mut s = session();
        assert!(!s.utf8());
        assert_eq!(reply(s.on_line(line("UTF8"))), "+OK UTF-8 mode on\r\n");
        assert!(s.utf8());
        assert_eq!(reply(s.on_line(line("utf8"))), "+OK UTF-8 mode on\r\n");
        s.on_line(line("STLS"));
        s.on_tls_started(None);
        assert!(!s.utf8(), "what was said before TLS does not count after");
        let mut s = logged_in();
        assert_eq!(
            reply(s.on_line(line("UTF8"))),
            "-ERR UTF8 is only valid before login\r\n"
        );
        assert!(!s.utf8());
    }

    #[test]
    fn lang_lists_selects_and_localises() {
        let mut s = session();
        assert_eq!(
            reply(s.on_line(line("LANG"))),
            "+OK Language listing follows\r\nen English\r\nde Deutsch\r\n\
             i-default Default language\r\n.\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("LANG de-AT"))),
            "+OK de Sprache gewechselt\r\n"
        );
        // German without UTF8: the umlaut spelt out in ASCII.
        assert_eq!(
            reply(s.on_line(line("RETR 1"))),
            "-ERR Befehl erst nach der Anmeldung erlaubt\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH"))),
            "+OK Unterstuetzte Verfahren folgen\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("LANG fr"))),
            "-ERR Diese Sprache gibt es nicht; LANG allein listet alle\r\n"
        );
        // After UTF8, the real letters.
        s.on_line(line("UTF8"));
        assert_eq!(
            reply(s.on_line(line("AUTH"))),
            "+OK Unterstützte Verfahren folgen\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("LANG i-default"))),
            "+OK i-default Language changed\r\n"
        );
        s.on_line(line("LANG de"));
        assert_eq!(
            reply(s.on_line(line("LANG *"))),
            "+OK en Language changed\r\n"
        );
        // LANG is valid after login too; numbers and codes stay as they are.
        let mut s = logged_in();
        s.on_line(line("LANG de"));
        assert_eq!(
            reply(s.on_line(line("LIST"))),
            "+OK 3 Nachrichten (600 Oktette)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n"
        );
        assert_eq!(reply(s.on_line(line("STAT"))), "+OK 3 600\r\n");
        assert_eq!(
            reply(s.on_line(line("RETR 9"))),
            "-ERR Keine solche Nachricht\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("RETR 0"))),
            "-ERR Ungueltige Nachrichtennummer: die Zaehlung beginnt bei 1\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("QUIT"))),
            "+OK Poplar verabschiedet sich\r\n"
        );
    }

    #[test]
    fn error_replies_for_the_network_layer_follow_the_language() {
        let mut s = logged_in();
        assert_eq!(
            s.error_reply(Some(Code::SysTemp), Text::ShuttingDown),
            b"-ERR [SYS/TEMP] Server shutting down\r\n"
        );
        s.on_line(line("LANG de"));
        assert_eq!(
            s.error_reply(None, Text::Autologout),
            "-ERR Automatische Abmeldung: zu lange untaetig\r\n".as_bytes()
        );
        assert_eq!(s.retr_head(42), b"+OK 42 Oktette\r\n");
    }
}
