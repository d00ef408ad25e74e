//! PEM files to rustls types. Each file is read once into memory and parsed from there, so the
//! bytes the reloader fingerprints are the bytes it parsed.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// The one crypto provider Wharf uses (ring), passed explicitly so no process-wide default is
/// needed.
pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` block of the PEM file at `path` (a chain, leaf first, or a CA bundle);
/// at least one.
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_cert_chain(path, &read(path)?)
}

pub(crate) fn parse_cert_chain(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at `path`.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_private_key(path, &read(path)?)
}

pub(crate) fn parse_private_key(
    path: &Path,
    bytes: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|error| TlsError::NoPrivateKey {
        path: path.to_owned(),
        // The error never quotes the file's content, so no key material reaches a log.
        reason: match error {
            pem::Error::NoItemsFound => "no key block found".to_owned(),
            other => other.to_string(),
        },
    })
}

/// The certificate chain at `cert` with the key at `key`, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    certified_key(cert, &read(cert)?, key, &read(key)?)
}

pub(crate) fn certified_key(
    cert_path: &Path,
    cert_bytes: &[u8],
    key_path: &Path,
    key_bytes: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_cert_chain(cert_path, cert_bytes)?;
    let key = parse_private_key(key_path, key_bytes)?;
    let signing_key = ring_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::UnusableKey {
            path: key_path.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // An unknown answer (a key type that cannot report its public key) is not a mismatch.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
        Err(other) => Err(TlsError::Pem {
            path: cert_path.to_owned(),
            reason: format!("the certificate does not parse: {other}"),
        }),
    }
}

/// The CA bundle at `path` as trust anchors; every certificate in it must be usable as one.
pub fn load_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    ca_store(path, &read(path)?)
}

pub(crate) fn ca_store(path: &Path, bytes: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_cert_chain(path, bytes)? {
        roots.add(cert).map_err(|error| TlsError::BadCa {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA, and a leaf for `names` signed by it with both serverAuth and clientAuth: (CA PEM,
    /// leaf PEM, leaf key PEM).
    pub(crate) fn test_pki(names: &[&str], common_name: &str) -> (String, String, String) {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &ca).unwrap();
        (ca.pem(), leaf.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_pki(&["127.0.0.1", "localhost"], "node");
        let cert = write(dir.path(), "node.pem", &cert);
        let key = write(dir.path(), "node.key", &key);
        let loaded = load_certified_key(&cert, &key).unwrap();
        assert_eq!(loaded.cert.len(), 1);
        let ca = write(dir.path(), "ca.pem", &ca);
        assert_eq!(load_ca(&ca).unwrap().len(), 1);
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let error = load_cert_chain(&missing).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error:?}");
        assert!(error.to_string().contains("nope.pem"), "{error}");
        let error = load_certified_key(&missing, &missing).unwrap_err();
        assert!(error.to_string().contains("nope.pem"), "{error}");
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (_, cert, _) = test_pki(&["localhost"], "one");
        let (_, _, other_key) = test_pki(&["localhost"], "two");
        let cert = write(dir.path(), "node.pem", &cert);
        let key = write(dir.path(), "other.key", &other_key);
        let error = load_certified_key(&cert, &key).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("other.key") && text.contains("node.pem"),
            "{text}"
        );
    }

    #[test]
    fn garbage_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = write(dir.path(), "garbage.pem", "not a certificate at all\n");
        let error = load_cert_chain(&garbage).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error:?}");
        assert!(error.to_string().contains("garbage.pem"));

        let broken = write(
            dir.path(),
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        let error = load_cert_chain(&broken).unwrap_err();
        assert!(matches!(error, TlsError::Pem { .. }), "{error:?}");

        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        let (_, cert, _) = test_pki(&["localhost"], "node");
        let cert = write(dir.path(), "node.pem", &cert);
        let key = write(dir.path(), "bad.key", secret);
        let error = load_certified_key(&cert, &key).unwrap_err();
        assert!(matches!(error, TlsError::UnusableKey { .. }), "{error:?}");
        assert!(!error.to_string().contains("c2VjcmV0"), "{error}");

        // A certificate where a key belongs.
        let error = load_private_key(&cert).unwrap_err();
        assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");
    }
}
