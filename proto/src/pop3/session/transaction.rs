//! The TRANSACTION state (RFC 1939 §5) and the way out through UPDATE
//! (§6): the maildrop listing, the commands on it, and the deletions QUIT
//! commits.

use super::super::command::Command;
use super::super::encode::MessageEncoder;
use super::super::lang::Text;
use super::super::reply::{Code, ok};
use super::{Action, Session, State, StorageFailure};

/// One message of the maildrop as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Storage key, passed back to the storage plugin.
    pub key: String,
    /// Size in octets as POP3 reports it (CRLF line endings).
    pub size: u64,
    /// Size as stored (what storage read offsets count).
    pub stored_size: u64,
    /// Unique-id for UIDL.
    pub uid: String,
}

/// Counters for the logout summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub retr: u32,
    pub retr_bytes: u64,
    pub top: u32,
    pub dele: u32,
    pub deleted_bytes: u64,
}

#[derive(Debug)]
pub(super) struct Maildrop {
    pub(super) principal: String,
    pub(super) entries: Vec<Entry>,
    pub(super) deleted: Vec<bool>,
}

impl Maildrop {
    fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    pub(super) fn totals(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, octets), (_, e)| (n + 1, octets + e.size))
    }

    /// Looks up a message number the client gave.
    fn get(&self, msg: u32) -> Result<(usize, &Entry), Text> {
        let i = (msg as usize).wrapping_sub(1);
        match self.entries.get(i) {
            None => Err(Text::NoSuchMessage),
            Some(_) if self.deleted[i] => Err(Text::AlreadyDeleted),
            Some(e) => Ok((i, e)),
        }
    }
}

impl Session {
    pub(super) fn quit(&mut self) -> Action {
        match std::mem::replace(&mut self.state, State::Update) {
            State::Transaction(drop) => {
                let keys: Vec<String> = drop
                    .entries
                    .iter()
                    .zip(&drop.deleted)
                    .filter(|(_, d)| **d)
                    .map(|(e, _)| e.key.clone())
                    .collect();
                if keys.is_empty() {
                    Action::Quit(self.ok_text(Text::SigningOff))
                } else {
                    Action::Commit {
                        principal: drop.principal,
                        keys,
                    }
                }
            }
            _ => Action::Quit(self.ok_text(Text::SigningOff)),
        }
    }

    /// The result of [`Action::Commit`]; the reply is the last one.
    pub fn on_commit(&mut self, result: Result<(), StorageFailure>) -> Vec<u8> {
        match result {
            Ok(()) => self.ok_text(Text::SigningOff),
            Err(StorageFailure::Temporary) => self.err_code_text(Code::SysTemp, Text::CommitFailed),
            Err(StorageFailure::Permanent) => self.err_code_text(Code::SysPerm, Text::CommitFailed),
        }
    }

    pub(super) fn transaction(&mut self, cmd: Command) -> Action {
        let voice = self.voice();
        // RFC 6856: a client that has not switched to UTF-8 mode gets
        // internationalized headers downgraded (RFC 6857).
        let utf8 = self.utf8;
        let encoder = |e: MessageEncoder| if utf8 { e } else { e.downgrading() };
        let State::Transaction(drop) = &mut self.state else {
            unreachable!("transaction() is only called in TRANSACTION")
        };
        let reply = match cmd {
            Command::Stat => {
                let (n, octets) = drop.totals();
                ok(&format!("{n} {octets}"))
            }
            Command::List(None) => {
                let (messages, octets) = drop.totals();
                let lines = drop.live().map(|(i, e)| format!("{} {}", i + 1, e.size));
                voice.multi(Text::Listing { messages, octets }, lines)
            }
            Command::List(Some(msg)) => match drop.get(msg) {
                Ok((_, e)) => ok(&format!("{msg} {}", e.size)),
                Err(t) => voice.err(t),
            },
            Command::Uidl(None) => {
                let lines = drop.live().map(|(i, e)| format!("{} {}", i + 1, e.uid));
                voice.multi(Text::UidlFollows, lines)
            }
            Command::Uidl(Some(msg)) => match drop.get(msg) {
                Ok((_, e)) => ok(&format!("{msg} {}", e.uid)),
                Err(t) => voice.err(t),
            },
            Command::Retr(msg) => match drop.get(msg) {
                Ok((_, e)) => {
                    self.stats.retr += 1;
                    self.stats.retr_bytes += e.size;
                    return Action::SendMessage {
                        head: voice.ok(Text::Octets(e.size)),
                        octets: Some(e.size),
                        key: e.key.clone(),
                        stored_size: e.stored_size,
                        encoder: encoder(MessageEncoder::whole()),
                    };
                }
                Err(t) => voice.err(t),
            },
            Command::Top { msg, lines } => match drop.get(msg) {
                Ok((_, e)) => {
                    self.stats.top += 1;
                    return Action::SendMessage {
                        head: voice.ok(Text::TopFollows),
                        octets: None,
                        key: e.key.clone(),
                        stored_size: e.stored_size,
                        encoder: encoder(MessageEncoder::top(lines)),
                    };
                }
                Err(t) => voice.err(t),
            },
            Command::Dele(msg) => match drop.get(msg) {
                Ok((i, e)) => {
                    self.stats.dele += 1;
                    self.stats.deleted_bytes += e.size;
                    drop.deleted[i] = true;
                    voice.ok(Text::Deleted(msg))
                }
                Err(t) => voice.err(t),
            },
            Command::Rset => {
                drop.deleted.iter_mut().for_each(|d| *d = false);
                self.stats.dele = 0;
                self.stats.deleted_bytes = 0;
                let (messages, octets) = drop.totals();
                voice.ok(Text::Listing { messages, octets })
            }
            Command::Noop => voice.ok(Text::StillHere),
            Command::Stls => voice.err(Text::StlsAfterLogin),
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. } => {
                voice.err(Text::AlreadyLoggedIn)
            }
            Command::Capa | Command::Quit | Command::Lang(_) | Command::Utf8 => {
                unreachable!("handled for every state")
            }
        };
        Action::Reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use crate::pop3::command::ParseError;

    #[test]
    fn stat_list_uidl() {
        let mut s = logged_in();
        assert_eq!(reply(s.on_line(line("STAT"))), "+OK 3 600\r\n");
        assert_eq!(
            reply(s.on_line(line("LIST"))),
            "+OK 3 messages (600 octets)\r\n1 100\r\n2 200\r\n3 300\r\n.\r\n"
        );
        assert_eq!(reply(s.on_line(line("LIST 2"))), "+OK 2 200\r\n");
        assert_eq!(reply(s.on_line(line("LIST 4"))), "-ERR No such message\r\n");
        assert_eq!(
            reply(s.on_line(line("UIDL"))),
            "+OK Unique-ID listing follows\r\n1 uid1\r\n2 uid2\r\n3 uid3\r\n.\r\n"
        );
        assert_eq!(reply(s.on_line(line("UIDL 3"))), "+OK 3 uid3\r\n");
        assert_eq!(
            reply(s.on_line(line("UIDL 0"))),
            format!("-ERR {}\r\n", ParseError::Zero)
        );
        assert_eq!(reply(s.on_line(line("NOOP"))), "+OK Still here\r\n");
    }

    #[test]
    fn dele_hides_message_until_rset() {
        let mut s = logged_in();
        assert_eq!(
            reply(s.on_line(line("DELE 2"))),
            "+OK Message 2 deleted\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("DELE 2"))),
            "-ERR Message already deleted\r\n"
        );
        assert_eq!(reply(s.on_line(line("STAT"))), "+OK 2 400\r\n");
        assert_eq!(
            reply(s.on_line(line("LIST"))),
            "+OK 2 messages (400 octets)\r\n1 100\r\n3 300\r\n.\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("UIDL"))),
            "+OK Unique-ID listing follows\r\n1 uid1\r\n3 uid3\r\n.\r\n"
        );
        for c in ["LIST 2", "UIDL 2", "RETR 2", "TOP 2 0"] {
            assert_eq!(
                reply(s.on_line(line(c))),
                "-ERR Message already deleted\r\n",
                "{c}"
            );
        }
        assert_eq!(
            reply(s.on_line(line("RSET"))),
            "+OK 3 messages (600 octets)\r\n"
        );
        assert_eq!(reply(s.on_line(line("STAT"))), "+OK 3 600\r\n");
        assert!(matches!(
            s.on_line(line("RETR 2")),
            Action::SendMessage { .. }
        ));
    }

    #[test]
    fn quit_commits_only_deleted_messages() {
        let mut s = logged_in();
        s.on_line(line("DELE 1"));
        s.on_line(line("DELE 3"));
        match s.on_line(line("QUIT")) {
            Action::Commit { principal, keys } => {
                assert_eq!(principal, "alice");
                assert_eq!(keys, vec!["new/1".to_string(), "new/3".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.on_commit(Ok(())), b"+OK Poplar signing off\r\n");
        let mut s = logged_in();
        assert_eq!(reply(s.on_line(line("QUIT"))), "+OK Poplar signing off\r\n");
        let mut s = logged_in();
        s.on_line(line("DELE 1"));
        assert!(matches!(s.on_line(line("QUIT")), Action::Commit { .. }));
        assert!(
            String::from_utf8(s.on_commit(Err(StorageFailure::Temporary)))
                .unwrap()
                .starts_with("-ERR [SYS/TEMP]")
        );
    }

    #[test]
    fn retr_and_top_stream_the_right_message() {
        let mut s = logged_in();
        match s.on_line(line("RETR 2")) {
            Action::SendMessage {
                head,
                key,
                stored_size,
                ..
            } => {
                assert_eq!(head, b"+OK 200 octets\r\n");
                assert_eq!(key, "new/2");
                assert_eq!(stored_size, 196);
            }
            other => panic!("{other:?}"),
        }
        match s.on_line(line("TOP 3 5")) {
            Action::SendMessage { head, key, .. } => {
                assert_eq!(head, b"+OK Top of message follows\r\n");
                assert_eq!(key, "new/3");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(reply(s.on_line(line("RETR 9"))), "-ERR No such message\r\n");
        assert_eq!(
            reply(s.on_line(line("RETR 4294967295"))),
            "-ERR No such message\r\n"
        );
        assert_eq!(s.stats().retr, 1);
        assert_eq!(s.stats().top, 1);
    }

    #[test]
    fn commands_after_login_that_belong_before() {
        let mut s = logged_in();
        assert_eq!(
            reply(s.on_line(line("USER x"))),
            "-ERR Already logged in\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("PASS x"))),
            "-ERR Already logged in\r\n"
        );
        assert_eq!(
            reply(s.on_line(line("STLS"))),
            "-ERR STLS is only valid before login\r\n"
        );
    }
}
