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
///
/// Taking a line or looking for one costs time in proportion to the bytes
/// it covers, not to everything buffered: lines are taken by moving a start
/// offset (the taken bytes are dropped at the next [`extend`](Self::extend)),
/// and bytes already searched for LF are not searched again.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Where the next line starts: `buf[..start]` was taken already.
    start: usize,
    /// `buf[start..scanned]` holds no LF.
    scanned: usize,
    /// Set while dropping the rest of an over-long line.
    discarding: bool,
}

impl LineBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet taken as lines.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Drops everything buffered: after STLS, plaintext the client pipelined
    /// behind the command must never be executed inside TLS (RFC 2595 §3.1).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.discarding = false;
    }

    /// Takes the next line if one is complete. `max` is the longest line
    /// accepted, counting its CRLF (RFC 2449 §4: 255 octets for commands).
    pub fn next_line(&mut self, max: usize) -> Option<Line> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i + 1;
                let (from, len) = (self.start, end - self.start);
                self.start = end;
                self.scanned = end;
                if self.discarding {
                    self.discarding = false;
                    return Some(Line::TooLong);
                }
                if len > max {
                    return Some(Line::TooLong);
                }
                let mut line = self.buf[from..end - 1].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Line::Complete(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buffered() > max || (self.discarding && self.buffered() > 0) {
                    // Keep nothing of an over-long line; remember to report
                    // it when its end arrives.
                    self.clear();
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
    fn many_lines_and_trickled_lines_take_linear_time() {
        // Taking each line used to shift the whole buffer, and each call
        // searched every buffered byte again: a million pipelined empty
        // lines, or a long line sent a byte at a time, took minutes.
        let started = std::time::Instant::now();
        let mut b = LineBuffer::new();
        b.extend(&vec![b'\n'; 1_000_000]);
        let mut n = 0;
        while let Some(line) = b.next_line(255) {
            assert_eq!(line, Line::Complete(Vec::new()));
            n += 1;
        }
        assert_eq!((n, b.buffered()), (1_000_000, 0));
        for _ in 0..300_000 {
            b.extend(b"x");
            assert_eq!(b.next_line(1 << 20), None);
        }
        b.extend(b"\r\n");
        assert_eq!(
            b.next_line(1 << 20),
            Some(Line::Complete(vec![b'x'; 300_000]))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
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
