//! A small HTTP proxy in front of a registry that misbehaves on demand: answers 429 or 503, stalls,
//! cuts a body mid-way, or flips a byte of it. It counts the requests it forwards, so a test can
//! tell how often the upstream was asked. Redirects are passed through, not followed.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;

/// What the proxy does to the next requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards faithfully.
    None,
    /// Answers this status itself (with an OCI error body; `Retry-After` on a 429).
    Status(u16),
    /// Answers nothing (until the fault changes or the proxy goes).
    Stall,
    /// Forwards the head and the first `n` bytes of the body, then drops the connection.
    CutAfter(usize),
    /// Forwards everything, with the body's byte at this offset inverted.
    FlipByte(usize),
    /// Forwards the head and about the first `n` bytes of the body (whole pieces), then holds
    /// the rest until the fault changes or the proxy goes.
    PauseAfter(usize),
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    fault: Arc<Mutex<Fault>>,
    /// Wakes the stalled requests.
    released: Arc<Notify>,
    forwarded: Arc<Mutex<Vec<String>>>,
    /// The requests a `Status` or `Stall` fault kept from the upstream, as `METHOD /path`.
    refused: Arc<Mutex<Vec<String>>>,
}

pub struct FaultProxy {
    pub url: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

/// Headers copied both ways (hop-by-hop ones and the rest are not).
const PASSED: [&str; 9] = [
    "accept",
    "authorization",
    "content-type",
    "content-length",
    "docker-content-digest",
    "location",
    "www-authenticate",
    "retry-after",
    "range",
];

impl FaultProxy {
    /// A proxy on a loopback port of its own in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            fault: Arc::new(Mutex::new(Fault::None)),
            released: Arc::new(Notify::new()),
            forwarded: Arc::new(Mutex::new(Vec::new())),
            refused: Arc::new(Mutex::new(Vec::new())),
        };
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy {
            url,
            shared,
            server,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().expect("lock") = fault;
        self.shared.released.notify_waiters();
    }

    /// The requests forwarded to the upstream so far, as `METHOD /path?query -> STATUS`.
    pub fn forwarded(&self) -> Vec<String> {
        self.shared.forwarded.lock().expect("lock").clone()
    }

    /// How many forwarded requests the upstream answered with `status`.
    pub fn answered(&self, status: u16) -> usize {
        let suffix = format!(" -> {status}");
        self.forwarded()
            .iter()
            .filter(|line| line.ends_with(&suffix))
            .count()
    }

    /// How many requests a `Status` or `Stall` fault kept from the upstream were `method` on a
    /// path containing `part`.
    pub fn refused(&self, method: &str, part: &str) -> usize {
        self.shared
            .refused
            .lock()
            .expect("lock")
            .iter()
            .filter(|line| line.starts_with(&format!("{method} ")) && line.contains(part))
            .count()
    }

    /// How many forwarded requests were `method` on a path containing `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.forwarded()
            .iter()
            .filter(|line| line.starts_with(&format!("{method} ")) && line.contains(part))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.released.notify_waiters();
        self.server.abort();
    }
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let fault = *shared.fault.lock().expect("lock");
    if matches!(fault, Fault::Status(_) | Fault::Stall) {
        shared.refused.lock().expect("lock").push(format!(
            "{} {}",
            request.method(),
            request.uri().path()
        ));
    }
    match fault {
        Fault::Status(status) => return refusal(status),
        Fault::Stall => {
            // Until the fault changes or the proxy goes.
            shared.released.notified().await;
            return refusal(504);
        }
        _ => {}
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().clone();
    let line = format!("{method} {path}");
    let mut outgoing = shared
        .http
        .request(method, format!("{}{path}", shared.upstream));
    for name in PASSED {
        if let Some(value) = request.headers().get(name) {
            outgoing = outgoing.header(name, value.clone());
        }
    }
    let body = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let upstream = match outgoing.body(body).send().await {
        Ok(upstream) => upstream,
        Err(_) => return refusal(502),
    };
    let status = upstream.status();
    shared
        .forwarded
        .lock()
        .expect("lock")
        .push(format!("{line} -> {}", status.as_u16()));
    let mut headers = HeaderMap::new();
    for name in PASSED {
        if let Some(value) = upstream.headers().get(name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    let mut offset = 0usize;
    let body = upstream.bytes_stream().map(move |piece| {
        let piece = piece.map_err(std::io::Error::other)?;
        let start = offset;
        offset += piece.len();
        match fault {
            // Past the cut, an error drops the connection short of the announced length (as
            // does a body that simply ends there).
            Fault::CutAfter(n) if start >= n => Err(std::io::Error::other("cut")),
            Fault::CutAfter(n) if offset > n => Ok(piece.slice(..n - start)),
            Fault::FlipByte(at) if (start..offset).contains(&at) => {
                let mut bytes = piece.to_vec();
                bytes[at - start] ^= 0xff;
                Ok(Bytes::from(bytes))
            }
            _ => Ok(piece),
        }
    });
    let (released, current) = (shared.released.clone(), shared.fault.clone());
    let mut forwarded = 0usize;
    let body = body.then(move |piece| {
        let (released, current) = (released.clone(), current.clone());
        let paused = matches!(fault, Fault::PauseAfter(n) if forwarded >= n);
        if let Ok(piece) = &piece {
            forwarded += piece.len();
        }
        async move {
            if paused {
                loop {
                    let wake = released.notified();
                    if *current.lock().expect("lock") != fault {
                        break;
                    }
                    wake.await;
                }
            }
            piece
        }
    });
    let body = Body::from_stream(body);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn refusal(status: u16) -> Response {
    let (code, message) = match status {
        429 => ("TOOMANYREQUESTS", "rate limit exceeded"),
        _ => ("UNAVAILABLE", "the registry is not available"),
    };
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if status == 429 {
        headers.insert("retry-after", HeaderValue::from_static("30"));
    }
    response
}
