//! Blob node liveness: the leader's in-memory record of heartbeats ([`Liveness`]) and the failure
//! detector ([`run_detector`]) that turns silence into `Down` and a returning heartbeat into `Up`
//! through ordinary Raft commands. Nothing here is replicated per beat: only state changes are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster_api::{BlobNodeHealth, BlobNodeId, BlobNodeLiveness, ClusterMap, NodeState};
use meta_store::{Command, StateReader, TypeConfig};
use openraft::{Raft, ServerState};

/// Last heartbeat per node, valid for one leadership term: a new term starts empty, and nodes
/// get a grace period of one full timeout from `since` before they can be judged.
#[derive(Debug)]
pub(crate) struct Liveness {
    inner: Mutex<Term>,
}

#[derive(Debug)]
struct Term {
    term: u64,
    since: Instant,
    last_seen: HashMap<BlobNodeId, Instant>,
    /// What each node's last heartbeat said of its storage.
    health: HashMap<BlobNodeId, BlobNodeHealth>,
}

/// What the detector decided for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub id: BlobNodeId,
    pub from: NodeState,
    pub to: NodeState,
}

impl Liveness {
    pub(crate) fn new() -> Liveness {
        Liveness {
            inner: Mutex::new(Term {
                term: 0,
                since: Instant::now(),
                last_seen: HashMap::new(),
                health: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Term> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts over when `term` is not the one being tracked (this node just became leader).
    pub(crate) fn lead(&self, term: u64, now: Instant) {
        let mut inner = self.lock();
        if inner.term != term {
            *inner = Term {
                term,
                since: now,
                last_seen: HashMap::new(),
                health: HashMap::new(),
            };
        }
    }

    /// Records a heartbeat from `id` received while leading in `term`.
    pub(crate) fn beat(&self, term: u64, id: BlobNodeId, health: BlobNodeHealth, now: Instant) {
        self.lead(term, now);
        let mut inner = self.lock();
        inner.last_seen.insert(id, now);
        if inner.health.insert(id, health).map(|before| before.full) != Some(health.full) {
            if health.full {
                tracing::warn!(node = id, free_bytes = ?health.free_bytes, "blob node is full: no uploads are staged on it");
            } else {
                tracing::info!(node = id, free_bytes = ?health.free_bytes, "blob node takes uploads");
            }
        }
    }

    /// True when `id`'s last heartbeat in this term said it is full.
    pub(crate) fn is_full(&self, id: BlobNodeId) -> bool {
        self.lock()
            .health
            .get(&id)
            .is_some_and(|health| health.full)
    }

    /// The state changes `map` needs at `now`: `Up` members silent for longer than `timeout`
    /// (counting from the start of the term at the earliest) go `Down`; `Down` members heard
    /// within `timeout` come back `Up`. `Draining` is the operator's and is never touched.
    pub(crate) fn judge(&self, map: &ClusterMap, timeout: Duration, now: Instant) -> Vec<Verdict> {
        let inner = self.lock();
        let mut verdicts = Vec::new();
        for member in &map.members {
            let id = member.node.id;
            let heard = inner.last_seen.get(&id).copied();
            let silent_since = heard.unwrap_or(inner.since).max(inner.since);
            let silent = now.saturating_duration_since(silent_since) > timeout;
            let to = match member.state {
                NodeState::Up if silent => NodeState::Down,
                NodeState::Down if heard.is_some() && !silent => NodeState::Up,
                _ => continue,
            };
            verdicts.push(Verdict {
                id,
                from: member.state,
                to,
            });
        }
        verdicts
    }

    /// Milliseconds since each member's last heartbeat, as this (leader) node knows it.
    pub(crate) fn report(&self, map: &ClusterMap, now: Instant) -> Vec<BlobNodeLiveness> {
        let inner = self.lock();
        map.members
            .iter()
            .map(|member| BlobNodeLiveness {
                id: member.node.id,
                last_seen_ms_ago: inner.last_seen.get(&member.node.id).map(|seen| {
                    u64::try_from(now.saturating_duration_since(*seen).as_millis())
                        .unwrap_or(u64::MAX)
                }),
                health: inner
                    .health
                    .get(&member.node.id)
                    .copied()
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// The detector loop: while this node leads, judges the map every `timeout / 4` and proposes
/// each verdict as a conditional state change (so an operator's concurrent change wins).
pub(crate) async fn run_detector(
    raft: Raft<TypeConfig>,
    reader: StateReader,
    liveness: std::sync::Arc<Liveness>,
    timeout: Duration,
) {
    let period = (timeout / 4).max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (state, term) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_term)
        };
        if state != ServerState::Leader {
            continue;
        }
        let now = Instant::now();
        liveness.lead(term, now);
        let map = match reader.cluster_map() {
            Ok(map) => map,
            Err(error) => {
                tracing::warn!(%error, "failure detector cannot read the cluster map");
                continue;
            }
        };
        for verdict in liveness.judge(&map, timeout, now) {
            tracing::info!(node = verdict.id, from = ?verdict.from, to = ?verdict.to, "blob node liveness changed");
            let command = Command::SetBlobNodeState {
                id: verdict.id,
                state: verdict.to,
                expected: Some(verdict.from),
            };
            if let Err(error) = raft.client_write(command).await {
                tracing::debug!(%error, "failure detector could not propose a state change");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_api::{BlobNodeInfo, ClusterMember};

    fn map(states: &[(BlobNodeId, NodeState)]) -> ClusterMap {
        ClusterMap {
            epoch: 1,
            members: states
                .iter()
                .map(|&(id, state)| ClusterMember {
                    node: BlobNodeInfo {
                        id,
                        addr: format!("b{id}:1"),
                        zone: "z".into(),
                        weight: 1,
                        http_url: None,
                    },
                    state,
                })
                .collect(),
            ..ClusterMap::default()
        }
    }

    #[test]
    fn a_full_node_is_known_as_full_until_a_beat_says_otherwise() {
        let now = Instant::now();
        let liveness = Liveness::new();
        let full = BlobNodeHealth {
            full: true,
            free_bytes: Some(1024),
        };
        liveness.beat(3, 1, full, now);
        liveness.beat(3, 2, BlobNodeHealth::default(), now);
        assert!(liveness.is_full(1));
        assert!(!liveness.is_full(2));
        let report = liveness.report(&map(&[(1, NodeState::Up), (2, NodeState::Up)]), now);
        assert_eq!(report[0].health, full);
        liveness.beat(3, 1, BlobNodeHealth::default(), now);
        assert!(!liveness.is_full(1));
        // A new term knows nothing yet: no node is held full on an old leader's word.
        liveness.beat(3, 2, full, now);
        liveness.lead(4, now);
        assert!(!liveness.is_full(2));
    }

    #[test]
    fn judges_silence_returns_and_leaves_draining_alone() {
        let timeout = Duration::from_secs(10);
        let start = Instant::now();
        let liveness = Liveness::new();
        liveness.lead(3, start);
        let cluster = map(&[
            (1, NodeState::Up),
            (2, NodeState::Up),
            (3, NodeState::Draining),
            (4, NodeState::Down),
        ]);
        // Within the grace period of a new term nobody is judged.
        assert!(liveness
            .judge(&cluster, timeout, start + Duration::from_secs(9))
            .is_empty());
        let later = start + Duration::from_secs(11);
        liveness.beat(3, 1, BlobNodeHealth::default(), later);
        liveness.beat(3, 4, BlobNodeHealth::default(), later);
        let verdicts = liveness.judge(&cluster, timeout, later);
        assert_eq!(
            verdicts,
            vec![
                Verdict {
                    id: 2,
                    from: NodeState::Up,
                    to: NodeState::Down
                },
                Verdict {
                    id: 4,
                    from: NodeState::Down,
                    to: NodeState::Up
                },
            ]
        );
        // A new term forgets the old beats and grants a new grace period.
        liveness.lead(4, later);
        assert!(liveness.judge(&cluster, timeout, later).is_empty());
        let report = liveness.report(&cluster, later);
        assert!(report.iter().all(|entry| entry.last_seen_ms_ago.is_none()));
    }
}
