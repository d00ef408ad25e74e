//! The gateway's limits against a real `wharf serve` (issue 15, part 4): slow clients (slowloris)
//! hold no worker and little memory and are cut off by the header timeout while a normal client
//! pushes and pulls; a stalled body is abandoned; request rates and uploads at once get 429
//! `TOOMANYREQUESTS` with `Retry-After`, exempt networks excepted; connections past the cap get
//! a 503; an oversize header gets 431.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::serve::Serve;
use common::{until, with_digest, Registry};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DEADLINE: Duration = Duration::from_secs(60);

fn addr_of(serve: &Serve) -> SocketAddr {
    serve
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("serve listens on an IP address")
}

/// VmRSS of the `serve` process, in KiB.
fn rss_kib(serve: &Serve) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut buf).await.expect("read response");
        assert!(read > 0, "connection closed before a response: {raw:?}");
        raw.extend_from_slice(&buf[..read]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while raw.len() < head_end + length {
        let read = stream.read(&mut buf).await.expect("read body");
        assert!(read > 0, "connection closed mid-body");
        raw.extend_from_slice(&buf[..read]);
    }
    (status, head, raw[head_end..head_end + length].to_vec())
}

/// Starts a `PATCH` of `location` over a raw connection declaring `length` bytes (and `extra`
/// headers) but sending only `first`; the caller holds the rest back.
async fn start_patch(
    serve: &Serve,
    location: &str,
    extra: &str,
    length: usize,
    first: &[u8],
) -> TcpStream {
    let path = location.trim_start_matches(&serve.base);
    let mut stream = TcpStream::connect(addr_of(serve)).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
         {extra}Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    stream
}

fn error_code(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    value["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// True once the server has closed `stream` (EOF or reset), waiting at most `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or the like before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_slow_clients_do_not_stop_a_normal_one_and_are_cut_off() {
    let serve = Serve::start(
        "[gateway]\nheader_read_timeout_ms = 3000\nmax_connections = 2000\n",
        &[],
    )
    .await;
    let addr = addr_of(&serve);
    let registry = Registry::new(serve.base.clone());
    // Warm up (first allocations, the first push's paths) before measuring memory.
    let warm = registry
        .push_image("slow/warm", "v1", 64 * 1024)
        .await
        .unwrap();
    registry.verify_image(&warm).await.unwrap();
    let rss_before = rss_kib(&serve);

    // 500 clients that start a request and then send one header byte every 200 ms, forever:
    // each keeps its connection busy well past the header timeout unless the server ends it.
    let opened = Instant::now();
    let mut slow = Vec::new();
    for i in 0..500 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(format!("GET /v2/ HTTP/1.1\r\nHost: slow-{i}\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
        slow.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(200));
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        if stream.write_all(b"a").await.is_err() {
                            return Instant::now();
                        }
                    }
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => {}
                    },
                }
            }
        }));
    }

    // Meanwhile a normal client pushes and pulls.
    let image = registry
        .push_image("slow/normal", "v1", 256 * 1024)
        .await
        .unwrap();
    registry.verify_image(&image).await.unwrap();
    let rss_during = rss_kib(&serve);

    // Every slow connection is ended by the server, about the header timeout after it opened.
    for task in slow {
        let ended = tokio::time::timeout(DEADLINE, task)
            .await
            .expect("a slow connection was never cut off")
            .unwrap();
        let lived = ended.duration_since(opened);
        assert!(
            lived >= Duration::from_secs(2),
            "cut off too early: {lived:?}"
        );
    }
    // 500 connections cost the process little memory (a debug build; generous headroom).
    let grown = rss_during.saturating_sub(rss_before);
    eprintln!("serve RSS {rss_before} KiB before, {rss_during} KiB with 500 slow clients");
    assert!(
        grown < 48 * 1024,
        "RSS grew by {grown} KiB with 500 slow clients ({rss_before} -> {rss_during} KiB)"
    );
    // And the registry still serves.
    registry.verify_image(&image).await.unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let serve = Serve::start("[gateway]\nheader_read_timeout_ms = 1000\n", &[]).await;
    let mut stream = TcpStream::connect(addr_of(&serve)).await.unwrap();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, _, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    assert!(
        closed_within(&mut stream, Duration::from_secs(20)).await,
        "idle keep-alive connection still open"
    );
}

#[tokio::test]
async fn a_stalled_upload_body_is_abandoned_and_nothing_of_it_is_kept() {
    let serve = Serve::start("[gateway]\nbody_idle_timeout_ms = 1000\n", &[]).await;
    let registry = Registry::new(serve.base.clone());
    let location = registry.start_upload("stall/me").await.unwrap();
    let mut stream = start_patch(
        &serve,
        &location,
        "Content-Range: 0-999\r\n",
        1000,
        b"0123456789",
    )
    .await;
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(20), read_response(&mut stream))
            .await
            .expect("no answer to a stalled body");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(error_code(&body), "BLOB_UPLOAD_INVALID");
    assert!(String::from_utf8_lossy(&body).contains("no body bytes"));

    // The ten bytes that came were not appended: the upload is still at offset 0.
    let status = registry.http.get(&location).send().await.unwrap();
    assert_eq!(status.status(), 204);
    let range = status
        .headers()
        .get("range")
        .map(|value| value.to_str().unwrap().to_owned());
    assert!(
        range.is_none() || range.as_deref() == Some("0-0"),
        "stalled bytes were kept: {range:?}"
    );
}

/// A client bound to `local` (a loopback address of its own).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn request_rates_get_429_with_retry_after_except_for_exempt_clients() {
    let serve = Serve::start(
        r#"
[gateway.limits]
client = { per_second = 1, burst = 5 }
exempt_clients = ["127.0.0.2"]
[[gateway.limits.repositories]]
repositories = "open/**"
client = { per_second = 0 }
"#,
        &[],
    )
    .await;
    let limited = client_from("127.0.0.1");
    let base = &serve.base;
    // The burst, then about one a second: however slow this machine is, the requests admitted
    // before the first 429 are the burst plus at most one per second elapsed.
    let started = Instant::now();
    let mut admitted = 0u64;
    let refused = loop {
        let response = limited.get(format!("{base}/v2/")).send().await.unwrap();
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => break response,
            other => panic!("GET /v2/ answered {other}"),
        }
        assert!(admitted <= 100, "never limited");
    };
    let allowed = 5 + started.elapsed().as_secs() + 1;
    assert!(
        (5..=allowed).contains(&admitted),
        "{admitted} admitted before the first 429, burst 5 and 1/s over {:?}",
        started.elapsed()
    );
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let body = refused.bytes().await.unwrap();
    assert_eq!(error_code(&body), "TOOMANYREQUESTS");

    // A repository rule lifting the limit has buckets of its own.
    for _ in 0..20 {
        let response = limited
            .get(format!("{base}/v2/open/x/tags/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "not limited under open/**");
    }
    // Another address is exempt altogether.
    let exempt = client_from("127.0.0.2");
    for _ in 0..30 {
        let response = exempt.get(format!("{base}/v2/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // What was limited is counted. `/metrics` is not limited.
    let metrics = limited
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|line| line.starts_with("wharf_gateway_limited_total"))
        .unwrap_or_else(|| panic!("no wharf_gateway_limited_total in {metrics}"));
    assert!(
        line.contains(r#"by="client""#) && line.contains(r#"limit="rate""#),
        "{line}"
    );
    // The bucket refills: one more request a second.
    until(
        "a token to come back",
        Instant::now() + Duration::from_secs(10),
        || async {
            let status = limited
                .get(format!("{base}/v2/"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .status();
            (status == 200).then_some(()).ok_or(format!("{status}"))
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn uploads_at_once_are_capped_per_client() {
    let serve = Serve::start(
        "[gateway]\nbody_idle_timeout_ms = 60000\n[gateway.limits]\nclient_uploads = 1\n",
        &[],
    )
    .await;
    let registry = Registry::new(serve.base.clone());
    let first = registry.start_upload("cap/me").await.unwrap();
    let second = registry.start_upload("cap/me").await.unwrap();
    // The first upload's PATCH holds its slot while its body streams.
    let mut stream = start_patch(&serve, &first, "", 6, b"abc").await;
    until(
        "the first PATCH to be running",
        Instant::now() + Duration::from_secs(10),
        || async {
            let metrics = registry
                .http
                .get(format!("{}/metrics", serve.base))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            metrics
                .lines()
                .any(|line| line == "wharf_gateway_uploads_in_progress 1")
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        },
    )
    .await
    .unwrap();
    let patch_second = || async {
        registry
            .http
            .patch(&second)
            .header("content-type", "application/octet-stream")
            .body("xyz")
            .send()
            .await
            .unwrap()
    };
    let refused = patch_second().await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body = refused.bytes().await.unwrap();
    assert_eq!(error_code(&body), "TOOMANYREQUESTS");
    assert!(String::from_utf8_lossy(&body).contains("uploads at once"));
    // Once the first body is complete its slot comes back.
    stream.write_all(b"def").await.unwrap();
    let (status, _, _) = read_response(&mut stream).await;
    assert_eq!(status, 202);
    assert_eq!(patch_second().await.status(), 202);
}

#[tokio::test]
async fn open_upload_sessions_are_capped_per_repository() {
    let serve = Serve::start("blob_max_open_uploads_per_repo = 3\n", &[]).await;
    let registry = Registry::new(serve.base.clone());
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(registry.start_upload("cap/sessions").await.unwrap());
    }
    let post = |repo: &'static str| {
        let url = format!("{}/v2/{repo}/blobs/uploads/", serve.base);
        let http = registry.http.clone();
        async move { http.post(url).send().await.unwrap() }
    };
    let refused = post("cap/sessions").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body = refused.bytes().await.unwrap();
    assert_eq!(error_code(&body), "TOOMANYREQUESTS");
    assert!(String::from_utf8_lossy(&body).contains("upload sessions of this repository"));
    // A monolithic push opens a session too, and is refused the same way.
    let data = b"one more blob";
    let whole = registry
        .post_monolithic("cap/sessions", data)
        .await
        .unwrap();
    assert_eq!(whole.status(), 429);
    // Another repository is not affected.
    assert_eq!(post("cap/other").await.status(), 202);
    // A cancelled session frees its slot, and so does a committed one.
    let cancelled = registry.http.delete(&open[0]).send().await.unwrap();
    assert_eq!(cancelled.status(), 204);
    assert_eq!(post("cap/sessions").await.status(), 202);
    assert_eq!(post("cap/sessions").await.status(), 429);
    let digest = oci_model::Digest::sha256_of(data);
    let committed = registry
        .http
        .put(with_digest(&open[1], &digest))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(committed.status(), 201);
    assert_eq!(post("cap/sessions").await.status(), 202);
    let metrics = registry
        .http
        .get(format!("{}/metrics", serve.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line == "wharf_blob_upload_sessions_refused_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn connections_past_the_cap_get_a_503_and_an_oversize_header_a_431() {
    let serve = Serve::start(
        "[gateway]\nmax_connections = 8\nmax_header_bytes = 16384\n",
        &[],
    )
    .await;
    let addr = addr_of(&serve);
    // Eight connections that stay open (a request each, kept alive).
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (status, _, _) = read_response(&mut stream).await;
        assert_eq!(status, 200);
        held.push(stream);
    }
    let mut ninth = TcpStream::connect(addr).await.unwrap();
    let (status, head, body) = read_response(&mut ninth).await;
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(error_code(&body), "UNAVAILABLE");

    // One closes; a new connection is served again.
    drop(held.pop());
    let served = until(
        "a connection slot to free",
        Instant::now() + Duration::from_secs(10),
        || async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let (status, _, _) = read_response(&mut stream).await;
            (status == 200).then_some(stream).ok_or(format!("{status}"))
        },
    )
    .await
    .unwrap();
    drop(served);
    drop(held);

    // A 32 KiB header with a 16 KiB cap: 431, not a hang or a reset. (The connections just
    // dropped free their slots once the server sees them close: until then the cap answers
    // 503 first, so that is waited out.)
    let big = "a".repeat(32 * 1024);
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let status = until(
        "a free slot for the oversize request",
        Instant::now() + Duration::from_secs(10),
        || async {
            let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
            let mut stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
            let _ = stream.write_all(request.as_bytes()).await;
            let (status, _, _) = read_response(&mut stream).await;
            (status != 503).then_some(status).ok_or(format!("{status}"))
        },
    )
    .await
    .unwrap();
    assert_eq!(status, 431);
}
