//! The `[tls]` and `[cluster_tls]` config sections.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::TlsError;

/// `[tls]`: HTTPS on the gateway's listener. Off unless both `cert` and `key` are set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key: Option<PathBuf>,
    /// How often the files are checked for a new certificate, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        HttpsConfig {
            cert: None,
            key: None,
            reload_interval_ms: 10_000,
        }
    }
}

impl HttpsConfig {
    /// Both paths when HTTPS is configured, `None` when neither is set.
    pub fn paths(&self) -> Result<Option<(PathBuf, PathBuf)>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Config(
                "tls.cert is set but tls.key is not (--tls-key, WHARF_TLS_KEY)".into(),
            )),
            (None, Some(_)) => Err(TlsError::Config(
                "tls.key is set but tls.cert is not (--tls-cert, WHARF_TLS_CERT)".into(),
            )),
        }
    }

    /// The reload period.
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms)
    }

    /// Checks the section is complete (both paths or neither) and the interval is not zero.
    pub fn validate(&self) -> Result<(), TlsError> {
        self.paths()?;
        if self.reload_interval_ms == 0 {
            return Err(TlsError::Config(
                "tls.reload_interval_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// `[cluster_tls]`: mTLS between cluster members (every gRPC server and client of the process).
/// Off unless all of `ca`, `cert` and `key` are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// PEM bundle of the CA(s) that sign members' certificates: servers accept only client
    /// certificates it signed, clients accept only server certificates it signed.
    pub ca: Option<PathBuf>,
    /// This member's PEM certificate chain, presented as server and as client.
    pub cert: Option<PathBuf>,
    /// The PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl ClusterTlsConfig {
    /// True when any of the three paths is set (then all three must be).
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Checks the section is all or nothing.
    pub fn validate(&self) -> Result<(), TlsError> {
        if !self.is_set() {
            return Ok(());
        }
        let missing: Vec<&str> = [
            ("cluster_tls.ca", self.ca.is_none()),
            ("cluster_tls.cert", self.cert.is_none()),
            ("cluster_tls.key", self.key.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, missing)| missing.then_some(name))
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TlsError::Config(format!(
                "cluster TLS needs ca, cert and key; missing {}",
                missing.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_pair_is_refused() {
        let cert_only = HttpsConfig {
            cert: Some("a.pem".into()),
            ..HttpsConfig::default()
        };
        let error = cert_only.validate().unwrap_err().to_string();
        assert!(error.contains("tls.key"), "{error}");
        let key_only = HttpsConfig {
            key: Some("a.key".into()),
            ..HttpsConfig::default()
        };
        assert!(key_only.validate().is_err());
        assert_eq!(HttpsConfig::default().paths().unwrap(), None);

        let cluster: ClusterTlsConfig = toml::from_str("ca = \"ca.pem\"").unwrap();
        let error = cluster.validate().unwrap_err().to_string();
        assert!(
            error.contains("cluster_tls.cert, cluster_tls.key"),
            "{error}"
        );
        ClusterTlsConfig::default().validate().unwrap();
    }

    #[test]
    fn sections_parse_with_defaults() {
        let https: HttpsConfig = toml::from_str("cert = \"c\"\nkey = \"k\"").unwrap();
        assert_eq!(https.reload_interval(), Duration::from_secs(10));
        https.validate().unwrap();
        assert!(toml::from_str::<HttpsConfig>("crt = \"c\"").is_err());
    }
}
