//! Garbage collection on one `FsBlobStore`-backed node, against [`GcMeta`]: only what meta
//! confirms is deleted, refused copies come back intact, and staging files go only when meta
//! has no session for them.

mod gc_meta;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use blob_node::{BackgroundTasks, BlobNode, BlobNodeConfig, CollectReport};
use blob_store::{BlobStore, FsBlobStore};
use bytes::Bytes;
use cluster_api::{BlobApi, BlobError, BlobNodeId, BlobNodes, MetaApi, UploadId};
use futures::TryStreamExt;
use gc_meta::GcMeta;
use oci_model::Digest;
use tempfile::TempDir;

const NODE: BlobNodeId = 4;
const HOUR_MS: u64 = 3_600_000;
/// The node's `stale_upload_after_ms` in these tests.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// This node has no peers: nothing here replicates.
struct NoPeers;

#[async_trait]
impl BlobNodes for NoPeers {
    async fn node(&self, id: BlobNodeId) -> Result<Arc<dyn BlobApi>, BlobError> {
        Err(BlobError::Unavailable(format!("no blob node {id} here")))
    }
}

struct TestNode {
    _dir: TempDir,
    meta: Arc<GcMeta>,
    store: FsBlobStore,
    tasks: BackgroundTasks,
    next_upload: u32,
}

impl TestNode {
    /// A node whose loops never fire on their own, except collection every `gc_interval_ms`.
    async fn start(gc_interval_ms: u64) -> TestNode {
        let dir = TempDir::new().expect("temporary directory");
        let mut config = BlobNodeConfig::new(dir.path().join("blob"), "127.0.0.1:7000");
        config.node_id = NODE;
        config.heartbeat_interval_ms = HOUR_MS;
        config.repair_interval_ms = HOUR_MS;
        config.gc_interval_ms = gc_interval_ms;
        config.stale_upload_after_ms = STALE_AFTER.as_millis() as u64;
        config.validate().expect("a valid config");
        let store = FsBlobStore::open(&config.data_dir)
            .await
            .expect("open the store");
        let meta = Arc::new(GcMeta::default());
        let (_node, tasks) = BlobNode::clustered(
            &config,
            Arc::new(store.clone()),
            Arc::clone(&meta) as Arc<dyn MetaApi>,
            Arc::new(NoPeers),
        );
        TestNode {
            _dir: dir,
            meta,
            store,
            tasks,
            next_upload: 0,
        }
    }

    async fn new_upload(&mut self, data: &[u8]) -> UploadId {
        self.next_upload += 1;
        let id = UploadId(format!("{:032x}", self.next_upload));
        self.store.start_upload(&id).await.expect("start upload");
        let chunk: Result<Bytes, BlobError> = Ok(Bytes::copy_from_slice(data));
        self.store
            .append(&id, 0, Box::pin(futures::stream::iter([chunk])))
            .await
            .expect("append");
        id
    }

    /// Commits `data` on this node.
    async fn put(&mut self, data: &[u8]) -> Digest {
        let id = self.new_upload(data).await;
        let digest = Digest::sha256_of(data);
        self.store.commit(&id, &digest).await.expect("commit");
        digest
    }

    /// An upload whose staging file last changed an hour ago.
    async fn old_upload(&mut self, data: &[u8]) -> UploadId {
        let id = self.new_upload(data).await;
        let path = self.store.root().join("uploads").join(id.as_str());
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(SystemTime::now() - Duration::from_secs(3600)))
            .expect("age the staging file");
        id
    }

    async fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let chunks: Vec<Bytes> = self
            .store
            .read(digest, 0, None)
            .await?
            .try_collect()
            .await?;
        Ok(chunks.concat())
    }

    /// True when no file of `digest` is left anywhere in the store, set aside or not.
    fn gone_from_disk(&self, digest: &Digest) -> bool {
        let hex = digest.hex();
        let final_path = self
            .store
            .root()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex);
        !final_path.exists() && self.trash().is_empty()
    }

    fn trash(&self) -> Vec<String> {
        std::fs::read_dir(self.store.root().join("trash"))
            .expect("list trash")
            .map(|entry| {
                entry
                    .expect("trash entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    async fn upload_ids(&self) -> BTreeSet<UploadId> {
        let uploads = self.store.list_uploads().await.expect("list uploads");
        uploads.into_iter().map(|upload| upload.id).collect()
    }
}

/// Deterministic content of `len` bytes, different for each `seed`.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn report(blobs_deleted: u64, bytes_reclaimed: u64, kept: u64, stale: u64) -> CollectReport {
    CollectReport {
        blobs_deleted,
        bytes_reclaimed,
        kept,
        stale_uploads_removed: stale,
    }
}

/// Waits for `condition` with a deadline, polling.
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn confirmed_blobs_are_deleted_and_counted() {
    let mut node = TestNode::start(HOUR_MS).await;
    let first = node.put(&content(1000, 1)).await;
    let second = node.put(&content(2000, 2)).await;
    let bystander = node.put(&content(300, 3)).await;
    let not_held = Digest::sha256_of(b"collected elsewhere");
    for (digest, size) in [(&first, 1000), (&second, 2000), (&not_held, 19)] {
        node.meta.doom(digest, size);
    }

    let done = node.tasks.collect_pass().await.expect("collect");
    assert_eq!(done, report(2, 3000, 0, 0));
    for digest in [&first, &second] {
        assert_eq!(node.store.stat(digest).await, Ok(None));
        assert!(node.gone_from_disk(digest), "{digest} is still on disk");
    }
    assert_eq!(node.read(&bystander).await, Ok(content(300, 3)));
    // One call for the page, the copy this node never had included: meta stops counting it too.
    let mut asked = vec![(first, 1), (second, 1), (not_held, 1)];
    asked.sort();
    assert_eq!(node.meta.confirm_calls(), vec![asked]);
    assert!(node.meta.doomed().is_empty());
    assert_eq!(node.tasks.last_collect_report(), done);
    assert_eq!(node.tasks.collect_totals(), done);

    let again = node.tasks.collect_pass().await.expect("collect again");
    assert_eq!(again, CollectReport::default());
    assert_eq!(
        node.tasks.collect_totals(),
        done,
        "the totals add up passes"
    );
    node.tasks.stop().await;
}

#[tokio::test]
async fn refused_blobs_are_put_back_byte_for_byte() {
    let mut node = TestNode::start(HOUR_MS).await;
    let kept_data = content(3 << 20, 4);
    let kept = node.put(&kept_data).await;
    let deleted = node.put(&content(500, 5)).await;
    node.meta.doom(&kept, kept_data.len() as u64);
    node.meta.doom(&deleted, 500);
    node.meta.refuse(&kept);

    let done = node.tasks.collect_pass().await.expect("collect");
    assert_eq!(done, report(1, 500, 1, 0));
    assert!(
        node.read(&kept).await == Ok(kept_data),
        "the kept blob changed"
    );
    assert_eq!(node.store.stat(&deleted).await, Ok(None));
    assert!(node.trash().is_empty(), "left aside: {:?}", node.trash());
    node.tasks.stop().await;
}

#[tokio::test]
async fn a_failed_confirm_deletes_nothing() {
    let mut node = TestNode::start(HOUR_MS).await;
    let first = node.put(&content(700, 6)).await;
    let second = node.put(&content(800, 7)).await;
    node.meta.doom(&first, 700);
    node.meta.doom(&second, 800);
    let orphan = node.old_upload(b"no session").await;
    node.meta.confirm_fails.store(true, Ordering::SeqCst);

    assert!(matches!(
        node.tasks.collect_pass().await,
        Err(BlobError::Unavailable(_))
    ));
    assert_eq!(node.read(&first).await, Ok(content(700, 6)));
    assert_eq!(node.read(&second).await, Ok(content(800, 7)));
    assert!(node.trash().is_empty(), "left aside: {:?}", node.trash());
    assert_eq!(node.meta.confirm_calls().len(), 1);
    assert!(
        node.upload_ids().await.contains(&orphan),
        "the failed pass ended before the uploads"
    );
    assert_eq!(node.tasks.collect_totals(), CollectReport::default());

    // Meta answers again: the next pass does the work.
    node.meta.confirm_fails.store(false, Ordering::SeqCst);
    let done = node.tasks.collect_pass().await.expect("collect");
    assert_eq!(done, report(2, 1500, 0, 1));
    assert!(node.gone_from_disk(&first) && node.gone_from_disk(&second));
    node.tasks.stop().await;
}

#[tokio::test]
async fn each_page_of_doomed_blobs_is_confirmed_in_one_call() {
    let mut node = TestNode::start(HOUR_MS).await;
    let mut doomed = Vec::new();
    for index in 0..300u32 {
        let data = index.to_le_bytes();
        let digest = if index % 100 == 0 {
            node.put(&data).await
        } else {
            Digest::sha256_of(&data)
        };
        node.meta.doom(&digest, 4);
        doomed.push((digest, 1));
    }
    doomed.sort();

    let done = node.tasks.collect_pass().await.expect("collect");
    assert_eq!(done, report(3, 12, 0, 0));
    let calls = node.meta.confirm_calls();
    let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![256, 44]);
    assert_eq!(calls.concat(), doomed);
    assert_eq!(node.store.list_blobs(None, 10).await, Ok(Vec::new()));
    node.tasks.stop().await;
}

#[tokio::test]
async fn stale_uploads_without_a_session_are_removed() {
    let mut node = TestNode::start(HOUR_MS).await;
    let orphan = node.old_upload(b"abandoned").await;
    let resumable = node.old_upload(b"client paused").await;
    node.meta.open_session(&resumable);
    let fresh_orphan = node.new_upload(b"just started").await;

    let done = node.tasks.collect_pass().await.expect("collect");
    assert_eq!(done, report(0, 0, 0, 1));
    assert_eq!(
        node.upload_ids().await,
        BTreeSet::from([resumable.clone(), fresh_orphan])
    );
    assert_eq!(
        node.store.upload_len(&orphan).await,
        Err(BlobError::UploadNotFound(orphan.to_string()))
    );
    assert_eq!(node.store.upload_len(&resumable).await, Ok(13));

    // Meta out of reach: no staging file goes.
    let second_orphan = node.old_upload(b"also abandoned").await;
    node.meta.open_uploads_fail.store(true, Ordering::SeqCst);
    assert!(node.tasks.collect_pass().await.is_err());
    assert!(node.upload_ids().await.contains(&second_orphan));
    assert_eq!(node.tasks.collect_totals(), report(0, 0, 0, 1));
    node.tasks.stop().await;
}

#[tokio::test]
async fn an_abandoned_pass_is_put_right_by_the_next() {
    let mut node = TestNode::start(HOUR_MS).await;
    let data = content(4000, 8);
    let digest = node.put(&data).await;
    node.meta.doom(&digest, 4000);
    let gate = node.meta.confirm_gate.lock().await;
    {
        let pass = node.tasks.collect_pass();
        tokio::pin!(pass);
        tokio::select! {
            outcome = &mut pass => panic!("the pass ended before meta answered: {outcome:?}"),
            _ = node.meta.confirm_arrived.notified() => {}
        }
        // Dropped while waiting for meta, as a shutdown drops a running pass.
    }
    drop(gate);
    assert_eq!(node.store.stat(&digest).await, Ok(None), "set aside");
    // The blob was pushed again meanwhile: meta no longer dooms it, nor will it ask again.
    node.meta.forget(&digest);

    let done = node.tasks.collect_pass().await.expect("collect");
    assert_eq!(done, CollectReport::default());
    assert_eq!(node.read(&digest).await, Ok(data));
    assert!(node.trash().is_empty(), "left aside: {:?}", node.trash());
    node.tasks.stop().await;
}

#[tokio::test]
async fn the_loop_collects_on_its_own() {
    let mut node = TestNode::start(20).await;
    let digest = node.put(&content(900, 9)).await;
    let orphan = node.old_upload(b"abandoned").await;
    node.meta.doom(&digest, 900);
    let tasks = &node.tasks;
    wait_for("the loop to collect", || async move {
        tasks.collect_totals() == report(1, 900, 0, 1)
    })
    .await;
    assert!(node.gone_from_disk(&digest));
    assert!(!node.upload_ids().await.contains(&orphan));
    node.tasks.stop().await;
}
