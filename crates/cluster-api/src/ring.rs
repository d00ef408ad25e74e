//! [`Placement`]: where blobs belong under one cluster map: the `hash-ring` owners of a digest
//! among the map's `Up` blob nodes, within the zones of the placement rules that apply.

use hash_ring::{Member, Ring};
use oci_model::Digest;

use crate::{BlobInfo, BlobNodeId, ClusterMap, NodeState, RepoPlacement};

/// Where blobs belong under one cluster map.
#[derive(Clone, Debug)]
pub struct Placement {
    map: ClusterMap,
    ring: Ring,
}

impl Placement {
    /// The placement for `map`: only `Up` members own data; `Draining` and `Down` ones keep
    /// serving what they hold until it has moved.
    pub fn new(map: ClusterMap) -> Placement {
        let up = map
            .members
            .iter()
            .filter(|member| member.state == NodeState::Up)
            .map(|member| Member::new(member.node.id, &member.node.zone, member.node.weight));
        let ring = Ring::new(up);
        Placement { map, ring }
    }

    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    pub fn epoch(&self) -> u64 {
        self.map.epoch
    }

    /// The owners of `digest`, primary first: `policy.replicas` distinct `Up` nodes, or every
    /// `Up` node when there are fewer. The ring key is the digest's canonical text.
    pub fn owners(&self, digest: &Digest) -> Vec<BlobNodeId> {
        self.owners_for(digest, &RepoPlacement::default())
    }

    /// The owners of `digest` for a repository placed by `rules`: the copies its placement
    /// rules ask for (the policy's count without one), on `Up` nodes in the zones they allow;
    /// empty when no `Up` node is in those zones. Without rules, [`owners`](Placement::owners).
    pub fn owners_for(&self, digest: &Digest, rules: &RepoPlacement) -> Vec<BlobNodeId> {
        self.ranked(digest, rules.replicas(&self.map.policy) as usize, rules)
    }

    /// The owners a blob's record asks for: for each rule set it was linked under
    /// ([`BlobInfo::placement`]), the owners of its digest within the zones those rules allow
    /// now; in order, without repeats. `complete` is false when some set has fewer owners than
    /// its rules ask for (too few `Up` nodes in its zones), `empty_set` when one has none.
    pub fn owners_of_record(&self, record: &BlobInfo) -> RecordOwners {
        // No set recorded: one with no rule, the plain ring.
        let unruled = [Vec::new()];
        let sets = if record.placement.is_empty() {
            &unruled[..]
        } else {
            &record.placement[..]
        };
        let mut result = RecordOwners {
            owners: Vec::new(),
            complete: true,
            empty_set: false,
        };
        for ids in sets {
            let rules = RepoPlacement::for_rule_ids(&self.map.placement, ids);
            let owners = self.owners_for(&record.digest, &rules);
            result.complete &= owners.len() >= rules.replicas(&self.map.policy) as usize;
            result.empty_set |= owners.is_empty();
            for owner in owners {
                if !result.owners.contains(&owner) {
                    result.owners.push(owner);
                }
            }
        }
        result
    }

    /// Every `Up` node within the zones `rules` allow, in `digest`'s order of preference: the
    /// owners first, then the nodes that take a hinted copy when an owner cannot (see the blob
    /// node's `RingReplicator`).
    pub fn preference_for(&self, digest: &Digest, rules: &RepoPlacement) -> Vec<BlobNodeId> {
        self.ranked(digest, self.ring.len(), rules)
    }

    /// The first `n` `Up` nodes in the zones `rules` allow, in `digest`'s ring order.
    fn ranked(&self, digest: &Digest, n: usize, rules: &RepoPlacement) -> Vec<BlobNodeId> {
        let key = digest.to_string();
        match &rules.zones {
            None => self.ring.owners(key.as_bytes(), n),
            Some(zones) => {
                let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
                self.ring.owners_in_zones(key.as_bytes(), n, &zones)
            }
        }
    }

    /// How many owners must hold a durable copy before a push is acknowledged, for a blob with
    /// `owner_count` owners: the policy's `write_quorum`, where 0 means every owner (all of them
    /// are up, by construction; with `replicas >= 2` and at least two `Up` nodes that is at least
    /// 2); never more than there are owners, which is never more than there are `Up` nodes.
    pub fn required_copies(&self, owner_count: usize) -> usize {
        match self.map.policy.write_quorum {
            0 => owner_count,
            quorum => (quorum as usize).min(owner_count),
        }
    }
}

/// The owners of one blob under its recorded placement ([`Placement::owners_of_record`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordOwners {
    pub owners: Vec<BlobNodeId>,
    /// Every rule set has as many owners as its rules ask for.
    pub complete: bool,
    /// Some rule set has no owner at all: no copy may be dropped on the others' word.
    pub empty_set: bool,
}
