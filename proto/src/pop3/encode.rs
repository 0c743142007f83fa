//! Turning stored message bytes into a POP3 multi-line response body.
//!
//! Storage hands back raw octets (Maildir files usually use bare LF). The
//! [`MessageEncoder`] converts every line ending to CRLF, dot-stuffs lines
//! that begin with `.` (RFC 1939 §3), and for `TOP n k` stops after the
//! header block, the blank line and `k` body lines. It works chunk by chunk,
//! so a 50 MB message is never held whole.

/// The terminator of a multi-line response.
pub const TERMINATOR: &[u8] = b".\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Header,
    /// In the body; `remaining` is how many more lines TOP may send
    /// (`None` for RETR: all of them).
    Body {
        remaining: Option<u32>,
    },
    Done,
}

/// Streams one message. Feed chunks with [`encode`](Self::encode), then
/// call [`finish`](Self::finish) once.
#[derive(Debug)]
pub struct MessageEncoder {
    part: Part,
    /// The previous chunk ended with CR, not yet written.
    pending_cr: bool,
    at_line_start: bool,
    /// The current header line is empty so far (to find the blank line).
    line_empty: bool,
    /// For TOP: how many body lines to send; `None` for all.
    body_limit: Option<u32>,
}

impl MessageEncoder {
    /// For RETR: the whole message.
    pub fn whole() -> Self {
        Self::new(None)
    }

    /// For `TOP n lines`: headers, the blank line, then `lines` body lines.
    pub fn top(lines: u32) -> Self {
        Self::new(Some(lines))
    }

    fn new(lines: Option<u32>) -> Self {
        MessageEncoder {
            part: Part::Header,
            pending_cr: false,
            at_line_start: true,
            line_empty: true,
            body_limit: lines,
        }
    }

    /// True once TOP has sent all it should: the caller can stop reading.
    pub fn is_done(&self) -> bool {
        self.part == Part::Done
    }

    /// Encodes `chunk` onto `out`. Runs of ordinary bytes are found with
    /// `memchr` and copied whole; only line ends are handled one by one.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 4);
        let mut rest = chunk;
        while let Some(&first) = rest.first() {
            if self.part == Part::Done {
                return;
            }
            if self.pending_cr {
                self.pending_cr = false;
                if first == b'\n' {
                    self.end_line(out);
                    rest = &rest[1..];
                    continue;
                }
                // A bare CR is kept as it is: it is not a line ending.
                self.put(b"\r", out);
            }
            match memchr::memchr2(b'\r', b'\n', rest) {
                Some(0) => {
                    if first == b'\r' {
                        self.pending_cr = true;
                    } else {
                        self.end_line(out);
                    }
                    rest = &rest[1..];
                }
                Some(n) => {
                    self.put(&rest[..n], out);
                    rest = &rest[n..];
                }
                None => {
                    self.put(rest, out);
                    rest = &[];
                }
            }
        }
    }

    /// Ends the response: terminates an unfinished last line with CRLF and
    /// appends the `.` line.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.part != Part::Done {
            if self.pending_cr {
                self.pending_cr = false;
                self.put(b"\r", out);
            }
            if !self.at_line_start {
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(TERMINATOR);
    }

    /// Writes a non-empty run of bytes with no line end in it.
    fn put(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if self.at_line_start && run[0] == b'.' {
            out.push(b'.');
        }
        self.at_line_start = false;
        self.line_empty = false;
        out.extend_from_slice(run);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        match self.part {
            Part::Header if self.line_empty => {
                // The blank line separating header from body.
                self.part = Part::Body {
                    remaining: self.body_limit,
                };
                if self.body_limit == Some(0) {
                    self.part = Part::Done;
                }
            }
            Part::Body { remaining: Some(n) } => {
                self.part = if n <= 1 {
                    Part::Done
                } else {
                    Part::Body {
                        remaining: Some(n - 1),
                    }
                };
            }
            _ => {}
        }
        self.at_line_start = true;
        self.line_empty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut enc: MessageEncoder, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            enc.encode(c, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    fn all_chunkings(make: impl Fn() -> MessageEncoder, input: &[u8], want: &[u8]) {
        for chunk in 1..=input.len().max(1) {
            assert_eq!(
                String::from_utf8_lossy(&run(make(), input, chunk)),
                String::from_utf8_lossy(want),
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn lf_becomes_crlf_and_dots_are_stuffed() {
        all_chunkings(
            MessageEncoder::whole,
            b"Subject: x\n\n.hidden\n..two\nend.\n.\n",
            b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend.\r\n..\r\n.\r\n",
        );
    }

    #[test]
    fn crlf_is_kept_and_bare_cr_is_not_a_line_end() {
        all_chunkings(
            MessageEncoder::whole,
            b"A: b\r\n\r\nx\ry\r\n.z\r\n",
            b"A: b\r\n\r\nx\ry\r\n..z\r\n.\r\n",
        );
    }

    #[test]
    fn unterminated_last_line_gets_crlf() {
        all_chunkings(
            MessageEncoder::whole,
            b"A: b\n\nlast",
            b"A: b\r\n\r\nlast\r\n.\r\n",
        );
        all_chunkings(
            MessageEncoder::whole,
            b"A: b\n\nlast\r",
            b"A: b\r\n\r\nlast\r\r\n.\r\n",
        );
        all_chunkings(MessageEncoder::whole, b"", b".\r\n");
    }

    #[test]
    fn top_sends_header_blank_line_and_n_body_lines() {
        let msg = b"A: 1\nB: 2\n\nl1\nl2\n.l3\nl4\n";
        all_chunkings(|| MessageEncoder::top(0), msg, b"A: 1\r\nB: 2\r\n\r\n.\r\n");
        all_chunkings(
            || MessageEncoder::top(1),
            msg,
            b"A: 1\r\nB: 2\r\n\r\nl1\r\n.\r\n",
        );
        all_chunkings(
            || MessageEncoder::top(3),
            msg,
            b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n..l3\r\n.\r\n",
        );
        all_chunkings(
            || MessageEncoder::top(100),
            msg,
            b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n..l3\r\nl4\r\n.\r\n",
        );
    }

    #[test]
    fn top_counts_body_lines_not_header_lines_and_handles_no_body() {
        all_chunkings(
            || MessageEncoder::top(0),
            b"A: 1\nB: 2\n",
            b"A: 1\r\nB: 2\r\n.\r\n",
        );
        all_chunkings(
            || MessageEncoder::top(1),
            b"A: 1\r\n\r\n\r\nsecond\r\n",
            b"A: 1\r\n\r\n\r\n.\r\n",
        );
    }

    #[test]
    fn top_reports_done_so_reading_can_stop() {
        let mut enc = MessageEncoder::top(0);
        let mut out = Vec::new();
        enc.encode(b"A: 1\n\nbody", &mut out);
        assert!(enc.is_done());
        assert!(!MessageEncoder::whole().is_done());
    }
}
