//! Sessions and replies shared by the session's unit tests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::*;

pub(super) fn config() -> SessionConfig {
    SessionConfig {
        apop: true,
        stls: true,
        login_delay: None,
        expire: None,
        mechanisms: Mechanisms::default(),
        secret: [7; 32],
    }
}

pub(super) const STAMP: &str = "<1896.697170952@dbc.mtview.ca.us>";

pub(super) fn session() -> Session {
    Session::new(config(), false, true, STAMP.into())
}

pub(super) fn line(s: &str) -> Line {
    Line::Complete(s.as_bytes().to_vec())
}

pub(super) fn reply(a: Action) -> String {
    match a {
        Action::Reply(b) | Action::Close(b) | Action::Quit(b) | Action::StartTls(b) => {
            String::from_utf8(b).unwrap()
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

pub(super) fn entries() -> Vec<Entry> {
    (1..=3)
        .map(|i| Entry {
            key: format!("new/{i}"),
            size: 100 * i,
            stored_size: 98 * i,
            uid: format!("uid{i}"),
        })
        .collect()
}

/// A session logged in as `alice` with three messages.
pub(super) fn logged_in() -> Session {
    let mut s = session();
    assert_eq!(
        reply(s.on_line(line("USER alice"))),
        "+OK Send your password\r\n"
    );
    match s.on_line(line("PASS secret")) {
        Action::Verify(req) => {
            assert_eq!(req.user, "alice");
            assert_eq!(req.credential, "secret");
            assert_eq!(req.mechanism, "USER");
        }
        other => panic!("{other:?}"),
    }
    match s.on_auth(AuthOutcome::Allow {
        principal: "alice".into(),
    }) {
        Action::OpenMaildrop { principal } => assert_eq!(principal, "alice"),
        other => panic!("{other:?}"),
    }
    let r = reply(s.on_maildrop("alice".into(), Ok(entries())));
    assert_eq!(r, "+OK Logged in, 3 messages (600 octets)\r\n");
    s
}

pub(super) fn with_mechanisms(names: &[&str], tls: bool, cb: Option<Vec<u8>>) -> Session {
    let mut c = config();
    c.mechanisms = Mechanisms::none();
    for n in names {
        assert!(c.mechanisms.enable(n));
    }
    let mut s = Session::new(c, tls, false, STAMP.into());
    s.set_channel_binding(cb);
    s
}

pub(super) fn unb64_challenge(r: &str) -> String {
    let b = r.strip_prefix("+ ").unwrap().strip_suffix("\r\n").unwrap();
    String::from_utf8(B64.decode(b).unwrap()).unwrap()
}
