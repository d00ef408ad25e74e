//! The binary's configuration: one TOML file (`--config`), overridden by `WHARF_*` environment
//! variables, overridden by flags. Each role's own settings live in its crate's config struct
//! (STYLE rule 10); this file only gathers them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use s3_blob_store::S3Config;

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
    /// `meta = [...]` or `[meta]`: the meta nodes to reach (gateway and blob roles) and the meta
    /// role's own settings.
    pub meta: MetaSection,
    /// Address of a separate Prometheus `/metrics` listener (the gateway also serves `/metrics`).
    pub metrics_listen: Option<String>,
    /// `tracing` filter, e.g. `info` or `wharf=debug,info`.
    pub log: String,
    /// This node's id in its role's membership (meta voter id or blob node id).
    pub node_id: u64,
    /// Blob node zone, for placement.
    pub zone: String,
    /// Blob role (and serve): serve redirected blob GETs (`blob-http`) on this address; unset,
    /// the node serves none and gateways proxy its bytes.
    pub blob_http_listen: Option<String>,
    /// The base URL clients reach that endpoint at (what gateways redirect to); defaults to
    /// `http://<the bound blob_http_listen>`.
    pub blob_http_advertise: Option<String>,
    /// `[blob_s3]`: the blob role (and serve) keeps its blobs in this S3-compatible bucket
    /// instead of under `data`.
    pub blob_s3: Option<S3Config>,
    /// Blob role (and serve): below this many free bytes on its disk the node reports itself
    /// full and meta stages no upload on it (bytes, or a string such as `"1GiB"`; 64 MiB).
    #[serde(deserialize_with = "size")]
    pub blob_min_free_bytes: u64,
    /// Blob role (and serve): open upload sessions of one repository a node stages at most; a
    /// session past it gets 429 `TOOMANYREQUESTS` (0: no cap; 1024).
    pub blob_max_open_uploads_per_repo: usize,
    /// Meta: initialise a new single-voter cluster when the data dir is empty. Defaults to true
    /// when `join` is empty, false otherwise.
    pub bootstrap: Option<bool>,
    /// Meta: addresses of existing meta nodes to join through when the data dir is empty.
    pub join: Vec<String>,
    /// Meta: join as a read replica (a Raft learner that never votes and serves reads).
    pub read_replica: bool,
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
    /// `[replication]`: how often the meta leader reconciles every replication rule.
    pub replication: ReplicationConfig,
    /// `[[proxy]]`: pull-through cache upstreams declared in the file (or `--proxy`,
    /// `WHARF_PROXY`), written to the Raft state when a gateway (or serve) starts; the admin
    /// CLI and API manage the others.
    #[serde(rename = "proxy")]
    pub proxies: Vec<ProxyConfig>,
}

/// One `[[proxy]]` upstream. The password is never in the file: `password_env` names the
/// environment variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub id: String,
    pub url: String,
    pub prefix: String,
    pub tag_ttl_secs: Option<u64>,
    pub cache_ttl_secs: Option<u64>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    #[serde(default)]
    pub mirror: bool,
    /// PEM file of the CA(s) the upstream's TLS certificate may chain to, besides the
    /// system's; read at start and kept with the upstream.
    pub ca_file: Option<std::path::PathBuf>,
}

impl ProxyConfig {
    /// `ID=URL@PREFIX`, as `--proxy` and `WHARF_PROXY` take it.
    pub fn parse_flag(text: &str) -> Result<ProxyConfig, String> {
        let (id, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not ID=URL@PREFIX"))?;
        let (url, prefix) = rest
            .rsplit_once('@')
            .ok_or_else(|| format!("{text:?} is not ID=URL@PREFIX"))?;
        Ok(ProxyConfig {
            id: id.to_owned(),
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            tag_ttl_secs: None,
            cache_ttl_secs: None,
            username: None,
            password_env: None,
            mirror: false,
            ca_file: None,
        })
    }

    /// The upstream as the Raft state keeps it, its password read from `password_env`.
    pub fn upstream(&self) -> Result<cluster_api::ProxyUpstream, String> {
        let (password, ca_pem) = secrets(
            &format!("proxy {}", self.id),
            self.password_env.as_deref(),
            self.ca_file.as_deref(),
        )?;
        let upstream = cluster_api::ProxyUpstream {
            id: self.id.clone(),
            url: self.url.clone(),
            prefix: self.prefix.clone(),
            tag_ttl_secs: self
                .tag_ttl_secs
                .unwrap_or(cluster_api::DEFAULT_TAG_TTL_SECS),
            cache_ttl_secs: self
                .cache_ttl_secs
                .unwrap_or(cluster_api::DEFAULT_CACHE_TTL_SECS),
            username: self.username.clone(),
            password,
            mirror: self.mirror,
            ca_pem,
        };
        upstream.validate().map_err(|error| error.to_string())?;
        Ok(upstream)
    }
}

/// A password and a CA bundle (PEM), each when configured.
type Secrets = (Option<String>, Option<String>);

/// What a `[[proxy]]` or `[[replication.rule]]` (`what`) keeps outside the file: the password
/// in the environment variable `password_env` names, and the CA bundle in `ca_file`.
fn secrets(
    what: &str,
    password_env: Option<&str>,
    ca_file: Option<&std::path::Path>,
) -> Result<Secrets, String> {
    let password = match password_env {
        Some(name) => Some(
            std::env::var(name)
                .map_err(|_| format!("{what}: the environment variable {name} is not set"))?,
        ),
        None => None,
    };
    let ca_pem = ca_file
        .map(crate::admin_cli::read_ca_file)
        .transpose()
        .map_err(|error| format!("{what}: {error}"))?;
    Ok((password, ca_pem))
}

/// `[replication]`: the meta leader's replicator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Time between two full passes over every replication rule.
    pub interval_ms: u64,
    /// `[[replication.rule]]`: rules declared in the file, written to the Raft state when a meta
    /// node, a gateway or serve starts; the admin CLI and API manage the others.
    #[serde(rename = "rule")]
    pub rules: Vec<ReplicationRuleConfig>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            interval_ms: 60_000,
            rules: Vec::new(),
        }
    }
}

/// One `[[replication.rule]]`: `to` (push) or `from` (pull) another registry. The password is
/// never in the file: `password_env` names the environment variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationRuleConfig {
    pub id: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub repos: String,
    pub tags: Option<String>,
    #[serde(default)]
    pub deletes: bool,
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// PEM file of the CA(s) the other registry's TLS certificate may chain to.
    pub ca_file: Option<std::path::PathBuf>,
}

impl ReplicationRuleConfig {
    /// The rule as the Raft state keeps it, its password read from `password_env` and its CA
    /// bundle from `ca_file`.
    pub fn rule(&self) -> Result<cluster_api::ReplicationRule, String> {
        let (mode, url) = match (&self.to, &self.from) {
            (Some(url), None) => (cluster_api::ReplicationMode::Push, url.clone()),
            (None, Some(url)) => (cluster_api::ReplicationMode::Pull, url.clone()),
            _ => {
                return Err(format!(
                    "replication rule {}: give one of to (push) and from (pull)",
                    self.id
                ))
            }
        };
        let (password, ca_pem) = secrets(
            &format!("replication rule {}", self.id),
            self.password_env.as_deref(),
            self.ca_file.as_deref(),
        )?;
        let rule = cluster_api::ReplicationRule {
            id: self.id.clone(),
            mode,
            url,
            repositories: self.repos.clone(),
            tags: self.tags.clone(),
            deletes: self.deletes,
            username: self.username.clone(),
            password,
            ca_pem,
        };
        rule.validate().map_err(|error| error.to_string())?;
        Ok(rule)
    }
}

/// `meta`: either the list of meta node addresses (`meta = ["meta-1:7000"]`, what gateways and
/// blob nodes need) or a `[meta]` section with them and the meta role's settings:
///
/// ```toml
/// [meta]
/// addresses = ["meta-1:7000"]   # gateway and blob roles
/// memory_budget = "64MiB"       # meta role: all of RocksDB's memory
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaSection {
    pub addresses: Vec<String>,
    /// RocksDB's memory on a meta node (block cache, index and filter blocks, memtables), in
    /// bytes; `None` keeps the default (32 MiB).
    pub memory_budget: Option<u64>,
    /// How often a meta member refreshes the placement gauges, in ms; `None` keeps the default
    /// (30 s).
    pub placement_check_interval_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
struct MetaTable {
    addresses: Vec<String>,
    memory_budget: Option<ByteSize>,
    placement_check_interval_ms: Option<u64>,
}

/// A size in bytes: an integer, or a string with a unit (`"64MiB"`, `"1GiB"`, `"500MB"`).
struct ByteSize(u64);

fn size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    ByteSize::deserialize(deserializer).map(|size| size.0)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: bytes, or a string such as \"64MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }
            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                crate::lifecycle_cli::parse_size(text)
                    .map(ByteSize)
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl<'de> Deserialize<'de> for MetaSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MetaSection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of meta addresses or a [meta] section")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<MetaSection, A::Error> {
                Ok(MetaSection {
                    addresses: Vec::deserialize(SeqAccessDeserializer::new(seq))?,
                    memory_budget: None,
                    placement_check_interval_ms: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<MetaSection, A::Error> {
                let table = MetaTable::deserialize(MapAccessDeserializer::new(map))?;
                Ok(MetaSection {
                    addresses: table.addresses,
                    memory_budget: table.memory_budget.map(|size| size.0),
                    placement_check_interval_ms: table.placement_check_interval_ms,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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
            meta: MetaSection::default(),
            metrics_listen: None,
            log: "info,openraft=warn".into(),
            node_id: 1,
            zone: "default".into(),
            blob_http_listen: None,
            blob_http_advertise: None,
            blob_s3: None,
            blob_min_free_bytes: 64 << 20,
            blob_max_open_uploads_per_repo: 1024,
            bootstrap: None,
            join: Vec::new(),
            read_replica: false,
            blob_down_after_ms: None,
            otlp_endpoint: None,
            gateway: gateway::GatewayConfig::default(),
            tls: wharf_tls::HttpsConfig::default(),
            cluster_tls: wharf_tls::ClusterTlsConfig::default(),
            gc: GcConfig::default(),
            replication: ReplicationConfig::default(),
            proxies: Vec::new(),
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
        if let Some(s3) = &self.blob_s3 {
            s3.validate().map_err(ConfigError::Invalid)?;
            if self.blob_http_listen.is_some() {
                return Err(ConfigError::Invalid(
                    "blob_http_listen serves blob files from a local directory; a blob node on \
                     S3 ([blob_s3]) serves its bytes through gateways instead"
                        .into(),
                ));
            }
        }
        let mut proxies = Vec::new();
        for proxy in &self.proxies {
            let upstream = proxy.upstream().map_err(ConfigError::Invalid)?;
            cluster_api::put_proxy(&mut proxies, upstream)
                .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        }
        let mut ids = std::collections::BTreeSet::new();
        for rule in &self.replication.rules {
            rule.rule().map_err(ConfigError::Invalid)?;
            if !ids.insert(rule.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "replication rule {} is declared twice",
                    rule.id
                )));
            }
        }
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
    fn proxy_upstreams_parse_from_the_file_and_the_flag_and_bad_ones_are_refused() {
        let config: WharfConfig = toml::from_str(
            r#"
            [[proxy]]
            id = "hub"
            url = "https://registry-1.docker.io"
            prefix = "dockerhub"
            mirror = true
            [[proxy]]
            id = "ghcr"
            url = "https://ghcr.io"
            prefix = "ghcr"
            cache_ttl_secs = 0
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.proxies.len(), 2);
        let hub = config.proxies[0].upstream().unwrap();
        assert!(hub.mirror && hub.tag_ttl_secs == cluster_api::DEFAULT_TAG_TTL_SECS);
        assert_eq!(config.proxies[1].upstream().unwrap().cache_ttl_secs, 0);

        let flag = ProxyConfig::parse_flag("quay=https://quay.io@quay").unwrap();
        assert_eq!(
            (flag.url.as_str(), flag.prefix.as_str()),
            ("https://quay.io", "quay")
        );
        assert!(ProxyConfig::parse_flag("no-equals").is_err());

        let overlapping = WharfConfig {
            proxies: vec![
                ProxyConfig::parse_flag("a=https://x.example@hub").unwrap(),
                ProxyConfig::parse_flag("b=https://y.example@hub/sub").unwrap(),
            ],
            ..WharfConfig::default()
        };
        assert!(overlapping
            .validate()
            .unwrap_err()
            .to_string()
            .contains("overlaps"));
        let unset = ProxyConfig {
            username: Some("robot".into()),
            password_env: Some("WHARF_TEST_SURELY_UNSET_PASSWORD".into()),
            ..ProxyConfig::parse_flag("c=https://z.example@zed").unwrap()
        };
        assert!(unset
            .upstream()
            .unwrap_err()
            .contains("WHARF_TEST_SURELY_UNSET_PASSWORD"));
    }

    #[test]
    fn replication_rules_come_from_the_file() {
        let config: WharfConfig = toml::from_str(
            r#"
            [replication]
            interval_ms = 30000
            [[replication.rule]]
            id = "dr"
            to = "https://dr.example"
            repos = "prod/**"
            deletes = true
            [[replication.rule]]
            id = "vendor"
            from = "https://partner.example"
            repos = "vendor/**"
            tags = "v*"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        let rules: Vec<_> = config
            .replication
            .rules
            .iter()
            .map(|rule| rule.rule().unwrap())
            .collect();
        assert_eq!(rules[0].mode, cluster_api::ReplicationMode::Push);
        assert!(rules[0].deletes && rules[0].password.is_none());
        assert_eq!(rules[1].mode, cluster_api::ReplicationMode::Pull);
        assert_eq!(rules[1].tags.as_deref(), Some("v*"));

        let both = ReplicationRuleConfig {
            from: Some("https://other.example".into()),
            ..config.replication.rules[0].clone()
        };
        assert!(both.rule().unwrap_err().contains("one of to"));
        let unset = ReplicationRuleConfig {
            username: Some("robot".into()),
            password_env: Some("WHARF_TEST_SURELY_UNSET_PASSWORD".into()),
            ..config.replication.rules[0].clone()
        };
        assert!(unset
            .rule()
            .unwrap_err()
            .contains("WHARF_TEST_SURELY_UNSET_PASSWORD"));
        let twice = WharfConfig {
            replication: ReplicationConfig {
                rules: vec![
                    config.replication.rules[0].clone(),
                    config.replication.rules[0].clone(),
                ],
                ..ReplicationConfig::default()
            },
            ..WharfConfig::default()
        };
        assert!(twice
            .validate()
            .unwrap_err()
            .to_string()
            .contains("declared twice"));
    }

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
    fn the_role_example_configs_parse() {
        for (name, text) in [
            ("meta.toml", include_str!("../deploy/config/meta.toml")),
            ("blob.toml", include_str!("../deploy/config/blob.toml")),
            (
                "blob-s3.toml",
                include_str!("../deploy/config/blob-s3.toml"),
            ),
            (
                "gateway.toml",
                include_str!("../deploy/config/gateway.toml"),
            ),
        ] {
            let config: WharfConfig =
                toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let meta: WharfConfig = toml::from_str(include_str!("../deploy/config/meta.toml")).unwrap();
        assert_eq!(meta.meta.memory_budget, Some(32 << 20));
        let s3: WharfConfig =
            toml::from_str(include_str!("../deploy/config/blob-s3.toml")).unwrap();
        let section = s3.blob_s3.expect("[blob_s3]");
        assert_eq!(
            (section.bucket.as_str(), section.prefix.as_str()),
            ("wharf-eu-west", "blob-3")
        );
    }

    #[test]
    fn a_blob_s3_section_is_checked() {
        let bad_bucket: WharfConfig = toml::from_str("[blob_s3]\nbucket = \"No_Such\"\n").unwrap();
        assert!(bad_bucket.validate().is_err());
        let with_http: WharfConfig = toml::from_str(
            "blob_http_listen = \"127.0.0.1:0\"\n[blob_s3]\nbucket = \"wharf-blobs\"\n",
        )
        .unwrap();
        let error = with_http
            .validate()
            .expect_err("blob_http_listen with S3")
            .to_string();
        assert!(error.contains("blob_http_listen"), "{error}");
        let unknown = toml::from_str::<WharfConfig>("[blob_s3]\nbucket = \"b-1\"\nkey = 1\n");
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[test]
    fn meta_is_a_list_or_a_section() {
        let config: WharfConfig = toml::from_str(r#"meta = ["meta-1:7000"]"#).unwrap();
        assert_eq!(config.meta.addresses, ["meta-1:7000"]);
        assert_eq!(config.meta.memory_budget, None);
        let config: WharfConfig =
            toml::from_str("[meta]\naddresses = [\"meta-1:7000\"]\nmemory_budget = \"64MiB\"")
                .unwrap();
        assert_eq!(config.meta.addresses, ["meta-1:7000"]);
        assert_eq!(config.meta.memory_budget, Some(64 << 20));
        let config: WharfConfig = toml::from_str("[meta]\nmemory_budget = 16777216").unwrap();
        assert_eq!(config.meta.memory_budget, Some(16 << 20));
        assert!(toml::from_str::<WharfConfig>("[meta]\nmemory_budgett = 1").is_err());
        assert!(toml::from_str::<WharfConfig>("[meta]\nmemory_budget = \"64 parsecs\"").is_err());
        assert!(toml::from_str::<WharfConfig>("[meta]\nmemory_budget = -1").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<WharfConfig>("lisen = \"x\"").is_err());
    }
}
