//! [`PlacementStatus`]: where the blobs of ruled repositories stand against the placement rules,
//! folded over meta's blob records under one cluster map. The answer of
//! `wharf admin placement status` and `GET /admin/v1/placement/status`, and what fsck reports.

use oci_model::Digest;
use serde::{Deserialize, Serialize};

use crate::{BlobInfo, MetaApi, MetaError, Placement, RepoPlacement};

/// Blob records read from meta per call.
const PAGE: usize = 1_000;

/// Counts over every blob record; a blob is *ruled* when a rule set it was linked under still
/// names a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementStatus {
    /// The cluster map's epoch the blobs were judged under.
    pub epoch: u64,
    /// Blob records examined.
    pub blobs: u64,
    /// Of those, the ruled ones.
    pub ruled: u64,
    /// Ruled blobs holding every copy their rules ask for, and none outside their zones.
    pub compliant: u64,
    /// Ruled blobs the repair loop has yet to fix: a copy missing, or one outside the zones.
    pub pending: u64,
    /// Ruled blobs whose rules cannot be met now: fewer `Up` nodes in their zones than copies.
    pub impossible: u64,
    /// Copies recorded on a node in no zone any of the blob's rule sets allows.
    pub copies_outside: u64,
    /// Copies the rules ask for (on the digest's owners within their zones) not recorded.
    pub copies_missing: u64,
    /// The same verdicts per rule (a blob under two rules counts for both).
    pub rules: Vec<RulePlacementStatus>,
}

/// One rule's share of a [`PlacementStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePlacementStatus {
    pub id: String,
    pub zones: Vec<String>,
    pub blobs: u64,
    pub compliant: u64,
    pub pending: u64,
    pub impossible: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Compliant,
    Pending,
    Impossible,
}

impl PlacementStatus {
    /// An empty status for `placement`'s map: every rule listed, nothing counted yet.
    pub fn new(placement: &Placement) -> PlacementStatus {
        let map = placement.map();
        PlacementStatus {
            epoch: map.epoch,
            rules: map
                .placement
                .iter()
                .map(|rule| RulePlacementStatus {
                    id: rule.id.clone(),
                    zones: rule.zones.clone(),
                    ..RulePlacementStatus::default()
                })
                .collect(),
            ..PlacementStatus::default()
        }
    }

    /// Copies outside the zones plus copies missing: 0 once the repair loop has caught up.
    pub fn violations(&self) -> u64 {
        self.copies_outside + self.copies_missing
    }

    /// Judges one blob record.
    pub fn add(&mut self, placement: &Placement, record: &BlobInfo) {
        self.blobs += 1;
        let map = placement.map();
        let sets: Vec<RepoPlacement> = record
            .placement
            .iter()
            .map(|ids| RepoPlacement::for_rule_ids(&map.placement, ids))
            .collect();
        if !sets.iter().any(|set| !set.is_unrestricted()) {
            return;
        }
        self.ruled += 1;
        let mut impossible = false;
        let mut missing = 0;
        for set in sets.iter().filter(|set| !set.is_unrestricted()) {
            let owners = placement.owners_for(&record.digest, set);
            impossible |= owners.len() < set.replicas(&map.policy) as usize;
            missing += owners
                .iter()
                .filter(|owner| !record.replicas.contains(owner))
                .count() as u64;
        }
        // A set with no rule left (or a repository no rule matched) allows every zone.
        let anywhere = sets.iter().any(RepoPlacement::is_unrestricted);
        let outside = if anywhere {
            0
        } else {
            record
                .replicas
                .iter()
                .filter(|node| {
                    let zone = map.zone_of(**node);
                    !sets
                        .iter()
                        .any(|set| zone.is_some_and(|zone| set.allows(zone)))
                })
                .count() as u64
        };
        self.copies_missing += missing;
        self.copies_outside += outside;
        let verdict = if impossible {
            Verdict::Impossible
        } else if missing + outside > 0 {
            Verdict::Pending
        } else {
            Verdict::Compliant
        };
        self.count(verdict);
        let mut ids: Vec<&String> = sets.iter().flat_map(|set| &set.rules).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Some(rule) = self.rules.iter_mut().find(|rule| &rule.id == id) {
                rule.blobs += 1;
                match verdict {
                    Verdict::Compliant => rule.compliant += 1,
                    Verdict::Pending => rule.pending += 1,
                    Verdict::Impossible => rule.impossible += 1,
                }
            }
        }
    }

    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Compliant => self.compliant += 1,
            Verdict::Pending => self.pending += 1,
            Verdict::Impossible => self.impossible += 1,
        }
    }

    /// Reads the cluster map and pages through every blob record of `meta`.
    pub async fn of(meta: &dyn MetaApi) -> Result<PlacementStatus, MetaError> {
        let placement = Placement::new(meta.cluster_map().await?);
        let mut status = PlacementStatus::new(&placement);
        let mut after: Option<Digest> = None;
        loop {
            let page = meta.list_blobs(after.as_ref(), PAGE).await?;
            for record in &page {
                status.add(&placement, record);
            }
            if page.len() < PAGE {
                return Ok(status);
            }
            after = page.last().map(|record| record.digest.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        BlobNodeInfo, ClusterMap, ClusterMember, NodeState, PlacementRule, ReplicationPolicy,
    };

    fn eu_rule(replicas: Option<u32>) -> PlacementRule {
        PlacementRule {
            id: "eu".into(),
            repositories: "eu/**".into(),
            zones: vec!["eu-west".into(), "eu-central".into()],
            replicas,
        }
    }

    /// Nodes 1 (eu-west), 2 (eu-central), 3 (us-east), all up; RF 2; `rules`.
    fn placement(rules: Vec<PlacementRule>) -> Placement {
        let members = [(1, "eu-west"), (2, "eu-central"), (3, "us-east")]
            .into_iter()
            .map(|(id, zone)| ClusterMember {
                node: BlobNodeInfo {
                    id,
                    addr: format!("n{id}:1"),
                    zone: zone.into(),
                    weight: 100,
                    http_url: None,
                },
                state: NodeState::Up,
            })
            .collect();
        Placement::new(ClusterMap {
            epoch: 7,
            policy: ReplicationPolicy {
                replicas: 2,
                write_quorum: 0,
            },
            members,
            placement: rules,
        })
    }

    fn record(replicas: &[u64], sets: &[&[&str]]) -> BlobInfo {
        BlobInfo {
            digest: Digest::sha256_of(b"layer"),
            size: 5,
            replicas: replicas.to_vec(),
            placement: sets
                .iter()
                .map(|set| set.iter().map(|id| id.to_string()).collect())
                .collect(),
        }
    }

    #[test]
    fn blobs_are_judged_against_the_rules_they_were_linked_under() {
        let placement = placement(vec![eu_rule(None)]);
        let mut status = PlacementStatus::new(&placement);
        assert_eq!((status.epoch, status.rules.len()), (7, 1));
        // Unruled: counted, not judged.
        status.add(&placement, &record(&[3], &[]));
        status.add(&placement, &record(&[3], &[&["gone"]]));
        assert_eq!((status.blobs, status.ruled), (2, 0));
        // Both EU nodes hold it: compliant.
        status.add(&placement, &record(&[2, 1], &[&["eu"]]));
        // One copy in the US and node 2's missing: pending, two violations.
        status.add(&placement, &record(&[1, 3], &[&["eu"]]));
        // Also linked where no rule applies: a US copy is allowed.
        status.add(&placement, &record(&[1, 2, 3], &[&[], &["eu"]]));
        assert_eq!(
            (
                status.ruled,
                status.compliant,
                status.pending,
                status.impossible
            ),
            (3, 2, 1, 0)
        );
        assert_eq!((status.copies_outside, status.copies_missing), (1, 1));
        assert_eq!(status.violations(), 2);
        assert_eq!(
            status.rules[0],
            RulePlacementStatus {
                id: "eu".into(),
                zones: vec!["eu-west".into(), "eu-central".into()],
                blobs: 3,
                compliant: 2,
                pending: 1,
                impossible: 0,
            }
        );
    }

    #[test]
    fn more_copies_than_nodes_in_the_zones_is_impossible() {
        let placement = placement(vec![eu_rule(Some(3))]);
        let mut status = PlacementStatus::new(&placement);
        status.add(&placement, &record(&[1, 2], &[&["eu"]]));
        assert_eq!((status.impossible, status.pending), (1, 0));
        assert_eq!(status.rules[0].impossible, 1);
        assert_eq!(status.violations(), 0, "every copy that can exist does");
    }
}
