//! Defences against hostile clients, kept per client address:
//!
//! - a cap on connections from one IP (`server.max_connections_per_ip`);
//! - a failed-login penalty that grows with each failure from the same
//!   source (with the default 2 s base: 2, 4, 8, then 15 s), applied before
//!   the failure is answered, so guessing passwords is slow; a successful
//!   login clears it, and it is forgotten after an hour without failures.
//!   A source is an IPv4 address, or an IPv6 /64 (one subscriber's
//!   network: any host in it costs an attacker nothing), both configurable
//!   (`server.failed_login_ipv4_prefix`, `server.failed_login_ipv6_prefix`);
//! - the LOGIN-DELAY record (RFC 2449): when each user last logged in.
//!
//! Addresses in `server.trusted_networks` are exempt from the first two.
//! All state is in memory: a restart forgets it. The failure and LOGIN-DELAY
//! tables are [`Recent`] tables: sharded, bounded, and expired oldest first
//! in constant time per login, so a spray of failures from many addresses
//! never makes one login scan the table.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ipnet::IpNet;

/// How long a run of failures is remembered.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Most failure records kept (one per source, plus one per repeated
/// failure not yet expired); past it the least recently failed go first.
const MAX_FAILURE_RECORDS: usize = 1 << 18;
/// Independent locks per table, so logins from different sources rarely
/// wait for each other.
const SHARDS: usize = 16;

/// An address range such as `10.0.0.0/8` or `::1/128` (parsed by `ipnet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(IpNet);

impl Network {
    /// Parses `ADDR/PREFIX`, or a single address.
    pub fn parse(text: &str) -> Result<Network> {
        let text = text.trim();
        if let Ok(addr) = IpAddr::from_str(text) {
            return Ok(Network(IpNet::from(addr)));
        }
        match IpNet::from_str(text) {
            Ok(net) => Ok(Network(net)),
            Err(_) => match text.split_once('/') {
                Some((addr, _)) if addr.trim().parse::<IpAddr>().is_ok() => {
                    let max = if addr.contains(':') { 128 } else { 32 };
                    bail!("{text:?}: the prefix length must be 0 to {max}")
                }
                _ => bail!("{text:?} is not an IP address or network"),
            },
        }
    }

    /// Whether `ip` is in the range; an IPv4-mapped IPv6 peer
    /// (`::ffff:10.0.0.1`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&unmap(ip))
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
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
    /// IPv4 addresses sharing this many leading bits share a penalty.
    pub failed_login_ipv4_prefix: u8,
    /// IPv6 addresses sharing this many leading bits share a penalty.
    pub failed_login_ipv6_prefix: u8,
}

impl GuardConfig {
    /// The source a failed login from `ip` is counted against: the network
    /// of the configured prefix length that holds it.
    fn source(&self, ip: IpAddr) -> IpNet {
        let ip = unmap(ip);
        let prefix = match ip {
            IpAddr::V4(_) => self.failed_login_ipv4_prefix.min(32),
            IpAddr::V6(_) => self.failed_login_ipv6_prefix.min(128),
        };
        IpNet::new(ip, prefix)
            .expect("prefix clamped to the family's length")
            .trunc()
    }
}

/// Per-address defences shared by all connections.
#[derive(Debug)]
pub struct Guard {
    /// Replaced as a whole when the configuration is reloaded.
    config: RwLock<Arc<GuardConfig>>,
    connections: Mutex<HashMap<IpAddr, usize>>,
    /// Failures per source, since the last success or an hour of quiet.
    failures: Recent<IpNet, u32>,
}

/// Counts one connection from an address until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    guard: Arc<Guard>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut connections = self.guard.connections();
        if let Some(n) = connections.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                connections.remove(&self.ip);
            }
        }
    }
}

impl Guard {
    pub fn new(config: GuardConfig) -> Arc<Guard> {
        Arc::new(Guard {
            config: RwLock::new(Arc::new(config)),
            connections: Mutex::new(HashMap::new()),
            failures: Recent::new(MAX_FAILURE_RECORDS),
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

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config().trusted.iter().any(|n| n.contains(ip))
    }

    /// Admits a connection from `ip`, or `None` if it already has the
    /// most connections allowed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let config = self.config();
        let trusted = config.trusted.iter().any(|n| n.contains(ip));
        let mut connections = self.connections();
        let n = connections.entry(ip).or_insert(0);
        if !trusted && *n >= config.max_connections_per_ip {
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
        self.failed_login_at(ip, Instant::now())
    }

    fn failed_login_at(&self, ip: IpAddr, now: Instant) -> Duration {
        let config = self.config();
        let base = config.failed_login_delay;
        if base.is_zero() || config.trusted.iter().any(|n| n.contains(ip)) {
            return Duration::ZERO;
        }
        let failures = self
            .failures
            .update(config.source(ip), now, FORGET_AFTER, |n| {
                n.unwrap_or(0).saturating_add(1)
            });
        let factor = match failures {
            1 => 1.0,
            2 => 2.0,
            3 => 4.0,
            _ => 7.5,
        };
        base.mul_f64(factor)
    }

    /// A successful login from `ip` clears its source's penalty.
    pub fn logged_in(&self, ip: IpAddr) {
        self.failures.remove(&self.config().source(ip));
    }
}

/// A bounded table whose entries are forgotten `window` after their last
/// update, oldest first. Every update appends to a queue in time order;
/// each operation pops the expired (or, past the capacity, the least
/// recently updated) front of the queue: amortised constant work, never a
/// scan. Queue items superseded by a later update of the same key are
/// skipped when they reach the front.
#[derive(Debug)]
struct Recent<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: RandomState,
}

#[derive(Debug)]
struct Shard<K, V> {
    map: HashMap<K, Record<V>>,
    /// Keys in the order they were updated, with the update's number.
    order: VecDeque<(K, u64)>,
    /// The number of the next update.
    next: u64,
    capacity: usize,
}

#[derive(Debug)]
struct Record<V> {
    value: V,
    /// The number of the update that wrote it: only the queue item with
    /// this number stands for the record.
    update: u64,
    at: Instant,
}

impl<K: Hash + Eq + Clone, V: Clone> Recent<K, V> {
    fn new(capacity: usize) -> Self {
        Recent {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        order: VecDeque::new(),
                        next: 0,
                        capacity: capacity.div_ceil(SHARDS).max(1),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, Shard<K, V>> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces `key`'s value (`None` if it has none younger than `window`)
    /// with `f`'s result, timestamped `now`; returns the new value.
    fn update(&self, key: K, now: Instant, window: Duration, f: impl FnOnce(Option<V>) -> V) -> V {
        let mut shard = self.shard(&key);
        shard.expire(now, window);
        let current = shard
            .map
            .get(&key)
            .filter(|r| now.saturating_duration_since(r.at) < window)
            .map(|r| r.value.clone());
        let value = f(current);
        shard.insert(key, value.clone(), now);
        value
    }

    fn remove(&self, key: &K) {
        self.shard(key).map.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().map.len())
            .sum()
    }
}

impl<K: Hash + Eq + Clone, V> Shard<K, V> {
    fn insert(&mut self, key: K, value: V, at: Instant) {
        let update = self.next;
        self.next += 1;
        self.order.push_back((key.clone(), update));
        self.map.insert(key, Record { value, update, at });
    }

    /// Pops queue items from the front while they are superseded, expired,
    /// or beyond the capacity (counting the one about to be pushed).
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((key, update)) = self.order.front() {
            let over = self.order.len() >= self.capacity;
            match self.map.get(key) {
                Some(r) if r.update == *update => {
                    if !over && now.saturating_duration_since(r.at) < window {
                        return;
                    }
                    self.map.remove(key);
                }
                // Superseded by a later update, or removed.
                _ => {}
            }
            self.order.pop_front();
        }
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
            failed_login_ipv4_prefix: 32,
            failed_login_ipv6_prefix: 64,
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
        let too_long = Network::parse("10.0.0.0/33").unwrap_err().to_string();
        assert!(
            too_long.contains("prefix length must be 0 to 32"),
            "{too_long}"
        );
        let too_long = Network::parse("::/129").unwrap_err().to_string();
        assert!(too_long.contains("0 to 128"), "{too_long}");
        let nope = Network::parse("nope").unwrap_err().to_string();
        assert!(nope.contains("is not an IP address or network"), "{nope}");
        assert!(
            Network::parse(" 2001:db8::/32 ")
                .unwrap()
                .contains(ip("2001:db8:1::5"))
        );
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
            failed_login_ipv4_prefix: 32,
            failed_login_ipv6_prefix: 64,
        });
        let _c = g.admit(addr).unwrap();
        assert!(g.admit(addr).is_none(), "the two open ones still count");
        assert_eq!(g.failed_login(ip("203.0.113.1")), Duration::ZERO);
        assert_eq!(g.failed_login(addr).as_secs(), 1);
    }

    #[test]
    fn an_ipv6_slash_64_shares_one_penalty() {
        let g = guard(&[]);
        let delays: Vec<u64> = ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::1"]
            .iter()
            .map(|a| g.failed_login(ip(a)).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8], "one /64, one growing penalty");
        assert_eq!(
            g.failed_login(ip("2001:db8:1:3::a")).as_secs(),
            2,
            "the next /64 is another source"
        );
        g.logged_in(ip("2001:db8:1:2::77"));
        assert_eq!(g.failed_login(ip("2001:db8:1:2::a")).as_secs(), 2);
        // IPv4 stays per address by default; IPv4-mapped peers count as IPv4.
        assert_eq!(g.failed_login(ip("198.51.100.1")).as_secs(), 2);
        assert_eq!(g.failed_login(ip("::ffff:198.51.100.1")).as_secs(), 4);
        assert_eq!(g.failed_login(ip("198.51.100.2")).as_secs(), 2);
    }

    #[test]
    fn prefixes_are_configurable() {
        let g = guard(&[]);
        g.reconfigure(GuardConfig {
            max_connections_per_ip: 2,
            trusted: vec![],
            failed_login_delay: Duration::from_secs(2),
            failed_login_ipv4_prefix: 24,
            failed_login_ipv6_prefix: 128,
        });
        assert_eq!(g.failed_login(ip("198.51.100.1")).as_secs(), 2);
        assert_eq!(g.failed_login(ip("198.51.100.200")).as_secs(), 4);
        assert_eq!(g.failed_login(ip("2001:db8::1")).as_secs(), 2);
        assert_eq!(g.failed_login(ip("2001:db8::2")).as_secs(), 2);
    }

    #[test]
    fn failures_are_forgotten_after_an_hour_of_quiet() {
        let g = guard(&[]);
        let bad = ip("203.0.113.9");
        let t0 = Instant::now();
        assert_eq!(g.failed_login_at(bad, t0).as_secs(), 2);
        assert_eq!(
            g.failed_login_at(bad, t0 + Duration::from_secs(1800))
                .as_secs(),
            4
        );
        // An hour after the last failure, not the first.
        let later = t0 + Duration::from_secs(1800) + FORGET_AFTER;
        assert_eq!(g.failed_login_at(bad, later).as_secs(), 2);
        // Expired records leave the table as others arrive.
        let much_later = later + FORGET_AFTER;
        for i in 0..200u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i));
            g.failed_login_at(addr, much_later);
        }
        assert_eq!(g.failures.len(), 200, "the stale records are gone");
    }

    #[test]
    fn the_failure_table_is_bounded_and_drops_the_least_recent() {
        let table: Recent<u32, u32> = Recent::new(SHARDS * 4);
        let now = Instant::now();
        let window = Duration::from_secs(60);
        for key in 0..10_000u32 {
            table.update(key, now, window, |n| n.unwrap_or(0) + 1);
        }
        assert!(table.len() <= SHARDS * 4, "{} records", table.len());
        // The newest key survives the spray, with its count.
        assert_eq!(table.update(9_999, now, window, |n| n.unwrap_or(0) + 1), 2);
        // Repeated updates of one key do not grow its shard's queue past
        // the capacity.
        for _ in 0..10_000 {
            table.update(7, now, window, |n| n.unwrap_or(0) + 1);
        }
        let shard = table.shard(&7);
        assert!(shard.order.len() <= 4, "{} queued", shard.order.len());
        assert_eq!(shard.map[&7].value, 10_000);
    }
}
