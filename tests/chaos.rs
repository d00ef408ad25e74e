//! Chaos on real processes (`wharf dev cluster`: 3 meta voters, 2 blob nodes, 2 gateways), with
//! SIGKILL: the meta leader dies during a loop of pushes; every process dies at once. No
//! acknowledged push is lost, and writes resume. Bounded in time and count.

mod common;

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
