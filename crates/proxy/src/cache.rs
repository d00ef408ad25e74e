//! [`PullThrough`]: the pull-through cache as a gateway uses it, over the same service traits
//! (`MetaApi`, `BlobNodes`): pulls of a repository under a proxy prefix are answered from what
//! the cluster holds, and what it lacks is fetched from the upstream, stored as ordinary content
//! and served at the same time.
//!
//! - **Manifests by digest** are immutable: once cached, they are served for good. **Tags** are
//!   checked with the upstream (`HEAD`, which Docker Hub does not count as a pull) once their
//!   TTL has passed since this gateway last checked them; a changed tag fetches the new
//!   manifest. When the upstream fails (down, slow, 429, 5xx, refusing the credentials), a tag
//!   the cache holds is served as it is (stale-if-error) with a `Warning`; only a tag never
//!   cached fails.
//! - A manifest is stored as the upstream sent it, with its blobs and children not cached yet
//!   (`MetaApi::put_cached_manifest`); each is fetched when a client first pulls it.
//! - **Blobs**: one gateway of the cluster fetches a missing blob at a time, under a fetch lease
//!   from the meta leader; the others wait for it to be committed and serve it then. The fetch
//!   streams to its client while the same bytes go to a blob upload; the staging node verifies
//!   the digest before it commits, so a fetch cut short or altered stores nothing and the next
//!   pull fetches again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_api::{
    BlobError, BlobInfo, BlobNodes, ByteStream, MetaApi, MetaError, ProxyUpstream, PutManifest,
    StoredManifest,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use oci_model::{media_type, Digest, ParsedManifest, Reference, RepositoryName, Tag};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::client::{Upstream, UpstreamError};
use crate::status::upstream_config;

/// Every manifest type a cache asks the upstream for: it stores the richest form (an index
/// where there is one) and negotiates with its own clients.
const ACCEPT_ALL: [&str; 4] = [
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST_LIST,
    media_type::OCI_MANIFEST,
    media_type::DOCKER_MANIFEST,
];
/// Pieces queued between a fetch and its client, and between it and the blob node; with the
/// upstream's pieces (at most a few tens of KiB each) this bounds a fetch's memory.
const QUEUE: usize = 16;
/// Tags whose last check with the upstream this gateway remembers.
const MAX_VALIDATED: usize = 100_000;
/// Cached manifests pulled since the last report to meta that a gateway remembers; past it, a
/// pull is reported with the next one (the idle TTL is days, the report interval seconds).
const MAX_TOUCHED: usize = 50_000;

/// How the cache behaves; the defaults suit a gateway.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// How long the list of upstreams read from meta is used before it is read again.
    pub refresh: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for an upstream's answer, and then between two pieces of a body.
    pub read_timeout: Duration,
    /// A fetch lease's length; its holder renews it every third of it.
    pub lease_ttl: Duration,
    /// How long a pull waits for another gateway's fetch of the same blob before it fails.
    pub wait_timeout: Duration,
    /// How often the manifests pulled from the cache are reported to meta (their idle TTL
    /// restarts), in one Raft entry.
    pub touch_interval: Duration,
}

impl Default for CacheSettings {
    fn default() -> CacheSettings {
        CacheSettings {
            refresh: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(15),
            wait_timeout: Duration::from_secs(30 * 60),
            touch_interval: Duration::from_secs(30),
        }
    }
}

/// Why a pull through the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The upstream failed and the cache has nothing to serve instead.
    #[error("upstream {upstream}: {error}")]
    Upstream {
        upstream: String,
        error: UpstreamError,
    },
    /// The upstream does not have the manifest.
    #[error("upstream {upstream} has no manifest {what}")]
    ManifestNotFound { upstream: String, what: String },
    /// The upstream does not have the blob.
    #[error("upstream {upstream} has no blob {what}")]
    BlobNotFound { upstream: String, what: String },
    /// Another gateway's fetch of the blob did not finish in time.
    #[error("the fetch of {0} from the upstream is taking too long; try again")]
    Busy(Digest),
}

/// Where a pulled repository comes from, and where its cached copy is kept.
#[derive(Clone)]
pub struct Route {
    pub proxy: ProxyUpstream,
    /// The repository's name at the upstream.
    pub name: RepositoryName,
    /// The repository the cache keeps it in: the one pulled, under the prefix; for the
    /// mirror, the prefix followed by the name pulled.
    pub cache_repo: RepositoryName,
    upstream: Arc<Upstream>,
}

/// A manifest from the cache, and whether it is served stale because the upstream failed.
#[derive(Clone, Debug)]
pub struct ManifestAnswer {
    pub manifest: StoredManifest,
    /// Set when the upstream could not confirm the tag: what went wrong, for a `Warning`.
    pub stale: Option<String>,
}

/// A blob pulled through the cache.
pub enum BlobAnswer {
    /// Held by the cluster: serve it like any blob.
    Cached(BlobInfo),
    /// Streaming from the upstream while it is stored; `size` when the upstream said it.
    Fetching {
        size: Option<u64>,
        body: BoxStream<'static, Result<Bytes, BlobError>>,
    },
    /// The upstream has it (a `HEAD` answered without fetching it).
    Upstream { size: Option<u64> },
}

/// The pull-through cache of one gateway.
pub struct PullThrough {
    meta: Arc<dyn MetaApi>,
    blobs: Arc<dyn BlobNodes>,
    settings: CacheSettings,
    /// This gateway's name; each fetch attempt holds its lease as `<name>/<attempt>`, so two
    /// pulls through the same gateway wait for each other like pulls through two.
    holder: String,
    attempts: std::sync::atomic::AtomicU64,
    table: Mutex<Option<(Instant, Arc<Vec<ProxyUpstream>>)>>,
    clients: Mutex<HashMap<String, (ProxyUpstream, Arc<Upstream>)>>,
    /// (repository, tag) -> the digest the upstream confirmed, and when.
    validated: Mutex<HashMap<(RepositoryName, Tag), (Digest, Instant)>>,
    /// Cached manifests pulled since the last report to meta.
    touched: Mutex<HashSet<(RepositoryName, Digest)>>,
    /// Manifest lookups that must ask the upstream, one per (repository, reference) at a time
    /// on this gateway: the others wait their turn and then find what the first stored (a
    /// manifest `GET` is what Docker Hub counts as a pull). Entries live while someone holds
    /// or waits for them.
    flights: Mutex<HashMap<(RepositoryName, String), Flight>>,
}

/// One manifest lookup's turn, held by whoever asks the upstream, and the upstream failure the
/// last holder met (with when): the lookups that waited take it as their answer instead of each
/// waiting out a slow or failing upstream again, one after another.
type Flight = Arc<tokio::sync::Mutex<Option<(Instant, UpstreamError)>>>;

/// How long a failed manifest lookup answers the lookups waiting for the same manifest: at most
/// one upstream attempt per manifest a second while the upstream fails.
const FAILURE_SHARED_FOR: Duration = Duration::from_secs(1);

impl PullThrough {
    pub fn new(
        meta: Arc<dyn MetaApi>,
        blobs: Arc<dyn BlobNodes>,
        settings: CacheSettings,
    ) -> PullThrough {
        PullThrough {
            meta,
            blobs,
            settings,
            holder: format!("gateway-{}", uuid::Uuid::new_v4()),
            attempts: std::sync::atomic::AtomicU64::new(0),
            table: Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
            validated: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashSet::new()),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Starts reporting pulls of cached manifests to meta every `touch_interval`, until the
    /// cache is dropped.
    pub fn spawn_reporter(self: &Arc<Self>) {
        let cache = Arc::downgrade(self);
        let interval = self.settings.touch_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(cache) = cache.upgrade() else {
                    return;
                };
                cache.report_pulls().await;
            }
        });
    }

    /// Records a pull of cached manifest `digest` of `repo` (reported with the next batch).
    pub fn touch(&self, repo: &RepositoryName, digest: &Digest) {
        let mut touched = self.touched.lock();
        if touched.len() < MAX_TOUCHED {
            touched.insert((repo.clone(), digest.clone()));
        }
    }

    /// Reports the pulls recorded since the last report; kept for the next one when meta fails.
    pub async fn report_pulls(&self) {
        let batch: Vec<_> = std::mem::take(&mut *self.touched.lock())
            .into_iter()
            .collect();
        if batch.is_empty() {
            return;
        }
        if let Err(error) = self.meta.touch_cached(&batch).await {
            tracing::warn!(%error, pulls = batch.len(), "cannot report cached pulls; keeping them");
            let mut touched = self.touched.lock();
            for entry in batch {
                if touched.len() >= MAX_TOUCHED {
                    break;
                }
                touched.insert(entry);
            }
        }
    }

    /// Reads the upstreams from meta again at the next request (after an admin change).
    pub fn forget(&self) {
        *self.table.lock() = None;
    }

    /// The upstreams, from meta at most every `refresh`; the last list read while meta fails.
    async fn upstreams(&self) -> Result<Arc<Vec<ProxyUpstream>>, MetaError> {
        let known = self.table.lock().clone();
        if let Some((read, list)) = &known {
            if read.elapsed() < self.settings.refresh {
                return Ok(list.clone());
            }
        }
        match self.meta.proxies().await {
            Ok(list) => {
                // Clients of upstreams removed since go (a few, but never to be used again).
                self.clients
                    .lock()
                    .retain(|id, _| list.iter().any(|proxy| proxy.id == *id));
                let list = Arc::new(list);
                *self.table.lock() = Some((Instant::now(), list.clone()));
                Ok(list)
            }
            Err(error) => match known {
                Some((_, list)) => {
                    tracing::warn!(%error, "cannot read the proxy upstreams; using the last list");
                    Ok(list)
                }
                None => Err(error),
            },
        }
    }

    /// Whether `repo` is a proxy prefix or under one: pushes there are refused.
    pub async fn is_proxied(&self, repo: &RepositoryName) -> Result<bool, MetaError> {
        let list = self.upstreams().await?;
        Ok(cluster_api::under_proxy(&list, repo.as_str()))
    }

    /// The upstream `repo` is pulled from, if it is under a proxy prefix.
    pub async fn route(&self, repo: &RepositoryName) -> Result<Option<Route>, MetaError> {
        let list = self.upstreams().await?;
        if list.is_empty() {
            return Ok(None);
        }
        let Some((proxy, name)) = cluster_api::proxy_for(&list, repo.as_str()) else {
            return Ok(None);
        };
        let name = RepositoryName::parse(name)
            .map_err(|_| MetaError::Invalid(format!("{name} is not a repository name")))?;
        let upstream = self.client(proxy)?;
        Ok(Some(Route {
            proxy: proxy.clone(),
            name,
            cache_repo: repo.clone(),
            upstream,
        }))
    }

    /// The mirror's route for `repo`, a repository under no proxy prefix that this registry
    /// does not have: pulled from the mirror upstream by its own name, cached under the
    /// mirror's prefix. `None` without a mirror, or when the cached name would be too long.
    pub async fn mirror_route(&self, repo: &RepositoryName) -> Result<Option<Route>, MetaError> {
        let list = self.upstreams().await?;
        let Some(proxy) = cluster_api::mirror(&list) else {
            return Ok(None);
        };
        if cluster_api::under_proxy(&list, repo.as_str()) {
            return Ok(None);
        }
        let Ok(cache_repo) = RepositoryName::parse(&format!("{}/{repo}", proxy.prefix)) else {
            return Ok(None);
        };
        let upstream = self.client(proxy)?;
        Ok(Some(Route {
            proxy: proxy.clone(),
            name: repo.clone(),
            cache_repo,
            upstream,
        }))
    }

    /// The client of `proxy`, kept while its settings stay the same (its tokens with it).
    fn client(&self, proxy: &ProxyUpstream) -> Result<Arc<Upstream>, MetaError> {
        let mut clients = self.clients.lock();
        if let Some((known, client)) = clients.get(&proxy.id) {
            if known == proxy {
                return Ok(client.clone());
            }
        }
        let config = upstream_config(
            proxy,
            self.settings.connect_timeout,
            self.settings.read_timeout,
        );
        let client = Arc::new(Upstream::new(&config).map_err(|error| {
            MetaError::Invalid(format!("proxy upstream {}: {error}", proxy.id))
        })?);
        clients.retain(|id, _| *id != proxy.id);
        clients.insert(proxy.id.clone(), (proxy.clone(), client.clone()));
        Ok(client)
    }

    /// The manifest `reference` of `route`'s repository, from the cache or the upstream.
    pub async fn manifest(
        &self,
        route: &Route,
        reference: &Reference,
    ) -> Result<ManifestAnswer, CacheError> {
        let answer = match self.cached_manifest(route, reference).await? {
            Some(answer) => answer,
            None => {
                let key = (route.cache_repo.clone(), reference.to_string());
                let flight = self.flights.lock().entry(key).or_default().clone();
                let answer = {
                    let mut turn = flight.lock().await;
                    // The holder before may have stored it.
                    match self.cached_manifest(route, reference).await {
                        Ok(Some(answer)) => Ok(answer),
                        Ok(None) => self.resolve_manifest(route, reference, &mut turn).await,
                        Err(error) => Err(error),
                    }
                };
                drop(flight);
                // A turn stays while someone holds or awaits it, or while its failure is
                // still the answer to give.
                self.flights.lock().retain(|_, flight| {
                    Arc::strong_count(flight) > 1
                        || flight.try_lock().is_ok_and(|failure| {
                            failure
                                .as_ref()
                                .is_some_and(|(at, _)| at.elapsed() < FAILURE_SHARED_FOR)
                        })
                });
                answer?
            }
        };
        self.touch(&route.cache_repo, &answer.manifest.digest);
        Ok(answer)
    }

    /// The cached manifest when it needs no word from the upstream: by digest, or a tag
    /// confirmed within its TTL.
    async fn cached_manifest(
        &self,
        route: &Route,
        reference: &Reference,
    ) -> Result<Option<ManifestAnswer>, CacheError> {
        let repo = &route.cache_repo;
        let manifest = match self.meta.get_manifest(repo, reference).await {
            Ok(manifest) => manifest,
            Err(MetaError::ManifestUnknown(_) | MetaError::NameUnknown(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let current = match reference {
            Reference::Digest(_) => true,
            Reference::Tag(tag) => {
                self.recently_validated(repo, tag, &manifest.digest, route.proxy.tag_ttl_secs)
            }
        };
        if !current {
            return Ok(None);
        }
        hit("manifest");
        Ok(Some(fresh(manifest)))
    }

    /// The lookup that may ask the upstream. `failure` is the last upstream failure of this
    /// manifest's lookups: one younger than [`FAILURE_SHARED_FOR`] is taken as the upstream's
    /// answer without asking again; a new one is recorded there.
    async fn resolve_manifest(
        &self,
        route: &Route,
        reference: &Reference,
        failure: &mut Option<(Instant, UpstreamError)>,
    ) -> Result<ManifestAnswer, CacheError> {
        let known = failure
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FAILURE_SHARED_FOR)
            .map(|(_, error)| error.clone());
        let mut failed = None;
        let answer = self
            .ask_for_manifest(route, reference, known, &mut failed)
            .await;
        if let Some(error) = failed {
            *failure = Some((Instant::now(), error));
        } else if matches!(answer, Ok(ManifestAnswer { stale: None, .. })) {
            *failure = None;
        }
        answer
    }

    /// [`resolve_manifest`](Self::resolve_manifest)'s work: `known` stands for the upstream's
    /// answer when set; `failed` is set to the upstream's error when asking it failed.
    async fn ask_for_manifest(
        &self,
        route: &Route,
        reference: &Reference,
        known: Option<UpstreamError>,
        failed: &mut Option<UpstreamError>,
    ) -> Result<ManifestAnswer, CacheError> {
        let repo = &route.cache_repo;
        let cached = match self.meta.get_manifest(repo, reference).await {
            Ok(manifest) => Some(manifest),
            Err(MetaError::ManifestUnknown(_) | MetaError::NameUnknown(_)) => None,
            Err(error) => return Err(error.into()),
        };
        let tag = match reference {
            Reference::Digest(digest) => {
                if let Some(manifest) = cached {
                    hit("manifest");
                    return Ok(fresh(manifest));
                }
                miss("manifest");
                if let Some(error) = known {
                    return Err(CacheError::Upstream {
                        upstream: route.proxy.id.clone(),
                        error,
                    });
                }
                let manifest = self.fetch_manifest(route, repo, digest, None).await;
                if let Err(CacheError::Upstream { error, .. }) = &manifest {
                    *failed = Some(error.clone());
                }
                return Ok(fresh(manifest?));
            }
            Reference::Tag(tag) => tag,
        };
        if let Some(manifest) = &cached {
            if self.recently_validated(repo, tag, &manifest.digest, route.proxy.tag_ttl_secs) {
                hit("manifest");
                return Ok(fresh(manifest.clone()));
            }
        }
        let shared = known.is_some();
        let head = match known {
            Some(error) => Err(error),
            None => {
                route
                    .upstream
                    .head_manifest(&route.name, reference, &ACCEPT_ALL)
                    .await
            }
        };
        match (head, cached) {
            (Ok(Some(head)), Some(manifest)) if head.digest == manifest.digest => {
                self.validated(repo, tag, &manifest.digest);
                hit("manifest");
                Ok(fresh(manifest))
            }
            (Ok(Some(head)), _) => {
                miss("manifest");
                let manifest = self
                    .fetch_manifest(route, repo, &head.digest, Some(tag))
                    .await;
                if let Err(CacheError::Upstream { error, .. }) = &manifest {
                    *failed = Some(error.clone());
                }
                let manifest = manifest?;
                self.validated(repo, tag, &manifest.digest);
                Ok(fresh(manifest))
            }
            (Ok(None), _) => Err(CacheError::ManifestNotFound {
                upstream: route.proxy.id.clone(),
                what: format!("{}:{tag}", route.name),
            }),
            (Err(error), Some(manifest)) => {
                if !shared {
                    upstream_error(&route.proxy.id, &error);
                    *failed = Some(error.clone());
                }
                metrics::counter!("wharf_proxy_stale_serves_total", "upstream" => route.proxy.id.clone())
                    .increment(1);
                tracing::warn!(
                    upstream = %route.proxy.id,
                    repo = %repo,
                    %tag,
                    %error,
                    "upstream failed; serving the cached tag"
                );
                Ok(ManifestAnswer {
                    manifest,
                    stale: Some(format!(
                        "upstream {} could not confirm the tag: {error}",
                        route.proxy.id
                    )),
                })
            }
            (Err(error), None) => {
                if !shared {
                    upstream_error(&route.proxy.id, &error);
                    *failed = Some(error.clone());
                }
                Err(CacheError::Upstream {
                    upstream: route.proxy.id.clone(),
                    error,
                })
            }
        }
    }

    /// Fetches manifest `digest` from the upstream and stores it in `repo` (under `tag`).
    async fn fetch_manifest(
        &self,
        route: &Route,
        repo: &RepositoryName,
        digest: &Digest,
        tag: Option<&Tag>,
    ) -> Result<StoredManifest, CacheError> {
        let upstream_failed = |error: UpstreamError| {
            upstream_error(&route.proxy.id, &error);
            CacheError::Upstream {
                upstream: route.proxy.id.clone(),
                error,
            }
        };
        let fetched = route
            .upstream
            .manifest(&route.name, &Reference::Digest(digest.clone()), &ACCEPT_ALL)
            .await
            .map_err(upstream_failed)?
            .ok_or_else(|| CacheError::ManifestNotFound {
                upstream: route.proxy.id.clone(),
                what: format!("{}@{digest}", route.name),
            })?;
        let parsed = ParsedManifest::parse(Some(&fetched.media_type), &fetched.bytes)
            .map_err(|error| upstream_failed(UpstreamError::Invalid(error.to_string())))?;
        metrics::counter!("wharf_proxy_upstream_bytes_total", "upstream" => route.proxy.id.clone())
            .increment(fetched.bytes.len() as u64);
        let put = PutManifest::from_parsed(
            repo.clone(),
            fetched.digest.clone(),
            tag.cloned(),
            &parsed,
            fetched.bytes.to_vec(),
        );
        let stored = StoredManifest {
            digest: put.digest.clone(),
            media_type: put.media_type.clone(),
            bytes: put.bytes.clone(),
        };
        self.meta.put_cached_manifest(put).await?;
        Ok(stored)
    }

    fn recently_validated(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        ttl_secs: u64,
    ) -> bool {
        let validated = self.validated.lock();
        validated
            .get(&(repo.clone(), tag.clone()))
            .is_some_and(|(known, at)| {
                known == digest && at.elapsed() < Duration::from_secs(ttl_secs)
            })
    }

    fn validated(&self, repo: &RepositoryName, tag: &Tag, digest: &Digest) {
        let mut validated = self.validated.lock();
        if validated.len() >= MAX_VALIDATED {
            // Forgetting a check only costs one more HEAD.
            validated.clear();
        }
        validated.insert(
            (repo.clone(), tag.clone()),
            (digest.clone(), Instant::now()),
        );
    }

    /// Blob `digest` of `route`'s repository: the cluster's copy, or a fetch from the upstream
    /// streamed while it is stored (one per cluster at a time; the others wait for it). A `HEAD`
    /// asks the upstream without fetching.
    pub async fn blob(
        &self,
        route: &Route,
        digest: &Digest,
        head: bool,
    ) -> Result<BlobAnswer, CacheError> {
        let repo = &route.cache_repo;
        if let Some(blob) = self.cached_blob(repo, digest).await? {
            hit("blob");
            return Ok(BlobAnswer::Cached(blob));
        }
        if head {
            return match route.upstream.head_blob(&route.name, digest).await {
                Ok(Some(size)) => Ok(BlobAnswer::Upstream { size }),
                Ok(None) => Err(self.no_blob(route, digest)),
                Err(error) => {
                    upstream_error(&route.proxy.id, &error);
                    Err(CacheError::Upstream {
                        upstream: route.proxy.id.clone(),
                        error,
                    })
                }
            };
        }
        let key = format!("{repo}@{digest}");
        let attempt = self
            .attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let holder = format!("{}/{attempt}", self.holder);
        let deadline = Instant::now() + self.settings.wait_timeout;
        let mut pause = Duration::from_millis(20);
        let lease_ms = millis(self.settings.lease_ttl);
        loop {
            let leased = match self.meta.acquire_fetch(&key, &holder, lease_ms).await {
                Ok(lease) if lease.granted => true,
                Ok(lease) => {
                    tracing::debug!(%key, holder = %lease.holder, "waiting for another fetch");
                    false
                }
                Err(error) => {
                    // Without the leader, fetch anyway: at worst twice, never wrong.
                    tracing::warn!(%key, %error, "no fetch lease; fetching without one");
                    true
                }
            };
            if leased {
                // Committed meanwhile by the fetch this one waited for.
                if let Some(blob) = self.cached_blob(repo, digest).await? {
                    release(self.meta.as_ref(), &key, &holder).await;
                    hit("blob");
                    return Ok(BlobAnswer::Cached(blob));
                }
                miss("blob");
                return self.fetch_blob(route, digest, key, holder).await;
            }
            if Instant::now() >= deadline {
                return Err(CacheError::Busy(digest.clone()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            if let Some(blob) = self.cached_blob(repo, digest).await? {
                hit("blob");
                return Ok(BlobAnswer::Cached(blob));
            }
        }
    }

    async fn cached_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<BlobInfo>, MetaError> {
        match self.meta.stat_blob(repo, digest).await {
            Ok(blob) => Ok(Some(blob)),
            Err(MetaError::BlobUnknown(_) | MetaError::NameUnknown(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn no_blob(&self, route: &Route, digest: &Digest) -> CacheError {
        CacheError::BlobNotFound {
            upstream: route.proxy.id.clone(),
            what: format!("{}@{digest}", route.name),
        }
    }

    /// Starts the fetch this gateway holds the lease for: the upstream's body goes to the client
    /// and to a blob upload in `repo`, committed once the staging node verified the digest.
    async fn fetch_blob(
        &self,
        route: &Route,
        digest: &Digest,
        key: String,
        holder: String,
    ) -> Result<BlobAnswer, CacheError> {
        let repo = &route.cache_repo;
        let fetched = match route.upstream.blob(&route.name, digest).await {
            Ok(Some(blob)) => blob,
            Ok(None) => {
                release(self.meta.as_ref(), &key, &holder).await;
                return Err(self.no_blob(route, digest));
            }
            Err(error) => {
                release(self.meta.as_ref(), &key, &holder).await;
                upstream_error(&route.proxy.id, &error);
                return Err(CacheError::Upstream {
                    upstream: route.proxy.id.clone(),
                    error,
                });
            }
        };
        let size = fetched.size;
        let (client_tx, client_rx) = mpsc::channel(QUEUE);
        let store = match self.start_upload(repo).await {
            Ok(upload) => Some(upload),
            Err(error) => {
                // The client still gets its blob; the next pull tries to store it again.
                tracing::warn!(%repo, %digest, %error, "cannot store the fetched blob; passing it through");
                None
            }
        };
        let fetch = Fetch {
            meta: self.meta.clone(),
            holder,
            key,
            lease_ttl: self.settings.lease_ttl,
            upstream_id: route.proxy.id.clone(),
            repo: repo.clone(),
            digest: digest.clone(),
        };
        tokio::spawn(fetch.run(fetched.into_stream(), client_tx, store));
        Ok(BlobAnswer::Fetching {
            size,
            body: receiver_stream(client_rx),
        })
    }

    /// An upload session in `repo` started on its staging node.
    async fn start_upload(&self, repo: &RepositoryName) -> Result<Upload, CacheError> {
        let session = self.meta.create_upload(repo, &[]).await?;
        let node = self.blobs.node(session.staging_node).await?;
        node.start_upload(&session.id).await?;
        Ok(Upload { session, node })
    }
}

/// A staging upload the fetched bytes go to.
struct Upload {
    session: cluster_api::UploadSession,
    node: Arc<dyn cluster_api::BlobApi>,
}

/// One fetch in flight: it owns the lease and drives the upstream's body into the client's
/// queue and the upload.
struct Fetch {
    meta: Arc<dyn MetaApi>,
    holder: String,
    key: String,
    lease_ttl: Duration,
    upstream_id: String,
    repo: RepositoryName,
    digest: Digest,
}

impl Fetch {
    async fn run(
        self,
        mut body: BoxStream<'static, Result<Bytes, UpstreamError>>,
        client: mpsc::Sender<Result<Bytes, BlobError>>,
        upload: Option<Upload>,
    ) {
        let (store_tx, store_rx) = mpsc::channel(QUEUE);
        let stored = upload.map(|upload| {
            let stream: ByteStream = Box::pin(receiver_stream(store_rx));
            let (meta, repo, digest) = (self.meta.clone(), self.repo.clone(), self.digest.clone());
            tokio::spawn(store(meta, repo, digest, upload, stream))
        });
        let mut outlets = Outlets {
            store: stored.is_some().then_some(store_tx),
            client: Some(client),
        };
        let mut renew_at = Instant::now() + self.lease_ttl / 3;
        let bytes_in = metrics::counter!("wharf_proxy_upstream_bytes_total", "upstream" => self.upstream_id.clone());
        // The newest piece is held back until the next one arrives, and the last until the body
        // has ended and checked out: a body that fails its digest or length check never reaches
        // a client whole.
        let mut held: Option<Bytes> = None;
        while outlets.open() {
            match body.next().await {
                Some(Ok(piece)) => {
                    bytes_in.increment(piece.len() as u64);
                    if let Some(previous) = held.replace(piece) {
                        outlets.send(previous).await;
                    }
                }
                Some(Err(error)) => {
                    upstream_error(&self.upstream_id, &error);
                    tracing::warn!(
                        upstream = %self.upstream_id,
                        digest = %self.digest,
                        %error,
                        "blob fetch failed; nothing is stored"
                    );
                    outlets
                        .fail(BlobError::Unavailable(format!("upstream: {error}")))
                        .await;
                    break;
                }
                None => {
                    if let Some(last) = held.take() {
                        outlets.send(last).await;
                    }
                    break;
                }
            }
            if Instant::now() >= renew_at {
                renew_at = Instant::now() + self.lease_ttl / 3;
                let ttl = millis(self.lease_ttl);
                if let Err(error) = self.meta.acquire_fetch(&self.key, &self.holder, ttl).await {
                    tracing::warn!(key = %self.key, %error, "could not renew the fetch lease");
                }
            }
        }
        drop(outlets);
        if let Some(stored) = stored {
            let _ = stored.await;
        }
        release(self.meta.as_ref(), &self.key, &self.holder).await;
    }
}

/// Where a fetch's bytes go: the blob upload and the client, each until it goes away.
struct Outlets {
    store: Option<mpsc::Sender<Result<Bytes, BlobError>>>,
    client: Option<mpsc::Sender<Result<Bytes, BlobError>>>,
}

impl Outlets {
    fn open(&self) -> bool {
        self.store.is_some() || self.client.is_some()
    }

    async fn send(&mut self, piece: Bytes) {
        for outlet in [&mut self.store, &mut self.client] {
            if let Some(sender) = outlet {
                if sender.send(Ok(piece.clone())).await.is_err() {
                    *outlet = None;
                }
            }
        }
    }

    /// Ends both with `error`: the upload commits nothing, the client's body breaks off.
    async fn fail(&mut self, error: BlobError) {
        for outlet in [&mut self.store, &mut self.client] {
            if let Some(sender) = outlet.take() {
                let _ = sender.send(Err(error.clone())).await;
            }
        }
    }
}

/// Commits the fetched bytes: the staging node verifies them against `digest` and makes them
/// durable, then meta links them into `repo`. A stream that ended in an error commits nothing.
async fn store(
    meta: Arc<dyn MetaApi>,
    repo: RepositoryName,
    digest: Digest,
    upload: Upload,
    stream: ByteStream,
) {
    let Upload { session, node } = upload;
    let committed = match node
        .append_and_commit(&repo, &session.id, stream, &digest)
        .await
    {
        Ok(committed) => committed,
        Err(error) => {
            tracing::warn!(%repo, %digest, %error, "the fetched blob was not stored");
            if let Err(error) = node.cancel_upload(&session.id).await {
                tracing::warn!(upload = %session.id, %error, "could not cancel a staged upload");
            }
            return;
        }
    };
    let blob = BlobInfo {
        digest: digest.clone(),
        size: committed.size,
        replicas: committed.replicas,
        placement: Vec::new(),
    };
    if let Err(error) = meta.commit_blob(&repo, blob, Some(session.id)).await {
        tracing::warn!(%repo, %digest, %error, "the fetched blob was stored but not recorded");
    }
}

async fn release(meta: &dyn MetaApi, key: &str, holder: &str) {
    if let Err(error) = meta.release_fetch(key, holder).await {
        // It expires on its own.
        tracing::debug!(%key, %error, "could not release a fetch lease");
    }
}

fn receiver_stream<T: Send + 'static>(receiver: mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        let item = receiver.recv().await?;
        Some((item, receiver))
    })
    .boxed()
}

fn fresh(manifest: StoredManifest) -> ManifestAnswer {
    ManifestAnswer {
        manifest,
        stale: None,
    }
}

/// `wharf_proxy_hits_total{kind}`: a pull under a proxy prefix the cluster answered itself.
pub fn count_hit(kind: &'static str) {
    hit(kind);
}

fn hit(kind: &'static str) {
    metrics::counter!("wharf_proxy_hits_total", "kind" => kind).increment(1);
}

fn miss(kind: &'static str) {
    metrics::counter!("wharf_proxy_misses_total", "kind" => kind).increment(1);
}

/// `wharf_proxy_upstream_errors_total{upstream, status}`: a status code, or what failed.
fn upstream_error(upstream: &str, error: &UpstreamError) {
    let status = match error {
        UpstreamError::Status { status, .. } => status.to_string(),
        UpstreamError::RateLimited { .. } => "429".to_owned(),
        UpstreamError::Unauthorized(_) => "401".to_owned(),
        UpstreamError::Unreachable(_) => "unreachable".to_owned(),
        UpstreamError::Timeout(_) => "timeout".to_owned(),
        UpstreamError::DigestMismatch { .. } => "digest_mismatch".to_owned(),
        UpstreamError::Invalid(_) | UpstreamError::Config(_) => "invalid".to_owned(),
        UpstreamError::Untrusted(_) => "untrusted".to_owned(),
    };
    metrics::counter!(
        "wharf_proxy_upstream_errors_total",
        "upstream" => upstream.to_owned(),
        "status" => status
    )
    .increment(1);
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
