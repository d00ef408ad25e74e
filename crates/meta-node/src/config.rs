//! [`MetaConfig`]: everything a meta voter needs to start.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::MetaNodeError;

/// Configuration of one meta voter. Missing fields take their defaults; unknown fields are
/// rejected so that a typo never silently falls back to a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaConfig {
    /// This voter's Raft id; stable for the life of its data directory, never 0.
    pub node_id: u64,
    /// Where the Raft log and state machine live (a RocksDB database under `db/`).
    pub data_dir: PathBuf,
    /// `host:port` where other voters reach this node's gRPC server (Raft and Meta services);
    /// also what followers name when they redirect a client to the leader.
    pub advertise_addr: String,
    /// Initialize a single-voter cluster when the store is empty. Set it on exactly one node of
    /// a new cluster; the others join (see `join`).
    pub bootstrap: bool,
    /// Seed meta addresses (`host:port`). With `bootstrap` off and an empty store, the node asks
    /// the cluster through them (following the leader) to add it as a learner, then a voter.
    pub join: Vec<String>,
    /// How long joining keeps retrying before the node gives up (and logs it).
    pub join_timeout_ms: u64,
    /// Join as a read replica: an openraft learner that is never promoted, so it serves reads
    /// (through the leader's read index, like every member) without ever counting in a quorum.
    pub read_replica: bool,
    /// The leader marks a blob node `Down` after this long without a heartbeat.
    pub blob_down_after_ms: u64,
    /// Leader heartbeat period (openraft ticks every 1.5 of these).
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in `[min, max)` starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log before it) once at least this many entries were
    /// applied since the last one, and they add up to half the last snapshot's size (see
    /// `snapshots.rs`: the interval grows with the state, so snapshot work per entry does not).
    pub snapshot_every_logs: u64,
    /// RocksDB's memory, all of it (block cache with index and filter blocks, memtables charged
    /// to it), in bytes; at least 8 MiB.
    pub memory_budget: u64,
    /// How often the leader sweeps for garbage (expired unreferenced blob links, expired upload
    /// sessions, old deletion fences).
    pub gc_interval_ms: u64,
    /// How long a blob uploaded or mounted into a repository stays there with no manifest
    /// referring to it: the window a client has between pushing layers and pushing the manifest.
    pub upload_grace_ms: u64,
    /// Upload sessions older than this (from their start) are closed; the staging node then
    /// removes their files.
    pub upload_expiry_ms: u64,
    /// How often this member folds every blob record into the placement gauges
    /// (`wharf_placement_violations`); a scan of all records, and none while no rule exists.
    pub placement_check_interval_ms: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            node_id: 1,
            data_dir: PathBuf::from("wharf-data/meta"),
            advertise_addr: "127.0.0.1:5001".to_owned(),
            bootstrap: true,
            join: Vec::new(),
            join_timeout_ms: 120_000,
            read_replica: false,
            blob_down_after_ms: 10_000,
            // A follower starts an election once it has heard no leader for the leader lease
            // (openraft: election_timeout_max) plus its own election timeout, checked on a tick
            // of 1.5 heartbeats: 0.9-1.35 s with these, so the first write after a leader dies
            // is acknowledged within about 1.5 s (`benches/failover.sh`).
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every_logs: 10_000,
            memory_budget: 32 << 20,
            gc_interval_ms: 5_000,
            upload_grace_ms: 3_600_000,
            upload_expiry_ms: 86_400_000,
            placement_check_interval_ms: 30_000,
        }
    }
}

impl MetaConfig {
    /// Checks what serde cannot: ranges, orderings, address syntax.
    pub fn validate(&self) -> Result<(), MetaNodeError> {
        let fail = |reason: String| Err(MetaNodeError::Config(reason));
        if self.node_id == 0 {
            return fail("node_id must not be 0".to_owned());
        }
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir must not be empty".to_owned());
        }
        let port_ok = self
            .advertise_addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port != 0)
            });
        if !port_ok {
            return fail(format!(
                "advertise_addr {:?} is not host:port",
                self.advertise_addr
            ));
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms >= self.election_timeout_min_ms
        {
            return fail(format!(
                "heartbeat_interval_ms ({}) must be positive and below election_timeout_min_ms ({})",
                self.heartbeat_interval_ms, self.election_timeout_min_ms
            ));
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return fail(format!(
                "election_timeout_min_ms ({}) must be below election_timeout_max_ms ({})",
                self.election_timeout_min_ms, self.election_timeout_max_ms
            ));
        }
        if self.bootstrap && !self.join.is_empty() {
            return fail(
                "bootstrap and join exclude each other: a node starts a cluster or joins one"
                    .to_owned(),
            );
        }
        if self.join.iter().any(|seed| seed.is_empty()) {
            return fail("join addresses must not be empty".to_owned());
        }
        if self.read_replica && self.bootstrap {
            return fail(
                "a read replica joins an existing cluster: it cannot bootstrap one".to_owned(),
            );
        }
        if self.blob_down_after_ms == 0 || self.join_timeout_ms == 0 {
            return fail("blob_down_after_ms and join_timeout_ms must be positive".to_owned());
        }
        if self.snapshot_every_logs == 0 {
            return fail("snapshot_every_logs must be positive".to_owned());
        }
        if self.memory_budget < meta_store::MIN_MEMORY_BUDGET as u64 {
            return fail(format!(
                "memory_budget ({} bytes) must be at least {} MiB",
                self.memory_budget,
                meta_store::MIN_MEMORY_BUDGET >> 20
            ));
        }
        if self.gc_interval_ms == 0 || self.upload_expiry_ms == 0 {
            return fail("gc_interval_ms and upload_expiry_ms must be positive".to_owned());
        }
        if self.placement_check_interval_ms == 0 {
            return fail("placement_check_interval_ms must be positive".to_owned());
        }
        Ok(())
    }

    /// The openraft configuration this maps to.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, MetaNodeError> {
        let config = openraft::Config {
            cluster_name: "wharf-meta".to_owned(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // `snapshots.rs` triggers snapshots: the interval grows with the state.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            // Snapshot chunks travel as JSON number arrays (about 3.5 bytes per byte); keep each
            // RPC well under the transport's message limit.
            snapshot_max_chunk_size: 1024 * 1024,
            ..openraft::Config::default()
        };
        config
            .validate()
            .map_err(|error| MetaNodeError::Config(error.to_string()))
    }

    pub(crate) fn store_options(&self) -> meta_store::StoreOptions {
        meta_store::StoreOptions {
            memory_budget: usize::try_from(self.memory_budget).unwrap_or(usize::MAX),
        }
    }

    pub(crate) fn blob_down_after(&self) -> Duration {
        Duration::from_millis(self.blob_down_after_ms)
    }

    pub(crate) fn gc_settings(&self) -> crate::gc::GcSettings {
        crate::gc::GcSettings {
            interval: Duration::from_millis(self.gc_interval_ms),
            upload_grace: Duration::from_millis(self.upload_grace_ms),
            upload_expiry: Duration::from_millis(self.upload_expiry_ms),
        }
    }

    pub(crate) fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.join_timeout_ms)
    }

    /// The deadline for Raft RPCs, derived from the election timeout.
    pub(crate) fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_min_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = MetaConfig::default();
        config.validate().expect("defaults validate");
        config
            .raft_config()
            .expect("defaults map to a valid raft config");
    }

    #[test]
    fn rejects_bad_values() {
        let bad = [
            MetaConfig {
                node_id: 0,
                ..MetaConfig::default()
            },
            MetaConfig {
                advertise_addr: "no-port".to_owned(),
                ..MetaConfig::default()
            },
            MetaConfig {
                heartbeat_interval_ms: 5_000,
                ..MetaConfig::default()
            },
            MetaConfig {
                election_timeout_max_ms: 200,
                ..MetaConfig::default()
            },
            MetaConfig {
                snapshot_every_logs: 0,
                ..MetaConfig::default()
            },
            MetaConfig {
                join: vec!["10.0.0.1:5001".to_owned()],
                ..MetaConfig::default()
            },
            MetaConfig {
                blob_down_after_ms: 0,
                ..MetaConfig::default()
            },
            MetaConfig {
                memory_budget: 1 << 20,
                ..MetaConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?} must be rejected");
        }
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_fields() {
        let config: MetaConfig = serde_json::from_str(r#"{"node_id": 3}"#).expect("parses");
        assert_eq!(config.node_id, 3);
        assert!(config.bootstrap);
        let typo = serde_json::from_str::<MetaConfig>(r#"{"node_idd": 3}"#);
        assert!(typo.is_err());
    }
}
