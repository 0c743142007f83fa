//! The human-readable text of POP3 replies, in the languages `LANG`
//! offers (RFC 6856 §3).
//!
//! Every text the server sends after `+OK` or `-ERR` is a [`Text`];
//! [`Text::render`] gives it in a [`Lang`]. Response codes (`[AUTH]`, …),
//! numbers and protocol data (CAPA lines, listings, UIDs) are never
//! translated. A client that has not switched to UTF-8 (RFC 6856 §2) gets
//! the text in ASCII ([`ascii`]), as RFC 2449's reply grammar asks.

use std::borrow::Cow;

use super::command::ParseError;

/// A language of the reply text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English, the server's default (`en`, and `i-default`, RFC 2277).
    #[default]
    En,
    /// German (`de`).
    De,
}

/// The languages `LANG` lists: tag and description, in the language
/// itself (RFC 6856 §3).
pub const LANGUAGES: [(&str, &str); 3] = [
    ("en", "English"),
    ("de", "Deutsch"),
    ("i-default", "Default language"),
];

/// The language a `LANG` range selects, and the tag the reply names, or
/// `None` if no language matches. Matching is RFC 4647 §3.4 lookup: the
/// range, without regard to case, is shortened one subtag at a time until
/// it names a language (`de-CH-1996` → `de-CH` → `de`). `*` and
/// `i-default` select the default language.
pub fn select(range: &str) -> Option<(Lang, &'static str)> {
    let range = range.to_ascii_lowercase();
    match range.as_str() {
        "*" => return Some((Lang::En, "en")),
        "i-default" => return Some((Lang::En, "i-default")),
        _ => {}
    }
    let mut candidate = range.as_str();
    loop {
        match candidate {
            "en" => return Some((Lang::En, "en")),
            "de" => return Some((Lang::De, "de")),
            _ => {}
        }
        let (shorter, _) = candidate.rsplit_once('-')?;
        // A single-character subtag (`x`, an extension) goes with the one
        // after it.
        candidate = match shorter.rsplit_once('-') {
            Some((rest, last)) if last.len() == 1 => rest,
            _ => shorter,
        };
    }
}

/// The text in ASCII, for a client that has not issued `UTF8`: German
/// letters spelled out (ä → ae, ß → ss), anything else outside ASCII as
/// `?` (no text here has any).
pub fn ascii(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'Ä' => out.push_str("Ae"),
            'Ö' => out.push_str("Oe"),
            'Ü' => out.push_str("Ue"),
            'ß' => out.push_str("ss"),
            c if c.is_ascii() => out.push(c),
            _ => out.push('?'),
        }
    }
    Cow::Owned(out)
}

/// Every human-readable text of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    SendPassword,
    GiveUserFirst,
    ApopDisabled,
    MechanismsFollow,
    CapabilitiesFollow,
    AlreadyTls,
    StlsUnavailable,
    BeginTls,
    NotBeforeLogin,
    PlaintextRefused,
    AuthFailed,
    /// A SCRAM exchange refused for a protocol reason (the detail is the
    /// protocol's own words, left in English).
    AuthFailedBecause(String),
    AuthTempFail,
    UnsupportedMechanism,
    PlusNeedsInitialResponse,
    Cancelled,
    InvalidBase64,
    MalformedUser,
    MalformedPlain,
    MalformedOAuth,
    ExpectedEmpty,
    /// SASLprep (RFC 4013) refused a user name or password.
    Unprepared,
    LoggedIn {
        messages: usize,
        octets: u64,
    },
    InUse,
    LoginDelay,
    MailboxTemp,
    MailboxPerm,
    SigningOff,
    CommitFailed,
    Listing {
        messages: usize,
        octets: u64,
    },
    UidlFollows,
    Octets(u64),
    TopFollows,
    Deleted(u32),
    StillHere,
    StlsAfterLogin,
    AlreadyLoggedIn,
    NoSuchMessage,
    AlreadyDeleted,
    LineTooLong,
    TooManyLongLines,
    Parse(ParseError),
    Utf8Enabled,
    Utf8AfterLogin,
    LanguageChanged,
    LanguagesFollow,
    NoSuchLanguage,
    Autologout,
    ShuttingDown,
    MessageRemoved,
    CannotRead,
    /// The maildrop lease was lost (another node may hold it).
    LeaseLost,
}

impl Text {
    /// The text in `lang` (UTF-8; see [`ascii`]).
    pub fn render(&self, lang: Lang) -> Cow<'static, str> {
        match lang {
            Lang::En => self.en(),
            Lang::De => self.de(),
        }
    }

    fn en(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Text::SendPassword => "Send your password",
            Text::GiveUserFirst => "Give USER first",
            Text::ApopDisabled => "APOP is not enabled",
            Text::MechanismsFollow => "Supported mechanisms follow",
            Text::CapabilitiesFollow => "Capability list follows",
            Text::AlreadyTls => "Already using TLS",
            Text::StlsUnavailable => "STLS is not available on this port",
            Text::BeginTls => "Begin TLS negotiation",
            Text::NotBeforeLogin => "Command not valid before login",
            Text::PlaintextRefused => {
                "Plaintext authentication disallowed on non-secure connections; use STLS first"
            }
            Text::AuthFailed => "Authentication failed",
            Text::AuthFailedBecause(why) => {
                return Cow::Owned(format!("Authentication failed: {why}"));
            }
            Text::AuthTempFail => "Authentication is temporarily unavailable, try again later",
            Text::UnsupportedMechanism => "Unsupported authentication mechanism",
            Text::PlusNeedsInitialResponse => {
                "SCRAM-SHA-256-PLUS needs the client-first message with AUTH \
                 (an initial response); use another mechanism"
            }
            Text::Cancelled => "Authentication cancelled",
            Text::InvalidBase64 => "Invalid base64 in authentication response",
            Text::MalformedUser => "Malformed user name",
            Text::MalformedPlain => "Malformed PLAIN response",
            Text::MalformedOAuth => "Malformed OAuth response",
            Text::ExpectedEmpty => "Expected an empty response",
            Text::Unprepared => "User name or password has characters SASLprep does not allow",
            Text::LoggedIn { messages, octets } => {
                return Cow::Owned(format!("Logged in, {messages} messages ({octets} octets)"));
            }
            Text::InUse => "Mailbox is locked by another POP3 session",
            Text::LoginDelay => "Logged in too recently, try again later",
            Text::MailboxTemp => "Mailbox is temporarily unavailable, try again later",
            Text::MailboxPerm => "Mailbox cannot be opened",
            Text::SigningOff => "Poplar signing off",
            Text::CommitFailed => {
                "Some deleted messages could not be removed; they remain in the mailbox"
            }
            Text::Listing { messages, octets } => {
                return Cow::Owned(format!("{messages} messages ({octets} octets)"));
            }
            Text::UidlFollows => "Unique-ID listing follows",
            Text::Octets(n) => return Cow::Owned(format!("{n} octets")),
            Text::TopFollows => "Top of message follows",
            Text::Deleted(n) => return Cow::Owned(format!("Message {n} deleted")),
            Text::StillHere => "Still here",
            Text::StlsAfterLogin => "STLS is only valid before login",
            Text::AlreadyLoggedIn => "Already logged in",
            Text::NoSuchMessage => "No such message",
            Text::AlreadyDeleted => "Message already deleted",
            Text::LineTooLong => "Line too long",
            Text::TooManyLongLines => "Too many over-long lines, closing connection",
            Text::Parse(e) => match e {
                ParseError::Empty => "Empty command",
                ParseError::Unknown => "Unknown command",
                ParseError::MissingArgument => "Missing argument",
                ParseError::ExtraArgument => "Too many arguments",
                ParseError::NotANumber => "Invalid number: expected digits only",
                ParseError::Zero => "Invalid message number: numbering starts at 1",
                ParseError::Overflow => "Invalid number: too large",
                ParseError::BadByte => "Invalid character in command",
                ParseError::ArgumentTooLong => "Argument too long",
            },
            Text::Utf8Enabled => "UTF-8 mode on",
            Text::Utf8AfterLogin => "UTF8 is only valid before login",
            Text::LanguageChanged => "Language changed",
            Text::LanguagesFollow => "Language listing follows",
            Text::NoSuchLanguage => "No such language; LANG alone lists them",
            Text::Autologout => "Autologout: idle for too long",
            Text::ShuttingDown => "Server shutting down",
            Text::MessageRemoved => "Message was removed by another client",
            Text::CannotRead => "Cannot read message, try again later",
            Text::LeaseLost => {
                "Lost the hold on the maildrop; nothing was deleted, please log in again"
            }
        })
    }

    fn de(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Text::SendPassword => "Bitte das Passwort senden",
            Text::GiveUserFirst => "Zuerst USER senden",
            Text::ApopDisabled => "APOP ist nicht eingeschaltet",
            Text::MechanismsFollow => "Unterstützte Verfahren folgen",
            Text::CapabilitiesFollow => "Liste der Fähigkeiten folgt",
            Text::AlreadyTls => "TLS ist schon aktiv",
            Text::StlsUnavailable => "STLS gibt es auf diesem Port nicht",
            Text::BeginTls => "TLS-Aushandlung beginnen",
            Text::NotBeforeLogin => "Befehl erst nach der Anmeldung erlaubt",
            Text::PlaintextRefused => {
                "Klartext-Anmeldung über ungeschützte Verbindungen abgelehnt; zuerst STLS"
            }
            Text::AuthFailed => "Anmeldung fehlgeschlagen",
            Text::AuthFailedBecause(why) => {
                return Cow::Owned(format!("Anmeldung fehlgeschlagen: {why}"));
            }
            Text::AuthTempFail => "Anmeldung zur Zeit nicht möglich, später erneut versuchen",
            Text::UnsupportedMechanism => "Anmeldeverfahren nicht unterstützt",
            Text::PlusNeedsInitialResponse => {
                "SCRAM-SHA-256-PLUS braucht die client-first-Nachricht gleich mit AUTH \
                 (initial response); bitte ein anderes Verfahren wählen"
            }
            Text::Cancelled => "Anmeldung abgebrochen",
            Text::InvalidBase64 => "Ungültiges Base64 in der Antwort",
            Text::MalformedUser => "Ungültiger Benutzername",
            Text::MalformedPlain => "Ungültige PLAIN-Antwort",
            Text::MalformedOAuth => "Ungültige OAuth-Antwort",
            Text::ExpectedEmpty => "Leere Antwort erwartet",
            Text::Unprepared => {
                "Benutzername oder Passwort enthält Zeichen, die SASLprep nicht erlaubt"
            }
            Text::LoggedIn { messages, octets } => {
                return Cow::Owned(format!(
                    "Angemeldet, {messages} Nachrichten ({octets} Oktette)"
                ));
            }
            Text::InUse => "Postfach ist von einer anderen POP3-Sitzung gesperrt",
            Text::LoginDelay => "Letzte Anmeldung ist zu kurz her, später erneut versuchen",
            Text::MailboxTemp => "Postfach zur Zeit nicht erreichbar, später erneut versuchen",
            Text::MailboxPerm => "Postfach kann nicht geöffnet werden",
            Text::SigningOff => "Poplar verabschiedet sich",
            Text::CommitFailed => {
                "Einige gelöschte Nachrichten konnten nicht entfernt werden; sie bleiben im Postfach"
            }
            Text::Listing { messages, octets } => {
                return Cow::Owned(format!("{messages} Nachrichten ({octets} Oktette)"));
            }
            Text::UidlFollows => "Liste der eindeutigen IDs folgt",
            Text::Octets(n) => return Cow::Owned(format!("{n} Oktette")),
            Text::TopFollows => "Anfang der Nachricht folgt",
            Text::Deleted(n) => return Cow::Owned(format!("Nachricht {n} gelöscht")),
            Text::StillHere => "Noch da",
            Text::StlsAfterLogin => "STLS ist nur vor der Anmeldung erlaubt",
            Text::AlreadyLoggedIn => "Bereits angemeldet",
            Text::NoSuchMessage => "Keine solche Nachricht",
            Text::AlreadyDeleted => "Nachricht bereits gelöscht",
            Text::LineTooLong => "Zeile zu lang",
            Text::TooManyLongLines => "Zu viele überlange Zeilen, Verbindung wird beendet",
            Text::Parse(e) => match e {
                ParseError::Empty => "Leerer Befehl",
                ParseError::Unknown => "Unbekannter Befehl",
                ParseError::MissingArgument => "Argument fehlt",
                ParseError::ExtraArgument => "Zu viele Argumente",
                ParseError::NotANumber => "Ungültige Zahl: nur Ziffern erlaubt",
                ParseError::Zero => "Ungültige Nachrichtennummer: die Zählung beginnt bei 1",
                ParseError::Overflow => "Ungültige Zahl: zu groß",
                ParseError::BadByte => "Ungültiges Zeichen im Befehl",
                ParseError::ArgumentTooLong => "Argument zu lang",
            },
            Text::Utf8Enabled => "UTF-8-Modus an",
            Text::Utf8AfterLogin => "UTF8 ist nur vor der Anmeldung erlaubt",
            Text::LanguageChanged => "Sprache gewechselt",
            Text::LanguagesFollow => "Liste der Sprachen folgt",
            Text::NoSuchLanguage => "Diese Sprache gibt es nicht; LANG allein listet alle",
            Text::Autologout => "Automatische Abmeldung: zu lange untätig",
            Text::ShuttingDown => "Server fährt herunter",
            Text::MessageRemoved => "Nachricht wurde von einem anderen Client entfernt",
            Text::CannotRead => "Nachricht kann nicht gelesen werden, später erneut versuchen",
            Text::LeaseLost => {
                "Zugriff auf das Postfach verloren; nichts wurde gelöscht, bitte neu anmelden"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_shortens_the_range() {
        assert_eq!(select("de"), Some((Lang::De, "de")));
        assert_eq!(select("DE-ch"), Some((Lang::De, "de")));
        assert_eq!(select("de-CH-1996"), Some((Lang::De, "de")));
        assert_eq!(select("en-Latn-US-x-private"), Some((Lang::En, "en")));
        assert_eq!(select("de-x-foo"), Some((Lang::De, "de")));
        assert_eq!(select("*"), Some((Lang::En, "en")));
        assert_eq!(select("i-default"), Some((Lang::En, "i-default")));
        assert_eq!(select("I-DEFAULT"), Some((Lang::En, "i-default")));
        for no in ["fr", "d", "deu", "x-de", "", "-", "en_US"] {
            assert_eq!(select(no), None, "{no:?}");
        }
    }

    #[test]
    fn ascii_spells_out_german_letters() {
        assert_eq!(ascii("Liste der Fähigkeiten"), "Liste der Faehigkeiten");
        assert_eq!(ascii("Größe ÄÖÜ"), "Groesse AeOeUe");
        assert_eq!(ascii("plain"), "plain");
        assert!(matches!(ascii("plain"), Cow::Borrowed(_)));
    }

    /// Every German text, spelt out in ASCII, is printable ASCII, and no
    /// text of either language is empty or has a line break.
    #[test]
    fn every_text_is_one_printable_line() {
        let mut texts = vec![
            Text::AuthFailedBecause("why".into()),
            Text::LoggedIn {
                messages: 1,
                octets: 2,
            },
            Text::Listing {
                messages: 1,
                octets: 2,
            },
            Text::Octets(3),
            Text::Deleted(4),
        ];
        texts.extend(
            [
                ParseError::Empty,
                ParseError::Unknown,
                ParseError::MissingArgument,
                ParseError::ExtraArgument,
                ParseError::NotANumber,
                ParseError::Zero,
                ParseError::Overflow,
                ParseError::BadByte,
                ParseError::ArgumentTooLong,
            ]
            .map(Text::Parse),
        );
        texts.extend([
            Text::SendPassword,
            Text::GiveUserFirst,
            Text::ApopDisabled,
            Text::MechanismsFollow,
            Text::CapabilitiesFollow,
            Text::AlreadyTls,
            Text::StlsUnavailable,
            Text::BeginTls,
            Text::NotBeforeLogin,
            Text::PlaintextRefused,
            Text::AuthFailed,
            Text::AuthTempFail,
            Text::UnsupportedMechanism,
            Text::PlusNeedsInitialResponse,
            Text::Cancelled,
            Text::InvalidBase64,
            Text::MalformedUser,
            Text::MalformedPlain,
            Text::MalformedOAuth,
            Text::ExpectedEmpty,
            Text::Unprepared,
            Text::InUse,
            Text::LoginDelay,
            Text::MailboxTemp,
            Text::MailboxPerm,
            Text::SigningOff,
            Text::CommitFailed,
            Text::UidlFollows,
            Text::TopFollows,
            Text::StillHere,
            Text::StlsAfterLogin,
            Text::AlreadyLoggedIn,
            Text::NoSuchMessage,
            Text::AlreadyDeleted,
            Text::LineTooLong,
            Text::TooManyLongLines,
            Text::Utf8Enabled,
            Text::Utf8AfterLogin,
            Text::LanguageChanged,
            Text::LanguagesFollow,
            Text::NoSuchLanguage,
            Text::Autologout,
            Text::ShuttingDown,
            Text::MessageRemoved,
            Text::CannotRead,
            Text::LeaseLost,
        ]);
        for t in &texts {
            assert!(t.render(Lang::En).is_ascii(), "{t:?}");
            for lang in [Lang::En, Lang::De] {
                let s = t.render(lang);
                assert!(!s.is_empty() && !s.contains(['\r', '\n']), "{t:?}");
                assert!(
                    ascii(&s).bytes().all(|b| (0x20..0x7f).contains(&b)),
                    "{t:?} {lang:?}: {s}"
                );
            }
            assert_ne!(t.render(Lang::En), t.render(Lang::De), "{t:?} untranslated");
        }
    }
}
