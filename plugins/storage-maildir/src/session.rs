//! What a POP3 session (or an operator command that changes mail) does
//! with a mailbox: `open` it under a lease, keep the lease alive, `commit`
//! its UPDATE state fenced by the lease, and give the lease back; and what
//! operators do with leases (`leases`, `break-leases`). The lease files
//! themselves are [`crate::lease`].

use crate::error::{Error, Result};
use crate::lease::{self, Holder, Lease, Token};
use crate::login;
use crate::maildir::{CommitReport, Config, DeleAction, Entry, Maildir};

/// Asking for a maildrop (the WIT `open-request`).
#[derive(Debug, Clone)]
pub struct OpenRequest {
    pub holder: Holder,
    pub ttl_seconds: u32,
    pub login_delay: Option<u32>,
}

/// A mailbox opened for a session (the WIT `opened`).
#[derive(Debug, Clone)]
pub struct Opened {
    pub lease: String,
    pub entries: Vec<Entry>,
    pub last_login: Option<i64>,
}

/// Why `open` refused (the WIT `open-error`).
#[derive(Debug, Clone, PartialEq)]
pub enum OpenError {
    InUse(Holder),
    TooSoon(u32),
    Failed(Error),
}

impl From<Error> for OpenError {
    fn from(e: Error) -> Self {
        OpenError::Failed(e)
    }
}

/// One lease, as `leases` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseInfo {
    pub user: String,
    pub folder: Option<String>,
    pub lease: Lease,
}

/// The UPDATE state of one session (the WIT `commit-request`).
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub lease: String,
    pub delete: Vec<String>,
    pub action: DeleAction,
    pub retrieved: Vec<String>,
}

impl Config {
    /// Opens `user`'s mailbox (`folder`, or the inbox) for a session: checks
    /// `LOGIN-DELAY` against the user's last login, takes the lease, lists
    /// the mailbox (messages flagged deleted left out) and records this
    /// login. An open without a client address (`holder.peer` empty: an
    /// operator command such as `poplar mailbox expunge`) is not a login and
    /// is not recorded, so it does not delay the user's next one. A refused
    /// open changes nothing.
    pub fn open_session(
        &self,
        user: &str,
        folder: Option<&str>,
        request: &OpenRequest,
        now: i64,
    ) -> std::result::Result<Opened, OpenError> {
        let maildir = self.open(user, folder)?;
        let user_dir = self.user_dir(user)?;
        let last_login = login::last_login(&user_dir)?;
        if let Some(wait) = login::wait_left(last_login, request.login_delay, now) {
            return Err(OpenError::TooSoon(wait));
        }
        let lease = Lease::new(request.holder.clone(), now, request.ttl_seconds);
        if let Err(holder) = lease::take(maildir.dir(), &lease, now)? {
            (self.log)(&format!(
                "{} is in use by node {:?} session {:?}",
                maildir.name(),
                holder.node,
                holder.session
            ));
            return Err(OpenError::InUse(holder));
        }
        let is_login = !request.holder.peer.is_empty();
        let listed = maildir.list().and_then(|entries| {
            if is_login {
                login::record_login(&user_dir, now)?;
            }
            Ok(entries)
        });
        match listed {
            Ok(entries) => Ok(Opened {
                lease: Token::format(&lease.id, user, folder),
                entries,
                last_login,
            }),
            Err(e) => {
                let _ = lease::release(maildir.dir(), &lease.id, now);
                Err(OpenError::Failed(e))
            }
        }
    }

    /// The Maildir a lease token names, and the lease id; `None` for a
    /// token that is not one of ours or names an invalid mailbox.
    fn leased(&self, token: &str) -> Option<(Maildir, String)> {
        let t = Token::parse(token)?;
        let maildir = self.open(t.user, t.folder).ok()?;
        Some((maildir, t.id.to_string()))
    }

    /// Extends every lease of `tokens` that `holder` still holds to
    /// `now + ttl`; returns the ones that are lost. One that cannot be
    /// renewed because of an I/O error is reported lost too (its session
    /// must not go on believing it holds the mailbox).
    pub fn renew(&self, holder: &Holder, tokens: &[String], ttl: u32, now: i64) -> Vec<String> {
        let mut lost = Vec::new();
        for token in tokens {
            let kept = match self.leased(token) {
                Some((maildir, id)) => match lease::renew(maildir.dir(), &id, holder, ttl, now) {
                    Ok(kept) => kept,
                    Err(e) => {
                        (self.log)(&format!("cannot renew {token}: {}", e.message()));
                        false
                    }
                },
                None => false,
            };
            if !kept {
                lost.push(token.clone());
            }
        }
        lost
    }

    /// Gives a lease back; one no longer held (or not ours) is no error.
    pub fn release(&self, token: &str, now: i64) -> Result<()> {
        match self.leased(token) {
            Some((maildir, id)) => lease::release(maildir.dir(), &id, now),
            None => Ok(()),
        }
    }

    /// The leases held at `now`, of `user` (inbox and folders) or of every
    /// user.
    pub fn leases(&self, user: Option<&str>, now: i64) -> Result<Vec<LeaseInfo>> {
        let users = match user {
            Some(user) => vec![user.to_string()],
            None => self.users(None, u32::MAX)?,
        };
        let mut out = Vec::new();
        for user in users {
            for maildir in self.maildirs(&user)? {
                if let Some(lease) = lease::current(maildir.dir(), now)? {
                    out.push(LeaseInfo {
                        user: user.clone(),
                        folder: maildir.folder().map(str::to_string),
                        lease,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Ends every lease of `user`; returns how many held.
    pub fn break_leases(&self, user: &str, now: i64) -> Result<u32> {
        let mut broken = 0;
        for maildir in self.maildirs(user)? {
            if lease::break_lease(maildir.dir(), now)? {
                (self.log)(&format!("broke the lease on {}", maildir.name()));
                broken += 1;
            }
        }
        Ok(broken)
    }

    /// The UPDATE state of a session on `user`'s mailbox: see
    /// [`Maildir::commit`]; fenced by the request's lease, which must be
    /// held on this very mailbox.
    pub fn commit(
        &self,
        user: &str,
        folder: Option<&str>,
        request: &CommitRequest,
        now: i64,
    ) -> Result<CommitReport> {
        let maildir = self.open(user, folder)?;
        let target = match &request.action {
            DeleAction::MoveTo(to) => Some(self.open(user, Some(to))?),
            _ => None,
        };
        let fence = || {
            let token = Token::parse(&request.lease);
            match token {
                Some(t) if t.user == user && t.folder == folder => {
                    lease::check(maildir.dir(), t.id, now)
                }
                _ => Err(Error::LeaseLost(format!(
                    "the lease token {:?} is not one for {}",
                    request.lease,
                    maildir.name()
                ))),
            }
        };
        maildir.commit(
            &request.delete,
            &request.action,
            target.as_ref(),
            &request.retrieved,
            now,
            fence,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    const NOW: i64 = 1_800_000_000;

    fn config(root: &Path) -> Config {
        Config::from_pairs([("root", root.to_str().unwrap())]).unwrap()
    }

    fn holder(node: &str, incarnation: &str) -> Holder {
        Holder {
            node: node.into(),
            incarnation: incarnation.into(),
            session: "s1".into(),
            peer: "192.0.2.1:4000".into(),
        }
    }

    fn request(node: &str, delay: Option<u32>) -> OpenRequest {
        OpenRequest {
            holder: holder(node, "i1"),
            ttl_seconds: 60,
            login_delay: delay,
        }
    }

    fn put(root: &Path, rel: &str, data: &[u8]) {
        let path = root.join("alice").join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    #[test]
    fn open_lists_under_a_lease_and_records_the_login() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        put(tmp.path(), "cur/1.a:2,S", b"a\n");
        put(tmp.path(), "cur/2.a:2,ST", b"hidden\n");
        let opened = c
            .open_session("alice", None, &request("n1", None), NOW)
            .unwrap();
        assert_eq!(opened.entries.len(), 1);
        assert_eq!(opened.last_login, None);
        assert!(opened.lease.ends_with(":alice"), "{}", opened.lease);
        // Held: a second session is refused, and learns by whom.
        let err = c
            .open_session("alice", None, &request("n2", None), NOW + 1)
            .unwrap_err();
        assert_eq!(err, OpenError::InUse(holder("n1", "i1")));
        // A folder of the same user has its own lease.
        c.open_session("alice", Some("Junk"), &request("n2", None), NOW + 1)
            .unwrap();
        assert_eq!(c.leases(Some("alice"), NOW + 1).unwrap().len(), 2);
        assert_eq!(c.leases(None, NOW + 1).unwrap().len(), 2);
        c.release(&opened.lease, NOW + 2).unwrap();
        let again = c
            .open_session("alice", None, &request("n2", None), NOW + 3)
            .unwrap();
        // The folder's open was a login too.
        assert_eq!(again.last_login, Some(NOW + 1));
        c.release(&again.lease, NOW + 3).unwrap();
        // An operator's open (no client address) is not a login.
        let mut operator = request("n1", Some(300));
        operator.holder.peer.clear();
        let op = c.open_session("alice", None, &operator, NOW + 400).unwrap();
        c.release(&op.lease, NOW + 400).unwrap();
        let next = c
            .open_session("alice", None, &request("n1", Some(300)), NOW + 401)
            .unwrap();
        assert_eq!(next.last_login, Some(NOW + 3));
    }

    #[test]
    fn login_delay_across_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let first = c
            .open_session("alice", None, &request("n1", Some(300)), NOW)
            .unwrap();
        c.release(&first.lease, NOW).unwrap();
        let err = c
            .open_session("alice", None, &request("n1", Some(300)), NOW + 100)
            .unwrap_err();
        assert_eq!(err, OpenError::TooSoon(200));
        // The refused login was not recorded: the wait runs from the first.
        let err = c
            .open_session("alice", Some("Junk"), &request("n2", Some(300)), NOW + 299)
            .unwrap_err();
        assert_eq!(err, OpenError::TooSoon(1));
        // No lease was left behind by the refusals.
        assert!(c.leases(None, NOW + 299).unwrap().is_empty());
        let ok = c
            .open_session("alice", None, &request("n1", Some(300)), NOW + 300)
            .unwrap();
        assert_eq!(ok.last_login, Some(NOW));
    }

    #[test]
    fn renew_reports_lost_leases_in_one_call() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let h = holder("n1", "i1");
        let mut tokens = Vec::new();
        for user in ["a", "b", "c"] {
            tokens.push(
                c.open_session(user, None, &request("n1", None), NOW)
                    .unwrap()
                    .lease,
            );
        }
        tokens.push("nonsense".into());
        tokens.push("ab:../etc".into());
        // b's lease is broken by an operator.
        assert_eq!(c.break_leases("b", NOW + 10).unwrap(), 1);
        let lost = c.renew(&h, &tokens, 60, NOW + 30);
        assert_eq!(
            lost,
            [tokens[1].clone(), tokens[3].clone(), tokens[4].clone()]
        );
        // a and c now last until NOW + 90.
        let leases = c.leases(None, NOW + 89).unwrap();
        let users: Vec<&str> = leases.iter().map(|l| l.user.as_str()).collect();
        assert_eq!(users, ["a", "c"]);
        assert!(c.leases(None, NOW + 90).unwrap().is_empty());
    }

    #[test]
    fn commit_is_fenced_by_the_lease() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        put(tmp.path(), "cur/1.a:2,S", b"a\n");
        put(tmp.path(), "cur/2.a:2,S", b"b\n");
        let opened = c
            .open_session("alice", None, &request("n1", None), NOW)
            .unwrap();
        let req = |lease: &str| CommitRequest {
            lease: lease.to_string(),
            delete: vec!["cur/1.a:2,S".into()],
            action: DeleAction::Expunge,
            retrieved: vec![],
        };
        // The lease expired and another node took over: nothing happens.
        let late = NOW + 60 + lease::BREAK_GRACE;
        let other = c
            .open_session("alice", None, &request("n2", None), late)
            .unwrap();
        let err = c
            .commit("alice", None, &req(&opened.lease), late)
            .unwrap_err();
        assert!(matches!(err, Error::LeaseLost(_)), "{err:?}");
        assert_eq!(c.open("alice", None).unwrap().list().unwrap().len(), 2);
        // A token for another mailbox does not fence this one.
        let err = c.commit("bob", None, &req(&other.lease), late).unwrap_err();
        assert!(matches!(err, Error::LeaseLost(_)), "{err:?}");
        // The holder commits.
        let report = c.commit("alice", None, &req(&other.lease), late).unwrap();
        assert_eq!(report.deleted, 1);
        // Broken by an operator: lost again.
        c.break_leases("alice", late).unwrap();
        let err = c
            .commit("alice", None, &req(&other.lease), late)
            .unwrap_err();
        assert!(matches!(err, Error::LeaseLost(_)), "{err:?}");
    }

    #[test]
    fn crash_takeover_and_expiry_across_nodes() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let boot1 = OpenRequest {
            holder: holder("n1", "boot-1"),
            ttl_seconds: 600,
            login_delay: None,
        };
        c.open_session("alice", None, &boot1, NOW).unwrap();
        // n1 crashed and restarted: its login right after is not refused.
        let boot2 = OpenRequest {
            holder: holder("n1", "boot-2"),
            ..boot1.clone()
        };
        let taken = c.open_session("alice", None, &boot2, NOW + 1).unwrap();
        // Node n2 must wait for the expiry of n1's lease.
        let n2 = request("n2", None);
        assert!(matches!(
            c.open_session("alice", None, &n2, NOW + 600),
            Err(OpenError::InUse(_))
        ));
        c.open_session("alice", None, &n2, NOW + 601 + lease::BREAK_GRACE)
            .unwrap();
        assert_eq!(
            c.renew(
                &boot2.holder,
                std::slice::from_ref(&taken.lease),
                60,
                NOW + 700
            ),
            [taken.lease]
        );
    }

    /// Two nodes (threads) log the same user in over and over: never do
    /// both hold the mailbox at once, and every commit of a holder works.
    #[test]
    fn two_nodes_race_for_a_mailbox() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        put(tmp.path(), "cur/1.a:2,S", b"a\n");
        let holding = std::sync::atomic::AtomicU32::new(0);
        let opened_total = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for node in ["n1", "n2"] {
                let (c, holding, opened_total) = (&c, &holding, &opened_total);
                s.spawn(move || {
                    for _ in 0..150 {
                        let now = crate::files::now();
                        match c.open_session("alice", None, &request(node, None), now) {
                            Ok(opened) => {
                                use std::sync::atomic::Ordering::SeqCst;
                                assert_eq!(holding.fetch_add(1, SeqCst), 0, "both hold it");
                                opened_total.fetch_add(1, SeqCst);
                                let req = CommitRequest {
                                    lease: opened.lease.clone(),
                                    delete: vec![],
                                    action: DeleAction::Expunge,
                                    retrieved: vec!["cur/1.a:2,S".into()],
                                };
                                c.commit("alice", None, &req, now).unwrap();
                                holding.fetch_sub(1, SeqCst);
                                c.release(&opened.lease, now).unwrap();
                            }
                            Err(OpenError::InUse(_)) => std::thread::yield_now(),
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                });
            }
        });
        assert!(opened_total.load(std::sync::atomic::Ordering::SeqCst) > 0);
        assert!(c.leases(None, crate::files::now()).unwrap().is_empty());
    }
}
