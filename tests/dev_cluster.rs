//! `wharf dev cluster|kill|restart` end to end: a real multi-process cluster (1 meta, 2 blob
//! nodes, 2 gateways), a blob pushed through one gateway and read through the other, one blob
//! node killed and restarted, then everything stopped. Every process is killed and reaped even
//! when an assertion fails (the guard's `Drop`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::dev::{alive, DevCluster};

use oci_model::Digest;
use serde_json::Value;

fn gateway_urls(file: &Value) -> Vec<String> {
    let urls = file["gateways"].as_array().expect("gateways");
    urls.iter()
        .map(|url| url.as_str().expect("url").to_owned())
        .collect()
}

async fn get_blob(client: &reqwest::Client, gateway: &str, digest: &Digest) -> (u16, Vec<u8>) {
    let url = format!("{gateway}/v2/dev/blob/blobs/{digest}");
    let response = client.get(url).send().await.expect("GET blob");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

fn tcp_accepts(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(2))
        .is_ok()
}

#[tokio::test]
async fn dev_cluster_pushes_pulls_kills_and_restarts() {
    let mut cluster = DevCluster::start(1, 2, 2);
    let file = cluster.wait_ready(Duration::from_secs(120)).await;
    let gateways = gateway_urls(&file);
    assert_eq!(gateways.len(), 2, "{file}");
    assert_eq!(file["members"].as_array().map(Vec::len), Some(5));

    // Push through gateway 1 (monolithic POST ?digest=), read through gateway 2.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let blob = b"a blob pushed through one gateway of a wharf dev cluster".to_vec();
    let digest = Digest::sha256_of(&blob);
    let push = client
        .post(format!(
            "{}/v2/dev/blob/blobs/uploads/?digest={digest}",
            gateways[0]
        ))
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .expect("POST blob");
    assert_eq!(push.status().as_u16(), 201);
    assert_eq!(
        get_blob(&client, &gateways[1], &digest).await,
        (200, blob.clone())
    );

    // Kill a blob node: the supervisor SIGKILLs and reaps it and records it.
    let before = cluster.member("blob-2");
    let old_pid = before["pid"].as_u64().expect("blob-2 pid");
    cluster.member_command("kill", "blob-2").await;
    let killed = cluster.member("blob-2");
    assert_eq!(killed["state"], "killed");
    assert!(killed["pid"].is_null());
    assert!(!alive(old_pid), "blob-2's old process is gone");

    // Restart it: same arguments, same data, same address, a new pid.
    cluster.member_command("restart", "blob-2").await;
    let restarted = cluster.member("blob-2");
    assert_eq!(restarted["state"], "running");
    assert_eq!(restarted["grpc"], before["grpc"]);
    assert_eq!(restarted["args"], before["args"]);
    let new_pid = restarted["pid"].as_u64().expect("new pid");
    assert_ne!(new_pid, old_pid);
    assert!(alive(new_pid));
    assert!(tcp_accepts(restarted["grpc"].as_str().expect("grpc")));
    // Whichever node holds the blob, the whole cluster is back: it reads again.
    assert_eq!(get_blob(&client, &gateways[0], &digest).await, (200, blob));

    let pids: Vec<u64> = (cluster.cluster_json().expect("cluster.json")["members"])
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["pid"].as_u64())
        .collect();
    assert_eq!(pids.len(), 5);
    let status = cluster.stop(Duration::from_secs(60)).await;
    assert!(status.success(), "supervisor exit status {status}");
    let file = cluster.cluster_json().expect("cluster.json");
    assert_eq!(file["state"], "stopped");
    for pid in pids {
        assert!(!alive(pid), "member pid {pid} was stopped and reaped");
    }
    assert!(!Path::new(&cluster.dir.join("control.sock")).exists());
}
