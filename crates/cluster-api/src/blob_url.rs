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

use std::sync::Arc;

use futures::lock::Mutex;
use oci_model::Digest;
use ring::hmac;

use crate::MetaApi;

const MAC: usize = 16;

/// The length of a blob-URL key.
pub const BLOB_URL_KEY_BYTES: usize = 32;

/// The query a signed blob URL carries: `expires=<unix seconds>&sig=<hex>`.
pub fn sign_blob_query(key: &[u8], digest: &Digest, expires_s: u64) -> String {
    let mac = mac(key, digest, expires_s);
    let mut sig = String::with_capacity(MAC * 2);
    for byte in mac {
        sig.push_str(&format!("{byte:02x}"));
    }
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
            Some(("sig", value)) => sig = decode_hex(value),
            _ => {}
        }
    }
    let (Some(expires), Some(sig)) = (expires, sig) else {
        return Err(BlobUrlError::Malformed);
    };
    let expected = mac(key, digest, expires);
    // Every byte is compared whatever the first difference.
    let difference = expected
        .iter()
        .zip(&sig)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b));
    if difference != 0 {
        return Err(BlobUrlError::BadSignature);
    }
    if expires < now_s {
        return Err(BlobUrlError::Expired);
    }
    Ok(())
}

/// The blob-URL key, fetched from meta on first use and kept (it never changes); a failed fetch
/// is tried again by the next caller. Gateways sign with it, blob nodes check with it.
pub struct BlobUrlKeys {
    meta: Arc<dyn MetaApi>,
    key: Mutex<Option<Vec<u8>>>,
}

impl BlobUrlKeys {
    pub fn new(meta: Arc<dyn MetaApi>) -> BlobUrlKeys {
        BlobUrlKeys {
            meta,
            key: Mutex::new(None),
        }
    }

    /// The key; meta's error while it cannot be asked.
    pub async fn key(&self) -> Result<Vec<u8>, crate::MetaError> {
        let mut key = self.key.lock().await;
        if let Some(key) = key.as_ref() {
            return Ok(key.clone());
        }
        let fetched = self.meta.blob_url_key().await?;
        *key = Some(fetched.clone());
        Ok(fetched)
    }
}

fn mac(key: &[u8], digest: &Digest, expires_s: u64) -> [u8; MAC] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, format!("GET\n{digest}\n{expires_s}").as_bytes());
    let mut mac = [0u8; MAC];
    mac.copy_from_slice(&tag.as_ref()[..MAC]);
    mac
}

fn decode_hex(text: &str) -> Option<[u8; MAC]> {
    let text = text.as_bytes();
    if text.len() != MAC * 2 {
        return None;
    }
    let mut bytes = [0u8; MAC];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(bytes)
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
