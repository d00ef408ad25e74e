//! The binary's configuration: one TOML file (`--config`), overridden by `WHARF_*` environment
//! variables, overridden by flags. Each role's own settings live in its crate's config struct
//! (STYLE rule 10); this file only gathers them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything a `wharf` process can be configured with. Unused sections are ignored by roles
/// that do not need them, so one file can serve a whole host.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WharfConfig {
    /// HTTP address of the OCI API (gateway and serve).
    pub listen: String,
    /// Data directory. `serve` keeps `meta/` and `blob/` under it.
    pub data: PathBuf,
    /// gRPC address of meta and blob roles. For `serve`, the internal address its roles use to
    /// talk to each other (port 0 picks a free one).
    pub grpc_listen: String,
    /// gRPC address other members use to reach this one; defaults to the bound `grpc_listen`.
    pub advertise: Option<String>,
    /// Meta nodes to reach (gateway and blob roles).
    pub meta: Vec<String>,
    /// Address of a separate Prometheus `/metrics` listener (the gateway also serves `/metrics`).
    pub metrics_listen: Option<String>,
    /// `tracing` filter, e.g. `info` or `wharf=debug,info`.
    pub log: String,
    /// This node's id in its role's membership (meta voter id or blob node id).
    pub node_id: u64,
    /// Blob node zone, for placement.
    pub zone: String,
    /// Meta: initialise a new single-voter cluster when the data dir is empty. Defaults to true
    /// when `join` is empty, false otherwise.
    pub bootstrap: Option<bool>,
    /// Meta: addresses of existing meta nodes to join through when the data dir is empty.
    pub join: Vec<String>,
    /// Meta: a blob node silent this long is marked down and its blobs re-replicated.
    pub blob_down_after_ms: Option<u64>,
    /// OTLP/gRPC collector to export trace spans to, e.g. `http://127.0.0.1:4317`. Unset: no
    /// exporter runs (trace context is still passed on between nodes).
    pub otlp_endpoint: Option<String>,
    pub gateway: gateway::GatewayConfig,
    /// `[tls]`: HTTPS on `listen` (gateway and serve), with the certificate reloaded on change.
    pub tls: wharf_tls::HttpsConfig,
    /// `[cluster_tls]`: mTLS on every gRPC server and client of this process.
    pub cluster_tls: wharf_tls::ClusterTlsConfig,
    /// `[gc]`: garbage collection (meta's sweep and each blob node's collector).
    pub gc: GcConfig,
}

/// `[gc]`: how garbage is found (by the meta leader) and deleted (by each blob node).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// How often the meta leader sweeps and each blob node deletes what was collected.
    pub interval_ms: u64,
    /// How long an uploaded blob stays in its repository with no manifest using it: the
    /// window between pushing layers and pushing their manifest.
    pub upload_grace_ms: u64,
    /// Upload sessions older than this (from their start) are closed; Distribution's default
    /// purge age is 7 days, Wharf's 1.
    pub upload_expiry_ms: u64,
    /// A staging file with no open session, untouched this long, is removed by its blob node.
    pub stale_upload_after_ms: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval_ms: 5_000,
            upload_grace_ms: 3_600_000,
            upload_expiry_ms: 86_400_000,
            stale_upload_after_ms: 600_000,
        }
    }
}

impl Default for WharfConfig {
    fn default() -> Self {
        WharfConfig {
            listen: "127.0.0.1:5000".into(),
            data: PathBuf::from("./wharf-data"),
            grpc_listen: "127.0.0.1:0".into(),
            advertise: None,
            meta: Vec::new(),
            metrics_listen: None,
            log: "info,openraft=warn".into(),
            node_id: 1,
            zone: "default".into(),
            bootstrap: None,
            join: Vec::new(),
            blob_down_after_ms: None,
            otlp_endpoint: None,
            gateway: gateway::GatewayConfig::default(),
            tls: wharf_tls::HttpsConfig::default(),
            cluster_tls: wharf_tls::ClusterTlsConfig::default(),
            gc: GcConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl WharfConfig {
    /// The file at `path`, or the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<WharfConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(WharfConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.gateway
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.node_id == 0 {
            return Err(ConfigError::Invalid("node_id must be at least 1".into()));
        }
        self.tls
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.cluster_tls
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.gc.interval_ms == 0 || self.gc.upload_expiry_ms == 0 {
            return Err(ConfigError::Invalid(
                "gc.interval_ms and gc.upload_expiry_ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_with_sections_parses() {
        let config: WharfConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:5000"
            data = "/var/lib/wharf"
            meta = ["meta-1:7000"]
            [gateway]
            default_page_size = 100
            "#,
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:5000");
        assert_eq!(config.gateway.default_page_size, 100);
        config.validate().unwrap();
    }

    #[test]
    fn tls_sections_parse_and_half_a_pair_is_refused() {
        let config: WharfConfig = toml::from_str(
            r#"
            [tls]
            cert = "/etc/wharf/tls.pem"
            key = "/etc/wharf/tls.key"
            reload_interval_ms = 5000
            [cluster_tls]
            ca = "/etc/wharf/ca.pem"
            cert = "/etc/wharf/node.pem"
            key = "/etc/wharf/node.key"
            "#,
        )
        .unwrap();
        assert_eq!(config.tls.reload_interval_ms, 5000);
        assert!(config.cluster_tls.is_set());
        config.validate().unwrap();

        let config: WharfConfig = toml::from_str("[tls]\ncert = \"a.pem\"").unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("tls.key"), "{error}");
        let config: WharfConfig = toml::from_str("[cluster_tls]\nkey = \"a.key\"").unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("cluster_tls.ca"), "{error}");
    }

    #[test]
    fn the_tls_example_config_parses() {
        let config: WharfConfig = toml::from_str(include_str!("../deploy/config/tls.toml"))
            .expect("deploy/config/tls.toml");
        config.validate().unwrap();
        assert!(config.tls.cert.is_some() && config.cluster_tls.is_set());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<WharfConfig>("lisen = \"x\"").is_err());
    }
}
