//! A cluster of `FsBlobStore`-backed blob nodes in one process: `MemMeta` as the metadata
//! service and [`TestNodes`] wiring the nodes to each other, with a switch that makes a node
//! unreachable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use blob_node::{BackgroundTasks, BlobNode, BlobNodeConfig, Placement};
use blob_store::FsBlobStore;
use bytes::Bytes;
use cluster_api::fake::MemMeta;
use cluster_api::{
    BlobApi, BlobError, BlobInfo, BlobNodeId, BlobNodes, ByteStream, MetaApi, ReplicationPolicy,
    UploadId,
};
use futures::TryStreamExt;
use oci_model::{Digest, RepositoryName};
use tempfile::TempDir;

/// Reaches the test nodes by id; a node marked unreachable answers nothing.
#[derive(Default)]
pub struct TestNodes {
    nodes: Mutex<HashMap<BlobNodeId, Arc<BlobNode>>>,
    unreachable: Mutex<BTreeSet<BlobNodeId>>,
}

impl TestNodes {
    pub fn set_reachable(&self, id: BlobNodeId, reachable: bool) {
        let mut unreachable = self.unreachable.lock().expect("lock");
        if reachable {
            unreachable.remove(&id);
        } else {
            unreachable.insert(id);
        }
    }
}

#[async_trait]
impl BlobNodes for TestNodes {
    async fn node(&self, id: BlobNodeId) -> Result<Arc<dyn BlobApi>, BlobError> {
        if self.unreachable.lock().expect("lock").contains(&id) {
            return Err(BlobError::Unavailable(format!(
                "blob node {id} is unreachable"
            )));
        }
        match self.nodes.lock().expect("lock").get(&id) {
            Some(node) => Ok(Arc::clone(node) as Arc<dyn BlobApi>),
            None => Err(BlobError::Unavailable(format!(
                "blob node {id} is not known"
            ))),
        }
    }
}

/// Loop settings for tests that drive passes by hand: the loops never fire on their own.
pub const MANUAL: (u64, u64) = (3_600_000, 3_600_000);

pub struct TestCluster {
    dir: TempDir,
    pub meta: Arc<MemMeta>,
    pub nodes: Arc<TestNodes>,
    tasks: BTreeMap<BlobNodeId, BackgroundTasks>,
    intervals_ms: (u64, u64),
    next_upload: u32,
}

impl TestCluster {
    /// `(heartbeat, repair)` interval in milliseconds for every node started.
    pub fn new(policy: ReplicationPolicy, intervals_ms: (u64, u64)) -> TestCluster {
        TestCluster {
            dir: TempDir::new().expect("temporary directory"),
            meta: Arc::new(MemMeta::with_policy(policy)),
            nodes: Arc::new(TestNodes::default()),
            tasks: BTreeMap::new(),
            intervals_ms,
            next_upload: 0,
        }
    }

    pub async fn add_node(&mut self, id: BlobNodeId, zone: &str) {
        let mut config = BlobNodeConfig::new(
            self.dir.path().join(format!("node-{id}")),
            format!("node-{id}:7000"),
        );
        config.node_id = id;
        config.zone = zone.to_owned();
        config.heartbeat_interval_ms = self.intervals_ms.0;
        config.repair_interval_ms = self.intervals_ms.1;
        config.repair_batch = 7;
        let store = FsBlobStore::open(&config.data_dir)
            .await
            .expect("open the store");
        let meta: Arc<dyn MetaApi> = Arc::clone(&self.meta) as Arc<dyn MetaApi>;
        let nodes: Arc<dyn BlobNodes> = Arc::clone(&self.nodes) as Arc<dyn BlobNodes>;
        let (node, tasks) = BlobNode::clustered(&config, Arc::new(store), meta, nodes);
        self.nodes
            .nodes
            .lock()
            .expect("lock")
            .insert(id, Arc::new(node));
        self.tasks.insert(id, tasks);
        self.meta
            .register_blob_node(config.node_info())
            .await
            .expect("register");
    }

    pub fn node(&self, id: BlobNodeId) -> Arc<BlobNode> {
        Arc::clone(&self.nodes.nodes.lock().expect("lock")[&id])
    }

    pub fn tasks(&self, id: BlobNodeId) -> &BackgroundTasks {
        &self.tasks[&id]
    }

    pub fn placement(&self) -> Placement {
        Placement::new(self.meta.map())
    }

    /// Every node re-reads the map, as its heartbeat would on an epoch change.
    pub async fn refresh_maps(&self) {
        for tasks in self.tasks.values() {
            tasks.view().refresh().await.expect("refresh the map");
        }
    }

    /// One repair pass on each node (in id order) that is reachable; returns the total dropped
    /// and pushed, and checks after every pass that each blob is readable from its replicas.
    pub async fn repair_round(&self, expected: &BTreeMap<Digest, Vec<u8>>) -> (usize, usize) {
        let (mut pushed, mut dropped) = (0, 0);
        for (id, tasks) in &self.tasks {
            if self.nodes.unreachable.lock().expect("lock").contains(id) {
                continue;
            }
            let report = tasks.repair_pass().await.expect("repair pass");
            pushed += report.pushed;
            dropped += report.dropped;
            self.assert_replicas_hold(expected).await;
        }
        (pushed, dropped)
    }

    /// Repair rounds until enough rounds to page through every blob change nothing; returns the
    /// total pushed and dropped.
    pub async fn settle(&self, expected: &BTreeMap<Digest, Vec<u8>>) -> (usize, usize) {
        // Each pass examines `repair_batch` (7) blobs; one node holds at most all of them.
        let rounds_per_sweep = expected.len() / 7 + 2;
        let (mut pushed, mut dropped) = (0, 0);
        for _ in 0..10 {
            let mut changed = false;
            for _ in 0..rounds_per_sweep {
                let (round_pushed, round_dropped) = self.repair_round(expected).await;
                changed |= round_pushed + round_dropped > 0;
                pushed += round_pushed;
                dropped += round_dropped;
            }
            if !changed {
                return (pushed, dropped);
            }
        }
        panic!("repair did not settle");
    }

    /// Uploads `data` through node `via` and commits it in meta with the replicas the node
    /// reported, as the gateway does.
    pub async fn push(&mut self, via: BlobNodeId, data: &[u8]) -> Result<BlobInfo, BlobError> {
        self.push_into(via, "team/app", data).await
    }

    /// [`push`](TestCluster::push) into repository `repo`.
    pub async fn push_into(
        &mut self,
        via: BlobNodeId,
        repo: &str,
        data: &[u8],
    ) -> Result<BlobInfo, BlobError> {
        self.next_upload += 1;
        let id = UploadId(format!("{:032x}", self.next_upload));
        let node = self.node(via);
        node.start_upload(&id).await?;
        node.append_upload(&id, 0, once(data)).await?;
        let digest = Digest::sha256_of(data);
        let repo = RepositoryName::parse(repo).expect("a repository name");
        let committed = node.commit_upload(&repo, &id, &digest).await?;
        let blob = BlobInfo {
            digest,
            size: committed.size,
            replicas: committed.replicas,
            placement: Vec::new(),
        };
        self.meta
            .commit_blob(&repo, blob.clone(), None)
            .await
            .expect("commit in meta");
        Ok(blob)
    }

    /// Every reachable node meta lists as a replica holds the right bytes, and each blob has at
    /// least one such replica.
    pub async fn assert_replicas_hold(&self, expected: &BTreeMap<Digest, Vec<u8>>) {
        for (digest, data) in expected {
            let record = self.meta.blob(digest).expect("meta knows the blob");
            let mut readable = 0;
            for replica in &record.replicas {
                let Ok(node) = self.nodes.node(*replica).await else {
                    continue;
                };
                assert_eq!(
                    read_all(node.as_ref(), digest).await.as_ref(),
                    Ok(data),
                    "replica {replica} of {digest} listed in meta must hold it"
                );
                readable += 1;
            }
            assert!(
                readable > 0,
                "{digest} is readable from no replica: {record:?}"
            );
        }
    }

    /// Meta's record of `digest` as repair reads it, placement included.
    pub async fn record(&self, digest: &Digest) -> BlobInfo {
        let listed = self.meta.list_blobs(None, usize::MAX).await.expect("list");
        listed
            .into_iter()
            .find(|record| record.digest == *digest)
            .expect("meta lists the blob")
    }

    /// Nodes (reachable or not) whose store holds `digest`.
    pub async fn holders(&self, digest: &Digest) -> Vec<BlobNodeId> {
        let nodes: Vec<(BlobNodeId, Arc<BlobNode>)> = self
            .nodes
            .nodes
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, node)| (*id, Arc::clone(node)))
            .collect();
        let mut holders = Vec::new();
        for (id, node) in nodes {
            if node.stat(digest).await.expect("stat").is_some() {
                holders.push(id);
            }
        }
        holders.sort_unstable();
        holders
    }

    pub async fn stop(self) {
        for (_, tasks) in self.tasks {
            tasks.stop().await;
        }
    }
}

pub fn once(data: &[u8]) -> ByteStream {
    let chunk: Result<Bytes, BlobError> = Ok(Bytes::copy_from_slice(data));
    Box::pin(futures::stream::iter([chunk]))
}

pub async fn read_all(node: &dyn BlobApi, digest: &Digest) -> Result<Vec<u8>, BlobError> {
    let chunks: Vec<Bytes> = node.read(digest, 0, None).await?.try_collect().await?;
    Ok(chunks.concat())
}

/// Distinct blob contents.
pub fn blob_data(index: u32) -> Vec<u8> {
    format!("blob number {index} ")
        .repeat(50 + index as usize % 7)
        .into_bytes()
}

/// Waits for `condition` with a deadline, polling.
pub async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
