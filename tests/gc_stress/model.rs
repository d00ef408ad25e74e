//! What the workers know: blobs, the manifests the registry acknowledged, each repository's
//! exact contents, and the operation counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use oci_model::Digest;
use rand::rngs::StdRng;
use rand::RngCore;

use crate::{OCI_INDEX, OCI_MANIFEST};

/// Bytes under their digest.
#[derive(Clone)]
pub struct Blob {
    pub digest: Digest,
    pub data: Arc<Vec<u8>>,
}

impl Blob {
    pub fn new(data: Vec<u8>) -> Blob {
        let digest = Digest::sha256_of(&data);
        let data = Arc::new(data);
        Blob { digest, data }
    }

    pub fn random(rng: &mut StdRng, len: usize) -> Blob {
        let mut data = vec![0; len];
        rng.fill_bytes(&mut data);
        Blob::new(data)
    }
}

/// A manifest the registry acknowledged, as it was pushed.
pub struct Stored {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
    /// Config then layers (images only).
    pub blobs: Vec<Blob>,
    /// Child manifests (indexes only).
    pub children: Vec<Digest>,
}

impl Stored {
    pub fn image(bytes: Vec<u8>, blobs: Vec<Blob>) -> Stored {
        let (media_type, children) = (OCI_MANIFEST, Vec::new());
        Stored {
            media_type,
            bytes,
            blobs,
            children,
        }
    }

    pub fn index(bytes: Vec<u8>, children: Vec<Digest>) -> Stored {
        let (media_type, blobs) = (OCI_INDEX, Vec::new());
        Stored {
            media_type,
            bytes,
            blobs,
            children,
        }
    }
}

/// One worker's exact view of its repository: the manifests in it and where each tag points.
#[derive(Default)]
pub struct RepoModel {
    pub manifests: BTreeMap<Digest, Stored>,
    pub tags: BTreeMap<String, Digest>,
}

impl RepoModel {
    pub fn listed_by_index(&self, digest: &Digest) -> bool {
        let mut manifests = self.manifests.values();
        manifests.any(|stored| stored.children.contains(digest))
    }

    pub fn uses_blob(&self, digest: &Digest) -> bool {
        let mut blobs = self.manifests.values().flat_map(|stored| &stored.blobs);
        blobs.any(|blob| blob.digest == *digest)
    }

    /// Removes `digest` and its tags, then what lived only through it (children no live index
    /// lists and no tag names), as meta does in the same entry. Returns what went.
    pub fn remove(&mut self, digest: &Digest) -> Vec<Digest> {
        let mut removed = Vec::new();
        let mut pending = vec![digest.clone()];
        while let Some(current) = pending.pop() {
            let Some(stored) = self.manifests.remove(&current) else {
                continue;
            };
            self.tags.retain(|_, target| *target != current);
            for child in stored.children {
                let tagged = self.tags.values().any(|target| *target == child);
                if !tagged && !self.listed_by_index(&child) {
                    pending.push(child);
                }
            }
            removed.push(current);
        }
        removed
    }
}

/// Operations and outcomes by name.
#[derive(Default)]
pub struct Tally(pub BTreeMap<&'static str, u64>);

impl Tally {
    pub fn add(&mut self, what: &'static str, count: u64) {
        *self.0.entry(what).or_default() += count;
    }

    pub fn count(&mut self, what: &'static str) {
        self.add(what, 1);
    }

    pub fn get(&self, what: &str) -> u64 {
        self.0.get(what).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Tally) {
        for (what, count) in &other.0 {
            self.add(what, *count);
        }
    }
}
