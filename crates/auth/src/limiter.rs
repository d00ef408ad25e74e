//! [`FailureLimiter`]: throttles guessing. Each failed login adds one to a per-key counter that
//! drains at a steady rate; while a key is over its burst, every attempt for it (right or wrong)
//! is refused. Keys are client addresses and account names, so neither one address trying many
//! accounts nor many addresses trying one account gets far.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Keys kept at most; when full, drained entries are dropped first, then the table is cleared
/// (an attacker able to fill it with distinct keys gains a fresh budget, no more).
const MAX_KEYS: usize = 100_000;

pub struct FailureLimiter {
    burst: f64,
    per_second: f64,
    counters: Mutex<HashMap<String, (f64, Instant)>>,
}

impl FailureLimiter {
    /// Allows `burst` failures in a row per key, then one more per `refill`.
    pub fn new(burst: u32, refill: Duration) -> FailureLimiter {
        FailureLimiter {
            burst: f64::from(burst.max(1)),
            per_second: 1.0 / refill.as_secs_f64().max(0.001),
            counters: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, entry: (f64, Instant), now: Instant) -> f64 {
        let drained = now.saturating_duration_since(entry.1).as_secs_f64() * self.per_second;
        (entry.0 - drained).max(0.0)
    }

    /// `None` when every key may try now, else how long until the first blocked one may.
    pub fn blocked(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let counters = self.counters.lock();
        keys.iter()
            .filter_map(|key| counters.get(*key))
            .map(|entry| self.level(*entry, now))
            .filter(|level| *level >= self.burst)
            .map(|level| Duration::from_secs_f64((level - self.burst + 1.0) / self.per_second))
            .max()
    }

    /// Keys held now.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.counters.lock().len()
    }

    /// Records one failed attempt against each key.
    pub fn failed(&self, keys: &[&str], now: Instant) {
        let mut counters = self.counters.lock();
        if counters.len() >= MAX_KEYS {
            counters.retain(|_, entry| self.level(*entry, now) > 0.0);
            if counters.len() >= MAX_KEYS {
                counters.clear();
            }
        }
        for key in keys {
            let level = counters
                .get(*key)
                .map(|entry| self.level(*entry, now))
                .unwrap_or(0.0);
            counters.insert((*key).to_owned(), (level + 1.0, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_burst_and_recovers_at_the_refill_rate() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            limiter.failed(&["ip:1", "acct:bob"], t0);
        }
        assert_eq!(limiter.blocked(&["ip:1", "acct:bob"], t0), None);
        limiter.failed(&["ip:1", "acct:bob"], t0);
        let wait = limiter.blocked(&["ip:1"], t0).expect("blocked");
        assert!(
            wait <= Duration::from_secs(10) && wait > Duration::from_secs(9),
            "{wait:?}"
        );
        // Another address is blocked through the account, another account through the address.
        assert!(limiter.blocked(&["ip:2", "acct:bob"], t0).is_some());
        assert!(limiter.blocked(&["ip:1", "acct:eve"], t0).is_some());
        assert_eq!(limiter.blocked(&["ip:2", "acct:eve"], t0), None);
        assert_eq!(
            limiter.blocked(&["ip:1"], t0 + Duration::from_secs(11)),
            None
        );
    }

    #[test]
    fn a_key_far_over_its_burst_drains_at_the_refill_rate() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.failed(&["ip:1"], t0);
        }
        // 5 failures, 0.5 drained after 5 s: 4.5, still 1.5 over the burst, so 25 s to wait.
        let wait = limiter
            .blocked(&["ip:1"], t0 + Duration::from_secs(5))
            .expect("still blocked");
        assert!(
            wait > Duration::from_secs(24) && wait <= Duration::from_secs(25),
            "{wait:?}"
        );
        assert_eq!(
            limiter.blocked(&["ip:1"], t0 + Duration::from_secs(26)),
            None
        );
    }

    /// One failure for each of `count` keys named `prefix` and a number, at `now`.
    fn fail_all(limiter: &FailureLimiter, prefix: &str, count: usize, now: Instant) {
        let names: Vec<String> = (0..count).map(|n| format!("{prefix}{n}")).collect();
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        limiter.failed(&keys, now);
    }

    #[test]
    fn a_full_table_drops_drained_keys_first_then_everything() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        fail_all(&limiter, "ip:a", MAX_KEYS - 1, t0);
        // Later, when those have drained, bob's first failure fills the table; his second finds
        // it full, and only the drained keys go: his third puts him at his burst.
        let later = t0 + Duration::from_secs(5);
        limiter.failed(&["acct:bob"], later);
        assert_eq!(limiter.keys(), MAX_KEYS);
        limiter.failed(&["acct:bob"], later);
        limiter.failed(&["acct:bob"], later);
        assert_eq!(limiter.keys(), 1);
        assert!(limiter.blocked(&["acct:bob"], later).is_some());
        // Full of keys that have not drained: the table starts over.
        fail_all(&limiter, "ip:b", MAX_KEYS, later);
        limiter.failed(&["ip:last"], later);
        assert_eq!(limiter.keys(), 1);
        assert_eq!(limiter.blocked(&["acct:bob"], later), None);
    }
}
