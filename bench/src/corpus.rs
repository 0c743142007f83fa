//! Deterministic synthetic mail: a small PRNG, a size model with a long
//! tail, and a generator of plausible RFC 5322 messages (LF line endings,
//! some lines starting with '.', multipart messages with base64
//! attachments for the large ones).

/// SplitMix64: tiny, fast, and good enough for synthetic data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed ^ 0x5851_F42D_4C95_7F2D);
        r.next_u64();
        r
    }

    /// A generator derived from this seed and a stream number, so that
    /// user 7's mailbox does not depend on how many users came before.
    pub fn derive(seed: u64, stream: u64) -> Rng {
        Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is negligible here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Message sizes: a log-normal body of ordinary mail (median about 20 KB)
/// and 5% with attachments (median 300 KB), clamped to `[MIN_SIZE, max]`.
/// The tail reaches a few MB.
#[derive(Clone, Copy)]
pub struct SizeModel {
    pub max: usize,
}

pub const MIN_SIZE: usize = 700;

impl SizeModel {
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let (median, sigma) = if rng.chance(0.05) {
            (300_000.0, 1.1)
        } else {
            (19_000.0, 0.8)
        };
        let size = median * (sigma * rng.normal()).exp();
        (size as usize).clamp(MIN_SIZE, self.max.max(MIN_SIZE))
    }
}

/// What kind of mail a message is; the filters and the Bayes training set
/// tell them apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Personal,
    Newsletter,
    Spam,
}

impl Kind {
    pub fn sample(rng: &mut Rng) -> Kind {
        match rng.below(100) {
            0..=69 => Kind::Personal,
            70..=89 => Kind::Newsletter,
            _ => Kind::Spam,
        }
    }
}

/// A generated message.
pub struct Message {
    /// The envelope sender.
    pub from: String,
    /// The message with LF line endings, as stored in a Maildir.
    pub lf: Vec<u8>,
}

impl Message {
    /// Its size with CRLF line endings: what POP3 LIST reports and what
    /// travels over LMTP (before dot-stuffing).
    pub fn crlf_size(&self) -> u64 {
        self.lf.len() as u64 + self.lf.iter().filter(|&&b| b == b'\n').count() as u64
    }

    /// The LMTP DATA payload: CRLF line endings, dot-stuffed, with the
    /// terminating ".\r\n".
    pub fn lmtp_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lf.len() + self.lf.len() / 30 + 8);
        for line in self.lf.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }
}

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "meeting", "project", "report", "tomorrow", "we", "should", "review", "draft",
    "budget", "schedule", "please", "find", "attached", "thanks", "for", "your", "help", "with",
    "server", "migration", "and", "I", "think", "that", "it", "is", "a", "good", "idea", "to",
    "move", "the", "deadline", "next", "week", "because", "of", "holidays", "team", "agreed",
    "on", "new", "plan", "let", "me", "know", "if", "you", "have", "questions", "about",
    "invoice", "numbers", "were", "wrong", "in", "last", "quarter", "so", "accounting", "will",
    "send", "corrected", "version", "soon", "as", "possible", "mailbox", "backup", "restore",
    "customer", "asked", "whether", "delivery", "can", "happen", "before", "Friday", "garden",
    "dinner", "weekend", "photos", "from", "trip", "kids", "school", "concert", "tickets",
    "train", "station", "at", "seven", "o'clock", "bring", "umbrella", "weather", "forecast",
    "says", "rain", "all", "day", "long", "coffee", "break", "room", "booked", "agenda",
    "minutes", "action", "items", "owner", "status", "blocked", "waiting", "answer", "vendor",
    "contract", "renewal", "price", "discount", "offer", "expires", "end", "month", "regards",
    "cheers", "best", "wishes", "update", "release", "notes", "version", "fixed", "bug",
    "crash", "when", "opening", "large", "files", "performance", "improved", "by", "percent",
];

#[rustfmt::skip]
const SPAM_WORDS: &[&str] = &[
    "winner", "prize", "claim", "free", "money", "casino", "bonus", "exclusive", "offer",
    "limited", "time", "act", "now", "guaranteed", "cheap", "pills", "lottery", "million",
    "dollars", "urgent", "transfer", "bank", "account", "verify", "password", "click", "here",
    "unsubscribe", "deal", "save", "percent", "risk", "investment", "crypto", "double",
];

#[rustfmt::skip]
const NAMES: &[&str] = &[
    "Alice Martin", "Bob Keller", "Carol Nguyen", "Dave Okafor", "Erin Larsen", "Frank Moreau",
    "Grace Ito", "Heidi Novak", "Ivan Petrov", "Judy Schmidt", "Mallory Rossi", "Oscar Silva",
];

#[rustfmt::skip]
const DOMAINS: &[&str] = &[
    "example.org", "example.net", "mail.example.com", "corp.example", "uni.example.edu",
];

const SUBJECTS: &[&str] = &[
    "Re: meeting tomorrow",
    "Quarterly report draft",
    "Fwd: photos from the trip",
    "Server migration plan",
    "Invoice 2023-114",
    "Re: Re: dinner on Saturday?",
    "Release notes for 4.2",
    "Contract renewal",
    "Minutes of the team meeting",
    "Question about the budget",
];

const SPAM_SUBJECTS: &[&str] = &[
    "You are a WINNER - claim your prize now",
    "Exclusive offer: 90% off, limited time",
    "URGENT: verify your bank account",
    "Double your crypto investment today",
    "Cheap pills, free shipping",
];

const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Lines that start with '.', so that dot-stuffing gets exercised.
const DOT_LINES: &[&str] = &[
    ".",
    "..",
    "...and that was all.",
    ".hidden file",
    ". indeed",
];

/// Builds messages from pools of pre-made lines, which keeps generating
/// hundreds of megabytes cheap even in a debug build.
pub struct Generator {
    text: Vec<Vec<u8>>,
    spam: Vec<Vec<u8>>,
    base64: Vec<Vec<u8>>,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        let mut rng = Rng::derive(seed, u64::MAX);
        let text = (0..512).map(|_| text_line(&mut rng, WORDS)).collect();
        let spam = (0..128).map(|_| text_line(&mut rng, SPAM_WORDS)).collect();
        let base64 = (0..256)
            .map(|_| {
                let mut l: Vec<u8> = (0..76).map(|_| *rng.pick(BASE64)).collect();
                l.push(b'\n');
                l
            })
            .collect();
        Generator { text, spam, base64 }
    }

    /// A message of about `target` octets (LF endings) for `to`; `seq`
    /// makes Message-IDs unique. `stored` adds the Return-Path an MDA
    /// puts on top (mail in transit has none).
    pub fn message(
        &self,
        rng: &mut Rng,
        kind: Kind,
        to: &str,
        seq: u64,
        target: usize,
        stored: bool,
    ) -> Message {
        let mut m = Vec::with_capacity(target + 2048);
        let name = *rng.pick(NAMES);
        let domain = match kind {
            Kind::Spam => ["promo.spam.example", "deals.spam.example"][rng.below(2)],
            Kind::Newsletter => "news.example.org",
            Kind::Personal => *rng.pick(DOMAINS),
        };
        let local: String = name.split(' ').next().unwrap_or("x").to_ascii_lowercase();
        let from = format!("{local}@{domain}");
        let day = 1 + rng.below(28);
        let (hh, mm, ss) = (rng.below(24), rng.below(60), rng.below(60));
        let date = format!("Tue, {day:02} Nov 2025 {hh:02}:{mm:02}:{ss:02} +0100");
        let queue_id = rng.next_u64();
        let push = |m: &mut Vec<u8>, s: &str| m.extend_from_slice(s.as_bytes());
        if stored {
            push(&mut m, &format!("Return-Path: <{from}>\n"));
        }
        push(
            &mut m,
            &format!(
                "Received: from mx{n}.{domain} (mx{n}.{domain} [192.0.2.{n}])\n\
                 \tby mail.bench.test (Postfix) with ESMTPS id {queue_id:016X}\n\
                 \tfor <{to}>; {date}\n",
                n = 1 + rng.below(250)
            ),
        );
        push(
            &mut m,
            &format!(
                "Received: from [10.0.{}.{}] (unknown [10.0.0.1])\n\tby mx.{domain} with ESMTPSA; {date}\n",
                rng.below(256),
                rng.below(256)
            ),
        );
        push(&mut m, &format!("From: \"{name}\" <{from}>\n"));
        push(&mut m, &format!("To: <{to}>\n"));
        let subject = match kind {
            Kind::Spam => *rng.pick(SPAM_SUBJECTS),
            Kind::Newsletter => "Example News: this week's digest",
            Kind::Personal => *rng.pick(SUBJECTS),
        };
        push(&mut m, &format!("Subject: {subject}\n"));
        push(&mut m, &format!("Date: {date}\n"));
        push(
            &mut m,
            &format!("Message-ID: <{seq}.{:016x}@{domain}>\n", rng.next_u64()),
        );
        if kind == Kind::Newsletter {
            push(&mut m, "List-Id: Example News <news.example.org>\n");
            push(&mut m, "List-Unsubscribe: <https://news.example.org/u>\n");
            push(&mut m, "Precedence: bulk\n");
        }
        push(&mut m, "X-Mailer: Bench Mail 1.0\nMIME-Version: 1.0\n");
        // Large mail carries an attachment, as in real mailboxes.
        let attachment = target > 64 * 1024;
        let boundary = format!("=_bench_{:012x}", rng.next_u64() & 0xFFFF_FFFF_FFFF);
        if attachment {
            push(
                &mut m,
                &format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n"),
            );
            push(&mut m, "This is a multi-part message in MIME format.\n\n");
            push(
                &mut m,
                &format!("--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n"),
            );
        } else {
            push(&mut m, "Content-Type: text/plain; charset=utf-8\n\n");
        }
        let text_target = if attachment {
            m.len() + 2000 + rng.below(8000)
        } else {
            target
        };
        self.text_body(rng, kind, &mut m, text_target);
        if attachment {
            push(
                &mut m,
                &format!(
                    "\n--{boundary}\nContent-Type: application/pdf; name=\"doc{seq}.pdf\"\n\
                     Content-Transfer-Encoding: base64\n\
                     Content-Disposition: attachment; filename=\"doc{seq}.pdf\"\n\n"
                ),
            );
            let end = target.saturating_sub(boundary.len() + 8);
            while m.len() < end {
                m.extend_from_slice(line(rng, &self.base64));
            }
            push(&mut m, &format!("\n--{boundary}--\n"));
        }
        Message { from, lf: m }
    }

    fn text_body(&self, rng: &mut Rng, kind: Kind, m: &mut Vec<u8>, target: usize) {
        let greeting = match kind {
            Kind::Spam => "Dear friend,\n\n",
            Kind::Newsletter => "Hello subscriber,\n\n",
            Kind::Personal => "Hi,\n\n",
        };
        m.extend_from_slice(greeting.as_bytes());
        if kind == Kind::Spam {
            m.extend_from_slice(b"Click here to claim your prize: http://promo.spam.example/win\n");
        }
        let mut in_paragraph = 0;
        while m.len() < target {
            let r = rng.below(1000);
            if r < 15 {
                m.extend_from_slice(rng.pick(DOT_LINES).as_bytes());
                m.push(b'\n');
            } else if r < 60 {
                m.extend_from_slice(b"> ");
                m.extend_from_slice(line(rng, &self.text));
            } else if kind == Kind::Spam && r < 400 {
                m.extend_from_slice(line(rng, &self.spam));
            } else {
                m.extend_from_slice(line(rng, &self.text));
            }
            in_paragraph += 1;
            if in_paragraph > 3 + rng.below(6) {
                m.push(b'\n');
                in_paragraph = 0;
            }
        }
        match kind {
            Kind::Newsletter => {
                m.extend_from_slice(b"\nTo unsubscribe click here: https://news.example.org/u\n")
            }
            Kind::Spam => m.extend_from_slice(b"\nClick here to unsubscribe.\n"),
            Kind::Personal => m.extend_from_slice(b"\n-- \nSent from Bench Mail\n"),
        }
    }
}

/// A random line of a pool.
fn line<'a>(rng: &mut Rng, pool: &'a [Vec<u8>]) -> &'a [u8] {
    &pool[rng.below(pool.len())]
}

/// A line of 6 to 12 words, at most about 76 octets, ending in LF.
fn text_line(rng: &mut Rng, words: &[&str]) -> Vec<u8> {
    let mut l = String::new();
    let n = 6 + rng.below(7);
    for i in 0..n {
        let w = *rng.pick(words);
        if l.len() + w.len() + 1 > 76 {
            break;
        }
        if i > 0 {
            l.push(' ');
        }
        l.push_str(w);
    }
    if rng.chance(0.3) {
        l.push('.');
    }
    let mut l = l.into_bytes();
    l.push(b'\n');
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_the_intended_shape() {
        let mut rng = Rng::new(1);
        let model = SizeModel { max: 6_000_000 };
        let mut s: Vec<usize> = (0..20_000).map(|_| model.sample(&mut rng)).collect();
        s.sort();
        let median = s[s.len() / 2];
        assert!((15_000..26_000).contains(&median), "median {median}");
        assert!(*s.last().unwrap() > 1_000_000, "max {}", s.last().unwrap());
    }

    #[test]
    fn messages_are_deterministic_and_near_their_target() {
        let g = Generator::new(3);
        let a = g.message(&mut Rng::new(9), Kind::Personal, "u1@x", 1, 30_000, true);
        let b = g.message(&mut Rng::new(9), Kind::Personal, "u1@x", 1, 30_000, true);
        assert_eq!(a.lf, b.lf);
        assert!((30_000..32_000).contains(&a.lf.len()), "{}", a.lf.len());
        let big = g.message(&mut Rng::new(2), Kind::Spam, "u1@x", 2, 500_000, true);
        assert!(
            (480_000..520_000).contains(&big.lf.len()),
            "{}",
            big.lf.len()
        );
        assert!(!big.lf.contains(&b'\r'));
    }

    #[test]
    fn lmtp_wire_stuffs_dots_and_uses_crlf() {
        let m = Message {
            from: String::new(),
            lf: b"Subject: x\n\n.\n..a\nb\n".to_vec(),
        };
        assert_eq!(m.lmtp_wire(), b"Subject: x\r\n\r\n..\r\n...a\r\nb\r\n.\r\n");
        assert_eq!(m.crlf_size(), 25);
    }
}
