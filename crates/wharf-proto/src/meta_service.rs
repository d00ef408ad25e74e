//! [`MetaGrpc`]: the `wharf.v1.Meta` gRPC service over any [`MetaApi`].

use std::sync::Arc;

use cluster_api::MetaApi;
use oci_model::Reference;
use tonic::{Request, Response, Status};

use crate::convert::{self, DecodeError};
use crate::pb::{self, meta_server::Meta};
use crate::status::{invalid, meta_error_to_status};
use crate::{convert_auth, convert_lifecycle, convert_proxy};

/// Serves a `MetaApi` implementation over gRPC.
#[derive(Clone)]
pub struct MetaGrpc {
    api: Arc<dyn MetaApi>,
}

impl MetaGrpc {
    pub fn new(api: Arc<dyn MetaApi>) -> MetaGrpc {
        MetaGrpc { api }
    }

    /// The tonic service, with message limits sized for manifests.
    pub fn into_server(self) -> pb::meta_server::MetaServer<MetaGrpc> {
        pb::meta_server::MetaServer::new(self)
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES)
    }
}

fn decoded<T>(result: Result<T, DecodeError>) -> Result<T, Status> {
    result.map_err(invalid)
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U>(result: Result<T, cluster_api::MetaError>, map: impl FnOnce(T) -> U) -> Reply<U> {
    result
        .map(|value| Response::new(map(value)))
        .map_err(|error| meta_error_to_status(&error))
}

#[tonic::async_trait]
impl Meta for MetaGrpc {
    async fn create_upload(
        &self,
        request: Request<pb::CreateUploadRequest>,
    ) -> Reply<pb::UploadSession> {
        let repo = decoded(convert::repo("repo", &request.get_ref().repo))?;
        let avoid = &request.get_ref().avoid_nodes;
        reply(self.api.create_upload(&repo, avoid).await, |s| {
            convert::upload_session_to_pb(&s)
        })
    }

    async fn commit_blob(&self, request: Request<pb::CommitBlobRequest>) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let blob = request.blob.ok_or_else(|| invalid("missing blob"))?;
        let blob = decoded(convert::blob_info_from_pb(blob))?;
        let upload = request
            .upload_id
            .map(|id| decoded(convert::upload_id("upload_id", &id)))
            .transpose()?;
        reply(self.api.commit_blob(&repo, blob, upload).await, |_| {
            pb::Empty {}
        })
    }

    async fn stat_blob(&self, request: Request<pb::BlobRef>) -> Reply<pb::BlobInfo> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let digest = decoded(convert::digest("digest", &request.digest))?;
        reply(self.api.stat_blob(&repo, &digest).await, |b| {
            convert::blob_info_to_pb(&b)
        })
    }

    async fn mount_blob(
        &self,
        request: Request<pb::MountBlobRequest>,
    ) -> Reply<pb::MountBlobResponse> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let digest = decoded(convert::digest("digest", &request.digest))?;
        let from = decoded(convert::repo("from", &request.from))?;
        reply(self.api.mount_blob(&repo, &digest, &from).await, |blob| {
            pb::MountBlobResponse {
                blob: blob.as_ref().map(convert::blob_info_to_pb),
            }
        })
    }

    async fn unlink_blob(&self, request: Request<pb::BlobRef>) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let digest = decoded(convert::digest("digest", &request.digest))?;
        reply(self.api.unlink_blob(&repo, &digest).await, |_| pb::Empty {})
    }

    async fn put_manifest(&self, request: Request<pb::PutManifestRequest>) -> Reply<pb::Empty> {
        let manifest = decoded(convert::put_manifest_from_pb(request.into_inner()))?;
        reply(self.api.put_manifest(manifest).await, |_| pb::Empty {})
    }

    async fn get_manifest(
        &self,
        request: Request<pb::GetManifestRequest>,
    ) -> Reply<pb::StoredManifest> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let reference = Reference::parse(&request.reference).map_err(invalid)?;
        reply(self.api.get_manifest(&repo, &reference).await, |m| {
            convert::stored_manifest_to_pb(&m)
        })
    }

    async fn delete_manifest(
        &self,
        request: Request<pb::DeleteManifestRequest>,
    ) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let digest = decoded(convert::digest("digest", &request.digest))?;
        reply(self.api.delete_manifest(&repo, &digest).await, |_| {
            pb::Empty {}
        })
    }

    async fn delete_tag(&self, request: Request<pb::DeleteTagRequest>) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let tag = oci_model::Tag::parse(&request.tag).map_err(invalid)?;
        reply(self.api.delete_tag(&repo, &tag).await, |_| pb::Empty {})
    }

    async fn list_tags(&self, request: Request<pb::ListTagsRequest>) -> Reply<pb::Page> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let n = usize::try_from(request.n).unwrap_or(usize::MAX);
        let page = self.api.list_tags(&repo, request.last.as_deref(), n).await;
        reply(page, convert::page_to_pb)
    }

    async fn list_repositories(
        &self,
        request: Request<pb::ListRepositoriesRequest>,
    ) -> Reply<pb::Page> {
        let request = request.into_inner();
        let n = usize::try_from(request.n).unwrap_or(usize::MAX);
        let page = self.api.list_repositories(request.last.as_deref(), n).await;
        reply(page, convert::page_to_pb)
    }

    async fn list_referrers(
        &self,
        request: Request<pb::ListReferrersRequest>,
    ) -> Reply<pb::ListReferrersResponse> {
        let request = request.into_inner();
        let repo = decoded(convert::repo("repo", &request.repo))?;
        let subject = decoded(convert::digest("subject", &request.subject))?;
        let referrers = self
            .api
            .list_referrers(&repo, &subject, request.artifact_type.as_deref())
            .await;
        reply(referrers, |referrers| pb::ListReferrersResponse {
            referrers: referrers.iter().map(convert::descriptor_to_pb).collect(),
        })
    }

    async fn register_blob_node(&self, request: Request<pb::BlobNodeInfo>) -> Reply<pb::Empty> {
        let node = convert::blob_node_from_pb(request.into_inner());
        reply(self.api.register_blob_node(node).await, |_| pb::Empty {})
    }

    async fn list_blob_nodes(
        &self,
        _request: Request<pb::Empty>,
    ) -> Reply<pb::ListBlobNodesResponse> {
        reply(self.api.blob_nodes().await, |nodes| {
            pb::ListBlobNodesResponse {
                nodes: nodes.iter().map(convert::blob_node_to_pb).collect(),
            }
        })
    }

    async fn get_cluster_map(&self, _request: Request<pb::Empty>) -> Reply<pb::ClusterMap> {
        reply(self.api.cluster_map().await, |map| {
            convert::cluster_map_to_pb(&map)
        })
    }

    async fn set_blob_node_state(
        &self,
        request: Request<pb::SetBlobNodeStateRequest>,
    ) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let state = decoded(convert::node_state_from_pb("state", request.state))?;
        let result = self.api.set_blob_node_state(request.id, state).await;
        reply(result, |_| pb::Empty {})
    }

    async fn remove_blob_node(&self, request: Request<pb::BlobNodeRef>) -> Reply<pb::Empty> {
        let id = request.into_inner().id;
        reply(self.api.remove_blob_node(id).await, |_| pb::Empty {})
    }

    async fn set_replication_policy(
        &self,
        request: Request<pb::ReplicationPolicy>,
    ) -> Reply<pb::Empty> {
        let policy = convert::policy_from_pb(request.into_inner());
        reply(self.api.set_replication_policy(policy).await, |_| {
            pb::Empty {}
        })
    }

    async fn put_placement_rule(&self, request: Request<pb::PlacementRule>) -> Reply<pb::Empty> {
        let rule = convert::placement_rule_from_pb(request.into_inner());
        reply(self.api.put_placement_rule(rule).await, |_| pb::Empty {})
    }

    async fn delete_placement_rule(
        &self,
        request: Request<pb::DeletePlacementRuleRequest>,
    ) -> Reply<pb::Empty> {
        let id = request.into_inner().id;
        reply(self.api.delete_placement_rule(&id).await, |_| pb::Empty {})
    }

    async fn blob_node_heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Reply<pb::HeartbeatResponse> {
        let request = request.into_inner();
        let health = cluster_api::BlobNodeHealth {
            full: request.full,
            free_bytes: request.free_bytes,
        };
        reply(
            self.api.blob_node_heartbeat(request.id, health).await,
            |epoch| pb::HeartbeatResponse { epoch },
        )
    }

    async fn add_blob_replicas(
        &self,
        request: Request<pb::BlobReplicasRequest>,
    ) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let digest = decoded(convert::digest("digest", &request.digest))?;
        let result = self.api.add_blob_replicas(&digest, &request.nodes).await;
        reply(result, |_| pb::Empty {})
    }

    async fn remove_blob_replicas(
        &self,
        request: Request<pb::BlobReplicasRequest>,
    ) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let digest = decoded(convert::digest("digest", &request.digest))?;
        let result = self.api.remove_blob_replicas(&digest, &request.nodes).await;
        reply(result, |_| pb::Empty {})
    }

    async fn list_blob_records(
        &self,
        request: Request<pb::ListBlobRecordsRequest>,
    ) -> Reply<pb::ListBlobRecordsResponse> {
        let request = request.into_inner();
        let after = request
            .after
            .map(|after| decoded(convert::digest("after", &after)))
            .transpose()?;
        let n = usize::try_from(request.n).unwrap_or(usize::MAX);
        reply(self.api.list_blobs(after.as_ref(), n).await, |blobs| {
            pb::ListBlobRecordsResponse {
                blobs: blobs.iter().map(convert::blob_info_to_pb).collect(),
            }
        })
    }

    async fn list_doomed_blobs(
        &self,
        request: Request<pb::ListDoomedBlobsRequest>,
    ) -> Reply<pb::ListDoomedBlobsResponse> {
        let request = request.into_inner();
        let after = request
            .after
            .map(|after| decoded(convert::digest("after", &after)))
            .transpose()?;
        let n = usize::try_from(request.n).unwrap_or(usize::MAX);
        let result = self.api.doomed_blobs(request.node, after.as_ref(), n).await;
        reply(result, |blobs| pb::ListDoomedBlobsResponse {
            blobs: blobs
                .iter()
                .map(|blob| pb::DoomedBlob {
                    digest: blob.digest.to_string(),
                    size: blob.size,
                    generation: blob.generation,
                })
                .collect(),
        })
    }

    async fn confirm_blob_deletions(
        &self,
        request: Request<pb::NodeBlobGenerations>,
    ) -> Reply<pb::ConfirmBlobDeletionsResponse> {
        let request = request.into_inner();
        let blobs = decoded(convert_lifecycle::node_blobs_from_pb(&request))?;
        let result = self.api.confirm_blob_deletions(request.node, &blobs).await;
        reply(result, |confirmed| pb::ConfirmBlobDeletionsResponse {
            confirmed,
        })
    }

    async fn blobs_purged(&self, request: Request<pb::NodeBlobGenerations>) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let blobs = decoded(convert_lifecycle::node_blobs_from_pb(&request))?;
        let result = self.api.blobs_purged(request.node, &blobs).await;
        reply(result, |_| pb::Empty {})
    }

    async fn blob_url_key(&self, _request: Request<pb::Empty>) -> Reply<pb::BlobUrlKeyResponse> {
        reply(self.api.blob_url_key().await, |key| {
            pb::BlobUrlKeyResponse { key }
        })
    }

    async fn open_uploads(
        &self,
        request: Request<pb::OpenUploadsRequest>,
    ) -> Reply<pb::OpenUploadsResponse> {
        let ids = request
            .into_inner()
            .ids
            .iter()
            .map(|id| decoded(convert::upload_id("ids", id)))
            .collect::<Result<Vec<_>, _>>()?;
        reply(self.api.open_uploads(&ids).await, |open| {
            pb::OpenUploadsResponse {
                ids: open.iter().map(ToString::to_string).collect(),
            }
        })
    }

    async fn collect_garbage(&self, _request: Request<pb::Empty>) -> Reply<pb::SweepReport> {
        reply(self.api.collect_garbage().await, |report| {
            convert_lifecycle::sweep_to_pb(&report)
        })
    }

    async fn check_consistency(
        &self,
        _request: Request<pb::Empty>,
    ) -> Reply<pb::CheckConsistencyResponse> {
        reply(self.api.check_consistency().await, |problems| {
            pb::CheckConsistencyResponse {
                problems: problems.clone(),
            }
        })
    }

    async fn discard_orphans(
        &self,
        request: Request<pb::DiscardOrphansRequest>,
    ) -> Reply<pb::DiscardOrphansResponse> {
        let request = request.into_inner();
        let blobs = request
            .blobs
            .iter()
            .map(|blob| decoded(convert::digest("digest", &blob.digest)).map(|d| (d, blob.size)))
            .collect::<Result<Vec<_>, _>>()?;
        let result = self.api.discard_orphans(request.node, &blobs).await;
        reply(result, |doomed| pb::DiscardOrphansResponse { doomed })
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Reply<pb::GetUsageResponse> {
        let namespace = request.into_inner().namespace;
        reply(self.api.usage(namespace.as_deref()).await, |usage| {
            pb::GetUsageResponse {
                namespaces: usage.iter().map(convert_lifecycle::usage_to_pb).collect(),
            }
        })
    }

    async fn set_quota(&self, request: Request<pb::SetQuotaRequest>) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let result = self.api.set_quota(&request.namespace, request.bytes).await;
        reply(result, |_| pb::Empty {})
    }

    async fn put_cached_manifest(
        &self,
        request: Request<pb::PutManifestRequest>,
    ) -> Reply<pb::Empty> {
        let manifest = decoded(convert::put_manifest_from_pb(request.into_inner()))?;
        reply(self.api.put_cached_manifest(manifest).await, |_| {
            pb::Empty {}
        })
    }

    async fn touch_cached(&self, request: Request<pb::TouchCachedRequest>) -> Reply<pb::Empty> {
        let entries = request
            .into_inner()
            .entries
            .into_iter()
            .map(|entry| {
                Ok((
                    convert::repo("repo", &entry.repo)?,
                    convert::digest("digest", &entry.digest)?,
                ))
            })
            .collect::<Result<Vec<_>, DecodeError>>();
        let entries = decoded(entries)?;
        reply(self.api.touch_cached(&entries).await, |_| pb::Empty {})
    }

    async fn list_replication_rules(
        &self,
        _request: Request<pb::Empty>,
    ) -> Reply<pb::ListReplicationRulesResponse> {
        reply(self.api.replication_rules().await, |rules| {
            pb::ListReplicationRulesResponse {
                rules: rules
                    .iter()
                    .map(convert_proxy::replication_rule_to_pb)
                    .collect(),
            }
        })
    }

    async fn put_replication_rule(
        &self,
        request: Request<pb::ReplicationRule>,
    ) -> Reply<pb::Empty> {
        let rule = decoded(convert_proxy::replication_rule_from_pb(
            request.into_inner(),
        ))?;
        reply(self.api.put_replication_rule(rule).await, |_| pb::Empty {})
    }

    async fn delete_replication_rule(
        &self,
        request: Request<pb::DeleteReplicationRuleRequest>,
    ) -> Reply<pb::Empty> {
        let id = request.into_inner().id;
        reply(
            self.api.delete_replication_rule(&id).await,
            |_| pb::Empty {},
        )
    }

    async fn get_replication_backlog(
        &self,
        request: Request<pb::ReplicationBacklogRequest>,
    ) -> Reply<pb::ReplicationBacklogResponse> {
        let limit = request.into_inner().limit.clamp(1, 10_000) as usize;
        reply(self.api.replication_backlog(limit).await, |entries| {
            pb::ReplicationBacklogResponse {
                entries: entries.iter().map(convert_proxy::backlog_to_pb).collect(),
            }
        })
    }

    async fn replication_done(
        &self,
        request: Request<pb::ReplicationBacklogEntry>,
    ) -> Reply<pb::Empty> {
        let entry = decoded(convert_proxy::backlog_from_pb(request.into_inner()))?;
        reply(self.api.replication_done(entry).await, |_| pb::Empty {})
    }

    async fn get_replication_status(
        &self,
        _request: Request<pb::Empty>,
    ) -> Reply<pb::ReplicationStatusResponse> {
        reply(self.api.replication_status().await, |rules| {
            pb::ReplicationStatusResponse {
                rules: rules
                    .iter()
                    .map(convert_proxy::replication_status_to_pb)
                    .collect(),
            }
        })
    }

    async fn record_replication(
        &self,
        request: Request<pb::ReplicationStatus>,
    ) -> Reply<pb::Empty> {
        let status = convert_proxy::replication_status_from_pb(request.into_inner());
        reply(self.api.record_replication(status).await, |_| pb::Empty {})
    }

    async fn list_proxies(&self, _request: Request<pb::Empty>) -> Reply<pb::ListProxiesResponse> {
        reply(self.api.proxies().await, |proxies| {
            pb::ListProxiesResponse {
                proxies: proxies.iter().map(convert_proxy::proxy_to_pb).collect(),
            }
        })
    }

    async fn put_proxy(&self, request: Request<pb::ProxyUpstream>) -> Reply<pb::Empty> {
        let proxy = convert_proxy::proxy_from_pb(request.into_inner());
        reply(self.api.put_proxy(proxy).await, |_| pb::Empty {})
    }

    async fn delete_proxy(&self, request: Request<pb::DeleteProxyRequest>) -> Reply<pb::Empty> {
        let id = request.into_inner().id;
        reply(self.api.delete_proxy(&id).await, |_| pb::Empty {})
    }

    async fn acquire_fetch(
        &self,
        request: Request<pb::AcquireFetchRequest>,
    ) -> Reply<pb::FetchLease> {
        let request = request.into_inner();
        let lease = self
            .api
            .acquire_fetch(&request.key, &request.holder, request.ttl_ms)
            .await;
        reply(lease, |lease| convert_proxy::lease_to_pb(&lease))
    }

    async fn release_fetch(&self, request: Request<pb::ReleaseFetchRequest>) -> Reply<pb::Empty> {
        let request = request.into_inner();
        let released = self.api.release_fetch(&request.key, &request.holder).await;
        reply(released, |_| pb::Empty {})
    }

    async fn list_retention_rules(
        &self,
        _request: Request<pb::Empty>,
    ) -> Reply<pb::ListRetentionRulesResponse> {
        reply(self.api.retention_rules().await, |rules| {
            pb::ListRetentionRulesResponse {
                rules: rules.iter().map(convert_lifecycle::rule_to_pb).collect(),
            }
        })
    }

    async fn put_retention_rule(&self, request: Request<pb::RetentionRule>) -> Reply<pb::Empty> {
        let rule = convert_lifecycle::rule_from_pb(request.into_inner());
        reply(self.api.put_retention_rule(rule).await, |_| pb::Empty {})
    }

    async fn delete_retention_rule(
        &self,
        request: Request<pb::DeleteRetentionRuleRequest>,
    ) -> Reply<pb::Empty> {
        let id = request.into_inner().id;
        reply(self.api.delete_retention_rule(&id).await, |_| pb::Empty {})
    }

    async fn plan_retention(
        &self,
        request: Request<pb::PlanRetentionRequest>,
    ) -> Reply<pb::PlanRetentionResponse> {
        let include_dry_run = request.into_inner().include_dry_run;
        reply(self.api.retention_plan(include_dry_run).await, |actions| {
            pb::PlanRetentionResponse {
                actions: actions
                    .iter()
                    .map(convert_lifecycle::action_to_pb)
                    .collect(),
            }
        })
    }

    async fn get_auth_state(
        &self,
        request: Request<pb::GetAuthStateRequest>,
    ) -> Reply<pb::GetAuthStateResponse> {
        let known = request.into_inner().known_version;
        reply(self.api.auth_state(known).await, |state| {
            pb::GetAuthStateResponse {
                state: state.as_ref().map(convert_auth::auth_state_to_pb),
            }
        })
    }

    async fn change_auth(&self, request: Request<pb::AuthChange>) -> Reply<pb::AuthChangeResponse> {
        let change = decoded(convert_auth::auth_change_from_pb(request.into_inner()))?;
        reply(self.api.change_auth(change).await, |version| {
            pb::AuthChangeResponse { version }
        })
    }
}
