//! What `wharf admin proxy status` and `GET /admin/v1/proxies/status` report: each upstream
//! as configured (no password), whether it answers its API root with the configured
//! credentials now, and what its prefix's namespace holds.

use std::time::Duration;

use cluster_api::{MetaApi, MetaError, NamespaceUsage, ProxyUpstream, ProxyView};
use serde::Serialize;

use crate::client::{Upstream, UpstreamConfig};

/// How long a status probe waits for an upstream.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    #[serde(flatten)]
    pub upstream: ProxyView,
    /// Whether `GET /v2/` succeeded with the configured credentials.
    pub reachable: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The usage of the namespace the prefix is in (cached content, plus anything else the
    /// namespace holds when the prefix is deeper than one component).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_usage: Option<NamespaceUsage>,
}

/// The client settings of `upstream`, with the given timeouts.
pub fn upstream_config(
    upstream: &ProxyUpstream,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> UpstreamConfig {
    UpstreamConfig {
        username: upstream.username.clone(),
        password: upstream.password.clone(),
        ca_pem: upstream.ca_pem.clone().map(String::into_bytes),
        connect_timeout,
        read_timeout,
        ..UpstreamConfig::new(upstream.url.clone())
    }
}

/// Every upstream of `meta`, probed one after another.
pub async fn status(meta: &dyn MetaApi) -> Result<Vec<ProxyStatus>, MetaError> {
    let proxies = meta.proxies().await?;
    let usage = match meta.usage(None).await {
        Ok(usage) => usage,
        Err(error) => {
            tracing::warn!(%error, "no usage figures for the proxy status");
            Vec::new()
        }
    };
    let mut report = Vec::with_capacity(proxies.len());
    for upstream in &proxies {
        let probed = match Upstream::new(&upstream_config(upstream, PROBE_TIMEOUT, PROBE_TIMEOUT)) {
            Ok(client) => client.ping().await,
            Err(error) => Err(error),
        };
        let namespace = upstream.prefix.split('/').next().unwrap_or_default();
        report.push(ProxyStatus {
            upstream: upstream.view(),
            reachable: probed.is_ok(),
            error: probed.err().map(|error| error.to_string()),
            namespace_usage: usage
                .iter()
                .find(|usage| usage.namespace == namespace)
                .cloned(),
        });
    }
    Ok(report)
}
