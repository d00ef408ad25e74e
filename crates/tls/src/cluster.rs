//! mTLS between cluster members: tonic server and client TLS settings from one CA bundle, one
//! certificate chain and its key.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::UnixTime;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::load::{ca_store, certified_key, read, ring_provider};
use crate::x509::CertSummary;
use crate::{ClusterTlsConfig, TlsError, HANDSHAKE_TIMEOUT};

/// A member's mTLS material, loaded and checked: the files parse, the key matches the
/// certificate, and the certificate is valid now, signed by the CA and usable as a client
/// certificate (so peers will not refuse it). Cloning shares nothing mutable.
#[derive(Clone)]
pub struct ClusterTls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    cert_path: PathBuf,
    summary: CertSummary,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("cert", &self.cert_path)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// The section's files, or `None` when the section is empty; an incomplete section or a
    /// file that does not load is an error naming the setting or the file.
    pub fn from_config(config: &ClusterTlsConfig) -> Result<Option<ClusterTls>, TlsError> {
        config.validate()?;
        match (&config.ca, &config.cert, &config.key) {
            (Some(ca), Some(cert), Some(key)) => ClusterTls::load(ca, cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// Loads and checks the CA bundle at `ca` and the pair at `cert` and `key`.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<ClusterTls, TlsError> {
        let ca_pem = read(ca)?;
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let roots = ca_store(ca, &ca_pem)?;
        let certified = certified_key(cert, &cert_pem, key, &key_pem)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), ring_provider())
            .build()
            .map_err(|error| TlsError::BadCa {
                path: ca.to_owned(),
                reason: error.to_string(),
            })?;
        let (leaf, intermediates) =
            certified
                .cert
                .split_first()
                .ok_or_else(|| TlsError::NoCertificate {
                    path: cert.to_owned(),
                })?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|error| {
                TlsError::Config(format!(
                    "{} is not a valid client certificate under the CA in {}: {error}",
                    cert.display(),
                    ca.display()
                ))
            })?;
        Ok(ClusterTls {
            summary: CertSummary::of(leaf).unwrap_or_default(),
            ca_pem,
            cert_pem,
            key_pem,
            cert_path: cert.to_owned(),
        })
    }

    /// The member certificate's subject, serial and expiry, for a startup log line.
    pub fn summary(&self) -> &CertSummary {
        &self.summary
    }

    /// For every gRPC server of the process: present the member certificate and require a
    /// client certificate signed by the CA (a client without one fails the handshake).
    pub fn server_tls_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// For every gRPC client of the process: trust only the CA and present the member
    /// certificate. The server name checked is the host of the `https://` URI, so certificates
    /// need the members' addresses (IP addresses or DNS names) as SANs.
    pub fn client_tls_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::tests::test_pki;

    #[test]
    fn a_member_certificate_must_be_signed_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_pki(&["127.0.0.1"], "member");
        let (other_ca, _, _) = test_pki(&["127.0.0.1"], "elsewhere");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca).unwrap();
        std::fs::write(path("other-ca.pem"), other_ca).unwrap();
        std::fs::write(path("node.pem"), cert).unwrap();
        std::fs::write(path("node.key"), key).unwrap();

        let loaded = ClusterTls::load(&path("ca.pem"), &path("node.pem"), &path("node.key"))
            .expect("a valid member");
        assert_eq!(loaded.summary().subject, "member");
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
        let _ = loaded.server_tls_config();
        let _ = loaded.client_tls_config();

        let error = ClusterTls::load(&path("other-ca.pem"), &path("node.pem"), &path("node.key"))
            .unwrap_err();
        assert!(error.to_string().contains("node.pem"), "{error}");

        let config = ClusterTlsConfig {
            ca: Some(path("ca.pem")),
            cert: Some(path("node.pem")),
            key: None,
        };
        assert!(matches!(
            ClusterTls::from_config(&config),
            Err(TlsError::Config(_))
        ));
        assert!(ClusterTls::from_config(&ClusterTlsConfig::default())
            .unwrap()
            .is_none());
    }
}
