//! The endpoint over a real socket and a real store: signed GETs and HEADs, ranges, refusals,
//! keep-alive and pipelining, and the limits on what a client may send.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use blob_store::{BlobStore, FsBlobStore};
use cluster_api::fake::{MemMeta, FAKE_BLOB_URL_KEY};
use cluster_api::{sign_blob_query, MetaApi};
use oci_model::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Endpoint {
    addr: std::net::SocketAddr,
    store: FsBlobStore,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Endpoint {
    async fn start() -> Endpoint {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FsBlobStore::open(dir.path()).await.expect("store");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let meta: Arc<dyn MetaApi> = Arc::new(MemMeta::new());
        tokio::spawn(blob_http::serve(listener, store.clone(), meta, async {
            let _ = stopped.await;
        }));
        Endpoint {
            addr,
            store,
            _dir: dir,
            _stop: stop,
        }
    }

    async fn put(&self, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let bytes = bytes::Bytes::copy_from_slice(data);
        let stream = Box::pin(futures::stream::iter([Ok(bytes)]));
        self.store
            .put_replica(&digest, stream)
            .await
            .expect("stored");
        digest
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(digest: &Digest) -> String {
    let query = sign_blob_query(&FAKE_BLOB_URL_KEY, digest, now() + 60);
    format!("/blobs/{digest}?{query}")
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn error_code(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let start = text.find("\"code\":\"").expect("an error body") + 8;
        text[start..][..text[start..].find('"').unwrap()].to_owned()
    }
}

/// Reads one response (with a body unless `head`) from `stream`; `pending` keeps bytes read
/// past it.
async fn read_reply(stream: &mut TcpStream, pending: &mut Vec<u8>, head: bool) -> Reply {
    let end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 65_536];
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "the connection closed before a response");
        pending.extend_from_slice(&chunk[..read]);
    };
    let text = String::from_utf8(pending[..end].to_vec()).expect("ascii head");
    pending.drain(..end);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("a header");
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, value)| value.parse().unwrap());
    let length = if head { 0 } else { length };
    while pending.len() < length {
        let mut chunk = [0u8; 65_536];
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "the connection closed mid-body");
        pending.extend_from_slice(&chunk[..read]);
    }
    let body = pending.drain(..length).collect();
    Reply {
        status,
        headers,
        body,
    }
}

async fn request(endpoint: &Endpoint, text: &str) -> Reply {
    let mut stream = TcpStream::connect(endpoint.addr).await.expect("connect");
    stream.write_all(text.as_bytes()).await.expect("write");
    read_reply(&mut stream, &mut Vec::new(), text.starts_with("HEAD")).await
}

async fn get(endpoint: &Endpoint, target: &str, extra: &str) -> Reply {
    request(
        endpoint,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"),
    )
    .await
}

#[tokio::test]
async fn a_signed_get_serves_the_blob_and_its_ranges() {
    let endpoint = Endpoint::start().await;
    let data: Vec<u8> = (0..3_000_000u32).map(|n| (n % 251) as u8).collect();
    let digest = endpoint.put(&data).await;
    let target = signed(&digest);

    let reply = get(&endpoint, &target, "").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body == data, "the whole blob, byte for byte");
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));

    let reply = get(&endpoint, &target, "Range: bytes=1000-1999\r\n").await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, &data[1000..2000]);
    assert_eq!(
        reply.header("content-range"),
        Some("bytes 1000-1999/3000000")
    );
    let reply = get(&endpoint, &target, "Range: bytes=-10\r\n").await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (206, &data[2_999_990..])
    );
    let reply = get(&endpoint, &target, "Range: bytes=3000000-\r\n").await;
    assert_eq!(reply.status, 416);
    assert_eq!(reply.header("content-range"), Some("bytes */3000000"));

    let head = request(
        &endpoint,
        &format!("HEAD {target} HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("3000000"));
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn unsigned_wrong_or_expired_urls_are_403_and_unknown_blobs_404() {
    let endpoint = Endpoint::start().await;
    let digest = endpoint.put(b"layer").await;
    let other = Digest::sha256_of(b"other");

    let reply = get(&endpoint, &format!("/blobs/{digest}"), "").await;
    assert_eq!(
        (reply.status, reply.error_code()),
        (403, "DENIED".to_owned())
    );
    // A signature for another digest.
    let query = sign_blob_query(&FAKE_BLOB_URL_KEY, &other, now() + 60);
    let reply = get(&endpoint, &format!("/blobs/{digest}?{query}"), "").await;
    assert_eq!(reply.status, 403);
    // Signed with another key.
    let query = sign_blob_query(&[1; 32], &digest, now() + 60);
    let reply = get(&endpoint, &format!("/blobs/{digest}?{query}"), "").await;
    assert_eq!(reply.status, 403);
    let query = sign_blob_query(&FAKE_BLOB_URL_KEY, &digest, now() - 1);
    let reply = get(&endpoint, &format!("/blobs/{digest}?{query}"), "").await;
    assert_eq!(reply.status, 403);
    assert!(String::from_utf8_lossy(&reply.body).contains("expired"));

    let reply = get(&endpoint, &signed(&other), "").await;
    assert_eq!(
        (reply.status, reply.error_code()),
        (404, "BLOB_UNKNOWN".to_owned())
    );
    let reply = get(&endpoint, "/blobs/sha256:nothex?expires=1&sig=00", "").await;
    assert_eq!(
        (reply.status, reply.error_code()),
        (400, "DIGEST_INVALID".to_owned())
    );
    let reply = get(&endpoint, "/v2/", "").await;
    assert_eq!(reply.status, 404);
    let reply = request(
        &endpoint,
        &format!("DELETE {} HTTP/1.1\r\nHost: x\r\n\r\n", signed(&digest)),
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn a_connection_serves_pipelined_requests_and_closes_when_asked() {
    let endpoint = Endpoint::start().await;
    let one = endpoint.put(b"one").await;
    let two = endpoint.put(b"two").await;
    let mut stream = TcpStream::connect(endpoint.addr).await.expect("connect");
    let requests = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\nGET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        signed(&one),
        signed(&two)
    );
    stream.write_all(requests.as_bytes()).await.expect("write");
    let mut pending = Vec::new();
    let first = read_reply(&mut stream, &mut pending, false).await;
    let second = read_reply(&mut stream, &mut pending, false).await;
    assert_eq!((first.status, first.body.as_slice()), (200, &b"one"[..]));
    assert_eq!((second.status, second.body.as_slice()), (200, &b"two"[..]));
    assert_eq!(second.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let read = stream
        .read_to_end(&mut rest)
        .await
        .expect("read to the end");
    assert_eq!(read, 0, "closed after the second answer");
}

#[tokio::test]
async fn oversized_heads_bodies_and_garbage_are_refused_and_closed() {
    let endpoint = Endpoint::start().await;
    let digest = endpoint.put(b"layer").await;
    let huge = format!("X-Filler: {}\r\n", "a".repeat(20_000));
    let reply = get(&endpoint, &signed(&digest), &huge).await;
    assert_eq!(reply.status, 431);
    let reply = get(&endpoint, &signed(&digest), "Content-Length: 5\r\n").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("connection"), Some("close"));
    let reply = request(&endpoint, "NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(reply.status, 400);
}
