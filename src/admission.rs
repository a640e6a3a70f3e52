//! Who may open a signaling session: per-address limits on the sessions open at once and on
//! how fast new ones come, and the count of live sessions that a shutdown waits for.
//!
//! Every WebSocket upgrade at `/rtc` asks [`Admission::admit`] first; a refusal is an HTTP
//! 429 with the reason (see [`Refusal`]), so one address cannot hold a thousand sessions or
//! open them faster than a person could. The client's address is the TCP peer's, or the one
//! a trusted reverse proxy names in `X-Forwarded-For` ([`client_ip`]); IPv6 addresses count
//! by their /64, which is what one subscriber usually holds.
//!
//! One `std::sync::Mutex` guards the per-address map. It is taken once when a session opens
//! and once when it ends, never per message or per packet, and never across an `.await`.
//! The map keeps only addresses with a session open or a rate bucket still refilling, and is
//! pruned as it grows, so many addresses cost memory only while they are active.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use tokio::sync::Notify;

/// The limits, from `[limits]` (0 turns one off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddressLimits {
    /// Most sessions open at once from one address.
    pub sessions: usize,
    /// New sessions per second from one address, after a burst of `sessions`.
    pub per_sec: u32,
}

/// Why a session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address has this many sessions open already.
    #[error(
        "too many signaling sessions from your address ({0} open): close some, or ask the \
         operator to raise limits.sessions_per_address"
    )]
    TooManySessions(usize),
    /// The address opens sessions faster than this many a second.
    #[error(
        "too many new signaling sessions from your address (more than {0} a second): wait a moment"
    )]
    TooFast(u32),
}

impl Refusal {
    /// The `reason` label of `plenary_signaling_refused_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refusal::TooManySessions(_) => "too_many_sessions",
            Refusal::TooFast(_) => "too_fast",
        }
    }

    /// What `Retry-After` says, in seconds.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Refusal::TooManySessions(_) => 10,
            Refusal::TooFast(_) => 1,
        }
    }
}

/// Every `reason` label of `plenary_signaling_refused_total`.
pub const REFUSAL_LABELS: [&str; 2] = ["too_many_sessions", "too_fast"];

#[derive(Debug)]
struct Entry {
    open: usize,
    tokens: f64,
    refilled: Instant,
}

/// Per-address accounting and the live-session count. Shared (`Arc`) by the router and
/// every session's [`SessionPermit`].
#[derive(Debug)]
pub struct Admission {
    limits: AddressLimits,
    trusted_proxies: Vec<IpAddr>,
    // Held for one map update at a session's start or end; no `.await` while held.
    by_addr: Mutex<HashMap<IpAddr, Entry>>,
    live: AtomicUsize,
    idle: Notify,
}

/// The map is pruned of idle entries whenever it grows past this many.
const PRUNE_ABOVE: usize = 4096;

impl Admission {
    /// Accounting with these limits, believing `X-Forwarded-For` from `trusted_proxies`.
    pub fn new(limits: AddressLimits, trusted_proxies: Vec<IpAddr>) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            trusted_proxies,
            by_addr: Mutex::new(HashMap::new()),
            live: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// The address a request counts against (see [`client_ip`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.trusted_proxies)
    }

    /// Lets a session from `ip` open, or says why not. The permit counts the session until
    /// it is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<SessionPermit, Refusal> {
        let key = address_key(ip);
        let AddressLimits { sessions, per_sec } = self.limits;
        let burst = if sessions == 0 {
            100.0
        } else {
            sessions as f64
        };
        {
            let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= PRUNE_ABOVE && !map.contains_key(&key) {
                prune(&mut map, now, burst, per_sec);
            }
            let entry = map.entry(key).or_insert(Entry {
                open: 0,
                tokens: burst,
                refilled: now,
            });
            if sessions != 0 && entry.open >= sessions {
                return Err(Refusal::TooManySessions(entry.open));
            }
            if per_sec != 0 {
                refill(entry, now, burst, per_sec);
                if entry.tokens < 1.0 {
                    return Err(Refusal::TooFast(per_sec));
                }
                entry.tokens -= 1.0;
            }
            entry.open += 1;
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        Ok(SessionPermit {
            admission: Arc::clone(self),
            key,
        })
    }

    /// Signaling sessions open now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Waits until no session is open, or `limit` has passed. Returns whether all ended.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.live() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.live() == 0;
            }
        }
    }

    /// Addresses tracked now (tests and diagnostics).
    pub fn tracked_addresses(&self) -> usize {
        self.by_addr.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn release(&self, key: IpAddr) {
        {
            let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get_mut(&key) {
                e.open = e.open.saturating_sub(1);
                if e.open == 0 && self.limits.per_sec == 0 {
                    map.remove(&key);
                }
            }
        }
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

fn refill(e: &mut Entry, now: Instant, burst: f64, per_sec: u32) {
    let elapsed = now.saturating_duration_since(e.refilled).as_secs_f64();
    e.tokens = (e.tokens + elapsed * f64::from(per_sec)).min(burst);
    e.refilled = now;
}

/// Drops entries with no session open whose bucket is full again.
fn prune(map: &mut HashMap<IpAddr, Entry>, now: Instant, burst: f64, per_sec: u32) {
    map.retain(|_, e| {
        if per_sec != 0 {
            refill(e, now, burst, per_sec);
        }
        e.open > 0 || (per_sec != 0 && e.tokens < burst)
    });
}

/// One open signaling session, counted against its address until dropped.
#[derive(Debug)]
pub struct SessionPermit {
    admission: Arc<Admission>,
    key: IpAddr,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.admission.release(self.key);
    }
}

/// What an address counts as: IPv4 as itself (an IPv4-mapped IPv6 address too), IPv6 by
/// its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The client's address: `peer`, unless `peer` is a trusted proxy, in which case the last
/// address of `X-Forwarded-For` that is not itself a trusted proxy (proxies append the
/// address they received the request from, so the rightmost untrusted entry is the one no
/// client could have forged).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.contains(&address_normal(*ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(address_normal(ip)),
                Err(_) => return peer,
            }
            if hops.len() > 32 {
                return peer;
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

fn address_normal(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn open_sessions_per_address_are_capped_and_released() {
        let a = Admission::new(
            AddressLimits {
                sessions: 2,
                per_sec: 0,
            },
            vec![],
        );
        let t = Instant::now();
        let p1 = a.admit(ip("10.0.0.1"), t).unwrap();
        let _p2 = a.admit(ip("10.0.0.1"), t).unwrap();
        assert_eq!(
            a.admit(ip("10.0.0.1"), t).unwrap_err(),
            Refusal::TooManySessions(2)
        );
        let _other = a
            .admit(ip("10.0.0.2"), t)
            .expect("another address is not limited");
        assert_eq!(a.live(), 3);
        drop(p1);
        assert_eq!(a.live(), 2);
        a.admit(ip("10.0.0.1"), t).expect("a slot came free");
    }

    #[test]
    fn new_sessions_per_second_are_limited_after_a_burst() {
        let a = Admission::new(
            AddressLimits {
                sessions: 3,
                per_sec: 2,
            },
            vec![],
        );
        let t = Instant::now();
        for _ in 0..3 {
            drop(a.admit(ip("10.0.0.1"), t).unwrap());
        }
        assert_eq!(a.admit(ip("10.0.0.1"), t).unwrap_err(), Refusal::TooFast(2));
        let later = t + Duration::from_millis(500);
        drop(a.admit(ip("10.0.0.1"), later).expect("one token came back"));
        assert_eq!(
            a.admit(ip("10.0.0.1"), later).unwrap_err(),
            Refusal::TooFast(2)
        );
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let a = Admission::new(
            AddressLimits {
                sessions: 1,
                per_sec: 0,
            },
            vec![],
        );
        let t = Instant::now();
        let _p = a.admit(ip("2001:db8:1:2::1"), t).unwrap();
        assert!(a.admit(ip("2001:db8:1:2::ffff"), t).is_err());
        assert!(a.admit(ip("2001:db8:1:3::1"), t).is_ok());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.1".parse().unwrap(),
        );
        let proxy = ip("127.0.0.1");
        // Untrusted peer: the header is ignored.
        assert_eq!(client_ip(proxy, &h, &[]), proxy);
        // Trusted: the rightmost address that is not a trusted proxy.
        assert_eq!(client_ip(proxy, &h, &[proxy]), ip("198.51.100.1"));
        assert_eq!(
            client_ip(proxy, &h, &[proxy, ip("198.51.100.1")]),
            ip("203.0.113.9")
        );
        // A garbled header counts as the proxy itself.
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(client_ip(proxy, &bad, &[proxy]), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }

    #[test]
    fn idle_entries_are_pruned() {
        let a = Admission::new(
            AddressLimits {
                sessions: 5,
                per_sec: 1000,
            },
            vec![],
        );
        let t = Instant::now();
        for i in 0..(PRUNE_ABOVE as u32 + 10) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(a.admit(addr, t).unwrap());
        }
        // A second later every bucket is full again and nothing is open.
        let later = t + Duration::from_secs(1);
        drop(a.admit(ip("192.0.2.1"), later).unwrap());
        assert!(a.tracked_addresses() < 20, "{}", a.tracked_addresses());
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_session_ends() {
        let a = Admission::new(
            AddressLimits {
                sessions: 0,
                per_sec: 0,
            },
            vec![],
        );
        let p = a.admit(ip("10.0.0.1"), Instant::now()).unwrap();
        assert!(!a.wait_idle(Duration::from_millis(20)).await);
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.wait_idle(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(p);
        assert!(waiter.await.unwrap());
    }
}
