//! HAProxy PROXY protocol on listeners with `proxy_protocol = true`: raw
//! v1 and v2 headers, then POP3 (or TLS); the client address the header
//! names is the one logged, limited and penalised; connections without a
//! valid header, or from an untrusted proxy, are closed without a greeting.

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{Client, Options, TestServer, put_message};

const MSG: &[u8] = b"From: a@example.org\nSubject: hi\n\nbody\n";

/// A server whose listeners both expect PROXY headers from loopback.
/// Proxied clients are not on loopback, so plaintext logins are allowed
/// everywhere for these tests.
fn proxy_options() -> Options {
    Options {
        listener: "proxy_protocol = true".into(),
        server: "proxy_trusted_networks = [\"127.0.0.1/32\"]".into(),
        plaintext_auth: "always",
        ..Options::default()
    }
}

fn server(opts: Options) -> TestServer {
    let s = TestServer::start_with(opts);
    put_message(&s.maildir("alice"), "new", "1700000001.M1P1.test", MSG);
    s
}

fn v1(src: &str, sport: u16) -> Vec<u8> {
    format!("PROXY TCP4 {src} 127.0.0.1 {sport} 110\r\n").into_bytes()
}

/// A v2 header: version 2, `command` (0 LOCAL, 1 PROXY), family/transport
/// octet, then the address block and TLVs.
fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_inet(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut body = src.to_vec();
    body.extend_from_slice(&[127, 0, 0, 1]);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&995u16.to_be_bytes());
    v2(1, 0x11, &body)
}

/// A plain connection that sent `header` (and maybe more) first.
fn proxied(addr: SocketAddr, header: &[u8]) -> Client {
    let mut c = Client::plain(addr);
    c.send_raw(header);
    c
}

fn login(c: &mut Client) {
    let greeting = c.line();
    assert!(greeting.starts_with("+OK "), "{greeting}");
    c.ok("USER alice");
    c.ok("PASS alice-pw");
}

/// Waits (up to 10 s) for a log line containing all of `needles`.
fn wait_for_line(s: &TestServer, needles: &[&str]) -> String {
    for _ in 0..200 {
        if let Some(line) = s
            .log()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return line.to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no log line with all of {needles:?}:\n{}", s.log());
}

/// `GET /metrics` on the admin listener.
fn metrics(s: &TestServer) -> String {
    use std::io::Read;
    let mut tcp = TcpStream::connect(s.admin.expect("admin listener")).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn v1_header_then_pop3_in_the_same_packet() {
    let s = server(proxy_options());
    // The header and a pipelined command arrive together: the command is
    // not lost with the header.
    let mut header = v1("203.0.113.7", 40000);
    header.extend_from_slice(b"CAPA\r\n");
    let mut c = proxied(s.plain, &header);
    assert!(c.line().starts_with("+OK "));
    assert_eq!(c.line(), "+OK Capability list follows\r\n");
    c.multiline_raw();
    c.ok("USER alice");
    c.ok("PASS alice-pw");
    assert_eq!(
        c.cmd("STAT"),
        format!("+OK 1 {}\r\n", crate::harness::crlf(MSG).len())
    );
    c.ok("QUIT");
    let line = wait_for_line(&s, &["session ended", "user=alice"]);
    assert!(line.contains("peer=203.0.113.7:40000"), "{line}");
}

#[test]
fn v2_headers_ipv6_with_tlvs_and_local() {
    let s = server(proxy_options());
    let mut body = Vec::new();
    body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&50000u16.to_be_bytes());
    body.extend_from_slice(&110u16.to_be_bytes());
    // PP2_TYPE_ALPN "pop3" and a PP2_TYPE_NOOP: skipped.
    body.extend_from_slice(&[0x01, 0, 4, b'p', b'o', b'p', b'3', 0x04, 0, 1, 0]);
    let mut c = proxied(s.plain, &v2(1, 0x21, &body));
    login(&mut c);
    c.ok("QUIT");
    let line = wait_for_line(&s, &["session ended", "user=alice"]);
    assert!(line.contains("peer=[2001:db8::7]:50000"), "{line}");

    // LOCAL (a health check): served, as the proxy itself.
    let mut c = proxied(s.plain, &v2(0, 0x00, &[]));
    assert!(c.line().starts_with("+OK "));
    c.ok("QUIT");
    let line = wait_for_line(&s, &["session ended", "user=-"]);
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
}

#[test]
fn implicit_tls_after_a_v2_header() {
    let s = server(proxy_options());
    let mut tcp = TcpStream::connect(s.tls).unwrap();
    tcp.write_all(&v2_inet([203, 0, 113, 9], 4321)).unwrap();
    let mut c = Client::tls_over(tcp, &s.cert_path());
    login(&mut c);
    c.ok("QUIT");
    let line = wait_for_line(&s, &["session ended", "user=alice"]);
    assert!(
        line.contains("peer=203.0.113.9:4321") && line.contains("tls=true"),
        "{line}"
    );
}

#[test]
fn failed_login_penalty_and_connection_cap_follow_the_proxied_address() {
    let mut opts = proxy_options();
    opts.trust_loopback = false;
    opts.server = "proxy_trusted_networks = [\"127.0.0.1/32\"]\n\
                   failed_login_delay_ms = 100\nmax_connections_per_ip = 2"
        .into();
    let s = server(opts);
    let mut c = proxied(s.plain, &v1("198.51.100.1", 1000));
    assert!(c.line().starts_with("+OK "));
    for _ in 0..3 {
        c.ok("USER alice");
        assert_eq!(c.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed\r\n");
    }
    let line = wait_for_line(&s, &["penalty_ms=400"]);
    assert!(line.contains("peer=198.51.100.1:1000"), "{line}");
    // Another client behind the same proxy starts with no penalty.
    let mut d = proxied(s.plain, &v1("198.51.100.2", 2000));
    assert!(d.line().starts_with("+OK "));
    d.ok("USER alice");
    assert!(d.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    let line = wait_for_line(&s, &["penalty_ms=", "peer=198.51.100.2:2000"]);
    assert!(line.contains("penalty_ms=100"), "{line}");

    // Two connections from 198.51.100.1 are open (c, and e): the third
    // is refused; another client behind the same proxy is not.
    let mut e = proxied(s.plain, &v1("198.51.100.1", 1001));
    assert!(e.line().starts_with("+OK "));
    let mut f = proxied(s.plain, &v1("198.51.100.1", 1002));
    assert_eq!(
        f.line(),
        "-ERR [SYS/TEMP] Too many connections from your address\r\n"
    );
    assert_eq!(f.rest(), "");
    let mut g = proxied(s.plain, &v1("198.51.100.3", 3000));
    assert!(g.line().starts_with("+OK "));
    g.ok("QUIT");
    e.ok("QUIT");
}

#[test]
fn connections_without_a_valid_header_are_closed_without_a_greeting() {
    let mut opts = proxy_options();
    opts.auth_timeout_secs = 1;
    opts.extra = "[admin]\nlisten = \"127.0.0.1:0\"\n".into();
    let s = server(opts);
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(200, b'x');
    let cases: [(&[u8], &str); 4] = [
        // A POP3 client that talks first.
        (b"USER alice\r\n", "not a PROXY protocol header"),
        (
            b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 110\r\n",
            "source port \"99999\"",
        ),
        (&[b'P'; 200], "not a PROXY protocol header"),
        (&long, "no CRLF within 107 octets"),
    ];
    for (bytes, reason) in cases {
        let mut c = proxied(s.plain, bytes);
        assert_eq!(c.rest(), "", "{reason}: no greeting");
        wait_for_line(&s, &["closing a PROXY protocol connection", reason]);
    }
    // A v2 header that claims UDP.
    let mut bad = v2_inet([192, 0, 2, 1], 1);
    bad[13] = 0x12;
    let mut c = proxied(s.tls, &bad);
    assert_eq!(c.rest(), "");
    wait_for_line(&s, &["closing a PROXY protocol connection", "UDP"]);
    // Silence: closed at the pre-login timeout (1 s here).
    let mut c = Client::plain(s.plain);
    assert_eq!(c.rest(), "");
    wait_for_line(&s, &["no complete header in time"]);
    // Half a header, then silence.
    let mut c = proxied(s.plain, b"PROXY TCP4 192.0");
    assert_eq!(c.rest(), "");
    let m = metrics(&s);
    assert!(
        m.contains("poplar_proxy_rejected_total{reason=\"invalid\"} 5\n"),
        "{m}"
    );
    assert!(
        m.contains("poplar_proxy_rejected_total{reason=\"timeout\"} 2\n"),
        "{m}"
    );
    assert!(!s.log().contains("session ended"), "no session began");
}

#[test]
fn untrusted_proxies_are_closed() {
    let mut opts = proxy_options();
    opts.server = "proxy_trusted_networks = [\"192.0.2.0/24\", \"::1\"]".into();
    let s = server(opts);
    for addr in [s.plain, s.tls] {
        let mut c = proxied(addr, &v1("203.0.113.7", 40000));
        assert_eq!(c.rest(), "");
    }
    wait_for_line(
        &s,
        &["proxy=127.0.0.1:", "outside server.proxy_trusted_networks"],
    );
    assert!(!s.log().contains("session ended"), "no session began");
}
