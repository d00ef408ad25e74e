//! Domain types shared by every role. They derive serde because Raft commands embed them; they
//! never derive prost (STYLE.md rule 8): `wharf-proto` converts.

use oci_model::{Descriptor, Digest, RepositoryName, Tag};
use serde::{Deserialize, Serialize};

/// Identifies a blob storage node in the cluster map.
pub type BlobNodeId = u64;

/// An upload session id: a random UUID in its simple (32 hex) form, safe in paths and URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UploadId(pub String);

impl UploadId {
    /// Accepts only what Wharf itself issues: 32 lowercase hex characters. Anything else is a bogus
    /// id from a client and must never reach a file path.
    pub fn parse(text: &str) -> Option<UploadId> {
        let ok = text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| UploadId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An open blob upload, kept in meta so that any gateway can continue it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub id: UploadId,
    pub repo: RepositoryName,
    /// The blob node holding the staging file.
    pub staging_node: BlobNodeId,
    /// Unix seconds when the session opened.
    pub started_unix: u64,
}

/// A blob as the metadata service knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    /// Nodes holding a verified, fsynced copy, in preferred read order.
    pub replicas: Vec<BlobNodeId>,
}

/// What a blob node reports once an upload is verified and durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBlob {
    pub size: u64,
    pub replicas: Vec<BlobNodeId>,
}

/// A request to store a validated manifest, with everything the state machine must check and index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PutManifest {
    pub repo: RepositoryName,
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// Set when the PUT was by tag.
    pub tag: Option<Tag>,
    /// Config and layers: each must be linked in `repo`.
    pub blobs: Vec<Digest>,
    /// Index children: each must be a manifest in `repo`.
    pub manifests: Vec<Digest>,
    /// When set, this manifest is a referrer of `subject` and `referrer` is how it is listed.
    pub subject: Option<Digest>,
    pub referrer: Option<Descriptor>,
}

/// A stored manifest as served to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// One page of a sorted listing (tags or repositories).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub items: Vec<String>,
    /// True when more items follow the last one returned.
    pub more: bool,
}

/// A blob node as the cluster map records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobNodeInfo {
    pub id: BlobNodeId,
    /// gRPC address, `host:port`.
    pub addr: String,
    pub zone: String,
    pub weight: u32,
}
