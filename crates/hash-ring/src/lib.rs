//! Placement of content on blob nodes: a pure function from (members, key, n, allowed zones) to an
//! ordered list of distinct owner ids. No I/O, no clocks, no randomness, and no dependency on any
//! other Wharf crate: callers convert their cluster map into [`Member`]s.
//!
//! # Why weighted rendezvous hashing, not a ring of virtual nodes
//!
//! Each member gets a score for each key, `weight / -ln(u)` where `u` in (0, 1) is a hash of
//! (member id, key); members are ranked by score (the "logarithmic method" of Schindelhauer and
//! Schomaker). Compared with virtual nodes on a ring this gives:
//! - **exact weights**: a member's expected share is `weight / total weight`, with no variance
//!   from where its virtual points happen to land, and no table to size;
//! - **minimal movement by construction**: a join takes keys only onto the new member (it
//!   outranks the old winner or it does not); a removal moves only the keys that member owned,
//!   because the relative ranking of every other pair of members never changes;
//! - **no state**: nothing to build or keep in sync, so two nodes with the same member list
//!   always agree.
//!
//! The cost is O(members) score computations per key, which is nothing next to streaming a blob
//! for clusters of up to thousands of nodes.
//!
//! # Zones
//! Owners are picked in rank order, first at most one per zone until `n` owners or every zone is
//! used, then the remaining slots are filled in rank order. The first owner (the primary) is
//! therefore always the top-ranked member. A placement restricted to some zones (data residency)
//! only considers members in those zones.
//!
//! # Stability
//! The hash ([`hash_bytes`]) and the logarithm are written here with plain integer and IEEE-754
//! arithmetic (no platform `ln`, no `std` `RandomState`), so every build on every platform
//! computes the same placement. Changing either moves data across the whole cluster: the golden
//! values in the tests pin them.

mod score;

pub use score::hash_bytes;

use score::{member_seed, neg_ln_unit, unit_interval};

/// Identifies a member; the same numbers the cluster map uses for blob nodes.
pub type MemberId = u64;

/// One placement candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    /// Failure domain: owners are spread across zones where possible.
    pub zone: String,
    /// Relative share of keys; 0 means the member owns nothing.
    pub weight: u32,
}

impl Member {
    pub fn new(id: MemberId, zone: impl Into<String>, weight: u32) -> Member {
        Member {
            id,
            zone: zone.into(),
            weight,
        }
    }
}

/// A member with its hash seed, computed once.
#[derive(Clone, Debug)]
struct Candidate {
    id: MemberId,
    zone: String,
    weight: f64,
    seed: u64,
}

/// The placement function over one fixed set of members. Cheap to build; build a new one when
/// membership changes.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    /// Sorted by id, so the input order of members never matters.
    candidates: Vec<Candidate>,
}

impl Ring {
    /// A ring over `members`. Members with weight 0 are left out; of several members with the
    /// same id, the first is kept.
    pub fn new(members: impl IntoIterator<Item = Member>) -> Ring {
        let mut candidates: Vec<Candidate> = Vec::new();
        for member in members {
            if member.weight == 0 || candidates.iter().any(|c| c.id == member.id) {
                continue;
            }
            candidates.push(Candidate {
                id: member.id,
                seed: member_seed(member.id),
                zone: member.zone,
                weight: f64::from(member.weight),
            });
        }
        candidates.sort_by_key(|candidate| candidate.id);
        Ring { candidates }
    }

    /// Members that can own keys.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The `n` owners of `key` (fewer when there are fewer members), primary first.
    pub fn owners(&self, key: &[u8], n: usize) -> Vec<MemberId> {
        self.place(key, n, |_| true)
    }

    /// Like [`owners`](Ring::owners), considering only members whose zone is in `zones`.
    pub fn owners_in_zones(&self, key: &[u8], n: usize, zones: &[&str]) -> Vec<MemberId> {
        self.place(key, n, |zone| zones.contains(&zone))
    }

    fn place(&self, key: &[u8], n: usize, zone_allowed: impl Fn(&str) -> bool) -> Vec<MemberId> {
        let ranked = self.rank(key, zone_allowed);
        pick_spread(&ranked, n)
    }

    /// Allowed candidates, best first.
    fn rank(&self, key: &[u8], zone_allowed: impl Fn(&str) -> bool) -> Vec<(&Candidate, f64)> {
        let key_hash = hash_bytes(key);
        let mut ranked: Vec<(&Candidate, f64)> = self
            .candidates
            .iter()
            .filter(|candidate| zone_allowed(&candidate.zone))
            .map(|candidate| {
                let u = unit_interval(key_hash, candidate.seed);
                (candidate, candidate.weight / neg_ln_unit(u))
            })
            .collect();
        // Scores are finite and positive; ties (practically impossible) go to the lower id.
        ranked
            .sort_by(|(a, score_a), (b, score_b)| score_b.total_cmp(score_a).then(a.id.cmp(&b.id)));
        ranked
    }
}

/// Takes owners in rank order, one per zone first, then fills the remaining slots in rank order.
fn pick_spread(ranked: &[(&Candidate, f64)], n: usize) -> Vec<MemberId> {
    let mut owners: Vec<MemberId> = Vec::with_capacity(n.min(ranked.len()));
    let mut zones_used: Vec<&str> = Vec::new();
    for (candidate, _) in ranked {
        if owners.len() == n {
            return owners;
        }
        if !zones_used.contains(&candidate.zone.as_str()) {
            zones_used.push(&candidate.zone);
            owners.push(candidate.id);
        }
    }
    for (candidate, _) in ranked {
        if owners.len() == n {
            break;
        }
        if !owners.contains(&candidate.id) {
            owners.push(candidate.id);
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ring_and_zero_n_own_nothing() {
        assert!(Ring::new([]).owners(b"key", 3).is_empty());
        assert!(Ring::new([]).is_empty());
        let ring = Ring::new([Member::new(1, "a", 1)]);
        assert!(!ring.is_empty());
        assert!(ring.owners(b"key", 0).is_empty());
        assert_eq!(ring.owners(b"key", 3), vec![1]);
    }

    #[test]
    fn zero_weight_and_duplicate_members_are_left_out() {
        let ring = Ring::new([
            Member::new(1, "a", 0),
            Member::new(2, "a", 5),
            Member::new(2, "b", 5),
        ]);
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.owners(b"key", 2), vec![2]);
    }

    #[test]
    fn zones_are_spread_before_filling() {
        let ring = Ring::new([
            Member::new(1, "a", 1),
            Member::new(2, "a", 1),
            Member::new(3, "a", 1),
            Member::new(4, "b", 1),
        ]);
        assert_eq!(ring.len(), 4);
        for key in 0..200u32 {
            let owners = ring.owners(&key.to_be_bytes(), 2);
            assert!(
                owners.contains(&4),
                "zone b must hold one of two copies: {owners:?}"
            );
        }
    }

    #[test]
    fn restricted_zones_are_respected() {
        let ring = Ring::new([
            Member::new(1, "eu", 1),
            Member::new(2, "us", 1),
            Member::new(3, "eu", 1),
        ]);
        for key in 0..100u32 {
            let owners = ring.owners_in_zones(&key.to_be_bytes(), 3, &["eu"]);
            assert_eq!(owners.len(), 2);
            assert!(!owners.contains(&2));
        }
        assert!(ring.owners_in_zones(b"k", 3, &["ap"]).is_empty());
    }
}
