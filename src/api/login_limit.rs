//! Per-client lockout of `POST /api/login` with exponential backoff.
//!
//! The failure delay alone lets one client run as many guesses in parallel as it has
//! connections. Here every attempt counts as a failure from the moment it arrives (a success
//! clears the record), so after `max_failures` attempts the client is locked out even while
//! its first guesses are still waiting out the delay. Each failure after that doubles the
//! lockout up to a cap. Rate limiters such as `governor` limit request rates, not failures with
//! a growing penalty, hence this small table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

/// Clients remembered at most; beyond it the stalest record is dropped, so memory stays bounded
/// however many addresses an attacker has.
const MAX_CLIENTS: usize = 10_000;

/// The lockout table.
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    max_lockout: Duration,
    clients: Mutex<HashMap<IpAddr, Record>>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

impl LoginLimiter {
    /// A limiter with the configured thresholds.
    pub fn new(config: &AuthConfig) -> LoginLimiter {
        LoginLimiter {
            max_failures: config.login_max_failures.max(1),
            window: Duration::from_secs(config.login_failure_window_seconds),
            lockout: Duration::from_secs(config.login_lockout_seconds),
            max_lockout: Duration::from_secs(config.login_lockout_max_seconds),
            clients: Mutex::default(),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an attempt by `peer`, counted as a failure until [`Self::succeeded`] or
    /// [`Self::refund`]. `Err` carries how long the client stays locked out.
    pub fn attempt(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = client(peer);
        let mut clients = self.clients();
        if let Some(until) = clients.get(&key).and_then(|r| r.locked_until) {
            if until > now {
                return Err(until - now);
            }
        }
        if !clients.contains_key(&key) && clients.len() >= MAX_CLIENTS {
            self.make_room(&mut clients, now);
        }
        let record = clients.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        if now.duration_since(record.last_failure) > self.window {
            record.failures = 0;
        }
        record.failures += 1;
        record.last_failure = now;
        if record.failures >= self.max_failures {
            let doublings = (record.failures - self.max_failures).min(31);
            let lockout = self
                .lockout
                .saturating_mul(1 << doublings)
                .min(self.max_lockout);
            record.locked_until = Some(now + lockout);
        }
        Ok(())
    }

    /// The attempt proved the password: the client's record is cleared.
    pub fn succeeded(&self, peer: IpAddr) {
        self.clients().remove(&client(peer));
    }

    /// The attempt tested no password (an unusable body): it does not count.
    pub fn refund(&self, peer: IpAddr) {
        let key = client(peer);
        let mut clients = self.clients();
        if let Some(record) = clients.get_mut(&key) {
            record.failures = record.failures.saturating_sub(1);
            if record.failures < self.max_failures {
                record.locked_until = None;
            }
            if record.failures == 0 {
                clients.remove(&key);
            }
        }
    }

    fn make_room(&self, clients: &mut HashMap<IpAddr, Record>, now: Instant) {
        clients.retain(|_, r| {
            r.locked_until.is_some_and(|until| until > now)
                || now.duration_since(r.last_failure) <= self.window
        });
        if clients.len() >= MAX_CLIENTS {
            if let Some(stalest) = clients
                .iter()
                .min_by_key(|(_, r)| r.last_failure)
                .map(|(k, _)| *k)
            {
                clients.remove(&stalest);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients().len()
    }
}

/// The unit a client is counted by: its IPv4 address, or the /64 of its IPv6 address (one host
/// usually holds a whole /64, so counting single v6 addresses would give it 2^64 tries).
fn client(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(&AuthConfig {
            login_max_failures: 3,
            login_failure_window_seconds: 60,
            login_lockout_seconds: 10,
            login_lockout_max_seconds: 35,
            ..Default::default()
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn locks_out_after_the_threshold_and_doubles_up_to_the_cap() {
        let l = limiter();
        let t = Instant::now();
        assert!(l.attempt(A, t).is_ok());
        assert!(l.attempt(A, t).is_ok());
        assert!(
            l.attempt(A, t).is_ok(),
            "the third attempt is still checked"
        );
        assert_eq!(l.attempt(A, t), Err(Duration::from_secs(10)));
        assert!(l.attempt(B, t).is_ok(), "other clients are not affected");
        // After the lockout, one more failure doubles it; then the cap holds.
        let t = t + Duration::from_secs(10);
        assert!(l.attempt(A, t).is_ok());
        assert_eq!(l.attempt(A, t), Err(Duration::from_secs(20)));
        let t = t + Duration::from_secs(20);
        assert!(l.attempt(A, t).is_ok());
        assert_eq!(l.attempt(A, t), Err(Duration::from_secs(35)));
    }

    #[test]
    fn success_clears_refund_uncounts_and_the_window_forgets() {
        let l = limiter();
        let t = Instant::now();
        for _ in 0..3 {
            l.attempt(A, t).unwrap();
        }
        l.succeeded(A);
        assert!(l.attempt(A, t).is_ok());
        l.refund(A);
        assert_eq!(l.len(), 0);
        l.attempt(A, t).unwrap();
        l.attempt(A, t).unwrap();
        let later = t + Duration::from_secs(61);
        l.attempt(A, later).unwrap();
        l.attempt(A, later).unwrap();
        assert!(
            l.attempt(A, later).is_ok(),
            "failures outside the window were forgotten"
        );
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(client(a), client(b));
        assert_ne!(client(a), client("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(client("::ffff:192.0.2.1".parse().unwrap()), A);
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = limiter();
        let t = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 50) {
            l.attempt(IpAddr::V4(i.into()), t).unwrap();
        }
        assert_eq!(l.len(), MAX_CLIENTS);
    }
}
