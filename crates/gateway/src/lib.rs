//! Wharf's gateway: the stateless HTTP front speaking the OCI Distribution API 1.1 (with Docker
//! Registry V2 behaviour where docker needs it) over [`MetaApi`] and [`BlobNodes`].
//!
//! It owns no state: upload sessions live in meta, bytes on blob nodes, so any gateway serves any
//! request. Handlers are adapters: `dispatch` decodes the path and query, each endpoint module
//! makes its calls into the service traits and maps the result, `error` maps service errors onto
//! the OCI error table once. Blob bodies are streamed both ways, never buffered whole; manifests
//! are read under an explicit cap. All it keeps is short-lived caches of manifests by digest
//! (`manifest_cache`) and of blob records for GETs (`blob_cache`), which spare repeated pulls
//! a meta read.
//!
//! ```text
//! route      path grammar: /v2/<name>/{blobs,blobs/uploads,manifests,tags/list,referrers}/...
//! dispatch   method check, parameter validation, then the call into one of:
//!   blobs      GET/HEAD/DELETE blobs, replica failover
//!     blob_cache      blob records (size, replicas) for GETs, short TTL, bounded count
//!   uploads    POST/PATCH/PUT/GET/DELETE uploads
//!   manifests  GET/HEAD/PUT/DELETE manifests, Accept negotiation
//!     manifest_cache  manifests by (repository, digest) for a short TTL, within a byte budget
//!   repo_cache   the TTL cache both are: by (repository, digest), invalidation generations
//!   listing    tags/list and _catalog paging
//!   referrers  the referrers index
//!   pull_through  pulls under a proxy prefix through proxy::PullThrough; writes there refused
//! body       request-body streaming and the manifest cap
//! error      ApiError and the MetaError/BlobError maps
//! headers    header names and parsers
//! observe    tracing span, API-version header, metrics
//! config     GatewayConfig
//! ```
//!
//! This crate must not depend on tonic, openraft or RocksDB (CI checks `cargo tree -p gateway`):
//! it sees the cluster only through `cluster-api`.

mod access;
mod admin_api;
mod audit;
mod blob_cache;
mod blobs;
mod body;
mod config;
mod dispatch;
mod error;
// The parsers of client bytes, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod listing;
mod manifest_cache;
mod manifests;
mod observe;
mod pull_through;
mod referrers;
mod repo_cache;
mod route;
mod token_endpoint;
mod uploads;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::any;
use axum::Router;
use cluster_api::{BlobNodes, MetaApi};

use crate::access::AuthGate;
use crate::audit::Audit;
use crate::blob_cache::{blob_cache, BlobCache};
use crate::manifest_cache::{manifest_cache, ManifestCache};

pub use config::{AuthConfig, ConfigError, GatewayConfig};
// Public only so the root package's `benches/` can measure the path grammar.
pub use route::Route;

/// A gateway over one cluster: its settings and its handles on meta and the blob nodes.
#[derive(Clone)]
pub struct Gateway {
    config: Arc<GatewayConfig>,
    meta: Arc<dyn MetaApi>,
    blobs: Arc<dyn BlobNodes>,
    manifest_cache: Arc<ManifestCache>,
    blob_cache: Arc<BlobCache>,
    /// The key redirected blob URLs are signed with (fetched from meta when first needed).
    blob_url_keys: Arc<cluster_api::BlobUrlKeys>,
    /// Access control; `None` when auth is off.
    auth: Option<Arc<AuthGate>>,
    /// Request rates and uploads at once; `None` when no limit is set.
    limiter: Option<Arc<limits::Limiter>>,
    audit: Audit,
    /// The pull-through cache of repositories under a proxy prefix.
    pull_through: Arc<proxy::PullThrough>,
}

impl Gateway {
    /// A gateway with `config`, which the caller has checked with [`GatewayConfig::validate`].
    pub fn new(
        config: GatewayConfig,
        meta: Arc<dyn MetaApi>,
        blobs: Arc<dyn BlobNodes>,
    ) -> Gateway {
        let manifest_cache =
            manifest_cache(config.manifest_cache_ttl(), config.manifest_cache_bytes);
        let auth = config.auth.enabled.then(|| {
            let gate = Arc::new(AuthGate::new(config.auth.clone(), meta.clone()));
            AuthGate::spawn_refresher(&gate);
            gate
        });
        let limiter = match limits::Limiter::new(&config.limits) {
            Ok(limiter) => (!limiter.is_off()).then(|| Arc::new(limiter)),
            // `validate` refuses such a config before a gateway is built.
            Err(error) => {
                tracing::error!(%error, "request limits refused; serving without them");
                None
            }
        };
        Gateway {
            auth,
            limiter,
            audit: Audit::new(config.audit_log.clone()),
            manifest_cache: Arc::new(manifest_cache),
            blob_cache: Arc::new(blob_cache(
                config.blob_cache_ttl(),
                config.blob_cache_entries,
            )),
            config: Arc::new(config),
            blob_url_keys: Arc::new(cluster_api::BlobUrlKeys::new(meta.clone())),
            pull_through: {
                let cache = Arc::new(proxy::PullThrough::new(
                    meta.clone(),
                    blobs.clone(),
                    proxy::CacheSettings::default(),
                ));
                cache.spawn_reporter();
                cache
            },
            meta,
            blobs,
        }
    }

    /// The OCI Distribution API. `/v2/` and `/v2/{*rest}` are routed once and the rest is parsed
    /// with the spec's grammar, because repository names contain slashes. Blob bodies are
    /// streamed, so axum's default body limit is off; manifests carry their own cap.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2/", any(dispatch::handle))
            .route("/v2/{*rest}", any(dispatch::handle))
            .route("/auth/token", any(dispatch::token))
            .route("/admin/v1/{*rest}", any(dispatch::admin))
            .fallback(dispatch::handle)
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.config.body_idle_timeout(),
                body::idle_bodies,
            ))
            .layer(DefaultBodyLimit::disable())
            .layer(axum::middleware::from_fn(observe::observe))
    }
}
