//! The blocking file work behind replicas and blob listings: a replica is written to its own
//! staging file under `replicas/`, hashed as it arrives, and published exactly like a commit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cluster_api::BlobError;
use oci_model::{Algorithm, Digest, Digester};

use crate::staging::{io_error, Writeback};

/// A replica staging file being written, with the hash of what it holds so far.
pub(crate) struct ReplicaWriter {
    file: File,
    pub path: PathBuf,
    digester: Digester,
    pub len: u64,
    writeback: Writeback,
}

impl ReplicaWriter {
    /// Creates the staging file at `path` (a fresh name: nothing else writes it).
    pub fn create(path: PathBuf, algorithm: Algorithm) -> Result<ReplicaWriter, BlobError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| io_error("create replica staging file", &path, error))?;
        Ok(ReplicaWriter {
            file,
            path,
            digester: Digester::new(algorithm),
            len: 0,
            writeback: Writeback::new(0),
        })
    }

    pub fn write_batch(&mut self, batch: &[Bytes]) -> Result<(), BlobError> {
        for chunk in batch {
            self.file
                .write_all(chunk)
                .map_err(|error| io_error("write replica staging file", &self.path, error))?;
            self.digester.update(chunk);
            self.len += chunk.len() as u64;
        }
        self.writeback.written(&self.file, self.len);
        Ok(())
    }

    /// Closes the file and returns its path and the digest of everything written.
    pub fn finish(self) -> (PathBuf, Digest) {
        (self.path, self.digester.finish())
    }
}

/// Removes a replica staging file that will not be published. Best effort: `clear_staging`
/// sweeps whatever is left at the next start.
pub(crate) fn discard(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "could not remove a replica staging file");
        }
    }
}

/// Empties `replicas/`: at start-up every file there is a replica whose writer died with the
/// previous process, never a blob anyone relies on.
pub(crate) fn clear_staging(dir: &Path) -> Result<(), BlobError> {
    let entries = fs::read_dir(dir).map_err(|error| io_error("list", dir, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", dir, error))?;
        discard(&entry.path());
    }
    Ok(())
}

/// Blobs under `blobs_dir` in digest order, strictly after `after`, at most `n`, with sizes.
/// Names that are not digests of their directory's algorithm are skipped.
pub(crate) fn list_blobs(
    blobs_dir: &Path,
    after: Option<&Digest>,
    n: usize,
) -> Result<Vec<(Digest, u64)>, BlobError> {
    let mut found = Vec::new();
    let mut algorithms = [Algorithm::Sha256, Algorithm::Sha512];
    // Digests order by algorithm first, then by hex.
    algorithms.sort();
    for algorithm in algorithms {
        if after.is_some_and(|after| after.algorithm() > algorithm) {
            continue;
        }
        // Fan-out directories before `after`'s own hold only digests before it.
        let first_fan_out = after
            .filter(|after| after.algorithm() == algorithm)
            .map(|after| after.hex()[..2].to_owned());
        let algorithm_dir = blobs_dir.join(algorithm.as_str());
        for fan_out in sorted_names(&algorithm_dir)? {
            if first_fan_out.as_ref().is_some_and(|first| fan_out < *first) {
                continue;
            }
            let fan_out_dir = algorithm_dir.join(&fan_out);
            for name in sorted_names(&fan_out_dir)? {
                let Ok(digest) = Digest::parse(&format!("{}:{name}", algorithm.as_str())) else {
                    continue;
                };
                if after.is_some_and(|after| digest <= *after) || !name.starts_with(&fan_out) {
                    continue;
                }
                if found.len() == n {
                    return Ok(found);
                }
                match fs::metadata(fan_out_dir.join(&name)) {
                    Ok(metadata) => found.push((digest, metadata.len())),
                    // Deleted while listing.
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(io_error("stat blob", &fan_out_dir.join(&name), error))
                    }
                }
            }
        }
    }
    Ok(found)
}

/// The entry names of `dir`, sorted; an absent directory has none.
fn sorted_names(dir: &Path) -> Result<Vec<String>, BlobError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error("list", dir, error)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| io_error("list", dir, error))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

impl crate::staging::BatchWriter for ReplicaWriter {
    fn write_batch(&mut self, batch: &[Bytes]) -> Result<(), BlobError> {
        ReplicaWriter::write_batch(self, batch)
    }
}
