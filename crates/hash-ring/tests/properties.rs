//! Properties of placement: determinism, distinct owners, zone spread, minimal movement on join
//! and removal, and balance by weight.

use std::collections::BTreeMap;

use hash_ring::{Member, MemberId, Ring};
use proptest::prelude::*;

/// Keys shaped like the digests the blob nodes place.
fn key(index: u32) -> Vec<u8> {
    format!("sha256:{:064x}", u64::from(index).wrapping_mul(0x9E37_79B9)).into_bytes()
}

fn members_strategy(max: usize) -> impl Strategy<Value = Vec<Member>> {
    proptest::collection::vec((0u8..5, 1u32..400), 1..max).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(index, (zone, weight))| {
                Member::new(index as MemberId + 1, format!("zone-{zone}"), weight)
            })
            .collect()
    })
}

fn equal_members(count: u64) -> Vec<Member> {
    (1..=count)
        .map(|id| Member::new(id, format!("zone-{}", id % 3), 100))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn placement_is_deterministic_whatever_the_member_order(
        members in members_strategy(12), n in 0usize..6, rotate in 0usize..12,
    ) {
        let ring = Ring::new(members.clone());
        let mut shuffled = members;
        let len = shuffled.len();
        shuffled.rotate_left(rotate % len);
        shuffled.reverse();
        let again = Ring::new(shuffled);
        for index in 0..50 {
            prop_assert_eq!(ring.owners(&key(index), n), again.owners(&key(index), n));
        }
    }

    #[test]
    fn owners_are_distinct_and_as_many_as_possible(members in members_strategy(12), n in 0usize..8) {
        let ring = Ring::new(members.clone());
        for index in 0..50 {
            let owners = ring.owners(&key(index), n);
            prop_assert_eq!(owners.len(), n.min(members.len()));
            let mut unique = owners.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), owners.len());
        }
    }

    #[test]
    fn owners_span_as_many_zones_as_possible(members in members_strategy(12), n in 1usize..6) {
        let ring = Ring::new(members.clone());
        let zone_of: BTreeMap<MemberId, &str> =
            members.iter().map(|m| (m.id, m.zone.as_str())).collect();
        let mut zones: Vec<&str> = zone_of.values().copied().collect();
        zones.sort_unstable();
        zones.dedup();
        for index in 0..50 {
            let owners = ring.owners(&key(index), n);
            let mut owner_zones: Vec<&str> = owners.iter().map(|id| zone_of[id]).collect();
            owner_zones.sort_unstable();
            owner_zones.dedup();
            prop_assert_eq!(owner_zones.len(), n.min(zones.len()).min(owners.len()));
        }
    }

    #[test]
    fn allowed_zones_restrict_owners(members in members_strategy(12), n in 1usize..5) {
        let ring = Ring::new(members.clone());
        let allowed = ["zone-0", "zone-3"];
        let eligible = members.iter().filter(|m| allowed.contains(&m.zone.as_str())).count();
        for index in 0..30 {
            let owners = ring.owners_in_zones(&key(index), n, &allowed);
            prop_assert_eq!(owners.len(), n.min(eligible));
            for owner in owners {
                let member = members.iter().find(|m| m.id == owner).expect("a member");
                prop_assert!(allowed.contains(&member.zone.as_str()));
            }
        }
    }

    #[test]
    fn removal_moves_only_the_removed_members_keys(
        members in members_strategy(12), n in 1usize..4, victim in 0usize..12,
    ) {
        prop_assume!(members.len() >= 2);
        let removed = members[victim % members.len()].id;
        let before = Ring::new(members.clone());
        let after = Ring::new(members.into_iter().filter(|m| m.id != removed));
        for index in 0..200 {
            let old = before.owners(&key(index), n);
            if !old.contains(&removed) {
                prop_assert_eq!(after.owners(&key(index), n), old);
            }
        }
    }
}

/// Key count for the statistical tests: enough that a 1/11 share has a standard deviation of
/// under half a percentage point.
const KEYS: u32 = 20_000;

#[test]
fn a_join_moves_about_one_share_and_only_onto_the_new_member() {
    for count in [2u64, 5, 10, 20] {
        let before = Ring::new(equal_members(count));
        let mut joined = equal_members(count);
        joined.push(Member::new(count + 1, "zone-new", 100));
        let after = Ring::new(joined);
        let mut moved = 0u32;
        for index in 0..KEYS {
            let (old, new) = (before.owners(&key(index), 1), after.owners(&key(index), 1));
            if old != new {
                moved += 1;
                assert_eq!(
                    new,
                    vec![count + 1],
                    "a primary may only move onto the new member"
                );
            }
        }
        let fraction = f64::from(moved) / f64::from(KEYS);
        let share = 1.0 / (count + 1) as f64;
        // Tolerance: 0.015 absolute, over six standard deviations at these key counts.
        assert!(
            fraction <= share + 0.015 && fraction >= share - 0.015,
            "{count} -> {}: moved {fraction}, expected about {share}",
            count + 1
        );
    }
}

#[test]
fn a_join_with_replicas_adds_the_new_member_to_about_r_shares() {
    let before = Ring::new(equal_members(9));
    let mut joined = equal_members(9);
    joined.push(Member::new(10, "zone-1", 100));
    let after = Ring::new(joined);
    let mut changed = 0u32;
    for index in 0..KEYS {
        let (old, new) = (before.owners(&key(index), 2), after.owners(&key(index), 2));
        if old != new {
            changed += 1;
            assert!(
                new.contains(&10),
                "an owner set changes only to take in the new member"
            );
        }
    }
    // Two copies: the new member should hold about 2/10 of the keys; with zone spread a little
    // more or less. Tolerance 0.05 absolute.
    let fraction = f64::from(changed) / f64::from(KEYS);
    assert!((fraction - 0.2).abs() <= 0.05, "changed {fraction}");
}

#[test]
fn primaries_follow_weights() {
    let weights = [50u32, 100, 100, 150, 200, 300, 100, 75, 125, 100];
    let members: Vec<Member> = weights
        .iter()
        .enumerate()
        .map(|(index, weight)| Member::new(index as MemberId + 1, "zone", *weight))
        .collect();
    let ring = Ring::new(members);
    let total: u32 = weights.iter().sum();
    let mut counts: BTreeMap<MemberId, u32> = BTreeMap::new();
    for index in 0..KEYS * 2 {
        *counts.entry(ring.owners(&key(index), 1)[0]).or_default() += 1;
    }
    for (index, weight) in weights.iter().enumerate() {
        let expected = f64::from(KEYS * 2) * f64::from(*weight) / f64::from(total);
        let actual = f64::from(counts.get(&(index as MemberId + 1)).copied().unwrap_or(0));
        // Tolerance: 15% of the expected count (over five standard deviations for the
        // smallest share here).
        assert!(
            (actual - expected).abs() <= 0.15 * expected,
            "member {} (weight {weight}): {actual} keys, expected about {expected}",
            index + 1
        );
    }
}
