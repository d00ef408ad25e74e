//! Starting each role on listeners the caller (or `start_*` here) bound. `serve` is the three roles
//! in one process: the gateway and the blob node call the meta voter's `MetaApi` and the gateway
//! the blob node's `BlobApi` in-process (no loopback gRPC on the data path); the gRPC services run
//! as well, for `wharf admin` and for anything else that speaks to a member.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_api::{BlobNodeInfo, BlobNodes, MetaApi};
use cluster_client::{GrpcBlobNodes, MetaClient, RetryPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wharf_proto::{BlobGrpc, MetaGrpc};
use wharf_tls::ReloadingCertResolver;

use crate::config::WharfConfig;
use crate::local::LocalFirstBlobNodes;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("meta node failed to start: {0}")]
    Meta(String),
    #[error("blob node failed to start: {0}")]
    Blob(String),
    #[error("gateway failed to start: {0}")]
    Gateway(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] wharf_tls::TlsError),
    #[error("gRPC server TLS: {0}")]
    GrpcTls(String),
}

/// How long a graceful stop waits for what is in flight: a request a slow client holds open,
/// or a write on a member that lost its quorum (which would otherwise wait for a commit that
/// cannot come) ends by then.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Running roles: their bound addresses and the means to stop them.
pub struct Running {
    /// The OCI HTTP address, for roles that serve one.
    pub http_addr: Option<SocketAddr>,
    /// The gRPC address, for roles that serve one.
    pub grpc_addr: Option<SocketAddr>,
    /// The separate Prometheus address, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// Whether `http_addr` serves HTTPS (`[tls]`).
    pub https: bool,
    /// The blob node's endpoint for redirected GETs, when `blob_http_listen` is set.
    pub blob_http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    meta: Option<meta_node::MetaNode>,
    blob_tasks: Option<blob_node::BackgroundTasks>,
}

impl Running {
    /// Resolves when any role's server task ends (an error or a stop).
    pub async fn wait_any(&mut self) {
        let _ = self.tasks.join_next().await;
    }

    /// Fault injection for the meta role's Raft traffic (tests cut voters apart with it); `None`
    /// for roles without a meta voter.
    pub fn meta_faults(&self) -> Option<Arc<meta_node::NetworkFaults>> {
        self.meta.as_ref().map(meta_node::MetaNode::faults)
    }

    /// Stops every role gracefully and waits for them: in-flight requests and passes get
    /// [`STOP_GRACE`] to finish, then the role tasks still running are aborted (a client that
    /// got no answer was acknowledged nothing). A gRPC request still held then ends with the
    /// meta node's shutdown below, which answers the writes it was waiting on.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(blob_tasks) = self.blob_tasks.take() {
            blob_tasks.stop().await;
        }
        let drained = tokio::time::timeout(STOP_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                tasks = self.tasks.len(),
                grace_ms = STOP_GRACE.as_millis() as u64,
                "work still in flight after the stop grace is aborted"
            );
            self.tasks.shutdown().await;
        }
        if let Some(meta) = self.meta.take() {
            if let Err(error) = meta.shutdown().await {
                tracing::warn!(%error, "meta node did not shut down cleanly");
            }
        }
    }
}

pub async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: "listener".into(),
        source,
    })
}

/// `serve`: one meta voter, one blob node and a gateway, all in this process.
pub async fn start_serve(config: &WharfConfig) -> Result<Running, StartError> {
    config.validate()?;
    let tls = RoleTls::load(config)?;
    let grpc_listener = bind(&config.grpc_listen).await?;
    let grpc_addr = local_addr(&grpc_listener)?;
    let http_listener = bind(&config.listen).await?;
    let http_addr = local_addr(&http_listener)?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| grpc_addr.to_string());

    let serve_config = WharfConfig {
        bootstrap: Some(true),
        join: Vec::new(),
        read_replica: false,
        ..config.clone()
    };
    let meta = open_meta(&serve_config, &config.data.join("meta"), &advertise).await?;
    let meta_api: Arc<dyn MetaApi> = meta.api();
    let (mut blob, blob_tasks) =
        open_blob(config, &config.data.join("blob"), &advertise, &meta_api).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let grpc = tls
        .grpc_server()?
        .add_service(MetaGrpc::new(meta.api()).into_server())
        .add_service(meta.raft_service())
        .add_service(meta.admin_service())
        .add_service(BlobGrpc::new(blob.node.clone()).into_server());
    spawn_grpc(&mut tasks, grpc, grpc_listener, shutdown.clone());
    let blob_http_addr = spawn_blob_http(&mut tasks, &mut blob, &meta_api, shutdown.clone())?;
    register_blob_node(&*meta_api, &blob).await?;
    let blobs = Arc::new(LocalFirstBlobNodes::new(
        blob.info.id,
        blob.node.clone(),
        Arc::new(GrpcBlobNodes::new(meta_api.clone())),
    ));
    spawn_replicator(
        &mut tasks,
        config,
        &meta,
        (meta_api.clone(), blobs.clone()),
        shutdown.clone(),
    );
    spawn_configured_state(&mut tasks, config, meta_api.clone(), shutdown.clone());
    spawn_gateway(
        &mut tasks,
        config,
        (meta_api, blobs),
        (http_listener, tls.https.clone()),
        shutdown.clone(),
    );
    let metrics_addr = spawn_metrics(&mut tasks, config, shutdown.clone()).await?;
    Ok(Running {
        metrics_addr,
        blob_http_addr,
        https: tls.https.is_some(),
        http_addr: Some(http_addr),
        grpc_addr: Some(grpc_addr),
        shutdown,
        tasks,
        meta: Some(meta),
        blob_tasks: Some(blob_tasks),
    })
}

/// `meta`: one meta voter serving Raft and the Meta service over gRPC.
pub async fn start_meta(config: &WharfConfig) -> Result<Running, StartError> {
    config.validate()?;
    let tls = RoleTls::load(config)?;
    let listener = bind(&config.grpc_listen).await?;
    let grpc_addr = local_addr(&listener)?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| grpc_addr.to_string());
    let meta = open_meta(config, &config.data, &advertise).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let grpc = tls
        .grpc_server()?
        .add_service(MetaGrpc::new(meta.api()).into_server())
        .add_service(meta.raft_service())
        .add_service(meta.admin_service());
    spawn_grpc(&mut tasks, grpc, listener, shutdown.clone());
    let meta_api: Arc<dyn MetaApi> = meta.api();
    let blobs: Arc<dyn BlobNodes> = Arc::new(GrpcBlobNodes::new(meta_api.clone()));
    spawn_configured_state(&mut tasks, config, meta_api.clone(), shutdown.clone());
    spawn_replicator(
        &mut tasks,
        config,
        &meta,
        (meta_api, blobs),
        shutdown.clone(),
    );
    let metrics_addr = spawn_metrics(&mut tasks, config, shutdown.clone()).await?;
    Ok(Running {
        metrics_addr,
        blob_http_addr: None,
        https: false,
        http_addr: None,
        grpc_addr: Some(grpc_addr),
        shutdown,
        tasks,
        meta: Some(meta),
        blob_tasks: None,
    })
}

/// `blob`: one blob node serving the Blob service, registered in the cluster map.
pub async fn start_blob(config: &WharfConfig) -> Result<Running, StartError> {
    config.validate()?;
    let tls = RoleTls::load(config)?;
    let listener = bind(&config.grpc_listen).await?;
    let grpc_addr = local_addr(&listener)?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| grpc_addr.to_string());
    let meta: Arc<dyn MetaApi> = Arc::new(meta_client(&config.meta.addresses)?);
    let (mut blob, blob_tasks) = open_blob(config, &config.data, &advertise, &meta).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let grpc = tls
        .grpc_server()?
        .add_service(BlobGrpc::new(blob.node.clone()).into_server());
    spawn_grpc(&mut tasks, grpc, listener, shutdown.clone());
    let blob_http_addr = spawn_blob_http(&mut tasks, &mut blob, &meta, shutdown.clone())?;
    register_blob_node(&*meta, &blob).await?;
    let metrics_addr = spawn_metrics(&mut tasks, config, shutdown.clone()).await?;
    Ok(Running {
        metrics_addr,
        blob_http_addr,
        https: false,
        http_addr: None,
        grpc_addr: Some(grpc_addr),
        shutdown,
        tasks,
        meta: None,
        blob_tasks: Some(blob_tasks),
    })
}

/// `gateway`: the OCI HTTP API over the meta nodes in `config.meta`.
pub async fn start_gateway(config: &WharfConfig) -> Result<Running, StartError> {
    config.validate()?;
    let tls = RoleTls::load(config)?;
    let listener = bind(&config.listen).await?;
    let http_addr = local_addr(&listener)?;
    let meta: Arc<dyn MetaApi> = Arc::new(meta_client(&config.meta.addresses)?);
    let blobs = Arc::new(GrpcBlobNodes::new(meta.clone()));
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    spawn_configured_state(&mut tasks, config, meta.clone(), shutdown.clone());
    spawn_gateway(
        &mut tasks,
        config,
        (meta, blobs),
        (listener, tls.https.clone()),
        shutdown.clone(),
    );
    let metrics_addr = spawn_metrics(&mut tasks, config, shutdown.clone()).await?;
    Ok(Running {
        metrics_addr,
        blob_http_addr: None,
        https: tls.https.is_some(),
        http_addr: Some(http_addr),
        grpc_addr: None,
        shutdown,
        tasks,
        meta: None,
        blob_tasks: None,
    })
}

async fn open_meta(
    config: &WharfConfig,
    dir: &Path,
    advertise: &str,
) -> Result<meta_node::MetaNode, StartError> {
    let defaults = meta_node::MetaConfig::default();
    let meta_config = meta_node::MetaConfig {
        node_id: config.node_id,
        data_dir: dir.to_owned(),
        advertise_addr: advertise.to_owned(),
        bootstrap: config.bootstrap.unwrap_or(config.join.is_empty()),
        join: config.join.clone(),
        read_replica: config.read_replica,
        blob_down_after_ms: config
            .blob_down_after_ms
            .unwrap_or(defaults.blob_down_after_ms),
        gc_interval_ms: config.gc.interval_ms,
        upload_grace_ms: config.gc.upload_grace_ms,
        upload_expiry_ms: config.gc.upload_expiry_ms,
        memory_budget: config.meta.memory_budget.unwrap_or(defaults.memory_budget),
        placement_check_interval_ms: config
            .meta
            .placement_check_interval_ms
            .unwrap_or(defaults.placement_check_interval_ms),
        ..defaults
    };
    meta_node::MetaNode::open(meta_config)
        .await
        .map_err(|e| StartError::Meta(e.to_string()))
}

/// An opened blob node and the settings it registers with.
struct OpenedBlob {
    node: Arc<blob_node::BlobNode>,
    info: BlobNodeInfo,
    /// Bound for `blob_http_listen`, served once the node runs ([`spawn_blob_http`]).
    http_listener: Option<TcpListener>,
}

async fn open_blob(
    config: &WharfConfig,
    dir: &Path,
    advertise: &str,
    meta: &Arc<dyn MetaApi>,
) -> Result<(OpenedBlob, blob_node::BackgroundTasks), StartError> {
    let mut blob_config = blob_node::BlobNodeConfig::new(dir, advertise);
    blob_config.node_id = config.node_id;
    blob_config.zone = config.zone.clone();
    blob_config.gc_interval_ms = config.gc.interval_ms;
    blob_config.stale_upload_after_ms = config.gc.stale_upload_after_ms;
    blob_config.min_free_bytes = config.blob_min_free_bytes;
    blob_config.max_open_uploads_per_repo = config.blob_max_open_uploads_per_repo;
    let http_listener = match &config.blob_http_listen {
        Some(addr) => {
            let listener = bind(addr).await?;
            let bound = local_addr(&listener)?;
            blob_config.http_url = Some(
                config
                    .blob_http_advertise
                    .clone()
                    .unwrap_or_else(|| format!("http://{bound}")),
            );
            Some(listener)
        }
        None => None,
    };
    let nodes = Arc::new(GrpcBlobNodes::new(meta.clone()));
    let (node, tasks) = match &config.blob_s3 {
        Some(s3) => {
            blob_config
                .validate()
                .map_err(|e| StartError::Blob(e.to_string()))?;
            let store = s3_blob_store::S3BlobStore::connect(s3, &config.node_id.to_string())
                .await
                .map_err(|e| StartError::Blob(format!("cannot open the blob store: {e}")))?;
            tracing::info!(node = config.node_id, store = %s3.describe(), "blob node opened on object storage");
            blob_node::BlobNode::clustered(&blob_config, Arc::new(store), meta.clone(), nodes)
        }
        None => blob_node::BlobNode::open_clustered(&blob_config, meta.clone(), nodes)
            .await
            .map_err(|e| StartError::Blob(e.to_string()))?,
    };
    let opened = OpenedBlob {
        node: Arc::new(node),
        info: blob_config.node_info(),
        http_listener,
    };
    Ok((opened, tasks))
}

/// Serves the node's redirected blob GETs (`blob-http`) when `blob_http_listen` is set, and
/// returns the bound address.
fn spawn_blob_http(
    tasks: &mut JoinSet<()>,
    blob: &mut OpenedBlob,
    meta: &Arc<dyn MetaApi>,
    shutdown: CancellationToken,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(listener) = blob.http_listener.take() else {
        return Ok(None);
    };
    let bound = local_addr(&listener)?;
    let store = blob.node.fs_store().cloned().ok_or_else(|| {
        StartError::Blob("the blob HTTP endpoint needs a local directory store".into())
    })?;
    let meta = meta.clone();
    tasks.spawn(blob_http::serve(
        listener,
        store,
        meta,
        shutdown.cancelled_owned(),
    ));
    Ok(Some(bound))
}

fn meta_client(addrs: &[String]) -> Result<MetaClient, StartError> {
    if addrs.is_empty() {
        return Err(StartError::Gateway(
            "no meta addresses configured (--meta)".into(),
        ));
    }
    MetaClient::new(addrs, RetryPolicy::default()).map_err(|e| StartError::Gateway(e.to_string()))
}

/// Adds this blob node to the cluster map, retrying while meta elects a leader.
async fn register_blob_node(meta: &dyn MetaApi, blob: &OpenedBlob) -> Result<(), StartError> {
    let node = blob.info.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match meta.register_blob_node(node.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() < deadline => {
                tracing::info!(%error, "waiting for the metadata service to register this blob node");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => {
                return Err(StartError::Blob(format!(
                    "cannot register with meta: {error}"
                )))
            }
        }
    }
}

/// Serves `GET /metrics` on `metrics_listen` when set (every role; the gateway also has it on its
/// HTTP address).
async fn spawn_metrics(
    tasks: &mut JoinSet<()>,
    config: &WharfConfig,
    shutdown: CancellationToken,
) -> Result<Option<SocketAddr>, StartError> {
    let Some(addr) = &config.metrics_listen else {
        return Ok(None);
    };
    let listener = bind(addr).await?;
    let bound = local_addr(&listener)?;
    let router = crate::telemetry::with_metrics_route(axum::Router::new());
    tasks.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics server failed");
        }
    });
    Ok(Some(bound))
}

/// Writes the config's `[[proxy]]` upstreams and `[[replication.rule]]` rules to the Raft state
/// (those not there as configured), retrying until meta takes them: a gateway may start before
/// its meta nodes, and a meta node before its cluster has a leader.
fn spawn_configured_state(
    tasks: &mut JoinSet<()>,
    config: &WharfConfig,
    meta: Arc<dyn MetaApi>,
    shutdown: CancellationToken,
) {
    // `validate` has read every password and CA file and checked every entry.
    let wanted: Vec<cluster_api::ProxyUpstream> = config
        .proxies
        .iter()
        .filter_map(|proxy| proxy.upstream().ok())
        .collect();
    let rules: Vec<cluster_api::ReplicationRule> = config
        .replication
        .rules
        .iter()
        .filter_map(|rule| rule.rule().ok())
        .collect();
    if wanted.is_empty() && rules.is_empty() {
        return;
    }
    tasks.spawn(async move {
        loop {
            let applied = async {
                if !wanted.is_empty() {
                    let known = meta.proxies().await?;
                    for upstream in &wanted {
                        if !known.contains(upstream) {
                            meta.put_proxy(upstream.clone()).await?;
                            tracing::info!(id = %upstream.id, "proxy upstream from the config set");
                        }
                    }
                }
                if !rules.is_empty() {
                    let known = meta.replication_rules().await?;
                    for rule in &rules {
                        if !known.contains(rule) {
                            meta.put_replication_rule(rule.clone()).await?;
                            tracing::info!(id = %rule.id, "replication rule from the config set");
                        }
                    }
                }
                Ok::<(), cluster_api::MetaError>(())
            };
            match applied.await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "cannot set the configured proxy upstreams and replication rules yet")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        // Held until shutdown: a task of `Running` that ends is taken for a failure.
        shutdown.cancelled().await;
    });
}

/// The replication rules' executor (crate `replication`): a full pass every
/// `[replication] interval_ms` while this meta node leads.
fn spawn_replicator(
    tasks: &mut JoinSet<()>,
    config: &WharfConfig,
    meta: &meta_node::MetaNode,
    (meta_api, blobs): (Arc<dyn MetaApi>, Arc<dyn BlobNodes>),
    shutdown: CancellationToken,
) {
    let settings = replication::ReplicatorSettings {
        interval: Duration::from_millis(config.replication.interval_ms.max(1)),
        ..replication::ReplicatorSettings::default()
    };
    let cluster = replication::ClusterEnd {
        meta: meta_api,
        blobs,
    };
    let replicator = Arc::new(replication::Replicator::new(
        cluster,
        settings,
        Arc::new(meta.leadership()),
    ));
    tasks.spawn(replicator.run(shutdown.cancelled_owned()));
}

fn spawn_grpc(
    tasks: &mut JoinSet<()>,
    router: crate::trace::TracedRouter,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    // TCP_NODELAY on every accepted connection: without it, a response's trailers wait on the
    // peer's delayed ACK (about 40 ms per unary call). tonic applies its own nodelay setting only
    // to listeners it binds itself.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tasks.spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "gRPC server failed");
        }
    });
}

/// Serves the gateway on `listener`: HTTPS with the certificate from `resolver` (reloaded every
/// `tls.reload_interval_ms` until `shutdown`) when `[tls]` is set, plain HTTP otherwise.
fn spawn_gateway(
    tasks: &mut JoinSet<()>,
    config: &WharfConfig,
    (meta, blobs): (Arc<dyn MetaApi>, Arc<dyn BlobNodes>),
    (listener, resolver): (TcpListener, Option<Arc<ReloadingCertResolver>>),
    shutdown: CancellationToken,
) {
    let mut gateway_config = config.gateway.clone();
    // Challenges name the token endpoint with the scheme clients reach this listener by.
    gateway_config.auth.https = resolver.is_some();
    let gateway = gateway::Gateway::new(gateway_config, meta, blobs);
    let router = crate::trace::with_http_trace_parent(crate::telemetry::with_metrics_route(
        gateway.router(),
    ));
    let https = resolver.map(|resolver| {
        wharf_tls::spawn_reloader(&resolver, config.tls.reload_interval(), shutdown.clone());
        wharf_tls::https_server_config(resolver)
    });
    let limits = wharf_tls::ConnectionLimits {
        max_connections: config.gateway.max_connections,
        header_read_timeout: config.gateway.header_read_timeout(),
        max_header_bytes: config.gateway.max_header_bytes,
    };
    tasks.spawn(async move {
        let signal = shutdown.cancelled_owned();
        let served = match https.transpose() {
            Ok(tls) => wharf_tls::serve(listener, router, tls, limits, signal).await,
            Err(error) => Err(std::io::Error::other(error)),
        };
        if let Err(error) = served {
            tracing::error!(%error, "gateway server failed");
        }
    });
}

/// A role's TLS, loaded (and checked) before anything starts, so a bad file fails the start-up
/// with its path.
struct RoleTls {
    /// `[cluster_tls]`: the gRPC servers' settings (the clients' are installed process-wide).
    cluster: Option<wharf_tls::ClusterTls>,
    /// `[tls]`: the gateway's certificate.
    https: Option<Arc<ReloadingCertResolver>>,
}

impl RoleTls {
    fn load(config: &WharfConfig) -> Result<RoleTls, StartError> {
        let cluster = install_cluster_client_tls(&config.cluster_tls)?;
        let https = match config.tls.paths()? {
            Some((cert, key)) => {
                let resolver = ReloadingCertResolver::load(&cert, &key)?;
                if let Some(summary) = resolver.current_summary() {
                    tracing::info!(cert = %cert.display(), %summary, "HTTPS certificate loaded");
                }
                Some(Arc::new(resolver))
            }
            None => None,
        };
        Ok(RoleTls { cluster, https })
    }

    /// The traced gRPC server builder, requiring client certificates under `[cluster_tls]`.
    fn grpc_server(&self) -> Result<crate::trace::TracedServer, StartError> {
        let server = crate::trace::grpc_server();
        match &self.cluster {
            Some(cluster) => server
                .tls_config(cluster.server_tls_config())
                .map_err(|error| StartError::GrpcTls(error.to_string())),
            None => Ok(server),
        }
    }
}

/// Loads `[cluster_tls]` and, when it is set, makes every gRPC client this process creates from
/// now on (meta, admin and blob clients, the Raft transport) use mTLS with it. Call it before
/// creating any client (`wharf admin` does, with its `--cluster-tls-*` flags). Returns the
/// loaded material (for servers), `None` when the section is empty (and installs nothing).
pub fn install_cluster_client_tls(
    config: &wharf_tls::ClusterTlsConfig,
) -> Result<Option<wharf_tls::ClusterTls>, StartError> {
    let Some(cluster) = wharf_tls::ClusterTls::from_config(config)? else {
        return Ok(None);
    };
    tracing::info!(summary = %cluster.summary(), "cluster mTLS enabled");
    cluster_client::set_cluster_tls(Some(cluster.client_tls_config()));
    Ok(Some(cluster))
}
