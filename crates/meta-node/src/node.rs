//! [`MetaNode`]: one running meta voter, from its configuration to a clean stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use meta_store::{MetaStore, StoreClosed, TypeConfig};
use openraft::{BasicNode, ChangeMembers, Raft};
use wharf_proto::pb::raft_server::RaftServer;

use crate::api::RaftMeta;
use crate::config::MetaConfig;
use crate::error::MetaNodeError;
use crate::network::GrpcNetwork;
use crate::service::RaftGrpc;

/// How long [`MetaNode::shutdown`] waits for the database to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// A meta voter: openraft over the RocksDB stores, a gRPC Raft transport and [`RaftMeta`].
pub struct MetaNode {
    config: MetaConfig,
    raft: Raft<TypeConfig>,
    api: Arc<RaftMeta>,
    closed: StoreClosed,
}

impl MetaNode {
    /// Opens the stores under `config.data_dir`, starts Raft and, when `bootstrap` is set and the
    /// store has never been initialized, makes this node the single voter of a new cluster.
    pub async fn open(config: MetaConfig) -> Result<MetaNode, MetaNodeError> {
        config.validate()?;
        let raft_config = Arc::new(config.raft_config()?);
        let db_dir = config.data_dir.join("db");
        std::fs::create_dir_all(&db_dir).map_err(|source| MetaNodeError::DataDir {
            path: db_dir.clone(),
            source,
        })?;
        let store = MetaStore::open(&db_dir)?;
        let network = GrpcNetwork::new(config.node_id, config.rpc_timeout());
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            store.log_store,
            store.state_machine,
        )
        .await
        .map_err(MetaNodeError::raft)?;
        if config.bootstrap && !raft.is_initialized().await.map_err(MetaNodeError::raft)? {
            let node = BasicNode {
                addr: config.advertise_addr.clone(),
            };
            tracing::info!(
                node_id = config.node_id,
                "bootstrapping a single-voter meta cluster"
            );
            raft.initialize(BTreeMap::from([(config.node_id, node)]))
                .await
                .map_err(MetaNodeError::raft)?;
        }
        let api = Arc::new(RaftMeta::new(raft.clone(), store.reader));
        Ok(MetaNode {
            config,
            raft,
            api,
            closed: store.closed,
        })
    }

    /// `MetaApi` on this node.
    pub fn api(&self) -> Arc<RaftMeta> {
        self.api.clone()
    }

    /// The gRPC service other voters call; add it to the node's tonic router.
    pub fn raft_service(&self) -> RaftServer<RaftGrpc> {
        RaftGrpc::server(self.raft.clone())
    }

    /// The underlying openraft handle, for metrics and cluster administration.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    pub fn config(&self) -> &MetaConfig {
        &self.config
    }

    /// Waits until this node knows a leader, and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, MetaNodeError> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|metrics| metrics.current_leader.is_some(), "a known leader")
            .await
            .map_err(|_| MetaNodeError::Timeout(timeout, "a leader"))?;
        metrics
            .current_leader
            .ok_or(MetaNodeError::Timeout(timeout, "a leader"))
    }

    /// Adds voter `node_id` at `addr` to the cluster: it first catches up as a learner, then
    /// joins the voters. Must be called on the leader.
    pub async fn add_voter(&self, node_id: u64, addr: &str) -> Result<(), MetaNodeError> {
        let node = BasicNode {
            addr: addr.to_owned(),
        };
        self.raft
            .add_learner(node_id, node, true)
            .await
            .map_err(MetaNodeError::raft)?;
        let voters = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(MetaNodeError::raft)?;
        Ok(())
    }

    /// Stops Raft and waits until the database is closed, so the data directory can be opened
    /// again. Every handle from [`MetaNode::api`] must have been dropped by then.
    pub async fn shutdown(self) -> Result<(), MetaNodeError> {
        self.raft.shutdown().await.map_err(MetaNodeError::raft)?;
        let MetaNode {
            raft, api, closed, ..
        } = self;
        drop(api);
        drop(raft);
        tokio::time::timeout(CLOSE_GRACE, closed.wait())
            .await
            .map_err(|_| MetaNodeError::Timeout(CLOSE_GRACE, "the meta store to close"))
    }
}
