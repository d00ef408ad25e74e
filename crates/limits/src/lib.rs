//! Request limits of the gateway: how many requests a second, and how many uploads at once, a
//! client address or an account may make, with exempt lists (CI robots, a build farm's network)
//! and per-repository rules. Pure: the gateway asks [`Limiter::admit`] per request and answers a
//! [`Refusal`] with 429 `TOOMANYREQUESTS` and `Retry-After`.
//!
//! Rates are token buckets: a key may make `burst` requests at once, then `per_second` more each
//! second. Uploads are counted while their requests run (a `PATCH` or `PUT` streaming a body, a
//! monolithic `POST`): an [`Admitted`] holds the slots and gives them back when dropped. Every
//! table is bounded ([`MAX_KEYS`]); a client able to fill it with distinct keys gains a fresh
//! budget, no more. Limits are per gateway: with G gateways behind a balancer a client gets up to
//! G times the rate.

mod config;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use config::{ConfigError, LimitsConfig, Rate, RepositoryLimits};

/// Keys (buckets or upload counters) kept at most per table.
pub const MAX_KEYS: usize = 100_000;

/// Who a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum By {
    Client,
    Account,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            By::Client => "client",
            By::Account => "account",
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Requests per second.
    Rate,
    /// Uploads at once.
    Uploads,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Rate => "rate",
            Limit::Uploads => "uploads",
        }
    }
}

/// A request refused: by which limit and key, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    pub by: By,
    pub retry_after: Duration,
    /// For the error body, e.g. "more than 20 requests a second from this client address".
    pub message: String,
}

impl Refusal {
    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// What one request is, as far as limits go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub client: Option<IpAddr>,
    /// The authenticated account; `None` for anonymous requests.
    pub account: Option<&'a str>,
    /// The repository the request names, for per-repository rules.
    pub repository: Option<&'a str>,
    /// Whether it carries an upload's bytes.
    pub upload: bool,
}

/// A bucket's key: who, and under which rule (`None`: the global limits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    who: Who,
    rule: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Client(IpAddr),
    Account(String),
}

impl Who {
    fn by(&self) -> By {
        match self {
            Who::Client(_) => By::Client,
            Who::Account(_) => By::Account,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits of one gateway. Cheap to share (`Arc`); one lock per table, held for a hash lookup.
pub struct Limiter {
    config: config::Compiled,
    buckets: Mutex<HashMap<Key, Bucket>>,
    uploads: Arc<Mutex<HashMap<Key, u32>>>,
}

/// An admitted request; holds its upload slots until dropped.
#[must_use = "dropping it gives the upload slots back at once"]
pub struct Admitted {
    slots: Vec<Key>,
    uploads: Option<Arc<Mutex<HashMap<Key, u32>>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(uploads) = &self.uploads else { return };
        let mut counts = uploads.lock();
        for key in self.slots.drain(..) {
            if let Some(count) = counts.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&key);
                }
            }
        }
    }
}

impl Limiter {
    /// A limiter for a validated `config`.
    pub fn new(config: &LimitsConfig) -> Result<Limiter, ConfigError> {
        Ok(Limiter {
            config: config::Compiled::new(config)?,
            buckets: Mutex::new(HashMap::new()),
            uploads: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// True when no limit is set at all (the gateway then skips the call).
    pub fn is_off(&self) -> bool {
        self.config.is_off()
    }

    /// Admits `request` at `now` (taking a token from each of its buckets and, for an upload, a
    /// slot from each of its counters) or refuses it without taking anything.
    pub fn admit(&self, request: &Request<'_>, now: Instant) -> Result<Admitted, Refusal> {
        let account = request
            .account
            .filter(|name| !self.config.exempt_account(name));
        let client = request
            .client
            .filter(|address| !self.config.exempt_client(*address));
        if request.account.is_some() && account.is_none()
            || request.client.is_some() && client.is_none()
        {
            // An exempt account or network is exempt from every limit, its address's included:
            // robots behind a shared address must not be limited with the humans there.
            return Ok(Admitted {
                slots: Vec::new(),
                uploads: None,
            });
        }
        let rule = request
            .repository
            .and_then(|name| self.config.rule_for(name));
        let mut whos = Vec::with_capacity(2);
        if let Some(address) = client {
            whos.push(Who::Client(client_key(address)));
        }
        if let Some(name) = account {
            whos.push(Who::Account(name.to_owned()));
        }
        self.take_tokens(&whos, rule, now)?;
        if !request.upload {
            return Ok(Admitted {
                slots: Vec::new(),
                uploads: None,
            });
        }
        self.take_upload_slots(whos, rule)
    }

    fn take_tokens(&self, whos: &[Who], rule: Option<usize>, now: Instant) -> Result<(), Refusal> {
        let limited: Vec<(Key, Rate)> = whos
            .iter()
            .filter_map(|who| {
                let (rate, rule) = self.config.rate(who.by(), rule)?;
                Some((
                    Key {
                        who: who.clone(),
                        rule,
                    },
                    rate,
                ))
            })
            .collect();
        if limited.is_empty() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock();
        let level = |buckets: &HashMap<Key, Bucket>, key: &Key, rate: Rate| {
            let burst = f64::from(rate.burst.max(1));
            buckets.get(key).map_or(burst, |bucket| {
                let refilled = now.saturating_duration_since(bucket.at).as_secs_f64()
                    * f64::from(rate.per_second);
                (bucket.tokens + refilled).min(burst)
            })
        };
        // Every bucket is checked before any is taken from: a refused request costs nothing.
        for (key, rate) in &limited {
            let tokens = level(&buckets, key, *rate);
            if tokens < 1.0 {
                let wait = (1.0 - tokens) / f64::from(rate.per_second);
                return Err(Refusal {
                    limit: Limit::Rate,
                    by: key.who.by(),
                    retry_after: Duration::from_secs_f64(wait),
                    message: format!(
                        "more than {} requests a second (burst {}) from this {}",
                        rate.per_second,
                        rate.burst.max(1),
                        describe(key.who.by())
                    ),
                });
            }
        }
        if buckets.len() + limited.len() > MAX_KEYS {
            // Buckets that have refilled are the same as absent ones.
            buckets.retain(|key, bucket| {
                self.config
                    .rate(key.who.by(), key.rule)
                    .is_some_and(|(rate, _)| {
                        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64()
                            * f64::from(rate.per_second);
                        bucket.tokens + refilled < f64::from(rate.burst.max(1))
                    })
            });
            if buckets.len() + limited.len() > MAX_KEYS {
                buckets.clear();
            }
        }
        for (key, rate) in limited {
            let tokens = level(&buckets, &key, rate) - 1.0;
            buckets.insert(key, Bucket { tokens, at: now });
        }
        Ok(())
    }

    fn take_upload_slots(&self, whos: Vec<Who>, rule: Option<usize>) -> Result<Admitted, Refusal> {
        let capped: Vec<(Key, u32)> = whos
            .into_iter()
            .filter_map(|who| {
                let (cap, rule) = self.config.uploads(who.by(), rule)?;
                Some((Key { who, rule }, cap))
            })
            .collect();
        let mut counts = self.uploads.lock();
        for (key, cap) in &capped {
            if counts.get(key).copied().unwrap_or(0) >= *cap {
                return Err(Refusal {
                    limit: Limit::Uploads,
                    by: key.who.by(),
                    retry_after: Duration::from_secs(1),
                    message: format!(
                        "more than {cap} uploads at once from this {}",
                        describe(key.who.by())
                    ),
                });
            }
        }
        if counts.len() + capped.len() > MAX_KEYS {
            // Counters only exist while their uploads run, so the table is full of live
            // uploads: refuse rather than forget them.
            let by = capped.first().map_or(By::Client, |(key, _)| key.who.by());
            return Err(Refusal {
                limit: Limit::Uploads,
                by,
                retry_after: Duration::from_secs(1),
                message: "too many uploads in progress on this gateway".to_owned(),
            });
        }
        let mut slots = Vec::with_capacity(capped.len());
        for (key, _) in capped {
            *counts.entry(key.clone()).or_insert(0) += 1;
            slots.push(key);
        }
        Ok(Admitted {
            slots,
            uploads: Some(self.uploads.clone()),
        })
    }

    /// Upload counters in use (for tests and the gauge).
    pub fn uploads_in_progress(&self) -> usize {
        self.uploads
            .lock()
            .values()
            .map(|count| *count as usize)
            .sum()
    }
}

/// The key of a client address: an IPv4 address, or an IPv6 address's /64 (one host usually
/// holds a whole /64, and would otherwise get a bucket per address it picks).
fn client_key(address: IpAddr) -> IpAddr {
    match config::canonical(address) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

fn describe(by: By) -> &'static str {
    match by {
        By::Client => "client address",
        By::Account => "account",
    }
}

#[cfg(test)]
mod tests;
