//! [`RaftMeta`]: `MetaApi` on a Raft node. Writes are proposed as [`Command`]s and answer once
//! applied. Reads are served by every member, leader, follower or read replica, with the
//! read-index protocol: the member learns the leader's commit point from a leadership check that
//! started after the read arrived (its own check on the leader; a `ReadIndex` call to the leader
//! elsewhere, one shared by every read queued meanwhile), waits until it has applied that point,
//! then reads its local state. A read never sees less than a write acknowledged before it began.
//!
//! The leader holds a lease after each check: a quorum answered a heartbeat sent after the check
//! began, and each of those voters refuses every vote for `election_timeout_max` after it (and
//! for as long after its own start, see `RaftGrpc`), so no other leader can exist until the check's
//! start plus that timeout. For half of it the leader answers read indexes without a heartbeat
//! round: its commit index, read from the Raft core, while it still leads in the same term and
//! membership.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cluster_api::{
    AuthChange, AuthState, BlobInfo, BlobNodeHealth, BlobNodeId, BlobNodeInfo, ClusterMap,
    DoomedBlob, FetchLease, MetaApi, MetaError, NamespaceUsage, NodeState, Page, PlacementRule,
    ProxyUpstream, PutManifest, ReplicationPolicy, RetentionAction, RetentionRule, StoredManifest,
    SweepReport, UploadId, UploadSession, UploadToken, BLOB_URL_KEY_BYTES, UPLOAD_KEY_BYTES,
};
use meta_store::{Command, CommandOutput, StateReader, TypeConfig};
use oci_model::{Descriptor, Digest, Reference, RepositoryName, Tag};
use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Raft, ServerState};

use crate::fetch_leases::FetchLeases;
use crate::liveness::Liveness;
use crate::network::Peers;
use crate::read_barrier::ReadBarrier;

/// How long a follower waits for the leader's read index, and then for its own state machine to
/// apply it, before it answers a read `Unavailable` (and its client asks another member).
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(2);

/// Under load (a check answered several reads), a follower asks the leader for read indexes at
/// most once per this long (one tick of tokio's timer), each call carrying every read queued
/// meanwhile: the leader's work per read falls as the load rises; light load asks at once.
const FOLLOWER_CHECK_SPACING: Duration = Duration::from_millis(1);

/// The metadata service as served by one meta member.
pub struct RaftMeta {
    raft: Raft<TypeConfig>,
    reader: StateReader,
    liveness: Arc<Liveness>,
    /// The pull-through cache's fetch leases, while this node leads.
    fetch_leases: FetchLeases,
    /// Leadership checks on this node (while it leads), shared by its own reads and the
    /// `ReadIndex` calls of the other members.
    leader_checks: ReadBarrier<Option<u64>, MetaError>,
    /// `ReadIndex` calls to the leader (while this node follows), shared by its reads.
    follower_checks: ReadBarrier<Option<u64>, MetaError>,
    peers: Peers,
    gc: crate::gc::GcSettings,
    /// The leader's lease from its last successful leadership check, and how long one lasts.
    lease: Arc<std::sync::Mutex<Option<Lease>>>,
    lease_duration: Duration,
    /// `wharf_meta_reads_total{path}`, looked up once rather than per read.
    reads_as_leader: metrics::Counter,
    reads_as_follower: metrics::Counter,
    /// `wharf_meta_read_index_total{by}`: read indexes from a heartbeat round or from the lease.
    read_index_checked: metrics::Counter,
    read_index_leased: metrics::Counter,
    /// The upload-token secret once read from the state: it never changes after it is set, and
    /// every upload asks for it.
    upload_key: std::sync::OnceLock<Vec<u8>>,
}

/// What a successful leadership check proves: no other leader before `until`, in `term` and
/// `membership`, and the commit point it saw.
#[derive(Clone, Copy)]
struct Lease {
    until: Instant,
    term: u64,
    membership: Option<openraft::LogId<u64>>,
    index: Option<u64>,
}

pub(crate) fn redirect(forward: ForwardToLeader<u64, BasicNode>) -> MetaError {
    MetaError::Unavailable {
        leader: forward.leader_node.map(|node| node.addr),
    }
}

/// A stopped or failing Raft node: the client should try another voter.
pub(crate) fn stopped(error: impl std::fmt::Display) -> MetaError {
    tracing::warn!(%error, "raft is not serving");
    MetaError::Unavailable { leader: None }
}

/// True when an error's text says the disk is full: RocksDB reports `ENOSPC` as an I/O error
/// carrying the system's message, and that text is all that crosses openraft's storage error.
pub(crate) fn is_out_of_space_text(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("Disk quota exceeded")
}

/// Maps a failed proposal or membership change: redirect to the leader, retry later while another
/// membership change is in progress, or refuse an impossible change.
pub(crate) fn write_error(error: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> MetaError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => redirect(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(in_progress),
        )) => stopped(in_progress),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            MetaError::Invalid(error.to_string())
        }
        RaftError::Fatal(fatal) => stopped(fatal),
    }
}

/// This node's wall clock in unix milliseconds: commands carry the proposer's time, so applying
/// them stays deterministic.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// `N` bytes from the system's secure random source.
fn random_bytes<const N: usize>() -> Result<[u8; N], MetaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| MetaError::Internal("the system random source failed".to_owned()))?;
    Ok(bytes)
}

/// Chooses the staging node for an upload: a weighted pick from the nodes sorted by id, keyed on
/// the token's random `bits` so uploads spread over the nodes. Weight 0 marks a node that takes
/// no new uploads.
fn pick_staging_node(bits: u64, nodes: &[BlobNodeInfo]) -> Option<u64> {
    let total: u64 = nodes.iter().map(|node| u64::from(node.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = bits % total;
    for node in nodes {
        let weight = u64::from(node.weight);
        if point < weight {
            return Some(node.id);
        }
        point -= weight;
    }
    None
}

impl RaftMeta {
    pub(crate) fn new(
        raft: Raft<TypeConfig>,
        reader: StateReader,
        liveness: Arc<Liveness>,
        peers: Peers,
        gc: crate::gc::GcSettings,
        election_timeout_max: Duration,
    ) -> RaftMeta {
        RaftMeta {
            raft,
            reader,
            liveness,
            fetch_leases: FetchLeases::default(),
            leader_checks: ReadBarrier::new(),
            follower_checks: ReadBarrier::paced(FOLLOWER_CHECK_SPACING),
            peers,
            gc,
            lease: Arc::default(),
            upload_key: std::sync::OnceLock::new(),
            // Half the voters' promise: room for clock-rate drift and for the time a heartbeat
            // spends in flight before a voter starts counting.
            lease_duration: election_timeout_max / 2,
            reads_as_leader: metrics::counter!("wharf_meta_reads_total", "path" => "leader"),
            reads_as_follower: metrics::counter!("wharf_meta_reads_total", "path" => "follower"),
            read_index_checked: metrics::counter!("wharf_meta_read_index_total", "by" => "heartbeat"),
            read_index_leased: metrics::counter!("wharf_meta_read_index_total", "by" => "lease"),
        }
    }

    /// The current term when this node leads and a quorum still follows it (what the leader's
    /// in-memory records, heartbeats and fetch leases, are valid for); otherwise
    /// `Unavailable` naming the leader it knows.
    async fn leading_term(&self) -> Result<u64, MetaError> {
        let (state, term, leader) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let leader = metrics.current_leader.and_then(|leader| {
                let membership = metrics.membership_config.membership();
                membership.get_node(&leader).map(|node| node.addr.clone())
            });
            (metrics.state, metrics.current_term, leader)
        };
        if state != ServerState::Leader {
            return Err(MetaError::Unavailable { leader });
        }
        self.linearize_on_leader().await?;
        Ok(term)
    }

    pub(crate) fn reader(&self) -> &StateReader {
        &self.reader
    }

    pub(crate) fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    pub(crate) async fn propose(&self, command: Command) -> Result<CommandOutput, MetaError> {
        match self.raft.client_write(command).await {
            Ok(response) => response.data.into_result(),
            Err(RaftError::Fatal(fatal)) => {
                Err(self.out_of_space().unwrap_or_else(|| stopped(fatal)))
            }
            Err(error) => Err(write_error(error)),
        }
    }

    /// `StorageFull` when this member's Raft core stopped because its disk is full: RocksDB
    /// refused a write with `ENOSPC` (or a quota), so the core halted before acknowledging it.
    /// Every later write is refused the same way (507, not a retry-soon 503) until space is
    /// freed and the member restarts; what was acknowledged before is on disk.
    fn out_of_space(&self) -> Option<MetaError> {
        let metrics = self.raft.metrics();
        let state = metrics.borrow();
        let Err(fatal) = &state.running_state else {
            return None;
        };
        let text = fatal.to_string();
        if !is_out_of_space_text(&text) {
            return None;
        }
        // The cause (with the file's path) is for the operator's log, not the client.
        tracing::debug!(error = %text, "a write refused: meta's disk is full");
        Some(MetaError::StorageFull(
            "the metadata store's disk is full: this member takes no writes until space is freed \
             and it is restarted"
                .to_owned(),
        ))
    }

    async fn propose_done(&self, command: Command) -> Result<(), MetaError> {
        match self.propose(command).await? {
            CommandOutput::Done => Ok(()),
            other => Err(MetaError::Internal(format!(
                "unexpected command output {other:?}"
            ))),
        }
    }

    /// Makes this node's state fit for a linearizable read: learns the commit point from a
    /// leadership check that started after this call (its own while it leads, the leader's
    /// through `ReadIndex` otherwise) and waits until it has applied it. Returns that index.
    pub(crate) async fn linearize(&self) -> Result<Option<u64>, MetaError> {
        let leading = self.raft.metrics().borrow().state == ServerState::Leader;
        let index = if leading {
            self.reads_as_leader.increment(1);
            self.leader_read_index().await?
        } else {
            self.reads_as_follower.increment(1);
            let (raft, peers) = (self.raft.clone(), self.peers.clone());
            let check = move || {
                let (raft, peers) = (raft.clone(), peers.clone());
                async move { Self::ask_leader(&raft, &peers).await }
            };
            self.follower_checks
                .wait(check, MetaError::Unavailable { leader: None })
                .await?
        };
        self.wait_applied(index, leading).await?;
        Ok(index)
    }

    /// Like [`RaftMeta::linearize`], but only on the leader: for what only the leader may answer
    /// (cluster status with its failure detector's view, membership changes, heartbeats).
    pub(crate) async fn linearize_on_leader(&self) -> Result<Option<u64>, MetaError> {
        let index = self.leader_read_index().await?;
        self.wait_applied(index, true).await?;
        Ok(index)
    }

    /// The commit point a read must see: under the leader's lease, its commit index now;
    /// otherwise from a leadership check (a heartbeat round to a quorum) that started after this
    /// call, which renews the lease; concurrent callers share checks. `Unavailable` with the
    /// leader's address on a node that does not lead. Serves the other members' `ReadIndex`.
    pub(crate) async fn leader_read_index(&self) -> Result<Option<u64>, MetaError> {
        if let Some(index) = self.read_index_under_lease().await {
            self.read_index_leased.increment(1);
            return Ok(index);
        }
        self.read_index_checked.increment(1);
        let (raft, lease, duration) = (self.raft.clone(), self.lease.clone(), self.lease_duration);
        let check = move || {
            let (raft, lease) = (raft.clone(), lease.clone());
            async move {
                let started = Instant::now();
                let (term, membership) = {
                    let metrics = raft.metrics();
                    let metrics = metrics.borrow();
                    (metrics.current_term, *metrics.membership_config.log_id())
                };
                let index = Self::confirm_leadership(&raft).await?;
                let mut held = lease
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *held = Some(Lease {
                    until: started + duration,
                    term,
                    membership,
                    index,
                });
                Ok(index)
            }
        };
        self.leader_checks
            .wait(check, MetaError::Unavailable { leader: None })
            .await
    }

    /// The read index without a heartbeat round, while the lease of the last check holds and
    /// this node still leads in that check's term and membership: its commit index (never less
    /// than the check's). `None` sends the caller to a real check.
    async fn read_index_under_lease(&self) -> Option<Option<u64>> {
        let lease = *self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lease = lease?;
        if Instant::now() >= lease.until {
            return None;
        }
        let committed = self
            .raft
            .with_raft_state(move |state| {
                let leading = state.server_state == ServerState::Leader
                    && state.vote_ref().leader_id().get_term() == lease.term
                    && *state.membership_state.effective().log_id() == lease.membership;
                leading.then(|| state.committed.map(|log_id| log_id.index))
            })
            .await
            .ok()??;
        Some(committed.max(lease.index))
    }

    /// The key that signs upload tokens, set through Raft by the first leader that needs one
    /// (a follower answers with the leader's address) and kept once read.
    async fn upload_key(&self) -> Result<&[u8], MetaError> {
        if let Some(key) = self.upload_key.get() {
            return Ok(key);
        }
        if self.reader.upload_key()?.is_none() {
            let key: [u8; UPLOAD_KEY_BYTES] = random_bytes()?;
            self.propose_done(Command::SetUploadKey { key: key.to_vec() })
                .await?;
        }
        // Another proposal may have won: the state holds the one key.
        let key = self
            .reader
            .upload_key()?
            .ok_or_else(|| MetaError::Internal("the upload key was not set".to_owned()))?;
        Ok(self.upload_key.get_or_init(|| key))
    }

    async fn confirm_leadership(raft: &Raft<TypeConfig>) -> Result<Option<u64>, MetaError> {
        match raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id.map(|log_id| log_id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(redirect(forward))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(error))) => {
                Err(stopped(error))
            }
            Err(RaftError::Fatal(fatal)) => Err(stopped(fatal)),
        }
    }

    /// A follower's check: the read index from the leader it knows. A follower that knows no
    /// leader, or cannot reach it, serves no read.
    async fn ask_leader(raft: &Raft<TypeConfig>, peers: &Peers) -> Result<Option<u64>, MetaError> {
        let (me, leader) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let leader = metrics.current_leader.and_then(|leader| {
                let membership = metrics.membership_config.membership();
                let node = membership.get_node(&leader)?;
                Some((leader, node.addr.clone()))
            });
            (metrics.id, leader)
        };
        let Some((leader, addr)) = leader else {
            return Err(MetaError::Unavailable { leader: None });
        };
        if leader == me {
            // Elected since the caller looked: confirm as the leader does.
            return Self::confirm_leadership(raft).await;
        }
        peers.read_index(leader, &addr, READ_INDEX_TIMEOUT).await
    }

    /// Waits until this node's state machine has applied `index`: without a deadline on the
    /// leader (it is applying what it committed), for [`READ_INDEX_TIMEOUT`] elsewhere.
    async fn wait_applied(&self, index: Option<u64>, leading: bool) -> Result<(), MetaError> {
        let Some(index) = index else {
            return Ok(());
        };
        let applied = self.raft.metrics().borrow().last_applied.map(|id| id.index);
        if applied >= Some(index) {
            return Ok(());
        }
        let timeout = (!leading).then_some(READ_INDEX_TIMEOUT);
        match self
            .raft
            .wait(timeout)
            .applied_index_at_least(Some(index), "the read index applied")
            .await
        {
            Ok(_) => Ok(()),
            Err(WaitError::Timeout(..)) => Err(MetaError::Unavailable { leader: None }),
            Err(WaitError::ShuttingDown) => Err(stopped("raft is shutting down")),
        }
    }
}

#[async_trait]
impl MetaApi for RaftMeta {
    async fn create_upload(
        &self,
        repo: &RepositoryName,
        avoid: &[BlobNodeId],
    ) -> Result<UploadSession, MetaError> {
        // On the leader only: the token's start time is the leader's clock, as the deletion
        // fences' times are.
        self.linearize_on_leader().await?;
        let key = self.upload_key().await?;
        let nonce: [u8; 16] = random_bytes()?;
        let map = self.reader.cluster_map()?;
        // Data residency: an upload into a repository under placement rules is staged in the
        // zones they allow, or not at all.
        let placement = map.placement_of(repo.as_str());
        let nodes: Vec<BlobNodeInfo> = map
            .members
            .into_iter()
            .filter(|member| {
                member.state == NodeState::Up
                    && !avoid.contains(&member.node.id)
                    && placement.allows(&member.node.zone)
            })
            .map(|member| member.node)
            .collect();
        // Full nodes (by their last heartbeat to this leader) stage nothing; when every
        // candidate is full the upload is refused as out of space.
        let full = nodes.len();
        let nodes: Vec<BlobNodeInfo> = nodes
            .into_iter()
            .filter(|node| !self.liveness.is_full(node.id))
            .collect();
        if nodes.is_empty() && full > 0 {
            return Err(MetaError::StorageFull(format!(
                "every blob node that could stage an upload of {repo} is full"
            )));
        }
        let bits = u64::from_be_bytes(nonce[..8].try_into().unwrap_or_default());
        let staging_node = match pick_staging_node(bits, &nodes) {
            Some(node) => node,
            None if placement.is_unrestricted() => return Err(MetaError::NoBlobNodes),
            None => {
                return Err(MetaError::PlacementUnmet(format!(
                    "{} of {repo}: no blob node is up in those zones",
                    placement.describe()
                )))
            }
        };
        let token = UploadToken::mint(key, repo, staging_node, unix_ms(), nonce);
        Ok(UploadSession {
            id: token.id(),
            repo: repo.clone(),
            staging_node,
            started_ms: token.started_ms(),
        })
    }

    async fn commit_blob(
        &self,
        repo: &RepositoryName,
        blob: BlobInfo,
        upload: Option<UploadId>,
    ) -> Result<(), MetaError> {
        let repo = repo.clone();
        self.propose_done(Command::CommitBlob {
            repo,
            blob,
            upload,
            now_ms: unix_ms(),
        })
        .await
    }

    async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobInfo, MetaError> {
        self.linearize().await?;
        self.reader.stat_blob(repo, digest)
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<Option<BlobInfo>, MetaError> {
        let command = Command::MountBlob {
            repo: repo.clone(),
            digest: digest.clone(),
            from: from.clone(),
            now_ms: unix_ms(),
        };
        match self.propose(command).await? {
            CommandOutput::Mounted(mounted) => Ok(mounted),
            other => Err(MetaError::Internal(format!(
                "unexpected mount output {other:?}"
            ))),
        }
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<(), MetaError> {
        let repo = repo.clone();
        let digest = digest.clone();
        self.propose_done(Command::UnlinkBlob {
            repo,
            digest,
            now_ms: unix_ms(),
        })
        .await
    }

    async fn put_manifest(&self, manifest: PutManifest) -> Result<(), MetaError> {
        self.propose_done(Command::PutManifest {
            put: Box::new(manifest),
            now_ms: unix_ms(),
        })
        .await
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest, MetaError> {
        self.linearize().await?;
        self.reader.get_manifest(repo, reference)
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), MetaError> {
        let repo = repo.clone();
        let digest = digest.clone();
        self.propose_done(Command::DeleteManifest {
            repo,
            digest,
            now_ms: unix_ms(),
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<(), MetaError> {
        let repo = repo.clone();
        let tag = tag.clone();
        self.propose_done(Command::DeleteTag { repo, tag }).await
    }

    async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, MetaError> {
        self.linearize().await?;
        self.reader.list_tags(repo, last, n)
    }

    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
        self.linearize().await?;
        self.reader.list_repositories(last, n)
    }

    async fn list_referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        self.linearize().await?;
        self.reader.list_referrers(repo, subject, artifact_type)
    }

    async fn register_blob_node(&self, node: BlobNodeInfo) -> Result<(), MetaError> {
        self.propose_done(Command::RegisterBlobNode(node)).await
    }

    async fn blob_nodes(&self) -> Result<Vec<BlobNodeInfo>, MetaError> {
        self.linearize().await?;
        self.reader.blob_nodes()
    }

    async fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        self.linearize().await?;
        self.reader.cluster_map()
    }

    async fn set_blob_node_state(&self, id: BlobNodeId, state: NodeState) -> Result<(), MetaError> {
        let command = Command::SetBlobNodeState {
            id,
            state,
            expected: None,
        };
        self.propose_done(command).await
    }

    async fn remove_blob_node(&self, id: BlobNodeId) -> Result<(), MetaError> {
        self.propose_done(Command::RemoveBlobNode { id }).await
    }

    async fn set_replication_policy(&self, policy: ReplicationPolicy) -> Result<(), MetaError> {
        self.propose_done(Command::SetReplicationPolicy(policy))
            .await
    }

    async fn put_placement_rule(&self, rule: PlacementRule) -> Result<(), MetaError> {
        self.propose_done(Command::PutPlacementRule(rule)).await
    }

    async fn delete_placement_rule(&self, id: &str) -> Result<(), MetaError> {
        self.propose_done(Command::DeletePlacementRule { id: id.to_owned() })
            .await
    }

    async fn blob_node_heartbeat(
        &self,
        id: BlobNodeId,
        health: BlobNodeHealth,
    ) -> Result<u64, MetaError> {
        // A leader cut off from its quorum must not take beats: the blob node would never move
        // on to the real leader, whose failure detector would then mark it down.
        let term = self.leading_term().await?;
        self.liveness.beat(term, id, health, Instant::now());
        self.reader.epoch()
    }

    async fn add_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        let command = Command::AddBlobReplicas {
            digest: digest.clone(),
            nodes: nodes.to_vec(),
        };
        self.propose_done(command).await
    }

    async fn remove_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        let command = Command::RemoveBlobReplicas {
            digest: digest.clone(),
            nodes: nodes.to_vec(),
        };
        self.propose_done(command).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<BlobInfo>, MetaError> {
        self.linearize().await?;
        self.reader.list_blobs(after, n)
    }

    async fn doomed_blobs(
        &self,
        node: BlobNodeId,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<DoomedBlob>, MetaError> {
        self.linearize().await?;
        self.reader.doomed_blobs(node, after, n)
    }

    async fn confirm_blob_deletions(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<Vec<bool>, MetaError> {
        if blobs.is_empty() {
            return Ok(Vec::new());
        }
        let command = Command::ConfirmBlobDeletions {
            node,
            blobs: blobs.to_vec(),
            now_ms: unix_ms(),
        };
        match self.propose(command).await? {
            CommandOutput::Confirmed(verdicts) if verdicts.len() == blobs.len() => Ok(verdicts),
            other => Err(MetaError::Internal(format!(
                "deletion confirmation answered {other:?}"
            ))),
        }
    }

    async fn blobs_purged(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<(), MetaError> {
        if blobs.is_empty() {
            return Ok(());
        }
        self.propose_done(Command::BlobsPurged {
            node,
            blobs: blobs.to_vec(),
        })
        .await
    }

    async fn open_uploads(&self, ids: &[UploadId]) -> Result<Vec<UploadId>, MetaError> {
        self.linearize().await?;
        let expiry = u64::try_from(self.gc.upload_expiry.as_millis()).unwrap_or(u64::MAX);
        let since_ms = unix_ms().saturating_sub(expiry);
        self.reader.open_uploads(ids, since_ms)
    }

    async fn blob_url_key(&self) -> Result<Vec<u8>, MetaError> {
        // Derived, so the secret that signs upload tokens never leaves meta.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.upload_key().await?);
        let derived = ring::hmac::sign(&key, b"wharf blob URL key v1");
        Ok(derived.as_ref()[..BLOB_URL_KEY_BYTES].to_vec())
    }

    async fn collect_garbage(&self) -> Result<SweepReport, MetaError> {
        crate::gc::sweep(&self.raft, self.gc).await
    }

    async fn check_consistency(&self) -> Result<Vec<String>, MetaError> {
        self.linearize().await?;
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || reader.check_consistency())
            .await
            .map_err(|error| MetaError::Internal(error.to_string()))?
    }

    async fn discard_orphans(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<u64, MetaError> {
        let command = Command::DiscardOrphans {
            node,
            blobs: blobs.to_vec(),
            now_ms: unix_ms(),
        };
        match self.propose(command).await? {
            CommandOutput::Retained(count) => Ok(count),
            other => Err(MetaError::Internal(format!(
                "orphan discard answered {other:?}"
            ))),
        }
    }

    async fn usage(&self, namespace: Option<&str>) -> Result<Vec<NamespaceUsage>, MetaError> {
        self.linearize().await?;
        self.reader.usage(namespace)
    }

    async fn set_quota(&self, namespace: &str, bytes: Option<u64>) -> Result<(), MetaError> {
        self.propose_done(Command::SetQuota {
            namespace: namespace.to_owned(),
            bytes,
        })
        .await
    }

    async fn retention_rules(&self) -> Result<Vec<RetentionRule>, MetaError> {
        self.linearize().await?;
        self.reader.retention_rules()
    }

    async fn put_retention_rule(&self, rule: RetentionRule) -> Result<(), MetaError> {
        self.propose_done(Command::PutRetentionRule(rule)).await
    }

    async fn delete_retention_rule(&self, id: &str) -> Result<(), MetaError> {
        self.propose_done(Command::DeleteRetentionRule { id: id.to_owned() })
            .await
    }

    async fn retention_plan(
        &self,
        include_dry_run: bool,
    ) -> Result<Vec<RetentionAction>, MetaError> {
        self.linearize().await?;
        self.reader.retention_plan(unix_ms(), include_dry_run)
    }

    async fn auth_state(&self, known_version: Option<u64>) -> Result<Option<AuthState>, MetaError> {
        self.linearize().await?;
        let state = self.reader.auth_state()?;
        Ok((known_version != Some(state.version)).then_some(state))
    }

    async fn put_cached_manifest(&self, manifest: PutManifest) -> Result<(), MetaError> {
        self.propose_done(Command::PutCachedManifest {
            put: Box::new(manifest),
            now_ms: unix_ms(),
        })
        .await
    }

    async fn touch_cached(&self, entries: &[(RepositoryName, Digest)]) -> Result<(), MetaError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.propose_done(Command::TouchCached {
            entries: entries.to_vec(),
            now_ms: unix_ms(),
        })
        .await
    }

    async fn replication_rules(&self) -> Result<Vec<cluster_api::ReplicationRule>, MetaError> {
        self.linearize().await?;
        self.reader.replication_rules()
    }

    async fn put_replication_rule(
        &self,
        rule: cluster_api::ReplicationRule,
    ) -> Result<(), MetaError> {
        self.propose_done(Command::PutReplicationRule(rule)).await
    }

    async fn replication_backlog(
        &self,
        limit: usize,
    ) -> Result<Vec<cluster_api::ReplicationBacklog>, MetaError> {
        self.linearize().await?;
        Ok(self
            .reader
            .replication_backlog(limit)?
            .into_iter()
            .map(|(rule, repo, seq)| cluster_api::ReplicationBacklog { rule, repo, seq })
            .collect())
    }

    async fn replication_done(
        &self,
        entry: cluster_api::ReplicationBacklog,
    ) -> Result<(), MetaError> {
        self.propose_done(Command::ReplicationDone {
            rule: entry.rule,
            repo: entry.repo,
            seq: entry.seq,
        })
        .await
    }

    async fn replication_status(&self) -> Result<Vec<cluster_api::ReplicationStatus>, MetaError> {
        self.linearize().await?;
        self.reader.replication_status()
    }

    async fn record_replication(
        &self,
        status: cluster_api::ReplicationStatus,
    ) -> Result<(), MetaError> {
        self.propose_done(Command::RecordReplication(status)).await
    }

    async fn delete_replication_rule(&self, id: &str) -> Result<(), MetaError> {
        self.propose_done(Command::DeleteReplicationRule { id: id.to_owned() })
            .await
    }

    async fn proxies(&self) -> Result<Vec<ProxyUpstream>, MetaError> {
        self.linearize().await?;
        self.reader.proxies()
    }

    async fn put_proxy(&self, proxy: ProxyUpstream) -> Result<(), MetaError> {
        self.propose_done(Command::PutProxy(proxy)).await
    }

    async fn delete_proxy(&self, id: &str) -> Result<(), MetaError> {
        self.propose_done(Command::DeleteProxy { id: id.to_owned() })
            .await
    }

    async fn acquire_fetch(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<FetchLease, MetaError> {
        let term = self.leading_term().await?;
        let ttl = Duration::from_millis(ttl_ms);
        Ok(self
            .fetch_leases
            .acquire(term, key, holder, ttl, Instant::now()))
    }

    async fn release_fetch(&self, key: &str, holder: &str) -> Result<(), MetaError> {
        self.leading_term().await?;
        self.fetch_leases.release(key, holder);
        Ok(())
    }

    async fn change_auth(&self, change: AuthChange) -> Result<u64, MetaError> {
        match self.propose(Command::ChangeAuth(change)).await? {
            CommandOutput::AuthVersion(version) => Ok(version),
            other => Err(MetaError::Internal(format!(
                "access-control change answered {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, weight: u32) -> BlobNodeInfo {
        BlobNodeInfo {
            id,
            addr: format!("n{id}:1"),
            zone: "z".to_owned(),
            weight,
            http_url: None,
        }
    }

    #[test]
    fn staging_node_pick_is_deterministic_and_weighted() {
        let nodes = [node(1, 1), node(2, 0), node(3, 3)];
        // Total weight 4: point 0 falls on node 1, points 1..=3 on node 3, node 2 never.
        let picks: Vec<_> = (0..8).map(|bits| pick_staging_node(bits, &nodes)).collect();
        let expected = [1, 3, 3, 3, 1, 3, 3, 3].map(Some);
        assert_eq!(picks, expected);
        assert_eq!(pick_staging_node(0, &[node(2, 0)]), None);
        assert_eq!(pick_staging_node(0, &[]), None);
    }
}
