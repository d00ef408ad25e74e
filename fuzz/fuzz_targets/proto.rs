//! The proto edge: bytes decoded as the protobuf messages the meta and blob gRPC services
//! receive (and their clients receive back), then converted into domain types by
//! `wharf_proto::convert*` exactly as `MetaGrpc`, `BlobGrpc` and `cluster-client` do. The first
//! byte picks the message; the rest is its encoding.
//!
//! Properties: never panics; a decoded message encodes and decodes to itself; a value that
//! converts, converted back to proto and again, is the same domain value (the round trip every
//! conversion pair promises); the names, digests and ids a request carries are validated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_model::{Reference, Tag};
use prost::Message;
use wharf_proto::convert::{self as c, DecodeError};
use wharf_proto::convert_auth as a;
use wharf_proto::convert_lifecycle as l;
use wharf_proto::pb;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 24 {
        0 => round_trip::<pb::PutManifestRequest, _>(bytes, c::put_manifest_from_pb, |m| {
            c::put_manifest_to_pb(m)
        }),
        1 => round_trip::<pb::BlobInfo, _>(bytes, c::blob_info_from_pb, c::blob_info_to_pb),
        2 => round_trip::<pb::Descriptor, _>(bytes, c::descriptor_from_pb, c::descriptor_to_pb),
        3 => round_trip::<pb::UploadSession, _>(
            bytes,
            c::upload_session_from_pb,
            c::upload_session_to_pb,
        ),
        4 => round_trip::<pb::StoredManifest, _>(
            bytes,
            c::stored_manifest_from_pb,
            c::stored_manifest_to_pb,
        ),
        5 => round_trip::<pb::ClusterMap, _>(bytes, c::cluster_map_from_pb, c::cluster_map_to_pb),
        6 => round_trip::<pb::ClusterStatusResponse, _>(
            bytes,
            c::cluster_status_from_pb,
            c::cluster_status_to_pb,
        ),
        7 => round_trip::<pb::AuthChange, _>(bytes, a::auth_change_from_pb, a::auth_change_to_pb),
        8 => round_trip::<pb::AuthState, _>(bytes, a::auth_state_from_pb, a::auth_state_to_pb),
        9 => round_trip::<pb::RetentionAction, _>(bytes, l::action_from_pb, l::action_to_pb),
        10 => round_trip::<pb::NodeBlobGenerations, _>(
            bytes,
            |message| Ok((message.node, l::node_blobs_from_pb(&message)?)),
            |(node, blobs)| l::node_blobs_to_pb(*node, blobs),
        ),
        11 => round_trip::<pb::BlobNodeInfo, _>(
            bytes,
            |message| Ok(c::blob_node_from_pb(message)),
            c::blob_node_to_pb,
        ),
        12 => round_trip::<pb::PlacementRule, _>(
            bytes,
            |message| Ok(c::placement_rule_from_pb(message)),
            c::placement_rule_to_pb,
        ),
        13 => round_trip::<pb::RetentionRule, _>(
            bytes,
            |message| Ok(l::rule_from_pb(message)),
            l::rule_to_pb,
        ),
        14 => round_trip::<pb::Page, _>(
            bytes,
            |message| Ok(c::page_from_pb(message)),
            |page| c::page_to_pb(page.clone()),
        ),
        15 => round_trip::<pb::SetBlobNodeStateRequest, _>(
            bytes,
            |message| Ok((message.id, c::node_state_from_pb("state", message.state)?)),
            |(id, state)| pb::SetBlobNodeStateRequest {
                id: *id,
                state: c::node_state_to_pb(*state).into(),
            },
        ),
        16 => request::<pb::CommitBlobRequest, _>(bytes, |message| {
            let repo = c::repo("repo", &message.repo)?;
            let blob = message.blob.map(c::blob_info_from_pb).transpose()?;
            let upload = message
                .upload_id
                .map(|id| c::upload_id("upload_id", &id))
                .transpose()?;
            Ok((repo, blob, upload))
        }),
        17 => request::<pb::GetManifestRequest, _>(bytes, |message| {
            let repo = c::repo("repo", &message.repo)?;
            let reference = Reference::parse(&message.reference).map_err(|error| DecodeError {
                field: "reference",
                reason: error.to_string(),
            })?;
            assert_eq!(reference.to_string(), message.reference);
            Ok((repo, reference))
        }),
        18 => request::<pb::DeleteTagRequest, _>(bytes, |message| {
            let repo = c::repo("repo", &message.repo)?;
            let tag = Tag::parse(&message.tag).map_err(|error| DecodeError {
                field: "tag",
                reason: error.to_string(),
            })?;
            Ok((repo, tag))
        }),
        19 => request::<pb::AppendChunk, _>(bytes, |message| {
            let id = c::upload_id("id", &message.id)?;
            let digest = c::digest("commit_digest", &message.commit_digest)?;
            let repo = c::repo("commit_repo", &message.commit_repo)?;
            Ok((id, digest, repo))
        }),
        20 => request::<pb::MountBlobRequest, _>(bytes, |message| {
            let repo = c::repo("repo", &message.repo)?;
            let digest = c::digest("digest", &message.digest)?;
            let from = c::repo("from", &message.from)?;
            Ok((repo, digest, from))
        }),
        21 => request::<pb::CommitUploadRequest, _>(bytes, |message| {
            let id = c::upload_id("id", &message.id)?;
            let digest = c::digest("digest", &message.digest)?;
            let repo = c::repo("repo", &message.repo)?;
            Ok((id, digest, repo))
        }),
        22 => request::<pb::DiscardOrphansRequest, _>(bytes, |message| {
            message
                .blobs
                .iter()
                .map(|blob| Ok((c::digest("digest", &blob.digest)?, blob.size)))
                .collect::<Result<Vec<_>, DecodeError>>()
        }),
        _ => request::<pb::OpenUploadsRequest, _>(bytes, |message| {
            message
                .ids
                .iter()
                .map(|id| c::upload_id("ids", id))
                .collect::<Result<Vec<_>, DecodeError>>()
        }),
    }
});

/// Decodes `bytes` as `M` and checks the wire round trip.
fn decode<M: Message + Default + PartialEq>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice()).expect("an encoded message decodes");
    assert!(again == message, "wire round trip");
    Some(message)
}

/// A message with a conversion pair: what converts converts back to the same value.
fn round_trip<M, D>(
    bytes: &[u8],
    from_pb: impl Fn(M) -> Result<D, DecodeError>,
    to_pb: impl Fn(&D) -> M,
) where
    M: Message + Default + PartialEq,
    D: PartialEq + std::fmt::Debug,
{
    let Some(message) = decode::<M>(bytes) else {
        return;
    };
    let Ok(value) = from_pb(message) else {
        return;
    };
    let back = from_pb(to_pb(&value)).expect("an encoded domain value decodes");
    assert_eq!(back, value, "conversion round trip");
}

/// A request the services only decode: conversion must not panic, and errors name a field.
fn request<M, T>(bytes: &[u8], convert: impl Fn(M) -> Result<T, DecodeError>)
where
    M: Message + Default + PartialEq,
{
    let Some(message) = decode::<M>(bytes) else {
        return;
    };
    if let Err(error) = convert(message) {
        assert!(!error.field.is_empty());
    }
}
