//! Crash safety: the server is killed with SIGKILL in the middle of a
//! stream of LMTP deliveries and in the middle of a POP3 UPDATE, then the
//! Maildir is inspected and the server restarted over it. Whatever the
//! moment of the kill, a message that was acknowledged is stored exactly
//! once and whole, nothing visible is partial, a message not marked for
//! deletion is never lost, and the restarted server serves what is on disk.
//!
//! `POPLAR_CRASH_TRIALS` sets the number of kill/restart cycles (20 by
//! default) and `POPLAR_CRASH_SEED` the seed of the random delays and
//! message sizes (each run prints the seed it used).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use crate::delivery::lmtp_config;
use crate::harness::{Options, TestServer, put_message};

/// A small seeded PRNG (SplitMix64), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
        Err(_) => default,
    }
}

fn trials() -> usize {
    env_or("POPLAR_CRASH_TRIALS", 20)
}

fn seed(test: u64) -> u64 {
    env_or("POPLAR_CRASH_SEED", 0x00c0_ffee_5eed_u64) ^ test
}

/// A line-oriented client that reports I/O errors instead of panicking:
/// the server may die under it at any moment.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            r: BufReader::new(tcp),
        })
    }

    /// One line including CRLF; an error at EOF.
    fn line(&mut self) -> io::Result<String> {
        let mut s = String::new();
        if self.r.read_line(&mut s)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(s)
    }

    /// A (possibly multi-line) SMTP-style reply.
    fn reply(&mut self) -> io::Result<String> {
        let mut all = String::new();
        loop {
            let l = self.line()?;
            all.push_str(&l);
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok(all);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let w = self.r.get_mut();
        w.write_all(bytes)?;
        w.flush()
    }

    fn cmd(&mut self, line: &str) -> io::Result<String> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }
}

/// Length and SHA-256 of a byte string.
type Digest32 = (usize, [u8; 32]);

fn digest(bytes: &[u8]) -> Digest32 {
    (bytes.len(), sha2::Sha256::digest(bytes).into())
}

/// The value of the first `Message-ID:` field of a stored message.
fn message_id(bytes: &[u8]) -> Option<String> {
    let needle = b"\nMessage-ID: <";
    let at = bytes.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let end = bytes[at..].iter().position(|&b| b == b'>')?;
    String::from_utf8(bytes[at..at + end].to_vec()).ok()
}

/// The files in a Maildir's new/ and cur/: `(sub/name, contents)`.
fn read_maildir(md: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = std::fs::read_dir(md.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            out.push((format!("{sub}/{name}"), bytes));
        }
    }
    out.sort();
    out
}

/// The files in a Maildir's tmp/ and their sizes.
fn tmp_files(md: &Path) -> BTreeMap<String, u64> {
    let Ok(rd) = std::fs::read_dir(md.join("tmp")) else {
        return BTreeMap::new();
    };
    rd.flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().map_or(0, |m| m.len()))
        })
        .collect()
}

/// The Maildir base name of `sub/name`: without the directory and flags.
fn base_of(key: &str) -> &str {
    let name = key.split_once('/').map_or(key, |(_, n)| n);
    name.split_once(':').map_or(name, |(b, _)| b)
}

/// Kills the server with SIGKILL and hands back its folder.
fn kill(mut s: TestServer) -> tempfile::TempDir {
    s.signal("KILL");
    let status = s.wait_for_exit();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    s.stop()
}

// ---------------------------------------------------------------------
// 1. Kill during delivery
// ---------------------------------------------------------------------

const FROM: &str = "sender@example.org";
const RCPT: &str = "alice@example.org";
/// Upper bound on the deliveries of one trial (the kill normally comes
/// first).
const MAX_PER_TRIAL: usize = 300;

/// A message with a unique Message-ID, CRLF, no line starting with a dot;
/// some are about 1 MB so that writing them takes a moment.
fn make_message(rng: &mut Rng, id: &str) -> Vec<u8> {
    let size = match rng.range(0, 99) {
        0..=59 => rng.range(100, 4_000),
        60..=84 => rng.range(4_000, 64_000),
        _ => rng.range(700_000, 1_300_000),
    } as usize;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -";
    let mut m = format!("From: <{FROM}>\r\nMessage-ID: <{id}>\r\nSubject: crash test {id}\r\n\r\n")
        .into_bytes();
    while m.len() < size {
        let mut line = Vec::with_capacity(80);
        line.push(b'L');
        while line.len() < 72 {
            let mut r = rng.next();
            for _ in 0..10 {
                line.push(ALPHABET[(r & 63) as usize]);
                r >>= 6;
            }
        }
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// What the stored file of a message delivered to [`RCPT`] must hold.
fn stored_form(message: &[u8]) -> Vec<u8> {
    // Stored with LF line endings (`delivery.line_endings = "lf"`).
    let mut s = format!("Return-Path: <{FROM}>\nDelivered-To: {RCPT}\n").into_bytes();
    s.extend_from_slice(&to_lf(message));
    s
}

/// CRLF line endings turned into LF.
fn to_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\n');
        rest = &rest[i + 2..];
    }
    out.extend_from_slice(rest);
    out
}

/// The size POP3 reports for a stored file, from the `,W=` of its name.
fn pop3_size(key: &str) -> usize {
    let at = key.find(",W=").expect("a W= size in the name") + 3;
    let digits: String = key[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// Where the kill found the delivery stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cut {
    /// Before the session started or between transactions.
    Between,
    /// While the message was being sent.
    Sending,
    /// After the final dot, before the reply.
    AwaitingReply,
    /// The stream ended before the kill.
    Never,
}

/// What one delivery stream did.
struct Stream {
    /// Every message whose DATA was started: Message-ID to digest of the
    /// stored form.
    expected: HashMap<String, Digest32>,
    acked: BTreeSet<String>,
    /// The message in flight when the connection died, if any.
    in_flight: Option<String>,
    cut: Cut,
    /// Replies other than 250 (none are expected).
    refused: Vec<String>,
}

/// Delivers messages one transaction at a time until the connection dies
/// or [`MAX_PER_TRIAL`] were sent.
fn delivery_stream(addr: SocketAddr, trial: usize, mut rng: Rng) -> Stream {
    let mut out = Stream {
        expected: HashMap::new(),
        acked: BTreeSet::new(),
        in_flight: None,
        cut: Cut::Between,
        refused: Vec::new(),
    };
    let Ok(mut c) = Conn::connect(addr) else {
        return out;
    };
    if !matches!(c.reply(), Ok(r) if r.starts_with("220 ")) {
        return out;
    }
    if c.cmd("LHLO crash.test").is_err() {
        return out;
    }
    for seq in 0..MAX_PER_TRIAL {
        let id = format!("crash-{trial}-{seq}@poplar.test");
        let message = make_message(&mut rng, &id);
        let ok = |r: io::Result<String>, code: &str| matches!(r, Ok(r) if r.starts_with(code));
        if !ok(c.cmd(&format!("MAIL FROM:<{FROM}>")), "250")
            || !ok(c.cmd(&format!("RCPT TO:<{RCPT}>")), "250")
            || !ok(c.cmd("DATA"), "354")
        {
            return out;
        }
        out.expected
            .insert(id.clone(), digest(&stored_form(&message)));
        out.in_flight = Some(id.clone());
        out.cut = Cut::Sending;
        let mut data = message;
        data.extend_from_slice(b".\r\n");
        // Written in pieces so that the kill can land between them.
        for piece in data.chunks(64 * 1024) {
            if c.send(piece).is_err() {
                return out;
            }
        }
        out.cut = Cut::AwaitingReply;
        match c.line() {
            Ok(r) if r.starts_with("250 ") => {
                out.acked.insert(id);
            }
            Ok(r) => out.refused.push(format!("{id}: {r}")),
            Err(_) => return out,
        }
        out.in_flight = None;
        out.cut = Cut::Between;
    }
    let _ = c.cmd("QUIT");
    out.cut = Cut::Never;
    out
}

/// The messages found on disk, by Message-ID: `(sub/name, digest)`.
type OnDisk = BTreeMap<String, (String, Digest32)>;

/// Checks every visible file against what was sent; returns them by
/// Message-ID. Panics on a partial, unknown or duplicated file.
fn check_disk(md: &Path, expected: &HashMap<String, Digest32>, context: &str) -> OnDisk {
    let mut found = OnDisk::new();
    for (key, bytes) in read_maildir(md) {
        let Some(id) = message_id(&bytes) else {
            panic!(
                "{context}: {key} has no Message-ID: a partial or foreign file ({} bytes)",
                bytes.len()
            );
        };
        let Some(want) = expected.get(&id) else {
            panic!("{context}: {key} holds {id}, which was never sent");
        };
        let got = digest(&bytes);
        assert_eq!(
            got.0, want.0,
            "{context}: {key} ({id}) is {} bytes, the message is {}: partial",
            got.0, want.0
        );
        assert!(
            got == *want,
            "{context}: {key} ({id}) differs from what was sent"
        );
        // The size in the name was computed from what was written.
        assert!(
            key.contains(&format!(",S={},", got.0)),
            "{context}: {key} names a size other than {}",
            got.0
        );
        if let Some((other, _)) = found.insert(id.clone(), (key.clone(), got)) {
            panic!("{context}: {id} is stored twice: {other} and {key}");
        }
    }
    found
}

/// Logs in after a restart (no stale lock) and checks that POP3 lists
/// exactly the messages on disk, fetching those in `fetch` byte-exact.
fn check_pop3(s: &TestServer, disk: &OnDisk, fetch: &BTreeSet<String>, context: &str) {
    let mut c = s.connect();
    c.ok("USER alice");
    let r = c.cmd("PASS alice-pw");
    assert!(r.starts_with("+OK"), "{context}: login after restart: {r}");
    let stat = c.ok("STAT");
    let total: usize = disk.values().map(|(k, _)| pop3_size(k)).sum();
    assert_eq!(
        stat,
        format!("+OK {} {total}\r\n", disk.len()),
        "{context}: STAT"
    );
    // UIDLs are the base names: one per file, nothing else.
    c.ok("UIDL");
    let listing = String::from_utf8(c.multiline()).unwrap();
    let mut numbers = HashMap::new();
    for l in listing.lines() {
        let (n, uid) = l.split_once(' ').unwrap();
        assert!(
            numbers.insert(uid.to_string(), n.to_string()).is_none(),
            "{context}: UIDL {uid} listed twice"
        );
    }
    let want: BTreeSet<String> = disk.values().map(|(k, _)| base_of(k).to_string()).collect();
    let got: BTreeSet<String> = numbers.keys().cloned().collect();
    assert_eq!(got, want, "{context}: UIDL listing");
    for id in fetch {
        let (key, d) = &disk[id];
        let n = &numbers[base_of(key)];
        assert_eq!(
            c.ok(&format!("LIST {n}")),
            format!("+OK {n} {}\r\n", pop3_size(key)),
            "{context}: LIST of {id}"
        );
        c.ok(&format!("RETR {n}"));
        let body = c.multiline();
        assert_eq!(body.len(), pop3_size(key), "{context}: RETR of {id}: size");
        assert!(
            digest(&to_lf(&body)) == *d,
            "{context}: RETR of {id} differs"
        );
    }
    c.ok("QUIT");
}

#[test]
fn sigkill_during_lmtp_deliveries_loses_and_tears_nothing() {
    let trials = trials();
    let seed = seed(1);
    let mut rng = Rng(seed);
    let mut expected: HashMap<String, Digest32> = HashMap::new();
    let mut disk = OnDisk::new();
    let mut fresh = BTreeSet::new();
    let mut cuts: BTreeMap<Cut, usize> = BTreeMap::new();
    let (mut acked_total, mut sent_total, mut stored_unacked) = (0, 0, 0);
    let mut in_flight_lost = 0;
    let mut tmp_seen = BTreeMap::new();
    // New leftovers in tmp/: (shorter than the in-flight message, whole).
    let (mut tmp_partial, mut tmp_whole) = (0, 0);
    let mut dir = tempfile::tempdir().unwrap();
    for trial in 0..=trials {
        let s = TestServer::start_in(dir, lmtp_config(""));
        let md = s.maildir("alice");
        check_pop3(
            &s,
            &disk,
            &fresh,
            &format!("seed {seed:#x}, restart {trial}"),
        );
        if trial == trials {
            break;
        }
        let context = format!("seed {seed:#x}, trial {trial}");
        let addr: SocketAddr = s
            .lmtp
            .iter()
            .find_map(|a| a.parse().ok())
            .expect("an LMTP TCP listener");
        let stream_rng = Rng(rng.next());
        let sender = std::thread::spawn(move || delivery_stream(addr, trial, stream_rng));
        std::thread::sleep(Duration::from_micros(rng.range(0, 300_000)));
        dir = kill(s);
        let stream = sender.join().unwrap();
        assert!(stream.refused.is_empty(), "{context}: {:?}", stream.refused);
        *cuts.entry(stream.cut).or_default() += 1;
        sent_total += stream.expected.len();
        acked_total += stream.acked.len();
        expected.extend(stream.expected);

        let now = check_disk(&md, &expected, &context);
        for id in &stream.acked {
            assert!(
                now.contains_key(id),
                "{context}: acknowledged {id} is missing"
            );
        }
        for (id, (key, _)) in &disk {
            assert_eq!(
                now.get(id).map(|(k, _)| k),
                Some(key),
                "{context}: {id}, stored before, moved or vanished"
            );
        }
        let want = stream.in_flight.as_ref().map(|id| expected[id].0 as u64);
        for (name, len) in tmp_files(&md) {
            if tmp_seen.insert(name.clone(), len).is_none() {
                match want {
                    Some(want) if len < want => tmp_partial += 1,
                    Some(want) if len == want => tmp_whole += 1,
                    _ => panic!(
                        "{context}: tmp/{name} ({len} bytes) is not part of the message in flight"
                    ),
                }
            }
        }
        if let Some(id) = &stream.in_flight {
            if now.contains_key(id) {
                stored_unacked += 1;
            } else {
                in_flight_lost += 1;
            }
        }
        fresh = now
            .keys()
            .filter(|id| !disk.contains_key(*id))
            .cloned()
            .collect();
        disk = now;
    }
    eprintln!(
        "crash/delivery: seed {seed:#x}, {trials} kills; {sent_total} messages started, \
         {acked_total} acknowledged, {} stored; kill landed: {cuts:?}; in-flight message \
         stored without its 250: {stored_unacked}, not stored: {in_flight_lost}; left in \
         tmp/: {} ({tmp_partial} partial, {tmp_whole} whole)",
        disk.len(),
        tmp_seen.len()
    );
}

// ---------------------------------------------------------------------
// 2. Kill during UPDATE
// ---------------------------------------------------------------------

/// Messages put in the maildrop for each trial.
const UPDATE_MESSAGES: usize = 200;

/// Fills alice's (emptied) Maildir with [`UPDATE_MESSAGES`] CRLF messages;
/// returns them by base name: `(sub/name, contents)`.
fn fill_maildrop(md: &Path, trial: usize, rng: &mut Rng) -> BTreeMap<String, (String, Vec<u8>)> {
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(md.join(sub)) {
            for e in rd.flatten() {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    let mut out = BTreeMap::new();
    for i in 0..UPDATE_MESSAGES {
        let base = format!("{}.M{i}P{trial}.crashtest", 1_700_000_000 + i);
        let (sub, name) = if rng.chance(50) {
            ("new", base.clone())
        } else {
            ("cur", format!("{base}:2,S"))
        };
        let mut content = format!(
            "Message-ID: <update-{trial}-{i}@poplar.test>\r\nSubject: update {trial} {i}\r\n\r\n"
        );
        for l in 0..rng.range(0, 40) {
            content.push_str(&format!("body line {l} of message {i}\r\n"));
        }
        put_message(md, sub, &name, content.as_bytes());
        out.insert(base, (format!("{sub}/{name}"), content.into_bytes()));
    }
    out
}

#[test]
fn sigkill_during_update_deletes_only_marked_messages() {
    let trials = trials();
    let seed = seed(2);
    let mut rng = Rng(seed);
    let mut s = TestServer::start();
    // (reply received, marked, deleted when killed), per trial.
    let mut outcomes = Vec::new();
    for trial in 0..trials {
        let context = format!("seed {seed:#x}, trial {trial}");
        let md = s.maildir("alice");
        let originals = fill_maildrop(&md, trial, &mut rng);

        let mut c = Conn::connect(s.plain).unwrap();
        assert!(c.line().unwrap().starts_with("+OK"));
        assert!(c.cmd("USER alice").unwrap().starts_with("+OK"));
        let r = c.cmd("PASS alice-pw").unwrap();
        assert!(r.starts_with("+OK"), "{context}: {r}");
        assert!(c.cmd("UIDL").unwrap().starts_with("+OK"));
        let mut by_number = Vec::new();
        loop {
            let l = c.line().unwrap();
            if l == ".\r\n" {
                break;
            }
            let (n, uid) = l.trim_end().split_once(' ').unwrap();
            by_number.push((n.to_string(), uid.to_string()));
        }
        assert_eq!(by_number.len(), UPDATE_MESSAGES, "{context}");
        let percent = rng.range(10, 95);
        let mut marked = BTreeSet::new();
        let mut commands = String::new();
        for (n, uid) in &by_number {
            if rng.chance(percent) || marked.is_empty() && n == &by_number.len().to_string() {
                marked.insert(uid.clone());
                commands.push_str(&format!("DELE {n}\r\n"));
            }
        }
        // Pipelined, as the server offers PIPELINING.
        c.send(commands.as_bytes()).unwrap();
        for uid in &marked {
            let r = c.line().unwrap();
            assert!(r.starts_with("+OK"), "{context}: DELE of {uid}: {r}");
        }
        c.send(b"QUIT\r\n").unwrap();
        std::thread::sleep(Duration::from_micros(rng.range(0, 15_000)));
        let dir = kill(s);
        let reply = c.line().ok();
        let replied = reply
            .as_deref()
            .is_some_and(|r| r == "+OK Poplar signing off\r\n");
        assert!(
            replied || reply.as_deref().is_none_or(str::is_empty),
            "{context}: QUIT -> {reply:?}"
        );

        // Each file is either there, whole and under its name, or deleted,
        // and only marked ones are deleted.
        let mut present = BTreeMap::new();
        for (key, bytes) in read_maildir(&md) {
            let base = base_of(&key).to_string();
            let Some((orig_key, orig)) = originals.get(&base) else {
                panic!("{context}: unknown file {key}");
            };
            assert_eq!(&key, orig_key, "{context}: {base} was renamed");
            assert!(bytes == *orig, "{context}: {key} changed");
            assert!(present.insert(base, key).is_none());
        }
        let mut deleted = 0;
        for base in originals.keys() {
            if !present.contains_key(base) {
                assert!(
                    marked.contains(base),
                    "{context}: {base} was not marked but is gone"
                );
                deleted += 1;
            }
        }
        if replied {
            assert_eq!(deleted, marked.len(), "{context}: +OK after QUIT");
        }
        outcomes.push((replied, marked.len(), deleted));

        // After a restart: no stale lock, and STAT is what is on disk.
        s = TestServer::start_in(dir, Options::default());
        let mut c = s.connect();
        c.ok("USER alice");
        let r = c.cmd("PASS alice-pw");
        assert!(r.starts_with("+OK"), "{context}: login after restart: {r}");
        let octets: usize = present.keys().map(|b| originals[b].1.len()).sum();
        assert_eq!(
            c.cmd("STAT"),
            format!("+OK {} {octets}\r\n", present.len()),
            "{context}: STAT after restart"
        );
        c.ok("QUIT");
    }
    let tally =
        |f: &dyn Fn(&(bool, usize, usize)) -> bool| outcomes.iter().filter(|o| f(o)).count();
    eprintln!(
        "crash/update: seed {seed:#x}, {trials} kills of {UPDATE_MESSAGES}-message maildrops; \
         +OK received: {}; no reply, nothing deleted: {}; no reply, partly deleted \
         (mid-UPDATE): {}; no reply, all marked deleted: {}; (replied, marked, deleted) \
         per trial: {outcomes:?}",
        tally(&|o| o.0),
        tally(&|o| !o.0 && o.2 == 0),
        tally(&|o| !o.0 && o.2 > 0 && o.2 < o.1),
        tally(&|o| !o.0 && o.2 == o.1),
    );
}
