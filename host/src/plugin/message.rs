//! The `message` resource: a message being delivered, owned by the host and
//! read by plugins in bounded ranges.

use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};
use wasmtime::component::Resource;

use super::bindings::auth::poplar::plugin::types::Header;
use super::bindings::storage::poplar::plugin::message::{Host, HostMessage as HostMessageApi};
use super::state::PluginState;

/// Largest range one `read` call returns.
pub const MAX_READ: u32 = 1024 * 1024;

/// A message handed to plugins. Cheap to clone: the bytes are shared.
/// Header fields added at delivery (Return-Path, filter headers) live in a
/// separate prefix, so adding them never copies the message.
#[derive(Debug, Clone)]
pub struct HostMessage {
    prefix: Arc<[u8]>,
    bytes: Arc<[u8]>,
    headers: Arc<[(String, String)]>,
    /// Offset of the body in `bytes`.
    body: usize,
    /// SHA-256 of the whole message in hex, computed on first use.
    digest: Arc<OnceLock<String>>,
}

/// How line endings are stored (`delivery.line_endings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEndings {
    /// Every CRLF becomes LF (Maildir's convention; the default).
    Lf,
    /// As received (CRLF over LMTP).
    AsReceived,
}

impl HostMessage {
    /// Wraps raw message bytes and parses the header block once.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        let (headers, body) = parse_headers(&bytes);
        HostMessage {
            prefix: Arc::from(&b""[..]),
            bytes,
            headers: headers.into(),
            body,
            digest: Arc::default(),
        }
    }

    /// The message as it is to be stored: with `LineEndings::Lf` every CRLF
    /// becomes LF (one copy of the message); otherwise unchanged.
    pub fn stored_form(&self, endings: LineEndings) -> HostMessage {
        if endings == LineEndings::AsReceived || !self.uses_crlf() {
            return self.clone();
        }
        let mut out = Vec::with_capacity(self.prefix.len() + self.bytes.len());
        for part in [&self.prefix[..], &self.bytes[..]] {
            let mut rest = part;
            while let Some(i) = memchr::memmem::find(rest, b"\r\n") {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                rest = &rest[i + 2..];
            }
            out.extend_from_slice(rest);
        }
        HostMessage::new(out)
    }

    /// SHA-256 of the whole message (all [`size`](Self::size) octets), as
    /// 64 lower-case hex digits; computed once.
    pub fn digest(&self) -> &str {
        self.digest.get_or_init(|| {
            let mut h = Sha256::new();
            h.update(&self.prefix);
            h.update(&self.bytes);
            hex::encode(h.finalize())
        })
    }

    /// The same message with `fields` prepended, in order, using the
    /// message's own line ending style. Fields whose name or value could
    /// break the header (line breaks, bad name characters) are dropped.
    pub fn with_headers(&self, fields: &[(String, String)]) -> HostMessage {
        let eol: &[u8] = if self.uses_crlf() { b"\r\n" } else { b"\n" };
        let mut prefix = Vec::new();
        let mut added = Vec::new();
        for (name, value) in fields {
            if !valid_field(name, value) {
                tracing::warn!(name = %name.escape_debug(), "dropping an invalid header field");
                continue;
            }
            prefix.extend_from_slice(name.as_bytes());
            prefix.extend_from_slice(b": ");
            prefix.extend_from_slice(value.as_bytes());
            prefix.extend_from_slice(eol);
            added.push((name.clone(), value.clone()));
        }
        prefix.extend_from_slice(&self.prefix);
        added.extend(self.headers.iter().cloned());
        HostMessage {
            prefix: prefix.into(),
            bytes: self.bytes.clone(),
            headers: added.into(),
            body: self.body,
            digest: Arc::default(),
        }
    }

    /// Whether the first line ends in CRLF (as over LMTP) or bare LF.
    pub fn uses_crlf(&self) -> bool {
        match self.bytes.iter().position(|&b| b == b'\n') {
            Some(i) => i > 0 && self.bytes[i - 1] == b'\r',
            None => true,
        }
    }

    /// Offset of the body: just past the empty line ending the header block.
    pub fn body_offset(&self) -> u64 {
        (self.prefix.len() + self.body) as u64
    }

    /// Total size in octets.
    pub fn size(&self) -> u64 {
        (self.prefix.len() + self.bytes.len()) as u64
    }

    /// The parsed header fields (added ones first).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Up to `len` octets from `offset` (capped at [`MAX_READ`]).
    pub fn read_at(&self, offset: u64, len: u32) -> Vec<u8> {
        let total = self.prefix.len() + self.bytes.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
        let end = start.saturating_add(len.min(MAX_READ) as usize).min(total);
        let mut out = Vec::with_capacity(end - start);
        let p = self.prefix.len();
        if start < p {
            out.extend_from_slice(&self.prefix[start..end.min(p)]);
        }
        if end > p {
            out.extend_from_slice(&self.bytes[start.max(p) - p..end - p]);
        }
        out
    }
}

/// A header field a plugin may add: a printable-ASCII name without `:`,
/// and a value without line breaks.
fn valid_field(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.len() <= 76
        && name
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
        && value.len() <= 4096
        && !value.contains(['\r', '\n', '\0'])
}

/// Parses the header block once, with `mailparse`: fields in order, with
/// folding undone and RFC 2047 encoded-words decoded; and the offset where
/// the body starts (after the empty line; the end if there is none).
pub fn parse_headers(bytes: &[u8]) -> (Vec<(String, String)>, usize) {
    match mailparse::parse_headers(bytes) {
        Ok((fields, body)) => (
            fields
                .iter()
                .map(|h| (h.get_key(), h.get_value()))
                .collect(),
            body.min(bytes.len()),
        ),
        // Not even a header block: the filters still see the bytes.
        Err(_) => (Vec::new(), 0),
    }
}

impl Host for PluginState {}

impl HostMessageApi for PluginState {
    fn size(&mut self, msg: Resource<HostMessage>) -> u64 {
        self.message(&msg).map_or(0, HostMessage::size)
    }

    fn headers(&mut self, msg: Resource<HostMessage>) -> Vec<Header> {
        self.message(&msg).map_or_else(Vec::new, |m| {
            m.headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect()
        })
    }

    fn body_offset(&mut self, msg: Resource<HostMessage>) -> u64 {
        self.message(&msg).map_or(0, HostMessage::body_offset)
    }

    fn read(&mut self, msg: Resource<HostMessage>, offset: u64, len: u32) -> Vec<u8> {
        self.message(&msg)
            .map_or_else(Vec::new, |m| m.read_at(offset, len))
    }

    fn digest(&mut self, msg: Resource<HostMessage>) -> String {
        self.message(&msg)
            .map_or_else(String::new, |m| m.digest().to_string())
    }

    fn drop(&mut self, msg: Resource<HostMessage>) -> wasmtime::Result<()> {
        self.table.delete(msg)?;
        Ok(())
    }
}

impl PluginState {
    fn message(&self, msg: &Resource<HostMessage>) -> Option<&HostMessage> {
        self.table.get(msg).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_headers_are_a_prefix_in_the_same_line_style() {
        let lf = HostMessage::new(&b"Subject: a\n\nbody\n"[..]);
        let m = lf.with_headers(&[("X-One".into(), "1".into())]);
        let m = m.with_headers(&[("Return-Path".into(), "<a@b>".into())]);
        let all = m.read_at(0, 1000);
        assert_eq!(all, b"Return-Path: <a@b>\nX-One: 1\nSubject: a\n\nbody\n");
        assert_eq!(m.size(), all.len() as u64);
        assert_eq!(m.body_offset(), all.len() as u64 - 5);
        assert_eq!(HostMessage::new(&b"A: b\r\n"[..]).body_offset(), 6);
        assert_eq!(HostMessage::new(&b"\nbody"[..]).body_offset(), 1);
        assert_eq!(m.headers()[0].0, "Return-Path");
        assert_eq!(m.headers()[2].0, "Subject");
        // Reads across the prefix/body boundary, in small pieces.
        let mut pieced = Vec::new();
        let mut off = 0;
        loop {
            let part = m.read_at(off, 3);
            if part.is_empty() {
                break;
            }
            off += part.len() as u64;
            pieced.extend(part);
        }
        assert_eq!(pieced, all);
        let crlf = HostMessage::new(&b"Subject: a\r\n\r\nbody\r\n"[..]);
        let m = crlf.with_headers(&[
            ("X-Ok".into(), "v".into()),
            ("Bad Name".into(), "v".into()),
            ("X-Inject".into(), "v\r\nBcc: evil".into()),
        ]);
        assert_eq!(m.read_at(0, 12), b"X-Ok: v\r\nSub");
        assert_eq!(m.headers().len(), 2);
    }

    #[test]
    fn stored_form_turns_crlf_into_lf_and_digest_covers_everything() {
        let m = HostMessage::new(&b"Subject: a\r\n\r\nbody\rmore\r\n"[..])
            .with_headers(&[("Return-Path".into(), "<a@b>".into())]);
        let lf = m.stored_form(LineEndings::Lf);
        assert_eq!(
            lf.read_at(0, 1000),
            b"Return-Path: <a@b>\nSubject: a\n\nbody\rmore\n"
        );
        assert_eq!(lf.body_offset(), 31);
        assert_eq!(lf.headers().len(), 2);
        let same = m.stored_form(LineEndings::AsReceived);
        assert_eq!(same.read_at(0, 1000), m.read_at(0, 1000));
        assert_eq!(m.digest().len(), 64);
        assert_eq!(m.digest(), same.digest());
        assert_ne!(m.digest(), lf.digest());
        let whole = m.read_at(0, 1000);
        assert_eq!(m.digest(), hex::encode(Sha256::digest(&whole)));
    }

    #[test]
    fn headers_are_unfolded_decoded_and_stop_at_blank_line() {
        let text = b"Subject: hello\r\n world\r\nFrom:  a@b\r\n\
                     X-Word: =?utf-8?q?caf=C3=A9?=\r\nX-Empty:\r\n\r\nNot: a header\r\n";
        let (h, body) = parse_headers(text);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Subject", "From", "X-Word", "X-Empty"]);
        assert_eq!(h[0].1, "hello world");
        assert_eq!(h[1].1, "a@b");
        assert_eq!(h[2].1, "caf\u{e9}");
        assert_eq!(h[3].1, "");
        assert_eq!(&text[body..], b"Not: a header\r\n");
    }
}
