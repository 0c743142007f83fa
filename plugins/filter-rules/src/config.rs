//! The rules configuration: parsed from TOML with serde, then checked and
//! compiled into [`Rules`] (regexes built once, every mistake reported with
//! the rule's number and name).

use std::collections::{BTreeMap, HashSet};

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

/// Octets of body scanned when `body_limit` is not set.
pub const DEFAULT_BODY_LIMIT: u64 = 64 * 1024;
/// Largest accepted `body_limit`.
pub const MAX_BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// Largest compiled form of one regex.
const REGEX_SIZE_LIMIT: usize = 1024 * 1024;
/// Largest lazy DFA cache of one regex (past it, the regex runs slower).
const DFA_CACHE_LIMIT: usize = 256 * 1024;
/// Longest `reason` (it ends up in an LMTP reply line).
const MAX_REASON: usize = 400;
/// Longest header line a rule may add (RFC 5322 line limit).
const MAX_HEADER_LINE: usize = 998;

/// A checked, compiled rule set.
#[derive(Debug)]
pub struct Rules {
    /// Octets of body, after the header block, that body conditions see.
    pub body_limit: u64,
    pub rules: Vec<Rule>,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// The configured `name`, or `rule N` (1-based).
    pub name: String,
    pub conditions: Vec<Condition>,
    /// Match when any condition holds (default: all must hold).
    pub any: bool,
    /// Negate the combined result.
    pub not: bool,
    pub action: Action,
    /// Header fields to add, in name order.
    pub add_headers: Vec<(String, String)>,
    /// Keep evaluating later rules after this one matched.
    pub keep_going: bool,
}

/// One test on the message or its envelope.
#[derive(Debug)]
pub enum Condition {
    /// `from`: the envelope sender equals this address (ASCII case ignored).
    FromIs(String),
    /// `from_regex`
    FromMatches(Regex),
    /// `to`: the envelope recipient equals this address.
    ToIs(String),
    /// `to_regex`
    ToMatches(Regex),
    /// `size_over`: the message is larger than this many octets.
    SizeOver(u64),
    /// `size_under`: the message is smaller than this many octets.
    SizeUnder(u64),
    /// `header` + `exists`: a field with this name is present (or absent).
    HeaderExists { name: String, present: bool },
    /// `header` + `contains`/`regex`: some field with this name matches.
    HeaderMatches { name: String, pattern: Regex },
    /// `body_contains`/`body_regex`: the body prefix matches.
    Body(Regex),
}

impl Condition {
    /// Whether the condition needs the message body.
    pub fn reads_body(&self) -> bool {
        matches!(self, Condition::Body(_))
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    Reject(String),
    TempFail(String),
    Discard,
    FileInto(String),
    /// Like `Accept`, but the rule must have `add_headers`.
    AddHeaders,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_body_limit")]
    body_limit: u64,
    #[serde(default)]
    rules: Vec<toml::Table>,
}

fn default_body_limit() -> u64 {
    DEFAULT_BODY_LIMIT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    header: Option<String>,
    contains: Option<String>,
    regex: Option<String>,
    exists: Option<bool>,
    body_contains: Option<String>,
    body_regex: Option<String>,
    size_over: Option<u64>,
    size_under: Option<u64>,
    from: Option<String>,
    from_regex: Option<String>,
    to: Option<String>,
    to_regex: Option<String>,
    #[serde(default)]
    any: bool,
    #[serde(default)]
    not: bool,
    action: RawAction,
    reason: Option<String>,
    folder: Option<String>,
    #[serde(default)]
    add_headers: BTreeMap<String, String>,
    #[serde(default, rename = "continue")]
    keep_going: bool,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawAction {
    Accept,
    Reject,
    TempFail,
    Discard,
    FileInto,
    AddHeaders,
}

impl Rules {
    /// Parses and checks the plugin's config table (a TOML document).
    pub fn parse(text: &str) -> Result<Rules, String> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| format!("invalid configuration: {e}"))?;
        if raw.body_limit > MAX_BODY_LIMIT {
            return Err(format!(
                "`body_limit` = {} is larger than the maximum {MAX_BODY_LIMIT}",
                raw.body_limit
            ));
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut names = HashSet::new();
        for (i, table) in raw.rules.into_iter().enumerate() {
            // Name the rule in errors before anything else is checked.
            let label = match table.get("name").and_then(|v| v.as_str()) {
                Some(name) => format!("rule {} (`{name}`)", i + 1),
                None => format!("rule {}", i + 1),
            };
            let rule = compile_rule(i, table).map_err(|e| format!("{label}: {e}"))?;
            if !names.insert(rule.name.clone()) {
                return Err(format!("{label}: another rule has the same name"));
            }
            if raw.body_limit == 0 && rule.conditions.iter().any(Condition::reads_body) {
                return Err(format!(
                    "{label}: has a body condition but `body_limit` is 0"
                ));
            }
            rules.push(rule);
        }
        Ok(Rules {
            body_limit: raw.body_limit,
            rules,
        })
    }
}

fn compile_rule(index: usize, table: toml::Table) -> Result<Rule, String> {
    let raw: RawRule = toml::Value::Table(table)
        .try_into()
        // Shown as "<message> in `<key>`" (the key path follows a line break).
        .map_err(|e: toml::de::Error| e.to_string().trim().replace('\n', " "))?;
    let name = match raw.name {
        Some(name) if name.trim().is_empty() => return Err("`name` is empty".into()),
        Some(name) => name,
        None => format!("rule {}", index + 1),
    };

    let mut conditions = Vec::new();
    if let Some(from) = raw.from {
        conditions.push(Condition::FromIs(bare_address(&from).to_string()));
    }
    if let Some(pattern) = &raw.from_regex {
        conditions.push(Condition::FromMatches(compile_regex(
            "from_regex",
            pattern,
            false,
        )?));
    }
    if let Some(to) = raw.to {
        conditions.push(Condition::ToIs(bare_address(&to).to_string()));
    }
    if let Some(pattern) = &raw.to_regex {
        conditions.push(Condition::ToMatches(compile_regex(
            "to_regex", pattern, false,
        )?));
    }
    if let Some(n) = raw.size_over {
        conditions.push(Condition::SizeOver(n));
    }
    if let Some(n) = raw.size_under {
        conditions.push(Condition::SizeUnder(n));
    }
    if let Some(header) = raw.header {
        check_field_name("header", &header)?;
        let condition = match (raw.contains, raw.regex, raw.exists) {
            (Some(text), None, None) => Condition::HeaderMatches {
                name: header,
                pattern: substring("contains", &text)?,
            },
            (None, Some(pattern), None) => Condition::HeaderMatches {
                name: header,
                pattern: compile_regex("regex", &pattern, false)?,
            },
            (None, None, Some(present)) => Condition::HeaderExists {
                name: header,
                present,
            },
            _ => {
                return Err("`header` needs exactly one of `contains`, `regex` or `exists`".into());
            }
        };
        conditions.push(condition);
    } else if raw.contains.is_some() || raw.regex.is_some() || raw.exists.is_some() {
        let hint = "use `body_contains`/`body_regex` for the body";
        return Err(format!(
            "`contains`, `regex` and `exists` need `header`; {hint}"
        ));
    }
    if let Some(text) = &raw.body_contains {
        conditions.push(Condition::Body(substring("body_contains", text)?));
    }
    if let Some(pattern) = &raw.body_regex {
        conditions.push(Condition::Body(compile_regex("body_regex", pattern, true)?));
    }
    if conditions.is_empty() && (raw.any || raw.not) {
        return Err("`any` and `not` need at least one condition".into());
    }

    let action = match raw.action {
        RawAction::Accept => Action::Accept,
        RawAction::Reject => Action::Reject(reason(&raw.reason, "Message rejected")?),
        RawAction::TempFail => {
            Action::TempFail(reason(&raw.reason, "Message deferred, try again later")?)
        }
        RawAction::Discard => Action::Discard,
        RawAction::FileInto => match &raw.folder {
            Some(folder) => {
                check_folder(folder)?;
                Action::FileInto(folder.clone())
            }
            None => return Err("action \"file-into\" needs `folder`".into()),
        },
        RawAction::AddHeaders if raw.add_headers.is_empty() => {
            return Err("action \"add-headers\" needs `add_headers`".into());
        }
        RawAction::AddHeaders => Action::AddHeaders,
    };
    let rejects = matches!(raw.action, RawAction::Reject | RawAction::TempFail);
    if raw.reason.is_some() && !rejects {
        return Err("`reason` only goes with action \"reject\" or \"temp-fail\"".into());
    }
    if raw.folder.is_some() && raw.action != RawAction::FileInto {
        return Err("`folder` only goes with action \"file-into\"".into());
    }
    if raw.keep_going && !matches!(raw.action, RawAction::FileInto | RawAction::AddHeaders) {
        return Err(
            "`continue = true` only goes with action \"file-into\" or \"add-headers\"".into(),
        );
    }

    let mut add_headers = Vec::with_capacity(raw.add_headers.len());
    for (field, value) in raw.add_headers {
        check_field_name("add_headers", &field)?;
        check_field_value(&field, &value)?;
        add_headers.push((field, value));
    }

    Ok(Rule {
        name,
        conditions,
        any: raw.any,
        not: raw.not,
        action,
        add_headers,
        keep_going: raw.keep_going,
    })
}

/// An address without the angle brackets of SMTP syntax.
pub fn bare_address(address: &str) -> &str {
    let trimmed = address.trim();
    trimmed
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(trimmed)
}

/// Compiles a user regex: case-insensitive, bounded in size. Body regexes
/// are multi-line (`^`/`$` match at every line, CRLF or LF).
fn compile_regex(key: &str, pattern: &str, body: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .multi_line(body)
        .crlf(body)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(DFA_CACHE_LIMIT)
        .build()
        .map_err(|e| format!("invalid `{key}`: {e}"))
}

/// A case-insensitive substring search, compiled as an escaped regex so
/// that case folding is Unicode-aware and the same as for `regex`.
fn substring(key: &str, text: &str) -> Result<Regex, String> {
    if text.is_empty() {
        return Err(format!("`{key}` is empty (it would match every message)"));
    }
    compile_regex(key, &regex::escape(text), false)
}

fn reason(reason: &Option<String>, default: &str) -> Result<String, String> {
    let Some(reason) = reason else {
        return Ok(default.to_string());
    };
    if reason.trim().is_empty() {
        return Err("`reason` is empty".into());
    }
    if reason.len() > MAX_REASON {
        return Err(format!("`reason` is longer than {MAX_REASON} octets"));
    }
    if reason.chars().any(char::is_control) {
        return Err("`reason` contains a line break or control character".into());
    }
    Ok(reason.clone())
}

fn check_folder(folder: &str) -> Result<(), String> {
    let bad = folder.is_empty()
        || folder.len() > 255
        || folder.starts_with('.')
        || folder.contains('/')
        || folder.chars().any(char::is_control);
    if bad {
        return Err(format!(
            "invalid `folder` {folder:?}: use 1 to 255 octets, no `/` or control \
             characters, not starting with `.`"
        ));
    }
    Ok(())
}

/// A header field name: printable US-ASCII except `:` (RFC 5322 `ftext`).
fn check_field_name(key: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !ok {
        return Err(format!(
            "invalid header name {name:?} in `{key}`: use printable ASCII without \
             spaces or `:`"
        ));
    }
    Ok(())
}

/// A header field value to add: one line, no control characters but tab.
fn check_field_value(name: &str, value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "value of header `{name}` in `add_headers` contains a line break or \
             control character"
        ));
    }
    if name.len() + 2 + value.len() > MAX_HEADER_LINE {
        return Err(format!(
            "header `{name}` in `add_headers` is longer than {MAX_HEADER_LINE} octets"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        match Rules::parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e,
        }
    }

    fn assert_error(text: &str, expected: &str) {
        let e = error(text);
        assert!(e.contains(expected), "{e:?} does not contain {expected:?}");
    }

    /// The `# Example` block of the crate documentation.
    fn doc_example() -> String {
        let doc = include_str!("lib.rs");
        let start = doc.find("# Example").expect("example section");
        let block = doc[start..].split("```toml\n").nth(1).expect("toml block");
        let block = block.split("//! ```").next().expect("block end");
        block
            .lines()
            .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn empty_config_accepts_everything() {
        let rules = Rules::parse("").unwrap();
        assert_eq!(rules.body_limit, DEFAULT_BODY_LIMIT);
        assert!(rules.rules.is_empty());
    }

    #[test]
    fn documented_example_is_valid() {
        let rules = Rules::parse(&doc_example()).unwrap();
        assert_eq!(rules.body_limit, 32768);
        let names: Vec<_> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "big",
                "from-boss",
                "newsletter",
                "spam-subject",
                "big-bounce",
                "no-date",
                "known-spammer",
                "other-details"
            ]
        );
        let spam = &rules.rules[3];
        assert!(spam.any);
        assert_eq!(spam.conditions.len(), 2);
        assert_eq!(spam.action, Action::FileInto("Junk".into()));
        assert_eq!(spam.add_headers, [("X-Spam".into(), "yes".into())]);
        assert!(rules.rules[2].keep_going);
        assert_eq!(
            rules.rules[0].action,
            Action::Reject("Message too large for this mailbox".into())
        );
    }

    #[test]
    fn parses_every_key() {
        let rules = Rules::parse(
            r#"
            [[rules]]
            header = "X-Flag"
            exists = true
            from = "<A@Example.org>"
            from_regex = "a@"
            to = "b@example.org"
            to_regex = "b@"
            size_over = 10
            size_under = 20
            body_contains = "x"
            not = true
            action = "temp-fail"
            "#,
        )
        .unwrap();
        let rule = &rules.rules[0];
        assert_eq!(rule.name, "rule 1");
        assert_eq!(rule.conditions.len(), 8);
        assert!(matches!(&rule.conditions[0], Condition::FromIs(a) if a == "A@Example.org"));
        assert!(rule.not && !rule.any && !rule.keep_going);
        assert_eq!(
            rule.action,
            Action::TempFail("Message deferred, try again later".into())
        );
    }

    #[test]
    fn reports_toml_and_top_level_errors() {
        assert_error("rules = [", "invalid configuration");
        assert_error("body_limt = 5", "unknown field `body_limt`");
        assert_error("body_limit = -1", "invalid configuration");
        assert_error("body_limit = 20000000", "`body_limit` = 20000000 is larger");
        assert_error("rules = 3", "invalid configuration");
        assert_error("rules = [1]", "invalid configuration");
    }

    #[test]
    fn names_the_rule_in_errors() {
        let e = error(
            r#"
            [[rules]]
            action = "accept"
            [[rules]]
            name = "spam-subject"
            header = "Subject"
            regex = "(unclosed"
            action = "discard"
            "#,
        );
        assert!(
            e.starts_with("rule 2 (`spam-subject`): invalid `regex`:"),
            "{e}"
        );
        assert_error(
            "[[rules]]\naction = 'accept'\n[[rules]]\nsize_over = 'big'\naction = 'discard'",
            "rule 2: invalid type: string \"big\", expected u64 in `size_over`",
        );
    }

    #[test]
    fn reports_rule_key_errors() {
        let cases = [
            (
                "contians = 'x'\naction = 'accept'",
                "unknown field `contians`",
            ),
            ("size_over = 5", "missing field `action`"),
            ("action = 'bounce'", "unknown variant `bounce`"),
            ("any = 'yes'\naction = 'accept'", "invalid type"),
            ("name = ' '\naction = 'accept'", "`name` is empty"),
            ("contains = 'x'\naction = 'accept'", "need `header`"),
            ("exists = true\naction = 'accept'", "need `header`"),
            ("header = 'Subject'\naction = 'accept'", "exactly one of"),
            (
                "header = 'Subject'\ncontains = 'a'\nregex = 'b'\naction = 'accept'",
                "exactly one of",
            ),
            (
                "header = 'Sub ject'\nexists = true\naction = 'accept'",
                "invalid header name",
            ),
            (
                "header = 'Subject:'\nexists = true\naction = 'accept'",
                "invalid header name",
            ),
            (
                "header = ''\nexists = true\naction = 'accept'",
                "invalid header name",
            ),
            (
                "header = 'S'\ncontains = ''\naction = 'accept'",
                "`contains` is empty",
            ),
            (
                "body_contains = ''\naction = 'accept'",
                "`body_contains` is empty",
            ),
            (
                "body_regex = '['\naction = 'accept'",
                "invalid `body_regex`",
            ),
            (
                "from_regex = '('\naction = 'accept'",
                "invalid `from_regex`",
            ),
            ("to_regex = '\\'\naction = 'accept'", "invalid `to_regex`"),
            (
                "any = true\naction = 'accept'",
                "need at least one condition",
            ),
            (
                "not = true\naction = 'accept'",
                "need at least one condition",
            ),
            ("action = 'accept'\nreason = 'x'", "`reason` only goes with"),
            ("action = 'reject'\nreason = ''", "`reason` is empty"),
            ("action = 'reject'\nreason = \"a\\r\\nb\"", "line break"),
            ("action = 'file-into'", "needs `folder`"),
            (
                "action = 'discard'\nfolder = 'Junk'",
                "`folder` only goes with",
            ),
            ("action = 'file-into'\nfolder = '.Junk'", "invalid `folder`"),
            ("action = 'file-into'\nfolder = 'a/b'", "invalid `folder`"),
            ("action = 'file-into'\nfolder = ''", "invalid `folder`"),
            ("action = 'add-headers'", "needs `add_headers`"),
            (
                "action = 'reject'\ncontinue = true",
                "`continue = true` only goes",
            ),
            (
                "action = 'accept'\ncontinue = true",
                "`continue = true` only goes",
            ),
            (
                "action = 'accept'\nadd_headers = { 'X A' = '1' }",
                "invalid header name",
            ),
            (
                "action = 'accept'\nadd_headers = { 'X-A' = \"1\\nX-B: 2\" }",
                "line break",
            ),
            (
                "action = 'accept'\nadd_headers = { 'X-A' = \"\\u0000\" }",
                "control",
            ),
            (
                "action = 'accept'\nadd_headers = { 'X-A' = 1 }",
                "expected a string in `add_headers.X-A`",
            ),
        ];
        for (rule, expected) in cases {
            let e = error(&format!("[[rules]]\n{rule}"));
            assert!(e.starts_with("rule 1"), "{e}");
            assert!(e.contains(expected), "{rule}: {e:?} lacks {expected:?}");
        }
        let long = "x".repeat(401);
        assert_error(
            &format!("[[rules]]\naction = 'temp-fail'\nreason = '{long}'"),
            "longer than 400",
        );
        let long = "x".repeat(995);
        assert_error(
            &format!("[[rules]]\naction = 'accept'\nadd_headers = {{ X-A = '{long}' }}"),
            "longer than 998",
        );
    }

    #[test]
    fn refuses_duplicate_names_and_useless_body_rules() {
        assert_error(
            "[[rules]]\nname = 'a'\naction = 'accept'\n[[rules]]\nname = 'a'\naction = 'discard'",
            "rule 2 (`a`): another rule has the same name",
        );
        assert_error(
            "body_limit = 0\n[[rules]]\nbody_contains = 'x'\naction = 'discard'",
            "rule 1: has a body condition but `body_limit` is 0",
        );
        assert!(Rules::parse("body_limit = 0\n[[rules]]\naction = 'discard'").is_ok());
    }

    #[test]
    fn bounds_regex_size() {
        assert_error(
            "[[rules]]\nname = 'huge'\nbody_regex = '(\\w{50}){50}'\naction = 'discard'",
            "rule 1 (`huge`): invalid `body_regex`",
        );
    }

    #[test]
    fn strips_angle_brackets() {
        assert_eq!(bare_address("<a@b>"), "a@b");
        assert_eq!(bare_address(" a@b "), "a@b");
        assert_eq!(bare_address("<>"), "");
    }
}
