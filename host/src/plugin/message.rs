//! The `message` resource: a message being delivered, owned by the host and
//! read by plugins in bounded ranges.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::bindings::auth::poplar::plugin::types::Header;
use super::bindings::storage::poplar::plugin::message::{Host, HostMessage as HostMessageApi};
use super::state::PluginState;

/// Largest range one `read` call returns.
pub const MAX_READ: u32 = 1024 * 1024;

/// A message handed to plugins. Cheap to clone: the bytes are shared.
#[derive(Debug, Clone)]
pub struct HostMessage {
    bytes: Arc<[u8]>,
    headers: Arc<[(String, String)]>,
}

impl HostMessage {
    /// Wraps raw message bytes and parses the header block once.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        let headers = parse_headers(&bytes).into();
        HostMessage { bytes, headers }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Parses the header block (up to the first empty line): unfolds
/// continuation lines and keeps the fields in order. Lines that are not
/// fields are skipped.
pub fn parse_headers(bytes: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for raw in bytes.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(&text);
            }
            continue;
        }
        if let Some((name, value)) = text.split_once(':') {
            let name = name.trim_end();
            if !name.is_empty() && !name.contains(' ') {
                fields.push((name.to_string(), value.trim_start().to_string()));
            }
        }
    }
    fields
}

impl Host for PluginState {}

impl HostMessageApi for PluginState {
    fn size(&mut self, msg: Resource<HostMessage>) -> u64 {
        self.message(&msg).map_or(0, |m| m.bytes.len() as u64)
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

    fn read(&mut self, msg: Resource<HostMessage>, offset: u64, len: u32) -> Vec<u8> {
        let Some(m) = self.message(&msg) else {
            return Vec::new();
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(m.bytes.len());
        let end = start
            .saturating_add(len.min(MAX_READ) as usize)
            .min(m.bytes.len());
        m.bytes[start..end].to_vec()
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
    fn headers_are_unfolded_and_stop_at_blank_line() {
        let h =
            parse_headers(b"Subject: hello\r\n  world\r\nFrom:  a@b\nX-Empty:\n\nNot: a header\n");
        assert_eq!(
            h,
            vec![
                ("Subject".into(), "hello  world".into()),
                ("From".into(), "a@b".into()),
                ("X-Empty".into(), "".into()),
            ]
        );
    }
}
