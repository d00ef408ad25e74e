//! [`AdminClient`]: the `wharf.v1.Admin` service of the meta nodes, following the Raft leader
//! like [`crate::MetaClient`]. This is what an operator's CLI calls.

use cluster_api::{BlobNodeId, ClusterStatus, MetaError, NodeState, ReplicationPolicy};
use tonic::transport::Channel;
use wharf_proto::convert;
use wharf_proto::pb;

use crate::meta::{LeaderFollower, RetryPolicy};

type PbAdminClient = pb::admin_client::AdminClient<crate::TracedChannel>;

/// A leader-following client of the cluster administration service.
pub struct AdminClient {
    nodes: LeaderFollower<PbAdminClient>,
}

fn pb_client(channel: Channel) -> PbAdminClient {
    PbAdminClient::new(crate::traced(channel))
}

impl AdminClient {
    /// A client for the meta nodes at `addrs` (`host:port`); connects lazily.
    pub fn new(addrs: &[String], policy: RetryPolicy) -> Result<AdminClient, crate::ChannelError> {
        Ok(AdminClient {
            nodes: LeaderFollower::new(addrs, policy, pb_client)?,
        })
    }

    /// Adds meta node `id` at `addr`: as a learner that catches up, then as a voter if `voter`.
    /// Returns once the membership change is committed.
    pub async fn add_meta_node(&self, id: u64, addr: &str, voter: bool) -> Result<(), MetaError> {
        let request = pb::AddMetaNodeRequest {
            id,
            addr: addr.to_owned(),
            voter,
        };
        self.nodes
            .call(request, |mut c, r| async move { c.add_meta_node(r).await })
            .await?;
        Ok(())
    }

    /// Removes meta node `id` (voter or learner) from the Raft membership.
    pub async fn remove_meta_node(&self, id: u64) -> Result<(), MetaError> {
        let request = pb::MetaNodeRef { id };
        self.nodes
            .call(
                request,
                |mut c, r| async move { c.remove_meta_node(r).await },
            )
            .await?;
        Ok(())
    }

    /// Leader, term, indexes, meta members, the cluster map and blob node liveness, as the
    /// leader sees them.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, MetaError> {
        let status = self
            .nodes
            .call(
                pb::Empty {},
                |mut c, r| async move { c.cluster_status(r).await },
            )
            .await?;
        convert::cluster_status_from_pb(status)
            .map_err(|e| MetaError::Internal(format!("meta node sent {e}")))
    }

    /// Drains (`Draining`), stops (`Down`) or restores (`Up`) a blob node.
    pub async fn set_blob_node_state(
        &self,
        id: BlobNodeId,
        state: NodeState,
    ) -> Result<(), MetaError> {
        let request = pb::SetBlobNodeStateRequest {
            id,
            state: convert::node_state_to_pb(state).into(),
        };
        self.nodes
            .call(
                request,
                |mut c, r| async move { c.set_blob_node_state(r).await },
            )
            .await?;
        Ok(())
    }

    pub async fn remove_blob_node(&self, id: BlobNodeId) -> Result<(), MetaError> {
        let request = pb::BlobNodeRef { id };
        self.nodes
            .call(
                request,
                |mut c, r| async move { c.remove_blob_node(r).await },
            )
            .await?;
        Ok(())
    }

    pub async fn set_replication_policy(&self, policy: ReplicationPolicy) -> Result<(), MetaError> {
        let request = convert::policy_to_pb(&policy);
        self.nodes
            .call(request, |mut c, r| async move {
                c.set_replication_policy(r).await
            })
            .await?;
        Ok(())
    }
}
