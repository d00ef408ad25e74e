//! Upload sessions as signed tokens: the upload id a client carries *is* the session.
//!
//! The meta leader mints a token when an upload opens (no Raft write): which blob node stages it,
//! when it started on the leader's clock (the garbage collector's fence compares that time with
//! deletions), a short tag of the repository, a random nonce, and an HMAC-SHA256 over all of it
//! and the full repository name with a key kept in the Raft state. A gateway decodes a token to
//! find the staging node and to refuse it in another repository; only meta, which holds the key,
//! trusts the start time, when the blob commits. Whether an upload is still open is the staging
//! node's to say (the staging file exists), so closing one costs no Raft write either.
//!
//! Layout, 57 bytes written as 114 lowercase hex characters:
//!
//! ```text
//! offset  bytes  field
//! 0       1      version (1)
//! 1       16     nonce (random)
//! 17      8      staging node id, u64 BE
//! 25      8      started, unix ms, u64 BE
//! 33      8      the first 8 bytes of SHA-256(repository name)
//! 41      16     the first 16 bytes of HMAC-SHA256(key, bytes 0..41 || repository name)
//! ```

use oci_model::RepositoryName;
use ring::digest;

use crate::mac::{self, MAC};
use crate::{BlobNodeId, MetaError, UploadId, UploadSession};

const VERSION: u8 = 1;
const NONCE: usize = 16;
const SIGNED: usize = 1 + NONCE + 8 + 8 + 8;
/// The encoded size of a token, in bytes.
pub const TOKEN_BYTES: usize = SIGNED + MAC;

/// The length of a secret key for [`UploadToken::mint`]: HMAC-SHA256's block-sized key.
pub const UPLOAD_KEY_BYTES: usize = 32;

/// A decoded upload token. Decoding checks its shape only; [`UploadToken::verify`] checks the
/// signature, which needs the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadToken {
    bytes: [u8; TOKEN_BYTES],
}

impl UploadToken {
    /// Signs a new session of `repo` staged on `staging_node`, started at `started_ms`.
    pub fn mint(
        key: &[u8],
        repo: &RepositoryName,
        staging_node: BlobNodeId,
        started_ms: u64,
        nonce: [u8; NONCE],
    ) -> UploadToken {
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[0] = VERSION;
        bytes[1..17].copy_from_slice(&nonce);
        bytes[17..25].copy_from_slice(&staging_node.to_be_bytes());
        bytes[25..33].copy_from_slice(&started_ms.to_be_bytes());
        bytes[33..41].copy_from_slice(&repo_tag(repo));
        let mac = mac::sign(key, &[&bytes[..SIGNED], repo.as_str().as_bytes()]);
        bytes[SIGNED..].copy_from_slice(&mac);
        UploadToken { bytes }
    }

    /// The token an upload id spells, if it has the shape of one (any other id is no session).
    pub fn decode(id: &UploadId) -> Option<UploadToken> {
        let text = id.as_str();
        // Lowercase only, as minted: one token, one spelling.
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        (bytes[0] == VERSION).then_some(UploadToken { bytes })
    }

    /// The session `id` names, if it is a token of `repo` (by the repository tag, which a gateway
    /// can check without the key); else `UploadUnknown`, as for an upload that never existed.
    pub fn session(repo: &RepositoryName, id: &UploadId) -> Result<UploadSession, MetaError> {
        match UploadToken::decode(id) {
            Some(token) if token.bytes[33..41] == repo_tag(repo) => Ok(UploadSession {
                id: id.clone(),
                repo: repo.clone(),
                staging_node: token.staging_node(),
                started_ms: token.started_ms(),
            }),
            _ => Err(MetaError::UploadUnknown(id.to_string())),
        }
    }

    /// True when `key` signed this token for `repo`. Constant time.
    pub fn verify(&self, key: &[u8], repo: &RepositoryName) -> bool {
        let signed = [&self.bytes[..SIGNED], repo.as_str().as_bytes()];
        mac::verify(key, &signed, &self.bytes[SIGNED..])
    }

    pub fn staging_node(&self) -> BlobNodeId {
        u64::from_be_bytes(self.bytes[17..25].try_into().unwrap_or_default())
    }

    /// The session's repository as the token binds it: the first 8 bytes of the SHA-256 of its
    /// name (enough to count sessions per repository; [`verify`](UploadToken::verify) checks
    /// the name itself).
    pub fn repo_tag(&self) -> [u8; 8] {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&self.bytes[33..41]);
        tag
    }

    pub fn started_ms(&self) -> u64 {
        u64::from_be_bytes(self.bytes[25..33].try_into().unwrap_or_default())
    }

    /// The upload id that carries this token.
    pub fn id(&self) -> UploadId {
        UploadId(hex::encode(self.bytes))
    }
}

fn repo_tag(repo: &RepositoryName) -> [u8; 8] {
    let hash = digest::digest(&digest::SHA256, repo.as_str().as_bytes());
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&hash.as_ref()[..8]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).expect("valid name")
    }

    const KEY: [u8; UPLOAD_KEY_BYTES] = [7; UPLOAD_KEY_BYTES];

    #[test]
    fn a_minted_token_round_trips_through_its_id() {
        let token = UploadToken::mint(&KEY, &repo("team/app"), 42, 1_700_000_000_123, [9; 16]);
        let id = token.id();
        assert_eq!(id.as_str().len(), TOKEN_BYTES * 2);
        assert_eq!(UploadId::parse(id.as_str()), Some(id.clone()));
        let decoded = UploadToken::decode(&id).expect("decodes");
        assert_eq!(decoded, token);
        assert_eq!(decoded.staging_node(), 42);
        assert_eq!(decoded.started_ms(), 1_700_000_000_123);
        assert_eq!(decoded.repo_tag(), repo_tag(&repo("team/app")));
        assert_ne!(decoded.repo_tag(), repo_tag(&repo("team/other")));
        assert!(decoded.verify(&KEY, &repo("team/app")));
        let session = UploadToken::session(&repo("team/app"), &id).expect("a session");
        assert_eq!(
            (session.staging_node, session.started_ms),
            (42, 1_700_000_000_123)
        );
    }

    #[test]
    fn a_token_is_refused_in_another_repository_and_under_another_key() {
        let id = UploadToken::mint(&KEY, &repo("team/app"), 1, 5, [1; 16]).id();
        assert!(matches!(
            UploadToken::session(&repo("team/other"), &id),
            Err(MetaError::UploadUnknown(_))
        ));
        let token = UploadToken::decode(&id).expect("decodes");
        assert!(!token.verify(&KEY, &repo("team/other")));
        assert!(!token.verify(&[8; UPLOAD_KEY_BYTES], &repo("team/app")));
    }

    #[test]
    fn every_altered_field_breaks_the_signature() {
        let name = repo("a/b");
        let id = UploadToken::mint(&KEY, &name, 3, 1_000, [2; 16]).id();
        for position in 0..TOKEN_BYTES * 2 {
            let mut text = id.as_str().to_owned().into_bytes();
            text[position] = if text[position] == b'0' { b'1' } else { b'0' };
            let altered = UploadId(String::from_utf8(text).expect("ascii"));
            // A changed version is no token at all; any other change decodes but fails.
            if let Some(token) = UploadToken::decode(&altered) {
                assert!(!token.verify(&KEY, &name), "altered hex digit {position}");
            }
        }
    }

    #[test]
    fn ids_of_another_shape_are_no_token() {
        for text in [
            "",
            "0123456789abcdef0123456789abcdef",
            &"0".repeat(TOKEN_BYTES * 2),
            &format!("01{}", "G".repeat(TOKEN_BYTES * 2 - 2)),
            &format!("01{}", "A".repeat(TOKEN_BYTES * 2 - 2)),
        ] {
            assert_eq!(
                UploadToken::decode(&UploadId(text.to_owned())),
                None,
                "{text}"
            );
        }
    }
}
