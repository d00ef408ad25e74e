//! TLS for Wharf, on `ring` only (no second crypto library):
//!
//! - **The gateway's accept loop** ([`serve`]), plain HTTP or HTTPS, under [`ConnectionLimits`]
//!   (connections at once, the header read timeout, the header size).
//! - **HTTPS for the gateway**: a rustls server whose certificate comes from a
//!   [`ReloadingCertResolver`]; a background task ([`spawn_reloader`]) re-reads the certificate
//!   and key files every `reload_interval_ms` and swaps a new pair in without a restart. A bad
//!   file keeps the old pair (and a `warn`), so the listener never serves nothing.
//! - **mTLS between cluster members** ([`ClusterTls`]): tonic server and client TLS settings from
//!   a CA bundle, a certificate chain and a key; servers require a client certificate signed by
//!   the CA.
//! - Loading PEM files with errors that name the file ([`load_certified_key`], [`load_ca`]).
//!
//! Config sections ([`HttpsConfig`] for `[tls]`, [`ClusterTlsConfig`] for `[cluster_tls]`) are
//! plain paths; the binary layers them (file < `WHARF_*` < flags). Key material is never logged.
//!
//! Must not depend on any other Wharf crate: the binary and `cluster-client` wire it in.

mod cluster;
mod config;
mod error;
mod load;
mod reload;
mod serve;
mod x509;

pub use cluster::ClusterTls;
pub use config::{ClusterTlsConfig, HttpsConfig};
pub use error::TlsError;
pub use load::{load_ca, load_cert_chain, load_certified_key, load_private_key, ring_provider};
pub use reload::{https_server_config, spawn_reloader, ReloadingCertResolver};
pub use serve::{serve, ConnectionLimits, HANDSHAKE_TIMEOUT};
pub use x509::CertSummary;
