//! [`MetaAdmin`]: cluster administration on a meta node (Raft membership, the cluster status and
//! the operator's cluster-map calls), and [`AdminGrpc`], the `wharf.v1.Admin` service over it.
//! Every call is answered by the leader; other nodes redirect with `Unavailable { leader }`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use cluster_api::{ClusterStatus, MetaApi, MetaError, MetaMember, MetaRole};
use meta_store::TypeConfig;
use openraft::{BasicNode, ChangeMembers, Raft};
use tonic::{Request, Response, Status};
use wharf_proto::convert;
use wharf_proto::pb::{self, admin_server::Admin, admin_server::AdminServer};
use wharf_proto::status::{invalid, meta_error_to_status};

use crate::api::{write_error, RaftMeta};

/// Cluster administration on one meta node.
#[derive(Clone)]
pub struct MetaAdmin {
    raft: Raft<TypeConfig>,
    api: Arc<RaftMeta>,
}

impl MetaAdmin {
    pub(crate) fn new(raft: Raft<TypeConfig>, api: Arc<RaftMeta>) -> MetaAdmin {
        MetaAdmin { raft, api }
    }

    /// Adds meta node `id` at `addr` as a learner and waits until it has caught up (by log
    /// replication, or by a snapshot when the log was purged); then, when `voter`, promotes it.
    /// Adding a node that is already a member is not an error.
    pub async fn add_meta_node(&self, id: u64, addr: &str, voter: bool) -> Result<(), MetaError> {
        if id == 0 || addr.is_empty() {
            return Err(MetaError::Invalid(
                "a meta node needs a non-zero id and an address".into(),
            ));
        }
        let node = BasicNode {
            addr: addr.to_owned(),
        };
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(write_error)?;
        if voter {
            let voters = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            self.raft
                .change_membership(voters, false)
                .await
                .map_err(write_error)?;
        }
        tracing::info!(node_id = id, addr, voter, "meta node added");
        Ok(())
    }

    /// Removes meta node `id`, voter or learner, from the membership. An unknown id is a no-op.
    /// The removed node is no longer replicated to; its operator should stop it.
    pub async fn remove_meta_node(&self, id: u64) -> Result<(), MetaError> {
        self.api.linearize_on_leader().await?;
        let (is_voter, is_member) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            let is_voter = membership.voter_ids().any(|voter| voter == id);
            (is_voter, membership.get_node(&id).is_some())
        };
        let change = match (is_voter, is_member) {
            (true, _) => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            (false, true) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
            (false, false) => return Ok(()),
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        tracing::info!(node_id = id, "meta node removed");
        Ok(())
    }

    /// The cluster as the leader sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, MetaError> {
        let read_at = self.api.linearize_on_leader().await?;
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let meta_members = membership
            .nodes()
            .map(|(id, node)| MetaMember {
                id: *id,
                addr: node.addr.clone(),
                role: if voters.contains(id) {
                    MetaRole::Voter
                } else {
                    MetaRole::Learner
                },
                matched_index: metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(id).copied().flatten())
                    .map(|log_id| log_id.index),
            })
            .collect();
        let leader_addr = metrics
            .current_leader
            .and_then(|leader| membership.get_node(&leader))
            .map(|node| node.addr.clone());
        let map = self.api.reader().cluster_map()?;
        let liveness = self.api.liveness().report(&map, Instant::now());
        Ok(ClusterStatus {
            leader_id: metrics.current_leader,
            leader_addr,
            term: metrics.current_term,
            commit_index: read_at.unwrap_or(0),
            last_applied: metrics.last_applied.map_or(0, |log_id| log_id.index),
            meta_members,
            map,
            liveness,
        })
    }

    /// `MetaApi` on this node, for the cluster-map calls the admin service forwards.
    pub fn api(&self) -> &Arc<RaftMeta> {
        &self.api
    }
}

/// Serves [`MetaAdmin`] as `wharf.v1.Admin`.
pub struct AdminGrpc {
    admin: MetaAdmin,
}

impl AdminGrpc {
    pub(crate) fn server(admin: MetaAdmin) -> AdminServer<AdminGrpc> {
        AdminServer::new(AdminGrpc { admin })
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn done(result: Result<(), MetaError>) -> Reply<pb::Empty> {
    result
        .map(|()| Response::new(pb::Empty {}))
        .map_err(|error| meta_error_to_status(&error))
}

#[tonic::async_trait]
impl Admin for AdminGrpc {
    async fn add_meta_node(&self, request: Request<pb::AddMetaNodeRequest>) -> Reply<pb::Empty> {
        let request = request.into_inner();
        done(
            self.admin
                .add_meta_node(request.id, &request.addr, request.voter)
                .await,
        )
    }

    async fn remove_meta_node(&self, request: Request<pb::MetaNodeRef>) -> Reply<pb::Empty> {
        done(self.admin.remove_meta_node(request.into_inner().id).await)
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::Empty>,
    ) -> Reply<pb::ClusterStatusResponse> {
        match self.admin.cluster_status().await {
            Ok(status) => Ok(Response::new(convert::cluster_status_to_pb(&status))),
            Err(error) => Err(meta_error_to_status(&error)),
        }
    }

    async fn set_blob_node_state(
        &self,
        request: Request<pb::SetBlobNodeStateRequest>,
    ) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let state = convert::node_state_from_pb("state", request.state).map_err(invalid)?;
        done(
            self.admin
                .api()
                .set_blob_node_state(request.id, state)
                .await,
        )
    }

    async fn remove_blob_node(&self, request: Request<pb::BlobNodeRef>) -> Reply<pb::Empty> {
        done(
            self.admin
                .api()
                .remove_blob_node(request.into_inner().id)
                .await,
        )
    }

    async fn set_replication_policy(
        &self,
        request: Request<pb::ReplicationPolicy>,
    ) -> Reply<pb::Empty> {
        let policy = convert::policy_from_pb(request.into_inner());
        done(self.admin.api().set_replication_policy(policy).await)
    }
}
