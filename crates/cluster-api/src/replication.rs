//! Replication rules: repositories copied to (push) or from (pull) another registry, kept in
//! the Raft state and carried out by the meta leader's replicator.

use serde::{Deserialize, Serialize};

use crate::auth::{glob_matches, validate_glob, validate_id};
use crate::error::MetaError;

/// Which way a rule copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// This registry's repositories to the remote one.
    Push,
    /// The remote registry's repositories into this one.
    Pull,
}

/// One replication rule: the repositories matching `repositories` (and of them the tags
/// matching `tags`) are copied between this registry and the one at `url`, blobs first,
/// manifests next, tags last; with `deletes`, tags and manifests gone at the source go at the
/// destination too. Credentials are kept like a proxy upstream's; views hide the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRule {
    pub id: String,
    pub mode: ReplicationMode,
    /// The remote registry's root, `http(s)://host[:port]`.
    pub url: String,
    /// Repository glob (`prod/**`), matched against this registry's names.
    pub repositories: String,
    pub tags: Option<String>,
    pub deletes: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM certificates the remote registry's TLS certificate may chain to, besides the
    /// system's (a private CA).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// What an operator sees of a rule: everything but the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationView {
    pub id: String,
    pub mode: ReplicationMode,
    pub url: String,
    pub repositories: String,
    pub tags: Option<String>,
    pub deletes: bool,
    pub username: Option<String>,
    pub has_password: bool,
    /// Whether a CA bundle of its own is set.
    #[serde(default)]
    pub has_ca: bool,
}

// By hand, so that a password never reaches a log line.
impl std::fmt::Debug for ReplicationRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.view(), f)
    }
}

impl ReplicationRule {
    pub fn validate(&self) -> Result<(), MetaError> {
        validate_id("replication rule", &self.id)?;
        crate::proxy::validate_url(&self.url).map_err(|reason| {
            MetaError::Invalid(format!("replication rule {}: {reason}", self.id))
        })?;
        crate::proxy::validate_ca_pem(self.ca_pem.as_deref()).map_err(|reason| {
            MetaError::Invalid(format!("replication rule {}: {reason}", self.id))
        })?;
        validate_glob(&self.repositories)?;
        if let Some(tags) = &self.tags {
            validate_glob(tags)?;
        }
        match (&self.username, &self.password) {
            (None, Some(_)) => Err(MetaError::Invalid(format!(
                "replication rule {}: a password needs a username",
                self.id
            ))),
            (Some(user), _) if user.is_empty() || user.contains(':') => {
                Err(MetaError::Invalid(format!(
                    "replication rule {}: a username is not empty and holds no ':'",
                    self.id
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn applies_to(&self, repo: &str) -> bool {
        glob_matches(&self.repositories, repo)
    }

    pub fn keeps_tag(&self, tag: &str) -> bool {
        self.tags
            .as_deref()
            .is_none_or(|pattern| glob_matches(pattern, tag))
    }

    pub fn view(&self) -> ReplicationView {
        ReplicationView {
            id: self.id.clone(),
            mode: self.mode,
            url: self.url.clone(),
            repositories: self.repositories.clone(),
            tags: self.tags.clone(),
            deletes: self.deletes,
            username: self.username.clone(),
            has_password: self.password.is_some(),
            has_ca: self.ca_pem.is_some(),
        }
    }
}

/// What the last pass of a rule did, as the replicator records it in the Raft state (so any
/// member answers `wharf admin replication status`, and a new leader's first pass starts from it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub rule: String,
    /// When the last pass started (unix ms, the leader's clock).
    pub last_run_ms: u64,
    /// When the last pass without an error started; the lag counts from it.
    pub last_success_ms: Option<u64>,
    pub tags_set: u64,
    pub manifests_copied: u64,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    pub tags_deleted: u64,
    /// Blobs linked from another repository at the destination instead of copied.
    #[serde(default)]
    pub blobs_mounted: u64,
    /// The last pass's errors, at most [`MAX_STATUS_ERRORS`].
    pub errors: Vec<String>,
    /// Changes the destination refused and the pass left as they are (a tag immutable there),
    /// at most [`MAX_STATUS_ERRORS`]: reported, not forced, and not errors.
    #[serde(default)]
    pub refused: Vec<String>,
}

/// A repository changed since push rule `rule` last copied it: what the replicator copies next,
/// before its next full pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationBacklog {
    pub rule: String,
    pub repo: oci_model::RepositoryName,
    /// The sequence number of the last change; the entry goes only if no change came since.
    pub seq: u64,
}

/// Errors a status keeps.
pub const MAX_STATUS_ERRORS: usize = 20;

/// A rule's status as operators read it (`wharf admin replication status` and
/// `GET /admin/v1/replication/status` alike): its last pass, and the lag since its last pass
/// without an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicationReport {
    pub rule: String,
    pub lag_secs: Option<u64>,
    pub last_pass: Option<ReplicationStatus>,
}

/// The report of every rule in `rules` from the passes `recorded`, at `now_ms` (unix ms).
pub fn replication_report(
    rules: &[ReplicationRule],
    recorded: &[ReplicationStatus],
    now_ms: u64,
) -> Vec<ReplicationReport> {
    rules
        .iter()
        .map(|rule| {
            let last_pass = recorded
                .iter()
                .find(|status| status.rule == rule.id)
                .cloned();
            let lag_secs = last_pass
                .as_ref()
                .and_then(|status| status.last_success_ms)
                .map(|at| now_ms.saturating_sub(at) / 1000);
            ReplicationReport {
                rule: rule.id.clone(),
                lag_secs,
                last_pass,
            }
        })
        .collect()
}

/// Adds `rule` (kept in id order) or replaces the one with its id; `Invalid` when it does not
/// validate.
pub fn put_replication_rule(
    rules: &mut Vec<ReplicationRule>,
    rule: ReplicationRule,
) -> Result<(), MetaError> {
    rule.validate()?;
    match rules.binary_search_by(|known| known.id.cmp(&rule.id)) {
        Ok(at) => rules[at] = rule,
        Err(at) => rules.insert(at, rule),
    }
    Ok(())
}

/// Removes rule `id`; `Invalid` when there is none.
pub fn delete_replication_rule(
    rules: &mut Vec<ReplicationRule>,
    id: &str,
) -> Result<(), MetaError> {
    let before = rules.len();
    rules.retain(|rule| rule.id != id);
    if rules.len() == before {
        return Err(MetaError::Invalid(format!(
            "replication rule {id} does not exist"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str) -> ReplicationRule {
        ReplicationRule {
            id: id.to_owned(),
            mode: ReplicationMode::Push,
            url: "https://dr.example".to_owned(),
            repositories: "prod/**".to_owned(),
            tags: Some("v*".to_owned()),
            deletes: true,
            username: Some("robot".to_owned()),
            password: Some("secret".to_owned()),
            ca_pem: None,
        }
    }

    #[test]
    fn rules_validate_match_and_hide_their_password() {
        let rule = rule("r1");
        rule.validate().expect("valid");
        assert!(rule.applies_to("prod/app") && rule.applies_to("prod/a/b"));
        assert!(!rule.applies_to("dev/app"));
        assert!(rule.keeps_tag("v1.2") && !rule.keeps_tag("latest"));
        assert!(!format!("{rule:?}").contains("secret"));
        for (bad, needle) in [
            (
                ReplicationRule {
                    ca_pem: Some("-----BEGIN KEY-----".into()),
                    ..rule.clone()
                },
                "no PEM certificate",
            ),
            (
                ReplicationRule {
                    url: "https://dr.example/".into(),
                    ..rule.clone()
                },
                "no path",
            ),
            (
                ReplicationRule {
                    repositories: "[".into(),
                    ..rule.clone()
                },
                "glob",
            ),
            (
                ReplicationRule {
                    username: None,
                    ..rule.clone()
                },
                "needs a username",
            ),
            (
                ReplicationRule {
                    id: "a b".into(),
                    ..rule.clone()
                },
                "id",
            ),
        ] {
            let error = bad.validate().expect_err(needle).to_string();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn put_replaces_by_id_and_delete_needs_the_rule() {
        let mut rules = Vec::new();
        put_replication_rule(&mut rules, rule("b")).expect("b");
        put_replication_rule(&mut rules, rule("a")).expect("a");
        let changed = ReplicationRule {
            deletes: false,
            ..rule("b")
        };
        put_replication_rule(&mut rules, changed.clone()).expect("replace");
        assert_eq!(rules, vec![rule("a"), changed]);
        delete_replication_rule(&mut rules, "a").expect("delete");
        assert!(delete_replication_rule(&mut rules, "a").is_err());
    }
}
