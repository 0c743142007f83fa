//! Turning stored message bytes into a POP3 multi-line response body.
//!
//! Storage hands back raw octets (Maildir files usually use bare LF). The
//! [`MessageEncoder`] converts every line ending to CRLF, dot-stuffs lines
//! that begin with `.` (RFC 1939 §3), and for `TOP n k` stops after the
//! header block, the blank line and `k` body lines. It works chunk by chunk,
//! so a 50 MB message is never held whole. For a client that has not
//! switched to UTF-8 mode it holds the header block back until it is whole
//! and downgrades it first ([`downgrade`](super::downgrade), RFC 6857).

use super::downgrade::{self, MAX_HEADER, wire_len};

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
    /// Set when the header is to be downgraded.
    downgrade: Option<Box<Downgrading>>,
}

/// The header block held back to be downgraded.
#[derive(Debug, Default)]
struct Downgrading {
    /// The header block so far.
    held: Vec<u8>,
    /// Where the first line of `held` not yet known to be whole starts.
    scanned: usize,
    /// The header went out (downgraded or as it was).
    settled: bool,
    /// Octets downgrading added to the message on the wire (or removed).
    change: i64,
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
            downgrade: None,
        }
    }

    /// Downgrades an internationalized header (RFC 6857) on the way: for
    /// a client that has not issued `UTF8` (RFC 6856).
    pub fn downgrading(mut self) -> Self {
        self.downgrade = Some(Box::default());
        self
    }

    /// Whether the size of what goes out is known: the header block has
    /// gone out (always true without downgrading). Until then the
    /// encoder writes nothing.
    pub fn size_settled(&self) -> bool {
        self.downgrade.as_ref().is_none_or(|d| d.settled)
    }

    /// Octets downgrading added to the message on the wire (negative if it
    /// removed some), once [`size_settled`](Self::size_settled).
    pub fn size_change(&self) -> i64 {
        self.downgrade.as_ref().map_or(0, |d| d.change)
    }

    /// True once TOP has sent all it should: the caller can stop reading.
    pub fn is_done(&self) -> bool {
        self.part == Part::Done
    }

    /// Encodes `chunk` onto `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(d) = self.downgrade.as_mut().filter(|d| !d.settled) else {
            return self.encode_stored(chunk, out);
        };
        d.held.extend_from_slice(chunk);
        // Look for the empty line that ends the header, a line at a time.
        while let Some(n) = memchr::memchr(b'\n', &d.held[d.scanned..]) {
            let line = &d.held[d.scanned..=d.scanned + n];
            let end = d.scanned + n + 1;
            if line == b"\n" || line == b"\r\n" {
                let held = std::mem::take(&mut d.held);
                self.settle(&held[..end], out);
                return self.encode_stored(&held[end..], out);
            }
            d.scanned = end;
        }
        if d.held.len() > MAX_HEADER {
            // No real header is this long: send it as it is.
            d.settled = true;
            let held = std::mem::take(&mut d.held);
            self.encode_stored(&held, out);
        }
    }

    /// The message ended inside its header (no empty line, no body): the
    /// held header goes out now. [`finish`](Self::finish) does this too;
    /// call it first to learn the size before sending anything.
    pub fn settle_at_end(&mut self, out: &mut Vec<u8>) {
        if let Some(d) = self.downgrade.as_mut().filter(|d| !d.settled) {
            let held = std::mem::take(&mut d.held);
            self.settle(&held, out);
        }
    }

    /// Sends the whole header block, downgraded if it is internationalized.
    fn settle(&mut self, header: &[u8], out: &mut Vec<u8>) {
        let new = downgrade::downgrade(header);
        let d = self.downgrade.as_mut().expect("settling a downgrade");
        d.settled = true;
        match new {
            Some(new) => {
                d.change = wire_len(&new) as i64 - wire_len(header) as i64;
                self.encode_stored(&new, out);
            }
            None => self.encode_stored(header, out),
        }
    }

    /// Encodes stored bytes onto `out`. Runs of ordinary bytes are found
    /// with `memchr` and copied whole; only line ends are handled one by
    /// one.
    fn encode_stored(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
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
        self.settle_at_end(out);
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
    fn downgrading_rewrites_only_an_internationalized_header() {
        let msg = "Subject: café\nX: 1\n\n.body é\n".as_bytes();
        all_chunkings(
            || MessageEncoder::whole().downgrading(),
            msg,
            "Subject: =?UTF-8?Q?caf=C3=A9?=\r\nX: 1\r\n\r\n..body é\r\n.\r\n".as_bytes(),
        );
        all_chunkings(
            || MessageEncoder::top(0).downgrading(),
            msg,
            b"Subject: =?UTF-8?Q?caf=C3=A9?=\r\nX: 1\r\n\r\n.\r\n",
        );
        // ASCII, or a header that is not UTF-8: as stored.
        all_chunkings(
            || MessageEncoder::whole().downgrading(),
            b"A: 1\r\n\r\nb\n",
            b"A: 1\r\n\r\nb\r\n.\r\n",
        );
        all_chunkings(
            || MessageEncoder::whole().downgrading(),
            b"A: \xe9\n\nb\n",
            b"A: \xe9\r\n\r\nb\r\n.\r\n",
        );
        // A header with no end: settled at the end of the message.
        all_chunkings(
            || MessageEncoder::whole().downgrading(),
            "S: é".as_bytes(),
            b"S: =?UTF-8?Q?=C3=A9?=\r\n.\r\n",
        );
    }

    #[test]
    fn downgrading_reports_the_size_change_before_writing() {
        let msg = "Subject: café\n\nbody\n".as_bytes();
        let mut enc = MessageEncoder::whole().downgrading();
        let mut out = Vec::new();
        enc.encode(&msg[..10], &mut out);
        assert!(!enc.size_settled() && out.is_empty(), "held back");
        enc.encode(&msg[10..], &mut out);
        assert!(enc.size_settled());
        // "café" (5 octets) became "=?UTF-8?Q?caf=C3=A9?=" (21).
        assert_eq!(enc.size_change(), 16);
        enc.finish(&mut out);
        let stored_wire = wire_len(msg) as i64;
        assert_eq!(
            out.len() as i64 - 3,
            stored_wire + 16,
            "minus the terminator"
        );
        let mut enc = MessageEncoder::whole().downgrading();
        enc.encode("S: é".as_bytes(), &mut Vec::new());
        assert!(!enc.size_settled());
        enc.settle_at_end(&mut out);
        assert!(enc.size_settled());
        assert!(MessageEncoder::whole().size_settled());
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
