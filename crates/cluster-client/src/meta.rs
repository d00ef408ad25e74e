//! [`MetaClient`]: `MetaApi` over gRPC. Writes follow the Raft leader; reads go to every member
//! in turn (each serves linearizable reads through the leader's read index) and fall back to the
//! leader's way when the member asked cannot answer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cluster_api::*;
use oci_model::{Descriptor, Digest, Reference, RepositoryName, Tag};
use parking_lot::Mutex;
use tonic::transport::Channel;
use tonic::{Response, Status};
use wharf_proto::convert::{self, DecodeError};
use wharf_proto::pb;
use wharf_proto::status::status_to_meta_error;
use wharf_proto::{convert_auth, convert_lifecycle, convert_proxy};

type PbMetaClient = pb::meta_client::MetaClient<crate::TracedChannel>;

/// How long and how often a call is retried while the metadata service is unavailable (no
/// leader yet, leader moved, node restarting). Only `Unavailable` is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_elapsed: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest wait for one attempt. A leader cut off from its quorum accepts a write and waits
    /// for a commit that cannot come; past this the attempt counts as unavailable and the client
    /// moves on to another meta node.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_elapsed: Duration::from_secs(10),
            first_backoff: Duration::from_millis(20),
            // Retries during a leader election: short enough that the first write after a new
            // leader is elected waits at most this long.
            max_backoff: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(8),
        }
    }
}

struct Endpoints<C> {
    clients: Vec<(String, C)>,
    current: usize,
    /// Members that could not answer a read, by address, and until when reads skip them.
    resting: HashMap<String, Instant>,
}

/// Longest wait for a read sent to a member in turn before it is tried the leader's way (a
/// follower cut off from the leader answers `Unavailable` within 2 s).
const SPREAD_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How long reads skip a member that could not answer one.
const REST_AFTER_FAILED_READ: Duration = Duration::from_secs(2);

/// Calls one of several meta nodes, moving to the leader a node names (or to the next node) and
/// retrying while the answer is `Unavailable`. Shared by [`MetaClient`] and `AdminClient`.
pub(crate) struct LeaderFollower<C> {
    endpoints: Mutex<Endpoints<C>>,
    policy: RetryPolicy,
    connect: fn(Channel) -> C,
    /// Turn of the next spread read.
    next_read: AtomicUsize,
}

impl<C: Clone> LeaderFollower<C> {
    pub(crate) fn new(
        addrs: &[String],
        policy: RetryPolicy,
        connect: fn(Channel) -> C,
    ) -> Result<LeaderFollower<C>, crate::ChannelError> {
        let clients = addrs
            .iter()
            .map(|addr| Ok((addr.clone(), connect(crate::lazy_channel(addr)?))))
            .collect::<Result<Vec<_>, crate::ChannelError>>()?;
        Ok(LeaderFollower {
            endpoints: Mutex::new(Endpoints {
                clients,
                current: 0,
                resting: HashMap::new(),
            }),
            policy,
            connect,
            next_read: AtomicUsize::new(0),
        })
    }

    fn current(&self) -> Option<C> {
        let endpoints = self.endpoints.lock();
        endpoints
            .clients
            .get(endpoints.current)
            .map(|(_, c)| c.clone())
    }

    /// Points the client at `leader`, adding it if it is a member the client did not know.
    fn follow(&self, leader: Option<&str>) {
        let mut endpoints = self.endpoints.lock();
        let known = leader.and_then(|l| endpoints.clients.iter().position(|(addr, _)| addr == l));
        match (leader, known) {
            (_, Some(index)) => endpoints.current = index,
            (Some(leader), None) => match crate::lazy_channel(leader) {
                Ok(channel) => {
                    endpoints
                        .clients
                        .push((leader.to_owned(), (self.connect)(channel)));
                    endpoints.current = endpoints.clients.len() - 1;
                }
                Err(error) => tracing::warn!(%error, "ignoring unusable leader hint"),
            },
            (None, None) => {
                let len = endpoints.clients.len().max(1);
                endpoints.current = (endpoints.current + 1) % len;
            }
        }
    }

    /// The next member in turn for a read: not the one writes go to (the leader, once known), so
    /// the leader's CPU goes to writes and to the read-index checks, and not one resting after a
    /// failed read. `None` with a single member (the leader's way is then the same).
    fn next_reader(&self) -> Option<(String, C)> {
        let mut endpoints = self.endpoints.lock();
        let len = endpoints.clients.len();
        if len < 2 {
            return None;
        }
        let now = Instant::now();
        endpoints.resting.retain(|_, until| *until > now);
        let start = self.next_read.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|offset| (start + offset) % len)
            .filter(|index| *index != endpoints.current)
            .map(|index| &endpoints.clients[index])
            .find(|(addr, _)| !endpoints.resting.contains_key(addr))
            .cloned()
    }

    fn rest(&self, addr: String) {
        let until = Instant::now() + REST_AFTER_FAILED_READ;
        self.endpoints.lock().resting.insert(addr, until);
    }

    /// Sends a read to the next member in turn: every member serves linearizable reads. When that
    /// member cannot answer (`Unavailable`: cut off from the leader, lagging, stopping; or no
    /// answer in time) it rests a moment and the read goes the leader's way, as [`Self::call`].
    pub(crate) async fn read<R, T, F, Fut>(&self, request: R, call: F) -> Result<T, MetaError>
    where
        R: Clone,
        F: Fn(C, R) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        if let Some((addr, client)) = self.next_reader() {
            let limit = self.policy.attempt_timeout.min(SPREAD_READ_TIMEOUT);
            match tokio::time::timeout(limit, call(client, request.clone())).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => match status_to_meta_error(&status) {
                    MetaError::Unavailable { .. } => self.rest(addr),
                    error => return Err(error),
                },
                Err(_) => self.rest(addr),
            }
        }
        self.send(request, call, Resend::Always).await
    }

    /// Sends `request` (a fresh clone per attempt) to the current leader, following leader hints
    /// and retrying while the service is unavailable, within the retry policy: at most once.
    /// An attempt that may have reached the leader without an answer (the connection broke
    /// mid-call, or no answer in time) is not sent again: the leader may have committed it
    /// before it died, and a copy sent again would be applied a second time after writes that
    /// came later (found by `tests/linearizability.rs`). The caller gets `Unavailable` then,
    /// not knowing whether the change was made, as with any timeout.
    pub(crate) async fn call<R, T, F, Fut>(&self, request: R, call: F) -> Result<T, MetaError>
    where
        R: Clone,
        F: Fn(C, R) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.send(request, call, Resend::Unanswered).await
    }

    async fn send<R, T, F, Fut>(&self, request: R, call: F, resend: Resend) -> Result<T, MetaError>
    where
        R: Clone,
        F: Fn(C, R) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut backoff = self.policy.first_backoff;
        loop {
            let client = self
                .current()
                .ok_or(MetaError::Unavailable { leader: None })?;
            let attempt = call(client, request.clone());
            let error = match tokio::time::timeout(self.policy.attempt_timeout, attempt).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if resend == Resend::Unanswered && may_have_reached(&status) => {
                    tracing::debug!(%status, "meta call broke off unanswered; not sent again");
                    return Err(MetaError::Unavailable { leader: None });
                }
                Ok(Err(status)) => status_to_meta_error(&status),
                Err(_) if resend == Resend::Unanswered => {
                    return Err(MetaError::Unavailable { leader: None });
                }
                Err(_) => MetaError::Unavailable { leader: None },
            };
            let MetaError::Unavailable { leader } = &error else {
                return Err(error);
            };
            if started.elapsed() + backoff > self.policy.max_elapsed {
                return Err(error);
            }
            self.follow(leader.as_deref());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.policy.max_backoff);
        }
    }
}

/// Which failed attempts [`LeaderFollower`] sends again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Every `Unavailable`: for reads, which change nothing.
    Always,
    /// Only those the member answered (a follower naming the leader, a leader without quorum)
    /// or that never reached it (no connection): for changes.
    Unanswered,
}

/// True when a failed call may have reached the member and been acted on: it carries no answer
/// of Wharf's (the exact error a member sends travels in the status details) and the failure is
/// not a connection that was never made.
fn may_have_reached(status: &Status) -> bool {
    if !status.details().is_empty() {
        return false;
    }
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return false;
        }
        source = error.source();
    }
    true
}

/// A leader-following client of the metadata service.
pub struct MetaClient {
    nodes: LeaderFollower<PbMetaClient>,
}

impl MetaClient {
    /// A client for the meta nodes at `addrs` (`host:port`); connects lazily.
    pub fn new(addrs: &[String], policy: RetryPolicy) -> Result<MetaClient, crate::ChannelError> {
        Ok(MetaClient {
            nodes: LeaderFollower::new(addrs, policy, pb_client)?,
        })
    }

    async fn call<R, T, F, Fut>(&self, request: R, call: F) -> Result<T, MetaError>
    where
        R: Clone,
        F: Fn(PbMetaClient, R) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.nodes.call(request, call).await
    }

    /// A read: served by any member (see [`LeaderFollower::read`]).
    async fn read<R, T, F, Fut>(&self, request: R, call: F) -> Result<T, MetaError>
    where
        R: Clone,
        F: Fn(PbMetaClient, R) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.nodes.read(request, call).await
    }
}

fn pb_client(channel: Channel) -> PbMetaClient {
    PbMetaClient::new(crate::traced(channel))
        .max_decoding_message_size(wharf_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(wharf_proto::MAX_MESSAGE_BYTES)
}

fn decode<T>(result: Result<T, DecodeError>) -> Result<T, MetaError> {
    result.map_err(|e| MetaError::Internal(format!("meta node sent {e}")))
}

fn blob_ref(repo: &RepositoryName, digest: &Digest) -> pb::BlobRef {
    pb::BlobRef {
        repo: repo.to_string(),
        digest: digest.to_string(),
    }
}

#[async_trait]
impl MetaApi for MetaClient {
    async fn create_upload(
        &self,
        repo: &RepositoryName,
        avoid: &[BlobNodeId],
    ) -> Result<UploadSession, MetaError> {
        let request = pb::CreateUploadRequest {
            repo: repo.to_string(),
            avoid_nodes: avoid.to_vec(),
        };
        let session = self
            .call(request, |mut c, r| async move { c.create_upload(r).await })
            .await?;
        decode(convert::upload_session_from_pb(session))
    }

    async fn commit_blob(
        &self,
        repo: &RepositoryName,
        blob: BlobInfo,
        upload: Option<UploadId>,
    ) -> Result<(), MetaError> {
        let request = pb::CommitBlobRequest {
            repo: repo.to_string(),
            blob: Some(convert::blob_info_to_pb(&blob)),
            upload_id: upload.map(|id| id.to_string()),
        };
        self.call(request, |mut c, r| async move { c.commit_blob(r).await })
            .await?;
        Ok(())
    }

    async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobInfo, MetaError> {
        let request = blob_ref(repo, digest);
        let blob = self
            .read(request, |mut c, r| async move { c.stat_blob(r).await })
            .await?;
        decode(convert::blob_info_from_pb(blob))
    }

    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<Option<BlobInfo>, MetaError> {
        let request = pb::MountBlobRequest {
            repo: repo.to_string(),
            digest: digest.to_string(),
            from: from.to_string(),
        };
        let response = self
            .call(request, |mut c, r| async move { c.mount_blob(r).await })
            .await?;
        decode(response.blob.map(convert::blob_info_from_pb).transpose())
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<(), MetaError> {
        let request = blob_ref(repo, digest);
        self.call(request, |mut c, r| async move { c.unlink_blob(r).await })
            .await?;
        Ok(())
    }

    async fn put_manifest(&self, manifest: PutManifest) -> Result<(), MetaError> {
        let request = convert::put_manifest_to_pb(&manifest);
        self.call(request, |mut c, r| async move { c.put_manifest(r).await })
            .await?;
        Ok(())
    }

    async fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest, MetaError> {
        let request = pb::GetManifestRequest {
            repo: repo.to_string(),
            reference: reference.to_string(),
        };
        let manifest = self
            .read(request, |mut c, r| async move { c.get_manifest(r).await })
            .await?;
        decode(convert::stored_manifest_from_pb(manifest))
    }

    async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), MetaError> {
        let request = pb::DeleteManifestRequest {
            repo: repo.to_string(),
            digest: digest.to_string(),
        };
        self.call(
            request,
            |mut c, r| async move { c.delete_manifest(r).await },
        )
        .await?;
        Ok(())
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<(), MetaError> {
        let request = pb::DeleteTagRequest {
            repo: repo.to_string(),
            tag: tag.to_string(),
        };
        self.call(request, |mut c, r| async move { c.delete_tag(r).await })
            .await?;
        Ok(())
    }

    async fn list_tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        n: usize,
    ) -> Result<Page, MetaError> {
        let request = pb::ListTagsRequest {
            repo: repo.to_string(),
            last: last.map(str::to_owned),
            n: n as u64,
        };
        let page = self
            .read(request, |mut c, r| async move { c.list_tags(r).await })
            .await?;
        Ok(convert::page_from_pb(page))
    }

    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
        let request = pb::ListRepositoriesRequest {
            last: last.map(str::to_owned),
            n: n as u64,
        };
        let page = self
            .read(
                request,
                |mut c, r| async move { c.list_repositories(r).await },
            )
            .await?;
        Ok(convert::page_from_pb(page))
    }

    async fn list_referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, MetaError> {
        let request = pb::ListReferrersRequest {
            repo: repo.to_string(),
            subject: subject.to_string(),
            artifact_type: artifact_type.map(str::to_owned),
        };
        let response = self
            .read(request, |mut c, r| async move { c.list_referrers(r).await })
            .await?;
        decode(
            response
                .referrers
                .into_iter()
                .map(convert::descriptor_from_pb)
                .collect(),
        )
    }

    async fn register_blob_node(&self, node: BlobNodeInfo) -> Result<(), MetaError> {
        let request = convert::blob_node_to_pb(&node);
        self.call(
            request,
            |mut c, r| async move { c.register_blob_node(r).await },
        )
        .await?;
        Ok(())
    }

    async fn blob_nodes(&self) -> Result<Vec<BlobNodeInfo>, MetaError> {
        let response = self
            .read(pb::Empty {}, |mut c, r| async move {
                c.list_blob_nodes(r).await
            })
            .await?;
        Ok(response
            .nodes
            .into_iter()
            .map(convert::blob_node_from_pb)
            .collect())
    }

    async fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        let map = self
            .read(pb::Empty {}, |mut c, r| async move {
                c.get_cluster_map(r).await
            })
            .await?;
        decode(convert::cluster_map_from_pb(map))
    }

    async fn set_blob_node_state(&self, id: BlobNodeId, state: NodeState) -> Result<(), MetaError> {
        let request = pb::SetBlobNodeStateRequest {
            id,
            state: convert::node_state_to_pb(state).into(),
        };
        self.call(
            request,
            |mut c, r| async move { c.set_blob_node_state(r).await },
        )
        .await?;
        Ok(())
    }

    async fn remove_blob_node(&self, id: BlobNodeId) -> Result<(), MetaError> {
        let request = pb::BlobNodeRef { id };
        self.call(
            request,
            |mut c, r| async move { c.remove_blob_node(r).await },
        )
        .await?;
        Ok(())
    }

    async fn set_replication_policy(&self, policy: ReplicationPolicy) -> Result<(), MetaError> {
        let request = convert::policy_to_pb(&policy);
        self.call(request, |mut c, r| async move {
            c.set_replication_policy(r).await
        })
        .await?;
        Ok(())
    }

    async fn put_placement_rule(&self, rule: PlacementRule) -> Result<(), MetaError> {
        let request = convert::placement_rule_to_pb(&rule);
        self.call(
            request,
            |mut c, r| async move { c.put_placement_rule(r).await },
        )
        .await?;
        Ok(())
    }

    async fn delete_placement_rule(&self, id: &str) -> Result<(), MetaError> {
        let request = pb::DeletePlacementRuleRequest { id: id.to_owned() };
        self.call(request, |mut c, r| async move {
            c.delete_placement_rule(r).await
        })
        .await?;
        Ok(())
    }

    async fn blob_node_heartbeat(
        &self,
        id: BlobNodeId,
        health: cluster_api::BlobNodeHealth,
    ) -> Result<u64, MetaError> {
        let request = pb::HeartbeatRequest {
            id,
            full: health.full,
            free_bytes: health.free_bytes,
        };
        let response = self
            .call(
                request,
                |mut c, r| async move { c.blob_node_heartbeat(r).await },
            )
            .await?;
        Ok(response.epoch)
    }

    async fn add_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        let request = replicas_request(digest, nodes);
        self.call(
            request,
            |mut c, r| async move { c.add_blob_replicas(r).await },
        )
        .await?;
        Ok(())
    }

    async fn remove_blob_replicas(
        &self,
        digest: &Digest,
        nodes: &[BlobNodeId],
    ) -> Result<(), MetaError> {
        let request = replicas_request(digest, nodes);
        self.call(request, |mut c, r| async move {
            c.remove_blob_replicas(r).await
        })
        .await?;
        Ok(())
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<BlobInfo>, MetaError> {
        let request = pb::ListBlobRecordsRequest {
            after: after.map(Digest::to_string),
            n: n as u64,
        };
        let response = self
            .read(
                request,
                |mut c, r| async move { c.list_blob_records(r).await },
            )
            .await?;
        decode(
            response
                .blobs
                .into_iter()
                .map(convert::blob_info_from_pb)
                .collect(),
        )
    }

    async fn doomed_blobs(
        &self,
        node: BlobNodeId,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<DoomedBlob>, MetaError> {
        let request = pb::ListDoomedBlobsRequest {
            node,
            after: after.map(Digest::to_string),
            n: n as u64,
        };
        let response = self
            .read(
                request,
                |mut c, r| async move { c.list_doomed_blobs(r).await },
            )
            .await?;
        response
            .blobs
            .into_iter()
            .map(|blob| {
                Ok(DoomedBlob {
                    digest: decode(convert::digest("digest", &blob.digest))?,
                    size: blob.size,
                    generation: blob.generation,
                })
            })
            .collect()
    }

    async fn confirm_blob_deletions(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<Vec<bool>, MetaError> {
        let request = convert_lifecycle::node_blobs_to_pb(node, blobs);
        let response = self
            .call(request, |mut c, r| async move {
                c.confirm_blob_deletions(r).await
            })
            .await?;
        if response.confirmed.len() != blobs.len() {
            return Err(MetaError::Internal(format!(
                "{} verdicts for {} blobs",
                response.confirmed.len(),
                blobs.len()
            )));
        }
        Ok(response.confirmed)
    }

    async fn blobs_purged(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<(), MetaError> {
        let request = convert_lifecycle::node_blobs_to_pb(node, blobs);
        self.call(request, |mut c, r| async move { c.blobs_purged(r).await })
            .await?;
        Ok(())
    }

    async fn blob_url_key(&self) -> Result<Vec<u8>, MetaError> {
        let response = self
            .call(
                pb::Empty {},
                |mut c, r| async move { c.blob_url_key(r).await },
            )
            .await?;
        Ok(response.key)
    }

    async fn open_uploads(&self, ids: &[UploadId]) -> Result<Vec<UploadId>, MetaError> {
        let request = pb::OpenUploadsRequest {
            ids: ids.iter().map(ToString::to_string).collect(),
        };
        let response = self
            .read(request, |mut c, r| async move { c.open_uploads(r).await })
            .await?;
        response
            .ids
            .iter()
            .map(|id| decode(convert::upload_id("ids", id)))
            .collect()
    }

    async fn collect_garbage(&self) -> Result<SweepReport, MetaError> {
        let response = self
            .call(pb::Empty {}, |mut c, r| async move {
                c.collect_garbage(r).await
            })
            .await?;
        Ok(convert_lifecycle::sweep_from_pb(response))
    }

    async fn check_consistency(&self) -> Result<Vec<String>, MetaError> {
        let response = self
            .call(pb::Empty {}, |mut c, r| async move {
                c.check_consistency(r).await
            })
            .await?;
        Ok(response.problems)
    }

    async fn discard_orphans(
        &self,
        node: BlobNodeId,
        blobs: &[(Digest, u64)],
    ) -> Result<u64, MetaError> {
        let request = pb::DiscardOrphansRequest {
            node,
            blobs: blobs
                .iter()
                .map(|(digest, size)| pb::OrphanBlob {
                    digest: digest.to_string(),
                    size: *size,
                })
                .collect(),
        };
        let response = self
            .call(
                request,
                |mut c, r| async move { c.discard_orphans(r).await },
            )
            .await?;
        Ok(response.doomed)
    }

    async fn usage(&self, namespace: Option<&str>) -> Result<Vec<NamespaceUsage>, MetaError> {
        let request = pb::GetUsageRequest {
            namespace: namespace.map(str::to_owned),
        };
        let response = self
            .read(request, |mut c, r| async move { c.get_usage(r).await })
            .await?;
        Ok(response
            .namespaces
            .into_iter()
            .map(convert_lifecycle::usage_from_pb)
            .collect())
    }

    async fn set_quota(&self, namespace: &str, bytes: Option<u64>) -> Result<(), MetaError> {
        let request = pb::SetQuotaRequest {
            namespace: namespace.to_owned(),
            bytes,
        };
        self.call(request, |mut c, r| async move { c.set_quota(r).await })
            .await?;
        Ok(())
    }

    async fn retention_rules(&self) -> Result<Vec<RetentionRule>, MetaError> {
        let response = self
            .read(pb::Empty {}, |mut c, r| async move {
                c.list_retention_rules(r).await
            })
            .await?;
        Ok(response
            .rules
            .into_iter()
            .map(convert_lifecycle::rule_from_pb)
            .collect())
    }

    async fn put_retention_rule(&self, rule: RetentionRule) -> Result<(), MetaError> {
        let request = convert_lifecycle::rule_to_pb(&rule);
        self.call(
            request,
            |mut c, r| async move { c.put_retention_rule(r).await },
        )
        .await?;
        Ok(())
    }

    async fn delete_retention_rule(&self, id: &str) -> Result<(), MetaError> {
        let request = pb::DeleteRetentionRuleRequest { id: id.to_owned() };
        self.call(request, |mut c, r| async move {
            c.delete_retention_rule(r).await
        })
        .await?;
        Ok(())
    }

    async fn retention_plan(
        &self,
        include_dry_run: bool,
    ) -> Result<Vec<RetentionAction>, MetaError> {
        let request = pb::PlanRetentionRequest { include_dry_run };
        let response = self
            .call(request, |mut c, r| async move { c.plan_retention(r).await })
            .await?;
        response
            .actions
            .into_iter()
            .map(|action| decode(convert_lifecycle::action_from_pb(action)))
            .collect()
    }

    async fn put_cached_manifest(&self, manifest: PutManifest) -> Result<(), MetaError> {
        let request = convert::put_manifest_to_pb(&manifest);
        self.call(
            request,
            |mut c, r| async move { c.put_cached_manifest(r).await },
        )
        .await?;
        Ok(())
    }

    async fn touch_cached(&self, entries: &[(RepositoryName, Digest)]) -> Result<(), MetaError> {
        let request = pb::TouchCachedRequest {
            entries: entries
                .iter()
                .map(|(repo, digest)| pb::CachedRef {
                    repo: repo.to_string(),
                    digest: digest.to_string(),
                })
                .collect(),
        };
        self.call(request, |mut c, r| async move { c.touch_cached(r).await })
            .await?;
        Ok(())
    }

    async fn replication_rules(&self) -> Result<Vec<ReplicationRule>, MetaError> {
        let response = self
            .read(pb::Empty {}, |mut c, r| async move {
                c.list_replication_rules(r).await
            })
            .await?;
        response
            .rules
            .into_iter()
            .map(|rule| decode(convert_proxy::replication_rule_from_pb(rule)))
            .collect()
    }

    async fn put_replication_rule(&self, rule: ReplicationRule) -> Result<(), MetaError> {
        let request = convert_proxy::replication_rule_to_pb(&rule);
        self.call(request, |mut c, r| async move {
            c.put_replication_rule(r).await
        })
        .await?;
        Ok(())
    }

    async fn delete_replication_rule(&self, id: &str) -> Result<(), MetaError> {
        let request = pb::DeleteReplicationRuleRequest { id: id.to_owned() };
        self.call(request, |mut c, r| async move {
            c.delete_replication_rule(r).await
        })
        .await?;
        Ok(())
    }

    async fn replication_backlog(
        &self,
        limit: usize,
    ) -> Result<Vec<ReplicationBacklog>, MetaError> {
        let request = pb::ReplicationBacklogRequest {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        let response = self
            .read(request, |mut c, r| async move {
                c.get_replication_backlog(r).await
            })
            .await?;
        response
            .entries
            .into_iter()
            .map(|entry| decode(convert_proxy::backlog_from_pb(entry)))
            .collect()
    }

    async fn replication_done(&self, entry: ReplicationBacklog) -> Result<(), MetaError> {
        let request = convert_proxy::backlog_to_pb(&entry);
        self.call(
            request,
            |mut c, r| async move { c.replication_done(r).await },
        )
        .await?;
        Ok(())
    }

    async fn replication_status(&self) -> Result<Vec<ReplicationStatus>, MetaError> {
        let response = self
            .read(pb::Empty {}, |mut c, r| async move {
                c.get_replication_status(r).await
            })
            .await?;
        Ok(response
            .rules
            .into_iter()
            .map(convert_proxy::replication_status_from_pb)
            .collect())
    }

    async fn record_replication(&self, status: ReplicationStatus) -> Result<(), MetaError> {
        let request = convert_proxy::replication_status_to_pb(&status);
        self.call(
            request,
            |mut c, r| async move { c.record_replication(r).await },
        )
        .await?;
        Ok(())
    }

    async fn proxies(&self) -> Result<Vec<ProxyUpstream>, MetaError> {
        let response = self
            .read(
                pb::Empty {},
                |mut c, r| async move { c.list_proxies(r).await },
            )
            .await?;
        Ok(response
            .proxies
            .into_iter()
            .map(convert_proxy::proxy_from_pb)
            .collect())
    }

    async fn put_proxy(&self, proxy: ProxyUpstream) -> Result<(), MetaError> {
        let request = convert_proxy::proxy_to_pb(&proxy);
        self.call(request, |mut c, r| async move { c.put_proxy(r).await })
            .await?;
        Ok(())
    }

    async fn delete_proxy(&self, id: &str) -> Result<(), MetaError> {
        let request = pb::DeleteProxyRequest { id: id.to_owned() };
        self.call(request, |mut c, r| async move { c.delete_proxy(r).await })
            .await?;
        Ok(())
    }

    async fn acquire_fetch(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<FetchLease, MetaError> {
        let request = pb::AcquireFetchRequest {
            key: key.to_owned(),
            holder: holder.to_owned(),
            ttl_ms,
        };
        let response = self
            .call(request, |mut c, r| async move { c.acquire_fetch(r).await })
            .await?;
        Ok(convert_proxy::lease_from_pb(response))
    }

    async fn release_fetch(&self, key: &str, holder: &str) -> Result<(), MetaError> {
        let request = pb::ReleaseFetchRequest {
            key: key.to_owned(),
            holder: holder.to_owned(),
        };
        self.call(request, |mut c, r| async move { c.release_fetch(r).await })
            .await?;
        Ok(())
    }

    async fn auth_state(&self, known_version: Option<u64>) -> Result<Option<AuthState>, MetaError> {
        let request = pb::GetAuthStateRequest { known_version };
        let response = self
            .read(request, |mut c, r| async move { c.get_auth_state(r).await })
            .await?;
        response
            .state
            .map(|state| decode(convert_auth::auth_state_from_pb(state)))
            .transpose()
    }

    async fn change_auth(&self, change: AuthChange) -> Result<u64, MetaError> {
        let request = convert_auth::auth_change_to_pb(&change);
        let response = self
            .call(request, |mut c, r| async move { c.change_auth(r).await })
            .await?;
        Ok(response.version)
    }
}

fn replicas_request(digest: &Digest, nodes: &[BlobNodeId]) -> pb::BlobReplicasRequest {
    pb::BlobReplicasRequest {
        digest: digest.to_string(),
        nodes: nodes.to_vec(),
    }
}
