//! CAPA (RFC 2449): what this connection offers, which changes with the
//! state, TLS, the plaintext policy and the channel binding.

use super::super::lang::Text;
use super::{Phase, Session};

impl Session {
    pub(super) fn capa(&self) -> Vec<u8> {
        let mut caps: Vec<String> = vec!["TOP".into(), "UIDL".into()];
        let authorization = self.phase() == Phase::Authorization;
        let user = authorization && self.plaintext_allowed();
        if user {
            caps.push("USER".into());
        }
        let mechanisms = self.offered_mechanisms();
        if authorization && !mechanisms.is_empty() {
            caps.push(format!("SASL {}", mechanisms.join(" ")));
        }
        caps.extend(["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"].map(String::from));
        if authorization && self.config.stls && !self.tls {
            caps.push("STLS".into());
        }
        if let Some(d) = self.config.login_delay {
            caps.push(format!("LOGIN-DELAY {d}"));
        }
        if let Some(e) = &self.config.expire {
            caps.push(format!("EXPIRE {e}"));
        }
        // RFC 6856: UTF-8 mode, UTF-8 names and passwords in USER/PASS
        // (where USER is on offer), and reply languages.
        caps.push(if user { "UTF8 USER" } else { "UTF8" }.into());
        caps.push("LANG".into());
        caps.push(format!(
            "IMPLEMENTATION Poplar-{}",
            env!("CARGO_PKG_VERSION")
        ));
        self.multi_text(Text::CapabilitiesFollow, caps)
    }

    /// The SASL mechanisms this connection offers now.
    pub(super) fn offered_mechanisms(&self) -> Vec<&'static str> {
        let m = self.config.mechanisms;
        let clear = self.plaintext_allowed();
        let plus = self.channel_binding.is_some();
        [
            ("PLAIN", m.plain && clear),
            ("LOGIN", m.login && clear),
            ("SCRAM-SHA-256", m.scram_sha256),
            ("SCRAM-SHA-256-PLUS", m.scram_sha256_plus && plus),
            ("OAUTHBEARER", m.oauthbearer && clear),
            ("XOAUTH2", m.xoauth2 && clear),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;

    #[test]
    fn capa_before_and_after_login_and_tls() {
        let mut s = session();
        let before = reply(s.on_line(line("CAPA")));
        assert!(before.starts_with("+OK"));
        for cap in [
            "\r\nTOP\r\n",
            "\r\nUIDL\r\n",
            "\r\nUSER\r\n",
            "\r\nSASL PLAIN LOGIN\r\n",
            "\r\nRESP-CODES\r\n",
            "\r\nAUTH-RESP-CODE\r\n",
            "\r\nPIPELINING\r\n",
            "\r\nSTLS\r\n",
            "\r\nUTF8 USER\r\n",
            "\r\nLANG\r\n",
            "\r\nIMPLEMENTATION Poplar-",
        ] {
            assert!(before.contains(cap), "{cap:?} in {before}");
        }
        assert!(before.ends_with("\r\n.\r\n"));
        assert!(matches!(s.on_line(line("STLS")), Action::StartTls(_)));
        s.on_tls_started(None);
        let in_tls = reply(s.on_line(line("CAPA")));
        assert!(!in_tls.contains("STLS"));
        assert!(in_tls.contains("\r\nUSER\r\n"));
        assert_eq!(reply(s.on_line(line("STLS"))), "-ERR Already using TLS\r\n");
        let mut s = logged_in();
        let after = reply(s.on_line(line("CAPA")));
        assert!(!after.contains("STLS") && !after.contains("\r\nUSER") && !after.contains("SASL"));
        assert!(after.contains("\r\nUTF8\r\n") && after.contains("\r\nLANG\r\n"));
        assert!(after.contains("\r\nTOP\r\n"));
    }

    #[test]
    fn capa_shows_login_delay_and_expire() {
        let mut c = config();
        c.login_delay = Some(900);
        c.expire = Some("NEVER".into());
        let mut s = Session::new(c, false, true, STAMP.into());
        let caps = reply(s.on_line(line("CAPA")));
        assert!(caps.contains("\r\nLOGIN-DELAY 900\r\n"));
        assert!(caps.contains("\r\nEXPIRE NEVER\r\n"));
    }

    #[test]
    fn capa_lists_enabled_mechanisms_by_policy() {
        let mut s = with_mechanisms(&Mechanisms::ALL, false, None);
        let caps = reply(s.on_line(line("CAPA")));
        assert!(caps.contains("\r\nSASL SCRAM-SHA-256\r\n"), "{caps}");
        let mut s = with_mechanisms(&Mechanisms::ALL, true, Some(vec![1; 32]));
        let caps = reply(s.on_line(line("CAPA")));
        assert!(
            caps.contains(
                "\r\nSASL PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS OAUTHBEARER XOAUTH2\r\n"
            ),
            "{caps}"
        );
        // TLS without an exporter value (TLS 1.2): no -PLUS.
        let mut s = with_mechanisms(&["SCRAM-SHA-256-PLUS", "PLAIN"], true, None);
        assert!(reply(s.on_line(line("CAPA"))).contains("\r\nSASL PLAIN\r\n"));
        assert_eq!(
            reply(s.on_line(line("AUTH SCRAM-SHA-256-PLUS"))),
            "-ERR Unsupported authentication mechanism\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("AUTH"))),
            "+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n"
        );
        // Token mechanisms follow the plaintext policy.
        let mut s = with_mechanisms(&["OAUTHBEARER"], false, None);
        assert!(reply(s.on_line(line("AUTH OAUTHBEARER"))).starts_with("-ERR [AUTH] Plaintext"));
        let mut s = with_mechanisms(&["PLAIN"], true, None);
        assert_eq!(
            reply(s.on_line(line("AUTH SCRAM-SHA-256"))),
            "-ERR Unsupported authentication mechanism\r\n"
        );
    }
}
