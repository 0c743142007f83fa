//! Dropping root: with `server.user` (and optionally `server.group`),
//! Poplar started as root binds its listeners and reads the TLS key, then
//! switches to that user for good (supplementary groups from the group
//! database, then the group, then the user), before it loads any plugin or
//! serves anyone. Started as root without `server.user` it runs as root and
//! says so in a warning (Dovecot refuses that only for its own helper
//! processes, not for the server).
//!
//! After the switch, [`check_access`] tells the operator at once when the
//! new user cannot reach what it needs: a plugin file or a granted
//! directory (fatal: the plugin could not work), the compiled-plugin cache
//! (a warning: every start then recompiles), and [`check_reloadable`] warns
//! when SIGHUP will not be able to re-read the config or TLS files.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Result, anyhow, bail};

use crate::config::Config;

/// The account `server.user` / `server.group` name.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// `server.group`, when it replaces the user's primary group.
    pub group: Option<String>,
}

/// Looks up `user` (and `group`) in the user and group databases.
pub fn lookup(user: &str, group: Option<&str>) -> Result<Account> {
    let (uid, primary) = getpwnam(user)?.ok_or_else(|| {
        anyhow!("server.user = {user:?}: no such user (create it, e.g. `useradd --system {user}`)")
    })?;
    let gid = match group {
        Some(g) => getgrnam(g)?.ok_or_else(|| anyhow!("server.group = {g:?}: no such group"))?,
        None => primary,
    };
    Ok(Account {
        user: user.to_string(),
        uid,
        gid,
        group: group.map(str::to_string),
    })
}

/// The account of the config's `server.user`, if set.
pub fn configured(config: &Config) -> Result<Option<Account>> {
    match &config.server.user {
        Some(u) => lookup(u, config.server.group.as_deref()).map(Some),
        None => Ok(None),
    }
}

/// Calls a `get*nam_r` function with a growing buffer; `None` when the
/// name does not exist.
fn with_buffer<T>(
    what: &str,
    mut call: impl FnMut(&mut Vec<libc::c_char>) -> (libc::c_int, Option<T>),
) -> Result<Option<T>> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        let (rc, found) = call(&mut buf);
        match rc {
            0 => return Ok(found),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            // Some NSS modules report "not found" as an error.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => bail!(
                "looking up {what}: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        }
    }
}

fn getpwnam(name: &str) -> Result<Option<(libc::uid_t, libc::gid_t)>> {
    let c = CString::new(name).map_err(|_| anyhow!("server.user {name:?} contains NUL"))?;
    with_buffer(&format!("user {name:?}"), |buf| {
        // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf's length is given.
        let rc =
            unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        (rc, (!out.is_null()).then_some((pw.pw_uid, pw.pw_gid)))
    })
}

fn getgrnam(name: &str) -> Result<Option<libc::gid_t>> {
    let c = CString::new(name).map_err(|_| anyhow!("server.group {name:?} contains NUL"))?;
    with_buffer(&format!("group {name:?}"), |buf| {
        // SAFETY: an all-zero group is a valid value for getgrnam_r to fill.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf's length is given.
        let rc =
            unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
        (rc, (!out.is_null()).then_some(gr.gr_gid))
    })
}

/// Becomes `account` for the rest of the process: supplementary groups,
/// group, user, in that order (all threads: the C library applies set*id
/// process-wide). Errors say why and what to do. Running as that user
/// already is fine.
pub fn drop_to(account: &Account) -> Result<()> {
    let Account { user, uid, gid, .. } = account;
    let (uid, gid) = (*uid, *gid);
    // SAFETY: these getters cannot fail and touch no memory.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid == uid && egid == gid {
        tracing::info!(user, uid, gid, "already running as server.user");
        return Ok(());
    }
    let failed = |step: &str| {
        let err = std::io::Error::last_os_error();
        let hint = if euid != 0 {
            format!(
                "; poplar runs as uid {euid}, not root: start it as root to switch users, \
                 or remove server.user to run as the current user"
            )
        } else {
            String::new()
        };
        anyhow!(
            "server.user = {user:?}: cannot switch to uid {uid} gid {gid}: {step} failed: {err}{hint}"
        )
    };
    let name = CString::new(user.as_str()).map_err(|_| anyhow!("server.user contains NUL"))?;
    // SAFETY: plain system calls on values we own.
    unsafe {
        if libc::initgroups(name.as_ptr(), gid) != 0 {
            return Err(failed("setting the supplementary groups (initgroups)"));
        }
        if libc::setgid(gid) != 0 {
            return Err(failed("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(failed("setuid"));
        }
        let now = (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        );
        if now != (uid, uid, gid, gid) {
            bail!("server.user = {user:?}: the switch did not take (uid/euid/gid/egid = {now:?})");
        }
        if uid != 0 && libc::setuid(0) == 0 {
            bail!(
                "server.user = {user:?}: root could be regained after dropping privileges; refusing to run"
            );
        }
    }
    tracing::info!(user, uid, gid, "dropped root privileges");
    Ok(())
}

/// Logs a warning when running as root without `server.user`.
pub fn warn_if_root() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        tracing::warn!(
            "running as root: set server.user (e.g. \"poplar\") so that Poplar drops root \
             after binding its listeners"
        );
    }
}

/// Whether the current user may access `path` (`mode`: `libc::R_OK` ...).
fn may(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// Who we are, for messages.
fn whoami() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is given.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc == 0 && !out.is_null() {
        // SAFETY: pw_name points into buf, NUL-terminated by getpwuid_r.
        let name = unsafe { CStr::from_ptr(pw.pw_name) }.to_string_lossy();
        format!("user {name} (uid {uid})")
    } else {
        format!("uid {uid}")
    }
}

/// Checks, as the user Poplar now runs as, that every plugin file and
/// granted directory is reachable (an error naming the key otherwise), and
/// warns when the compiled-plugin cache is not writable.
pub fn check_access(config: &Config) -> Result<()> {
    let who = whoami();
    let plugins = [
        ("auth".to_string(), &config.auth),
        ("storage".into(), &config.storage),
    ]
    .into_iter()
    .chain(
        config
            .filter
            .iter()
            .map(|(n, p)| (format!("filter.{n}"), p)),
    );
    for (key, plugin) in plugins {
        if !may(&plugin.path, libc::R_OK) {
            bail!(
                "{key}.path: {} is not readable by {who}: make it readable by server.user",
                plugin.path.display()
            );
        }
        for d in &plugin.dirs {
            if !may(&d.host, libc::X_OK) {
                bail!(
                    "{key}.dirs: {} is not accessible to {who}: give server.user access \
                     (e.g. chown -R it to that user)",
                    d.host.display()
                );
            }
            if !may(&d.host, libc::R_OK) {
                tracing::warn!(dir = %d.host.display(), "{key}.dirs: not readable by {who}");
            }
            if d.writable && !may(&d.host, libc::W_OK) {
                tracing::warn!(
                    dir = %d.host.display(),
                    "{key}.dirs: granted writable, but not writable by {who}; the plugin's writes will fail"
                );
            }
        }
    }
    if let Some(cache) = &config.runtime.cache_dir {
        let probe = if cache.exists() {
            Some(cache.as_path())
        } else {
            cache.ancestors().skip(1).find(|p| p.exists())
        };
        if let Some(p) = probe
            && !may(p, libc::W_OK | libc::X_OK)
        {
            tracing::warn!(
                dir = %cache.display(),
                "runtime.cache_dir is not writable by {who}: compiled plugins will not be \
                 cached, so every start compiles them again; give server.user that directory"
            );
        }
    }
    Ok(())
}

/// Warns when SIGHUP would fail because this user cannot re-read the
/// config file or the TLS files.
pub fn check_reloadable(config_path: &Path, config: &Config) {
    let who = whoami();
    let mut files = vec![("the config file", config_path)];
    if let Some(tls) = &config.tls {
        files.push(("tls.cert", tls.cert.as_path()));
        files.push(("tls.key", tls.key.as_path()));
    }
    for (what, path) in files {
        if !may(path, libc::R_OK) {
            tracing::warn!(
                file = %path.display(),
                "{what} is not readable by {who}: a reload (SIGHUP) will fail; make it readable \
                 by server.user (e.g. root:poplar, mode 0640)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_and_group_are_named() {
        let e = lookup("no-such-user-poplar-test", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.user") && e.contains("no such user"),
            "{e}"
        );
        let e = lookup("root", Some("no-such-group-poplar-test"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.group") && e.contains("no such group"),
            "{e}"
        );
        let root = lookup("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
    }
}
