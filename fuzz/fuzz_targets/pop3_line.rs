//! `LineBuffer` framing: the input arrives in arbitrary chunks, with
//! `clear()` (STLS) in between; the lines taken out must be the same as
//! splitting the whole input at once, and the buffer never holds more than
//! the limit once every complete line has been taken.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use poplar_proto::pop3::{Line, LineBuffer};

#[derive(Arbitrary, Debug)]
enum Op {
    Bytes(Vec<u8>),
    /// A run of `n % 2048` copies of a byte, to pass the limit cheaply.
    Run(u8, u16),
    Clear,
}

#[derive(Arbitrary, Debug)]
struct Input {
    max: u16,
    ops: Vec<Op>,
}

/// The reference: lines split from a plain byte string, as the doc says.
#[derive(Default)]
struct Model {
    partial: Vec<u8>,
}

impl Model {
    fn push(&mut self, bytes: &[u8], max: usize, out: &mut Vec<Line>) {
        for &b in bytes {
            self.partial.push(b);
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.len() > max {
                    out.push(Line::TooLong);
                } else {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    out.push(Line::Complete(line));
                }
            }
        }
    }
}

/// An input that starts with this line is a plain byte stream (the seed
/// corpus is written this way), fed in chunks of 1, 2, 3, … octets against
/// the POP3 command limit of 255.
const STREAM: &[u8] = b"#!stream\n";

fuzz_target!(|data: &[u8]| {
    let input = match data.strip_prefix(STREAM) {
        Some(stream) => {
            let mut ops = Vec::new();
            let mut rest = stream;
            let mut n = 1;
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(n.min(rest.len()));
                ops.push(Op::Bytes(chunk.to_vec()));
                rest = tail;
                n = n % 97 + 1;
            }
            Input { max: 255, ops }
        }
        None => match Input::arbitrary(&mut arbitrary::Unstructured::new(data)) {
            Ok(input) => input,
            Err(_) => return,
        },
    };
    // Limits from 2 octets (just the line ending) to a little over the
    // POP3 command limit of 255.
    let max = (input.max as usize % 600).max(2);
    let mut buf = LineBuffer::new();
    let mut model = Model::default();
    for op in input.ops {
        let bytes = match op {
            Op::Bytes(b) => b,
            Op::Run(b, n) => vec![b; n as usize % 2048],
            Op::Clear => {
                buf.clear();
                model.partial.clear();
                assert_eq!(buf.buffered(), 0);
                continue;
            }
        };
        buf.extend(&bytes);
        let mut want = Vec::new();
        model.push(&bytes, max, &mut want);
        let mut got = Vec::new();
        while let Some(line) = buf.next_line(max) {
            if let Line::Complete(l) = &line {
                assert!(l.len() < max, "a {}-octet line under {max}", l.len());
                assert!(!l.contains(&b'\n'));
            }
            got.push(line);
        }
        assert_eq!(got, want, "max {max}");
        assert!(
            buf.buffered() <= max,
            "{} octets buffered, limit {max}",
            buf.buffered()
        );
        assert!(buf.buffered() <= model.partial.len());
        assert!(!model.partial.contains(&b'\n'));
    }
});
