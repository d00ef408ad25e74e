//! Signed blob URLs: how a gateway sends a client straight to a blob node for the bytes.
//!
//! A gateway that has decided a client may read blob `digest` (its repository links the blob, the
//! client's token allows the pull) answers `307` to `<node base URL>/blobs/<digest>?expires=
//! <unix seconds>&sig=<32 hex>`, where `sig` is the first 16 bytes of HMAC-SHA256 over the digest
//! and the expiry with the cluster's blob-URL key (`MetaApi::blob_url_key`, derived in meta from
//! a secret in the Raft state). The node checks the signature and the expiry and serves the
//! bytes, `Range` included: possession of an unexpired URL is the permission, as with an object
//! store's presigned URL. The repository is not part of it: the bytes of a digest are the same
//! in every repository, and the gateway already checked the one asked for.

use std::sync::{Arc, OnceLock};

use oci_model::Digest;

use crate::mac::{self, MAC};
use crate::MetaApi;

/// The length of a blob-URL key.
pub const BLOB_URL_KEY_BYTES: usize = 32;

/// The query a signed blob URL carries: `expires=<unix seconds>&sig=<hex>`.
pub fn sign_blob_query(key: &[u8], digest: &Digest, expires_s: u64) -> String {
    let sig = hex::encode(mac::sign(key, &[&signed(digest, expires_s)]));
    format!("expires={expires_s}&sig={sig}")
}

/// Why a blob URL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobUrlError {
    /// No `expires` or `sig`, or one that does not parse.
    Malformed,
    /// The signature is not the key's for this digest and expiry.
    BadSignature,
    /// Signed correctly, but `expires` is before `now_s`.
    Expired,
}

/// Checks the query of a request for `/blobs/<digest>` at `now_s` (unix seconds).
pub fn verify_blob_query(
    key: &[u8],
    digest: &Digest,
    query: &str,
    now_s: u64,
) -> Result<(), BlobUrlError> {
    let (mut expires, mut sig) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("expires", value)) => expires = value.parse::<u64>().ok(),
            Some(("sig", value)) => {
                let mut bytes = [0u8; MAC];
                sig = hex::decode_to_slice(value, &mut bytes).ok().map(|()| bytes);
            }
            _ => {}
        }
    }
    let (Some(expires), Some(sig)) = (expires, sig) else {
        return Err(BlobUrlError::Malformed);
    };
    if !mac::verify(key, &[&signed(digest, expires)], &sig) {
        return Err(BlobUrlError::BadSignature);
    }
    if expires < now_s {
        return Err(BlobUrlError::Expired);
    }
    Ok(())
}

/// The blob-URL key, fetched from meta on first use and kept (it never changes); a failed fetch
/// is tried again by the next caller. Gateways sign with it, blob nodes check with it. Once it is
/// held, asking for it takes no lock (it is read on every redirected GET).
pub struct BlobUrlKeys {
    meta: Arc<dyn MetaApi>,
    key: OnceLock<Vec<u8>>,
}

impl BlobUrlKeys {
    pub fn new(meta: Arc<dyn MetaApi>) -> BlobUrlKeys {
        BlobUrlKeys {
            meta,
            key: OnceLock::new(),
        }
    }

    /// The key; meta's error while it cannot be asked. Callers racing the first fetch each ask
    /// meta, and all get the same key.
    pub async fn key(&self) -> Result<&[u8], crate::MetaError> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let fetched = self.meta.blob_url_key().await?;
        Ok(self.key.get_or_init(|| fetched))
    }
}

/// What a blob URL's signature covers.
fn signed(digest: &Digest, expires_s: u64) -> Vec<u8> {
    format!("GET\n{digest}\n{expires_s}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; BLOB_URL_KEY_BYTES] = [4; BLOB_URL_KEY_BYTES];

    #[test]
    fn a_signed_query_verifies_until_it_expires() {
        let digest = Digest::sha256_of(b"layer");
        let query = sign_blob_query(&KEY, &digest, 1_000);
        assert!(query.starts_with("expires=1000&sig="));
        assert_eq!(verify_blob_query(&KEY, &digest, &query, 999), Ok(()));
        assert_eq!(verify_blob_query(&KEY, &digest, &query, 1_000), Ok(()));
        assert_eq!(
            verify_blob_query(&KEY, &digest, &query, 1_001),
            Err(BlobUrlError::Expired)
        );
        // Parameters in any order, unknown ones ignored.
        let (expires, sig) = query.split_once('&').expect("two parameters");
        let reordered = format!("x=1&{sig}&{expires}");
        assert_eq!(verify_blob_query(&KEY, &digest, &reordered, 0), Ok(()));
    }

    #[test]
    fn another_digest_expiry_or_key_is_refused() {
        let digest = Digest::sha256_of(b"layer");
        let query = sign_blob_query(&KEY, &digest, 1_000);
        let other = Digest::sha256_of(b"other");
        assert_eq!(
            verify_blob_query(&KEY, &other, &query, 0),
            Err(BlobUrlError::BadSignature)
        );
        let later = query.replace("expires=1000", "expires=9000");
        assert_eq!(
            verify_blob_query(&KEY, &digest, &later, 0),
            Err(BlobUrlError::BadSignature)
        );
        assert_eq!(
            verify_blob_query(&[5; BLOB_URL_KEY_BYTES], &digest, &query, 0),
            Err(BlobUrlError::BadSignature)
        );
    }

    #[test]
    fn malformed_queries_are_refused() {
        let digest = Digest::sha256_of(b"layer");
        for query in [
            "",
            "expires=10",
            "sig=00000000000000000000000000000000",
            "expires=x&sig=00000000000000000000000000000000",
            "expires=10&sig=0000",
            "expires=10&sig=0000000000000000000000000000000G",
        ] {
            assert_eq!(
                verify_blob_query(&KEY, &digest, query, 0),
                Err(BlobUrlError::Malformed),
                "{query}"
            );
        }
    }
}
