//! [`probe_vote`]: what one voter itself believes about leadership, for tests and diagnostics that
//! must not go through a leader (a partitioned node cannot linearize, and following redirects
//! would report the leader's view instead of the node's).
//!
//! The probe is a Raft `Vote` request carrying the lowest possible vote (term 0, from node 0,
//! which is never a voter) and no log. openraft rejects it without changing any state (by the
//! leader lease or by the log check) and answers with the node's current vote, whose term and
//! node are the leader it follows, or itself, once that vote is committed.

use std::time::Duration;

use openraft::error::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::Vote;
use tonic::transport::Endpoint;
use wharf_proto::pb::raft_client::RaftClient;

use crate::error::MetaNodeError;
use crate::service::{decode, encode};

/// One voter's own view of leadership, from its persisted vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteView {
    /// The term of the node's vote: the highest term it has seen.
    pub term: u64,
    /// The node its vote is for in `term` (itself while a candidate or the leader).
    pub voted_for: u64,
    /// Whether the vote is committed: granted by a quorum (the node leads `term`), or accepted
    /// from such a leader (it follows it).
    pub committed: bool,
    /// The index of the last entry in the node's log, committed or not.
    pub last_log_index: Option<u64>,
}

impl VoteView {
    /// The leader of `term` as this node knows it: the node its committed vote is for.
    pub fn leader(&self) -> Option<u64> {
        self.committed.then_some(self.voted_for)
    }

    /// Whether node `id` (the node that answered this probe) considers itself leader of `term`.
    pub fn is_leader(&self, id: u64) -> bool {
        self.leader() == Some(id)
    }
}

/// Asks the voter whose Raft service is at `addr` (`host:port`) for its vote; see the module doc.
pub async fn probe_vote(addr: &str, timeout: Duration) -> Result<VoteView, MetaNodeError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(MetaNodeError::raft)?;
    let channel = endpoint
        .connect_timeout(timeout)
        .connect()
        .await
        .map_err(MetaNodeError::raft)?;
    let probe = VoteRequest::<u64> {
        vote: Vote::new(0, 0),
        last_log_id: None,
    };
    let mut request = tonic::Request::new(encode(&probe).map_err(MetaNodeError::raft)?);
    request.set_timeout(timeout);
    let response = RaftClient::new(channel)
        .vote(request)
        .await
        .map_err(MetaNodeError::raft)?;
    let answer: Result<VoteResponse<u64>, RaftError<u64>> =
        decode(response.get_ref()).map_err(MetaNodeError::raft)?;
    let answer = answer.map_err(MetaNodeError::raft)?;
    Ok(VoteView {
        term: answer.vote.leader_id.term,
        voted_for: answer.vote.leader_id.node_id,
        committed: answer.vote.committed,
        last_log_index: answer.last_log_id.map(|log_id| log_id.index),
    })
}
