//! The blocking file work behind garbage collection: a blob about to be deleted is first set
//! aside under `trash/` (out of sight of readers and listings, but still on disk), and only
//! deleted for good once the metadata service has confirmed it may go; otherwise it is put back.
//! Every move is a `rename` followed by fsyncs of both directories, so a crash leaves the blob
//! whole under one of its two names, and [`restore_all`] puts back whatever a crash left aside.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cluster_api::BlobError;
use oci_model::Digest;

use crate::fs::blob_path;
use crate::staging::{io_error, sync_dir, DurableDirs};

/// Where `digest` is kept while set aside: `trash/<algorithm>-<hex>`.
pub(crate) fn aside_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join("trash").join(aside_name(digest))
}

fn aside_name(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().as_str(), digest.hex())
}

/// The digest a `trash/` entry is named after, `None` for any name this store did not write.
fn parse_aside_name(name: &str) -> Option<Digest> {
    let (algorithm, hex) = name.split_once('-')?;
    let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
    // Only the canonical spelling: a path is then built from the digest, never from the name.
    (aside_name(&digest) == name).then_some(digest)
}

/// Moves the blob at `blob` to `aside` and makes both directory entries durable. Returns the
/// blob's size, or `None` when there was no blob.
pub(crate) fn set_aside(blob: &Path, aside: &Path) -> Result<Option<u64>, BlobError> {
    let size = match fs::metadata(blob) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("stat blob", blob, error)),
    };
    match fs::rename(blob, aside) {
        Ok(()) => {}
        // Deleted between the stat and the rename.
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("set aside blob", blob, error)),
    }
    // The new name first: a crash between the two fsyncs may leave both names, never neither.
    sync_dir(parent_of(aside)?)?;
    sync_dir(parent_of(blob)?)?;
    Ok(Some(size))
}

/// Moves the set-aside copy at `aside` back to `blob`, replacing any copy stored there since
/// (the same bytes: the name is their digest), and makes both entries durable. True when there
/// was a copy to put back.
pub(crate) fn put_back(aside: &Path, blob: &Path, dirs: &DurableDirs) -> Result<bool, BlobError> {
    match fs::metadata(aside) {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(io_error("stat set-aside blob", aside, error)),
    }
    let fan_out = parent_of(blob)?;
    dirs.ensure(fan_out)?;
    match fs::rename(aside, blob) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(io_error("put back blob", blob, error)),
    }
    sync_dir(fan_out)?;
    sync_dir(parent_of(aside)?)?;
    Ok(true)
}

/// Unlinks the set-aside copy at `aside` for good, durably; nothing to do when there is none.
pub(crate) fn purge(aside: &Path) -> Result<(), BlobError> {
    match fs::remove_file(aside) {
        Ok(()) => sync_dir(parent_of(aside)?),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("purge set-aside blob", aside, error)),
    }
}

/// Puts back every blob found set aside under `root`: at start-up nobody is waiting for a
/// decision about them any more, and a copy kept by mistake is only an orphan, while one deleted
/// by mistake would be a lost replica. Names this store did not write are left alone.
pub(crate) fn restore_all(root: &Path, dirs: &DurableDirs) -> Result<usize, BlobError> {
    let trash_dir = root.join("trash");
    let entries = fs::read_dir(&trash_dir).map_err(|error| io_error("list", &trash_dir, error))?;
    let mut restored = 0;
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", &trash_dir, error))?;
        let Some(digest) = entry.file_name().to_str().and_then(parse_aside_name) else {
            tracing::warn!(path = %entry.path().display(), "skipping a foreign file in trash/");
            continue;
        };
        let aside = aside_path(root, &digest);
        if put_back(&aside, &blob_path(root, &digest), dirs)? {
            restored += 1;
        }
    }
    Ok(restored)
}

fn parent_of(path: &Path) -> Result<&Path, BlobError> {
    path.parent()
        .ok_or_else(|| BlobError::Io(format!("{} has no parent directory", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aside_names_round_trip_and_foreign_ones_do_not_parse() {
        let digest = Digest::sha256_of(b"x");
        assert_eq!(parse_aside_name(&aside_name(&digest)), Some(digest));
        let sha512 = Digest::of(oci_model::Algorithm::Sha512, b"x");
        assert_eq!(parse_aside_name(&aside_name(&sha512)), Some(sha512));
        let hex = Digest::sha256_of(b"y").hex().to_owned();
        for foreign in [
            String::new(),
            "sha256".to_owned(),
            format!("sha256:{hex}"),
            format!("sha256-{}", hex.to_uppercase()),
            format!("sha256-{hex}-1"),
            format!("md5-{hex}"),
            format!("sha256-../{}", &hex[3..]),
            format!("sha512-{hex}"),
        ] {
            assert_eq!(parse_aside_name(&foreign), None, "{foreign:?}");
        }
    }
}
