//! `wharf bench` keeps working: a smoke run (seconds) of every workload against `wharf serve` and
//! against CNCF Distribution 2.8 (Debian's `docker-registry`, which `.ci/run` installs), the CLI's
//! JSON output and exit status, and failures counted rather than hidden. Figures are not checked
//! here: they live in `benches/` (see benches/README.md).

use std::process::Stdio;
use std::time::Duration;

mod common;

use clap::Parser;
use common::distribution::Distribution;
use load::{BenchArgs, Report};
use test_cluster::InProcessServe;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

async fn bench(url: &str, workload: &[&str]) -> Report {
    let mut argv = vec!["bench", "--url", url, "--quiet"];
    argv.extend_from_slice(workload);
    let cli = Cli::try_parse_from(&argv).expect("valid bench arguments");
    load::run(&cli.bench).await.expect("the workload runs")
}

fn assert_clean(report: &Report, operations: u64, bytes_per_op: Option<u64>) {
    assert_eq!(
        (report.ok, report.errors),
        (operations, 0),
        "{}: {:?}",
        report.workload,
        report.error_samples
    );
    if let Some(bytes) = bytes_per_op {
        assert_eq!(report.bytes, operations * bytes, "{}", report.workload);
    }
    assert!(report.ops_per_second > 0.0 && report.latency_ms.p50 > 0.0);
    assert!(report.latency_ms.p50 <= report.latency_ms.p99);
    assert!(report.latency_ms.p99 <= report.latency_ms.max);
}

/// Every workload, small, against one registry.
async fn smoke(url: &str) {
    let size = 100_000;
    let report = bench(
        url,
        &["push", "--count", "6", "--size", "100000", "-c", "3"],
    )
    .await;
    assert_clean(&report, 6, Some(size));
    let chunked = [
        "push", "--count", "4", "--size", "100000", "--chunk", "30000", "-c", "2",
    ];
    assert_clean(&bench(url, &chunked).await, 4, Some(size));
    let pull = [
        "pull", "--count", "8", "--size", "100000", "-c", "4", "--verify",
    ];
    assert_clean(&bench(url, &pull).await, 8, Some(size));
    let put = ["manifest-put", "--requests", "20", "-c", "4"];
    assert_clean(&bench(url, &put).await, 20, None);
    let get = ["manifest-get", "--requests", "50", "-c", "8"];
    let report = bench(url, &get).await;
    assert_clean(&report, 50, None);
    assert!(report.bytes > 50 * 100, "manifest bodies were read");
    let by_digest = [
        "manifest-get",
        "--requests",
        "30",
        "-c",
        "4",
        "--by",
        "digest",
        "--head",
    ];
    let report = bench(url, &by_digest).await;
    assert_clean(&report, 30, Some(0));
    let tags = ["tags", "--requests", "10", "-c", "2", "--tags", "12"];
    assert_clean(&bench(url, &tags).await, 10, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_against_wharf_serve() {
    let serve = InProcessServe::start().await.expect("serve");
    smoke(&serve.base_url()).await;
    serve.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_against_distribution() {
    let distribution = Distribution::start().await;
    smoke(&distribution.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_json_and_fails_on_errors() {
    let serve = InProcessServe::start().await.expect("serve");
    let url = serve.base_url();
    let output = wharf(&[
        "bench",
        "--url",
        &url,
        "--json",
        "manifest-get",
        "--requests",
        "40",
        "-c",
        "4",
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["workload"], "manifest-get");
    assert_eq!(report["ok"], 40);
    assert_eq!(report["errors"], 0);
    assert!(report["latency_ms"]["p99"].as_f64().expect("p99") > 0.0);
    serve.stop().await;

    // Nothing listens on a port just released: every operation fails, and the exit status says so.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let output = wharf(&[
        "bench",
        "--url",
        &format!("http://{closed}"),
        "--json",
        "push",
        "--count",
        "3",
        "--size",
        "1000",
    ])
    .await;
    assert!(!output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(
        (report["ok"].as_u64(), report["errors"].as_u64()),
        (Some(0), Some(3))
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("3 of 3 operations failed"), "{stderr}");
}

async fn wharf(args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("wharf bench ends within 2 minutes")
        .expect("wharf runs")
}

/// The Docker token flow: a registry that answers 401 with a Bearer challenge gets a token from
/// the realm (with the `--user` credentials) and the retried requests carry it. The registry here
/// is `wharf serve` behind a proxy that demands the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_flow_is_followed() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};

    #[derive(Clone)]
    struct Proxy {
        upstream: String,
        realm: String,
        tokens_issued: Arc<AtomicU64>,
        refused: Arc<AtomicU64>,
        http: reqwest::Client,
    }

    async fn token(State(proxy): State<Proxy>, headers: HeaderMap) -> Response {
        // "u:p" in base64.
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some("Basic dTpw")
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        proxy.tokens_issued.fetch_add(1, Ordering::SeqCst);
        axum::Json(serde_json::json!({"token": "t0ken"})).into_response()
    }

    async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
        let authorized = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some("Bearer t0ken");
        if !authorized {
            proxy.refused.fetch_add(1, Ordering::SeqCst);
            let challenge = format!(
                r#"Bearer realm="{}",service="fake",scope="repository:bench:pull,push""#,
                proxy.realm
            );
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
            )
                .into_response();
        }
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let body = axum::body::to_bytes(body, 64 << 20)
            .await
            .expect("request body");
        let mut upstream = proxy
            .http
            .request(parts.method.clone(), format!("{}{path}", proxy.upstream))
            .body(body);
        for (name, value) in &parts.headers {
            if name != header::HOST && name != header::AUTHORIZATION {
                upstream = upstream.header(name, value);
            }
        }
        let reply = upstream.send().await.expect("upstream answers");
        let mut response = Response::builder().status(reply.status());
        for (name, value) in reply.headers() {
            response = response.header(name, value);
        }
        let bytes = reply.bytes().await.expect("upstream body");
        response.body(Body::from(bytes)).expect("response")
    }

    let serve = InProcessServe::start().await.expect("serve");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let proxy = Proxy {
        upstream: serve.base_url(),
        realm: format!("http://{addr}/token"),
        tokens_issued: Arc::default(),
        refused: Arc::default(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    };
    let app = axum::Router::new()
        .route("/token", axum::routing::get(token))
        .fallback(forward)
        .with_state(proxy.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let url = format!("http://{addr}");
    let get = [
        "--user",
        "u:p",
        "manifest-get",
        "--requests",
        "20",
        "-c",
        "2",
    ];
    let report = bench(&url, &get).await;
    assert_clean(&report, 20, None);
    assert!(proxy.tokens_issued.load(Ordering::SeqCst) >= 1);
    assert!(
        proxy.refused.load(Ordering::SeqCst) >= 1,
        "the first request was challenged"
    );

    // Wrong credentials: the token service refuses and the set-up fails with its answer.
    let cli = Cli::try_parse_from([
        "bench",
        "--url",
        &url,
        "--quiet",
        "--user",
        "u:wrong",
        "manifest-get",
        "--requests",
        "1",
    ])
    .expect("arguments");
    let error = load::run(&cli.bench)
        .await
        .expect_err("no token, no set-up");
    assert!(
        error.to_string().contains("token service refused"),
        "{error}"
    );
    server.abort();
    serve.stop().await;
}
