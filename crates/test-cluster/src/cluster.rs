//! [`InProcessCluster`]: separate meta, blob and gateway roles (as `wharf meta|blob|gateway`
//! run them) inside the test's runtime, each on its own 127.0.0.1 port and data dir, with stop
//! and restart of any member on the same port and data, and network partitions between meta
//! voters (Raft traffic only: clients still reach every node).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cluster_api::{ClusterStatus, MetaError, ReplicationPolicy};
use cluster_client::{AdminClient, RetryPolicy};
use meta_node::{MetaNodeError, NetworkFaults, VoteView};

use crate::{wait_until, TestClusterError};

/// Which role a member plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Meta,
    Blob,
    Gateway,
}

/// One member: its fixed address (kept across restarts) and, while it runs, its roles.
pub struct Member {
    pub role: Role,
    pub id: u64,
    /// gRPC address (meta, blob) or HTTP address (gateway).
    pub addr: SocketAddr,
    config: wharf::WharfConfig,
    running: Option<wharf::Running>,
}

impl Member {
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

/// A cluster of in-process members over one temp dir.
pub struct InProcessCluster {
    _dir: tempfile::TempDir,
    pub members: Vec<Member>,
    /// Raft traffic cut by [`InProcessCluster::partition`]: per meta voter, the peers it
    /// refuses. Kept here so that a voter restarted mid-partition stays cut off.
    cuts: BTreeMap<u64, BTreeSet<u64>>,
}

/// Settings every member of an [`InProcessCluster`] starts with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Every member's `[gc]` section.
    pub gc: wharf::config::GcConfig,
    /// How long meta's failure detector waits for a silent blob node before marking it `Down`
    /// (1.5 s by default, so tests about repair do not wait long).
    pub blob_down_after_ms: u64,
    /// Zones of blob nodes 1, 2, ... in order; nodes past the list are in zone `default`.
    pub blob_zones: Vec<String>,
    /// `[blob_s3]` of blob nodes 1, 2, ... in order: `Some` puts that node's blobs in a
    /// bucket; nodes past the list keep them on disk.
    pub blob_s3: Vec<Option<wharf::config::S3Config>>,
    /// `blob_min_free_bytes` of blob nodes 1, 2, ... in order (a node past the list keeps the
    /// default); a huge value makes a node report itself full.
    pub blob_min_free_bytes: Vec<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gc: wharf::config::GcConfig::default(),
            blob_down_after_ms: 1500,
            blob_zones: Vec::new(),
            blob_s3: Vec::new(),
            blob_min_free_bytes: Vec::new(),
        }
    }
}

impl InProcessCluster {
    /// Starts `metas` meta voters (the first bootstraps, the others join), `blobs` blob nodes
    /// and `gateways` gateways, waits until every voter is in the membership and every blob node
    /// is in the cluster map, then sets the replication policy.
    pub async fn start(
        metas: usize,
        blobs: usize,
        gateways: usize,
        policy: ReplicationPolicy,
    ) -> Result<InProcessCluster, TestClusterError> {
        Self::start_with_gc(
            metas,
            blobs,
            gateways,
            policy,
            wharf::config::GcConfig::default(),
        )
        .await
    }

    /// [`start`](InProcessCluster::start) with `gc` as every member's `[gc]` settings.
    pub async fn start_with_gc(
        metas: usize,
        blobs: usize,
        gateways: usize,
        policy: ReplicationPolicy,
        gc: wharf::config::GcConfig,
    ) -> Result<InProcessCluster, TestClusterError> {
        let options = Options {
            gc,
            ..Options::default()
        };
        Self::start_with(metas, blobs, gateways, policy, options).await
    }

    /// [`start`](InProcessCluster::start) with every member's settings from `options`.
    pub async fn start_with(
        metas: usize,
        blobs: usize,
        gateways: usize,
        policy: ReplicationPolicy,
        options: Options,
    ) -> Result<InProcessCluster, TestClusterError> {
        let Options {
            gc,
            blob_down_after_ms,
            blob_zones,
            blob_s3,
            blob_min_free_bytes,
        } = options;
        let dir = tempfile::tempdir()?;
        let mut cluster = InProcessCluster {
            _dir: dir,
            members: Vec::new(),
            cuts: BTreeMap::new(),
        };
        let root = cluster._dir.path().to_owned();
        let mut meta_addrs = Vec::new();
        for index in 0..metas {
            let id = index as u64 + 1;
            let config = wharf::WharfConfig {
                node_id: id,
                grpc_listen: "127.0.0.1:0".into(),
                data: root.join(format!("meta-{id}")),
                join: meta_addrs.first().cloned().into_iter().collect(),
                blob_down_after_ms: Some(blob_down_after_ms),
                gc: gc.clone(),
                ..wharf::WharfConfig::default()
            };
            let addr = cluster.launch(Role::Meta, id, config).await?;
            meta_addrs.push(addr.to_string());
        }
        cluster.wait_for_voters(metas).await?;
        for index in 0..blobs {
            let id = index as u64 + 1;
            let config = wharf::WharfConfig {
                node_id: id,
                grpc_listen: "127.0.0.1:0".into(),
                data: root.join(format!("blob-{id}")),
                meta: wharf::config::MetaSection {
                    addresses: meta_addrs.clone(),
                    ..wharf::config::MetaSection::default()
                },
                zone: blob_zones
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| "default".into()),
                blob_s3: blob_s3.get(index).cloned().flatten(),
                blob_min_free_bytes: blob_min_free_bytes
                    .get(index)
                    .copied()
                    .unwrap_or(wharf::WharfConfig::default().blob_min_free_bytes),
                gc: gc.clone(),
                ..wharf::WharfConfig::default()
            };
            cluster.launch(Role::Blob, id, config).await?;
        }
        for index in 0..gateways {
            let id = index as u64 + 1;
            let config = wharf::WharfConfig {
                node_id: id,
                listen: "127.0.0.1:0".into(),
                data: root.join(format!("gateway-{id}")),
                meta: wharf::config::MetaSection {
                    addresses: meta_addrs.clone(),
                    ..wharf::config::MetaSection::default()
                },
                ..wharf::WharfConfig::default()
            };
            cluster.launch(Role::Gateway, id, config).await?;
        }
        let admin = cluster.admin()?;
        retry_meta("set the replication policy", || {
            admin.set_replication_policy(policy)
        })
        .await?;
        cluster.wait_for_blob_members(blobs).await?;
        Ok(cluster)
    }

    /// Adds a meta read replica (a learner that never votes, `wharf meta --read-replica`) with
    /// the next free meta id, and waits until the membership lists it and the replica itself
    /// follows a leader (until then it serves no read). Returns its id.
    pub async fn add_read_replica(&mut self) -> Result<u64, TestClusterError> {
        let id = self
            .members
            .iter()
            .filter(|m| m.role == Role::Meta)
            .map(|m| m.id)
            .max()
            .unwrap_or(0)
            + 1;
        let config = wharf::WharfConfig {
            node_id: id,
            grpc_listen: "127.0.0.1:0".into(),
            data: self._dir.path().join(format!("meta-{id}")),
            join: self.meta_addrs(),
            read_replica: true,
            blob_down_after_ms: Some(1500),
            ..wharf::WharfConfig::default()
        };
        let addr = self.launch(Role::Meta, id, config).await?.to_string();
        wait_until(
            "the read replica in the membership",
            Duration::from_secs(60),
            || async {
                match self.status().await {
                    Ok(status) => status
                        .meta_members
                        .iter()
                        .any(|m| m.id == id && m.role == cluster_api::MetaRole::Learner),
                    Err(_) => false,
                }
            },
        )
        .await?;
        wait_until(
            "the read replica to follow a leader",
            Duration::from_secs(60),
            || async {
                meta_node::probe_vote(&addr, Duration::from_secs(2))
                    .await
                    .is_ok_and(|view| view.leader().is_some())
            },
        )
        .await?;
        Ok(id)
    }

    /// Starts a member, pinning its (port-0 chosen) address for later restarts.
    async fn launch(
        &mut self,
        role: Role,
        id: u64,
        mut config: wharf::WharfConfig,
    ) -> Result<SocketAddr, TestClusterError> {
        let running = start_role(role, &config).await?;
        let addr = match role {
            Role::Gateway => running.http_addr,
            _ => running.grpc_addr,
        }
        .ok_or_else(|| TestClusterError::Timeout(format!("{role:?} {id} reported no address")))?;
        match role {
            Role::Gateway => config.listen = addr.to_string(),
            _ => config.grpc_listen = addr.to_string(),
        }
        self.members.push(Member {
            role,
            id,
            addr,
            config,
            running: Some(running),
        });
        Ok(addr)
    }

    pub fn meta_addrs(&self) -> Vec<String> {
        self.addrs(Role::Meta)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    pub fn addrs(&self, role: Role) -> Vec<SocketAddr> {
        self.members
            .iter()
            .filter(|m| m.role == role)
            .map(|m| m.addr)
            .collect()
    }

    /// `http://...` of gateway `id` (1-based).
    pub fn gateway_url(&self, id: u64) -> String {
        let member = self.member(Role::Gateway, id).expect("gateway exists");
        format!("http://{}", member.addr)
    }

    pub fn member(&self, role: Role, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.role == role && m.id == id)
    }

    fn member_mut(&mut self, role: Role, id: u64) -> Result<&mut Member, TestClusterError> {
        self.members
            .iter_mut()
            .find(|m| m.role == role && m.id == id)
            .ok_or_else(|| TestClusterError::Timeout(format!("no {role:?} {id}")))
    }

    pub fn admin(&self) -> Result<AdminClient, TestClusterError> {
        AdminClient::new(&self.meta_addrs(), RetryPolicy::default())
            .map_err(|e| TestClusterError::Timeout(e.to_string()))
    }

    /// The cluster status as the current leader sees it.
    pub async fn status(&self) -> Result<ClusterStatus, TestClusterError> {
        let admin = self.admin()?;
        retry_meta("read the cluster status", || admin.cluster_status()).await
    }

    /// Stops a member gracefully (its data stays).
    pub async fn stop(&mut self, role: Role, id: u64) -> Result<(), TestClusterError> {
        let member = self.member_mut(role, id)?;
        if let Some(running) = member.running.take() {
            running.stop().await;
        }
        Ok(())
    }

    /// Starts a stopped member again on its address and data.
    pub async fn restart(&mut self, role: Role, id: u64) -> Result<(), TestClusterError> {
        let member = self.member_mut(role, id)?;
        if let Some(running) = member.running.take() {
            running.stop().await;
        }
        let config = member.config.clone();
        let running = start_role(role, &config).await?;
        if let (Some(faults), Some(cut)) = (running.meta_faults(), self.cuts.get(&id)) {
            faults.block(cut.iter().copied());
        }
        self.member_mut(role, id)?.running = Some(running);
        Ok(())
    }

    /// Cuts Raft traffic both ways between every meta voter in `left` and every one in `right`
    /// (in addition to earlier cuts), as a network partition would. Clients still reach every
    /// node, so a test can observe what a cut-off voter answers. Undone by
    /// [`InProcessCluster::heal`]; survives restarts.
    pub fn partition(&mut self, left: &[u64], right: &[u64]) -> Result<(), TestClusterError> {
        for id in left.iter().chain(right) {
            if self.member(Role::Meta, *id).is_none() {
                return Err(TestClusterError::Timeout(format!("no meta node {id}")));
            }
        }
        for &a in left {
            for &b in right.iter().filter(|&&b| b != a) {
                self.cuts.entry(a).or_default().insert(b);
                self.cuts.entry(b).or_default().insert(a);
            }
        }
        for (id, cut) in &self.cuts {
            if let Some(faults) = self.meta_faults(*id) {
                faults.block(cut.iter().copied());
            }
        }
        Ok(())
    }

    /// Restores all Raft traffic between meta voters.
    pub fn heal(&mut self) {
        self.cuts.clear();
        for id in self.meta_ids() {
            if let Some(faults) = self.meta_faults(id) {
                faults.heal();
            }
        }
    }

    fn meta_faults(&self, id: u64) -> Option<Arc<NetworkFaults>> {
        self.member(Role::Meta, id)?.running.as_ref()?.meta_faults()
    }

    /// The ids of the meta voters, running or not.
    pub fn meta_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.role == Role::Meta)
            .map(|m| m.id)
            .collect()
    }

    /// Each running meta voter's own view of leadership (its Raft vote, probed directly: no
    /// leader is involved and a cut-off voter still answers), by id.
    pub async fn meta_views(&self) -> Vec<(u64, Result<VoteView, MetaNodeError>)> {
        let mut views = Vec::new();
        for member in self
            .members
            .iter()
            .filter(|m| m.role == Role::Meta && m.is_running())
        {
            let addr = member.addr.to_string();
            let view = meta_node::probe_vote(&addr, Duration::from_secs(2)).await;
            views.push((member.id, view));
        }
        views
    }

    /// Waits until a leader is elected among the running voters and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, TestClusterError> {
        let admin = self.admin()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(ClusterStatus {
                leader_id: Some(leader),
                ..
            }) = admin.cluster_status().await
            {
                return Ok(leader);
            }
            if std::time::Instant::now() >= deadline {
                return Err(TestClusterError::Timeout("no meta leader elected".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_voters(&self, voters: usize) -> Result<(), TestClusterError> {
        wait_until(
            "every meta node to be a voter",
            Duration::from_secs(60),
            || async {
                match self.status().await {
                    Ok(status) => {
                        status
                            .meta_members
                            .iter()
                            .filter(|m| m.role == cluster_api::MetaRole::Voter)
                            .count()
                            >= voters
                    }
                    Err(_) => false,
                }
            },
        )
        .await
    }

    async fn wait_for_blob_members(&self, blobs: usize) -> Result<(), TestClusterError> {
        wait_until(
            "every blob node in the cluster map",
            Duration::from_secs(60),
            || async {
                match self.status().await {
                    Ok(status) => status.map.members.len() >= blobs,
                    Err(_) => false,
                }
            },
        )
        .await
    }

    /// Stops every member.
    pub async fn shutdown(mut self) {
        // Gateways first, then blob nodes, then meta, so nothing waits on a stopped dependency.
        for role in [Role::Gateway, Role::Blob, Role::Meta] {
            for member in self.members.iter_mut().filter(|m| m.role == role) {
                if let Some(running) = member.running.take() {
                    running.stop().await;
                }
            }
        }
    }
}

async fn start_role(
    role: Role,
    config: &wharf::WharfConfig,
) -> Result<wharf::Running, TestClusterError> {
    let running = match role {
        Role::Meta => wharf::start_meta(config).await?,
        Role::Blob => wharf::start_blob(config).await?,
        Role::Gateway => wharf::start_gateway(config).await?,
    };
    Ok(running)
}

/// Retries a meta call that may meet an election for up to 30 s.
async fn retry_meta<T, F, Fut>(what: &str, mut call: F) -> Result<T, TestClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, MetaError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if std::time::Instant::now() >= deadline => {
                return Err(TestClusterError::Timeout(format!("{what}: {error}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A data path under the cluster's temp dir, for tests that inspect files.
pub fn data_dir(member: &Member) -> PathBuf {
    member.config.data.clone()
}
