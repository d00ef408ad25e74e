//! The gateway's certificate, reloaded from its files while the listener keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use ring::digest;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::load::{certified_key, read, ring_provider};
use crate::x509::CertSummary;
use crate::TlsError;

/// A [`ResolvesServerCert`] that hands every handshake the current certificate and key, which
/// [`ReloadingCertResolver::reload`] replaces when the files change.
#[derive(Debug)]
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// SHA-256 of what the files held at the last attempt (loaded or refused), so a bad file
    /// is reported once, not at every check.
    last_seen: Mutex<digest::Digest>,
}

impl ReloadingCertResolver {
    /// Loads the pair at `cert` and `key`; fails (naming the file) when either does not load or
    /// they do not match.
    pub fn load(cert: &Path, key: &Path) -> Result<ReloadingCertResolver, TlsError> {
        let (fingerprint, loaded) = load_pair(cert, key);
        Ok(ReloadingCertResolver {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: RwLock::new(Arc::new(loaded?)),
            last_seen: Mutex::new(fingerprint),
        })
    }

    /// The certificate and key new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a valid pair (the writer only assigns an Arc).
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The summary of the current leaf certificate, for logs.
    pub fn current_summary(&self) -> Option<CertSummary> {
        let current = self.current();
        CertSummary::of(current.end_entity_cert().ok()?)
    }

    /// Re-reads the files. `Ok(true)` when a new pair was swapped in; `Ok(false)` when the files
    /// are as they were at the last attempt (so a refused file is refused once); `Err` when they
    /// changed but do not load, and the current pair stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (fingerprint, loaded) = load_pair(&self.cert_path, &self.key_path);
        {
            let mut last_seen = match self.last_seen.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if last_seen.as_ref() == fingerprint.as_ref() {
                return Ok(false);
            }
            *last_seen = fingerprint;
        }
        let loaded = Arc::new(loaded?);
        match self.current.write() {
            Ok(mut current) => *current = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(true)
    }

    /// The certificate file watched.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The key file watched.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads both files once: the fingerprint of what was read (or of why it could not be) and the
/// pair parsed from those same bytes.
fn load_pair(cert: &Path, key: &Path) -> (digest::Digest, Result<CertifiedKey, TlsError>) {
    let mut context = digest::Context::new(&digest::SHA256);
    let files = read(cert).and_then(|cert_bytes| Ok((cert_bytes, read(key)?)));
    match files {
        Ok((cert_bytes, key_bytes)) => {
            context.update(&(cert_bytes.len() as u64).to_be_bytes());
            context.update(&cert_bytes);
            context.update(&key_bytes);
            let loaded = certified_key(cert, &cert_bytes, key, &key_bytes);
            (context.finish(), loaded)
        }
        Err(error) => {
            context.update(b"unreadable: ");
            context.update(error.to_string().as_bytes());
            (context.finish(), Err(error))
        }
    }
}

/// A rustls server config for HTTPS (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, no client
/// certificates) whose certificate comes from `resolver`.
pub fn https_server_config(
    resolver: Arc<ReloadingCertResolver>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks `resolver`'s files every `interval` and swaps in a changed pair: `info` with the new
/// certificate's subject, serial and expiry, or `warn` (once per bad content) when the new files
/// do not load, keeping the current pair. Stops when `cancel` fires or the resolver is dropped.
pub fn spawn_reloader(
    resolver: &Arc<ReloadingCertResolver>,
    interval: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let resolver: Weak<ReloadingCertResolver> = Arc::downgrade(resolver);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(resolver) = resolver.upgrade() else {
                return;
            };
            // Reading files blocks; keep it off the async workers.
            let checked = tokio::task::spawn_blocking(move || {
                let result = resolver.reload();
                let summary = resolver.current_summary().unwrap_or_default();
                (
                    result.map(|swapped| swapped.then_some(summary)),
                    resolver.cert_path().to_owned(),
                )
            })
            .await;
            match checked {
                Ok((Ok(Some(summary)), cert)) => tracing::info!(
                    cert = %cert.display(),
                    subject = %summary.subject,
                    serial = %summary.serial,
                    not_after = %summary.not_after,
                    "TLS certificate reloaded"
                ),
                Ok((Ok(None), _)) => {}
                Ok((Err(error), cert)) => tracing::warn!(
                    cert = %cert.display(),
                    %error,
                    "new TLS certificate files do not load; keeping the current certificate"
                ),
                Err(error) => tracing::warn!(%error, "TLS certificate check failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::tests::test_pki;

    fn write_pair(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let cert_path = dir.join("tls.pem");
        let key_path = dir.join("tls.key");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn a_changed_pair_is_swapped_in_and_a_bad_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (_, first_cert, first_key) = test_pki(&["localhost"], "first");
        let (cert, key) = write_pair(dir.path(), &first_cert, &first_key);
        let resolver = ReloadingCertResolver::load(&cert, &key).unwrap();
        let first = resolver.current();
        assert_eq!(resolver.current_summary().unwrap().subject, "first");
        assert!(!resolver.reload().unwrap(), "unchanged files");

        let (_, second_cert, second_key) = test_pki(&["localhost"], "second");
        write_pair(dir.path(), &second_cert, &second_key);
        assert!(resolver.reload().unwrap(), "swapped");
        assert_eq!(resolver.current_summary().unwrap().subject, "second");
        let second = resolver.current();
        assert_ne!(first.cert[0], second.cert[0]);

        // A new certificate with the old key: refused once, the second pair stays.
        let (_, third_cert, _) = test_pki(&["localhost"], "third");
        std::fs::write(&cert, third_cert).unwrap();
        assert!(matches!(
            resolver.reload(),
            Err(TlsError::KeyMismatch { .. })
        ));
        assert!(!resolver.reload().unwrap(), "reported once");
        assert_eq!(resolver.current().cert[0], second.cert[0]);

        // Garbage, then a missing file: still the second pair.
        std::fs::write(&cert, "garbage").unwrap();
        assert!(resolver.reload().is_err());
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(resolver.reload(), Err(TlsError::Read { .. })));
        assert_eq!(resolver.current().cert[0], second.cert[0]);
    }

    #[test]
    fn a_bad_pair_fails_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let (_, cert, _) = test_pki(&["localhost"], "a");
        let (_, _, other_key) = test_pki(&["localhost"], "b");
        let (cert, key) = write_pair(dir.path(), &cert, &other_key);
        assert!(matches!(
            ReloadingCertResolver::load(&cert, &key),
            Err(TlsError::KeyMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn the_reloader_swaps_and_stops_on_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let (_, cert, key) = test_pki(&["localhost"], "first");
        let (cert, key) = write_pair(dir.path(), &cert, &key);
        let resolver = Arc::new(ReloadingCertResolver::load(&cert, &key).unwrap());
        let cancel = CancellationToken::new();
        let task = spawn_reloader(&resolver, Duration::from_millis(20), cancel.clone());
        let (_, new_cert, new_key) = test_pki(&["localhost"], "second");
        write_pair(dir.path(), &new_cert, &new_key);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while resolver.current_summary().unwrap().subject != "second" {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on cancel")
            .unwrap();
    }

    #[tokio::test]
    async fn the_reloader_stops_when_the_resolver_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (_, cert, key) = test_pki(&["localhost"], "only");
        let (cert, key) = write_pair(dir.path(), &cert, &key);
        let resolver = Arc::new(ReloadingCertResolver::load(&cert, &key).unwrap());
        let task = spawn_reloader(
            &resolver,
            Duration::from_millis(10),
            CancellationToken::new(),
        );
        drop(resolver);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops without its resolver")
            .unwrap();
    }
}
