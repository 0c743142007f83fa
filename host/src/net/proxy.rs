//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary), on
//! listeners with `proxy_protocol = true`: a load balancer in front of
//! Poplar starts every connection with a header naming the client it
//! accepted, so logs, the per-address defences and the auth plugins see the
//! client instead of the proxy.
//!
//! [`parse`] is sans I/O: it looks at the bytes received so far and either
//! asks for more, names what is wrong, or returns the header and exactly how
//! many octets it took; whatever follows belongs to POP3 (or TLS).
//! [`read_header`] drives it over a socket, never reading past the header.
//!
//! Accepted: v1 `PROXY TCP4|TCP6 src dst sport dport\r\n` and
//! `PROXY UNKNOWN ...\r\n` (at most 107 octets); v2 `LOCAL`, and `PROXY`
//! over `AF_INET`/`AF_INET6` `STREAM`, its TLVs checked for framing and
//! skipped. v1 `UNKNOWN`, v2 `LOCAL`, `AF_UNIX` and `AF_UNSPEC` carry no
//! client address: the connection keeps the proxy's own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v1 header's first octets.
const V1_PREFIX: &[u8] = b"PROXY ";
/// A v1 header is at most this long, CRLF included.
pub const V1_MAX_LEN: usize = 107;
/// The v2 header's first twelve octets.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version/command, family,
/// length.
const V2_FIXED_LEN: usize = 16;
/// No header is shorter than this (`PROXY UNKNOWN\r\n`; a v2 header has 16).
const MIN_LEN: usize = 15;
/// The v2 address block of `AF_UNIX` (two 108-octet paths).
const V2_UNIX_LEN: usize = 216;

/// The protocol version a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The addresses a proxy reports for the connection it relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client, as the proxy saw it.
    pub source: SocketAddr,
    /// The address the client connected to (the proxy's listener).
    pub destination: SocketAddr,
}

/// A parsed PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// `None` for v1 `UNKNOWN`, v2 `LOCAL` (the proxy's own connection,
    /// e.g. a health check), `AF_UNIX` and `AF_UNSPEC`: the connection
    /// keeps the addresses of the socket itself.
    pub addresses: Option<Addresses>,
}

impl Header {
    /// The client address the rest of the server should use: the proxied
    /// source, or `socket_peer` when the header carries none.
    pub fn client(&self, socket_peer: SocketAddr) -> SocketAddr {
        self.addresses.map_or(socket_peer, |a| a.source)
    }
}

/// What [`parse`] made of the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// The header is not complete yet. At least `need` more octets belong
    /// to it, so reading up to `need` octets never reads past its end.
    Incomplete { need: usize },
    /// The header is the first `len` octets of the buffer.
    Done { header: Header, len: usize },
}

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header (starts with \"{0}\")")]
    NoSignature(String),
    #[error("v1 header has no CRLF within 107 octets")]
    V1TooLong,
    #[error("v1 header: {0}")]
    V1Syntax(String),
    #[error("v2 header: unsupported version {0} (expected 2)")]
    V2Version(u8),
    #[error("v2 header: unknown command {0:#x} (expected LOCAL or PROXY)")]
    V2Command(u8),
    #[error("v2 header: unknown address family/transport octet {0:#04x}")]
    V2Family(u8),
    #[error("v2 header: {0} is not supported (only TCP over IPv4 or IPv6)")]
    V2Unsupported(&'static str),
    #[error("v2 header: length {len} is too short for the {family} address block ({need} octets)")]
    V2TooShort {
        family: &'static str,
        len: usize,
        need: usize,
    },
    #[error("v2 header: {0}")]
    V2Tlv(String),
}

/// Looks at the first octets received on a PROXY protocol connection.
/// `buf` may hold less than a header (the answer says how much more is
/// needed) or more (the rest is not looked at).
pub fn parse(buf: &[u8]) -> Result<Parse, ProxyError> {
    match buf.first() {
        None => Ok(Parse::Incomplete { need: MIN_LEN }),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(no_signature(buf)),
    }
}

fn no_signature(buf: &[u8]) -> ProxyError {
    let shown = &buf[..buf.len().min(16)];
    ProxyError::NoSignature(shown.escape_ascii().to_string())
}

/// `PROXY <proto> <src> <dst> <sport> <dport>\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Parse, ProxyError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(no_signature(buf));
    }
    // The line ends at the first CR, which must be followed by LF; a bare
    // LF is malformed.
    let end = buf.iter().position(|&b| b == b'\r' || b == b'\n');
    let Some(cr) = end else {
        if buf.len() + 2 > V1_MAX_LEN {
            return Err(ProxyError::V1TooLong);
        }
        let min_total = v1_min_len(buf);
        let need = min_total.saturating_sub(buf.len()).max(2);
        return Ok(Parse::Incomplete { need });
    };
    if buf[cr] == b'\n' {
        return Err(v1_syntax(format!("bare LF at offset {cr}")));
    }
    if cr + 2 > V1_MAX_LEN {
        return Err(ProxyError::V1TooLong);
    }
    match buf.get(cr + 1) {
        None => return Ok(Parse::Incomplete { need: 1 }),
        Some(b'\n') => {}
        Some(_) => return Err(v1_syntax(format!("CR not followed by LF at offset {cr}"))),
    }
    if cr < V1_PREFIX.len() {
        return Err(no_signature(buf));
    }
    let header = parse_v1_line(&buf[V1_PREFIX.len()..cr])?;
    Ok(Parse::Done {
        header,
        len: cr + 2,
    })
}

/// The shortest complete v1 header that starts like `buf`.
fn v1_min_len(buf: &[u8]) -> usize {
    let rest = buf.get(V1_PREFIX.len()..).unwrap_or_default();
    if rest.starts_with(b"TCP4 ") {
        "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n".len()
    } else if rest.starts_with(b"TCP6 ") {
        "PROXY TCP6 :: :: 0 0\r\n".len()
    } else {
        MIN_LEN
    }
}

fn v1_syntax(what: String) -> ProxyError {
    ProxyError::V1Syntax(what)
}

/// The line after `PROXY ` and before CRLF.
fn parse_v1_line(line: &[u8]) -> Result<Header, ProxyError> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let proto = fields[0];
    let v6 = match proto {
        // The proxy could not tell: whatever follows is ignored.
        b"UNKNOWN" => {
            return Ok(Header {
                version: Version::V1,
                addresses: None,
            });
        }
        b"TCP4" => false,
        b"TCP6" => true,
        other => {
            return Err(v1_syntax(format!(
                "unknown protocol \"{}\" (expected TCP4, TCP6 or UNKNOWN)",
                other.escape_ascii()
            )));
        }
    };
    let proto = if v6 { "TCP6" } else { "TCP4" };
    if fields.len() != 5 || fields.iter().any(|f| f.is_empty()) {
        return Err(v1_syntax(format!(
            "expected \"{proto} <src> <dst> <sport> <dport>\" separated by single spaces, got \"{}\"",
            line.escape_ascii()
        )));
    }
    let ip = |field: &[u8], which: &str| -> Result<IpAddr, ProxyError> {
        let text = std::str::from_utf8(field).unwrap_or("");
        let parsed = if v6 {
            text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        };
        parsed.ok_or_else(|| {
            v1_syntax(format!(
                "{which} address \"{}\" is not an {} address",
                field.escape_ascii(),
                if v6 { "IPv6" } else { "IPv4" }
            ))
        })
    };
    let port = |field: &[u8], which: &str| -> Result<u16, ProxyError> {
        let canonical = field.len() <= 5
            && field.iter().all(u8::is_ascii_digit)
            && (field[0] != b'0' || field.len() == 1);
        let parsed = if canonical {
            std::str::from_utf8(field)
                .ok()
                .and_then(|t| t.parse::<u16>().ok())
        } else {
            None
        };
        parsed.ok_or_else(|| {
            v1_syntax(format!(
                "{which} port \"{}\" is not a number from 0 to 65535",
                field.escape_ascii()
            ))
        })
    };
    let source = SocketAddr::new(ip(fields[1], "source")?, port(fields[3], "source")?);
    let destination = SocketAddr::new(
        ip(fields[2], "destination")?,
        port(fields[4], "destination")?,
    );
    Ok(Header {
        version: Version::V1,
        addresses: Some(Addresses {
            source,
            destination,
        }),
    })
}

/// Signature, `0x2C` (version 2, command C), `0xFT` (family F, transport
/// T), a 16-bit big-endian length, then that many octets: the address
/// block and TLVs.
fn parse_v2(buf: &[u8]) -> Result<Parse, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(no_signature(buf));
    }
    let local = match buf.get(12) {
        None => None,
        Some(&vc) => {
            if vc >> 4 != 2 {
                return Err(ProxyError::V2Version(vc >> 4));
            }
            match vc & 0x0f {
                0 => Some(true),
                1 => Some(false),
                c => return Err(ProxyError::V2Command(c)),
            }
        }
    };
    // The address block this header must have, checked as soon as the
    // family octet is in.
    let block = match (buf.get(13), local) {
        (Some(&ft), Some(local)) => Some(v2_block(ft, local)?),
        _ => None,
    };
    if buf.len() < V2_FIXED_LEN {
        return Ok(Parse::Incomplete {
            need: V2_FIXED_LEN - buf.len(),
        });
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let (family, block_len) = block.unwrap_or(("LOCAL", 0));
    if len < block_len {
        return Err(ProxyError::V2TooShort {
            family,
            len,
            need: block_len,
        });
    }
    let total = V2_FIXED_LEN + len;
    if buf.len() < total {
        return Ok(Parse::Incomplete {
            need: total - buf.len(),
        });
    }
    let body = &buf[V2_FIXED_LEN..total];
    let addresses = if local == Some(true) {
        // The proxy's own connection: addresses and TLVs are ignored.
        None
    } else {
        check_tlvs(&body[block_len..])?;
        v2_addresses(buf[13] >> 4, body)
    };
    Ok(Parse::Done {
        header: Header {
            version: Version::V2,
            addresses,
        },
        len: total,
    })
}

/// The family's name and address block length for the family/transport
/// octet `ft`. LOCAL ignores the block, so any known family goes.
fn v2_block(ft: u8, local: bool) -> Result<(&'static str, usize), ProxyError> {
    let (family, transport) = (ft >> 4, ft & 0x0f);
    if family > 3 || transport > 2 {
        return Err(ProxyError::V2Family(ft));
    }
    if local {
        return Ok(("LOCAL", 0));
    }
    match (family, transport) {
        // Unknown to the proxy: no addresses, keep the socket's.
        (0, _) => Ok(("AF_UNSPEC", 0)),
        (_, 2) => Err(ProxyError::V2Unsupported("DGRAM (UDP) transport")),
        (1 | 2, 0) => Err(ProxyError::V2Unsupported("an unspecified transport")),
        (1, 1) => Ok(("AF_INET", 12)),
        (2, 1) => Ok(("AF_INET6", 36)),
        _ => Ok(("AF_UNIX", V2_UNIX_LEN)),
    }
}

/// The addresses of an `AF_INET`/`AF_INET6` block; `None` for the others.
fn v2_addresses(family: u8, body: &[u8]) -> Option<Addresses> {
    let be16 = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match family {
        1 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            Some(Addresses {
                source: SocketAddr::new(ip(0), be16(8)),
                destination: SocketAddr::new(ip(4), be16(10)),
            })
        }
        2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Some(Addresses {
                source: SocketAddr::new(ip(0), be16(32)),
                destination: SocketAddr::new(ip(16), be16(34)),
            })
        }
        _ => None,
    }
}

/// TLVs (type, 16-bit length, value) must exactly fill the rest of the
/// header; their contents are not used.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(ProxyError::V2Tlv(format!(
                "{} stray octets after the last TLV",
                tlvs.len()
            )));
        }
        let len = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        if tlvs.len() < 3 + len {
            return Err(ProxyError::V2Tlv(format!(
                "TLV of type {:#04x} claims {len} octets, only {} left",
                tlvs[0],
                tlvs.len() - 3
            )));
        }
        tlvs = &tlvs[3 + len..];
    }
    Ok(())
}

/// Why [`read_header`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Invalid(#[from] ProxyError),
    #[error("connection closed after {0} octets, before the PROXY header was complete")]
    Closed(usize),
    #[error("reading the PROXY header failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a PROXY header from `stream`, consuming exactly its octets: each
/// read asks for no more than [`Parse::Incomplete`]'s `need`, so the next
/// protocol's first octets stay in the socket. The caller sets a deadline.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Header, ReadError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        let need = match parse(&buf)? {
            Parse::Done { header, len } => {
                debug_assert_eq!(len, buf.len());
                return Ok(header);
            }
            Parse::Incomplete { need } => need,
        };
        let start = buf.len();
        buf.resize(start + need, 0);
        let n = stream.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(ReadError::Closed(start));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (Header, usize) {
        match parse(buf) {
            Ok(Parse::Done { header, len }) => (header, len),
            other => panic!("{:?}: {other:?}", buf.escape_ascii().to_string()),
        }
    }

    fn err(buf: &[u8]) -> ProxyError {
        match parse(buf) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", buf.escape_ascii().to_string()),
        }
    }

    fn addrs(src: &str, dst: &str) -> Option<Addresses> {
        Some(Addresses {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        })
    }

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn inet_body(tlvs: &[u8]) -> Vec<u8> {
        let mut b = vec![192, 0, 2, 7, 198, 51, 100, 1];
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&110u16.to_be_bytes());
        b.extend_from_slice(tlvs);
        b
    }

    /// Feeds `bytes` one octet at a time: every prefix is incomplete and
    /// never asks for more than what is left of the header.
    fn split_reads(bytes: &[u8]) -> (Header, usize) {
        for i in 0..bytes.len() {
            match parse(&bytes[..i]) {
                Ok(Parse::Incomplete { need }) => {
                    assert!(
                        need >= 1 && i + need <= bytes.len(),
                        "prefix {i}: need {need}"
                    )
                }
                other => panic!("prefix {i}: {other:?}"),
            }
        }
        done(bytes)
    }

    #[test]
    fn v1_tcp4_and_the_rest_of_the_buffer() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"USER alice\r\n");
        let (h, len) = done(&buf);
        assert_eq!(len, line.len());
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.addresses, addrs("192.0.2.7:40000", "198.51.100.1:110"));
        assert_eq!(
            h.client("10.0.0.1:5".parse().unwrap()),
            "192.0.2.7:40000".parse().unwrap()
        );
        assert_eq!(split_reads(line), (h, len));
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n";
        let (h, len) = split_reads(line);
        assert_eq!(len, line.len());
        assert_eq!(h.addresses, addrs("[2001:db8::7]:65535", "[2001:db8::1]:0"));
        let (h, len) = split_reads(b"PROXY UNKNOWN\r\n");
        assert_eq!((h.addresses, len), (None, 15));
        let peer: SocketAddr = "10.0.0.1:5".parse().unwrap();
        assert_eq!(h.client(peer), peer);
        // Anything after UNKNOWN is ignored.
        let line = b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\nrest";
        assert_eq!(done(line), (h, line.len() - 4));
        // The longest possible TCP6 line fits.
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {ip} {ip} 65535 65535\r\n");
        assert_eq!(split_reads(line.as_bytes()).1, line.len());
    }

    #[test]
    fn v1_malformed() {
        let cases: &[(&[u8], &str)] = &[
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
                "CR not followed by LF",
            ),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                "unknown protocol \"TCP5\"",
            ),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
            (b"PROXY UNKNOWNX\r\n", "unknown protocol"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "single spaces"),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "single spaces"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "single spaces"),
            (
                b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
                "source address \"1.2.3\"",
            ),
            (
                b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
                "destination address \"::1\"",
            ),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not an IPv6 address"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                "source port \"65536\"",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 08\r\n",
                "destination port \"08\"",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "source port"),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n",
                "destination port \"\\xff\"",
            ),
            (b"PROXY \r\n", "unknown protocol \"\""),
        ];
        for (input, reason) in cases {
            let e = err(input).to_string();
            assert!(
                e.starts_with("v1 header: ") && e.contains(reason),
                "{}: {e}",
                input.escape_ascii()
            );
        }
        // A CR before the "PROXY " prefix is complete.
        assert!(matches!(err(b"PROXY\r\n"), ProxyError::NoSignature(_)));
    }

    #[test]
    fn v1_over_long() {
        // 105 octets of line and CRLF is the limit.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(105, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(done(&line).1, 107);
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(106, b'x');
        assert_eq!(err(&long), ProxyError::V1TooLong, "no room for CRLF");
        long.extend_from_slice(b"\r\n");
        assert_eq!(err(&long), ProxyError::V1TooLong);
        // Without a CRLF in sight, reading stops at the limit.
        let mut buf = b"PROXY TCP4 ".to_vec();
        loop {
            match parse(&buf) {
                Ok(Parse::Incomplete { need }) => buf.extend(std::iter::repeat_n(b'1', need)),
                Err(e) => break assert_eq!(e, ProxyError::V1TooLong),
                Ok(done) => panic!("{done:?}"),
            }
        }
        assert!(buf.len() <= V1_MAX_LEN);
    }

    #[test]
    fn garbage_and_wrong_signatures() {
        for input in [
            &b"USER alice\r\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
            b"PROXX TCP4",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIX\n",
            b"\r\n\r\n\r\n",
            b"\0",
        ] {
            assert!(
                matches!(err(input), ProxyError::NoSignature(_)),
                "{}",
                input.escape_ascii()
            );
        }
        assert_eq!(
            err(b"HELO").to_string(),
            "not a PROXY protocol header (starts with \"HELO\")"
        );
        // A prefix of either signature is not judged yet.
        assert_eq!(parse(b""), Ok(Parse::Incomplete { need: 15 }));
        assert_eq!(parse(b"PROX"), Ok(Parse::Incomplete { need: 11 }));
        assert_eq!(parse(b"\r\n\r\n\0"), Ok(Parse::Incomplete { need: 11 }));
    }

    #[test]
    fn v2_inet_with_tlvs_and_split_reads() {
        // An ALPN TLV and a NOOP padding TLV.
        let tlvs = [0x01, 0, 4, b'p', b'o', b'p', b'3', 0x04, 0, 2, 0, 0];
        let mut h = v2(0x21, 0x11, &inet_body(&tlvs));
        let header_len = h.len();
        let (header, len) = split_reads(&h);
        assert_eq!(len, header_len);
        assert_eq!(header.version, Version::V2);
        assert_eq!(
            header.addresses,
            addrs("192.0.2.7:40000", "198.51.100.1:110")
        );
        // TLS after the header is left alone.
        h.extend_from_slice(&[0x16, 0x03, 0x01]);
        assert_eq!(done(&h), (header, header_len));
    }

    #[test]
    fn v2_inet6() {
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0x9c, 0x40, 0x03, 0xe3]);
        let h = v2(0x21, 0x21, &body);
        let (header, len) = split_reads(&h);
        assert_eq!(len, 16 + 36);
        assert_eq!(
            header.addresses,
            addrs("[2001:db8::7]:40000", "[2001:db8::1]:995")
        );
    }

    #[test]
    fn v2_local_unix_and_unspec_keep_the_socket_address() {
        // LOCAL: whatever the block says, the proxy's own connection.
        let (h, len) = split_reads(&v2(0x20, 0x00, &[]));
        assert_eq!((h.version, h.addresses, len), (Version::V2, None, 16));
        let local_inet = v2(0x20, 0x11, &inet_body(&[]));
        assert_eq!(done(&local_inet).0.addresses, None);
        // LOCAL with a short or odd block is still fine: it is ignored.
        assert_eq!(done(&v2(0x20, 0x11, &[1, 2])).1, 18);
        assert_eq!(done(&v2(0x21, 0x00, &[])).0.addresses, None, "AF_UNSPEC");
        let unix = v2(0x21, 0x31, &[0u8; 216]);
        assert_eq!(split_reads(&unix).0.addresses, None, "AF_UNIX");
    }

    #[test]
    fn v2_malformed() {
        let body = inet_body(&[]);
        assert_eq!(err(&v2(0x11, 0x11, &body)), ProxyError::V2Version(1));
        assert_eq!(err(&v2(0x31, 0x11, &body)), ProxyError::V2Version(3));
        assert_eq!(err(&v2(0x22, 0x11, &body)), ProxyError::V2Command(2));
        assert_eq!(err(&v2(0x21, 0x41, &body)), ProxyError::V2Family(0x41));
        assert_eq!(err(&v2(0x21, 0x13, &body)), ProxyError::V2Family(0x13));
        assert!(matches!(
            err(&v2(0x21, 0x12, &body)),
            ProxyError::V2Unsupported(_)
        ));
        assert!(matches!(
            err(&v2(0x21, 0x10, &body)),
            ProxyError::V2Unsupported(_)
        ));
        assert!(err(&v2(0x21, 0x12, &body)).to_string().contains("UDP"));
        assert_eq!(
            err(&v2(0x21, 0x11, &body[..11])),
            ProxyError::V2TooShort {
                family: "AF_INET",
                len: 11,
                need: 12
            }
        );
        assert_eq!(
            err(&v2(0x21, 0x21, &body)).to_string(),
            "v2 header: length 12 is too short for the AF_INET6 address block (36 octets)"
        );
        assert!(matches!(
            err(&v2(0x21, 0x31, &[0; 100])),
            ProxyError::V2TooShort { .. }
        ));
        // Errors show as soon as the octet at fault is in.
        let bad = v2(0x13, 0x11, &body);
        assert_eq!(err(&bad[..13]), ProxyError::V2Version(1));
        let bad = v2(0x21, 0x11, &body[..4]);
        assert!(matches!(err(&bad[..16]), ProxyError::V2TooShort { .. }));
        // Broken TLV framing.
        let e = err(&v2(0x21, 0x11, &inet_body(&[0x01, 0, 5, b'p'])));
        assert_eq!(
            e.to_string(),
            "v2 header: TLV of type 0x01 claims 5 octets, only 1 left"
        );
        let e = err(&v2(0x21, 0x11, &inet_body(&[0x04, 0])));
        assert!(e.to_string().contains("2 stray octets"), "{e}");
    }

    #[tokio::test]
    async fn read_header_consumes_exactly_the_header() {
        use tokio::io::AsyncWriteExt;
        for (header, rest) in [
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 110\r\n".to_vec(),
                &b"USER alice\r\n"[..],
            ),
            (v2(0x21, 0x11, &inet_body(&[1, 0, 1, 7])), b"\x16\x03\x01"),
            (b"PROXY UNKNOWN\r\n".to_vec(), b"x"),
        ] {
            let (mut client, mut server) = tokio::io::duplex(1024);
            // Header and what follows arrive together, then in pieces.
            let mut all = header.clone();
            all.extend_from_slice(rest);
            client.write_all(&all).await.unwrap();
            read_header(&mut server).await.unwrap();
            let mut after = vec![0u8; rest.len()];
            server.read_exact(&mut after).await.unwrap();
            assert_eq!(after, rest);

            let (mut client, mut server) = tokio::io::duplex(1024);
            let writer = tokio::spawn(async move {
                for chunk in all.chunks(3) {
                    client.write_all(chunk).await.unwrap();
                    tokio::task::yield_now().await;
                }
                client
            });
            read_header(&mut server).await.unwrap();
            let _client = writer.await.unwrap();
            let mut after = vec![0u8; rest.len()];
            server.read_exact(&mut after).await.unwrap();
            assert_eq!(after, rest);
        }
    }

    #[tokio::test]
    async fn read_header_errors() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PROXY TCP4 1.2").await.unwrap();
        drop(client);
        let e = read_header(&mut server).await.unwrap_err();
        assert!(matches!(e, ReadError::Closed(14)), "{e}");
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"+OK hello\r\n").await.unwrap();
        let e = read_header(&mut server).await.unwrap_err();
        assert!(
            matches!(e, ReadError::Invalid(ProxyError::NoSignature(_))),
            "{e}"
        );
    }
}
