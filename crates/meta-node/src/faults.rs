//! [`NetworkFaults`]: fault injection for the Raft transport, so tests can cut meta voters apart
//! (partitions) without touching sockets. Both ends consult it: the client refuses to send to a
//! blocked target and the server drops requests from a blocked sender, so one node's set is
//! enough to cut traffic both ways with that peer, and a cut in one direction only is possible.
//!
//! In production the set stays empty; a check is one uncontended read lock per Raft RPC.

use std::collections::BTreeSet;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The Raft peers this node must neither send to nor accept Raft requests from.
#[derive(Debug, Default)]
pub struct NetworkFaults {
    blocked: RwLock<BTreeSet<u64>>,
}

/// Why a Raft RPC was not sent: the target is cut off by fault injection. The client reports it
/// as `Unreachable`, exactly like a dead peer.
#[derive(Debug, thiserror::Error)]
#[error("raft traffic with meta node {0} is blocked (fault injection)")]
pub(crate) struct Blocked(pub(crate) u64);

impl NetworkFaults {
    pub fn new() -> NetworkFaults {
        NetworkFaults::default()
    }

    // A panic while holding the lock cannot leave the set half-updated, so poison is ignored.
    fn read(&self) -> RwLockReadGuard<'_, BTreeSet<u64>> {
        self.blocked
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeSet<u64>> {
        self.blocked
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts Raft traffic with `peers` (in addition to any already blocked).
    pub fn block(&self, peers: impl IntoIterator<Item = u64>) {
        self.write().extend(peers);
    }

    /// Restores Raft traffic with `peer`.
    pub fn unblock(&self, peer: u64) {
        self.write().remove(&peer);
    }

    /// Restores Raft traffic with every peer.
    pub fn heal(&self) {
        self.write().clear();
    }

    pub fn is_blocked(&self, peer: u64) -> bool {
        self.read().contains(&peer)
    }

    /// The blocked peers, in id order.
    pub fn blocked(&self) -> Vec<u64> {
        self.read().iter().copied().collect()
    }

    /// `Err(Blocked)` when traffic with `peer` is cut.
    pub(crate) fn check(&self, peer: u64) -> Result<(), Blocked> {
        if self.is_blocked(peer) {
            Err(Blocked(peer))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_heals() {
        let faults = NetworkFaults::new();
        assert!(!faults.is_blocked(2));
        faults.block([2, 3]);
        assert!(faults.is_blocked(2) && faults.is_blocked(3));
        assert!(faults.check(2).is_err());
        assert!(faults.check(1).is_ok());
        faults.unblock(2);
        assert_eq!(faults.blocked(), vec![3]);
        faults.heal();
        assert!(faults.blocked().is_empty());
    }
}
