//! Maildir++ storage for Poplar, as a WebAssembly component (world
//! `storage-plugin`). Copy it to start your own storage plugin: the Maildir
//! logic lives in [`maildir`] (plain `std::fs`, tested natively); this file
//! only reads the configuration, calls it and maps errors.
//!
//! # Configuration (`[<plugin>.config]`)
//!
//! - `root` (default `"/mail"`): the guest path where the host preopened the
//!   mail root. Nothing else of the filesystem is visible.
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
//!   that does not exist is empty.
//! - Listing: regular, non-dot files of `new/` and `cur/`, oldest first (by
//!   the timestamp that starts a Maildir name, then by name). Keys are
//!   `new/<file>` or `cur/<file>`. The size is the size with CRLF line
//!   endings (plus 2 when the last line has none), taken from the name's
//!   `,W=<n>` field when present, else computed by reading the file.
//! - Read and commit find a message that another client moved (`new/` to
//!   `cur/`) or re-flagged by its base name. Commit checks every key before
//!   deleting anything and counts messages already gone as missing.
//! - Delivery writes `tmp/<unique>` from the message in 256 KiB chunks,
//!   fsyncs it, renames it to `new/<unique>,S=<octets>,W=<crlf octets>` and
//!   fsyncs `new/`. A folder is created on first delivery, with Maildir++'s
//!   `maildirfolder` marker.
//! - Usage (quotas): the messages of the inbox and of every folder (each
//!   directory `.<name>` of the user's Maildir that names a valid folder;
//!   a link to a directory counts), as the listings would show them, and
//!   their stored sizes: from the `,S=` field, else a stat. No message is
//!   read. A user without a Maildir yet has none.
//! - Search (`poplar mailbox search`) reads the messages in place, in
//!   chunks: header fields decoded (folding, RFC 2047), body text raw and,
//!   for messages up to 8 MiB, in decoded MIME text parts; the date is the
//!   `Date:` field, else the file's modification time. See [`search`].
//! - No state is kept between calls.

pub mod maildir;
pub mod search;

wit_bindgen::generate!({ path: "../../wit", world: "storage-plugin" });

use exports::poplar::plugin::storage::{
    CommitReport, Entry, Guest, MailUsage, SearchCriteria, StorageError,
};
use maildir::{Config, Error, Maildir};
use poplar::plugin::host::{self, Level};
use poplar::plugin::message::Message;
use poplar::plugin::types::Mailbox;

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

/// Runs `f` on the Maildir of `mbox`.
fn with_maildir<T>(
    mbox: &Mailbox,
    f: impl FnOnce(&Maildir) -> Result<T, Error>,
) -> Result<T, StorageError> {
    let config = config()?;
    let maildir = config.open(&mbox.user, mbox.folder.as_deref())?;
    Ok(f(&maildir)?)
}

impl Guest for Plugin {
    fn validate() -> Result<(), String> {
        let config =
            config().map_err(|(Error::Invalid(m) | Error::NotFound(m) | Error::Io(m))| m)?;
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

    fn list_messages(mbox: Mailbox) -> Result<Vec<Entry>, StorageError> {
        let entries = with_maildir(&mbox, |md| md.list())?;
        Ok(entries
            .into_iter()
            .map(|e| Entry {
                key: e.key,
                size: e.size,
                stored_size: e.stored_size,
                uid: e.uid,
            })
            .collect())
    }

    fn read(mbox: Mailbox, key: String, offset: u64, len: u32) -> Result<Vec<u8>, StorageError> {
        with_maildir(&mbox, |md| md.read(&key, offset, len))
    }

    fn commit(mbox: Mailbox, keys: Vec<String>) -> Result<CommitReport, StorageError> {
        let report = with_maildir(&mbox, |md| md.commit(&keys))?;
        Ok(CommitReport {
            deleted: report.deleted,
            missing: report.missing,
        })
    }

    fn deliver(mbox: Mailbox, msg: &Message) -> Result<String, StorageError> {
        with_maildir(&mbox, |md| md.deliver(|offset, len| msg.read(offset, len)))
    }

    fn usage(user: String) -> Result<MailUsage, StorageError> {
        let usage = config()?.usage(&user)?;
        Ok(MailUsage {
            messages: usage.messages,
            octets: usage.octets,
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
        };
        Ok(search::search(
            config()?,
            &mbox.user,
            mbox.folder.as_deref(),
            &criteria,
        )?)
    }
}

// Only a wasm build exports the component's functions (their symbol names
// do not link into a native shared library); native builds still type-check
// the glue, and `cargo test` runs the module's tests.
#[cfg(target_arch = "wasm32")]
export!(Plugin);
