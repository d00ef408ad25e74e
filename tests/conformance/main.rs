//! Wharf's own OCI Distribution conformance suite, written from distribution-spec 1.1 (and the
//! Docker Registry HTTP API V2 where docker clients need it). Every test starts its own single-node
//! registry (`test_cluster::InProcessServe`) on a port-0 listener over a temp dir and speaks plain
//! HTTP to it; content is random per test.
//!
//! ```text
//! client    Registry, Reply and the reply assertions   raw       hand-written HTTP on a TcpStream
//! fixtures  random blobs, manifest kinds, pushes       blobs     GET/HEAD/DELETE blobs, Range
//! uploads   POST/PATCH/PUT/GET/DELETE uploads, mount   manifests the manifest kinds, negotiation
//! listing   tags/list and _catalog paging              referrers the referrers API
//! bad_input refused requests leave everything stored as it was
//! bad_bodies bodies at odds with their framing (Content-Length lies, truncation, 413)
//! ```

mod bad_bodies;
mod bad_input;
mod blobs;
mod client;
mod fixtures;
mod listing;
mod manifests;
mod raw;
mod referrers;
mod uploads;

use client::{send, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_endpoint_is_200_with_registry_2_0_api_version() {
    let registry = Registry::start().await;
    for request in [registry.get("/v2/"), registry.head("/v2/")] {
        send(request)
            .await
            .expect_status(200)
            .expect_header("docker-distribution-api-version", "registry/2.0");
    }
}
