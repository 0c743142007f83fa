//! Defences against hostile clients, kept per client address:
//!
//! - a cap on connections from one IP (`server.max_connections_per_ip`);
//! - a failed-login penalty that grows with each failure from the same IP
//!   (with the default 2 s base: 2, 4, 8, then 15 s), applied before the
//!   failure is answered, so guessing passwords is slow; a successful login
//!   clears it, and it is forgotten after an hour without failures;
//! - the LOGIN-DELAY record (RFC 2449): when each user last logged in.
//!
//! Addresses in `server.trusted_networks` are exempt from the first two.
//! All state is in memory: a restart forgets it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How long a run of failures is remembered.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// An address range such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `ADDR/PREFIX`, or a single address.
    pub fn parse(text: &str) -> Result<Network> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{text:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => bail!("{text:?}: the prefix length must be 0 to {max}"),
            },
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // Compare IPv4-mapped IPv6 peers as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        if self.prefix == 0 {
            return true;
        }
        let shift = bits - u32::from(self.prefix);
        (a >> shift) == (b >> shift)
    }
}

/// Settings of the guard.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub max_connections_per_ip: usize,
    pub trusted: Vec<Network>,
    /// The first failure's delay; each further failure doubles it, up to
    /// 7.5 times the base (2 s → 2, 4, 8, 15 s). Zero turns penalties off.
    pub failed_login_delay: Duration,
}

#[derive(Debug, Default)]
struct State {
    connections: HashMap<IpAddr, usize>,
    failures: HashMap<IpAddr, (u32, Instant)>,
}

/// Per-address defences shared by all connections.
#[derive(Debug)]
pub struct Guard {
    /// Replaced as a whole when the configuration is reloaded.
    config: RwLock<Arc<GuardConfig>>,
    state: Mutex<State>,
}

/// Counts one connection from an address until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    guard: Arc<Guard>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut state = self.guard.lock();
        if let Some(n) = state.connections.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                state.connections.remove(&self.ip);
            }
        }
    }
}

impl Guard {
    pub fn new(config: GuardConfig) -> Arc<Guard> {
        Arc::new(Guard {
            config: RwLock::new(Arc::new(config)),
            state: Mutex::new(State::default()),
        })
    }

    fn config(&self) -> Arc<GuardConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// New limits and trusted networks (a configuration reload). Counts,
    /// penalties and LOGIN-DELAY records are kept.
    pub fn reconfigure(&self, config: GuardConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config().trusted.iter().any(|n| n.contains(ip))
    }

    /// Admits a connection from `ip`, or `None` if it already has the
    /// most connections allowed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let trusted = self.is_trusted(ip);
        let mut state = self.lock();
        let n = state.connections.entry(ip).or_insert(0);
        if !trusted && *n >= self.config().max_connections_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            guard: self.clone(),
            ip,
        })
    }

    /// Records a failed login from `ip`; returns how long to wait before
    /// answering it.
    pub fn failed_login(&self, ip: IpAddr) -> Duration {
        let base = self.config().failed_login_delay;
        if base.is_zero() || self.is_trusted(ip) {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut state = self.lock();
        // Forget stale entries now and then, so the map cannot grow
        // without bound under a spray of addresses.
        if state.failures.len() > 10_000 {
            state
                .failures
                .retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
        }
        let entry = state.failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let factor = match entry.0 {
            1 => 1.0,
            2 => 2.0,
            3 => 4.0,
            _ => 7.5,
        };
        base.mul_f64(factor)
    }

    /// A successful login from `ip` clears its penalty.
    pub fn logged_in(&self, ip: IpAddr) {
        self.lock().failures.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(trusted: &[&str]) -> Arc<Guard> {
        Guard::new(GuardConfig {
            max_connections_per_ip: 2,
            trusted: trusted.iter().map(|t| Network::parse(t).unwrap()).collect(),
            failed_login_delay: Duration::from_secs(2),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(Network::parse("::1").unwrap().contains(ip("::1")));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("192.0.2.1"))
        );
        assert!(!Network::parse("::/0").unwrap().contains(ip("192.0.2.1")));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("nope").is_err());
    }

    #[test]
    fn per_ip_connection_cap_and_trust() {
        let g = guard(&["192.0.2.0/24"]);
        let a = g.admit(ip("198.51.100.1")).unwrap();
        let _b = g.admit(ip("198.51.100.1")).unwrap();
        assert!(g.admit(ip("198.51.100.1")).is_none());
        assert!(
            g.admit(ip("198.51.100.2")).is_some(),
            "other addresses are fine"
        );
        drop(a);
        assert!(g.admit(ip("198.51.100.1")).is_some());
        let trusted: Vec<_> = (0..5).map(|_| g.admit(ip("192.0.2.9")).unwrap()).collect();
        assert_eq!(trusted.len(), 5);
    }

    #[test]
    fn penalty_grows_caps_and_resets() {
        let g = guard(&["127.0.0.0/8"]);
        let bad = ip("203.0.113.5");
        let delays: Vec<u64> = (0..5).map(|_| g.failed_login(bad).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 15, 15]);
        g.logged_in(bad);
        assert_eq!(g.failed_login(bad).as_secs(), 2);
        assert_eq!(g.failed_login(ip("127.0.0.1")), Duration::ZERO);
    }

    #[test]
    fn reconfigure_keeps_counts() {
        let g = guard(&[]);
        let addr = ip("198.51.100.7");
        let _a = g.admit(addr).unwrap();
        let _b = g.admit(addr).unwrap();
        assert!(g.admit(addr).is_none());
        g.reconfigure(GuardConfig {
            max_connections_per_ip: 3,
            trusted: vec![Network::parse("203.0.113.0/24").unwrap()],
            failed_login_delay: Duration::from_secs(1),
        });
        let _c = g.admit(addr).unwrap();
        assert!(g.admit(addr).is_none(), "the two open ones still count");
        assert_eq!(g.failed_login(ip("203.0.113.1")), Duration::ZERO);
        assert_eq!(g.failed_login(addr).as_secs(), 1);
    }
}
