//! `poplar mailbox`: look into and clean up one user's mail from the command
//! line, through the same plugins the server uses (`--config`).
//!
//! - `list USER`: every message: number, UIDL, size, date, sender, subject.
//! - `stats USER`: the user's mail, the inbox and every folder together
//!   (the storage plugin's `usage`), against their `[quota]`; and the
//!   selected mailbox's own count and size.
//! - `search USER CRITERIA`: the messages that match every criterion. The
//!   storage plugin's `search` does the matching where the mail is; the host
//!   only reads the header block of each hit to show it. Exits 1 when
//!   nothing matches (like grep).
//! - `expunge USER (--uid UIDL... | CRITERIA | --all) [--dry-run]`: removes
//!   messages with the storage plugin's `commit` (the POP3 UPDATE call).
//!
//! USER is resolved by the auth plugin's `resolve-user`, as at delivery.
//! `--folder` picks a folder instead of the inbox; `--json` prints one JSON
//! document instead of a table. Exit codes follow sysexits: 64 bad usage
//! (a date or size that does not parse), 65 a UIDL not in the mailbox, 67
//! unknown user, 69 storage refused, 75 temporary failure, 78 bad
//! configuration or plugin.
//!
//! Expunge does not take the server's maildrop lock (it lives in the server
//! process): a POP3 session open at the time sees the messages as gone.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};

use crate::config::{Config, QuotaLimits};
use crate::lease::NodeIdentity;
use crate::plugin::auth::UserLookup;
use crate::plugin::message::parse_headers;
use crate::plugin::storage::{
    self, CommitRequest, DeleAction, Entry, HeaderMatch, MailUsage, Mailbox, OpenFailure,
    OpenRequest, SearchCriteria,
};
use crate::plugin::{AuthPlugin, PluginError, Runtime, StoragePlugin};

use super::exit::{
    EX_CONFIG, EX_DATAERR, EX_NOMATCH, EX_NOUSER, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE,
};

/// Storage calls from these commands may walk a whole mailbox (a search
/// reads every message): they get at least this deadline.
const OPERATOR_TIMEOUT_MS: u64 = 600_000;
/// How much of a message is read to find its header block for display.
const HEADER_READ: u32 = 16 * 1024;
const HEADER_READ_MAX: u64 = 64 * 1024;

#[derive(Subcommand)]
pub enum MailboxCmd {
    /// List the messages: number, UIDL, size, date, sender, subject.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show the user's message count and size (inbox and folders together)
    /// against their quota, and the mailbox's own.
    Stats {
        #[command(flatten)]
        target: Target,
    },
    /// Find the messages that match every criterion given (exit 1 if none).
    Search {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        criteria: Box<CriteriaArgs>,
    },
    /// Remove messages chosen by UIDL, by search criteria, or all of them.
    Expunge {
        #[command(flatten)]
        target: Target,
        /// UIDLs of the messages to remove (as `list` shows them).
        #[arg(long = "uid", value_name = "UIDL", num_args = 1..)]
        uids: Vec<String>,
        #[command(flatten)]
        criteria: Box<CriteriaArgs>,
        /// Remove every message of the mailbox.
        #[arg(long)]
        all: bool,
        /// Show what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Whose mailbox, and how to answer.
#[derive(Args)]
pub struct Target {
    /// The TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// The user, as the MTA would name the recipient (resolved by the auth
    /// plugin's resolve-user).
    user: String,
    /// A folder (e.g. `Junk`) instead of the inbox.
    #[arg(long)]
    folder: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Search criteria; every one given must hold.
#[derive(Args, Default)]
pub struct CriteriaArgs {
    /// A header field containing text, e.g. `List-Id:announce` (case does
    /// not matter; empty text: the field is present). Repeatable.
    #[arg(long = "header", value_name = "NAME:TEXT")]
    headers: Vec<String>,
    /// Text in the body (case does not matter). Repeatable.
    #[arg(long, value_name = "TEXT")]
    body: Vec<String>,
    /// Text in the From field.
    #[arg(long, value_name = "TEXT")]
    from: Option<String>,
    /// Text in the Subject field.
    #[arg(long, value_name = "TEXT")]
    subject: Option<String>,
    /// Dated on or after: YYYY-MM-DD (UTC), YYYY-MM-DDTHH:MM[:SS][Z|±HH:MM],
    /// or an age such as 30d, 12h, 2w. The date is the Date field, else
    /// when the message was stored.
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Dated strictly before DATE (same forms as --since).
    #[arg(long, value_name = "DATE")]
    before: Option<String>,
    /// Larger than N octets (K, M, G suffixes: 1024-based).
    #[arg(long, value_name = "N")]
    larger: Option<String>,
    /// Smaller than N octets.
    #[arg(long, value_name = "N")]
    smaller: Option<String>,
}

/// Why a command stopped: the message for standard error and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn fail<T>(code: u8, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        code,
        message: message.into(),
    })
}

impl MailboxCmd {
    fn verb(&self) -> &'static str {
        match self {
            MailboxCmd::List { .. } => "list",
            MailboxCmd::Stats { .. } => "stats",
            MailboxCmd::Search { .. } => "search",
            MailboxCmd::Expunge { .. } => "expunge",
        }
    }
}

/// Runs one `poplar mailbox` command; what it prints goes to standard
/// output, errors to standard error.
pub async fn run(cmd: MailboxCmd) -> ExitCode {
    let verb = cmd.verb();
    match execute(cmd).await {
        Ok((out, code)) => {
            print!("{out}");
            ExitCode::from(code)
        }
        Err(f) => {
            eprintln!("poplar mailbox {verb}: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Runs a command; the text for standard output and the exit code.
async fn execute(cmd: MailboxCmd) -> Result<(String, u8), Failure> {
    match cmd {
        MailboxCmd::List { target } => {
            let open = Open::new(&target).await?;
            let entries = open.list().await?;
            let rows = open.rows(&entries, None).await?;
            Ok((render_rows(&open, &rows, target.json, None), 0))
        }
        MailboxCmd::Stats { target } => {
            let open = Open::new(&target).await?;
            let entries = open.list().await?;
            let usage = open.usage().await?;
            Ok((render_stats(&open, &entries, usage, target.json), 0))
        }
        MailboxCmd::Search { target, criteria } => {
            let criteria = criteria.parse(now())?;
            let open = Open::new(&target).await?;
            let entries = open.list().await?;
            let keys = open.search(&criteria).await?;
            let rows = open.rows(&entries, Some(&keys)).await?;
            let code = if rows.is_empty() { EX_NOMATCH } else { 0 };
            Ok((render_rows(&open, &rows, target.json, None), code))
        }
        MailboxCmd::Expunge {
            target,
            uids,
            criteria,
            all,
            dry_run,
        } => {
            let criteria = criteria.parse(now())?;
            let searching = !is_empty(&criteria);
            let modes = usize::from(!uids.is_empty()) + usize::from(searching) + usize::from(all);
            if modes != 1 {
                return fail(
                    EX_USAGE,
                    "say which messages, in exactly one way: --uid UIDL..., search criteria, \
                     or --all",
                );
            }
            let open = Open::new(&target).await?;
            // The maildrop lease, as a POP3 session takes it: no session on
            // any node is changing this mailbox while we do.
            let (lease, entries) = open.lease().await?;
            let chosen: Vec<String> = if all {
                entries.iter().map(|e| e.key.clone()).collect()
            } else if searching {
                open.search(&criteria).await?
            } else {
                let missing: Vec<&str> = uids
                    .iter()
                    .filter(|u| !entries.iter().any(|e| &e.uid == *u))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return fail(
                        EX_DATAERR,
                        format!(
                            "no message with UIDL {} in {}; nothing expunged",
                            missing.join(", "),
                            open.describe()
                        ),
                    );
                }
                entries
                    .iter()
                    .filter(|e| uids.contains(&e.uid))
                    .map(|e| e.key.clone())
                    .collect()
            };
            let rows = open.rows(&entries, Some(&chosen)).await?;
            let keys: Vec<String> = rows.iter().map(|r| r.entry.key.clone()).collect();
            let report = if dry_run || keys.is_empty() {
                None
            } else {
                let request = CommitRequest {
                    lease: lease.clone(),
                    delete: keys,
                    action: DeleAction::Expunge,
                    retrieved: Vec::new(),
                };
                let done = open.storage.commit(&open.mailbox, &request).await;
                Some(done.map_err(|e| storage_failure("removing the messages", e)))
            };
            if let Err(e) = open.storage.release(&lease).await {
                eprintln!(
                    "poplar mailbox expunge: releasing the maildrop lease (it will expire): {e}"
                );
            }
            let report = report.transpose()?;
            let done = Expunged {
                dry_run,
                deleted: report.as_ref().map_or(0, |r| r.deleted),
                missing: report.as_ref().map_or(0, |r| r.missing),
            };
            Ok((render_rows(&open, &rows, target.json, Some(&done)), 0))
        }
    }
}

/// The plugins loaded and the user resolved.
struct Open {
    /// `server.node`, for the lease.
    node: String,
    user: String,
    principal: String,
    mailbox: Mailbox,
    limits: QuotaLimits,
    storage: Arc<StoragePlugin>,
}

impl Open {
    async fn new(target: &Target) -> Result<Open, Failure> {
        let config = match Config::load(&target.config) {
            Ok(c) => c,
            Err(e) => return fail(EX_CONFIG, format!("{e:#}")),
        };
        let loaded = async {
            let runtime = Runtime::new(&config.runtime)?;
            let auth = AuthPlugin::load(&runtime, "auth", &config.auth).await?;
            let mut storage = config.storage.clone();
            storage.timeout_ms = storage.timeout_ms.max(OPERATOR_TIMEOUT_MS);
            let storage = StoragePlugin::load(&runtime, "storage", &storage).await?;
            anyhow::Ok((auth, storage))
        };
        let (auth, storage) = match loaded.await {
            Ok(p) => p,
            Err(e) => return fail(EX_CONFIG, format!("{e:#}")),
        };
        let principal = match auth.resolve_user(&target.user).await {
            Ok(UserLookup::Found(p)) => p,
            Ok(UserLookup::Unknown) => {
                return fail(EX_NOUSER, format!("unknown user {:?}", target.user));
            }
            Ok(UserLookup::TempFail(why)) => {
                return fail(EX_TEMPFAIL, format!("cannot look up the user now: {why}"));
            }
            Err(e) => return Err(plugin_failure(e)),
        };
        Ok(Open {
            node: config.server.node.clone(),
            user: target.user.clone(),
            limits: config.quota.limits_for(&principal),
            mailbox: Mailbox {
                user: principal.clone(),
                folder: target.folder.clone(),
            },
            principal,
            storage,
        })
    }

    /// `alice's inbox`, `alice's folder Junk`, for messages.
    fn describe(&self) -> String {
        match &self.mailbox.folder {
            Some(f) => format!("{}'s folder {f:?}", self.user),
            None => format!("{}'s inbox", self.user),
        }
    }

    async fn list(&self) -> Result<Vec<Entry>, Failure> {
        self.storage
            .list(&self.mailbox)
            .await
            .map_err(|e| storage_failure("listing the mailbox", e))
    }

    /// Takes the maildrop lease as a POP3 session would (a session holding
    /// it makes this fail with EX_TEMPFAIL) and lists the mailbox under it.
    async fn lease(&self) -> Result<(String, Vec<Entry>), Failure> {
        let identity = NodeIdentity::new(&self.node);
        let request = OpenRequest {
            holder: identity.holder(&format!("cli-{}", std::process::id()), ""),
            ttl_seconds: (OPERATOR_TIMEOUT_MS / 1000) as u32,
            login_delay: None,
        };
        match self.storage.open(&self.mailbox, &request).await {
            Ok(opened) => Ok((opened.lease, opened.entries)),
            Err(OpenFailure::InUse(holder)) => fail(
                EX_TEMPFAIL,
                format!(
                    "{} is in use by session {} on node {} (client {}); try again later",
                    self.describe(),
                    holder.session,
                    holder.node,
                    if holder.peer.is_empty() {
                        "-"
                    } else {
                        &holder.peer
                    }
                ),
            ),
            Err(OpenFailure::TooSoon(_)) => fail(EX_TEMPFAIL, "the storage refused the lease"),
            Err(OpenFailure::Storage(e)) => Err(storage_failure("opening the mailbox", e)),
        }
    }

    /// All the user's mail, the inbox and every folder.
    async fn usage(&self) -> Result<MailUsage, Failure> {
        self.storage
            .usage(&self.principal)
            .await
            .map_err(|e| storage_failure("measuring the user's mail", e))
    }

    async fn search(&self, criteria: &SearchCriteria) -> Result<Vec<String>, Failure> {
        self.storage
            .search(&self.mailbox, criteria)
            .await
            .map_err(|e| storage_failure("searching the mailbox", e))
    }

    /// The listing's messages (those among `keys`, if given) with their
    /// numbers and a summary of their header blocks.
    async fn rows(&self, entries: &[Entry], keys: Option<&[String]>) -> Result<Vec<Row>, Failure> {
        let keys: Option<HashSet<&str>> = keys.map(|k| k.iter().map(String::as_str).collect());
        let mut rows = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if keys
                .as_ref()
                .is_some_and(|k| !k.contains(entry.key.as_str()))
            {
                continue;
            }
            let fields = self.header_fields(&entry.key).await?;
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            rows.push(Row {
                number: i + 1,
                entry: entry.clone(),
                date: field("Date"),
                from: field("From"),
                subject: field("Subject"),
            });
        }
        Ok(rows)
    }

    /// The decoded header fields of a message, read through the storage
    /// plugin (at most 64 KiB); none if it has gone since the listing.
    async fn header_fields(&self, key: &str) -> Result<Vec<(String, String)>, Failure> {
        let mut block = Vec::new();
        while (block.len() as u64) < HEADER_READ_MAX {
            let offset = block.len() as u64;
            let part = match self
                .storage
                .read(&self.mailbox, key, offset, HEADER_READ)
                .await
            {
                Ok(part) => part,
                Err(storage::Failure::NotFound(_)) => return Ok(Vec::new()),
                Err(e) => return Err(storage_failure("reading a message", e)),
            };
            let end = part.is_empty();
            block.extend_from_slice(&part);
            if end || has_empty_line(&block) {
                break;
            }
        }
        Ok(parse_headers(&block).0)
    }
}

fn has_empty_line(block: &[u8]) -> bool {
    block.starts_with(b"\n")
        || block.starts_with(b"\r\n")
        || block.windows(2).any(|w| w == b"\n\n")
        || block.windows(3).any(|w| w == b"\n\r\n")
}

fn storage_failure(doing: &str, e: storage::Failure) -> Failure {
    if let storage::Failure::Plugin(e) = e {
        return plugin_failure(e);
    }
    if e.is_temporary() {
        Failure {
            code: EX_TEMPFAIL,
            message: format!("{doing}: temporary storage failure: {e}"),
        }
    } else {
        Failure {
            code: EX_UNAVAILABLE,
            message: format!("{doing}: storage refused: {e}"),
        }
    }
}

fn plugin_failure(e: PluginError) -> Failure {
    Failure {
        code: EX_TEMPFAIL,
        message: e.to_string(),
    }
}

/// One message as shown.
struct Row {
    number: usize,
    entry: Entry,
    date: Option<String>,
    from: Option<String>,
    subject: Option<String>,
}

/// What an expunge did (or would do).
struct Expunged {
    dry_run: bool,
    deleted: u32,
    missing: u32,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn is_empty(c: &SearchCriteria) -> bool {
    c.headers.is_empty()
        && c.body.is_empty()
        && c.since.is_none()
        && c.before.is_none()
        && c.larger.is_none()
        && c.smaller.is_none()
}

impl CriteriaArgs {
    /// The WIT criteria; dates relative to `now` (Unix seconds).
    pub fn parse(&self, now: i64) -> Result<SearchCriteria, Failure> {
        let mut headers = Vec::new();
        for spec in &self.headers {
            let Some((name, text)) = spec.split_once(':') else {
                return fail(
                    EX_USAGE,
                    format!("--header {spec:?}: write it as NAME:TEXT, e.g. List-Id:announce"),
                );
            };
            let name = name.trim();
            let bad = name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic());
            if bad {
                return fail(
                    EX_USAGE,
                    format!("--header {spec:?}: {name:?} is not a header field name"),
                );
            }
            headers.push(HeaderMatch {
                name: name.to_string(),
                contains: text.trim_start().to_string(),
            });
        }
        for (name, text) in [("From", &self.from), ("Subject", &self.subject)] {
            if let Some(text) = text {
                headers.push(HeaderMatch {
                    name: name.into(),
                    contains: text.clone(),
                });
            }
        }
        let when = |flag: &str, v: &Option<String>| -> Result<Option<i64>, Failure> {
            v.as_deref()
                .map(|s| {
                    parse_when(s, now).ok_or_else(|| Failure {
                        code: EX_USAGE,
                        message: format!(
                            "{flag} {s:?}: not a date; use YYYY-MM-DD, \
                             YYYY-MM-DDTHH:MM[:SS][Z|±HH:MM], or an age such as 30d"
                        ),
                    })
                })
                .transpose()
        };
        let size = |flag: &str, v: &Option<String>| -> Result<Option<u64>, Failure> {
            v.as_deref()
                .map(|s| {
                    parse_size(s).ok_or_else(|| Failure {
                        code: EX_USAGE,
                        message: format!(
                            "{flag} {s:?}: not a size; use a number of octets, \
                             optionally with K, M or G"
                        ),
                    })
                })
                .transpose()
        };
        Ok(SearchCriteria {
            headers,
            body: self.body.clone(),
            since: when("--since", &self.since)?,
            before: when("--before", &self.before)?,
            larger: size("--larger", &self.larger)?,
            smaller: size("--smaller", &self.smaller)?,
            retrieved_before: None,
        })
    }
}

/// `N`, `NK`, `NM`, `NG` (1024-based; `KB`, `KiB` and lower case too).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let unit = match s[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// A date for `--since`/`--before`, as Unix seconds: `YYYY-MM-DD` (UTC
/// midnight), `YYYY-MM-DDTHH:MM[:SS]` with an optional `Z` or `±HH:MM`
/// (UTC without), or an age: `N` followed by `h`, `d` or `w`.
pub fn parse_when(s: &str, now: i64) -> Option<i64> {
    let s = s.trim();
    if let Some(unit) = s.chars().last().filter(|c| matches!(c, 'h' | 'd' | 'w')) {
        let n: i64 = s[..s.len() - 1].parse().ok().filter(|&n| n >= 0)?;
        let secs = match unit {
            'h' => 3600,
            'd' => 86_400,
            _ => 7 * 86_400,
        };
        return now.checked_sub(n.checked_mul(secs)?);
    }
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let year = number(parts.next()?, 4)?;
    let month = number(parts.next()?, 2)?;
    let day = number(parts.next()?, 2)?;
    if parts.next().is_some() || !(1..=12).contains(&month) {
        return None;
    }
    let (year, month, day) = (year as i64, month as u32, day as u32);
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let midnight = days_from_civil(year, month, day) * 86_400;
    let Some(time) = time else {
        return Some(midnight);
    };
    // The zone: Z, or +HH:MM / -HH:MM after the time.
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, zone) = time.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':')?;
        let (h, m) = (number(h, 2)?, number(m, 2)?);
        if h > 23 || m > 59 {
            return None;
        }
        (c, sign * (h as i64 * 3600 + m as i64 * 60))
    } else {
        (time, 0)
    };
    let mut hms = clock.split(':');
    let h = number(hms.next()?, 2)?;
    let m = number(hms.next()?, 2)?;
    let sec = match hms.next() {
        Some(x) => number(x, 2)?,
        None => 0,
    };
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(midnight + (h * 3600 + m * 60 + sec.min(59)) as i64 - offset)
}

/// Exactly `width` ASCII digits.
fn number(s: &str, width: usize) -> Option<u64> {
    (s.len() == width && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Years start in March here, so the leap day ends each 4-year cycle.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC).
fn utc(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// A Date field for the table: normalised to UTC when it parses.
fn show_date(value: &str) -> String {
    match mailparse::dateparse(value) {
        // dateparse answers 0 for text with no date in it at all.
        Ok(secs) if secs != 0 => utc(secs),
        _ => value.to_string(),
    }
}

/// Text for one table cell: one line, at most `max` characters.
fn cell(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= max {
        clean
    } else {
        let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn percent(used: u64, max: u64) -> u64 {
    (u128::from(used) * 100 / u128::from(max.max(1))) as u64
}

fn render_rows(open: &Open, rows: &[Row], json: bool, expunged: Option<&Expunged>) -> String {
    if json {
        return rows_json(open, rows, expunged);
    }
    let mut out = String::new();
    if !rows.is_empty() {
        let table: Vec<[String; 6]> = rows
            .iter()
            .map(|r| {
                [
                    r.number.to_string(),
                    r.entry.uid.clone(),
                    r.entry.size.to_string(),
                    r.date.as_deref().map(show_date).unwrap_or_default(),
                    cell(r.from.as_deref().unwrap_or(""), 32),
                    cell(r.subject.as_deref().unwrap_or(""), 60),
                ]
            })
            .collect();
        let head = ["#", "UIDL", "SIZE", "DATE", "FROM", "SUBJECT"];
        let mut widths = head.map(str::len);
        for row in &table {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |out: &mut String, cells: [&str; 6]| {
            let _ = writeln!(
                out,
                "{:>w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {:<w4$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
            );
        };
        line(&mut out, head);
        for row in &table {
            line(&mut out, row.each_ref().map(String::as_str));
        }
    }
    let octets: u64 = rows.iter().map(|r| r.entry.size).sum();
    let count = |n: usize| format!("{n} message{}", if n == 1 { "" } else { "s" });
    let _ = match expunged {
        None => writeln!(
            out,
            "{} ({octets} octets) in {}",
            count(rows.len()),
            open.describe()
        ),
        Some(e) if e.dry_run => writeln!(
            out,
            "dry run: would expunge {} from {}",
            count(rows.len()),
            open.describe()
        ),
        Some(e) if e.missing > 0 => writeln!(
            out,
            "expunged {} from {} ({} already gone)",
            count(e.deleted as usize),
            open.describe(),
            e.missing
        ),
        Some(e) => writeln!(
            out,
            "expunged {} from {}",
            count(e.deleted as usize),
            open.describe()
        ),
    };
    out
}

/// `stats`: the quota counts all the user's mail (`usage`); the selected
/// mailbox's own numbers (`entries`) are shown apart, labelled as such.
/// JSON keeps `messages`, `stored_octets` and `pop3_octets` for the
/// selected mailbox, as before, and adds `usage` beside `quota`.
fn render_stats(open: &Open, entries: &[Entry], usage: MailUsage, json: bool) -> String {
    let messages = entries.len() as u64;
    let stored: u64 = entries.iter().map(|e| e.stored_size).sum();
    let pop3: u64 = entries.iter().map(|e| e.size).sum();
    let full = open
        .limits
        .refusal(usage.messages, usage.octets, 1)
        .is_some();
    if json {
        let limit = |l: Option<u64>| l.map_or(Json::Null, Json::U64);
        return Json::Obj(vec![
            ("user", Json::Str(open.user.clone())),
            ("principal", Json::Str(open.principal.clone())),
            (
                "folder",
                open.mailbox.folder.clone().map_or(Json::Null, Json::Str),
            ),
            ("messages", Json::U64(messages)),
            ("stored_octets", Json::U64(stored)),
            ("pop3_octets", Json::U64(pop3)),
            (
                "usage",
                Json::Obj(vec![
                    ("messages", Json::U64(usage.messages)),
                    ("octets", Json::U64(usage.octets)),
                ]),
            ),
            (
                "quota",
                Json::Obj(vec![
                    ("messages", limit(open.limits.messages)),
                    ("octets", limit(open.limits.bytes)),
                ]),
            ),
            ("full", Json::Bool(full)),
        ])
        .to_string()
            + "\n";
    }
    let mut out = String::new();
    let _ = writeln!(out, "user       {}", open.user);
    if open.principal != open.user {
        let _ = writeln!(out, "principal  {}", open.principal);
    }
    let all = "inbox and folders together";
    let _ = match open.limits.messages {
        Some(max) => writeln!(
            out,
            "messages   {} of {max} ({}%), {all}",
            usage.messages,
            percent(usage.messages, max)
        ),
        None => writeln!(out, "messages   {} (no limit), {all}", usage.messages),
    };
    let _ = match open.limits.bytes {
        Some(max) => writeln!(
            out,
            "octets     {} of {max} ({}%) as stored, {all}",
            usage.octets,
            percent(usage.octets, max)
        ),
        None => writeln!(
            out,
            "octets     {} (no limit) as stored, {all}",
            usage.octets
        ),
    };
    let state = if full {
        "full: new mail is refused (552 5.2.2)"
    } else if open.limits.is_unlimited() {
        "no quota"
    } else {
        "within quota"
    };
    let _ = writeln!(out, "quota      {state}");
    let mailbox = match &open.mailbox.folder {
        Some(f) => format!("folder {f}"),
        None => "inbox".into(),
    };
    let _ = writeln!(
        out,
        "mailbox    {mailbox}: {messages} message{}, {stored} octets as stored, \
         {pop3} octets as POP3 counts them (what STAT reports)",
        if messages == 1 { "" } else { "s" }
    );
    out
}

fn rows_json(open: &Open, rows: &[Row], expunged: Option<&Expunged>) -> String {
    let opt = |v: &Option<String>| v.clone().map_or(Json::Null, Json::Str);
    let messages = rows
        .iter()
        .map(|r| {
            Json::Obj(vec![
                ("number", Json::U64(r.number as u64)),
                ("uid", Json::Str(r.entry.uid.clone())),
                ("key", Json::Str(r.entry.key.clone())),
                ("size", Json::U64(r.entry.size)),
                ("stored_size", Json::U64(r.entry.stored_size)),
                ("date", opt(&r.date)),
                ("from", opt(&r.from)),
                ("subject", opt(&r.subject)),
            ])
        })
        .collect();
    let mut fields = vec![
        ("user", Json::Str(open.user.clone())),
        ("principal", Json::Str(open.principal.clone())),
        ("folder", opt(&open.mailbox.folder)),
        ("messages", Json::Arr(messages)),
    ];
    if let Some(e) = expunged {
        fields.push(("dry_run", Json::Bool(e.dry_run)));
        fields.push(("deleted", Json::U64(e.deleted.into())));
        fields.push(("missing", Json::U64(e.missing.into())));
    }
    Json::Obj(fields).to_string() + "\n"
}

/// Just enough JSON to print a document.
enum Json {
    Null,
    Bool(bool),
    U64(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn string(f: &mut std::fmt::Formatter<'_>, s: &str) -> std::fmt::Result {
            f.write_str("\"")?;
            for c in s.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")
        }
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::U64(n) => write!(f, "{n}"),
            Json::Str(s) => string(f, s),
            Json::Arr(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Obj(fields) => {
                f.write_str("{")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    string(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_for_since_and_before() {
        let day = 86_400;
        let jan1_2024 = 1_704_067_200;
        assert_eq!(parse_when("2024-01-01", 0), Some(jan1_2024));
        assert_eq!(parse_when("2024-02-29", 0), Some(jan1_2024 + 59 * day));
        assert_eq!(
            parse_when("2024-01-01T01:02:03Z", 0),
            Some(jan1_2024 + 3723)
        );
        assert_eq!(parse_when("2024-01-01T01:02", 0), Some(jan1_2024 + 3720));
        assert_eq!(parse_when("2024-01-01 01:00+01:00", 0), Some(jan1_2024));
        assert_eq!(
            parse_when("2024-01-01T00:00:00-02:30", 0),
            Some(jan1_2024 + 9000)
        );
        assert_eq!(parse_when("30d", 100 * day), Some(70 * day));
        assert_eq!(parse_when("2w", 100 * day), Some(86 * day));
        assert_eq!(parse_when("5h", 10_000_000), Some(10_000_000 - 18_000));
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2023-02-29",
            "2024-1-1",
            "24-01-01",
            "2024-01-01T25:00",
            "2024-01-01T10:00+1",
            "-5d",
            "d",
            "2024/01/01",
            "2024-01-01-01",
        ] {
            assert_eq!(parse_when(bad, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000, -1, 0, 59, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(utc(1_057_049_557), "2003-07-01 08:52");
        assert_eq!(
            show_date("Tue, 1 Jul 2003 10:52:37 +0200"),
            "2003-07-01 08:52"
        );
        assert_eq!(show_date("whenever"), "whenever");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("1500"), Some(1500));
        assert_eq!(parse_size("10K"), Some(10_240));
        assert_eq!(parse_size("2mb"), Some(2 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        for bad in ["", "K", "1.5M", "-1", "10X", "99999999999999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn criteria_from_arguments() {
        let args = CriteriaArgs {
            headers: vec!["List-Id: announce".into(), "X-Spam:".into()],
            body: vec!["invoice".into()],
            from: Some("bob".into()),
            subject: Some("Re:".into()),
            since: Some("2024-01-01".into()),
            larger: Some("1K".into()),
            ..CriteriaArgs::default()
        };
        let c = args.parse(0).unwrap();
        let pairs: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.contains.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("List-Id", "announce"),
                ("X-Spam", ""),
                ("From", "bob"),
                ("Subject", "Re:")
            ]
        );
        assert_eq!(c.body, ["invoice"]);
        assert_eq!(c.since, Some(1_704_067_200));
        assert_eq!((c.before, c.larger, c.smaller), (None, Some(1024), None));
        assert!(is_empty(&CriteriaArgs::default().parse(0).unwrap()));

        for (args, flag) in [
            (
                CriteriaArgs {
                    headers: vec!["NoColon".into()],
                    ..CriteriaArgs::default()
                },
                "--header",
            ),
            (
                CriteriaArgs {
                    headers: vec![" :x".into()],
                    ..CriteriaArgs::default()
                },
                "--header",
            ),
            (
                CriteriaArgs {
                    before: Some("last tuesday".into()),
                    ..CriteriaArgs::default()
                },
                "--before",
            ),
            (
                CriteriaArgs {
                    smaller: Some("big".into()),
                    ..CriteriaArgs::default()
                },
                "--smaller",
            ),
        ] {
            let e = args.parse(0).unwrap_err();
            assert_eq!(e.code, EX_USAGE);
            assert!(e.message.starts_with(flag), "{}", e.message);
        }
    }

    #[test]
    fn json_is_escaped() {
        let doc = Json::Obj(vec![
            ("s", Json::Str("a\"b\\c\nd\u{1}é".into())),
            ("n", Json::Null),
            ("a", Json::Arr(vec![Json::U64(1), Json::Bool(false)])),
        ]);
        assert_eq!(
            doc.to_string(),
            r#"{"s":"a\"b\\c\nd\u0001é","n":null,"a":[1,false]}"#
        );
    }
}
