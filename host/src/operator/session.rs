//! `poplar session list|kick`: who is logged in where, from the leases the
//! storage plugin holds (so it sees every node that shares the store), and
//! ending a user's sessions on whatever node holds them. A kicked session's
//! node learns at its next lease renewal (within a third of
//! `server.lease_ttl_secs`) that the lease is gone; the session then ends
//! with `-ERR [SYS/TEMP]` and deletes nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;

use super::exit::{EX_CONFIG, EX_NOMATCH, EX_TEMPFAIL};
use crate::config::Config;
use crate::plugin::storage::LeaseInfo;
use crate::plugin::{Runtime, StoragePlugin};

#[derive(Subcommand)]
pub enum SessionCmd {
    /// Show the sessions holding a maildrop: user, folder, node, session,
    /// client address, since when, and when the lease runs out unless
    /// renewed.
    List {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this user's sessions (a principal).
        #[arg(long)]
        user: Option<String>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End every session of a user (inbox and folders), on whatever node:
    /// their leases are broken, nothing they marked is deleted. Exit 1 if
    /// the user had none.
    Kick {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The user (a principal).
        user: String,
    },
}

/// Runs a `session` command: output on standard output, errors on standard
/// error, a sysexits code.
pub async fn run(cmd: SessionCmd) -> ExitCode {
    let (config, verb) = match &cmd {
        SessionCmd::List { config, .. } => (config, "list"),
        SessionCmd::Kick { config, .. } => (config, "kick"),
    };
    let fail = |code: u8, message: String| {
        eprintln!("poplar session {verb}: {message}");
        ExitCode::from(code)
    };
    let storage = match load(config).await {
        Ok(s) => s,
        Err(e) => return fail(EX_CONFIG, format!("{e:#}")),
    };
    match cmd {
        SessionCmd::List { user, json, .. } => match storage.leases(user.as_deref()).await {
            Ok(leases) if json => {
                println!("{}", render_json(&leases));
                ExitCode::SUCCESS
            }
            Ok(leases) => {
                print!("{}", render_table(&leases, now()));
                ExitCode::SUCCESS
            }
            Err(e) => fail(EX_TEMPFAIL, format!("cannot read the leases: {e}")),
        },
        SessionCmd::Kick { user, .. } => match storage.break_leases(&user).await {
            Ok(0) => {
                println!("{user} has no session");
                ExitCode::from(EX_NOMATCH)
            }
            Ok(n) => {
                println!(
                    "broke {n} lease{} of {user}: the session{} will end within a third of \
                     server.lease_ttl_secs, deleting nothing",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(EX_TEMPFAIL, format!("cannot break the leases: {e}")),
        },
    }
}

async fn load(config: &Path) -> anyhow::Result<std::sync::Arc<StoragePlugin>> {
    let config = Config::load(config)?;
    let runtime = Runtime::new(&config.runtime)?;
    StoragePlugin::load(&runtime, "storage", &config.storage).await
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The leases as an aligned table, with a header line.
fn render_table(leases: &[LeaseInfo], now: i64) -> String {
    let mut rows = vec![[
        "USER".to_string(),
        "FOLDER".into(),
        "NODE".into(),
        "SESSION".into(),
        "PEER".into(),
        "SINCE".into(),
        "EXPIRES".into(),
    ]];
    for l in leases {
        rows.push([
            l.mbox.user.clone(),
            l.mbox.folder.clone().unwrap_or_else(|| "-".into()),
            l.holder.node.clone(),
            l.holder.session.clone(),
            if l.holder.peer.is_empty() {
                "-".into()
            } else {
                l.holder.peer.clone()
            },
            format!("{}s ago", (now - l.since).max(0)),
            if l.expires <= now {
                "expired".into()
            } else {
                format!("in {}s", l.expires - now)
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_json(leases: &[LeaseInfo]) -> String {
    let items: Vec<String> = leases
        .iter()
        .map(|l| {
            format!(
                "{{\"user\":{},\"folder\":{},\"node\":{},\"incarnation\":{},\"session\":{},\
                 \"peer\":{},\"since\":{},\"expires\":{}}}",
                json_str(&l.mbox.user),
                l.mbox.folder.as_deref().map_or("null".into(), json_str),
                json_str(&l.holder.node),
                json_str(&l.holder.incarnation),
                json_str(&l.holder.session),
                json_str(&l.holder.peer),
                l.since,
                l.expires
            )
        })
        .collect();
    format!("{{\"sessions\":[{}]}}", items.join(","))
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::storage::{Holder, Mailbox};

    fn lease(user: &str, folder: Option<&str>, peer: &str) -> LeaseInfo {
        LeaseInfo {
            mbox: Mailbox {
                user: user.into(),
                folder: folder.map(Into::into),
            },
            holder: Holder {
                node: "pop1".into(),
                incarnation: "ab12".into(),
                session: "pop1/7".into(),
                peer: peer.into(),
            },
            since: 1000,
            expires: 1030,
        }
    }

    #[test]
    fn table_and_json() {
        let leases = [
            lease("alice", None, "192.0.2.1:5000"),
            lease("bob\"x", Some("Junk"), ""),
        ];
        let table = render_table(&leases, 1010);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("USER"), "{table}");
        assert!(
            lines[1].contains("alice") && lines[1].contains("10s ago"),
            "{table}"
        );
        assert!(lines[1].ends_with("in 20s"), "{table}");
        assert!(
            lines[2].contains("Junk") && lines[2].contains(" - "),
            "{table}"
        );
        assert!(render_table(&leases, 2000).contains("expired"));
        let json = render_json(&leases);
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["sessions"][0]["user"], "alice");
        assert_eq!(doc["sessions"][0]["folder"], serde_json::Value::Null);
        assert_eq!(doc["sessions"][1]["user"], "bob\"x");
        assert_eq!(doc["sessions"][1]["folder"], "Junk");
        assert_eq!(doc["sessions"][1]["expires"], 1030);
    }
}
