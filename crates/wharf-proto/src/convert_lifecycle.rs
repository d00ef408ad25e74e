//! Conversions of the lifecycle types (`lifecycle.proto`): usage, retention, sweep reports.

use cluster_api::{NamespaceUsage, RetentionAction, RetentionRule, SweepReport};
use oci_model::Digest;

use crate::convert::{self, DecodeError};
use crate::pb;

pub fn usage_to_pb(usage: &NamespaceUsage) -> pb::NamespaceUsage {
    pb::NamespaceUsage {
        namespace: usage.namespace.clone(),
        logical_bytes: usage.logical_bytes,
        physical_bytes: usage.physical_bytes,
        blobs: usage.blobs,
        manifests: usage.manifests,
        quota_bytes: usage.quota_bytes,
    }
}

pub fn usage_from_pb(usage: pb::NamespaceUsage) -> NamespaceUsage {
    NamespaceUsage {
        namespace: usage.namespace,
        logical_bytes: usage.logical_bytes,
        physical_bytes: usage.physical_bytes,
        blobs: usage.blobs,
        manifests: usage.manifests,
        quota_bytes: usage.quota_bytes,
    }
}

pub fn rule_to_pb(rule: &RetentionRule) -> pb::RetentionRule {
    pb::RetentionRule {
        id: rule.id.clone(),
        repositories: rule.repositories.clone(),
        keep_last: rule.keep_last,
        keep_tags: rule.keep_tags.clone(),
        untagged_older_than_secs: rule.untagged_older_than_secs,
        dry_run: rule.dry_run,
    }
}

pub fn rule_from_pb(rule: pb::RetentionRule) -> RetentionRule {
    RetentionRule {
        id: rule.id,
        repositories: rule.repositories,
        keep_last: rule.keep_last,
        keep_tags: rule.keep_tags,
        untagged_older_than_secs: rule.untagged_older_than_secs,
        dry_run: rule.dry_run,
    }
}

pub fn action_to_pb(action: &RetentionAction) -> pb::RetentionAction {
    match action {
        RetentionAction::Untag {
            repo,
            tag,
            digest,
            pushed_ms,
            rule,
        } => pb::RetentionAction {
            kind: pb::RetentionActionKind::Untag.into(),
            repo: repo.to_string(),
            tag: Some(tag.to_string()),
            digest: digest.to_string(),
            pushed_ms: *pushed_ms,
            rule: rule.clone(),
        },
        RetentionAction::DeleteUntagged {
            repo,
            digest,
            pushed_ms,
            rule,
        } => pb::RetentionAction {
            kind: pb::RetentionActionKind::DeleteUntagged.into(),
            repo: repo.to_string(),
            tag: None,
            digest: digest.to_string(),
            pushed_ms: *pushed_ms,
            rule: rule.clone(),
        },
    }
}

pub fn action_from_pb(action: pb::RetentionAction) -> Result<RetentionAction, DecodeError> {
    let repo = convert::repo("repo", &action.repo)?;
    let digest = convert::digest("digest", &action.digest)?;
    match pb::RetentionActionKind::try_from(action.kind) {
        Ok(pb::RetentionActionKind::Untag) => {
            let tag = action.tag.ok_or_else(|| DecodeError {
                field: "tag",
                reason: "an untag action names its tag".to_owned(),
            })?;
            Ok(RetentionAction::Untag {
                repo,
                tag: oci_model::Tag::parse(&tag).map_err(|error| DecodeError {
                    field: "tag",
                    reason: error.to_string(),
                })?,
                digest,
                pushed_ms: action.pushed_ms,
                rule: action.rule,
            })
        }
        Ok(pb::RetentionActionKind::DeleteUntagged) => Ok(RetentionAction::DeleteUntagged {
            repo,
            digest,
            pushed_ms: action.pushed_ms,
            rule: action.rule,
        }),
        _ => Err(DecodeError {
            field: "kind",
            reason: format!("unknown retention action kind {}", action.kind),
        }),
    }
}

/// `(digest, generation)` pairs on `node`, as `ConfirmBlobDeletions` and `BlobsPurged` take them.
pub fn node_blobs_to_pb(node: u64, blobs: &[(Digest, u64)]) -> pb::NodeBlobGenerations {
    pb::NodeBlobGenerations {
        node,
        blobs: blobs
            .iter()
            .map(|(digest, generation)| pb::BlobGeneration {
                digest: digest.to_string(),
                generation: *generation,
            })
            .collect(),
    }
}

pub fn node_blobs_from_pb(
    request: &pb::NodeBlobGenerations,
) -> Result<Vec<(Digest, u64)>, DecodeError> {
    request
        .blobs
        .iter()
        .map(|blob| Ok((convert::digest("digest", &blob.digest)?, blob.generation)))
        .collect()
}

pub fn sweep_to_pb(report: &SweepReport) -> pb::SweepReport {
    pb::SweepReport {
        links_removed: report.links_removed,
        blobs_doomed: report.blobs_doomed,
        fences_expired: report.fences_expired,
        more: report.more,
    }
}

pub fn sweep_from_pb(report: pb::SweepReport) -> SweepReport {
    SweepReport {
        links_removed: report.links_removed,
        blobs_doomed: report.blobs_doomed,
        fences_expired: report.fences_expired,
        more: report.more,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_model::{Digest, RepositoryName, Tag};

    #[test]
    fn actions_and_rules_round_trip_and_bad_ones_are_refused() {
        let untag = RetentionAction::Untag {
            repo: RepositoryName::parse("ci/app").expect("name"),
            tag: Tag::parse("b7").expect("tag"),
            digest: Digest::sha256_of(b"m"),
            pushed_ms: 42,
            rule: "ci".to_owned(),
        };
        let delete = RetentionAction::DeleteUntagged {
            repo: RepositoryName::parse("ci/app").expect("name"),
            digest: Digest::sha256_of(b"m"),
            pushed_ms: 43,
            rule: "ci".to_owned(),
        };
        for action in [untag, delete] {
            assert_eq!(action_from_pb(action_to_pb(&action)), Ok(action));
        }
        let mut unknown = action_to_pb(&RetentionAction::DeleteUntagged {
            repo: RepositoryName::parse("a").expect("name"),
            digest: Digest::sha256_of(b"m"),
            pushed_ms: 1,
            rule: String::new(),
        });
        unknown.kind = 9;
        assert!(action_from_pb(unknown).is_err());
        let rule = RetentionRule {
            id: "ci".to_owned(),
            repositories: "ci/**".to_owned(),
            keep_last: Some(3),
            keep_tags: None,
            untagged_older_than_secs: Some(60),
            dry_run: true,
        };
        assert_eq!(rule_from_pb(rule_to_pb(&rule)), rule);
    }
}
