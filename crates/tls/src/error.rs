//! The crate's one error type.

use std::path::PathBuf;

/// Why TLS material could not be loaded or a TLS setting is invalid. Every variant about a file
/// names it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("{path} is not valid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    /// The file holds no `CERTIFICATE` block.
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    /// The file holds no private key (PKCS#8, PKCS#1 or SEC1 PEM block).
    #[error("{path} holds no PEM private key: {reason}")]
    NoPrivateKey { path: PathBuf, reason: String },
    /// The key is of a kind rustls cannot sign with.
    #[error("the key in {path} is unusable: {source}")]
    UnusableKey {
        path: PathBuf,
        source: rustls::Error,
    },
    /// The key does not belong to the certificate.
    #[error("the key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// A CA bundle holds a certificate that is not a usable trust anchor.
    #[error("{path} holds an unusable CA certificate: {reason}")]
    BadCa { path: PathBuf, reason: String },
    /// rustls refused a configuration built from files that loaded.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// A config section is incomplete or inconsistent.
    #[error("invalid TLS setting: {0}")]
    Config(String),
}
