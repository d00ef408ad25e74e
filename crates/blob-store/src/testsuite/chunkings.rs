//! The suite's property test: any chunking of any data commits to the data's digest.

use bytes::Bytes;
use cluster_api::ByteStream;
use futures::stream;
use oci_model::{Algorithm, Digest};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::BlobStore;

/// Random data in random chunkings (pieces grouped into random appends) always commits to its
/// own digest and reads back whole.
pub fn random_chunkings_commit_to_their_digest<F: StoreFactory>(factory: &F) {
    let runtime = test_runtime();
    let store = runtime.block_on(factory.open());
    let config = Config {
        cases: 48,
        // This function runs from other crates' tests; it must not write regression files.
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = (
        vec(any::<u8>(), 0..40_000),
        vec(0usize..40_000, 0..12),
        vec(any::<bool>(), 1..12),
        any::<bool>(),
    );
    let outcome =
        TestRunner::new(config).run(&strategy, |(data, cuts, new_append_at, use_sha512)| {
            runtime.block_on(commit_in_pieces(
                &store,
                &data,
                &cuts,
                &new_append_at,
                use_sha512,
            ))
        });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

async fn commit_in_pieces(
    store: &dyn BlobStore,
    data: &[u8],
    cuts: &[usize],
    new_append_at: &[bool],
    use_sha512: bool,
) -> Result<(), TestCaseError> {
    let mut bounds: Vec<usize> = cuts.iter().map(|cut| cut % (data.len() + 1)).collect();
    bounds.extend([0, data.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    let pieces: Vec<&[u8]> = bounds
        .windows(2)
        .map(|pair| &data[pair[0]..pair[1]])
        .collect();
    // Group consecutive pieces into appends; each piece is one chunk of its append's stream.
    let mut appends: Vec<Vec<Bytes>> = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        if appends.is_empty() || new_append_at[index % new_append_at.len()] {
            appends.push(Vec::new());
        }
        if let Some(current) = appends.last_mut() {
            current.push(Bytes::copy_from_slice(piece));
        }
    }
    let id = new_upload_id();
    store.start_upload(&id).await.expect("start");
    let mut offset = 0u64;
    for chunks in appends {
        let len: u64 = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        let chunks: ByteStream = Box::pin(stream::iter(chunks.into_iter().map(Ok)));
        prop_assert_eq!(store.append(&id, offset, chunks).await, Ok(offset + len));
        offset += len;
    }
    let algorithm = if use_sha512 {
        Algorithm::Sha512
    } else {
        Algorithm::Sha256
    };
    let digest = Digest::of(algorithm, data);
    prop_assert_eq!(store.commit(&id, &digest).await, Ok(data.len() as u64));
    prop_assert_eq!(read_all(store, &digest, 0, None).await, Ok(data.to_vec()));
    Ok(())
}
