//! Conversions of the pull-through cache's types (`proxy.proto`).

use cluster_api::{
    FetchLease, ProxyUpstream, ReplicationBacklog, ReplicationMode, ReplicationRule,
    ReplicationStatus,
};

use crate::convert::DecodeError;
use crate::pb;

pub fn backlog_to_pb(entry: &ReplicationBacklog) -> pb::ReplicationBacklogEntry {
    pb::ReplicationBacklogEntry {
        rule: entry.rule.clone(),
        repo: entry.repo.to_string(),
        seq: entry.seq,
    }
}

pub fn backlog_from_pb(
    entry: pb::ReplicationBacklogEntry,
) -> Result<ReplicationBacklog, DecodeError> {
    Ok(ReplicationBacklog {
        rule: entry.rule,
        repo: crate::convert::repo("repo", &entry.repo)?,
        seq: entry.seq,
    })
}

pub fn replication_status_to_pb(status: &ReplicationStatus) -> pb::ReplicationStatus {
    pb::ReplicationStatus {
        rule: status.rule.clone(),
        last_run_ms: status.last_run_ms,
        last_success_ms: status.last_success_ms,
        tags_set: status.tags_set,
        manifests_copied: status.manifests_copied,
        blobs_copied: status.blobs_copied,
        bytes_copied: status.bytes_copied,
        tags_deleted: status.tags_deleted,
        errors: status.errors.clone(),
        blobs_mounted: status.blobs_mounted,
        refused: status.refused.clone(),
    }
}

pub fn replication_status_from_pb(status: pb::ReplicationStatus) -> ReplicationStatus {
    ReplicationStatus {
        rule: status.rule,
        last_run_ms: status.last_run_ms,
        last_success_ms: status.last_success_ms,
        tags_set: status.tags_set,
        manifests_copied: status.manifests_copied,
        blobs_copied: status.blobs_copied,
        bytes_copied: status.bytes_copied,
        tags_deleted: status.tags_deleted,
        errors: status.errors,
        blobs_mounted: status.blobs_mounted,
        refused: status.refused,
    }
}

pub fn replication_rule_to_pb(rule: &ReplicationRule) -> pb::ReplicationRule {
    pb::ReplicationRule {
        id: rule.id.clone(),
        mode: match rule.mode {
            ReplicationMode::Push => "push",
            ReplicationMode::Pull => "pull",
        }
        .to_owned(),
        url: rule.url.clone(),
        repositories: rule.repositories.clone(),
        tags: rule.tags.clone(),
        deletes: rule.deletes,
        username: rule.username.clone(),
        password: rule.password.clone(),
        ca_pem: rule.ca_pem.clone(),
    }
}

pub fn replication_rule_from_pb(rule: pb::ReplicationRule) -> Result<ReplicationRule, DecodeError> {
    let mode = match rule.mode.as_str() {
        "push" => ReplicationMode::Push,
        "pull" => ReplicationMode::Pull,
        other => {
            return Err(DecodeError {
                field: "mode",
                reason: format!("{other:?} is not push or pull"),
            })
        }
    };
    Ok(ReplicationRule {
        id: rule.id,
        mode,
        url: rule.url,
        repositories: rule.repositories,
        tags: rule.tags,
        deletes: rule.deletes,
        username: rule.username,
        password: rule.password,
        ca_pem: rule.ca_pem,
    })
}

pub fn proxy_to_pb(proxy: &ProxyUpstream) -> pb::ProxyUpstream {
    pb::ProxyUpstream {
        id: proxy.id.clone(),
        url: proxy.url.clone(),
        prefix: proxy.prefix.clone(),
        tag_ttl_secs: proxy.tag_ttl_secs,
        cache_ttl_secs: proxy.cache_ttl_secs,
        username: proxy.username.clone(),
        password: proxy.password.clone(),
        mirror: proxy.mirror,
        ca_pem: proxy.ca_pem.clone(),
    }
}

pub fn proxy_from_pb(proxy: pb::ProxyUpstream) -> ProxyUpstream {
    ProxyUpstream {
        id: proxy.id,
        url: proxy.url,
        prefix: proxy.prefix,
        tag_ttl_secs: proxy.tag_ttl_secs,
        cache_ttl_secs: proxy.cache_ttl_secs,
        username: proxy.username,
        password: proxy.password,
        mirror: proxy.mirror,
        ca_pem: proxy.ca_pem,
    }
}

pub fn lease_to_pb(lease: &FetchLease) -> pb::FetchLease {
    pb::FetchLease {
        granted: lease.granted,
        holder: lease.holder.clone(),
        expires_in_ms: lease.expires_in_ms,
    }
}

pub fn lease_from_pb(lease: pb::FetchLease) -> FetchLease {
    FetchLease {
        granted: lease.granted,
        holder: lease.holder,
        expires_in_ms: lease.expires_in_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_and_leases_round_trip() {
        let proxy = ProxyUpstream {
            id: "hub".into(),
            url: "https://registry-1.docker.io".into(),
            prefix: "dockerhub".into(),
            tag_ttl_secs: 60,
            cache_ttl_secs: 3600,
            username: Some("robot".into()),
            password: Some("secret".into()),
            mirror: true,
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        };
        assert_eq!(proxy_from_pb(proxy_to_pb(&proxy)), proxy);
        let lease = FetchLease {
            granted: false,
            holder: "gw-1".into(),
            expires_in_ms: 9_000,
        };
        assert_eq!(lease_from_pb(lease_to_pb(&lease)), lease);
        let rule = ReplicationRule {
            id: "dr".into(),
            mode: ReplicationMode::Pull,
            url: "https://dr.example".into(),
            repositories: "prod/**".into(),
            tags: Some("v*".into()),
            deletes: true,
            username: None,
            password: None,
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n".into()),
        };
        let decoded = replication_rule_from_pb(replication_rule_to_pb(&rule)).expect("decodes");
        assert_eq!(decoded, rule);
        let mut bad = replication_rule_to_pb(&rule);
        bad.mode = "sideways".into();
        assert!(replication_rule_from_pb(bad).is_err());
    }
}
