//! The leader's fetch leases for the pull-through cache: who is fetching what from an upstream,
//! so that many gateways missing the same content at once cause one upstream fetch. In memory,
//! like blob-node liveness: a lease is only worth its TTL, and a new leader (a new term) starts
//! with none, which at worst lets a second fetch of the same content run; it never changes what
//! is stored, since a fetched blob is verified against its digest before it is committed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster_api::FetchLease;

/// Leases held at once, at most: a fetch per key in flight, so this is far above any real load;
/// past it, expired leases go first and then the request is refused as not granted.
const MAX_LEASES: usize = 65_536;
/// The longest lease a holder may ask for; it renews before the end.
pub(crate) const MAX_LEASE_TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
pub(crate) struct FetchLeases {
    inner: Mutex<Leases>,
}

#[derive(Debug, Default)]
struct Leases {
    term: u64,
    held: HashMap<String, Held>,
}

#[derive(Debug)]
struct Held {
    holder: String,
    until: Instant,
}

impl FetchLeases {
    /// Grants `key` to `holder` for `ttl` from `now` when no other holder has an unexpired lease
    /// in `term` (renewing `holder`'s own); otherwise names the current holder.
    pub(crate) fn acquire(
        &self,
        term: u64,
        key: &str,
        holder: &str,
        ttl: Duration,
        now: Instant,
    ) -> FetchLease {
        let ttl = ttl.min(MAX_LEASE_TTL);
        let mut leases = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if leases.term != term {
            leases.term = term;
            leases.held.clear();
        }
        if let Some(held) = leases.held.get(key) {
            if held.holder != holder && held.until > now {
                return FetchLease {
                    granted: false,
                    holder: held.holder.clone(),
                    expires_in_ms: millis(held.until - now),
                };
            }
        }
        if leases.held.len() >= MAX_LEASES && !leases.held.contains_key(key) {
            leases.held.retain(|_, held| held.until > now);
            if leases.held.len() >= MAX_LEASES {
                return FetchLease {
                    granted: false,
                    holder: String::new(),
                    expires_in_ms: millis(ttl),
                };
            }
        }
        leases.held.insert(
            key.to_owned(),
            Held {
                holder: holder.to_owned(),
                until: now + ttl,
            },
        );
        FetchLease {
            granted: true,
            holder: holder.to_owned(),
            expires_in_ms: millis(ttl),
        }
    }

    /// Ends `holder`'s lease on `key`; another holder's stays.
    pub(crate) fn release(&self, key: &str, holder: &str) {
        let mut leases = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if leases
            .held
            .get(key)
            .is_some_and(|held| held.holder == holder)
        {
            leases.held.remove(key);
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn one_holder_at_a_time_until_release_or_expiry() {
        let leases = FetchLeases::default();
        let start = Instant::now();
        assert!(leases.acquire(1, "k", "a", TTL, start).granted);
        let refused = leases.acquire(1, "k", "b", TTL, start + Duration::from_secs(3));
        assert_eq!(
            (
                refused.granted,
                refused.holder.as_str(),
                refused.expires_in_ms
            ),
            (false, "a", 7_000)
        );
        // The holder renews; another key is free.
        assert!(
            leases
                .acquire(1, "k", "a", TTL, start + Duration::from_secs(5))
                .granted
        );
        assert!(
            !leases
                .acquire(1, "k", "b", TTL, start + Duration::from_secs(14))
                .granted
        );
        assert!(leases.acquire(1, "other", "b", TTL, start).granted);
        // Expiry frees it.
        assert!(
            leases
                .acquire(1, "k", "b", TTL, start + Duration::from_secs(16))
                .granted
        );
        // Only the holder releases.
        leases.release("k", "a");
        assert!(
            !leases
                .acquire(1, "k", "c", TTL, start + Duration::from_secs(17))
                .granted
        );
        leases.release("k", "b");
        assert!(
            leases
                .acquire(1, "k", "c", TTL, start + Duration::from_secs(17))
                .granted
        );
    }

    #[test]
    fn a_new_term_starts_with_no_lease_and_ttls_are_capped() {
        let leases = FetchLeases::default();
        let now = Instant::now();
        assert!(leases.acquire(1, "k", "a", TTL, now).granted);
        assert!(leases.acquire(2, "k", "b", TTL, now).granted);
        let long = leases.acquire(2, "j", "a", Duration::from_secs(3600), now);
        assert_eq!(long.expires_in_ms, millis(MAX_LEASE_TTL));
    }

    #[test]
    fn a_full_table_drops_expired_leases_first() {
        let leases = FetchLeases::default();
        let now = Instant::now();
        for n in 0..MAX_LEASES {
            assert!(
                leases
                    .acquire(1, &n.to_string(), "a", Duration::from_secs(1), now)
                    .granted
            );
        }
        assert!(!leases.acquire(1, "one more", "a", TTL, now).granted);
        // An existing key still renews when the table is full.
        assert!(leases.acquire(1, "0", "a", TTL, now).granted);
        let later = now + Duration::from_secs(2);
        assert!(leases.acquire(1, "one more", "a", TTL, later).granted);
    }
}
