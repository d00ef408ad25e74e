//! Retention: rules that prune tags and untagged manifests per repository glob, and the
//! conditional actions a retention pass proposes.

use oci_model::{Digest, RepositoryName, Tag};
use serde::{Deserialize, Serialize};

use crate::auth::{glob_matches, validate_glob, validate_id};
use crate::error::MetaError;

/// A retention rule. In repositories matching `repositories`:
/// - with `keep_last`, only the newest `keep_last` tags by push time stay, plus those matching
///   `keep_tags`; the others are removed (the manifests stay, untagged);
/// - with `untagged_older_than_secs`, manifests with no tag that were pushed longer ago than that
///   are deleted (never a child of an index still in the repository, never a referrer whose
///   subject is still there, never a tag an immutable rule protects).
///
/// When several rules match a repository, something goes only when every one of them lets it
/// go. A `dry_run` rule is never enforced; the retention plan still lists what it would remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRule {
    pub id: String,
    pub repositories: String,
    pub keep_last: Option<u32>,
    pub keep_tags: Option<String>,
    pub untagged_older_than_secs: Option<u64>,
    pub dry_run: bool,
}

impl RetentionRule {
    pub fn validate(&self) -> Result<(), MetaError> {
        validate_id("retention rule", &self.id)?;
        validate_glob(&self.repositories)?;
        if let Some(pattern) = &self.keep_tags {
            validate_glob(pattern)?;
        }
        if self.keep_last.is_none() && self.untagged_older_than_secs.is_none() {
            return Err(MetaError::Invalid(format!(
                "retention rule {} removes nothing: give keep_last, untagged_older_than or both",
                self.id
            )));
        }
        Ok(())
    }

    pub fn applies_to(&self, repo: &str) -> bool {
        glob_matches(&self.repositories, repo)
    }

    /// Whether this rule lets a tag go, given its rank among the repository's tags (0 = the most
    /// recently pushed).
    pub fn releases_tag(&self, tag: &str, rank: usize) -> bool {
        let Some(keep_last) = self.keep_last else {
            return false;
        };
        let kept_by_pattern = self
            .keep_tags
            .as_deref()
            .is_some_and(|pattern| glob_matches(pattern, tag));
        rank >= keep_last as usize && !kept_by_pattern
    }

    /// Whether this rule lets an untagged manifest pushed at `pushed_ms` go at `now_ms`.
    pub fn releases_untagged(&self, pushed_ms: u64, now_ms: u64) -> bool {
        self.untagged_older_than_secs
            .is_some_and(|secs| pushed_ms.saturating_add(secs.saturating_mul(1000)) < now_ms)
    }
}

/// One step of a retention pass. Each carries what the plan saw, and the state machine applies
/// it only if that still holds (the tag still points there, pushed at the same time; the
/// manifest is still untagged and unreferenced), so a push racing the pass always wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionAction {
    Untag {
        repo: RepositoryName,
        tag: Tag,
        digest: Digest,
        pushed_ms: u64,
        rule: String,
    },
    DeleteUntagged {
        repo: RepositoryName,
        digest: Digest,
        pushed_ms: u64,
        rule: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> RetentionRule {
        RetentionRule {
            id: "ci".to_owned(),
            repositories: "ci/**".to_owned(),
            keep_last: Some(2),
            keep_tags: Some("release-*".to_owned()),
            untagged_older_than_secs: Some(60),
            dry_run: false,
        }
    }

    #[test]
    fn rules_release_by_rank_pattern_and_age() {
        let rule = rule();
        rule.validate().expect("valid");
        assert!(
            rule.applies_to("ci/app") && rule.applies_to("ci/a/b") && !rule.applies_to("prod/app")
        );
        assert!(!rule.releases_tag("b1", 0) && !rule.releases_tag("b2", 1));
        assert!(rule.releases_tag("b3", 2));
        assert!(!rule.releases_tag("release-1", 9));
        assert!(!rule.releases_untagged(1_000, 61_000));
        assert!(rule.releases_untagged(1_000, 61_001));
        let lenient = RetentionRule {
            keep_last: None,
            ..rule.clone()
        };
        assert!(!lenient.releases_tag("b3", 100));
        let nothing = RetentionRule {
            keep_last: None,
            untagged_older_than_secs: None,
            ..rule.clone()
        };
        assert!(nothing.validate().is_err());
        let bad_glob = RetentionRule {
            repositories: "ci/[".to_owned(),
            ..rule
        };
        assert!(bad_glob.validate().is_err());
    }
}
