//! Reading a message: the classifier sees any [`MessageSource`] (the host's
//! `message` resource in the plugin, byte vectors in the tests) and reads at
//! most `max_scan` octets of it, in chunks.

/// A message that can be read in ranges, like the WIT `message` resource.
pub trait MessageSource {
    /// Total size in octets.
    fn size(&self) -> u64;
    /// The header fields, unfolded, in order.
    fn headers(&self) -> Vec<(String, String)>;
    /// Up to `len` octets from `offset`; fewer only at the end.
    fn read(&self, offset: u64, len: u32) -> Vec<u8>;
}

/// Octets asked for per `read` call.
pub const CHUNK: u32 = 64 * 1024;

/// The part of a message the classifier looks at.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The header fields, as the source parsed them.
    pub headers: Vec<(String, String)>,
    /// The start of the body (after the blank line), possibly cut short.
    pub body: Vec<u8>,
    /// Total size of the message.
    pub size: u64,
}

/// Reads the headers and the first `max_scan` octets of the message (header
/// block included), and keeps what follows the blank line as the body.
pub fn scan(msg: &impl MessageSource, max_scan: u64) -> Scanned {
    let size = msg.size();
    let limit = size.min(max_scan);
    let mut bytes = Vec::new();
    while (bytes.len() as u64) < limit {
        let want = (limit - bytes.len() as u64).min(u64::from(CHUNK)) as u32;
        let chunk = msg.read(bytes.len() as u64, want);
        if chunk.is_empty() {
            break;
        }
        // Never keep more than asked for, whatever the source returns.
        bytes.extend_from_slice(&chunk[..chunk.len().min(want as usize)]);
    }
    let body = match body_start(&bytes) {
        Some(start) => bytes.split_off(start),
        None => Vec::new(),
    };
    Scanned {
        headers: msg.headers(),
        body,
        size,
    }
}

/// Where the body starts: after the first empty line (LF or CRLF).
pub fn body_start(bytes: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            let line = &bytes[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Raw;

    #[test]
    fn reads_at_most_max_scan() {
        let mut text = String::from("Subject: big\r\n\r\n");
        while text.len() < 1_000_000 {
            text.push_str("lorem ipsum dolor sit amet\r\n");
        }
        let msg = Raw::new(text.as_bytes());
        let scanned = scan(&msg, 100_000);
        assert_eq!(msg.octets_read(), 100_000);
        assert_eq!(scanned.body.len(), 100_000 - 16);
        assert!(msg.largest_read() <= CHUNK as usize);
        assert_eq!(scanned.headers, vec![("Subject".into(), "big".into())]);
        assert_eq!(scanned.size, text.len() as u64);

        // A small message is read whole, once.
        let msg = Raw::new(b"Subject: small\n\nhello\n");
        assert_eq!(scan(&msg, 100_000).body, b"hello\n");
        assert_eq!(msg.octets_read(), 22);
    }

    #[test]
    fn body_start_handles_line_endings() {
        assert_eq!(body_start(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(body_start(b"A: b\n\nbody"), Some(6));
        assert_eq!(body_start(b"\nbody"), Some(1));
        assert_eq!(body_start(b"A: b\nC: d\n"), None);
    }
}
