//! The configuration reference, `poplar.toml(5)`, and what keeps it true.
//!
//! `examples/poplar.toml` is the documentation of every key: each key (set,
//! or commented out as `# key = value`) follows the comment lines that
//! explain it, and each table header follows its introduction. This module
//! reads that file into [`Documentation`], renders it as a manual page
//! ([`render_man`]), and lists every key [`Config`] accepts by asking serde
//! itself ([`Schema::of_config`]), so a test can fail when a key exists in
//! `config.rs` but not in the example, or the other way round.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};

use crate::config::Config;

/// The example configuration the page is made from.
pub const EXAMPLE: &str = include_str!("../../examples/poplar.toml");

/// One documented key: where it is, how the example writes it, and the
/// comment that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocKey {
    /// The dotted table it belongs to, e.g. `server` or `filter.rules`.
    pub table: String,
    pub key: String,
    /// The value as the example writes it (`"poplar"`, `[ ... ]`).
    pub value: String,
    /// Commented out in the example (`# key = value`): shown, not set.
    pub commented: bool,
    /// The comment lines before it, without `# `; empty lines separate
    /// paragraphs.
    pub text: Vec<String>,
}

/// One table of the example, in the order the file has them.
#[derive(Debug, Clone, Default)]
pub struct DocTable {
    /// As written: `server`, `listener` (for `[[listener]]`), `auth.config`.
    pub name: String,
    pub array: bool,
    /// The comment lines before the header.
    pub intro: Vec<String>,
    pub keys: Vec<DocKey>,
}

/// The example configuration file, read as documentation.
#[derive(Debug, Clone, Default)]
pub struct Documentation {
    /// The file's opening comment (before the first table).
    pub preamble: Vec<String>,
    /// Tables in file order; a table written twice (`[[listener]]`) is
    /// merged into its first occurrence.
    pub tables: Vec<DocTable>,
}

impl Documentation {
    /// Reads the example's comments, tables and keys.
    pub fn parse(text: &str) -> Result<Documentation, String> {
        let mut doc = Documentation::default();
        let mut pending: Vec<String> = Vec::new();
        // The table keys go into, and the one a commented-out header
        // (`# [quota.users.alice]`) opens for commented-out keys.
        let mut current: Option<usize> = None;
        let mut commented_table: Option<usize> = None;
        // Where the last blank line (not a blank comment line) fell in
        // `pending`: before the first table it ends the preamble.
        let mut blank_at = None;
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim_end();
            i += 1;
            if line.trim().is_empty() {
                if pending.last().is_some_and(|l| !l.is_empty()) {
                    pending.push(String::new());
                }
                blank_at = Some(pending.len());
                continue;
            }
            if let Some(comment) = line.trim_start().strip_prefix('#') {
                let comment = comment.strip_prefix(' ').unwrap_or(comment);
                if let Some((name, array)) = header(comment) {
                    let t = doc.table(&name, array, std::mem::take(&mut pending));
                    commented_table = Some(t);
                    continue;
                }
                if let Some((key, value)) = key_value(comment)
                    && parses(&key, &value)
                {
                    let Some(t) = commented_table.or(current) else {
                        return Err(format!("line {i}: commented key {key} before any table"));
                    };
                    doc.tables[t].push(key, value, true, std::mem::take(&mut pending));
                    continue;
                }
                // A rule like `# -----` separates; it documents nothing.
                if !comment.is_empty() && comment.chars().all(|c| c == '-') {
                    continue;
                }
                if comment.is_empty() {
                    if pending.last().is_some_and(|l| !l.is_empty()) {
                        pending.push(String::new());
                    }
                } else {
                    pending.push(comment.to_string());
                }
                continue;
            }
            if let Some((name, array)) = header(line) {
                if current.is_none() && doc.tables.is_empty() {
                    let at = blank_at
                        .filter(|&n| n <= pending.len())
                        .unwrap_or(pending.len());
                    let intro = pending.split_off(at);
                    doc.preamble = trim_paragraphs(std::mem::replace(&mut pending, intro));
                }
                let t = doc.table(&name, array, std::mem::take(&mut pending));
                current = Some(t);
                commented_table = None;
                continue;
            }
            let Some((key, mut value)) = key_value(line) else {
                return Err(format!(
                    "line {i}: neither a comment, a table nor a key: {line}"
                ));
            };
            // A value over several lines (an array) ends where it parses.
            while !parses(&key, &value) {
                let Some(next) = lines.get(i) else {
                    return Err(format!("key {key}: the value never ends"));
                };
                value.push('\n');
                value.push_str(next.trim_end());
                i += 1;
            }
            let Some(t) = current else {
                return Err(format!("line {i}: key {key} before any table"));
            };
            doc.tables[t].push(key, value, false, std::mem::take(&mut pending));
        }
        Ok(doc)
    }

    fn table(&mut self, name: &str, array: bool, intro: Vec<String>) -> usize {
        if let Some(t) = self.tables.iter().position(|t| t.name == name) {
            if self.tables[t].intro.is_empty() {
                self.tables[t].intro = trim_paragraphs(intro);
            }
            return t;
        }
        self.tables.push(DocTable {
            name: name.to_string(),
            array,
            intro: trim_paragraphs(intro),
            keys: Vec::new(),
        });
        self.tables.len() - 1
    }

    /// Every key path the example documents, set or commented out, with the
    /// keys inside inline tables and arrays of tables: `server.hostname`,
    /// `auth.dirs.host`, `delivery.chain.on_failure`.
    pub fn key_paths(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for t in &self.tables {
            // `[filter.rules]` documents `filter` too.
            let mut prefix = String::new();
            for part in t.name.split('.') {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(part);
                out.insert(prefix.clone());
            }
            for k in &t.keys {
                let path = format!("{}.{}", t.name, k.key);
                if let Ok(table) =
                    toml::from_str::<toml::Table>(&format!("{} = {}", k.key, k.value))
                    && let Some(value) = table.get(&k.key)
                {
                    inner_paths(&path, value, &mut out);
                }
                out.insert(path);
            }
        }
        out
    }
}

impl DocTable {
    fn push(&mut self, key: String, value: String, commented: bool, text: Vec<String>) {
        if self.keys.iter().any(|k| k.key == key) {
            return;
        }
        self.keys.push(DocKey {
            table: self.name.clone(),
            key,
            value,
            commented,
            text: trim_paragraphs(text),
        });
    }
}

fn inner_paths(path: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = format!("{path}.{k}");
                inner_paths(&p, v, out);
                out.insert(p);
            }
        }
        toml::Value::Array(items) => {
            for v in items {
                inner_paths(path, v, out);
            }
        }
        _ => {}
    }
}

/// `[name]` or `[[name]]` alone on a line: the table's dotted name.
fn header(line: &str) -> Option<(String, bool)> {
    let line = line.trim();
    let (inner, array) = match line.strip_prefix("[[") {
        Some(rest) => (rest.strip_suffix("]]")?, true),
        None => (line.strip_prefix('[')?.strip_suffix(']')?, false),
    };
    let ok = !inner.is_empty()
        && inner
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(is_bare_key_char));
    ok.then(|| (inner.to_string(), array))
}

/// `key = value`, with a bare key.
fn key_value(line: &str) -> Option<(String, String)> {
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(is_bare_key_char) || line.starts_with(' ') {
        return None;
    }
    Some((key.to_string(), value.trim().to_string()))
}

fn is_bare_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `key = value` is one complete TOML key-value pair (prose that
/// happens to contain ` = ` is not).
fn parses(key: &str, value: &str) -> bool {
    toml::from_str::<toml::Table>(&format!("{key} = {value}")).is_ok()
}

/// Drops empty lines at both ends.
fn trim_paragraphs(mut lines: Vec<String>) -> Vec<String> {
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let start = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    lines.drain(..start);
    lines
}

/// `poplar.toml(5)` in roff, from the example's comments.
pub fn render_man(doc: &Documentation, version: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        ".TH POPLAR.TOML 5 \"\" \"poplar {}\" \"Poplar manual\"",
        roff_line(version)
    );
    out.push_str(".SH NAME\npoplar.toml \\- configuration file of the Poplar POP3 server\n");
    out.push_str(".SH SYNOPSIS\n/etc/poplar/poplar.toml\n");
    out.push_str(".SH DESCRIPTION\n");
    out.push_str(
        "The configuration of \\fBpoplar\\fR(1) is one TOML file, given with \\fB\\-\\-config\\fR. \
         This page lists every table and key in the order of the annotated example \
         (\\fI/usr/share/doc/poplar/examples/poplar.toml\\fR), with the value the example uses. \
         Keys the example leaves commented out are marked so; unless the text says otherwise, \
         a key left out takes its default. \
         \\fBpoplar check\\-config\\fR \\fIFILE\\fR validates a file, its TLS files and its plugins.\n",
    );
    paragraphs(&mut out, &doc.preamble);
    out.push_str(".SH TABLES AND KEYS\n");
    for t in &doc.tables {
        let (open, close) = if t.array { ("[[", "]]") } else { ("[", "]") };
        let _ = writeln!(out, ".SS \"{open}{}{close}\"", roff_quoted(&t.name));
        paragraphs(&mut out, &t.intro);
        // A comment explains the key after it and the keys right after
        // that have none of their own (`user`, `group`): one paragraph.
        let mut keys = t.keys.iter().peekable();
        while let Some(first) = keys.next() {
            let _ = writeln!(out, ".TP\n{}", tag(first));
            while let Some(k) = keys.next_if(|k| k.text.is_empty()) {
                let _ = writeln!(out, ".TQ\n{}", tag(k));
            }
            body(&mut out, &first.text);
        }
    }
    out.push_str(".SH FILES\n");
    out.push_str(".TP\n/etc/poplar/poplar.toml\nThe configuration installed by the package.\n");
    out.push_str(
        ".TP\n/usr/lib/poplar/plugins/\nThe default plugins, with their SHA\\-256 in \\fISHA256SUMS\\fR.\n",
    );
    out.push_str(".SH SEE ALSO\n\\fBpoplar\\fR(1), \\fBpoplar\\-serve\\fR(1), \\fBpoplar\\-check\\-config\\fR(1), \\fBpoplar\\-plugin\\-check\\fR(1)\n");
    out
}

/// A key as the example writes it (the first line of a longer value).
fn tag(k: &DocKey) -> String {
    let first_line = k.value.lines().next().unwrap_or("");
    let shown = if k.value.contains('\n') {
        format!("{first_line} ...")
    } else {
        first_line.to_string()
    };
    let commented = if k.commented {
        " \\fI(commented out)\\fR"
    } else {
        ""
    };
    format!(
        "\\fB{}\\fR = {}{commented}",
        roff_line(&k.key),
        roff_line(&shown)
    )
}

/// Comment text as filled paragraphs; an indented line keeps its line.
fn paragraphs(out: &mut String, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    out.push_str(".PP\n");
    body(out, lines);
}

fn body(out: &mut String, lines: &[String]) {
    for line in lines {
        if line.is_empty() {
            out.push_str(".sp\n");
        } else if line.starts_with(' ') {
            let _ = writeln!(out, ".br\n{}", roff_line(line.trim_start()));
        } else {
            let _ = writeln!(out, "{}", roff_line(line));
        }
    }
}

/// Text as one roff input line: backslashes and hyphens escaped, and a
/// leading `.` or `'` kept from reading as a request.
fn roff_line(s: &str) -> String {
    // Words too long for a line (a SHA-256) may break every 32 characters.
    let mut breakable = String::with_capacity(s.len());
    let mut run = 0;
    for c in s.chars() {
        run = if c.is_whitespace() { 0 } else { run + 1 };
        if run > 32 {
            breakable.push('\u{1}');
            run = 1;
        }
        breakable.push(c);
    }
    let escaped = breakable
        .replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('\u{1}', "\\:");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn roff_quoted(s: &str) -> String {
    roff_line(s).replace('"', "\\(dq")
}

/// One node of the configuration's shape as serde sees it.
#[derive(Debug, Default, Clone)]
pub struct Schema {
    /// The Rust struct this table is (`PluginConfig`), if it is one.
    pub struct_name: Option<&'static str>,
    /// Keys of a struct; `*` for a map's keys (filter names, user names).
    pub children: BTreeMap<String, Schema>,
    /// Anything goes below (a plugin's own `config` table).
    pub free_form: bool,
}

impl Schema {
    /// Every key `Config` accepts, found by letting its `Deserialize`
    /// implementation ask for them.
    pub fn of_config() -> Result<Schema, String> {
        let mut root = Schema::default();
        Config::deserialize(Recorder { node: &mut root }).map_err(|e| e.0)?;
        Ok(root)
    }

    fn resolve(&self, path: &str) -> Option<Vec<&Schema>> {
        let mut trail = vec![self];
        let mut node = self;
        for part in path.split('.') {
            if node.free_form {
                return Some(trail);
            }
            node = node.children.get(part).or_else(|| node.children.get("*"))?;
            trail.push(node);
        }
        Some(trail)
    }

    /// Every struct field reachable from here, as `(struct, field)`, with
    /// the first key path where it appears.
    pub fn fields(&self) -> BTreeMap<(&'static str, String), String> {
        let mut out = BTreeMap::new();
        self.collect_fields("", &mut out);
        out
    }

    fn collect_fields(&self, path: &str, out: &mut BTreeMap<(&'static str, String), String>) {
        for (name, child) in &self.children {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if let Some(s) = self.struct_name {
                out.entry((s, name.clone())).or_insert_with(|| p.clone());
            }
            child.collect_fields(&p, out);
        }
    }

    /// Holds the example against the schema. Errors list the example's keys
    /// that `Config` does not have, and the fields of `Config` (by struct,
    /// since `[auth]`, `[storage]` and `[filter.NAME]` share theirs) that
    /// the example documents nowhere.
    pub fn check(&self, doc: &Documentation) -> Result<(), String> {
        let mut unknown = Vec::new();
        let mut documented = BTreeSet::new();
        for path in doc.key_paths() {
            let Some(trail) = self.resolve(&path) else {
                unknown.push(path);
                continue;
            };
            for (parent, (part, _)) in trail.iter().zip(path.split('.').zip(trail.iter().skip(1))) {
                if let Some(s) = parent.struct_name {
                    documented.insert((s, part.to_string()));
                }
            }
        }
        let missing: Vec<String> = self
            .fields()
            .into_iter()
            .filter(|(field, _)| !documented.contains(field))
            .map(|((s, f), path)| format!("{path} ({s}.{f})"))
            .collect();
        let mut report = String::new();
        if !unknown.is_empty() {
            let _ = write!(
                report,
                "examples/poplar.toml documents keys that host/src/config.rs does not accept \
                 (remove them, or add them to the config): {}. ",
                unknown.join(", ")
            );
        }
        if !missing.is_empty() {
            let _ = write!(
                report,
                "host/src/config.rs accepts keys that examples/poplar.toml does not document \
                 (add each, set or as `# key = value`, after a comment saying what it does): {}.",
                missing.join(", ")
            );
        }
        if report.is_empty() {
            Ok(())
        } else {
            Err(report)
        }
    }
}

/// The error of a [`Recorder`] run.
#[derive(Debug)]
struct RecordError(String);

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecordError {}

impl de::Error for RecordError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        RecordError(msg.to_string())
    }
}

/// A deserializer that has no data: it answers each request with a
/// placeholder, and notes the fields every struct asks for.
struct Recorder<'a> {
    node: &'a mut Schema,
}

/// A placeholder every scalar visitor of the config accepts: a socket
/// address parses from it, a path and a string take it.
const PLACEHOLDER: &str = "127.0.0.1:1";

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = RecordError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        // Only self-describing values (`toml::Value`) ask for "anything".
        self.node.free_form = true;
        visitor.visit_bool(false)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RecordError> {
        self.node.struct_name = Some(name);
        visitor.visit_map(Fields {
            node: self.node,
            keys: fields.iter().map(|f| f.to_string()).collect(),
            next: 0,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_map(Fields {
            node: self.node,
            keys: vec!["*".to_string()],
            next: 0,
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        // An array's elements describe the same key: no path segment.
        visitor.visit_seq(OneElement {
            node: Some(self.node),
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RecordError> {
        let first = variants.first().copied().unwrap_or("");
        visitor.visit_enum(first.into_deserializer())
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_bool(false)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_str(PLACEHOLDER)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_str(PLACEHOLDER)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_str(PLACEHOLDER)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_u64(1)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_u64(1)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_i64(1)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_i64(1)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_i64(1)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_i64(1)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_f64(1.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RecordError> {
        visitor.visit_f64(1.0)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct newtype_struct tuple
        tuple_struct ignored_any
    }
}

/// The keys of a struct (or `*` for a map), each value recorded under it.
struct Fields<'a> {
    node: &'a mut Schema,
    keys: Vec<String>,
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = RecordError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, RecordError> {
        let Some(key) = self.keys.get(self.next) else {
            return Ok(None);
        };
        let key: de::value::StrDeserializer<'_, RecordError> = key.as_str().into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, RecordError> {
        let key = self.keys[self.next].clone();
        self.next += 1;
        let child = self.node.children.entry(key).or_default();
        seed.deserialize(Recorder { node: child })
    }
}

/// A sequence of one element, recorded at the sequence's own node.
struct OneElement<'a> {
    node: Option<&'a mut Schema>,
}

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = RecordError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, RecordError> {
        match self.node.take() {
            Some(node) => seed.deserialize(Recorder { node }).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_sees_nested_tables_maps_and_free_form_plugin_settings() {
        let schema = Schema::of_config().unwrap();
        for path in [
            "server.hostname",
            "listener.address",
            "listener.proxy_protocol",
            "tls.key",
            "auth.dirs.guest",
            "filter.rules.memory_mb",
            "delivery.chain.on_failure",
            "quota.users.alice.bytes",
            "auth.config.anything.below",
        ] {
            assert!(schema.resolve(path).is_some(), "{path}");
        }
        for path in ["server.nope", "auth.dirs.nope", "quota.users.alice.nope"] {
            assert!(schema.resolve(path).is_none(), "{path}");
        }
        let fields = schema.fields();
        assert_eq!(
            fields.get(&("PluginConfig", "sha256".to_string())),
            Some(&"auth.sha256".to_string())
        );
    }

    /// The test that keeps the example (and so the manual page made from
    /// it) and `config.rs` together.
    #[test]
    fn every_config_key_is_documented_in_the_example_and_back() {
        let doc = Documentation::parse(EXAMPLE).unwrap();
        Schema::of_config().unwrap().check(&doc).unwrap();
    }

    #[test]
    fn the_parser_finds_every_key_the_example_sets() {
        // What TOML itself sees set must be among the documented keys.
        let doc = Documentation::parse(EXAMPLE).unwrap();
        let documented = doc.key_paths();
        let parsed: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let mut set = BTreeSet::new();
        inner_paths("", &toml::Value::Table(parsed), &mut set);
        for path in set {
            let path = path.trim_start_matches('.').to_string();
            assert!(documented.contains(&path), "{path} is set but not found");
        }
    }

    #[test]
    fn a_key_missing_from_either_side_is_named() {
        let schema = Schema::of_config().unwrap();
        let doc = Documentation::parse(
            "[server]\n# The name.\nhostname = \"x\"\n# A key nobody reads.\nflavour = \"mint\"\n",
        )
        .unwrap();
        let e = schema.check(&doc).unwrap_err();
        assert!(e.contains("server.flavour"), "{e}");
        assert!(
            e.contains("server.max_connections (ServerConfig.max_connections)"),
            "{e}"
        );
        assert!(!e.contains("server.hostname ("), "{e}");
    }

    #[test]
    fn comments_attach_to_the_key_or_table_after_them() {
        let doc = Documentation::parse(
            "# Preamble.\n\n# About the server.\n[server]\n# The name.\n# Two lines.\n\
             hostname = \"x\"\n# Become this user.\n# user = \"poplar\"\n# group = \"poplar\"\n\
             # Prose with a = sign, not a key.\n# [quota.users.alice]\n# messages = 5\n\
             [delivery]\nchain = [\n  { filter = \"a\" },\n]\n",
        )
        .unwrap();
        assert_eq!(doc.preamble, vec!["Preamble."]);
        let server = &doc.tables[0];
        assert_eq!(server.intro, vec!["About the server."]);
        assert_eq!(server.keys[0].text, vec!["The name.", "Two lines."]);
        assert_eq!(server.keys[1].key, "user");
        assert!(server.keys[1].commented);
        assert!(server.keys[2].text.is_empty(), "group shares user's text");
        let alice = &doc.tables[1];
        assert_eq!(alice.name, "quota.users.alice");
        assert_eq!(alice.intro, vec!["Prose with a = sign, not a key."]);
        assert_eq!(alice.keys[0].key, "messages");
        assert!(doc.key_paths().contains("delivery.chain.filter"));
    }

    #[test]
    fn the_page_escapes_roff() {
        let doc =
            Documentation::parse("[a]\n# .starts with a dot, has a \\ and -dashes\nb = \"c\"\n")
                .unwrap();
        let page = render_man(&doc, "1.0");
        assert!(
            page.contains("\\&.starts with a dot, has a \\e and \\-dashes\n"),
            "{page}"
        );
        assert!(page.contains(".SS \"[a]\"\n"), "{page}");
        assert!(page.contains(".TP\n\\fBb\\fR = \"c\"\n"), "{page}");
    }
}
