//! [`Replicator`]: carries out the replication rules on the meta leader. Every interval, while
//! its node leads, it reconciles each rule in full: every repository the rule matches is copied
//! ([`copy_repository`]: what the destination has is skipped, so a pass after a quiet interval
//! only reads), and with `deletes`, what the source no longer has goes at the destination
//! ([`prune_repository`]). The rules are in the Raft state and a pass starts from them, so a
//! new leader picks up where the old one stopped: nothing is skipped, at worst repeated.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_api::{MetaError, ReplicationMode, ReplicationRule, ReplicationStatus};
use oci_model::RepositoryName;
use proxy::{Upstream, UpstreamConfig};

use crate::copy::{copy_repository, prune_repository, CopyError, CopyOptions};
use crate::ends::{ClusterEnd, Destination, Source};

/// Repositories asked for per catalog page.
const PAGE: usize = 1000;

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
        }
    }

    /// Runs a pass every interval while this node leads; returns when `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            if !(self.leading)() {
                continue;
            }
            if let Err(error) = self.pass().await {
                tracing::debug!(%error, "replication pass did not run");
            }
        }
    }

    /// One pass over every rule, each recorded in the Raft state when done.
    pub async fn pass(&self) -> Result<(), MetaError> {
        let rules = self.cluster.meta.replication_rules().await?;
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
        let remote = match Upstream::new(&UpstreamConfig {
            username: rule.username.clone(),
            password: rule.password.clone(),
            connect_timeout: self.settings.connect_timeout,
            read_timeout: self.settings.read_timeout,
            ..UpstreamConfig::new(rule.url.clone())
        }) {
            Ok(remote) => remote,
            Err(error) => {
                status.errors.push(format!("{}: {error}", rule.url));
                return status;
            }
        };
        let (source, destination): (&dyn Source, &dyn Destination) = match rule.mode {
            ReplicationMode::Push => (&self.cluster, &remote),
            ReplicationMode::Pull => (&remote, &self.cluster),
        };
        let repositories = match self.repositories(rule, &remote).await {
            Ok(repositories) => repositories,
            Err(error) => {
                status.errors.push(error);
                return status;
            }
        };
        let options = CopyOptions {
            tags: rule.tags.clone(),
            dry_run: false,
        };
        let keep = |tag: &str| rule.keeps_tag(tag);
        for repo in repositories {
            match copy_repository(source, destination, &repo, &repo, &options, &()).await {
                Ok(report) => {
                    status.tags_set += report.tags_set;
                    status.manifests_copied += report.manifests_copied;
                    status.blobs_copied += report.blobs_copied;
                    status.bytes_copied += report.bytes_copied;
                }
                // Only the destination still has it: with deletes, it is emptied below.
                Err(CopyError::NoSuchRepository(_)) if rule.deletes => {}
                Err(error) => {
                    status.errors.push(format!("{repo}: {error}"));
                    continue;
                }
            }
            if rule.deletes {
                match prune_repository(source, destination, &repo, &repo, &keep, false).await {
                    Ok(pruned) => status.tags_deleted += pruned,
                    Err(error) => status.errors.push(format!("{repo}: {error}")),
                }
            }
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
        remote: &Upstream,
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
