//! `filter-rules`: a Poplar filter plugin (world `filter-plugin`) that
//! classifies delivered mail with declarative rules from its configuration.
//!
//! This file is only glue between the WIT world and the plain Rust in
//! [`config`] (parsing and checking the rules) and [`eval`] (running them);
//! copy it as a template for your own filter.
//!
//! # Configuration (`[filter.<name>.config]`)
//!
//! Read with `host.config-toml`, and shown below as that table's own
//! document: in `poplar.toml`, `body_limit` goes under
//! `[filter.<name>.config]` and each `[[rules]]` is written
//! `[[filter.<name>.config.rules]]`.
//!
//! | key          | default | meaning |
//! |--------------|---------|---------|
//! | `body_limit` | `65536` | octets of body (after the header block) that body conditions see; at most 16 MiB |
//! | `rules`      | none    | array of tables, evaluated in order |
//!
//! Each `[[rules]]` table has an optional `name` (default `rule N`, counted
//! from 1; names must be unique), conditions, and an action.
//!
//! Conditions (each key present is one condition; one `header` per rule):
//!
//! | key                     | holds when |
//! |-------------------------|------------|
//! | `header` + `contains`   | some field named `header` (name case-insensitive) contains the text |
//! | `header` + `regex`      | some field named `header` matches the regex |
//! | `header` + `exists`     | a field named `header` is present (`true`) or absent (`false`) |
//! | `body_contains`         | the body prefix contains the text |
//! | `body_regex`            | the body prefix matches the regex (multi-line: `^`/`$` match at each line, CRLF or LF) |
//! | `size_over` / `size_under` | the whole message is larger / smaller than this many octets |
//! | `from` / `from_regex`   | the envelope sender (`MAIL FROM`, `""` for bounces) is / matches |
//! | `to` / `to_regex`       | the envelope recipient (`RCPT TO`, with any `+detail`) is / matches |
//!
//! | key        | default | meaning |
//! |------------|---------|---------|
//! | `any`      | `false` | the rule matches when any condition holds (default: all must) |
//! | `not`      | `false` | negates the result (after `any`) |
//! | `action`   | required | `accept`, `reject`, `temp-fail`, `discard`, `file-into`, `add-headers` |
//! | `reason`   | generic | reply text for `reject` and `temp-fail`; one line, at most 400 octets |
//! | `folder`   | required for `file-into` | target folder, e.g. `"Junk"` (no `/`, not starting with `.`) |
//! | `add_headers` | `{}` | header fields to prepend, e.g. `{ "X-Spam" = "yes" }`; allowed with any action, required for `add-headers` |
//! | `continue` | `false` | keep evaluating after this rule matched (only with `file-into` and `add-headers`) |
//!
//! All matching is case-insensitive: `contains` texts, regexes (turn it off
//! inside a pattern with `(?-i)`) and `from`/`to` (exact, ignoring ASCII
//! case; `<>` around an address are ignored). Regexes use the syntax of the
//! Rust `regex` crate, match anywhere unless anchored, and are refused if
//! their compiled form exceeds 1 MiB; body regexes run on the raw octets
//! (`.` does not match invalid UTF-8). A header field appearing several
//! times matches if any occurrence does; values are unfolded.
//!
//! Rules see the raw message: the body is the octets after the first empty
//! line, with no MIME decoding, so text inside base64 or quoted-printable
//! parts is not found. Header values are as the host parsed them (encoded
//! words such as `=?UTF-8?B?...?=` are not decoded either).
//!
//! `validate` refuses unknown keys, wrong types, invalid regexes, header
//! names that are not printable ASCII without `:`, header values with line
//! breaks, and keys that do not fit the action, naming the rule, e.g.
//! ``rule 2 (`spam-subject`): invalid `regex`: ...``.
//!
//! # Behaviour
//!
//! - Rules run in order. A rule with no condition always matches. The first
//!   matching rule decides, unless it has `continue = true`: then its
//!   `add_headers` are kept, its `folder` (for `file-into`) becomes the
//!   folder chosen so far, and evaluation goes on.
//! - The deciding rule's action is the verdict. `accept` and `add-headers`
//!   deliver into the folder chosen so far (if none, where the host would
//!   have stored it, normally the inbox); `file-into` delivers into its own
//!   folder. Header fields of every matching rule are added, in rule order
//!   (within a rule, by name).
//! - No deciding rule: deliver into the folder chosen so far, with the
//!   headers collected so far (plain accept when nothing matched).
//! - The message is read lazily and at most once: its size, headers and
//!   body only when a rule needing them is reached. For the body, the header
//!   block is read in 8 KiB steps up to the empty line (a header block over
//!   256 KiB counts as no body), then at most `body_limit` octets of body.
//! - The parsed rules are cached, keyed by the configuration text.
//! - `classify` answers with an error (so the host applies the chain
//!   entry's `on_failure` policy) only if the configuration no longer
//!   parses, which `validate` rules out for the text it checked.
//!
//! # Example
//!
//! ```toml
//! body_limit = 32768
//!
//! [[rules]]
//! name = "big"
//! size_over = 10_000_000
//! action = "reject"
//! reason = "Message too large for this mailbox"
//!
//! [[rules]]
//! name = "from-boss"
//! from = "boss@example.org"
//! action = "accept"
//!
//! [[rules]]
//! name = "newsletter"
//! header = "List-Id"
//! regex = '<news\.example\.org>$'
//! action = "add-headers"
//! add_headers = { "X-Category" = "newsletter" }
//! continue = true
//!
//! [[rules]]
//! name = "spam-subject"
//! any = true
//! header = "Subject"
//! contains = "viagra"
//! body_regex = '^Click here to (claim|unsubscribe)'
//! action = "file-into"
//! folder = "Junk"
//! add_headers = { "X-Spam" = "yes" }
//!
//! [[rules]]
//! name = "big-bounce"
//! from = ""
//! size_over = 1_000_000
//! action = "file-into"
//! folder = "Bounces"
//!
//! [[rules]]
//! name = "no-date"
//! header = "Date"
//! exists = false
//! action = "temp-fail"
//! reason = "Missing Date header"
//!
//! [[rules]]
//! name = "known-spammer"
//! from_regex = '@spam\.example$'
//! action = "discard"
//!
//! [[rules]]
//! name = "other-details"
//! not = true
//! to_regex = '^alice(\+(work|home))?@example\.org$'
//! action = "file-into"
//! folder = "Other"
//! ```

wit_bindgen::generate!({ path: "../../wit", world: "filter-plugin" });

pub mod config;
pub mod eval;

use std::sync::Mutex;

use config::Rules;
use eval::MessageSource;
use exports::poplar::plugin::filter::{Action, Envelope, Guest, Verdict};
use poplar::plugin::host::{self, Level};
use poplar::plugin::message::Message;
use poplar::plugin::types::Header;

/// The parsed rules and the config text they came from. Instances may be
/// reused or discarded at any time; this is only a cache.
static RULES: Mutex<Option<(String, Rules)>> = Mutex::new(None);

/// Runs `f` on the rules of the current configuration.
fn with_rules<T>(f: impl FnOnce(&Rules) -> T) -> Result<T, String> {
    let text = host::config_toml();
    let mut cache = RULES.lock().unwrap_or_else(|e| e.into_inner());
    match &*cache {
        Some((cached, rules)) if *cached == text => Ok(f(rules)),
        _ => {
            let rules = Rules::parse(&text)?;
            let result = f(&rules);
            *cache = Some((text, rules));
            Ok(result)
        }
    }
}

impl MessageSource for Message {
    fn size(&self) -> u64 {
        Message::size(self)
    }

    fn headers(&self) -> Vec<(String, String)> {
        Message::headers(self)
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect()
    }

    fn read(&self, offset: u64, len: u32) -> Vec<u8> {
        Message::read(self, offset, len)
    }
}

struct Plugin;

impl Guest for Plugin {
    fn validate() -> Result<(), String> {
        let count = with_rules(|rules| rules.rules.len())?;
        host::log(Level::Info, &format!("{count} rules loaded"));
        Ok(())
    }

    fn classify(env: Envelope, msg: &Message) -> Result<Verdict, String> {
        let envelope = eval::Envelope {
            mail_from: &env.mail_from,
            rcpt_to: &env.rcpt_to,
        };
        // A configuration error cannot happen once `validate` passed on the
        // same text; if it does, the chain entry's `on_failure` decides.
        let verdict = with_rules(|rules| rules.classify(envelope, msg))
            .map_err(|e| format!("filter configuration error: {e}"))?;
        if !verdict.matched.is_empty() {
            let rules = verdict.matched.join(", ");
            host::log(
                Level::Debug,
                &format!("matched {rules}: {:?}", verdict.action),
            );
        }
        let action = match verdict.action {
            config::Action::Accept | config::Action::AddHeaders => Action::Accept,
            config::Action::Reject(reason) => Action::Reject(reason),
            config::Action::TempFail(reason) => Action::TempFail(reason),
            config::Action::Discard => Action::Discard,
            config::Action::FileInto(folder) => Action::FileInto(folder),
        };
        let add_headers = verdict
            .add_headers
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect();
        Ok(Verdict {
            action,
            add_headers,
        })
    }
}

// Only the wasm build exports the component's functions: their symbol names
// cannot be linked into a native library (which `cargo test` builds).
#[cfg(target_arch = "wasm32")]
export!(Plugin);
