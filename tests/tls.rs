//! TLS end to end, on real `wharf` processes with certificates from `wharf dev certs`:
//! - `serve` with `[tls]`: `GET /v2/` over HTTPS (HTTP/1.1 and HTTP/2) with the test CA, an image
//!   pushed and pulled with skopeo, plain HTTP to the HTTPS port refused;
//! - the gateway's certificate replaced on disk is served to new handshakes without a restart, and
//!   a broken replacement is refused while the previous certificate stays;
//! - a cluster of separate meta, blob and gateway processes under `[cluster_tls]`: push and pull
//!   through the gateway (every internal hop over mTLS), `wharf admin` with the certificate flags,
//!   then direct gRPC calls to a meta and a blob node refused without a client certificate, with
//!   one from another CA and over plaintext, and answered with a valid one.
//!
//! Every process is killed and reaped when its guard drops (also when an assertion fails).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{until, Registry};
use oci_model::Digest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const BINARY: &str = env!("CARGO_BIN_EXE_wharf");
const READY: Duration = Duration::from_secs(90);
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// `wharf dev certs --out <dir> --hosts 127.0.0.1,localhost <extra>`: ca.pem, node.pem, node.key.
fn dev_certs(out: &Path, extra: &[&str]) {
    let output = Command::new(BINARY)
        .args(["dev", "certs", "--hosts", "127.0.0.1,localhost", "--out"])
        .arg(out)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run wharf dev certs");
    assert!(
        output.status.success(),
        "wharf dev certs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn pem_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("PEM certificate")
}

/// A `wharf` process writing its log to `<dir>/<name>.log`; SIGKILLed and reaped on drop.
struct Member {
    name: String,
    child: Child,
    addr_file: PathBuf,
    log: PathBuf,
}

impl Member {
    fn start(name: &str, dir: &Path, args: &[&str]) -> Member {
        let log = dir.join(format!("{name}.log"));
        let addr_file = dir.join(format!("{name}.addr.json"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(BINARY)
            .args(args)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start wharf");
        Member {
            name: name.to_owned(),
            child,
            addr_file,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The addresses the process reports once ready; panics with its log if it exits first.
    async fn addrs(&mut self) -> Value {
        let deadline = Instant::now() + READY;
        loop {
            if let Some(value) = std::fs::read(&self.addr_file)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            {
                return value;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn addr(&mut self, key: &str) -> String {
        let addrs = self.addrs().await;
        addrs[key].as_str().expect("address").to_owned()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a tool to completion with a deadline: (exit success, stdout, stderr).
async fn tool(program: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(TOOL_TIMEOUT, output)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .unwrap_or_else(|e| panic!("cannot run {program} (.ci/run installs it): {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The leaf certificate `addr` presents in a fresh handshake, verified against `ca`.
async fn presented_certificate(addr: &str, ca: &Path) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_cert(ca)).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.clone().into_owned())
        .ok_or_else(|| "no peer certificate".to_owned())
}

/// Writes a one-layer OCI image layout (`oci:<dir>:v1` for skopeo): (config, layer) blobs.
fn oci_layout(dir: &Path) -> Vec<(Digest, Vec<u8>)> {
    let blobs_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs_dir).expect("layout dir");
    // Compressed already: skopeo gzips an uncompressed layer on its way to a registry, which
    // would change its digest.
    let layer = {
        use std::io::Write;
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&common::random_bytes(300 * 1024))
            .expect("gzip");
        gzip.finish().expect("gzip")
    };
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let put = |bytes: &[u8]| {
        let digest = Digest::sha256_of(bytes);
        let hex = digest.to_string().trim_start_matches("sha256:").to_owned();
        std::fs::write(blobs_dir.join(hex), bytes).expect("write blob");
        digest
    };
    let config_digest = put(config);
    let layer_digest = put(&layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest.to_string(), "size": layer.len()}],
    })
    .to_string();
    let manifest_digest = put(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest.to_string(), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "v1"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
    vec![(config_digest, config.to_vec()), (layer_digest, layer)]
}

/// `wharf serve` over HTTPS with the `node.pem`/`node.key` of `certs`, plus `extra` flags.
fn https_serve(dir: &Path, certs: &Path, extra: &[&str]) -> Member {
    let data = dir.join("data");
    let cert = certs.join("node.pem");
    let key = certs.join("node.key");
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("utf-8"),
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    Member::start("serve", dir, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_https_and_skopeo_pushes_and_pulls() {
    let temp = tempfile::tempdir().expect("temp dir");
    let certs = temp.path().join("certs");
    dev_certs(&certs, &[]);
    let mut serve = https_serve(temp.path(), &certs, &[]);
    let addr = serve.addr("http").await;
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().expect("utf-8");

    // GET /v2/ over HTTPS, by HTTP/1.1 and by HTTP/2 (ALPN).
    for version in ["--http1.1", "--http2"] {
        let (ok, out, err) = tool(
            "curl",
            &[
                "-sS",
                version,
                "--cacert",
                ca,
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                &format!("https://{addr}/v2/"),
            ],
        )
        .await;
        assert!(ok, "curl {version}: {err}");
        let expected = if version == "--http2" {
            "200 2"
        } else {
            "200 1.1"
        };
        assert!(out.ends_with(expected), "{version}: {out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("docker-distribution-api-version: registry/2.0"),
            "{out}"
        );
    }
    // Without the CA the certificate is not trusted.
    let (ok, _, _) = tool("curl", &["-sS", &format!("https://{addr}/v2/")]).await;
    assert!(!ok, "curl trusted the test certificate without the test CA");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let answer = plain.get(format!("http://{addr}/v2/")).send().await;
    assert!(answer.is_err(), "plain HTTP answered: {answer:?}");

    // skopeo push and pull, trusting the CA through a cert dir (`ca.crt`).
    let cert_dir = temp.path().join("skopeo-certs");
    std::fs::create_dir_all(&cert_dir).expect("cert dir");
    std::fs::copy(certs.join("ca.pem"), cert_dir.join("ca.crt")).expect("ca.crt");
    let cert_dir = cert_dir.to_str().expect("utf-8");
    let source = temp.path().join("source");
    let blobs = oci_layout(&source);
    let target = format!("docker://{addr}/tls/skopeo:v1");
    let source_ref = format!("oci:{}:v1", source.display());
    let (ok, _, err) = tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--dest-cert-dir",
            cert_dir,
            &source_ref,
            &target,
        ],
    )
    .await;
    assert!(ok, "skopeo push over HTTPS: {err}");
    let pulled = temp.path().join("pulled");
    let pulled_ref = format!("oci:{}:v1", pulled.display());
    let (ok, _, err) = tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--src-cert-dir",
            cert_dir,
            &target,
            &pulled_ref,
        ],
    )
    .await;
    assert!(ok, "skopeo pull over HTTPS: {err}");
    for (digest, bytes) in blobs {
        let hex = digest.to_string().trim_start_matches("sha256:").to_owned();
        let path = pulled.join("blobs").join("sha256").join(hex);
        let pulled_bytes = std::fs::read(&path).unwrap_or_else(|e| {
            let listing: Vec<_> = std::fs::read_dir(pulled.join("blobs").join("sha256"))
                .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            panic!("pulled blob {digest}: {e}; the layout holds {listing:?}")
        });
        assert!(
            pulled_bytes == bytes,
            "blob {digest} differs after the round trip"
        );
    }
}

/// A pull-through cache upstream and a replication rule that reach an HTTPS registry whose
/// certificate chains to a private CA, given to each with `--ca-file` and kept in the Raft
/// state: without it the cache answers 502 naming the certificate; with it
/// the image pulls through, and a push rule copies another image there. A file that holds no
/// certificate is refused by `wharf admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_and_a_replication_rule_trust_the_private_ca_given_them() {
    let temp = tempfile::tempdir().expect("temp dir");
    let certs = temp.path().join("certs");
    dev_certs(&certs, &[]);
    let ca = certs.join("ca.pem");
    let ca_arg = ca.to_str().expect("utf-8");
    let mut upstream = https_serve(temp.path(), &certs, &[]);
    let upstream_url = format!("https://{}", upstream.addr("http").await);
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("ca.pem")).expect("PEM"),
        )
        .build()
        .expect("client");
    let remote = Registry {
        base: upstream_url.clone(),
        http: trusting,
    };
    let image = remote
        .push_image("lib/app", "v1", 40_000)
        .await
        .expect("push upstream");

    let serve = common::serve::Serve::start("", &[]).await;
    let local = Registry::new(serve.base.clone());
    let add = |extra: &[&str]| {
        let mut args = vec![
            "proxy",
            "add",
            "--id",
            "private",
            "--url",
            &upstream_url,
            "--prefix",
            "private",
        ];
        args.extend_from_slice(extra);
        serve.admin_output(&args)
    };
    let not_pem = temp.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let refused = add(&["--ca-file", not_pem.to_str().expect("utf-8")]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("CA bundle"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Without the CA: the upstream's certificate is not trusted.
    assert!(add(&[]).status.success());
    // Gateways read the upstreams every few seconds: until this one knows it, the name is
    // unknown (404).
    let body = until(
        "the untrusted upstream's 502",
        Instant::now() + READY,
        || async {
            let answer = local
                .http
                .get(format!("{}/v2/private/lib/app/manifests/v1", serve.base))
                .header("Accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = answer.status();
            let body = answer.text().await.map_err(|e| e.to_string())?;
            (status == 502)
                .then_some(body.clone())
                .ok_or(format!("{status}: {body}"))
        },
    )
    .await
    .expect("502 without the CA");
    assert!(body.contains("certificate"), "{body}");

    // With it.
    assert!(add(&["--ca-file", ca_arg]).status.success());
    let listed: Value = serde_json::from_str(&serve.admin(&["proxy", "list"])).expect("JSON");
    assert_eq!(listed["proxies"][0]["has_ca"], true, "{listed}");
    let cached = common::PushedImage {
        repo: "private/lib/app".into(),
        ..image.clone()
    };
    until(
        "the pull through the cache",
        Instant::now() + READY,
        || async { local.verify_image(&cached).await },
    )
    .await
    .expect("the image pulls through with the CA");

    // A push rule to the same registry, trusting the same CA.
    let pushed = local
        .push_image("prod/svc", "v1", 30_000)
        .await
        .expect("push");
    serve.admin(&[
        "replication",
        "add",
        "--id",
        "private",
        "--to",
        &upstream_url,
        "--repos",
        "prod/**",
        "--ca-file",
        ca_arg,
    ]);
    until("the replicated image", Instant::now() + READY, || async {
        remote.verify_image(&pushed).await
    })
    .await
    .expect("the push rule copies over HTTPS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let temp = tempfile::tempdir().expect("temp dir");
    let certs = temp.path().join("certs");
    dev_certs(&certs, &["--name", "first"]);
    let ca = certs.join("ca.pem");
    let cert = certs.join("node.pem");
    let mut serve = https_serve(temp.path(), &certs, &["--tls-reload-interval-ms", "100"]);
    let addr = serve.addr("http").await;
    let first = pem_cert(&cert);
    assert_eq!(
        presented_certificate(&addr, &ca).await.expect("handshake"),
        first
    );

    // A new pair under the same CA (written key first, each by a rename).
    dev_certs(&certs, &["--reuse-ca", "--name", "second"]);
    let second = pem_cert(&cert);
    assert_ne!(first, second);
    let deadline = Instant::now() + Duration::from_secs(30);
    until("the new certificate is presented", deadline, || async {
        let presented = presented_certificate(&addr, &ca).await?;
        if presented == second {
            Ok(())
        } else {
            Err("still the old certificate".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    assert!(
        serve.log().contains("TLS certificate reloaded"),
        "{}",
        serve.log()
    );

    // A broken replacement: refused (a warning), the second certificate stays in service. (The
    // pair above may have drawn a warning already, when the new key was in place before the new
    // certificate: count them.)
    let refusals = || {
        serve
            .log()
            .matches("keeping the current certificate")
            .count()
    };
    let refused_before = refusals();
    let temp_file = certs.join("broken.tmp");
    std::fs::write(&temp_file, "not a certificate").expect("write");
    std::fs::rename(&temp_file, &cert).expect("rename");
    until("the broken file is reported", deadline, || async {
        if refusals() > refused_before {
            Ok(())
        } else {
            Err("no warning yet".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
    assert_eq!(
        presented_certificate(&addr, &ca).await.expect("handshake"),
        second
    );
    assert!(
        !serve.log().contains("PRIVATE KEY"),
        "key material in the log"
    );
}

/// The cluster TLS flags for a member using the pair in `certs`.
fn cluster_tls_args(certs: &Path) -> Vec<String> {
    let path = |name: &str| certs.join(name).to_str().expect("utf-8").to_owned();
    vec![
        "--cluster-tls-ca".into(),
        path("ca.pem"),
        "--cluster-tls-cert".into(),
        path("node.pem"),
        "--cluster-tls-key".into(),
        path("node.key"),
    ]
}

fn args<'a>(base: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    base.iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect()
}

/// A gRPC endpoint to `addr`: `https` with `tls`, `http` without.
fn grpc_endpoint(addr: &str, tls: Option<ClientTlsConfig>) -> Endpoint {
    let endpoint = match &tls {
        Some(_) => Endpoint::from_shared(format!("https://{addr}")),
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
    .expect("endpoint")
    .connect_timeout(Duration::from_secs(5))
    .timeout(Duration::from_secs(10));
    match tls {
        Some(tls) => endpoint.tls_config(tls).expect("TLS settings"),
        None => endpoint,
    }
}

/// Calls `ListBlobNodes` on a meta node and `Stat` on a blob node through `endpoint_for`.
async fn call_meta_and_blob(
    meta: &str,
    blob: &str,
    tls: Option<ClientTlsConfig>,
) -> (Result<(), tonic::Status>, Result<(), tonic::Status>) {
    use wharf_proto::pb;
    let meta_call = async {
        let channel = grpc_endpoint(meta, tls.clone()).connect_lazy();
        pb::meta_client::MetaClient::new(channel)
            .list_blob_nodes(pb::Empty {})
            .await
            .map(|_| ())
    };
    let blob_call = async {
        let channel = grpc_endpoint(blob, tls.clone()).connect_lazy();
        let digest = Digest::sha256_of(b"nothing stored").to_string();
        match pb::blob_client::BlobClient::new(channel)
            .stat(pb::BlobDigest { digest })
            .await
        {
            // An answer from the blob service itself (the blob is unknown) is not a refusal.
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    };
    tokio::join!(meta_call, blob_call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_members_speak_mtls_and_refuse_other_clients() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let certs = dir.join("certs");
    dev_certs(&certs, &[]);
    let other_certs = dir.join("other-certs");
    dev_certs(&other_certs, &[]);
    let tls = cluster_tls_args(&certs);
    let path = |name: &str| dir.join(name).to_str().expect("utf-8").to_owned();

    let (meta_data, blob1_data, blob2_data) = (path("meta-1"), path("blob-1"), path("blob-2"));
    let mut meta = Member::start(
        "meta-1",
        dir,
        &args(
            &["meta", "--grpc-listen", "127.0.0.1:0", "--data", &meta_data],
            &tls,
        ),
    );
    let meta_addr = meta.addr("grpc").await;
    let mut blobs = Vec::new();
    for (id, data) in [("1", &blob1_data), ("2", &blob2_data)] {
        let base = [
            "blob",
            "--grpc-listen",
            "127.0.0.1:0",
            "--node-id",
            id,
            "--data",
            data,
            "--meta",
            &meta_addr,
        ];
        blobs.push(Member::start(
            &format!("blob-{id}"),
            dir,
            &args(&base, &tls),
        ));
    }
    let mut blob_addrs = Vec::new();
    for blob in &mut blobs {
        // Ready means registered with meta: the blob -> meta hop works under mTLS.
        blob_addrs.push(blob.addr("grpc").await);
    }
    let mut gateway = Member::start(
        "gateway-1",
        dir,
        &args(
            &["gateway", "--listen", "127.0.0.1:0", "--meta", &meta_addr],
            &tls,
        ),
    );
    let gateway_url = format!("http://{}", gateway.addr("http").await);

    // Push and pull through the gateway: gateway -> meta, gateway -> blob and blob -> blob
    // (replication to the second owner) all go over mTLS.
    let registry = Registry::new(gateway_url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let image = until("push through the gateway", deadline, || {
        registry.push_image("tls/cluster", "v1", 200 * 1024)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", gateway.log(), meta.log()));
    registry.verify_image(&image).await.expect("pull");

    // `wharf admin` reaches the cluster with the same flags.
    let admin_args = args(&["admin", "--meta", &meta_addr], &tls);
    let admin_args: Vec<&str> = admin_args
        .into_iter()
        .chain(["cluster", "status"])
        .collect();
    let (ok, out, err) = tool(BINARY, &admin_args).await;
    assert!(ok, "wharf admin over mTLS: {err}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert!(out.contains(&blob_addrs[0]), "{status}");

    let ca = Certificate::from_pem(std::fs::read(certs.join("ca.pem")).expect("ca"));
    let identity = |dir: &Path| {
        Identity::from_pem(
            std::fs::read(dir.join("node.pem")).expect("cert"),
            std::fs::read(dir.join("node.key")).expect("key"),
        )
    };
    let blob_addr = &blob_addrs[0];

    // (d) A client certificate signed by the cluster CA: answered.
    let valid = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .identity(identity(&certs));
    let (meta_answer, blob_answer) = call_meta_and_blob(&meta_addr, blob_addr, Some(valid)).await;
    meta_answer.expect("meta answers a member's certificate");
    blob_answer.expect("blob answers a member's certificate");

    // (a) TLS without a client certificate, (b) a client certificate from another CA,
    // (c) plaintext: all refused before any service answers.
    let refused = [
        (
            "no client certificate",
            Some(ClientTlsConfig::new().ca_certificate(ca.clone())),
        ),
        (
            "a certificate from another CA",
            Some(
                ClientTlsConfig::new()
                    .ca_certificate(ca.clone())
                    .identity(identity(&other_certs)),
            ),
        ),
        ("plaintext", None),
    ];
    for (case, tls) in refused {
        let (meta_answer, blob_answer) = call_meta_and_blob(&meta_addr, blob_addr, tls).await;
        for (node, answer) in [("meta", meta_answer), ("blob", blob_answer)] {
            let status = answer.expect_err(&format!("{node} must refuse {case}"));
            assert!(
                matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Internal
                        | tonic::Code::Cancelled
                ),
                "{node}, {case}: {status:?}"
            );
        }
    }
    drop(gateway);
    drop(blobs);
    drop(meta);
}
