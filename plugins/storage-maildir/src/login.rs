//! The user's last login, for `LOGIN-DELAY` (RFC 2449) across nodes and
//! restarts: `<root>/<user>/poplar-login` holds the time of the last
//! successful `open` of any of the user's mailboxes, in Unix seconds.

use std::path::Path;

use crate::error::Result;
use crate::files::{read_optional, replace_file};

/// The last-login file in a user's directory.
pub const LOGIN_FILE: &str = "poplar-login";

/// The time of the user's last login, if one was recorded (a file that
/// does not parse counts as none).
pub fn last_login(user_dir: &Path) -> Result<Option<i64>> {
    let Some(bytes) = read_optional(&user_dir.join(LOGIN_FILE))? else {
        return Ok(None);
    };
    Ok(std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok()))
}

/// Records a login at `now`. Not synced: a login forgotten in a crash only
/// lets the next one in sooner.
pub fn record_login(user_dir: &Path, now: i64) -> Result<()> {
    replace_file(
        &user_dir.join(LOGIN_FILE),
        format!("{now}\n").as_bytes(),
        false,
    )
}

/// The seconds still to wait before a login is allowed, if the last one
/// (at `last`) was fewer than `delay` seconds before `now`. A last login in
/// the future (a clock set back) waits at most `delay`.
pub fn wait_left(last: Option<i64>, delay: Option<u32>, now: i64) -> Option<u32> {
    let (last, delay) = (last?, i64::from(delay?));
    let elapsed = now.saturating_sub(last).max(0);
    (elapsed < delay).then(|| (delay - elapsed) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(last_login(dir).unwrap(), None);
        record_login(dir, 1000).unwrap();
        assert_eq!(last_login(dir).unwrap(), Some(1000));
        record_login(dir, 1500).unwrap();
        assert_eq!(last_login(dir).unwrap(), Some(1500));
        std::fs::write(dir.join(LOGIN_FILE), b"garbage").unwrap();
        assert_eq!(last_login(dir).unwrap(), None);

        assert_eq!(wait_left(Some(1000), Some(300), 1100), Some(200));
        assert_eq!(wait_left(Some(1000), Some(300), 1300), None);
        assert_eq!(wait_left(Some(1000), Some(300), 1299), Some(1));
        assert_eq!(wait_left(None, Some(300), 1100), None);
        assert_eq!(wait_left(Some(1000), None, 1001), None);
        assert_eq!(wait_left(Some(1000), Some(0), 1000), None);
        assert_eq!(wait_left(Some(9000), Some(300), 1000), Some(300));
    }
}
