//! Data residency: placement rules that confine a repository's blobs to zones.
//!
//! A rule names a repository glob, the zones the bytes of matching repositories may be stored in,
//! and optionally how many copies of each blob they keep there. Rules are part of the cluster map
//! (so a change bumps its epoch and every node that holds the map holds the same rules); the state
//! machine refuses a commit whose copies break them, and every node that places a byte computes
//! where from the same [`RepoPlacement`].
//!
//! Several rules may match one repository: all of them apply, so its bytes may be stored only in
//! the zones every matching rule allows (their intersection; an empty one refuses every push
//! with an error naming the rules) and it keeps the largest of their copy counts. A repository no
//! rule matches is placed as it always was, in any zone.

use serde::{Deserialize, Serialize};

use crate::auth::{glob_matches, validate_glob, validate_id};
use crate::{MetaError, ReplicationPolicy};

/// The most copies a rule may ask for.
pub const MAX_RULE_REPLICAS: u32 = 16;

/// One placement rule, kept in the cluster map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRule {
    pub id: String,
    /// Repository glob: `*` within a path segment, `**` across (`eu/**`).
    pub repositories: String,
    /// The zones a matching repository's blobs may be stored in (blob nodes' `zone`).
    pub zones: Vec<String>,
    /// Copies of each blob kept in those zones; `None` takes the replication policy's.
    pub replicas: Option<u32>,
}

impl PlacementRule {
    /// Whether the rule governs `repo`. A pattern that does not compile governs nothing
    /// (patterns are checked when a rule is stored).
    pub fn matches(&self, repo: &str) -> bool {
        glob_matches(&self.repositories, repo)
    }

    /// Checks the id, the glob, the zones (1 to 64 of them, each 1-64 characters of letters,
    /// digits, '.', '_', '-', no repeats) and the copy count (1 to [`MAX_RULE_REPLICAS`]).
    pub fn validate(&self) -> Result<(), MetaError> {
        validate_id("placement rule", &self.id)?;
        validate_glob(&self.repositories)?;
        if self.zones.is_empty() || self.zones.len() > 64 {
            return Err(MetaError::Invalid(format!(
                "placement rule {} needs 1 to 64 zones",
                self.id
            )));
        }
        for (at, zone) in self.zones.iter().enumerate() {
            validate_zone(zone)?;
            if self.zones[..at].contains(zone) {
                return Err(MetaError::Invalid(format!(
                    "placement rule {} names zone {zone:?} twice",
                    self.id
                )));
            }
        }
        if let Some(replicas) = self.replicas {
            if replicas == 0 || replicas > MAX_RULE_REPLICAS {
                return Err(MetaError::Invalid(format!(
                    "placement rule {} asks for {replicas} copies; 1 to {MAX_RULE_REPLICAS} allowed",
                    self.id
                )));
            }
        }
        Ok(())
    }
}

impl PlacementRule {
    /// Refuses a rule naming a zone no blob node is in (`known`: the zones of the cluster map's
    /// nodes, in any state): a typo would otherwise refuse every push it governs.
    pub fn check_zones<'a>(
        &self,
        known: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), MetaError> {
        let known: Vec<&str> = known.into_iter().collect();
        match self
            .zones
            .iter()
            .find(|zone| !known.contains(&zone.as_str()))
        {
            None => Ok(()),
            Some(zone) => {
                let mut zones = known;
                zones.sort_unstable();
                zones.dedup();
                Err(MetaError::Invalid(format!(
                    "placement rule {}: no blob node is in zone {zone:?} (zones with nodes: {})",
                    self.id,
                    if zones.is_empty() {
                        "none".to_owned()
                    } else {
                        zones.join(", ")
                    }
                )))
            }
        }
    }
}

/// Adds `rule` to `rules` (kept in id order), or replaces the rule with its id, once it
/// validates and names only zones in `zones_with_nodes`; true when the rules changed (the cluster
/// map's epoch then moves). The state machine and the fake both change their rules here.
pub fn put_placement_rule<'a>(
    rules: &mut Vec<PlacementRule>,
    rule: PlacementRule,
    zones_with_nodes: impl IntoIterator<Item = &'a str>,
) -> Result<bool, MetaError> {
    rule.validate()?;
    rule.check_zones(zones_with_nodes)?;
    match rules.binary_search_by(|known| known.id.cmp(&rule.id)) {
        Ok(at) if rules[at] == rule => return Ok(false),
        Ok(at) => rules[at] = rule,
        Err(at) => rules.insert(at, rule),
    }
    Ok(true)
}

/// Removes rule `id` from `rules`; `Invalid` when there is none.
pub fn delete_placement_rule(rules: &mut Vec<PlacementRule>, id: &str) -> Result<(), MetaError> {
    let before = rules.len();
    rules.retain(|rule| rule.id != id);
    if rules.len() == before {
        return Err(MetaError::Invalid(format!(
            "placement rule {id} does not exist"
        )));
    }
    Ok(())
}

/// A zone name as rules spell it.
fn validate_zone(zone: &str) -> Result<(), MetaError> {
    let ok = !zone.is_empty()
        && zone.len() <= 64
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(MetaError::Invalid(format!(
            "zone {zone:?} must be 1-64 characters of letters, digits, '.', '_', '-'"
        )))
    }
}

/// A blob's placement ([`BlobInfo::placement`](crate::BlobInfo::placement)) when the
/// repositories `repos` link it: the distinct rule sets `rules` give them, sorted; empty when no
/// rule governs any of them.
pub fn placement_sets<'a>(
    rules: &[PlacementRule],
    repos: impl IntoIterator<Item = &'a str>,
) -> Vec<Vec<String>> {
    let mut sets: Vec<Vec<String>> = Vec::new();
    if rules.is_empty() {
        return sets;
    }
    for repo in repos {
        let set = RepoPlacement::for_repository(rules, repo).rules;
        if !sets.contains(&set) {
            sets.push(set);
        }
    }
    sets.sort();
    if sets.iter().all(Vec::is_empty) {
        sets.clear();
    }
    sets
}

/// Where one repository's blobs may be stored, from every rule that matches it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoPlacement {
    /// The ids of the rules that apply, in id order; empty when none does.
    pub rules: Vec<String>,
    /// The zones allowed by every rule that applies; `None` when no rule applies (any zone).
    pub zones: Option<Vec<String>>,
    /// The largest copy count the rules ask for, if any asks.
    pub replicas: Option<u32>,
}

impl RepoPlacement {
    /// The placement of `repo` under `rules`.
    pub fn for_repository(rules: &[PlacementRule], repo: &str) -> RepoPlacement {
        RepoPlacement::of_rules(rules.iter().filter(|rule| rule.matches(repo)))
    }

    /// The placement of a blob linked under the rule ids `ids` (one of
    /// [`BlobInfo::placement`](crate::BlobInfo::placement)), with the rules as they stand now:
    /// a rule since removed no longer applies, and one since changed applies as changed.
    pub fn for_rule_ids(rules: &[PlacementRule], ids: &[String]) -> RepoPlacement {
        RepoPlacement::of_rules(rules.iter().filter(|rule| ids.contains(&rule.id)))
    }

    /// Every rule in `rules` applies.
    fn of_rules<'a>(rules: impl Iterator<Item = &'a PlacementRule>) -> RepoPlacement {
        let mut placement = RepoPlacement::default();
        for rule in rules {
            placement.rules.push(rule.id.clone());
            placement.zones = Some(match placement.zones.take() {
                None => rule.zones.clone(),
                Some(zones) => zones
                    .into_iter()
                    .filter(|zone| rule.zones.contains(zone))
                    .collect(),
            });
            placement.replicas = placement.replicas.max(rule.replicas);
        }
        placement
    }

    /// True when no rule applies: any zone may store the repository's blobs.
    pub fn is_unrestricted(&self) -> bool {
        self.zones.is_none()
    }

    /// Whether a blob of the repository may be stored in `zone`.
    pub fn allows(&self, zone: &str) -> bool {
        self.zones
            .as_ref()
            .is_none_or(|zones| zones.iter().any(|allowed| allowed == zone))
    }

    /// The number of copies each blob keeps: the rules' count, else the policy's.
    pub fn replicas(&self, policy: &ReplicationPolicy) -> u32 {
        self.replicas.unwrap_or(policy.replicas).max(1)
    }

    /// The rules and zones, for error messages: `placement rule "eu" (zones eu-west, eu-central)`.
    pub fn describe(&self) -> String {
        let rules = self
            .rules
            .iter()
            .map(|id| format!("{id:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let noun = if self.rules.len() == 1 {
            "placement rule"
        } else {
            "placement rules"
        };
        match &self.zones {
            None => "no placement rule".to_owned(),
            Some(zones) if zones.is_empty() => format!("{noun} {rules} (no zone allowed by all)"),
            Some(zones) => format!("{noun} {rules} (zones {})", zones.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, repositories: &str, zones: &[&str], replicas: Option<u32>) -> PlacementRule {
        PlacementRule {
            id: id.into(),
            repositories: repositories.into(),
            zones: zones.iter().map(|zone| zone.to_string()).collect(),
            replicas,
        }
    }

    #[test]
    fn a_repository_no_rule_matches_may_go_anywhere() {
        let rules = [rule("eu", "eu/**", &["eu-west"], None)];
        let placement = RepoPlacement::for_repository(&rules, "us/app");
        assert!(placement.is_unrestricted());
        assert!(placement.allows("eu-west") && placement.allows("us-east"));
        assert!(placement.rules.is_empty());
        let policy = ReplicationPolicy {
            replicas: 2,
            write_quorum: 0,
        };
        assert_eq!(placement.replicas(&policy), 2);
    }

    #[test]
    fn a_matching_rule_confines_zones_and_sets_copies() {
        let rules = [rule("eu", "eu/**", &["eu-west", "eu-central"], Some(3))];
        let placement = RepoPlacement::for_repository(&rules, "eu/team/app");
        assert_eq!(placement.rules, vec!["eu".to_owned()]);
        assert!(placement.allows("eu-central"));
        assert!(!placement.allows("us-east"));
        assert_eq!(placement.replicas(&ReplicationPolicy::default()), 3);
        assert_eq!(
            placement.describe(),
            "placement rule \"eu\" (zones eu-west, eu-central)"
        );
        // `*` stays within a segment.
        let rules = [rule("top", "eu/*", &["eu-west"], None)];
        assert!(RepoPlacement::for_repository(&rules, "eu/team/app").is_unrestricted());
        assert!(!RepoPlacement::for_repository(&rules, "eu/app").is_unrestricted());
    }

    #[test]
    fn every_matching_rule_applies_zones_intersect_and_copies_take_the_largest() {
        let rules = [
            rule("eu", "eu/**", &["eu-west", "eu-central"], Some(2)),
            rule("de", "eu/de/**", &["eu-central", "de-north"], Some(3)),
        ];
        let placement = RepoPlacement::for_repository(&rules, "eu/de/app");
        assert_eq!(placement.rules, vec!["eu".to_owned(), "de".to_owned()]);
        assert_eq!(placement.zones, Some(vec!["eu-central".to_owned()]));
        assert_eq!(placement.replicas, Some(3));
        // Disjoint zones: nothing is allowed, and the message says so.
        let rules = [
            rule("eu", "eu/**", &["eu-west"], None),
            rule("us", "**/us", &["us-east"], None),
        ];
        let placement = RepoPlacement::for_repository(&rules, "eu/us");
        assert_eq!(placement.zones, Some(vec![]));
        assert!(!placement.allows("eu-west") && !placement.allows("us-east"));
        assert!(placement.describe().contains("no zone allowed by all"));
    }

    #[test]
    fn a_blob_keeps_one_rule_set_per_kind_of_repository_linking_it() {
        let rules = [rule("eu", "eu/**", &["eu-west"], None)];
        let eu = vec!["eu".to_owned()];
        assert!(placement_sets(&rules, ["team/a", "team/b"]).is_empty());
        assert_eq!(placement_sets(&rules, ["eu/a", "eu/b"]), vec![eu.clone()]);
        assert_eq!(
            placement_sets(&rules, ["eu/a", "team/a"]),
            vec![vec![], eu],
            "also linked where no rule applies"
        );
        assert!(placement_sets(&[], ["eu/a"]).is_empty());
    }

    #[test]
    fn rule_ids_resolve_against_the_rules_as_they_stand() {
        let rules = [rule("eu", "eu/**", &["eu-west"], Some(3))];
        let ids = vec!["eu".to_owned(), "gone".to_owned()];
        let placement = RepoPlacement::for_rule_ids(&rules, &ids);
        assert_eq!(placement.zones, Some(vec!["eu-west".to_owned()]));
        assert_eq!(placement.replicas, Some(3));
        assert!(RepoPlacement::for_rule_ids(&rules, &["gone".to_owned()]).is_unrestricted());
    }

    #[test]
    fn a_rule_naming_a_zone_without_nodes_is_refused() {
        let eu = rule("eu", "eu/**", &["eu-west", "eu-central"], None);
        assert!(eu.check_zones(["eu-west", "eu-central", "us-east"]).is_ok());
        match eu.check_zones(["eu-west", "us-east", "eu-west"]) {
            Err(MetaError::Invalid(message)) => {
                assert!(message.contains("\"eu-central\""), "{message}");
                assert!(message.contains("eu-west, us-east"), "{message}");
            }
            other => panic!("eu-central has no node: {other:?}"),
        }
        assert!(eu.check_zones([]).is_err());
    }

    #[test]
    fn rules_are_validated() {
        assert!(rule("eu", "eu/**", &["eu-west"], Some(2))
            .validate()
            .is_ok());
        for bad in [
            rule("", "eu/**", &["eu-west"], None),
            rule("e u", "eu/**", &["eu-west"], None),
            rule("eu", "", &["eu-west"], None),
            rule("eu", "eu/[", &["eu-west"], None),
            rule("eu", "eu/**", &[], None),
            rule("eu", "eu/**", &["eu west"], None),
            rule("eu", "eu/**", &["eu-west", "eu-west"], None),
            rule("eu", "eu/**", &["eu-west"], Some(0)),
            rule("eu", "eu/**", &["eu-west"], Some(MAX_RULE_REPLICAS + 1)),
        ] {
            assert!(
                matches!(bad.validate(), Err(MetaError::Invalid(_))),
                "{bad:?} must be refused"
            );
        }
    }
}
