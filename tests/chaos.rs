//! Chaos on real processes (`wharf dev cluster`: 3 meta voters, 2 blob nodes, 2 gateways), with
//! SIGKILL: the meta leader dies during a loop of pushes; every process dies at once. No
//! acknowledged push is lost, and writes resume. Bounded in time and count.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_client::{AdminClient, RetryPolicy};
use common::dev::DevCluster;
use common::{PushedImage, Registry};

const READY: Duration = Duration::from_secs(180);

fn gateways(cluster: &DevCluster) -> Vec<String> {
    let file = cluster.cluster_json().expect("cluster.json");
    file["gateways"]
        .as_array()
        .expect("gateways")
        .iter()
        .map(|g| g.as_str().expect("url").to_owned())
        .collect()
}

async fn leader(cluster: &DevCluster) -> u64 {
    let admin =
        AdminClient::new(&cluster.meta_addrs(), RetryPolicy::default()).expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(status) = admin.cluster_status().await {
            if let Some(leader) = status.leader_id {
                return leader;
            }
        }
        assert!(Instant::now() < deadline, "no meta leader within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn verify_all(registry: &Registry, images: &[PushedImage]) {
    for image in images {
        registry
            .verify_image(image)
            .await
            .unwrap_or_else(|e| panic!("acknowledged push lost or corrupt: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_meta_leader_during_pushes_loses_nothing_and_writes_resume() {
    let mut cluster = DevCluster::start(3, 2, 2);
    cluster.wait_ready(READY).await;
    let urls = gateways(&cluster);
    let registry = Registry::new(urls[0].clone());
    let mut acknowledged = Vec::new();
    for index in 0..3 {
        acknowledged.push(
            registry
                .push_image("chaos/leader", &format!("a{index}"), 20_000)
                .await
                .expect("push"),
        );
    }
    let leader = leader(&cluster).await;
    cluster
        .member_command("kill", &format!("meta-{leader}"))
        .await;
    let killed = Instant::now();
    let mut attempt = 0;
    let failover = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "writes did not resume within 90 s"
        );
        attempt += 1;
        if let Ok(image) = registry
            .push_image("chaos/leader", &format!("b{attempt}"), 20_000)
            .await
        {
            acknowledged.push(image);
            break killed.elapsed();
        }
    };
    eprintln!(
        "SIGKILL of meta leader {leader}: first acknowledged push {:.2} s later ({attempt} attempts)",
        failover.as_secs_f64()
    );
    for index in 0..3 {
        acknowledged.push(
            registry
                .push_image("chaos/leader", &format!("c{index}"), 20_000)
                .await
                .expect("push"),
        );
    }
    verify_all(&Registry::new(urls[1].clone()), &acknowledged).await;

    cluster
        .member_command("restart", &format!("meta-{leader}"))
        .await;
    acknowledged.push(
        registry
            .push_image("chaos/leader", "rejoined", 20_000)
            .await
            .expect("push"),
    );
    verify_all(&Registry::new(urls[1].clone()), &acknowledged).await;
    let status = cluster.stop(Duration::from_secs(60)).await;
    assert!(status.success(), "supervisor exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_every_process_then_restart_keeps_every_acknowledged_push() {
    let mut cluster = DevCluster::start(3, 2, 2);
    cluster.wait_ready(READY).await;
    let urls = gateways(&cluster);
    let registry = Registry::new(urls[0].clone());
    let mut acknowledged = Vec::new();
    for index in 0..5 {
        acknowledged.push(
            registry
                .push_image("chaos/all", &format!("v{index}"), 30_000)
                .await
                .expect("push"),
        );
    }
    let names = cluster.member_names();
    for name in &names {
        cluster.member_command("kill", name).await;
    }
    // Meta first (they need a quorum), then blob nodes, then gateways.
    for prefix in ["meta-", "blob-", "gateway-"] {
        for name in names.iter().filter(|n| n.starts_with(prefix)) {
            cluster.member_command("restart", name).await;
        }
    }
    for url in &urls {
        verify_all(&Registry::new(url.clone()), &acknowledged).await;
    }
    let status = cluster.stop(Duration::from_secs(60)).await;
    assert!(status.success(), "supervisor exit status {status}");
}

/// Outcome counts of the load that ran during a rolling restart.
#[derive(Debug, Default)]
struct LoadReport {
    operations: u64,
    retried: u64,
    failed: Vec<String>,
}

/// A failure a client retries per spec: the connection failed, or the registry said 5xx
/// "unavailable"-style (502/503/504) or 429. Anything else is a failure the client would report.
fn retryable(error: &str) -> bool {
    error.contains("error sending request")
        || error.contains("connection")
        || ["got 502", "got 503", "got 504", "got 429"]
            .iter()
            .any(|code| error.contains(code))
}

/// Pushes then pulls images in a loop, alternating gateways like a client behind a load balancer,
/// retrying retryable failures on the other gateway, until `stop` is set.
async fn load(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
) -> (LoadReport, Vec<PushedImage>) {
    let registries: Vec<Registry> = urls.into_iter().map(Registry::new).collect();
    let mut report = LoadReport::default();
    let mut acknowledged = Vec::new();
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        report.operations += 1;
        let tag = format!("r{}", report.operations);
        let mut attempts = 0;
        loop {
            attempts += 1;
            turn += 1;
            let registry = &registries[turn % registries.len()];
            let result = match registry.push_image("chaos/rolling", &tag, 8_000).await {
                Ok(image) => {
                    let pulled = registries[(turn + 1) % registries.len()]
                        .verify_image(&image)
                        .await;
                    pulled.map(|()| image)
                }
                Err(error) => Err(error),
            };
            match result {
                Ok(image) => {
                    acknowledged.push(image);
                    completed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(error) if retryable(&error) && attempts < 20 => {
                    report.retried += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    report.failed.push(error);
                    break;
                }
            }
        }
    }
    (report, acknowledged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_member_under_load_fails_no_request() {
    let mut cluster = DevCluster::start(3, 3, 2);
    cluster.wait_ready(READY).await;
    let admin =
        AdminClient::new(&cluster.meta_addrs(), RetryPolicy::default()).expect("admin client");
    admin
        .set_replication_policy(cluster_api::ReplicationPolicy {
            replicas: 2,
            write_quorum: 0,
        })
        .await
        .expect("replication policy");
    let urls = gateways(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(load(urls.clone(), stop.clone(), completed.clone()));
    // Every restart happens with the load running: before and after each one, the load must
    // complete another push-and-pull.
    let progress = |completed: Arc<AtomicU64>| async move {
        let before = completed.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(90);
        while completed.load(Ordering::Relaxed) <= before {
            assert!(
                Instant::now() < deadline,
                "the load made no progress for 90 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    progress(completed.clone()).await;

    let names = cluster.member_names();
    for prefix in ["blob-", "meta-", "gateway-"] {
        for name in names.iter().filter(|n| n.starts_with(prefix)) {
            cluster.member_command("restart", name).await;
            if prefix == "meta-" {
                // The next voter restarts only once a leader serves writes again.
                leader(&cluster).await;
            }
            progress(completed.clone()).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (report, acknowledged) = tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .expect("load stops in time")
        .expect("load task");
    eprintln!(
        "rolling restart of {} members: {} operations, {} retried per spec, {} failed",
        names.len(),
        report.operations,
        report.retried,
        report.failed.len()
    );
    assert!(
        report.failed.is_empty(),
        "failed requests: {:?}",
        report.failed
    );
    assert!(report.operations >= 2, "load ran during the restarts");
    verify_all(&Registry::new(urls[0].clone()), &acknowledged).await;
    let status = cluster.stop(Duration::from_secs(60)).await;
    assert!(status.success(), "supervisor exit status {status}");
}
