//! Generated blob content: unique per (run, blob), streamed from one shared random pattern.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use oci_model::{Algorithm, Digest, Digester};
use rand::RngCore;

/// Bytes of pattern shared by every blob of a run.
const PATTERN_LEN: usize = 16 << 20;
/// Largest body frame handed to the HTTP client.
pub const FRAME_LEN: usize = 1 << 20;
/// The unique header: run id (8 bytes), blob index (8), and 8 bytes of `-wharf-\n`.
const HEADER_LEN: u64 = 24;

/// Identifies one run, so blobs, tags and repositories never collide with an earlier run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(u64);

impl RunId {
    pub fn random() -> RunId {
        RunId(rand::random())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The content of a run's blobs of one size.
#[derive(Clone)]
pub struct BlobSet {
    run_id: RunId,
    size: u64,
    pattern: Bytes,
}

impl BlobSet {
    pub fn new(run_id: RunId, size: u64) -> BlobSet {
        let len = (size.saturating_sub(HEADER_LEN) as usize).clamp(1, PATTERN_LEN);
        let mut pattern = vec![0u8; len];
        rand::thread_rng().fill_bytes(&mut pattern);
        BlobSet {
            run_id,
            size,
            pattern: Bytes::from(pattern),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes `range` of blob `index`, as frames of at most [`FRAME_LEN`] sharing the pattern.
    pub fn frames(&self, index: u64, range: Range<u64>) -> Frames {
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(&self.run_id.0.to_be_bytes());
        header.extend_from_slice(&index.to_be_bytes());
        header.extend_from_slice(b"-wharf-\n");
        Frames {
            header: Bytes::from(header),
            pattern: self.pattern.clone(),
            position: range.start,
            end: range.end.min(self.size),
        }
    }

    /// The SHA-256 digest of blob `index` (hashes the whole blob; set-up only).
    pub fn digest(&self, index: u64) -> Digest {
        let mut digester = Digester::new(Algorithm::Sha256);
        for frame in self.frames(index, 0..self.size) {
            digester.update(&frame);
        }
        digester.finish()
    }
}

/// An iterator over the frames of part of a blob.
pub struct Frames {
    header: Bytes,
    pattern: Bytes,
    position: u64,
    end: u64,
}

impl Iterator for Frames {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.position >= self.end {
            return None;
        }
        let frame = if self.position < HEADER_LEN {
            let stop = self.end.min(HEADER_LEN);
            self.header.slice(self.position as usize..stop as usize)
        } else {
            let offset = ((self.position - HEADER_LEN) % self.pattern.len() as u64) as usize;
            let left_in_pattern = self.pattern.len() - offset;
            let len = (self.end - self.position)
                .min(left_in_pattern as u64)
                .min(FRAME_LEN as u64) as usize;
            self.pattern.slice(offset..offset + len)
        };
        self.position += frame.len() as u64;
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(set: &BlobSet, index: u64, range: Range<u64>) -> Vec<u8> {
        set.frames(index, range).flat_map(|f| f.to_vec()).collect()
    }

    #[test]
    fn ranges_concatenate_to_the_whole_blob() {
        let set = BlobSet::new(RunId(7), 3 * 1024 + 5);
        let whole = collect(&set, 1, 0..set.size());
        assert_eq!(whole.len() as u64, set.size());
        let mut pieces = Vec::new();
        for start in (0..set.size()).step_by(1000) {
            pieces.extend(collect(&set, 1, start..(start + 1000).min(set.size())));
        }
        assert_eq!(pieces, whole);
        assert_eq!(Digest::sha256_of(&whole), set.digest(1));
    }

    #[test]
    fn blobs_differ_by_index_and_run() {
        let set = BlobSet::new(RunId(7), 100);
        assert_ne!(set.digest(1), set.digest(2));
        let other_run = BlobSet {
            run_id: RunId(8),
            ..set.clone()
        };
        assert_ne!(set.digest(1), other_run.digest(1));
    }

    #[test]
    fn tiny_blobs_are_cut_to_size() {
        let set = BlobSet::new(RunId(1), 10);
        assert_eq!(collect(&set, 0, 0..10).len(), 10);
        let big = BlobSet::new(RunId(1), (PATTERN_LEN as u64) * 2 + 100);
        assert!(big.frames(0, 0..big.size()).all(|f| f.len() <= FRAME_LEN));
        assert_eq!(
            big.frames(0, 0..big.size())
                .map(|f| f.len() as u64)
                .sum::<u64>(),
            big.size()
        );
    }
}
