//! [`Replicator`]: carries out the replication rules on the meta leader. Every second, while its
//! node leads, it copies the repositories on the push rules' backlog (kept in the Raft state:
//! every manifest pushed or deleted and every tag moved or removed under a push rule puts its
//! repository there, in the same entry), so a push reaches the destination within seconds and a
//! new leader finds what the old one had not done. Every interval it also reconciles each rule in
//! full, which fixes any drift: every repository the rule matches is copied
//! ([`copy_repository`]: what the destination has is skipped, so a pass after a quiet interval
//! only reads), and with `deletes`, what the source no longer has goes at the destination
//! ([`prune_repository`]). The rules are in the Raft state and a pass starts from them, so a
//! new leader picks up where the old one stopped: nothing is skipped, at worst repeated.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_api::{MetaError, ReplicationMode, ReplicationRule, ReplicationStatus};
use oci_model::RepositoryName;
use proxy::{Upstream, UpstreamConfig};

use crate::copy::{copy_repository, prune_repository, CopyError, CopyOptions, MountHints};
use crate::ends::{ClusterEnd, Destination, Source};

/// Repositories asked for per catalog page.
const PAGE: usize = 1000;
/// How often the backlog is read, and how much of it at a time.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);
const BACKLOG_BATCH: usize = 100;

/// How the replicator runs.
#[derive(Clone, Debug)]
pub struct ReplicatorSettings {
    /// Time between two full passes over every rule.
    pub interval: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl Default for ReplicatorSettings {
    fn default() -> ReplicatorSettings {
        ReplicatorSettings {
            interval: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// The replication rules' executor on one meta node.
pub struct Replicator {
    cluster: ClusterEnd,
    settings: ReplicatorSettings,
    leading: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The other registry's client per rule, kept while the rule stays the same (its tokens
    /// with it), and where blobs are at the rule's destination (for mounts).
    remotes: parking_lot::Mutex<Remotes>,
    /// The rules as of the last full pass: a rule added or changed since gets one at once.
    passed: parking_lot::Mutex<Option<Vec<ReplicationRule>>>,
}

type Remotes = std::collections::HashMap<String, Remote>;

/// A rule's other registry: its client, and the blob locations seen at the destination.
#[derive(Clone)]
struct Remote {
    rule: ReplicationRule,
    client: Arc<Upstream>,
    mounts: Arc<MountHints>,
}

impl Replicator {
    pub fn new(
        cluster: ClusterEnd,
        settings: ReplicatorSettings,
        leading: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Replicator {
        Replicator {
            cluster,
            settings,
            leading,
            remotes: parking_lot::Mutex::default(),
            passed: parking_lot::Mutex::default(),
        }
    }

    /// Works the backlog every second and runs a full pass every interval while this node
    /// leads; returns when `stop` resolves, also in the middle of a pass. A pass cut short
    /// leaves nothing that matters half done: a repository leaves the backlog only after its
    /// copy, a destination keeps no partial upload as content, and the next leader's first
    /// round is a full pass. (Waiting for the pass instead held a stopping member for as long
    /// as an unanswering destination or a write without a quorum does: forever for the last
    /// voter of a cluster being stopped.)
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut passes = tokio::time::interval(self.settings.interval);
        passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backlog = tokio::time::interval(BACKLOG_EVERY);
        backlog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            let full = tokio::select! {
                _ = &mut stop => return,
                _ = passes.tick() => true,
                _ = backlog.tick() => false,
            };
            if !(self.leading)() {
                // Leading again later starts with a full pass.
                *self.passed.lock() = None;
                continue;
            }
            let work = async {
                if full {
                    self.pass().await
                } else {
                    self.work_backlog().await
                }
            };
            let done = tokio::select! {
                _ = &mut stop => return,
                done = work => done,
            };
            if let Err(error) = done {
                tracing::debug!(%error, full, "replication did not run");
            }
        }
    }

    /// Copies the repositories on the backlog, each taken off once copied (unless it changed
    /// again meanwhile); a failed one stays for the next round.
    pub async fn work_backlog(&self) -> Result<(), MetaError> {
        let rules = self.cluster.meta.replication_rules().await?;
        if self.passed.lock().as_ref() != Some(&rules) {
            // A rule was added or changed (or this node just took the lead): its first copy
            // is a full pass, not a wait for the next interval.
            return self.pass().await;
        }
        if rules.is_empty() {
            // No rule puts anything on the backlog.
            return Ok(());
        }
        let entries = self.cluster.meta.replication_backlog(BACKLOG_BATCH).await?;
        for entry in entries {
            let Some(rule) = rules.iter().find(|rule| rule.id == entry.rule) else {
                continue;
            };
            if rule.mode != ReplicationMode::Push || !rule.applies_to(entry.repo.as_str()) {
                // Put there under the rule as it was: the full pass the change started covers
                // the rule as it is.
                self.cluster.meta.replication_done(entry).await?;
                continue;
            }
            let mut status = ReplicationStatus::default();
            match self.remote(rule) {
                Ok(remote) => {
                    self.reconcile_repo(rule, &remote, &entry.repo, &mut status)
                        .await
                }
                Err(error) => status.errors.push(error),
            }
            metrics::counter!("wharf_replication_bytes_total", "rule" => rule.id.clone())
                .increment(status.bytes_copied);
            if status.errors.is_empty() {
                self.cluster.meta.replication_done(entry).await?;
            } else {
                for error in &status.errors {
                    tracing::warn!(rule = %rule.id, %error, "replication of a change");
                }
            }
        }
        Ok(())
    }

    /// The client of `rule`'s other registry.
    fn remote(&self, rule: &ReplicationRule) -> Result<Remote, String> {
        let mut remotes = self.remotes.lock();
        if let Some(known) = remotes.get(&rule.id) {
            if known.rule == *rule {
                return Ok(known.clone());
            }
        }
        let client = Upstream::new(&UpstreamConfig {
            username: rule.username.clone(),
            password: rule.password.clone(),
            ca_pem: rule.ca_pem.clone().map(String::into_bytes),
            connect_timeout: self.settings.connect_timeout,
            read_timeout: self.settings.read_timeout,
            ..UpstreamConfig::new(rule.url.clone())
        })
        .map_err(|error| format!("{}: {error}", rule.url))?;
        let remote = Remote {
            rule: rule.clone(),
            client: Arc::new(client),
            mounts: Arc::default(),
        };
        remotes.insert(rule.id.clone(), remote.clone());
        Ok(remote)
    }

    /// Copies (and with deletes, prunes) one repository for `rule`, adding to `status`.
    async fn reconcile_repo(
        &self,
        rule: &ReplicationRule,
        remote: &Remote,
        repo: &RepositoryName,
        status: &mut ReplicationStatus,
    ) {
        let (source, destination): (&dyn Source, &dyn Destination) = match rule.mode {
            ReplicationMode::Push => (&self.cluster, remote.client.as_ref()),
            ReplicationMode::Pull => (remote.client.as_ref(), &self.cluster),
        };
        let options = CopyOptions {
            tags: rule.tags.clone(),
            dry_run: false,
            mounts: Some(remote.mounts.clone()),
        };
        match copy_repository(source, destination, repo, repo, &options, &()).await {
            Ok(report) => {
                status.tags_set += report.tags_set;
                status.manifests_copied += report.manifests_copied;
                status.blobs_copied += report.blobs_copied;
                status.blobs_mounted += report.blobs_mounted;
                status.bytes_copied += report.bytes_copied;
                refusals(rule, status, report.tags_refused);
            }
            // Only the destination still has it: with deletes, it is emptied below.
            Err(CopyError::NoSuchRepository(_)) if rule.deletes => {}
            Err(error) => {
                status.errors.push(format!("{repo}: {error}"));
                return;
            }
        }
        if rule.deletes {
            let keep = |tag: &str| rule.keeps_tag(tag);
            match prune_repository(source, destination, repo, repo, &keep, false).await {
                Ok(pruned) => {
                    status.tags_deleted += pruned.tags_deleted;
                    refusals(rule, status, pruned.refused);
                }
                Err(error) => status.errors.push(format!("{repo}: {error}")),
            }
        }
    }

    /// One pass over every rule, each recorded in the Raft state when done.
    pub async fn pass(&self) -> Result<(), MetaError> {
        let rules = self.cluster.meta.replication_rules().await?;
        *self.passed.lock() = Some(rules.clone());
        // Clients of rules removed since go.
        self.remotes
            .lock()
            .retain(|id, _| rules.iter().any(|rule| rule.id == *id));
        let recorded = self.cluster.meta.replication_status().await?;
        for rule in &rules {
            let mut status = self.reconcile(rule).await;
            let outcome = if status.errors.is_empty() {
                "ok"
            } else {
                "failed"
            };
            metrics::counter!("wharf_replication_runs_total", "rule" => rule.id.clone(), "result" => outcome)
                .increment(1);
            metrics::counter!("wharf_replication_bytes_total", "rule" => rule.id.clone())
                .increment(status.bytes_copied);
            for error in &status.errors {
                tracing::warn!(rule = %rule.id, %error, "replication");
            }
            if status.last_success_ms.is_none() {
                status.last_success_ms = recorded
                    .iter()
                    .find(|known| known.rule == rule.id)
                    .and_then(|known| known.last_success_ms);
            }
            if let Some(at) = status.last_success_ms {
                metrics::gauge!("wharf_replication_last_success_seconds", "rule" => rule.id.clone())
                    .set(at as f64 / 1000.0);
            }
            self.cluster.meta.record_replication(status).await?;
        }
        Ok(())
    }

    /// One full reconciliation of `rule`.
    async fn reconcile(&self, rule: &ReplicationRule) -> ReplicationStatus {
        let mut status = ReplicationStatus {
            rule: rule.id.clone(),
            last_run_ms: unix_ms(),
            ..ReplicationStatus::default()
        };
        let remote = match self.remote(rule) {
            Ok(remote) => remote,
            Err(error) => {
                status.errors.push(error);
                return status;
            }
        };
        let repositories = match self.repositories(rule, &remote).await {
            Ok(repositories) => repositories,
            Err(error) => {
                status.errors.push(error);
                return status;
            }
        };
        for repo in repositories {
            self.reconcile_repo(rule, &remote, &repo, &mut status).await;
        }
        if status.errors.is_empty() {
            status.last_success_ms = Some(status.last_run_ms);
        }
        status
    }

    /// The repositories `rule` covers at its source (with deletes, also those only the
    /// destination still has: a repository deleted at the source is emptied at the other end).
    async fn repositories(
        &self,
        rule: &ReplicationRule,
        remote: &Remote,
    ) -> Result<Vec<RepositoryName>, String> {
        let mut names = std::collections::BTreeSet::new();
        let local = || async {
            let mut all = Vec::new();
            let mut last: Option<String> = None;
            loop {
                let page = self
                    .cluster
                    .meta
                    .list_repositories(last.as_deref(), PAGE)
                    .await
                    .map_err(|error| format!("this registry's catalog: {error}"))?;
                last = page.items.last().cloned();
                all.extend(page.items);
                if !page.more || last.is_none() {
                    return Ok::<_, String>(all);
                }
            }
        };
        let remote_catalog = || async {
            remote
                .client
                .catalog(PAGE)
                .await
                .map_err(|error| format!("{}'s catalog: {error}", rule.url))
        };
        match rule.mode {
            ReplicationMode::Push => {
                names.extend(local().await?);
                if rule.deletes {
                    names.extend(remote_catalog().await.unwrap_or_default());
                }
            }
            ReplicationMode::Pull => {
                names.extend(remote_catalog().await?);
                if rule.deletes {
                    names.extend(local().await?);
                }
            }
        }
        Ok(names
            .into_iter()
            .filter(|name| rule.applies_to(name))
            .filter_map(|name| RepositoryName::parse(&name).ok())
            .collect())
    }
}

/// Adds what the destination refused to `status` (the first [`cluster_api::MAX_STATUS_ERRORS`]),
/// logging each.
fn refusals(rule: &ReplicationRule, status: &mut ReplicationStatus, refused: Vec<String>) {
    for refused in refused {
        tracing::warn!(rule = %rule.id, %refused, "replication: the destination refused a change");
        if status.refused.len() < cluster_api::MAX_STATUS_ERRORS {
            status.refused.push(refused);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
