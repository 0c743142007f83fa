//! Parsing a Dovecot-style passwd-file:
//!
//! ```text
//! user:password:uid:gid:gecos:home:shell:extra_fields
//! ```
//!
//! Every field after the user name is optional. Blank lines and lines
//! starting with `#` are ignored; when a user appears twice, the first line
//! wins.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;

/// One user line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The user name as written (lowercased if the file was parsed so).
    pub user: String,
    /// The stored password, `{SCHEME}data` or bare; empty if missing.
    pub password: String,
    /// The fields after the password (uid, gid, gecos, home, shell, extra
    /// fields), as written. This plugin does not use them.
    pub other_fields: Vec<String>,
}

/// A parsed passwd-file.
#[derive(Debug, Default)]
pub struct PasswdFile {
    users: HashMap<String, Entry>,
    /// Lines that were neither blank, comments nor valid user lines.
    pub skipped_lines: usize,
}

impl PasswdFile {
    /// Parses the file's text. With `lowercase_users`, user names are
    /// lowercased (and then compared lowercased for duplicates).
    pub fn parse(text: &str, lowercase_users: bool) -> Self {
        let mut file = PasswdFile::default();
        for line in text.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split(':');
            let user = fields.next().unwrap_or_default();
            if !valid_user(user) {
                file.skipped_lines += 1;
                continue;
            }
            let user = if lowercase_users {
                user.to_lowercase()
            } else {
                user.to_owned()
            };
            if let MapEntry::Vacant(slot) = file.users.entry(user.clone()) {
                slot.insert(Entry {
                    user,
                    password: fields.next().unwrap_or_default().to_owned(),
                    other_fields: fields.map(str::to_owned).collect(),
                });
            }
        }
        file
    }

    /// Looks a user up by exact name.
    pub fn get(&self, user: &str) -> Option<&Entry> {
        self.users.get(user)
    }

    /// Number of distinct users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A user name must be non-empty and contain no `:` and no control
/// characters (NUL, CR, LF, ...).
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && !user.chars().any(|c| c == ':' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# Poplar users
alice:{PLAIN}wonderland:1000:1000:Alice Liddell:/home/alice:/bin/sh:userdb_quota_rule=*:storage=1G

bob:{SHA512-CRYPT}$6$salt$hash
   
carol
dave:
# bob again: the first line wins
bob:{PLAIN}second
:nouser
eve:pw:1:2:3:4:5:6:7:8\r
";

    #[test]
    fn parses_fields() {
        let f = PasswdFile::parse(SAMPLE, false);
        assert_eq!(f.len(), 5);
        let alice = f.get("alice").unwrap();
        assert_eq!(alice.password, "{PLAIN}wonderland");
        assert_eq!(
            alice.other_fields,
            [
                "1000",
                "1000",
                "Alice Liddell",
                "/home/alice",
                "/bin/sh",
                "userdb_quota_rule=*",
                "storage=1G"
            ]
        );
    }

    #[test]
    fn missing_fields_are_empty() {
        let f = PasswdFile::parse(SAMPLE, false);
        let carol = f.get("carol").unwrap();
        assert_eq!(carol.password, "");
        assert!(carol.other_fields.is_empty());
        let dave = f.get("dave").unwrap();
        assert_eq!(dave.password, "");
        assert!(dave.other_fields.is_empty());
    }

    #[test]
    fn extra_fields_and_crlf() {
        let f = PasswdFile::parse(SAMPLE, false);
        let eve = f.get("eve").unwrap();
        assert_eq!(eve.password, "pw");
        assert_eq!(eve.other_fields.len(), 8);
        assert_eq!(eve.other_fields.last().unwrap(), "8");
    }

    #[test]
    fn duplicates_first_wins() {
        let f = PasswdFile::parse(SAMPLE, false);
        assert_eq!(f.get("bob").unwrap().password, "{SHA512-CRYPT}$6$salt$hash");
    }

    #[test]
    fn comments_blanks_and_bad_lines() {
        let f = PasswdFile::parse(SAMPLE, false);
        assert!(f.get("# Poplar users").is_none());
        assert!(f.get("").is_none());
        assert_eq!(f.skipped_lines, 1); // ":nouser"
        assert!(PasswdFile::parse("\n# only a comment\n\n", false).is_empty());
    }

    #[test]
    fn case_handling() {
        let text = "Alice:{PLAIN}one\nalice:{PLAIN}two\n";
        let exact = PasswdFile::parse(text, false);
        assert_eq!(exact.len(), 2);
        assert!(exact.get("ALICE").is_none());
        let lower = PasswdFile::parse(text, true);
        assert_eq!(lower.len(), 1);
        let alice = lower.get("alice").unwrap();
        assert_eq!(alice.user, "alice");
        assert_eq!(alice.password, "{PLAIN}one");
    }

    #[test]
    fn user_name_rules() {
        assert!(valid_user("alice@example.org"));
        assert!(valid_user("Zoë"));
        assert!(!valid_user(""));
        assert!(!valid_user("a:b"));
        assert!(!valid_user("a\0b"));
        assert!(!valid_user("a\nb"));
        assert!(!valid_user("a\tb"));
    }
}
