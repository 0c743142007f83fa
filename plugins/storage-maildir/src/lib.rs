//! Maildir++ storage for Poplar, as a WebAssembly component (world
//! `storage-plugin`). Copy it to start your own storage plugin: the Maildir
//! logic lives in plain `std::fs` modules, tested natively; this file only
//! reads the configuration, calls them and maps types and errors.
//!
//! | module | what it holds |
//! |---|---|
//! | [`maildir`] | the configuration, a mailbox: listing, reading, the UPDATE state's changes, usage, users, folders |
//! | [`session`] | what a POP3 session does: `open` (login delay, lease, listing, login time), renew, release, fenced `commit` |
//! | [`lease`] | the lease file and its rules (taking, takeover, expiry, fencing) |
//! | [`deliver`] | batched, idempotent, quota-checked delivery with group commit |
//! | [`lock`] | the per-user lock that makes the quota check and the store one step |
//! | [`maintain`] | `poplar storage migrate / gc / check` |
//! | [`search`] | `search` by header, body, date, size, retrieval time |
//! | [`names`], [`uidl`], [`dovecot`] | Maildir names, UIDLs, Dovecot's uidlist |
//! | [`login`], [`retrieved`], [`files`], [`error`] | small files and helpers |
//!
//! # Configuration (`[<plugin>.config]`)
//!
//! - `root` (default `"/mail"`): the guest path where the host preopened the
//!   mail root (read-write). Nothing else of the filesystem is visible.
//! - `uidl` (default `"poplar"`): how UIDLs are made.
//!   - `"poplar"`: the Maildir base name (the file name up to `:`, so flag
//!     changes and moves from `new/` to `cur/` keep it). A base name that is
//!     not a valid UIDL (1–70 characters in 0x21..0x7E) is replaced by `h`
//!     and the 64-bit FNV-1a hash of the base name in 16 lower-case hex
//!     digits.
//!   - `"dovecot"`: for migrations from Dovecot, so that clients that leave
//!     mail on the server do not download it again. UIDLs come from the
//!     Maildir's `dovecot-uidlist` (versions 1, 2 and 3): a record's `P`
//!     field if it has one (an empty `P` means the base name), else
//!     `uidl_format` expanded. Messages are listed in Dovecot's POP3 order
//!     (`O` field, then UID). Messages missing from the uidlist (or with an
//!     invalid UIDL there) get the `poplar` UIDL and come last.
//!     The uidlist is only read, never written: mail delivered or deleted by
//!     Poplar leaves it as Dovecot left it. Lines that cannot be parsed are
//!     skipped (logged at debug level with the first bad line's number); a
//!     UIDL that repeats an earlier message's (a `P` field can) is replaced
//!     by the message's `poplar` UIDL. The uidlist is looked for in the
//!     Maildir itself: a Dovecot `mail_location` with `CONTROL=` elsewhere
//!     must have its `dovecot-uidlist` files copied into the Maildirs.
//!     Sizes are computed as for `poplar` (Dovecot's uidlist `W` is not
//!     used), so they equal Dovecot's LIST sizes except for a message whose
//!     last line has no line ending: Poplar counts the CRLF that both
//!     servers send after it, Dovecot does not.
//! - `uidl_format` (default `"%08Xu%08Xv"`, Dovecot's default): Dovecot 2.x
//!   `pop3_uidl_format` syntax with `%u` (UID), `%v` (UIDVALIDITY), `%f`
//!   (base file name), `%g` (the `G` field, else the base name, as Dovecot),
//!   `%%`; a width (`%08u` pads with zeros, `%8u` cuts) and `X`/`x` for hex,
//!   printed in lower case like Dovecot does. Other variables (`%m`) are a
//!   configuration error. Dovecot 2.4's `%{uid | hex(8)}` syntax is not
//!   accepted; write its 2.x equivalent.
//!
//! Unknown keys are an error, so that a typo does not go unnoticed.
//!
//! # Behaviour
//!
//! - Layout: a user's inbox is `<root>/<user>/{cur,new,tmp}`, folder `F` is
//!   `<root>/<user>/.F/`. User and folder names must be 1–255 bytes without
//!   `/` or NUL, not `.` or `..`; folders must not start with `.`. A mailbox
//!   that does not exist is empty. The plugin's own files start with
//!   `poplar` (`poplar-lease`, `poplar-login`, `poplar-ids/`, …), so no
//!   Maildir reader takes them for mail.
//! - Listing: regular, non-dot files of `new/` and `cur/`, oldest first (by
//!   the timestamp that starts a Maildir name, then by name), leaving out
//!   messages flagged deleted (`T`). Keys are `new/<file>` or `cur/<file>`.
//!   The size is the size with CRLF line endings (plus 2 when the last line
//!   has none), taken from the name's `,W=<n>` field when present, else
//!   computed by reading the file. `received` is the name's timestamp, else
//!   the file's modification time. A UIDL kept by a migration (or a repair)
//!   in `poplar-uidlist` wins over the `uidl` mode's.
//! - Leases (`open`, `renew`, `release`, `leases`, `break-leases`): a lock
//!   file `poplar-lease` in the mailbox's Maildir, created with `O_EXCL`,
//!   recording holder node, incarnation, session, peer, since and expiry;
//!   see [`lease`] for takeover (a restarted node takes its old leases at
//!   once, another node's only after expiry) and fencing. `open` also
//!   enforces `login-delay` against `<root>/<user>/poplar-login` (the last
//!   login of any of the user's mailboxes) and records the login there,
//!   unless the holder has no client address (`peer` empty: an operator
//!   command, which is no login).
//! - Read and commit find a message that another client moved (`new/` to
//!   `cur/`) or re-flagged by its base name. Commit checks every key, then
//!   the lease, before changing anything, counts messages already gone as
//!   missing, and records the first retrieval time of retrieved messages in
//!   `poplar-retrieved`. DELE's action: `expunge` removes the file, `flag`
//!   adds `T` to its info part (moving it to `cur/`), `move-to` renames it
//!   into the folder (created if needed), keeping its name and UIDL.
//! - Delivery: see [`deliver`]: each message written to `tmp/` and synced,
//!   renamed to `new/<unique>,S=<octets>,W=<crlf octets>` under the user's
//!   lock after the quota check and its delivery-id marker, one directory
//!   fsync per directory per batch; idempotent by delivery id, also across
//!   crashes. A migration's `uid` and `received` are kept. A folder is
//!   created on first delivery, with Maildir++'s `maildirfolder` marker.
//! - Usage (quotas): the messages of the inbox and of every folder
//!   directory (flagged-deleted ones too: they take space), and their
//!   stored sizes: from the `,S=` field, else a stat. No message is read.
//! - Search reads the messages in place, in chunks: header fields decoded
//!   (folding, RFC 2047), body text raw and, for messages up to 8 MiB, in
//!   decoded MIME text parts; the date is the `Date:` field, else the
//!   file's modification time. See [`search`].
//! - `users` lists the directories under the root, `folders` a user's
//!   Maildir++ folders. `maintain`: `migrate` has nothing to do; `gc` and
//!   `check` are in [`maintain`].

pub mod deliver;
pub mod dovecot;
pub mod error;
pub mod files;
pub mod lease;
pub mod lock;
pub mod login;
pub mod maildir;
pub mod maintain;
pub mod names;
pub mod retrieved;
pub mod search;
pub mod session;
pub mod uidl;

wit_bindgen::generate!({ path: "../../wit", world: "storage-plugin" });

use error::Error;
use exports::poplar::plugin::storage::{
    CommitReport, CommitRequest, Delivered, Delivery, Entry, Guest, Holder, LeaseInfo, MailUsage,
    Maintenance, MaintenanceReport, OpenError, OpenRequest, Opened, SearchCriteria, StorageError,
};
use maildir::{Config, DeleAction};
use poplar::plugin::host::{self, Level};
use poplar::plugin::types::{self, Mailbox};

struct Plugin;

fn debug(message: &str) {
    host::log(Level::Debug, message);
}

impl From<Error> for StorageError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) => StorageError::Permanent(m),
            Error::NotFound(m) => StorageError::NotFound(m),
            Error::Io(m) => StorageError::Temporary(m),
            Error::LeaseLost(m) => StorageError::LeaseLost(m),
            Error::OverQuota(m) => StorageError::OverQuota(m),
        }
    }
}

/// An instance's configuration never changes (a new configuration means a
/// new plugin version with new instances), so it is read and parsed once.
static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

fn config() -> Result<&'static Config, Error> {
    if let Some(config) = CONFIG.get() {
        return Ok(config);
    }
    let pairs = host::config();
    let mut config = Config::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    config.log = debug;
    Ok(CONFIG.get_or_init(|| config))
}

fn entry(e: maildir::Entry) -> Entry {
    Entry {
        key: e.key,
        size: e.size,
        stored_size: e.stored_size,
        uid: e.uid,
        received: e.received,
    }
}

fn holder_in(h: Holder) -> lease::Holder {
    lease::Holder {
        node: h.node,
        incarnation: h.incarnation,
        session: h.session,
        peer: h.peer,
    }
}

fn holder_out(h: lease::Holder) -> Holder {
    Holder {
        node: h.node,
        incarnation: h.incarnation,
        session: h.session,
        peer: h.peer,
    }
}

impl Guest for Plugin {
    fn validate() -> Result<(), String> {
        let config = config().map_err(|e| e.message().to_string())?;
        match std::fs::metadata(&config.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!(
                "mail root {} is not a directory",
                config.root.display()
            )),
            Err(e) => Err(format!(
                "mail root {} is not accessible: {e} (is it granted in `dirs`?)",
                config.root.display()
            )),
        }
    }

    fn open(mbox: Mailbox, request: OpenRequest) -> Result<Opened, OpenError> {
        let config = config().map_err(|e| OpenError::Failed(e.into()))?;
        let request = session::OpenRequest {
            holder: holder_in(request.holder),
            ttl_seconds: request.ttl_seconds,
            login_delay: request.login_delay,
        };
        let opened =
            config.open_session(&mbox.user, mbox.folder.as_deref(), &request, files::now());
        match opened {
            Ok(o) => Ok(Opened {
                lease: o.lease,
                entries: o.entries.into_iter().map(entry).collect(),
                last_login: o.last_login,
            }),
            Err(session::OpenError::InUse(h)) => Err(OpenError::InUse(holder_out(h))),
            Err(session::OpenError::TooSoon(wait)) => Err(OpenError::TooSoon(wait)),
            Err(session::OpenError::Failed(e)) => Err(OpenError::Failed(e.into())),
        }
    }

    fn renew(
        holder: Holder,
        leases: Vec<String>,
        ttl_seconds: u32,
    ) -> Result<Vec<String>, StorageError> {
        Ok(config()?.renew(&holder_in(holder), &leases, ttl_seconds, files::now()))
    }

    fn release(lease: String) -> Result<(), StorageError> {
        Ok(config()?.release(&lease, files::now())?)
    }

    fn leases(user: Option<String>) -> Result<Vec<LeaseInfo>, StorageError> {
        let leases = config()?.leases(user.as_deref(), files::now())?;
        Ok(leases
            .into_iter()
            .map(|l| LeaseInfo {
                mbox: Mailbox {
                    user: l.user,
                    folder: l.folder,
                },
                holder: holder_out(l.lease.holder),
                since: l.lease.since,
                expires: l.lease.expires,
            })
            .collect())
    }

    fn break_leases(user: String) -> Result<u32, StorageError> {
        Ok(config()?.break_leases(&user, files::now())?)
    }

    fn list_messages(mbox: Mailbox) -> Result<Vec<Entry>, StorageError> {
        let maildir = config()?.open(&mbox.user, mbox.folder.as_deref())?;
        Ok(maildir.list()?.into_iter().map(entry).collect())
    }

    fn read(mbox: Mailbox, key: String, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        let maildir = config()?.open(&mbox.user, mbox.folder.as_deref())?;
        Ok(maildir.read(&key, offset, len)?)
    }

    fn commit(mbox: Mailbox, request: CommitRequest) -> Result<CommitReport, StorageError> {
        let request = session::CommitRequest {
            lease: request.lease,
            delete: request.delete,
            action: match request.action {
                types::DeleAction::Expunge => DeleAction::Expunge,
                types::DeleAction::Flag => DeleAction::Flag,
                types::DeleAction::MoveTo(folder) => DeleAction::MoveTo(folder),
            },
            retrieved: request.retrieved,
        };
        let report =
            config()?.commit(&mbox.user, mbox.folder.as_deref(), &request, files::now())?;
        Ok(CommitReport {
            deleted: report.deleted,
            missing: report.missing,
        })
    }

    fn search(mbox: Mailbox, criteria: SearchCriteria) -> Result<Vec<String>, StorageError> {
        let criteria = search::Criteria {
            headers: criteria
                .headers
                .into_iter()
                .map(|h| (h.name, h.contains))
                .collect(),
            body: criteria.body,
            since: criteria.since,
            before: criteria.before,
            larger: criteria.larger,
            smaller: criteria.smaller,
            retrieved_before: criteria.retrieved_before,
        };
        Ok(search::search(
            config()?,
            &mbox.user,
            mbox.folder.as_deref(),
            &criteria,
        )?)
    }

    fn usage(user: String) -> Result<MailUsage, StorageError> {
        let usage = config()?.usage(&user)?;
        Ok(MailUsage {
            messages: usage.messages,
            octets: usage.octets,
        })
    }

    fn deliver(batch: Vec<Delivery>) -> Vec<Result<Delivered, StorageError>> {
        let config = match config() {
            Ok(config) => config,
            Err(e) => return batch.iter().map(|_| Err(e.clone().into())).collect(),
        };
        let requests = batch
            .iter()
            .map(|d| deliver::Request {
                user: d.mbox.user.clone(),
                folder: d.mbox.folder.clone(),
                id: d.id.clone(),
                quota: deliver::Quota {
                    messages: d.quota.messages,
                    octets: d.quota.octets,
                },
                uid: d.uid.clone(),
                received: d.received,
                read: Box::new(|offset, len| d.msg.read(offset, len)),
            })
            .collect();
        config
            .deliver(requests, files::now())
            .into_iter()
            .map(|answer| {
                answer
                    .map(|d| Delivered {
                        key: d.key,
                        uid: d.uid,
                        duplicate: d.duplicate,
                    })
                    .map_err(StorageError::from)
            })
            .collect()
    }

    fn users(after: Option<String>, limit: u32) -> Result<Vec<String>, StorageError> {
        Ok(config()?.users(after.as_deref(), limit)?)
    }

    fn folders(user: String) -> Result<Vec<String>, StorageError> {
        Ok(config()?.folders(&user)?)
    }

    fn maintain(task: Maintenance) -> Result<MaintenanceReport, StorageError> {
        let config = config()?;
        let report = match task {
            Maintenance::Migrate => config.migrate(),
            Maintenance::Gc(grace) => config.gc(grace, files::now())?,
            Maintenance::Check(repair) => config.check(repair, files::now())?,
        };
        Ok(MaintenanceReport {
            findings: report.findings,
            fixed: report.fixed,
            summary: report.summary,
        })
    }
}

// Only a wasm build exports the component's functions (their symbol names
// do not link into a native shared library); native builds still type-check
// the glue, and `cargo test` runs the modules' tests.
#[cfg(target_arch = "wasm32")]
export!(Plugin);
