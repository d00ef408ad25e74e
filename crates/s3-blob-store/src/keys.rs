//! Object keys under the store's prefix (the layout is drawn in the crate documentation), and
//! the parsing of listed keys back into digests and uploads. Nothing found in a listing that
//! this store would not have written becomes a blob, an upload or a key to delete.

use cluster_api::{BlobError, UploadId};
use object_store::path::Path;
use oci_model::Digest;

/// Marks an upload as started; its last change time is the upload's until a segment lands.
const UPLOAD_MARKER: &str = "open";

/// Digits of a segment's offset in its key: zero-padded so keys list in offset order.
const OFFSET_DIGITS: usize = 20;

#[derive(Clone, Debug)]
pub(crate) struct Keys {
    root: Path,
}

/// One object of an upload, as a listing shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UploadObject {
    Marker,
    /// The bytes appended at this offset by one append.
    Segment(u64),
}

impl Keys {
    pub fn new(root: Path) -> Keys {
        Keys { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn owner(&self) -> Path {
        self.root.child("owner")
    }

    pub fn blobs(&self) -> Path {
        self.root.child("blobs")
    }

    /// `blobs/<algorithm>/<first two hex>/<hex>`: `Digest` is validated on construction, so its
    /// parts are safe in a key.
    pub fn blob(&self, digest: &Digest) -> Path {
        let hex = digest.hex();
        self.blobs()
            .child(digest.algorithm().as_str())
            .child(&hex[..2])
            .child(hex)
    }

    pub fn trash(&self) -> Path {
        self.root.child("trash")
    }

    /// `trash/<algorithm>-<hex>`: a set-aside copy.
    pub fn aside(&self, digest: &Digest) -> Path {
        self.trash()
            .child(format!("{}-{}", digest.algorithm().as_str(), digest.hex()).as_str())
    }

    pub fn uploads(&self) -> Path {
        self.root.child("uploads")
    }

    /// `uploads/<id>`. The id is validated again here, whatever the caller did, because
    /// `UploadId`'s field is public and a key must never be built from unvalidated text.
    pub fn upload(&self, id: &UploadId) -> Result<Path, BlobError> {
        let valid = UploadId::parse(id.as_str()).ok_or_else(|| {
            BlobError::Invalid(format!("{:?} is not a valid upload id", id.as_str()))
        })?;
        Ok(self.uploads().child(valid.as_str()))
    }

    pub fn upload_marker(&self, id: &UploadId) -> Result<Path, BlobError> {
        Ok(self.upload(id)?.child(UPLOAD_MARKER))
    }

    pub fn segment(&self, id: &UploadId, offset: u64) -> Result<Path, BlobError> {
        Ok(self
            .upload(id)?
            .child(format!("{offset:0width$}", width = OFFSET_DIGITS).as_str()))
    }

    /// The key's parts below `base`, `None` when it is not under `base`.
    fn below(&self, base: &Path, location: &Path) -> Option<Vec<String>> {
        let parts = location.prefix_match(base)?;
        Some(parts.map(|part| part.as_ref().to_owned()).collect())
    }

    /// The digest of a listed key under `blobs/`, `None` for anything this store never writes.
    pub fn parse_blob(&self, location: &Path) -> Option<Digest> {
        let parts = self.below(&self.blobs(), location)?;
        let [algorithm, fan_out, hex] = parts.as_slice() else {
            return None;
        };
        let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
        (digest.hex().get(..2) == Some(fan_out.as_str())).then_some(digest)
    }

    /// The digest of a listed key under `trash/`.
    pub fn parse_aside(&self, location: &Path) -> Option<Digest> {
        let parts = self.below(&self.trash(), location)?;
        let [name] = parts.as_slice() else {
            return None;
        };
        let (algorithm, hex) = name.split_once('-')?;
        let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
        // Only the exact name `aside` gives, so no two keys map to one digest.
        (self.aside(&digest) == *location).then_some(digest)
    }

    /// The upload and object of a listed key under `uploads/`.
    pub fn parse_upload(&self, location: &Path) -> Option<(UploadId, UploadObject)> {
        let parts = self.below(&self.uploads(), location)?;
        let [id, name] = parts.as_slice() else {
            return None;
        };
        let id = UploadId::parse(id)?;
        if name == UPLOAD_MARKER {
            return Some((id, UploadObject::Marker));
        }
        if name.len() != OFFSET_DIGITS || !name.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        Some((id, UploadObject::Segment(name.parse().ok()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(Path::from("wharf/node-1"))
    }

    #[test]
    fn keys_round_trip() {
        let keys = keys();
        let digest = Digest::sha256_of(b"x");
        assert_eq!(
            keys.blob(&digest).as_ref(),
            format!(
                "wharf/node-1/blobs/sha256/{}/{}",
                &digest.hex()[..2],
                digest.hex()
            )
        );
        assert_eq!(keys.parse_blob(&keys.blob(&digest)), Some(digest.clone()));
        assert_eq!(keys.parse_aside(&keys.aside(&digest)), Some(digest));
        let id = UploadId(format!("{:032x}", 7));
        assert_eq!(
            keys.parse_upload(&keys.segment(&id, 42).expect("segment")),
            Some((id.clone(), UploadObject::Segment(42)))
        );
        assert_eq!(
            keys.parse_upload(&keys.upload_marker(&id).expect("marker")),
            Some((id, UploadObject::Marker))
        );
    }

    #[test]
    fn foreign_keys_are_not_parsed() {
        let keys = keys();
        let hex = Digest::sha256_of(b"x").hex().to_owned();
        for key in [
            format!("wharf/node-1/blobs/sha256/zz/{hex}"),
            format!("wharf/node-1/blobs/sha256/{hex}"),
            format!("wharf/node-1/blobs/md5/{}/{hex}", &hex[..2]),
            format!("wharf/node-2/blobs/sha256/{}/{hex}", &hex[..2]),
            format!(
                "wharf/node-1/blobs/sha256/{}/{}",
                &hex[..2],
                hex.to_uppercase()
            ),
        ] {
            assert_eq!(keys.parse_blob(&Path::from(key.as_str())), None, "{key}");
        }
        for key in [
            format!("wharf/node-1/trash/sha256:{hex}"),
            format!("wharf/node-1/trash/sha256-{hex}.tmp"),
            "wharf/node-1/trash/junk".to_owned(),
        ] {
            assert_eq!(keys.parse_aside(&Path::from(key.as_str())), None, "{key}");
        }
        let id = format!("{:032x}", 0xabc7);
        for key in [
            format!("wharf/node-1/uploads/{id}/12"),
            format!("wharf/node-1/uploads/{id}/-0000000000000000001"),
            format!("wharf/node-1/uploads/{id}/0000000000000000001x"),
            format!("wharf/node-1/uploads/{}/open", id.to_uppercase()),
            format!("wharf/node-1/uploads/{id}"),
        ] {
            assert_eq!(keys.parse_upload(&Path::from(key.as_str())), None, "{key}");
        }
    }

    #[test]
    fn hostile_upload_ids_never_become_keys() {
        let keys = keys();
        for bogus in ["../blobs", "", "a/b", "ABCDEF0123456789ABCDEF0123456789"] {
            let id = UploadId(bogus.to_owned());
            assert!(matches!(keys.upload(&id), Err(BlobError::Invalid(_))));
        }
    }
}
