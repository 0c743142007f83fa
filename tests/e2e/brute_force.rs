//! Password guessing from many addresses: the failed-login table stays
//! per source (an IPv6 /64 counts as one), and honest users keep logging
//! in while thousands of addresses fail. (How long logins take under
//! attack is measured by `poplar-bench attack`, not here.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::{Client, Options, TestServer, put_message};

const MSG: &[u8] = b"From: a@example.org\nSubject: hi\n\nbody\n";

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

/// One failed login through a PROXY v1 header naming `src` (IPv6).
fn fail_from_ipv6(s: &TestServer, src: &str, port: u16) {
    let mut c = Client::plain(s.plain);
    c.send_raw(format!("PROXY TCP6 {src} ::1 {port} 110\r\n").as_bytes());
    assert!(c.line().starts_with("+OK "));
    c.ok("USER alice");
    assert_eq!(c.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed\r\n");
    c.ok("QUIT");
}

#[test]
fn an_ipv6_slash_64_is_penalised_as_one_source() {
    let s = TestServer::start_with(Options {
        trust_loopback: false,
        listener: "proxy_protocol = true".into(),
        server: "proxy_trusted_networks = [\"127.0.0.1/32\"]\nfailed_login_delay_ms = 100".into(),
        plaintext_auth: "always",
        ..Options::default()
    });
    // A fresh address for every guess, all in one /64: the penalty grows
    // as if they were one client.
    fail_from_ipv6(&s, "2001:db8:7:1::a", 1001);
    fail_from_ipv6(&s, "2001:db8:7:1::b", 1002);
    fail_from_ipv6(&s, "2001:db8:7:1:8000::c", 1003);
    let line = wait_for_line(&s, &["penalty_ms=", ":1003"]);
    assert!(line.contains("penalty_ms=400"), "{line}");
    // The next /64 is another subscriber: it starts at the base delay.
    fail_from_ipv6(&s, "2001:db8:7:2::a", 1004);
    let line = wait_for_line(&s, &["penalty_ms=", ":1004"]);
    assert!(line.contains("penalty_ms=100"), "{line}");
}

#[test]
fn a_configured_ipv6_prefix_of_128_counts_each_address() {
    let s = TestServer::start_with(Options {
        trust_loopback: false,
        listener: "proxy_protocol = true".into(),
        server: "proxy_trusted_networks = [\"127.0.0.1/32\"]\nfailed_login_delay_ms = 100\n\
                 failed_login_ipv6_prefix = 128"
            .into(),
        plaintext_auth: "always",
        ..Options::default()
    });
    fail_from_ipv6(&s, "2001:db8:7:1::a", 1001);
    fail_from_ipv6(&s, "2001:db8:7:1::b", 1002);
    let line = wait_for_line(&s, &["penalty_ms=", ":1002"]);
    assert!(line.contains("penalty_ms=100"), "{line}");
}

/// A connection from `local` (a loopback address) to `server`.
fn connect_from(local: Ipv4Addr, server: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddrV4::new(local, 0).into())
        .unwrap_or_else(|e| panic!("bind {local}: {e}"));
    socket.connect(&server.into()).unwrap();
    let tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    tcp
}

/// Sends `line` and returns the status line answering it.
fn exchange(r: &mut BufReader<TcpStream>, line: &str) -> String {
    r.get_mut().write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    answer
}

#[test]
fn honest_logins_all_succeed_while_thousands_of_addresses_guess() {
    const ATTACKERS: u32 = 3000;
    const THREADS: u32 = 40;
    let s = TestServer::start_with(Options {
        trust_loopback: false,
        server: "failed_login_delay_ms = 20".into(),
        extra: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    });
    put_message(&s.maildir("alice"), "new", "1700000001.M1P1.test", MSG);
    put_message(&s.maildir("frank"), "new", "1700000002.M1P1.test", MSG);
    let server = s.plain;
    let failed = AtomicUsize::new(0);
    let honest = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let failed = &failed;
            scope.spawn(move || {
                // 127.1.0.1 onwards: every attacker its own address, two
                // guesses each (the second one penalised twice as long).
                for n in (t..ATTACKERS).step_by(THREADS as usize) {
                    let local = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 1)) + n);
                    let mut r = BufReader::new(connect_from(local, server));
                    let mut greeting = String::new();
                    r.read_line(&mut greeting).unwrap();
                    assert!(greeting.starts_with("+OK "), "{local}: {greeting}");
                    for _ in 0..2 {
                        assert!(exchange(&mut r, "USER alice\r\n").starts_with("+OK"));
                        let answer = exchange(&mut r, "PASS guess\r\n");
                        assert_eq!(answer, "-ERR [AUTH] Authentication failed\r\n", "{local}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    assert!(exchange(&mut r, "QUIT\r\n").starts_with("+OK"));
                }
            });
        }
        // Honest users, from their own addresses, log in throughout.
        for (user, password, local) in [
            ("alice", "alice-pw", Ipv4Addr::new(127, 0, 0, 1)),
            ("frank", "frank-pw", Ipv4Addr::new(127, 0, 0, 2)),
        ] {
            let (failed, honest) = (&failed, &honest);
            scope.spawn(move || {
                let mut rounds = 0;
                while failed.load(Ordering::Relaxed) < (ATTACKERS * 2) as usize || rounds < 5 {
                    let mut r = BufReader::new(connect_from(local, server));
                    let mut greeting = String::new();
                    r.read_line(&mut greeting).unwrap();
                    assert!(greeting.starts_with("+OK "), "{user}: {greeting}");
                    assert!(exchange(&mut r, &format!("USER {user}\r\n")).starts_with("+OK"));
                    let answer = exchange(&mut r, &format!("PASS {password}\r\n"));
                    assert!(answer.starts_with("+OK"), "{user} under attack: {answer}");
                    assert!(exchange(&mut r, "STAT\r\n").starts_with("+OK 1 "));
                    assert!(exchange(&mut r, "QUIT\r\n").starts_with("+OK"));
                    honest.fetch_add(1, Ordering::Relaxed);
                    rounds += 1;
                }
            });
        }
    });
    assert_eq!(failed.load(Ordering::Relaxed), (ATTACKERS * 2) as usize);
    assert!(honest.load(Ordering::Relaxed) >= 10);
    // Every guess was counted per address: each attacker's second guess
    // waited twice the base, none more (no address inherited another's).
    let log = s.log();
    let penalties: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("penalty_ms=").nth(1))
        .map(|rest| rest.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(penalties.len(), (ATTACKERS * 2) as usize);
    assert_eq!(
        penalties.iter().filter(|p| **p == "20").count(),
        ATTACKERS as usize
    );
    assert_eq!(
        penalties.iter().filter(|p| **p == "40").count(),
        ATTACKERS as usize
    );
    let mut tcp = TcpStream::connect(s.admin.expect("admin listener")).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut metrics = String::new();
    tcp.read_to_string(&mut metrics).unwrap();
    assert!(
        metrics.contains(&format!(
            "poplar_logins_total{{result=\"failed\"}} {}\n",
            ATTACKERS * 2
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "poplar_logins_total{{result=\"ok\"}} {}\n",
        honest.load(Ordering::Relaxed)
    )));
}
