//! Over a real listener on 127.0.0.1:0: what hyper puts on the wire, chunked uploads, truncated
//! bodies and graceful shutdown.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Harness;
use oci_model::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(harness: &Harness) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = harness.router.clone();
    let task = tokio::spawn(wharf_tls::serve(
        listener,
        router,
        None,
        wharf_tls::ConnectionLimits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Server { addr, stop, task }
}

struct RawReply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Writes `request` (which must ask for `Connection: close`) and reads the reply to EOF.
async fn exchange(addr: SocketAddr, request: &[u8], half_close: bool) -> RawReply {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        if half_close {
            stream.shutdown().await.unwrap();
        }
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(DEADLINE, work)
        .await
        .expect("reply within the deadline");
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    RawReply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

fn chunked(parts: &[&[u8]]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for part in parts {
        encoded.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        encoded.extend_from_slice(part);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

#[tokio::test]
async fn head_keeps_content_length_on_the_wire() {
    let harness = Harness::new();
    let digest = harness.push_blob("app", &[7u8; 1234]).await;
    let server = start(&harness).await;
    let request =
        format!("HEAD /v2/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = exchange(server.addr, request.as_bytes(), false).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length").as_deref(), Some("1234"));
    assert_eq!(
        reply.header("docker-distribution-api-version").as_deref(),
        Some("registry/2.0")
    );
    assert!(reply.body.is_empty());

    let request =
        format!("GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = exchange(server.addr, request.as_bytes(), false).await;
    assert_eq!(reply.header("content-length").as_deref(), Some("1234"));
    assert_eq!(reply.body, vec![7u8; 1234]);
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn chunked_patch_then_empty_put() {
    let harness = Harness::new();
    let location = harness.open_upload("app").await;
    let server = start(&harness).await;
    let parts: [&[u8]; 3] = [b"sent with ", b"transfer-encoding ", b"chunked"];
    let data = parts.concat();
    let mut request = format!(
        "PATCH {location} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(&chunked(&parts));
    let reply = exchange(server.addr, &request, false).await;
    assert_eq!(reply.status, 202, "{}", reply.head);
    assert_eq!(reply.header("range"), Some(format!("0-{}", data.len() - 1)));
    assert_eq!(reply.header("location"), Some(location.clone()));

    let digest = Digest::sha256_of(&data);
    let request = format!(
        "PUT {location}?digest={digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let reply = exchange(server.addr, request.as_bytes(), false).await;
    assert_eq!(reply.status, 201, "{}", reply.head);
    assert_eq!(
        harness
            .call("GET", &format!("/v2/app/blobs/{digest}"))
            .await
            .body,
        data
    );

    let request = format!("GET {location} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = exchange(server.addr, request.as_bytes(), false).await;
    assert_eq!(reply.status, 404);
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_body_writes_nothing() {
    let harness = Harness::new();
    let location = harness.open_upload("app").await;
    let server = start(&harness).await;
    let request = format!(
        "PATCH {location} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Range: 0-99\r\nContent-Length: 100\r\n\r\nonly ten.."
    );
    let reply = exchange(server.addr, request.as_bytes(), true).await;
    assert_eq!(reply.status, 400, "{}", reply.head);
    let reply = harness.call("GET", &location).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("range"), Some("0-0"));
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let harness = Harness::new();
    let server = start(&harness).await;
    let reply = exchange(
        server.addr,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"{}");
    server.stop.send(()).unwrap();
    let finished = tokio::time::timeout(DEADLINE, server.task).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))));
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn bodiless_answers_on_the_wire() {
    let harness = Harness::new();
    let server = start(&harness).await;
    let post = b"POST /v2/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Length: 0\r\n\r\n";
    let reply = exchange(server.addr, post, false).await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("content-length").as_deref(), Some("0"));
    assert_eq!(reply.header("range").as_deref(), Some("0-0"));
    let location = reply.header("location").unwrap();

    let request = format!("GET {location} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = exchange(server.addr, request.as_bytes(), false).await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
    // Hyper sends no Content-Length with a 204, as RFC 9110 §8.6 requires.
    assert_eq!(reply.header("range").as_deref(), Some("0-0"));

    let absent = Digest::sha256_of(b"absent");
    let request =
        format!("HEAD /v2/app/blobs/{absent} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = exchange(server.addr, request.as_bytes(), false).await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.is_empty());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}
