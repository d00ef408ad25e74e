//! [`MetaNode`]: one running meta voter, from its configuration to a clean stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_client::{AdminClient, RetryPolicy};
use meta_store::{MetaStore, StoreClosed, TypeConfig};
use openraft::{BasicNode, ChangeMembers, Raft};
use tokio::task::JoinHandle;
use wharf_proto::pb::admin_server::AdminServer;
use wharf_proto::pb::raft_server::RaftServer;

use crate::admin::{AdminGrpc, MetaAdmin};
use crate::api::RaftMeta;
use crate::config::MetaConfig;
use crate::error::MetaNodeError;
use crate::faults::NetworkFaults;
use crate::liveness::{run_detector, Liveness};
use crate::network::{GrpcNetwork, Peers};
use crate::observe::run_metrics;
use crate::service::RaftGrpc;

/// How long [`MetaNode::shutdown`] waits for the database to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// A meta voter: openraft over the RocksDB stores, a gRPC Raft transport and [`RaftMeta`].
pub struct MetaNode {
    config: MetaConfig,
    raft: Raft<TypeConfig>,
    api: Arc<RaftMeta>,
    admin: MetaAdmin,
    /// Raft traffic this node refuses (fault injection for tests; empty in production).
    faults: Arc<NetworkFaults>,
    /// Until when this node grants no vote: one `election_timeout_max` after it opened, the
    /// promise it may have made before a restart (a leader's lease counts on it).
    votes_from: Instant,
    /// Background work holding store handles: the failure detector, the metrics publisher and,
    /// while joining, the join task. Aborted on shutdown before the store is waited on.
    tasks: Vec<JoinHandle<()>>,
    closed: StoreClosed,
}

impl MetaNode {
    /// Opens the stores under `config.data_dir`, starts Raft and, when the store has never been
    /// initialized: with `bootstrap`, makes this node the single voter of a new cluster; with
    /// `join` seeds, starts asking the cluster (in the background, so the caller can start
    /// serving Raft meanwhile) to add this node as a voter. See [`MetaNode::wait_for_voter`].
    pub async fn open(config: MetaConfig) -> Result<MetaNode, MetaNodeError> {
        config.validate()?;
        let raft_config = Arc::new(config.raft_config()?);
        let db_dir = config.data_dir.join("db");
        std::fs::create_dir_all(&db_dir).map_err(|source| MetaNodeError::DataDir {
            path: db_dir.clone(),
            source,
        })?;
        let store = MetaStore::open_with(&db_dir, &config.store_options())?;
        let faults = Arc::new(NetworkFaults::new());
        let peers = Peers::new(config.node_id, config.rpc_timeout(), faults.clone());
        let network = GrpcNetwork::new(peers.clone());
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            store.log_store,
            store.state_machine,
        )
        .await
        .map_err(MetaNodeError::raft)?;
        let initialized = raft.is_initialized().await.map_err(MetaNodeError::raft)?;
        if config.bootstrap && !initialized {
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
        let liveness = Arc::new(Liveness::new());
        let api = Arc::new(RaftMeta::new(
            raft.clone(),
            store.reader.clone(),
            liveness.clone(),
            peers,
            config.gc_settings(),
            Duration::from_millis(config.election_timeout_max_ms),
        ));
        let mut tasks = vec![
            tokio::spawn(run_detector(
                raft.clone(),
                store.reader.clone(),
                liveness,
                config.blob_down_after(),
            )),
            tokio::spawn(run_metrics(raft.clone(), store.reader.clone())),
            tokio::spawn(crate::idle::run_idle_flush(store.reader.clone())),
            tokio::spawn(crate::snapshots::run_schedule(
                raft.clone(),
                store.reader.clone(),
                config.snapshot_every_logs,
            )),
            tokio::spawn(crate::gc::run_collector(
                raft.clone(),
                store.reader.clone(),
                config.gc_settings(),
            )),
            tokio::spawn(crate::placement_check::run_placement_check(
                store.reader.clone(),
                Duration::from_millis(config.placement_check_interval_ms),
            )),
        ];
        if !config.bootstrap && !initialized && !config.join.is_empty() {
            tasks.push(tokio::spawn(join_cluster(config.clone())));
        }
        let admin = MetaAdmin::new(raft.clone(), api.clone());
        let votes_from = Instant::now() + Duration::from_millis(config.election_timeout_max_ms);
        Ok(MetaNode {
            config,
            raft,
            api,
            admin,
            faults,
            votes_from,
            tasks,
            closed: store.closed,
        })
    }

    /// Runs a garbage-collection sweep now (on the leader; a follower answers `Unavailable`),
    /// as the background loop does every `gc_interval_ms`.
    pub async fn collect_garbage(
        &self,
    ) -> Result<cluster_api::SweepReport, cluster_api::MetaError> {
        crate::gc::sweep(&self.raft, self.config.gc_settings()).await
    }

    /// `MetaApi` on this node.
    pub fn api(&self) -> Arc<RaftMeta> {
        self.api.clone()
    }

    /// The gRPC service other voters call; add it to the node's tonic router.
    pub fn raft_service(&self) -> RaftServer<RaftGrpc> {
        RaftGrpc::server(
            self.raft.clone(),
            self.api.clone(),
            self.faults.clone(),
            self.votes_from,
        )
    }

    /// Fault injection for this node's Raft traffic, shared by its Raft client and server: block
    /// a peer here to cut this node off from it (both ways). Empty unless a test blocks peers.
    pub fn faults(&self) -> Arc<NetworkFaults> {
        self.faults.clone()
    }

    /// Cluster administration on this node (membership, status, cluster-map operations).
    pub fn admin(&self) -> MetaAdmin {
        self.admin.clone()
    }

    /// The `wharf.v1.Admin` gRPC service; add it to the node's tonic router.
    pub fn admin_service(&self) -> AdminServer<AdminGrpc> {
        AdminGrpc::server(self.admin.clone())
    }

    /// Waits until this node is a voter of the committed-or-pending membership it knows (after
    /// a join, once the leader promoted it).
    pub async fn wait_for_voter(&self, timeout: Duration) -> Result<(), MetaNodeError> {
        let id = self.config.node_id;
        self.raft
            .wait(Some(timeout))
            .metrics(
                |metrics| {
                    metrics
                        .membership_config
                        .voter_ids()
                        .any(|voter| voter == id)
                },
                "this node to be a voter",
            )
            .await
            .map(|_| ())
            .map_err(|_| MetaNodeError::Timeout(timeout, "this node to become a voter"))
    }

    /// The underlying openraft handle, for metrics and cluster administration.
    /// Whether this node leads, by its own view of now, as a check to call again and again
    /// (the leader's background work: gc, replication).
    pub fn leadership(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let raft = self.raft.clone();
        move || raft.metrics().borrow().state == openraft::ServerState::Leader
    }

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
    pub async fn shutdown(mut self) -> Result<(), MetaNodeError> {
        for task in &self.tasks {
            task.abort();
        }
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.raft.shutdown().await.map_err(MetaNodeError::raft)?;
        let MetaNode {
            raft,
            api,
            admin,
            closed,
            ..
        } = self;
        drop((api, admin));
        drop(raft);
        tokio::time::timeout(CLOSE_GRACE, closed.wait())
            .await
            .map_err(|_| MetaNodeError::Timeout(CLOSE_GRACE, "the meta store to close"))
    }
}

/// Asks the cluster, through the seeds in `config.join`, to add this node as a voter (or, with
/// `read_replica`, as a learner that stays one); retries
/// with backoff (seeds down, no leader yet, a membership change in progress) until
/// `join_timeout_ms` has passed.
async fn join_cluster(config: MetaConfig) {
    let deadline = Instant::now() + config.join_timeout();
    let policy = RetryPolicy {
        max_elapsed: config.join_timeout(),
        ..RetryPolicy::default()
    };
    let client = match AdminClient::new(&config.join, policy) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot join the meta cluster");
            return;
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let added = client
            .add_meta_node(config.node_id, &config.advertise_addr, !config.read_replica)
            .await;
        match added {
            Ok(()) => {
                let role = if config.read_replica {
                    "a read replica"
                } else {
                    "a voter"
                };
                tracing::info!(
                    node_id = config.node_id,
                    "joined the meta cluster as {role}"
                );
                return;
            }
            Err(error) if Instant::now() + backoff < deadline => {
                tracing::info!(%error, "joining the meta cluster; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                tracing::error!(%error, "gave up joining the meta cluster");
                return;
            }
        }
    }
}
