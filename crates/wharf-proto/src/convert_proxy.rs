//! Conversions of the pull-through cache's types (`proxy.proto`).

use cluster_api::{FetchLease, ProxyUpstream};

use crate::pb;

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
        };
        assert_eq!(proxy_from_pb(proxy_to_pb(&proxy)), proxy);
        let lease = FetchLease {
            granted: false,
            holder: "gw-1".into(),
            expires_in_ms: 9_000,
        };
        assert_eq!(lease_from_pb(lease_to_pb(&lease)), lease);
    }
}
