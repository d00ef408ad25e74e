//! The leader's garbage-collection sweep: every `interval`, while this node leads, it proposes
//! [`Command::Sweep`] with cut-offs from its own clock, again at once while the state machine
//! reports more due. What a sweep dooms, the blob nodes delete (their collector asks meta which
//! blobs to drop and confirms each deletion).

use std::time::Duration;

use cluster_api::{MetaError, SweepReport};
use meta_store::{Command, CommandOutput, StateReader, TypeConfig};
use openraft::{Raft, ServerState};

use crate::api::{unix_ms, write_error};

/// Retention actions one entry carries at most.
const RETENTION_CHUNK: usize = 500;

/// Rows of each kind one sweep entry handles at most, so an entry stays small.
const SWEEP_LIMIT: u32 = 1_000;
/// Entries one sweep round proposes at most before yielding to the next interval.
const MAX_ENTRIES_PER_ROUND: usize = 100;

/// How the leader collects garbage (from `MetaConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcSettings {
    pub interval: Duration,
    pub upload_grace: Duration,
    pub upload_expiry: Duration,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Proposes sweeps until nothing more is due (or a bounded number of entries), adding up what
/// they did. Fails with the proposal's error on a node that is not (or no longer) the leader.
pub(crate) async fn sweep(
    raft: &Raft<TypeConfig>,
    settings: GcSettings,
) -> Result<SweepReport, MetaError> {
    let mut total = SweepReport::default();
    for _ in 0..MAX_ENTRIES_PER_ROUND {
        let now_ms = unix_ms();
        let command = Command::Sweep {
            now_ms,
            links_pushed_before_ms: now_ms.saturating_sub(millis(settings.upload_grace)),
            // A fence guards commits of uploads that started before it; once every such upload
            // has expired, it guards nothing (and the state refuses older tokens from then on).
            fences_before_ms: now_ms
                .saturating_sub(millis(settings.upload_expiry) + 2 * millis(settings.interval)),
            limit: SWEEP_LIMIT,
        };
        let report = match raft.client_write(command).await {
            Ok(response) => match response.data.into_result()? {
                CommandOutput::Swept(report) => report,
                other => return Err(MetaError::Internal(format!("sweep answered {other:?}"))),
            },
            Err(error) => return Err(write_error(error)),
        };
        total.links_removed += report.links_removed;
        total.blobs_doomed += report.blobs_doomed;
        total.fences_expired += report.fences_expired;
        total.more = report.more;
        if !report.more {
            break;
        }
    }
    Ok(total)
}

/// Enforces the retention rules once: plans from this node's state, then proposes the actions
/// in chunks; the state machine re-checks each, so a push racing the pass wins. Returns how many
/// were applied.
pub(crate) async fn enforce_retention(
    raft: &Raft<TypeConfig>,
    reader: &StateReader,
) -> Result<u64, MetaError> {
    let planner = reader.clone();
    let plan = tokio::task::spawn_blocking(move || planner.retention_plan(unix_ms(), false))
        .await
        .map_err(|error| MetaError::Internal(error.to_string()))??;
    let mut applied = 0;
    for chunk in plan.chunks(RETENTION_CHUNK) {
        let command = Command::ApplyRetention {
            actions: chunk.to_vec(),
            now_ms: unix_ms(),
        };
        match raft.client_write(command).await {
            Ok(response) => match response.data.into_result()? {
                CommandOutput::Retained(count) => applied += count,
                other => return Err(MetaError::Internal(format!("retention answered {other:?}"))),
            },
            Err(error) => return Err(write_error(error)),
        }
    }
    Ok(applied)
}

/// Cached manifests one eviction entry carries at most, and one round evicts at most.
const EVICT_CHUNK: usize = 500;
const EVICT_PER_ROUND: usize = 20 * EVICT_CHUNK;

/// Removes the pull-through cache's manifests not pulled for their upstream's cache TTL: plans
/// from this node's state, then proposes them in chunks; the state machine keeps any pulled
/// since. Their blobs go with the next sweeps, once unreferenced for the upload grace.
pub(crate) async fn evict_cached(
    raft: &Raft<TypeConfig>,
    reader: &StateReader,
) -> Result<u64, MetaError> {
    let planner = reader.clone();
    let idle = tokio::task::spawn_blocking(move || planner.idle_cached(unix_ms(), EVICT_PER_ROUND))
        .await
        .map_err(|error| MetaError::Internal(error.to_string()))??;
    let mut evicted = 0;
    for chunk in idle.chunks(EVICT_CHUNK) {
        let command = Command::EvictCached {
            entries: chunk.to_vec(),
            now_ms: unix_ms(),
        };
        match raft.client_write(command).await {
            Ok(response) => match response.data.into_result()? {
                CommandOutput::Retained(count) => evicted += count,
                other => return Err(MetaError::Internal(format!("eviction answered {other:?}"))),
            },
            Err(error) => return Err(write_error(error)),
        }
    }
    Ok(evicted)
}

/// The loop of one meta node: while it leads, enforces retention and evicts idle cached
/// content, then sweeps (so what they released is collected in the same round once its grace
/// has passed).
pub(crate) async fn run_collector(
    raft: Raft<TypeConfig>,
    reader: StateReader,
    settings: GcSettings,
) {
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if raft.metrics().borrow().state != ServerState::Leader {
            continue;
        }
        match enforce_retention(&raft, &reader).await {
            Ok(0) => {}
            Ok(applied) => {
                metrics::counter!("wharf_retention_actions_total").increment(applied);
                tracing::info!(applied, "retention rules enforced");
            }
            Err(error) => tracing::debug!(%error, "retention pass did not run"),
        }
        match evict_cached(&raft, &reader).await {
            Ok(0) => {}
            Ok(evicted) => {
                metrics::counter!("wharf_proxy_evicted_total").increment(evicted);
                tracing::info!(evicted, "idle cached manifests evicted");
            }
            Err(error) => tracing::debug!(%error, "cache eviction did not run"),
        }
        match sweep(&raft, settings).await {
            Ok(report) if report != SweepReport::default() => {
                metrics::counter!("wharf_gc_links_removed_total").increment(report.links_removed);
                metrics::counter!("wharf_gc_blobs_doomed_total").increment(report.blobs_doomed);
                tracing::info!(
                    links_removed = report.links_removed,
                    blobs_doomed = report.blobs_doomed,
                    fences_expired = report.fences_expired,
                    "garbage-collection sweep"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "garbage-collection sweep did not run"),
        }
    }
}
