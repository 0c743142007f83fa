//! mutt and neomutt as Debian builds them (GNU SASL, GnuTLS), driven under a
//! pseudo-terminal (`script`): `<fetch-mail>` copies the POP3 mailbox into
//! a local Maildir, over plain POP3 (loopback), STLS and implicit TLS, with
//! the default SASL mechanisms and with every password mechanism on.
//!
//! How they log in: GNU SASL picks the strongest mechanism the server
//! lists, the client tries that one SASL mechanism, then APOP (if the
//! greeting has a timestamp), then USER/PASS. They pick SCRAM-SHA-256-PLUS
//! whenever it is offered (TLS 1.3) but hand GNU SASL no `tls-exporter`
//! value, so that exchange cannot start: they answer the server's empty
//! challenge with `*` and never read the `-ERR` RFC 5034 answers it with.
//! Every later answer was then read one command late: their APOP read that
//! `-ERR` while the server logged them in with the APOP, their USER read
//! the APOP's `+OK`, their PASS got `-ERR Already logged in`.
//!
//! The server therefore refuses `AUTH SCRAM-SHA-256-PLUS` without an
//! initial response at once, before any challenge: they never send `*`,
//! and their next mechanism is answered in step. Each cell names the
//! mechanism the server must have logged the user in with, checks the
//! client's own transcript of the login (its debug log) line by line, and
//! compares the fetched messages byte for byte:
//!
//! | mechanisms offered, user | plain | STLS | implicit TLS |
//! | --- | --- | --- | --- |
//! | default (PLAIN, LOGIN), alice | PLAIN | PLAIN | PLAIN |
//! | every, alice (clear-text secret) | SCRAM-SHA-256 | APOP | APOP |
//! | every, bob (SHA512-CRYPT hash) | USER | USER | USER |
//!
//! bob's hash can do neither SCRAM nor APOP: over plain POP3 his SCRAM
//! exchange fails, APOP fails, USER/PASS works; over TLS -PLUS is refused
//! at once, APOP fails, USER/PASS works. Every refusal is read as the
//! answer to the command it answers.

use std::path::PathBuf;
use std::process::Command;

use crate::clients::{
    Offered, Transport, alice_server, assert_delivered, assert_logged_in_with, files_in, path_str,
    require, run, to_lf, write_private,
};
use crate::harness::TestServer;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Program {
    Mutt,
    Neomutt,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Mutt => "mutt",
            Program::Neomutt => "neomutt",
        }
    }
}

/// One client's home: its rc file, debug log and the Maildir it fetches
/// into.
struct Mua {
    program: Program,
    home: tempfile::TempDir,
    spool: PathBuf,
}

impl Mua {
    fn new(program: Program) -> Mua {
        require(program.name(), program.name());
        require("script", "bsdutils");
        let home = tempfile::tempdir().unwrap();
        let spool = home.path().join("spool");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(spool.join(sub)).unwrap();
        }
        Mua {
            program,
            home,
            spool,
        }
    }

    /// Runs `<fetch-mail>` once for `user` (leaving the mail on the
    /// server) and returns the client's transcript of the session.
    fn fetch(&self, s: &TestServer, transport: Transport, user: &str, password: &str) -> String {
        let (scheme, tls) = match transport {
            Transport::Plain => ("pop", "no"),
            Transport::Stls => ("pop", "yes"),
            Transport::Implicit => ("pops", "yes"),
        };
        let home = path_str(self.home.path());
        let cert = s.cert_path();
        let rc = format!(
            r#"set pop_host="{scheme}://{user}@127.0.0.1:{port}"
set pop_pass="{password}"
set pop_delete=no
set pop_last=no
set ssl_ca_certificates_file="{cert}"
set ssl_force_tls={tls}
set ssl_starttls={tls}
set folder="{home}"
set spoolfile="{spool}"
set mbox_type=Maildir
set move=no
set record=""
set postponed=""
set wait_key=no
"#,
            port = transport.port(s),
            cert = path_str(&cert),
            spool = path_str(&self.spool),
        );
        let rc_path = self.home.path().join("muttrc");
        write_private(&rc_path, &rc);
        // Level 5 is where neomutt logs every protocol line; mutt does at 3
        // (and shows no password below 4).
        let (level, log) = match self.program {
            Program::Mutt => ("3", self.home.path().join(".muttdebug0")),
            Program::Neomutt => ("5", self.home.path().join("debug")),
        };
        let log_arg = match self.program {
            Program::Mutt => String::new(),
            Program::Neomutt => format!("-l {} ", path_str(&log)),
        };
        let command = format!(
            "{} -n -F {} -d {level} {log_arg}-e 'push <fetch-mail><quit>'",
            self.program.name(),
            path_str(&rc_path),
        );
        let r = run(
            self.program.name(),
            Command::new("script")
                .args(["--quiet", "--return", "--command", &command, "/dev/null"])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", self.home.path())
                .env("TERM", "xterm")
                .env("LC_ALL", "C"),
            b"",
        );
        r.assert_success();
        // neomutt numbers its log file (`debug0`).
        let log = [log.clone(), PathBuf::from(format!("{}0", log.display()))]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no debug log from {}\n{}", self.program.name(), r.output()));
        String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned()
    }

    /// The messages fetched into the local Maildir (quitting moves them
    /// from new/ to cur/).
    fn delivered(&self) -> Vec<(String, Vec<u8>)> {
        assert!(files_in(&self.spool.join("tmp")).is_empty());
        let mut all = files_in(&self.spool.join("new"));
        all.extend(files_in(&self.spool.join("cur")));
        all
    }
}

/// The protocol lines of a mutt/neomutt debug log, as `> line` (sent) and
/// `< line` (received), from the first login command to the first answer
/// that logs in. PASS is left out: mutt logs it only at a debug level that
/// shows the password, neomutt as `PASS *`.
fn login_transcript(log: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for l in log.lines() {
        // "… 4> CAPA", "… 4< +OK …": the socket's number, then the arrow.
        let Some((at, arrow)) = l.char_indices().find_map(|(i, c)| {
            let (before, after) = l.split_at(i);
            ((c == '>' || c == '<')
                && after[1..].starts_with(' ')
                && before.ends_with(|d: char| d.is_ascii_digit())
                && before
                    .trim_end_matches(|d: char| d.is_ascii_digit())
                    .ends_with(' '))
            .then_some((i, c))
        }) else {
            continue;
        };
        let line = format!("{arrow} {}", &l[at + 2..]);
        if !line.starts_with("> PASS ") {
            lines.push(line);
        }
    }
    let start = lines
        .iter()
        .position(|l| {
            ["> AUTH ", "> APOP ", "> USER "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .unwrap_or_else(|| panic!("no login in the client's log:\n{log}"));
    let end = lines[start..]
        .iter()
        .position(|l| l.starts_with("< +OK Logged in"))
        .unwrap_or_else(|| panic!("the client never logged in:\n{}", lines.join("\n")));
    lines[start..=start + end].to_vec()
}

/// Each line of `got` starts with the line of `want` beside it.
fn assert_transcript(what: &str, got: &[String], want: &[&str]) {
    let matches = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| g.starts_with(w));
    assert!(
        matches,
        "{what}: the login went\n{}\nbut should go\n{}",
        got.join("\n"),
        want.join("\n")
    );
}

/// alice fetches her whole mailbox; `login` is the transcript the login
/// must have (line prefixes), `expect` the mechanism the server saw.
fn fetches_whole_mailbox(
    program: Program,
    transport: Transport,
    offered: Offered,
    login: &[&str],
    expect: &str,
) {
    let (s, msgs) = alice_server(offered.options());
    let m = Mua::new(program);
    let log = m.fetch(&s, transport, "alice", "alice-pw");
    let what = format!("{} over {transport:?} with {offered:?}", program.name());
    assert_transcript(&what, &login_transcript(&log), login);
    // fetch-mail stores each message with CRLF turned into LF.
    let want: Vec<Vec<u8>> = msgs.iter().map(|m| to_lf(&m.wire())).collect();
    assert_delivered(&what, m.delivered(), &want);
    assert_logged_in_with(&s, "alice", expect);
    // `pop_delete=no`: nothing deleted.
    assert_eq!(
        crate::clients::uids_in(&s.maildir("alice")),
        crate::clients::uids_except(&msgs, &[])
    );
}

/// bob (a hash the server cannot do SCRAM or APOP with) logs in with every
/// mechanism offered; his mailbox is empty.
fn bob_falls_back_to_user(program: Program, transport: Transport, login: &[&str]) {
    let s = TestServer::start_with(Offered::Every.options());
    let m = Mua::new(program);
    let log = m.fetch(&s, transport, "bob", "bob-pw");
    let what = format!("{} as bob over {transport:?}", program.name());
    assert_transcript(&what, &login_transcript(&log), login);
    assert!(m.delivered().is_empty());
    assert_logged_in_with(&s, "bob", "USER");
}

/// The login with the default mechanisms: GNU SASL prefers PLAIN.
const PLAIN_LOGIN: &[&str] = &["> AUTH PLAIN", "< + ", "> ", "< +OK Logged in"];

/// Over plain POP3 with every mechanism on: SCRAM-SHA-256 (no -PLUS
/// without TLS), client-first, server-first, client-final, server-final,
/// the empty response.
const SCRAM_LOGIN: &[&str] = &[
    "> AUTH SCRAM-SHA-256",
    "< + ",
    "> ",
    "< + ",
    "> ",
    "< + ",
    "> ",
    "< +OK Logged in",
];

/// Over TLS with every mechanism on: -PLUS refused before any challenge,
/// then APOP, each answer read as the answer to its own command.
const PLUS_REFUSED_THEN_APOP: &[&str] = &[
    "> AUTH SCRAM-SHA-256-PLUS",
    "< -ERR SCRAM-SHA-256-PLUS needs the client-first message with AUTH",
    "> APOP alice ",
    "< +OK Logged in",
];

/// bob over plain POP3: his SCRAM proof cannot match (the server has only
/// a hash), APOP is refused, USER/PASS works.
const BOB_PLAIN: &[&str] = &[
    "> AUTH SCRAM-SHA-256",
    "< + ",
    "> ",
    "< + ",
    "> ",
    "< -ERR [AUTH] Authentication failed",
    "> APOP bob ",
    "< -ERR [AUTH] Authentication failed",
    "> USER bob",
    "< +OK Send your password",
    "< +OK Logged in",
];

/// bob over TLS: -PLUS refused at once, APOP refused, USER/PASS works.
const BOB_TLS: &[&str] = &[
    "> AUTH SCRAM-SHA-256-PLUS",
    "< -ERR SCRAM-SHA-256-PLUS needs the client-first message with AUTH",
    "> APOP bob ",
    "< -ERR [AUTH] Authentication failed",
    "> USER bob",
    "< +OK Send your password",
    "< +OK Logged in",
];

macro_rules! cells {
    ($($name:ident: $program:expr, $transport:expr, $offered:expr, $login:expr, $mech:expr;)*) => {
        $(
            #[test]
            fn $name() {
                fetches_whole_mailbox($program, $transport, $offered, $login, $mech);
            }
        )*
    };
}

cells! {
    mutt_plain: Program::Mutt, Transport::Plain, Offered::Default, PLAIN_LOGIN, "PLAIN";
    mutt_stls: Program::Mutt, Transport::Stls, Offered::Default, PLAIN_LOGIN, "PLAIN";
    mutt_implicit_tls: Program::Mutt, Transport::Implicit, Offered::Default, PLAIN_LOGIN, "PLAIN";
    mutt_plain_every_mechanism: Program::Mutt, Transport::Plain, Offered::Every, SCRAM_LOGIN, "SCRAM-SHA-256";
    mutt_stls_every_mechanism: Program::Mutt, Transport::Stls, Offered::Every, PLUS_REFUSED_THEN_APOP, "APOP";
    mutt_implicit_tls_every_mechanism: Program::Mutt, Transport::Implicit, Offered::Every, PLUS_REFUSED_THEN_APOP, "APOP";
    neomutt_plain: Program::Neomutt, Transport::Plain, Offered::Default, PLAIN_LOGIN, "PLAIN";
    neomutt_stls: Program::Neomutt, Transport::Stls, Offered::Default, PLAIN_LOGIN, "PLAIN";
    neomutt_implicit_tls: Program::Neomutt, Transport::Implicit, Offered::Default, PLAIN_LOGIN, "PLAIN";
    neomutt_plain_every_mechanism: Program::Neomutt, Transport::Plain, Offered::Every, SCRAM_LOGIN, "SCRAM-SHA-256";
    neomutt_stls_every_mechanism: Program::Neomutt, Transport::Stls, Offered::Every, PLUS_REFUSED_THEN_APOP, "APOP";
    neomutt_implicit_tls_every_mechanism: Program::Neomutt, Transport::Implicit, Offered::Every, PLUS_REFUSED_THEN_APOP, "APOP";
}

#[test]
fn mutt_bob_falls_back_to_user() {
    bob_falls_back_to_user(Program::Mutt, Transport::Plain, BOB_PLAIN);
    bob_falls_back_to_user(Program::Mutt, Transport::Stls, BOB_TLS);
    bob_falls_back_to_user(Program::Mutt, Transport::Implicit, BOB_TLS);
}

#[test]
fn neomutt_bob_falls_back_to_user() {
    bob_falls_back_to_user(Program::Neomutt, Transport::Plain, BOB_PLAIN);
    bob_falls_back_to_user(Program::Neomutt, Transport::Stls, BOB_TLS);
    bob_falls_back_to_user(Program::Neomutt, Transport::Implicit, BOB_TLS);
}
