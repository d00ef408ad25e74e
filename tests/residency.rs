//! Data residency end to end across storage backends: a cluster whose blob nodes 1 and 2 keep
//! blobs on local disks in zone `us`, and nodes 3 and 4 in a bucket of the S3-compatible server
//! `.ci/run` starts (`WHARF_TEST_S3_ENDPOINT`, `WHARF_TEST_S3_BUCKET`) in zone `eu`, at
//! replication factor 2, with rules `eu/**` -> eu and `us/**` -> us. Pushes into both and into
//! an unruled repository (one layer shared by all three, a mount from `us` into `eu`), then every
//! file on every disk and every object in the bucket is listed: each ruled blob has its copies in
//! its zones and none outside, and fsck is clean. Then an eu node stops and pulls go on; then a
//! rule is added to the live registry, a node is stopped during the move and started again, and
//! the copies end where the new rule says.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_api::ReplicationPolicy;
use common::{random_bytes, until, Registry};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;
use oci_model::Digest;
use serde_json::Value;
use test_cluster::{InProcessCluster, Options, Role};
use wharf::config::S3Config;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

const RF2: ReplicationPolicy = ReplicationPolicy {
    replicas: 2,
    write_quorum: 0,
};

const US: [u64; 2] = [1, 2];
const EU: [u64; 2] = [3, 4];

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through .ci/run, or start a server with \
             scripts/s3-test-server.sh and export what it prints"
        )
    })
}

fn s3_config(prefix: &str) -> S3Config {
    S3Config {
        bucket: env("WHARF_TEST_S3_BUCKET"),
        prefix: prefix.to_owned(),
        endpoint: Some(env("WHARF_TEST_S3_ENDPOINT")),
        region: Some("us-east-1".into()),
        access_key_id: Some("wharf-test".into()),
        secret_access_key: Some("wharf-test".into()),
    }
}

/// `wharf admin --meta ADDRS ARGS`.
fn admin(meta: &[String], args: &[&str]) -> std::process::Output {
    Command::new(WHARF)
        .args(["admin", "--meta", &meta.join(",")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("wharf admin runs")
}

fn admin_ok(meta: &[String], args: &[&str]) -> String {
    let output = admin(meta, args);
    assert!(
        output.status.success(),
        "wharf admin {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Where every copy physically is: digest -> the nodes holding it, from the files under each
/// disk node's `blobs/` and the objects under each bucket node's `blobs/`.
struct Inventory {
    disk_dirs: Vec<(u64, std::path::PathBuf)>,
    bucket: Arc<dyn ObjectStore>,
    bucket_prefixes: Vec<(u64, String)>,
}

impl Inventory {
    async fn take(&self) -> BTreeMap<Digest, BTreeSet<u64>> {
        let mut copies: BTreeMap<Digest, BTreeSet<u64>> = BTreeMap::new();
        for (node, dir) in &self.disk_dirs {
            for digest in disk_blobs(&dir.join("blobs")) {
                copies.entry(digest).or_default().insert(*node);
            }
        }
        for (node, prefix) in &self.bucket_prefixes {
            let blobs = object_store::path::Path::from(format!("{prefix}/blobs"));
            let objects: Vec<_> = self
                .bucket
                .list(Some(&blobs))
                .try_collect()
                .await
                .expect("list the bucket");
            for object in objects {
                let key = object.location.as_ref().to_owned();
                let mut parts = key.rsplit('/');
                let hex = parts.next().expect("name");
                let _fan_out = parts.next();
                let algorithm = parts.next().expect("algorithm");
                let digest = Digest::parse(&format!("{algorithm}:{hex}"))
                    .unwrap_or_else(|_| panic!("a foreign object in the bucket: {key}"));
                copies.entry(digest).or_default().insert(*node);
            }
        }
        copies
    }
}

/// Digests of the files under a disk node's `blobs/<algorithm>/<fan-out>/`.
fn disk_blobs(blobs: &Path) -> Vec<Digest> {
    let mut found = Vec::new();
    let Ok(algorithms) = std::fs::read_dir(blobs) else {
        return found;
    };
    for algorithm in algorithms.flatten() {
        for fan_out in std::fs::read_dir(algorithm.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(fan_out.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = format!(
                    "{}:{}",
                    algorithm.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                found.push(Digest::parse(&name).expect("a blob file named by its digest"));
            }
        }
    }
    found
}

/// What each blob's copies must be: exactly these nodes, or any `n` nodes.
enum Want {
    Exactly(&'static [u64]),
    AnyTwo,
}

fn check(
    copies: &BTreeMap<Digest, BTreeSet<u64>>,
    wants: &[(&str, &Digest, Want)],
) -> Result<(), String> {
    for (name, digest, want) in wants {
        let held = copies.get(*digest).cloned().unwrap_or_default();
        let ok = match want {
            Want::Exactly(nodes) => held == nodes.iter().copied().collect(),
            Want::AnyTwo => held.len() >= 2,
        };
        if !ok {
            return Err(format!("{name} ({digest}) is on nodes {held:?}"));
        }
    }
    Ok(())
}

async fn get_blob(registry: &Registry, repo: &str, digest: &Digest) -> Result<Vec<u8>, String> {
    let response = registry
        .http
        .get(format!("{}/v2/{repo}/blobs/{digest}", registry.base))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("GET {repo}@{digest}: {}", response.status()));
    }
    Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

/// `placement status` says every ruled blob complies, and the copies are where `wants` says.
async fn placed(
    meta: &[String],
    inventory: &Inventory,
    wants: &[(&str, &Digest, Want)],
) -> Result<(), String> {
    let status = serde_json::from_str(&admin_ok(meta, &["placement", "status"]))
        .map_err(|e| e.to_string())?;
    status_settled(&status)?;
    check(&inventory.take().await, wants)
}

fn status_settled(status: &Value) -> Result<(), String> {
    let settled = status["pending"] == 0
        && status["impossible"] == 0
        && status["copies_outside"] == 0
        && status["copies_missing"] == 0;
    if settled {
        Ok(())
    } else {
        Err(format!("placement not settled: {status}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ruled_blobs_stay_in_their_zones_across_disks_and_a_bucket() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let prefix = format!("residency-{}-{nanos}", std::process::id());
    let options = Options {
        blob_zones: ["us", "us", "eu", "eu"].map(String::from).to_vec(),
        blob_s3: vec![
            None,
            None,
            Some(s3_config(&format!("{prefix}/blob-3"))),
            Some(s3_config(&format!("{prefix}/blob-4"))),
        ],
        ..Options::default()
    };
    let mut cluster = InProcessCluster::start_with(1, 4, 1, RF2, options)
        .await
        .expect("cluster starts");
    let meta = cluster.meta_addrs();
    let bucket: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(env("WHARF_TEST_S3_BUCKET"))
            .with_endpoint(env("WHARF_TEST_S3_ENDPOINT"))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("wharf-test")
            .with_secret_access_key("wharf-test")
            .build()
            .expect("bucket client"),
    );
    let inventory = Inventory {
        disk_dirs: US
            .iter()
            .map(|id| {
                let member = cluster.member(Role::Blob, *id).expect("disk node");
                (*id, test_cluster::data_dir(member))
            })
            .collect(),
        bucket,
        bucket_prefixes: EU
            .iter()
            .map(|id| (*id, format!("{prefix}/blob-{id}")))
            .collect(),
    };
    admin_ok(
        &meta,
        &[
            "placement",
            "add",
            "--id",
            "eu",
            "--repos",
            "eu/**",
            "--zones",
            "eu",
        ],
    );
    admin_ok(
        &meta,
        &[
            "placement",
            "add",
            "--id",
            "us",
            "--repos",
            "us/**",
            "--zones",
            "us",
        ],
    );

    let registry = Registry::new(cluster.gateway_url(1));
    let base = random_bytes(300_000);
    let eu_only = random_bytes(100_000);
    let us_only = random_bytes(100_000);
    let team_only = random_bytes(100_000);
    let mounted = random_bytes(50_000);
    for repo in ["us/app", "eu/app", "team/app"] {
        registry
            .push_blob_monolithic(repo, &base)
            .await
            .expect("push the shared layer");
    }
    let base_digest = Digest::sha256_of(&base);
    let eu_digest = registry
        .push_blob_monolithic("eu/app", &eu_only)
        .await
        .expect("push eu");
    let us_digest = registry
        .push_blob_monolithic("us/app", &us_only)
        .await
        .expect("push us");
    let team_digest = registry
        .push_blob_monolithic("team/app", &team_only)
        .await
        .expect("push team");
    let mounted_digest = registry
        .push_blob_monolithic("us/app", &mounted)
        .await
        .expect("push the blob to mount");

    // A mount from us into eu of a blob with no copy in eu: not acknowledged as a mount (that
    // would link a blob held outside eu/**'s zones); the client uploads it instead.
    let response = registry
        .http
        .post(format!(
            "{}/v2/eu/app/blobs/uploads/?mount={mounted_digest}&from=us/app",
            registry.base
        ))
        .send()
        .await
        .expect("mount request");
    assert_eq!(
        response.status().as_u16(),
        202,
        "the mount falls back to an upload"
    );
    registry
        .push_blob_chunked("eu/app", &mounted, 20_000)
        .await
        .expect("upload the blob the mount refused");

    // The shared layer, the eu and us blobs and the mounted one, then the team blob's want.
    let wants = |team: (&'static str, Want)| {
        [
            (
                "the shared layer",
                &base_digest,
                Want::Exactly(&[1, 2, 3, 4]),
            ),
            ("the eu blob", &eu_digest, Want::Exactly(&EU)),
            ("the us blob", &us_digest, Want::Exactly(&US)),
            (
                "the mounted blob",
                &mounted_digest,
                Want::Exactly(&[1, 2, 3, 4]),
            ),
            (team.0, &team_digest, team.1),
        ]
    };
    let before_the_rule = wants(("the unruled blob", Want::AnyTwo));
    let deadline = Instant::now() + Duration::from_secs(90);
    until("every copy in its zones", deadline, || {
        placed(&meta, &inventory, &before_the_rule)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    let fsck = admin(&meta, &["fsck"]);
    assert!(
        fsck.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );

    // An eu node stops: eu/app's blobs are still served, from the other eu node.
    cluster.stop(Role::Blob, 3).await.expect("stop blob node 3");
    for (digest, data) in [
        (&eu_digest, &eu_only),
        (&base_digest, &base),
        (&mounted_digest, &mounted),
    ] {
        assert!(
            get_blob(&registry, "eu/app", digest)
                .await
                .expect("pull with an eu node down")
                == *data,
            "{digest} read back wrong"
        );
    }
    cluster
        .restart(Role::Blob, 3)
        .await
        .expect("restart blob node 3");

    // A rule added to the live registry moves team/app's blobs into eu; an eu node stops during
    // the move and comes back. Nothing is lost and the copies end in eu only.
    admin_ok(
        &meta,
        &[
            "placement",
            "add",
            "--id",
            "team",
            "--repos",
            "team/**",
            "--zones",
            "eu",
        ],
    );
    cluster
        .stop(Role::Blob, 4)
        .await
        .expect("stop blob node 4 during the move");
    assert!(
        get_blob(&registry, "team/app", &team_digest)
            .await
            .expect("pull during the move")
            == team_only,
        "the moving blob reads back"
    );
    cluster
        .restart(Role::Blob, 4)
        .await
        .expect("restart blob node 4");
    let after_the_rule = wants(("the moved blob", Want::Exactly(&EU)));
    let deadline = Instant::now() + Duration::from_secs(90);
    until(
        "the moved blob in eu only, fsck clean",
        deadline,
        || async {
            placed(&meta, &inventory, &after_the_rule).await?;
            let fsck = admin(&meta, &["fsck"]);
            if fsck.status.success() {
                Ok(())
            } else {
                Err(format!("fsck: {}", String::from_utf8_lossy(&fsck.stdout)))
            }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    for (repo, digest, data) in [
        ("team/app", &team_digest, &team_only),
        ("us/app", &base_digest, &base),
        ("eu/app", &mounted_digest, &mounted),
    ] {
        assert!(
            get_blob(&registry, repo, digest)
                .await
                .expect("pull after the move")
                == *data,
            "{repo}@{digest} reads back"
        );
    }
    cluster.shutdown().await;
}
