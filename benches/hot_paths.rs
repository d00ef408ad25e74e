//! Criterion benchmarks of the pure code every request runs through: digest hashing and
//! verification, manifest parsing and name validation, ring placement and the gateway's path
//! grammar. No I/O, so the figures are CPU cost alone.
//!
//! Run one group with `cargo bench --bench hot_paths -- ring`; add `--quick` for a fast pass.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway::Route;
use hash_ring::{Member, Ring};
use oci_model::{media_type, Algorithm, Digest, Digester, ParsedManifest, Reference};
use oci_model::{RepositoryName, Tag};
use serde_json::{json, Value};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Deterministic, non-constant content, so no hashing shortcut applies.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index % 251) as u8).collect()
}

fn size_label(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{}KiB", bytes / KIB)
    }
}

/// Streaming hashing as an upload append or a replica copy does it, piece by piece.
fn digest_streaming(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest");
    // A 16 MiB pass takes milliseconds: fewer samples keep the run short.
    group.sample_size(20);
    let cases = [
        (Algorithm::Sha256, MIB, 64 * KIB),
        (Algorithm::Sha256, 16 * MIB, 64 * KIB),
        (Algorithm::Sha256, 16 * MIB, MIB),
        (Algorithm::Sha512, 16 * MIB, MIB),
    ];
    for (algorithm, total, piece) in cases {
        let data = content(total);
        group.throughput(Throughput::Bytes(total as u64));
        let id = format!(
            "{}/{}/pieces-{}",
            algorithm.as_str(),
            size_label(total),
            size_label(piece)
        );
        group.bench_function(id, |b| {
            b.iter(|| {
                let mut digester = Digester::new(algorithm);
                for chunk in data.chunks(piece) {
                    digester.update(black_box(chunk));
                }
                digester.finish()
            })
        });
    }
    group.finish();
}

/// Parsing a digest from a path or header, and verifying a manifest body against one.
fn digest_small(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest");
    let manifest = serde_json::to_vec(&image_manifest()).expect("manifest serializes");
    let text = Digest::sha256_of(&manifest).to_string();
    group.bench_function("parse/sha256", |b| {
        b.iter(|| Digest::parse(black_box(&text)))
    });
    let digest = Digest::parse(&text).expect("valid digest");
    group.throughput(Throughput::Bytes(manifest.len() as u64));
    group.bench_function("verifies/sha256/oci-manifest", |b| {
        b.iter(|| digest.verifies(black_box(&manifest)))
    });
    group.finish();
}

fn descriptor(media_type: &str, seed: &str, size: u64) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::sha256_of(seed.as_bytes()).to_string(),
        "size": size,
    })
}

/// An OCI image manifest: config, five layers, annotations.
fn image_manifest() -> Value {
    let layers: Vec<Value> = (0..5)
        .map(|index| {
            descriptor(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &format!("layer-{index}"),
                3_000_000 + index * 1_000,
            )
        })
        .collect();
    json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": descriptor(media_type::OCI_IMAGE_CONFIG, "config", 7_023),
        "layers": layers,
        "annotations": {
            "org.opencontainers.image.created": "2025-01-01T00:00:00Z",
            "org.opencontainers.image.source": "https://github.com/example/app",
            "org.opencontainers.image.revision": "3f5e9b2c1d0a",
            "org.opencontainers.image.version": "1.4.2",
        },
    })
}

/// An OCI index with eight platform children.
fn image_index() -> Value {
    let platforms = [
        ("linux", "amd64", None),
        ("linux", "arm64", Some("v8")),
        ("linux", "arm", Some("v7")),
        ("linux", "arm", Some("v6")),
        ("linux", "386", None),
        ("linux", "ppc64le", None),
        ("linux", "s390x", None),
        ("linux", "riscv64", None),
    ];
    let manifests: Vec<Value> = platforms
        .iter()
        .map(|(os, architecture, variant)| {
            let mut child = descriptor(
                media_type::OCI_MANIFEST,
                &format!("{os}/{architecture}/{variant:?}"),
                1_234,
            );
            let mut platform = json!({ "os": os, "architecture": architecture });
            if let Some(variant) = variant {
                platform["variant"] = json!(variant);
            }
            child["platform"] = platform;
            child
        })
        .collect();
    json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    })
}

/// A Docker schema 2 manifest (no annotations, Docker media types).
fn docker_manifest() -> Value {
    let layers: Vec<Value> = (0..5)
        .map(|index| {
            descriptor(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                &format!("docker-layer-{index}"),
                2_000_000 + index * 1_000,
            )
        })
        .collect();
    json!({
        "schemaVersion": 2,
        "mediaType": media_type::DOCKER_MANIFEST,
        "config": descriptor("application/vnd.docker.container.image.v1+json", "docker-config", 1_472),
        "layers": layers,
    })
}

fn manifests(c: &mut Criterion) {
    let mut group = c.benchmark_group("manifest");
    let cases = [
        ("oci-image", media_type::OCI_MANIFEST, image_manifest()),
        ("oci-index-8", media_type::OCI_INDEX, image_index()),
        ("docker-v2", media_type::DOCKER_MANIFEST, docker_manifest()),
    ];
    for (label, content_type, manifest) in cases {
        let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        ParsedManifest::parse(Some(content_type), &bytes).expect("benchmark manifest is valid");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("parse", label), |b| {
            b.iter(|| ParsedManifest::parse(Some(content_type), black_box(&bytes)))
        });
    }
    group.finish();
}

fn names(c: &mut Criterion) {
    let mut group = c.benchmark_group("name");
    let digest = Digest::sha256_of(b"names").to_string();
    group.bench_function("repository/library-ubuntu", |b| {
        b.iter(|| RepositoryName::parse(black_box("library/ubuntu")))
    });
    group.bench_function("repository/4-segments", |b| {
        b.iter(|| RepositoryName::parse(black_box("org-name/team.infra/app_server/api-v2")))
    });
    group.bench_function("tag", |b| {
        b.iter(|| Tag::parse(black_box("1.27.3-alpine3.20")))
    });
    group.bench_function("reference/tag", |b| {
        b.iter(|| Reference::parse(black_box("latest")))
    });
    group.bench_function("reference/digest", |b| {
        b.iter(|| Reference::parse(black_box(&digest)))
    });
    group.finish();
}

/// The Accept values `docker pull` sends, one header each.
const DOCKER_ACCEPT: [&str; 6] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
];

fn accept(c: &mut Criterion) {
    let mut group = c.benchmark_group("accept");
    group.bench_function("docker/oci-manifest", |b| {
        b.iter(|| media_type::accepts(black_box(&DOCKER_ACCEPT), media_type::OCI_MANIFEST))
    });
    // A type the list does not name walks every value: the worst case.
    group.bench_function("docker/miss", |b| {
        b.iter(|| media_type::accepts(black_box(&DOCKER_ACCEPT), "application/vnd.example+json"))
    });
    group.finish();
}

/// `count` members spread round-robin over `zones` zones, weights 1 to 3.
fn ring_of(count: u64, zones: u64) -> Ring {
    Ring::new((1..=count).map(|id| {
        let weight = 1 + (id % 3) as u32;
        Member::new(id, format!("zone-{}", id % zones), weight)
    }))
}

fn ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    // Blob placement keys are digest strings.
    let key = Digest::sha256_of(b"ring").to_string();
    for (members, zones) in [(3, 3), (10, 3), (100, 5)] {
        let ring = ring_of(members, zones);
        group.bench_function(BenchmarkId::new("owners/3", members), |b| {
            b.iter(|| ring.owners(black_box(key.as_bytes()), 3))
        });
    }
    let ring = ring_of(100, 5);
    group.bench_function(BenchmarkId::new("owners_in_zones/3-of-2-zones", 100), |b| {
        b.iter(|| ring.owners_in_zones(black_box(key.as_bytes()), 3, &["zone-1", "zone-3"]))
    });
    group.finish();
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let digest = Digest::sha256_of(b"route").to_string();
    let cases = [
        ("base", "/v2/".to_owned()),
        ("manifest", "/v2/library/ubuntu/manifests/latest".to_owned()),
        ("blob", format!("/v2/a/b/c/blobs/{digest}")),
        (
            "upload",
            "/v2/org/team/app/blobs/uploads/1b4e28ba-2fa1-11d2-883f-0016d3cca427".to_owned(),
        ),
        ("tags", "/v2/x/tags/list".to_owned()),
        ("referrers", format!("/v2/x/referrers/{digest}")),
        (
            "blob-escaped",
            format!("/v2/a/b/c/blobs/{}", digest.replace(':', "%3A")),
        ),
    ];
    for (label, path) in cases {
        assert!(Route::parse(&path).is_some(), "{path} routes");
        group.bench_function(BenchmarkId::new("parse", label), |b| {
            b.iter(|| Route::parse(black_box(&path)))
        });
    }
    group.finish();
}

/// Per-request costs of access control: verifying a Bearer token (EdDSA) and evaluating the
/// policies for one repository (100 rules, the caller matching a few).
fn access_control(c: &mut Criterion) {
    use auth::{Authorizer, Claims, Principal, ResourceAccess, TokenKeys, TokenUse};
    use cluster_api::{Action, AuthState, Policy, Subject};

    let mut group = c.benchmark_group("auth");
    let keys = TokenKeys::new(&[auth::generate_signing_key(0)]);
    let now = 1_800_000_000;
    let mut claims = Claims::new("wharf", "ci", "wharf", now, 300, TokenUse::Access);
    claims.access.push(ResourceAccess {
        resource_type: "repository".into(),
        name: "team/app".into(),
        actions: vec!["pull".into(), "push".into()],
    });
    let token = keys.sign(&claims).expect("sign");
    group.bench_function("token-verify", |b| {
        b.iter(|| {
            keys.verify(black_box(&token), "wharf", "wharf", TokenUse::Access, now)
                .expect("valid")
        })
    });
    let policies = (0..100)
        .map(|i| Policy {
            id: format!("p{i}"),
            subject: Subject::Account(format!("user{}", i % 10)),
            repositories: format!("team-{i}/**"),
            actions: vec![Action::Pull, Action::Push],
        })
        .collect();
    let (authorizer, _) = Authorizer::new(&AuthState {
        policies,
        ..AuthState::default()
    });
    let principal = Principal::Account {
        name: "user3".into(),
        admin: false,
    };
    group.bench_function("policy-100-rules", |b| {
        b.iter(|| authorizer.allowed(black_box(&principal), black_box("team-43/app/x")))
    });
    group.finish();
}

criterion_group!(
    benches,
    access_control,
    digest_streaming,
    digest_small,
    manifests,
    names,
    accept,
    ring,
    routes
);
criterion_main!(benches);
