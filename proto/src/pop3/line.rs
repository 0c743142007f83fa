//! Splitting the client's byte stream into command lines.
//!
//! Lines end in CRLF (a bare LF is accepted too). A line longer than the
//! limit is not truncated or executed: it is reported as
//! [`Line::TooLong`] once its end arrives, and its bytes are dropped as they
//! come so a hostile client cannot make the buffer grow.

/// One event taken from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its line ending.
    Complete(Vec<u8>),
    /// A line that exceeded the limit (its bytes were discarded).
    TooLong,
}

/// Buffers input bytes and yields lines.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Set while dropping the rest of an over-long line.
    discarding: bool,
}

impl LineBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet taken as lines.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops everything buffered: after STLS, plaintext the client pipelined
    /// behind the command must never be executed inside TLS (RFC 2595 §3.1).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.discarding = false;
    }

    /// Takes the next line if one is complete. `max` is the longest line
    /// accepted, counting its CRLF (RFC 2449 §4: 255 octets for commands).
    pub fn next_line(&mut self, max: usize) -> Option<Line> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                if self.discarding {
                    self.discarding = false;
                    return Some(Line::TooLong);
                }
                if line.len() > max {
                    return Some(Line::TooLong);
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Line::Complete(line))
            }
            None => {
                if self.buf.len() > max || (self.discarding && !self.buf.is_empty()) {
                    // Keep nothing of an over-long line; remember to report
                    // it when its end arrives.
                    self.buf.clear();
                    self.discarding = true;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_crlf_and_lf_lines() {
        let mut b = LineBuffer::new();
        b.extend(b"STAT\r\nNOOP\nQU");
        assert_eq!(b.next_line(255), Some(Line::Complete(b"STAT".to_vec())));
        assert_eq!(b.next_line(255), Some(Line::Complete(b"NOOP".to_vec())));
        assert_eq!(b.next_line(255), None);
        b.extend(b"IT\r\n");
        assert_eq!(b.next_line(255), Some(Line::Complete(b"QUIT".to_vec())));
        assert_eq!(b.buffered(), 0);
    }

    #[test]
    fn over_long_line_is_reported_once_and_dropped() {
        let mut b = LineBuffer::new();
        b.extend(&[b'A'; 300]);
        assert_eq!(b.next_line(255), None);
        assert_eq!(b.buffered(), 0, "over-long bytes are not kept");
        b.extend(&[b'A'; 300]);
        assert_eq!(b.next_line(255), None);
        assert_eq!(b.buffered(), 0);
        b.extend(b"AAA\r\nSTAT\r\n");
        assert_eq!(b.next_line(255), Some(Line::TooLong));
        assert_eq!(b.next_line(255), Some(Line::Complete(b"STAT".to_vec())));
    }

    #[test]
    fn complete_line_over_limit_is_too_long() {
        let mut b = LineBuffer::new();
        let mut line = vec![b'x'; 254];
        line.extend_from_slice(b"\r\n");
        b.extend(&line);
        assert_eq!(b.next_line(255), Some(Line::TooLong));
        let mut ok = vec![b'x'; 253];
        ok.extend_from_slice(b"\r\n");
        b.extend(&ok);
        assert_eq!(b.next_line(255), Some(Line::Complete(vec![b'x'; 253])));
    }

    #[test]
    fn clear_drops_pipelined_input() {
        let mut b = LineBuffer::new();
        b.extend(b"STLS\r\nUSER evil\r\n");
        assert_eq!(b.next_line(255), Some(Line::Complete(b"STLS".to_vec())));
        b.clear();
        assert_eq!(b.next_line(255), None);
    }
}
