//! [`BlobNodeConfig`]: the settings of one blob node (STYLE.md rule 10).

use std::path::PathBuf;

use cluster_api::{BlobNodeId, BlobNodeInfo};
use serde::{Deserialize, Serialize};

use crate::error::BlobNodeError;

/// One blob node's settings. `data_dir` and `advertise_addr` have no default: a made-up data
/// directory or an address nobody can reach would fail far from where it was configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobNodeConfig {
    /// This node's id in the cluster map; 0 is refused because it is what an unset protobuf
    /// field decodes to.
    #[serde(default = "default_node_id")]
    pub node_id: BlobNodeId,
    /// Where the blob store keeps its files.
    pub data_dir: PathBuf,
    /// The `host:port` other nodes and gateways dial to reach this node's gRPC service.
    pub advertise_addr: String,
    /// Failure domain; replicas of a blob are spread across zones where possible.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Relative share of the ring this node owns.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// How often the node tells meta it is alive (and learns the cluster map's epoch).
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// How often the repair/rebalance loop runs a pass when the map does not change.
    #[serde(default = "default_repair_interval_ms")]
    pub repair_interval_ms: u64,
    /// Local blobs one repair pass examines at most, so a pass is bounded work; the next pass
    /// continues where this one stopped.
    #[serde(default = "default_repair_batch")]
    pub repair_batch: usize,
    /// How often the garbage collector runs a pass: deleting the copies meta has collected and
    /// the staging files of uploads meta no longer knows.
    #[serde(default = "default_gc_interval_ms")]
    pub gc_interval_ms: u64,
    /// How long a staging file must have gone unchanged before the collector asks meta whether
    /// its upload is still open. Only a file without an open session is ever removed, so this
    /// bounds how often meta is asked about live uploads, not correctness.
    #[serde(default = "default_stale_upload_after_ms")]
    pub stale_upload_after_ms: u64,
    /// The base URL (`http://host:port`) of this node's endpoint for redirected blob GETs
    /// (`blob-http`), published in the cluster map; `None` when it serves none.
    #[serde(default)]
    pub http_url: Option<String>,
    /// Below this many free bytes on its disk the node reports itself full (in its heartbeat,
    /// `wharf_blob_full`): meta stages no upload on it until space is freed; it still serves
    /// reads and takes the replicas it owns while they fit.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// Open upload sessions of one repository this node stages at most (0: no cap); a session
    /// past it is refused with 429 `TOOMANYREQUESTS` until one is committed, cancelled or
    /// collected as stale.
    #[serde(default = "default_max_open_uploads_per_repo")]
    pub max_open_uploads_per_repo: usize,
}

fn default_max_open_uploads_per_repo() -> usize {
    1024
}

fn default_min_free_bytes() -> u64 {
    64 << 20
}

fn default_node_id() -> BlobNodeId {
    1
}

fn default_zone() -> String {
    "default".to_owned()
}

fn default_weight() -> u32 {
    100
}

fn default_heartbeat_interval_ms() -> u64 {
    1000
}

fn default_repair_interval_ms() -> u64 {
    5000
}

fn default_repair_batch() -> usize {
    1000
}

fn default_gc_interval_ms() -> u64 {
    2000
}

fn default_stale_upload_after_ms() -> u64 {
    600_000
}

impl BlobNodeConfig {
    /// A config with the given directory and address and every other field at its default.
    pub fn new(data_dir: impl Into<PathBuf>, advertise_addr: impl Into<String>) -> BlobNodeConfig {
        BlobNodeConfig {
            node_id: default_node_id(),
            data_dir: data_dir.into(),
            advertise_addr: advertise_addr.into(),
            zone: default_zone(),
            weight: default_weight(),
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            repair_interval_ms: default_repair_interval_ms(),
            repair_batch: default_repair_batch(),
            gc_interval_ms: default_gc_interval_ms(),
            stale_upload_after_ms: default_stale_upload_after_ms(),
            http_url: None,
            min_free_bytes: default_min_free_bytes(),
            max_open_uploads_per_repo: default_max_open_uploads_per_repo(),
        }
    }

    /// Checks what serde cannot: every field must make sense before the node starts.
    pub fn validate(&self) -> Result<(), BlobNodeError> {
        let invalid = |field, reason: &str| {
            Err(BlobNodeError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.node_id == 0 {
            return invalid("node_id", "must be at least 1");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if let Some(url) = &self.http_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.ends_with('/') || url.contains(char::is_whitespace) {
                return invalid(
                    "http_url",
                    "must be http(s)://host:port, without a trailing /",
                );
            }
        }
        if let Err(reason) = check_advertise_addr(&self.advertise_addr) {
            return invalid("advertise_addr", &reason);
        }
        if self.zone.is_empty() || !self.zone.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid("zone", "must be non-empty printable ASCII without spaces");
        }
        if self.weight == 0 {
            return invalid(
                "weight",
                "must be at least 1 (a node with weight 0 would own nothing)",
            );
        }
        if self.heartbeat_interval_ms == 0 {
            return invalid("heartbeat_interval_ms", "must be at least 1");
        }
        if self.repair_interval_ms == 0 {
            return invalid("repair_interval_ms", "must be at least 1");
        }
        if self.repair_batch == 0 {
            return invalid("repair_batch", "must be at least 1");
        }
        if self.gc_interval_ms == 0 {
            return invalid("gc_interval_ms", "must be at least 1");
        }
        if self.stale_upload_after_ms == 0 {
            return invalid("stale_upload_after_ms", "must be at least 1");
        }
        Ok(())
    }

    /// How this node appears in the cluster map.
    pub fn node_info(&self) -> BlobNodeInfo {
        BlobNodeInfo {
            id: self.node_id,
            addr: self.advertise_addr.clone(),
            zone: self.zone.clone(),
            weight: self.weight,
            http_url: self.http_url.clone(),
        }
    }
}

/// `host:port` with a host others can dial: a wildcard address is for binding, not advertising.
fn check_advertise_addr(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not host:port"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{addr:?} needs a port from 1 to 65535")),
        Ok(_) => {}
    }
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    if bare_host.is_empty() || bare_host.chars().any(char::is_whitespace) {
        return Err(format!("{addr:?} has no valid host"));
    }
    if matches!(bare_host, "0.0.0.0" | "::") {
        return Err(format!(
            "{addr:?} is a wildcard address; advertise one that other nodes can reach"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BlobNodeConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let config = parse(r#"{"data_dir": "/var/lib/wharf", "advertise_addr": "blob-1:7000"}"#)
            .expect("minimal config");
        assert_eq!(config, BlobNodeConfig::new("/var/lib/wharf", "blob-1:7000"));
        assert_eq!(config.node_id, 1);
        assert_eq!(config.zone, "default");
        assert_eq!(config.weight, 100);
        assert_eq!(config.heartbeat_interval_ms, 1000);
        assert_eq!(config.repair_interval_ms, 5000);
        assert_eq!(config.gc_interval_ms, 2000);
        assert_eq!(config.stale_upload_after_ms, 600_000);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn gc_settings_parse() {
        let config = parse(
            r#"{"data_dir": "d", "advertise_addr": "h:1",
                "gc_interval_ms": 250, "stale_upload_after_ms": 90000}"#,
        )
        .expect("a config with gc settings");
        assert_eq!(
            (config.gc_interval_ms, config.stale_upload_after_ms),
            (250, 90_000)
        );
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_and_missing_fields_are_rejected() {
        assert!(parse(r#"{"data_dir": "d", "advertise_addr": "h:1", "wieght": 5}"#).is_err());
        assert!(parse(r#"{"advertise_addr": "h:1"}"#).is_err());
        assert!(parse(r#"{"data_dir": "d"}"#).is_err());
    }

    #[test]
    fn node_info_mirrors_the_config() {
        let mut config = BlobNodeConfig::new("d", "10.0.0.7:7000");
        config.node_id = 7;
        config.zone = "eu-west-1a".into();
        config.weight = 250;
        let info = config.node_info();
        assert_eq!(
            (info.id, info.addr.as_str(), info.zone.as_str(), info.weight),
            (7, "10.0.0.7:7000", "eu-west-1a", 250)
        );
    }

    #[test]
    fn validate_accepts_usual_addresses() {
        for addr in [
            "127.0.0.1:7000",
            "blob-3.wharf.svc:50051",
            "[::1]:7000",
            "[fd00::7]:1",
        ] {
            assert!(BlobNodeConfig::new("d", addr).validate().is_ok(), "{addr}");
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let base = BlobNodeConfig::new("d", "h:7000");
        let cases: Vec<(&str, BlobNodeConfig)> = vec![
            (
                "node_id",
                BlobNodeConfig {
                    node_id: 0,
                    ..base.clone()
                },
            ),
            (
                "data_dir",
                BlobNodeConfig {
                    data_dir: PathBuf::new(),
                    ..base.clone()
                },
            ),
            ("advertise_addr", BlobNodeConfig::new("d", "no-port")),
            ("advertise_addr", BlobNodeConfig::new("d", "h:0")),
            ("advertise_addr", BlobNodeConfig::new("d", "h:70000")),
            ("advertise_addr", BlobNodeConfig::new("d", ":7000")),
            ("advertise_addr", BlobNodeConfig::new("d", "0.0.0.0:7000")),
            ("advertise_addr", BlobNodeConfig::new("d", "[::]:7000")),
            (
                "zone",
                BlobNodeConfig {
                    zone: String::new(),
                    ..base.clone()
                },
            ),
            (
                "zone",
                BlobNodeConfig {
                    zone: "eu west".into(),
                    ..base.clone()
                },
            ),
            (
                "weight",
                BlobNodeConfig {
                    weight: 0,
                    ..base.clone()
                },
            ),
            (
                "heartbeat_interval_ms",
                BlobNodeConfig {
                    heartbeat_interval_ms: 0,
                    ..base.clone()
                },
            ),
            (
                "repair_interval_ms",
                BlobNodeConfig {
                    repair_interval_ms: 0,
                    ..base.clone()
                },
            ),
            (
                "repair_batch",
                BlobNodeConfig {
                    repair_batch: 0,
                    ..base.clone()
                },
            ),
            (
                "gc_interval_ms",
                BlobNodeConfig {
                    gc_interval_ms: 0,
                    ..base.clone()
                },
            ),
            (
                "stale_upload_after_ms",
                BlobNodeConfig {
                    stale_upload_after_ms: 0,
                    ..base.clone()
                },
            ),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(BlobNodeError::InvalidConfig { field: named, .. }) => {
                    assert_eq!(named, field, "{config:?}")
                }
                other => panic!("{config:?} should fail on {field}, got {other:?}"),
            }
        }
    }
}
