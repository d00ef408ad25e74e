//! Properties of placement under random clusters, rules and sharing: every owner a blob's rule
//! sets ask for is an `Up` node inside the zones of its set, each set gets as many owners as it
//! asks (or every `Up` node of its zones), the blob's owners are exactly the union of its sets'
//! owners, and a node joining only ever adds itself to a set's owners (no other copy moves).

use cluster_api::{
    placement_sets, BlobInfo, BlobNodeInfo, ClusterMap, ClusterMember, NodeState, Placement,
    PlacementRule, ReplicationPolicy, RepoPlacement,
};
use oci_model::Digest;
use proptest::prelude::*;

const ZONES: [&str; 3] = ["eu-west", "eu-central", "us-east"];
const NAMESPACES: [&str; 4] = ["eu", "us", "team", "ap"];

fn member(id: u64, zone: usize, weight: u32, state: NodeState) -> ClusterMember {
    ClusterMember {
        node: BlobNodeInfo {
            id,
            addr: format!("n{id}:1"),
            zone: ZONES[zone].to_owned(),
            weight,
            http_url: None,
        },
        state,
    }
}

fn state_of(code: u8) -> NodeState {
    match code {
        0 | 1 => NodeState::Up,
        2 => NodeState::Draining,
        _ => NodeState::Down,
    }
}

prop_compose! {
    fn cluster()(
        nodes in prop::collection::vec((0..ZONES.len(), 1u32..4, 0u8..4), 1..8),
        rules in prop::collection::vec(
            (0..NAMESPACES.len(), prop::collection::btree_set(0..ZONES.len(), 1..=3), prop::option::of(1u32..4)),
            0..3,
        ),
        replicas in 1u32..4,
    ) -> ClusterMap {
        let members = nodes
            .iter()
            .enumerate()
            .map(|(i, (zone, weight, state))| member(i as u64 + 1, *zone, *weight, state_of(*state)))
            .collect();
        let placement = rules
            .iter()
            .enumerate()
            .map(|(i, (namespace, zones, copies))| PlacementRule {
                id: format!("r{i}"),
                repositories: format!("{}/**", NAMESPACES[*namespace]),
                zones: zones.iter().map(|zone| ZONES[*zone].to_owned()).collect(),
                replicas: *copies,
            })
            .collect();
        ClusterMap {
            epoch: 1,
            policy: ReplicationPolicy { replicas, write_quorum: 0 },
            members,
            placement,
        }
    }
}

/// The owners of `info`'s digest for each of its rule sets (one unrestricted set when empty).
fn set_owners(placement: &Placement, info: &BlobInfo) -> Vec<(RepoPlacement, Vec<u64>)> {
    let map = placement.map();
    let sets = if info.placement.is_empty() {
        vec![Vec::new()]
    } else {
        info.placement.clone()
    };
    sets.iter()
        .map(|ids| {
            let rules = RepoPlacement::for_rule_ids(&map.placement, ids);
            let owners = placement.owners_for(&info.digest, &rules);
            (rules, owners)
        })
        .collect()
}

proptest! {
    #[test]
    fn owners_stay_in_their_zones_and_a_join_moves_only_onto_the_joiner(
        map in cluster(),
        linked in prop::collection::vec(prop::collection::btree_set(0..NAMESPACES.len(), 1..=4), 1..6),
        joiner_zone in 0..ZONES.len(),
    ) {
        let placement = Placement::new(map.clone());
        let mut joined = map.clone();
        joined.members.push(member(100, joiner_zone, 2, NodeState::Up));
        let after_join = Placement::new(joined);
        for (index, namespaces) in linked.iter().enumerate() {
            let repos: Vec<String> = namespaces
                .iter()
                .map(|namespace| format!("{}/app", NAMESPACES[*namespace]))
                .collect();
            let info = BlobInfo {
                digest: Digest::sha256_of(format!("blob {index}").as_bytes()),
                size: 1,
                replicas: Vec::new(),
                placement: placement_sets(&map.placement, repos.iter().map(String::as_str)),
            };
            let record = placement.owners_of_record(&info);
            let mut union: Vec<u64> = Vec::new();
            for (rules, owners) in set_owners(&placement, &info) {
                let eligible: Vec<&ClusterMember> = map
                    .members
                    .iter()
                    .filter(|m| m.state == NodeState::Up && rules.allows(&m.node.zone))
                    .collect();
                for owner in &owners {
                    prop_assert!(
                        eligible.iter().any(|m| m.node.id == *owner),
                        "owner {} of {:?} is not an Up node in its zones", owner, rules
                    );
                }
                let wanted = (rules.replicas(&map.policy) as usize).min(eligible.len());
                prop_assert_eq!(owners.len(), wanted);
                let mut distinct = owners.clone();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), owners.len());
                for owner in &owners {
                    if !union.contains(owner) {
                        union.push(*owner);
                    }
                }
                let now = after_join.owners_for(&info.digest, &rules);
                for owner in &now {
                    prop_assert!(
                        owners.contains(owner) || *owner == 100,
                        "a join moved a copy of {:?} onto {}, not the joiner", rules, owner
                    );
                }
            }
            prop_assert_eq!(&record.owners, &union);
        }
    }
}
