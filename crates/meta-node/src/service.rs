//! The Raft gRPC service: decodes openraft's RPCs from their JSON payloads, hands them to the
//! local `Raft`, and answers with the JSON of the whole `Result` so the caller sees openraft's own
//! errors (a higher vote, a snapshot mismatch) as remote errors rather than transport failures.
//!
//! A request from a sender blocked in [`NetworkFaults`] is dropped with `unavailable`, which the
//! sender's client reports as `Unreachable`. Every Raft request names its sender in its vote: the
//! leader's for AppendEntries and InstallSnapshot, the candidate's for Vote; a ReadIndex request
//! names it in `from`, as does each message of a `ReadIndexStream`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use meta_store::TypeConfig;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{Raft, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};
use wharf_proto::pb::raft_server::{Raft as RaftRpc, RaftServer};
use wharf_proto::pb::{RaftPayload, ReadIndexRequest, ReadIndexResponse};
use wharf_proto::status::meta_error_to_status;

use crate::api::RaftMeta;
use crate::faults::NetworkFaults;

/// Largest Raft message either side sends or accepts. A batch of entries larger than this is
/// split by the sender (`PayloadTooLarge`); a single entry holds at most a 4 MiB manifest.
pub const RAFT_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;

/// How long the leader keeps one `ReadIndexStream` before ending it (the follower opens another
/// for its next check): a server stopping gracefully waits for its open streams.
const READ_INDEX_STREAM_LIFETIME: Duration = Duration::from_secs(1);

type ReadIndexReplies =
    Pin<Box<dyn Stream<Item = Result<ReadIndexResponse, Status>> + Send + 'static>>;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, serde_json::Error> {
    Ok(RaftPayload {
        data: Bytes::from(serde_json::to_vec(value)?),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, serde_json::Error> {
    serde_json::from_slice(&payload.data)
}

/// Serves this node's end of the Raft protocol.
pub struct RaftGrpc {
    raft: Raft<TypeConfig>,
    api: Arc<RaftMeta>,
    faults: Arc<NetworkFaults>,
    /// No vote is granted before this instant: a voter promises a leader to refuse votes for
    /// `election_timeout_max` after each heartbeat, and openraft forgets that promise when the
    /// process restarts, so a restarted voter keeps it by refusing every vote for that long.
    votes_from: Instant,
}

impl RaftGrpc {
    pub(crate) fn server(
        raft: Raft<TypeConfig>,
        api: Arc<RaftMeta>,
        faults: Arc<NetworkFaults>,
        votes_from: Instant,
    ) -> RaftServer<RaftGrpc> {
        RaftServer::new(RaftGrpc {
            raft,
            api,
            faults,
            votes_from,
        })
        .max_decoding_message_size(RAFT_MESSAGE_LIMIT)
        .max_encoding_message_size(RAFT_MESSAGE_LIMIT)
    }

    /// Drops the request when its sender (the node its `vote` is for) is blocked.
    fn admit(&self, vote: &Vote<u64>) -> Result<(), Status> {
        self.admit_node(vote.leader_id.node_id)
    }

    fn admit_node(&self, sender: u64) -> Result<(), Status> {
        self.faults
            .check(sender)
            .map_err(|blocked| Status::unavailable(blocked.to_string()))
    }
}

fn request_of<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    decode(request.get_ref())
        .map_err(|error| Status::invalid_argument(format!("undecodable raft rpc: {error}")))
}

fn response_of<T: Serialize>(result: &T) -> Result<Response<RaftPayload>, Status> {
    encode(result)
        .map(Response::new)
        .map_err(|error| Status::internal(format!("cannot encode raft response: {error}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftGrpc {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let request: AppendEntriesRequest<TypeConfig> = request_of(request)?;
        self.admit(&request.vote)?;
        let result = self.raft.append_entries(request).await;
        response_of(&result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let request: InstallSnapshotRequest<TypeConfig> = request_of(request)?;
        self.admit(&request.vote)?;
        let result = self.raft.install_snapshot(request).await;
        response_of(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let request: VoteRequest<u64> = request_of(request)?;
        self.admit(&request.vote)?;
        if Instant::now() < self.votes_from {
            return Err(Status::unavailable(
                "this voter has just started and grants no vote for one election timeout",
            ));
        }
        let result = self.raft.vote(request).await;
        response_of(&result)
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.admit_node(request.get_ref().from)?;
        match self.api.leader_read_index().await {
            Ok(index) => Ok(Response::new(ReadIndexResponse { index })),
            Err(error) => Err(meta_error_to_status(&error)),
        }
    }

    type ReadIndexStreamStream = ReadIndexReplies;

    /// `ReadIndex` for each message, answered in order; the stream ends at the first refusal
    /// and, between messages, once [`READ_INDEX_STREAM_LIFETIME`] has passed.
    async fn read_index_stream(
        &self,
        request: Request<Streaming<ReadIndexRequest>>,
    ) -> Result<Response<ReadIndexReplies>, Status> {
        let ends = tokio::time::Instant::now() + READ_INDEX_STREAM_LIFETIME;
        let (api, faults) = (self.api.clone(), self.faults.clone());
        let replies = futures::stream::unfold(Some(request.into_inner()), move |inbound| {
            let (api, faults) = (api.clone(), faults.clone());
            async move {
                let mut inbound = inbound?;
                let request = match tokio::time::timeout_at(ends, inbound.message()).await {
                    Ok(Ok(Some(request))) => request,
                    // Lifetime over, the follower closed its side, or its stream broke.
                    Ok(Ok(None) | Err(_)) | Err(_) => return None,
                };
                let reply = match faults.check(request.from) {
                    Err(blocked) => Err(Status::unavailable(blocked.to_string())),
                    Ok(()) => api
                        .leader_read_index()
                        .await
                        .map(|index| ReadIndexResponse { index })
                        .map_err(|error| meta_error_to_status(&error)),
                };
                let next = reply.is_ok().then_some(inbound);
                Some((reply, next))
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}
