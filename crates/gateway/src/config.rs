//! [`GatewayConfig`]: the gateway's settings, with serde defaults and [`GatewayConfig::validate`].

use std::time::Duration;

use oci_model::MAX_MANIFEST_BYTES;
use serde::{Deserialize, Serialize};

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
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            max_manifest_bytes: MAX_MANIFEST_BYTES,
            default_page_size: 10_000,
            max_page_size: 10_000,
            manifest_cache_ttl_ms: 2_000,
            manifest_cache_bytes: 32 * 1024 * 1024,
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
        Ok(())
    }

    /// How long the manifest cache answers for an entry; zero when it is off.
    pub(crate) fn manifest_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.manifest_cache_ttl_ms)
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
