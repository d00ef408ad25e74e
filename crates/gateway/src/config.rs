//! [`GatewayConfig`]: the gateway's settings, with serde defaults and [`GatewayConfig::validate`].

use std::path::PathBuf;
use std::time::Duration;

use oci_model::MAX_MANIFEST_BYTES;
use serde::{Deserialize, Serialize};

/// The smallest `max_header_bytes`: hyper's HTTP/1.1 read buffer cannot be smaller.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Settings of one gateway. The binary layers file < `WHARF_*` environment < flags over
/// [`GatewayConfig::default`] and calls [`GatewayConfig::validate`] before serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Largest manifest a PUT may carry, in bytes; larger ones get 413. At most 4 MiB, the limit
    /// `oci-model` parses (the distribution-spec asks registries to accept at least 4 MiB).
    pub max_manifest_bytes: usize,
    /// Page size of tag and catalog listings when the client sends no `n`.
    pub default_page_size: usize,
    /// Largest page served; a larger `n` is served as this many entries plus a `Link` to the rest.
    pub max_page_size: usize,
    /// How long this gateway answers GET/HEAD of a manifest by digest from its cache, in
    /// milliseconds; 0 turns the cache off. What a digest names never changes, but a DELETE
    /// through another gateway goes unnoticed here for up to this long (one through this gateway
    /// is seen at once). Reads by tag always go to meta; they fill the entry of the digest read.
    pub manifest_cache_ttl_ms: u64,
    /// Memory bound of the manifest cache: manifest bytes plus a small overhead per entry. The
    /// cache is sharded (about four shards per core) and a manifest larger than one shard's
    /// share is not kept, only served.
    pub manifest_cache_bytes: usize,
    /// How long this gateway answers blob GETs from its cache of what meta said of the blob in
    /// that repository (size and replicas), in milliseconds; 0 turns the cache off. HEADs always
    /// ask meta (pushing clients use them to skip uploads). A DELETE
    /// through another gateway goes unnoticed here for up to this long (one through this gateway
    /// is seen at once); a read no cached replica can serve asks meta again.
    pub blob_cache_ttl_ms: u64,
    /// Memory bound of the blob cache, in entries (each about 200 bytes plus the repository name).
    pub blob_cache_entries: usize,
    /// Answer a blob GET of at least [`blob_redirect_min_bytes`](Self::blob_redirect_min_bytes)
    /// with a `307` to a replica's own HTTP endpoint (a signed URL valid for
    /// [`blob_redirect_ttl_secs`](Self::blob_redirect_ttl_secs)), so the bytes skip the gateway;
    /// replicas without an endpoint, and clients that cannot reach the nodes, need it off (the
    /// gateway then proxies, as for a smaller blob). HEADs are never redirected.
    pub blob_redirect: bool,
    pub blob_redirect_min_bytes: u64,
    pub blob_redirect_ttl_secs: u64,
    /// Appends one JSON line per audited event (push, pull, delete, login, denial, admin change)
    /// to this file. Events are also logged under the `wharf::audit` target either way.
    pub audit_log: Option<PathBuf>,
    /// Access control: off by default (every client may do everything, as on a fresh
    /// Distribution); see [`AuthConfig`].
    pub auth: AuthConfig,
    /// Connections served at once; a connection past it is answered 503 `TOOMANYREQUESTS` and
    /// closed. Keep it under the process's file descriptor limit.
    pub max_connections: usize,
    /// A client must send a request's whole header within this many milliseconds of starting it
    /// (and an idle keep-alive connection is closed after it); a slow client holds no more.
    pub header_read_timeout_ms: u64,
    /// Largest request header, in bytes (HTTP/1.1's read buffer, HTTP/2's header list); a
    /// larger one gets 431 (HTTP/1.1) or a stream reset (HTTP/2).
    pub max_header_bytes: usize,
    /// An upload or manifest body that sends nothing for this many milliseconds is abandoned:
    /// the request fails and nothing of it is stored.
    pub body_idle_timeout_ms: u64,
    /// Request rates and uploads at once per client address and per account; off by default.
    pub limits: limits::LimitsConfig,
}

/// Authentication and authorization at the gateway. With `enabled`, every request is checked
/// against the accounts and policies kept in meta (default deny), tokens are issued at
/// `/auth/token` and the admin API is served under `/admin/v1/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub enabled: bool,
    /// The token endpoint's URL given in `WWW-Authenticate` challenges. Unset: built from the
    /// request's `Host` as `<scheme>://<host>/auth/token`.
    pub realm: Option<String>,
    /// `service` in challenges, and the audience of tokens.
    pub service: String,
    /// Issuer of tokens. Every gateway of a cluster must use the same one.
    pub issuer: String,
    /// Lifetime of access tokens, in seconds.
    pub token_ttl_secs: u64,
    /// Lifetime of refresh tokens (docker's and podman's stored logins), in seconds.
    pub refresh_token_ttl_secs: u64,
    /// How often the gateway asks meta whether accounts, policies or keys changed, in
    /// milliseconds. A failed login also triggers a check (at most one per second).
    pub refresh_interval_ms: u64,
    /// Failed logins allowed in a row per client address and per account before further
    /// attempts get 429.
    pub login_burst: u32,
    /// After the burst, one more attempt per this many seconds.
    pub login_refill_secs: u64,
    /// The scheme used in a realm built from `Host`; the binary sets it when it serves HTTPS.
    #[serde(skip)]
    pub https: bool,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: false,
            realm: None,
            service: "wharf".to_owned(),
            issuer: "wharf".to_owned(),
            token_ttl_secs: 300,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_interval_ms: 1_000,
            login_burst: 10,
            login_refill_secs: 6,
            https: false,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            max_manifest_bytes: MAX_MANIFEST_BYTES,
            default_page_size: 10_000,
            max_page_size: 10_000,
            manifest_cache_ttl_ms: 2_000,
            manifest_cache_bytes: 32 * 1024 * 1024,
            blob_cache_ttl_ms: 2_000,
            blob_cache_entries: 8_192,
            blob_redirect: true,
            blob_redirect_min_bytes: 1024 * 1024,
            blob_redirect_ttl_secs: 300,
            audit_log: None,
            auth: AuthConfig::default(),
            max_connections: 4_096,
            header_read_timeout_ms: 30_000,
            max_header_bytes: 64 * 1024,
            body_idle_timeout_ms: 60_000,
            limits: limits::LimitsConfig::default(),
        }
    }
}

/// Why a [`GatewayConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("gateway setting {field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_manifest_bytes == 0 || self.max_manifest_bytes > MAX_MANIFEST_BYTES {
            return Err(ConfigError::Invalid {
                field: "max_manifest_bytes",
                reason: format!(
                    "must be between 1 and {MAX_MANIFEST_BYTES}, not {}",
                    self.max_manifest_bytes
                ),
            });
        }
        if self.max_page_size == 0 {
            return Err(ConfigError::Invalid {
                field: "max_page_size",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.default_page_size == 0 || self.default_page_size > self.max_page_size {
            return Err(ConfigError::Invalid {
                field: "default_page_size",
                reason: format!(
                    "must be between 1 and max_page_size ({}), not {}",
                    self.max_page_size, self.default_page_size
                ),
            });
        }
        if self.manifest_cache_ttl_ms > 0 && self.manifest_cache_bytes == 0 {
            return Err(ConfigError::Invalid {
                field: "manifest_cache_bytes",
                reason: "must be at least 1 (set manifest_cache_ttl_ms to 0 to turn the cache off)"
                    .to_owned(),
            });
        }
        if self.blob_redirect && self.blob_redirect_ttl_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "blob_redirect_ttl_secs",
                reason: "must be at least 1 when blob_redirect is on".to_owned(),
            });
        }
        if self.blob_cache_ttl_ms > 0 && self.blob_cache_entries == 0 {
            return Err(ConfigError::Invalid {
                field: "blob_cache_entries",
                reason: "must be at least 1 (set blob_cache_ttl_ms to 0 to turn the cache off)"
                    .to_owned(),
            });
        }
        let auth = &self.auth;
        let invalid = |field: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.header_read_timeout_ms == 0 || self.body_idle_timeout_ms == 0 {
            return invalid(
                "header_read_timeout_ms",
                "header_read_timeout_ms and body_idle_timeout_ms must be at least 1",
            );
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return invalid(
                "max_header_bytes",
                &format!("must be at least {MIN_HEADER_BYTES} (HTTP/1.1's smallest read buffer)"),
            );
        }
        if let Err(error) = self.limits.validate() {
            return invalid("limits", &error.to_string());
        }
        if auth.service.is_empty() || auth.issuer.is_empty() {
            return invalid("auth.service", "service and issuer must not be empty");
        }
        if auth.token_ttl_secs == 0 || auth.token_ttl_secs > 24 * 3600 {
            return invalid("auth.token_ttl_secs", "must be between 1 and 86400");
        }
        if auth.refresh_token_ttl_secs < auth.token_ttl_secs {
            return invalid(
                "auth.refresh_token_ttl_secs",
                "must be at least token_ttl_secs",
            );
        }
        if auth.refresh_interval_ms == 0 || auth.login_burst == 0 || auth.login_refill_secs == 0 {
            return invalid(
                "auth",
                "refresh_interval_ms, login_burst and login_refill_secs must be at least 1",
            );
        }
        if let Some(realm) = &auth.realm {
            if !(realm.starts_with("http://") || realm.starts_with("https://")) {
                return invalid("auth.realm", "must be an http:// or https:// URL");
            }
        }
        Ok(())
    }

    /// How long a request body may send nothing before it is abandoned.
    pub fn body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.body_idle_timeout_ms)
    }

    /// How long a client has to send a request's header.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// How long the manifest cache answers for an entry; zero when it is off.
    pub(crate) fn manifest_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.manifest_cache_ttl_ms)
    }

    /// How long the blob cache answers for an entry; zero when it is off.
    pub(crate) fn blob_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.blob_cache_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = GatewayConfig::default();
        assert_eq!(config.max_manifest_bytes, 4 * 1024 * 1024);
        assert_eq!(config.manifest_cache_ttl_ms, 2_000);
        assert_eq!(config.manifest_cache_bytes, 32 * 1024 * 1024);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn serde_fills_defaults_and_refuses_unknown_fields() {
        let config: GatewayConfig = serde_json::from_str(r#"{"default_page_size": 50}"#).unwrap();
        assert_eq!(config.default_page_size, 50);
        assert_eq!(config.max_page_size, 10_000);
        assert!(serde_json::from_str::<GatewayConfig>(r#"{"max_page_sise": 5}"#).is_err());
        let config: GatewayConfig =
            serde_json::from_str(r#"{"manifest_cache_ttl_ms": 0, "manifest_cache_bytes": 1024}"#)
                .unwrap();
        assert_eq!(config.manifest_cache_ttl(), Duration::ZERO);
        assert_eq!(config.manifest_cache_bytes, 1024);
    }

    #[test]
    fn a_cache_without_bytes_is_refused_unless_it_is_off() {
        let no_bytes = GatewayConfig {
            manifest_cache_bytes: 0,
            ..GatewayConfig::default()
        };
        assert!(no_bytes.validate().is_err());
        let off = GatewayConfig {
            manifest_cache_ttl_ms: 0,
            ..no_bytes
        };
        assert_eq!(off.validate(), Ok(()));
    }

    #[test]
    fn validate_refuses_inconsistent_values() {
        let cases = [
            GatewayConfig {
                max_manifest_bytes: 0,
                ..GatewayConfig::default()
            },
            GatewayConfig {
                max_manifest_bytes: MAX_MANIFEST_BYTES + 1,
                ..GatewayConfig::default()
            },
            GatewayConfig {
                max_page_size: 0,
                ..GatewayConfig::default()
            },
            GatewayConfig {
                default_page_size: 0,
                ..GatewayConfig::default()
            },
            GatewayConfig {
                default_page_size: 20,
                max_page_size: 10,
                ..GatewayConfig::default()
            },
        ];
        for config in cases {
            assert!(config.validate().is_err(), "{config:?} must be refused");
        }
    }
}
