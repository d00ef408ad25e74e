//! One connection: read a request head, answer it (the body with `sendfile`), repeat.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use blob_store::FsBlobStore;
use cluster_api::{verify_blob_query, BlobUrlError, BlobUrlKeys};
use oci_model::{range_request, Digest, RangeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::{HEAD_TIMEOUT, IDLE_TIMEOUT};

/// The largest request head read; a longer one is answered 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

pub(crate) struct Context {
    pub store: FsBlobStore,
    pub keys: BlobUrlKeys,
}

/// A parsed request head: what this server looks at.
struct Request {
    head: bool,
    method_ok: bool,
    target: String,
    range: Option<String>,
    close: bool,
    has_body: bool,
}

enum Head {
    Request(Request),
    /// The client closed the connection between requests.
    Closed,
    /// Answer this and close.
    Refuse(Answer),
}

struct Answer {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Empty,
    Json(String),
    File { file: File, start: u64, len: u64 },
}

pub(crate) async fn connection(mut stream: TcpStream, context: &Context) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::with_capacity(4096);
    let mut first = true;
    loop {
        let wait = if first { HEAD_TIMEOUT } else { IDLE_TIMEOUT };
        first = false;
        let head = match timeout(wait, read_head(&mut stream, &mut buffer)).await {
            Ok(Ok(head)) => head,
            // A silent client, or a socket error: nothing more to say on this connection.
            Err(_) | Ok(Err(_)) => return,
        };
        let (answer, close, head_only) = match head {
            Head::Closed => return,
            Head::Refuse(answer) => (answer, true, false),
            Head::Request(request) => {
                // A request with a body is refused, and the body is not read: close after.
                let close = request.close || request.has_body;
                (answer(context, &request).await, close, request.head)
            }
        };
        metrics::counter!("wharf_blob_http_requests_total", "status" => answer.status.to_string())
            .increment(1);
        if write_answer(&mut stream, answer, close, head_only)
            .await
            .is_err()
        {
            return;
        }
        if close {
            linger_close(&mut stream).await;
            return;
        }
    }
}

/// Closes after a last answer without losing it: a client still sending (an oversized head, a
/// body) would otherwise get a reset that can destroy the answer in flight. The write side is
/// shut, then what the client still sends is read and dropped, for a second and 1 MiB at most.
async fn linger_close(stream: &mut TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 8192];
        let mut drained = 0usize;
        while drained < 1 << 20 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = timeout(std::time::Duration::from_secs(1), drain).await;
}

/// Reads until a whole request head is in `buffer`, parses it and drops it from the buffer
/// (bytes after it, a pipelined request, stay).
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<Head> {
    loop {
        if let Some(end) = find_head_end(buffer) {
            let head = parse_head(&buffer[..end]);
            buffer.drain(..end);
            return Ok(head);
        }
        if buffer.len() >= MAX_HEAD_BYTES {
            return Ok(Head::Refuse(error(
                431,
                "Request Header Fields Too Large",
                "UNSUPPORTED",
                "the request head is over 16 KiB",
            )));
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return if buffer.is_empty() {
                Ok(Head::Closed)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// What [`parse_request_head`] read of a request head: the fields the server looks at.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub head: bool,
    pub method_ok: bool,
    pub target: String,
    pub range: Option<String>,
    pub close: bool,
    pub has_body: bool,
}

/// Finds the head in `buffer` and parses it as a connection does: `None` while no whole head
/// is there, `Err` with the status of the refusal.
pub fn parse_request_head(buffer: &[u8]) -> Option<Result<RequestHead, u16>> {
    let end = find_head_end(buffer)?;
    Some(match parse_head(&buffer[..end]) {
        Head::Request(request) => Ok(RequestHead {
            head: request.head,
            method_ok: request.method_ok,
            target: request.target,
            range: request.range,
            close: request.close,
            has_body: request.has_body,
        }),
        Head::Closed => Err(0),
        Head::Refuse(answer) => Err(answer.status),
    })
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

fn parse_head(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => {
            return Head::Refuse(error(
                400,
                "Bad Request",
                "UNSUPPORTED",
                "not an HTTP/1.1 request",
            ))
        }
    }
    let method = request.method.unwrap_or_default();
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .and_then(|header| std::str::from_utf8(header.value).ok())
    };
    let connection = header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let http10 = request.version == Some(0);
    let has_body = header("transfer-encoding").is_some()
        || header("content-length").is_some_and(|length| length.trim() != "0");
    Head::Request(Request {
        head: method == "HEAD",
        method_ok: method == "GET" || method == "HEAD",
        target: request.path.unwrap_or_default().to_owned(),
        range: header("range").map(str::to_owned),
        close: connection.contains("close") || (http10 && !connection.contains("keep-alive")),
        has_body,
    })
}

async fn answer(context: &Context, request: &Request) -> Answer {
    if !request.method_ok {
        let mut answer = error(
            405,
            "Method Not Allowed",
            "UNSUPPORTED",
            "only GET and HEAD of /blobs/<digest>",
        );
        answer.headers.push(("Allow", "GET, HEAD".to_owned()));
        return answer;
    }
    if request.has_body {
        return error(400, "Bad Request", "UNSUPPORTED", "a blob GET has no body");
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let Some(digest_text) = path.strip_prefix("/blobs/") else {
        return error(
            404,
            "Not Found",
            "UNSUPPORTED",
            "only /blobs/<digest> is served here",
        );
    };
    let Ok(digest) = Digest::parse(digest_text) else {
        return error(
            400,
            "Bad Request",
            "DIGEST_INVALID",
            "the path does not name a valid digest",
        );
    };
    let key = match context.keys.key().await {
        Ok(key) => key,
        Err(meta_error) => {
            tracing::warn!(error = %meta_error, "cannot fetch the blob-URL key from meta");
            return error(
                503,
                "Service Unavailable",
                "UNAVAILABLE",
                "the node cannot check signatures yet (meta unreachable)",
            );
        }
    };
    match verify_blob_query(key, &digest, query, unix_seconds()) {
        Ok(()) => {}
        Err(BlobUrlError::Expired) => {
            return error(403, "Forbidden", "DENIED", "the signed URL has expired")
        }
        Err(BlobUrlError::Malformed | BlobUrlError::BadSignature) => {
            return error(
                403,
                "Forbidden",
                "DENIED",
                "the URL is not signed for this blob",
            )
        }
    }
    let opened = match context.store.open_blob(&digest).await {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            return error(
                404,
                "Not Found",
                "BLOB_UNKNOWN",
                "this node holds no such blob",
            )
        }
        Err(error_text) => {
            tracing::warn!(%digest, error = %error_text, "cannot open a blob for HTTP");
            return error(
                500,
                "Internal Server Error",
                "UNKNOWN",
                "the blob could not be read",
            );
        }
    };
    let (file, size) = opened;
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Docker-Content-Digest", digest.to_string()),
        ("ETag", format!("\"{digest}\"")),
        ("Accept-Ranges", "bytes".to_owned()),
    ];
    let (status, reason, start, end) = match range_request(request.range.as_deref(), size) {
        RangeRequest::Whole => (200, "OK", 0, size),
        RangeRequest::Part { start, end } => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
            (206, "Partial Content", start, end + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut answer = error(
                416,
                "Range Not Satisfiable",
                "BLOB_UPLOAD_INVALID",
                &format!("the blob has {size} bytes"),
            );
            answer
                .headers
                .push(("Content-Range", format!("bytes */{size}")));
            return answer;
        }
    };
    let body = if request.head {
        headers.push(("Content-Length", (end - start).to_string()));
        drop(file);
        Body::Empty
    } else {
        Body::File {
            file,
            start,
            len: end - start,
        }
    };
    Answer {
        status,
        reason,
        headers,
        body,
    }
}

fn error(status: u16, reason: &'static str, code: &str, message: &str) -> Answer {
    let body = format!(
        "{{\"errors\":[{{\"code\":\"{code}\",\"message\":{}}}]}}",
        json_string(message)
    );
    Answer {
        status,
        reason,
        headers: vec![("Content-Type", "application/json".to_owned())],
        body: Body::Json(body),
    }
}

fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Writes `answer`; for a `HEAD` (`head_only`) the headers only, `Content-Length` included.
async fn write_answer(
    stream: &mut TcpStream,
    answer: Answer,
    close: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, answer.reason);
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &answer.body {
        Body::Empty => {}
        Body::Json(json) => head.push_str(&format!("Content-Length: {}\r\n", json.len())),
        Body::File { len, .. } => head.push_str(&format!("Content-Length: {len}\r\n")),
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    match answer.body {
        Body::Empty => stream.write_all(head.as_bytes()).await,
        Body::Json(_) if head_only => stream.write_all(head.as_bytes()).await,
        Body::Json(json) => {
            head.push_str(&json);
            stream.write_all(head.as_bytes()).await
        }
        Body::File { file, start, len } => {
            stream.write_all(head.as_bytes()).await?;
            send_file(stream, &file, start, len).await?;
            metrics::counter!("wharf_blob_http_bytes_total").increment(len);
            Ok(())
        }
    }
}

/// Sends `len` bytes of `file` from `start` with `sendfile(2)`: page cache to socket, no copy
/// through this process.
async fn send_file(stream: &TcpStream, file: &File, start: u64, len: u64) -> io::Result<()> {
    let (socket, source) = (stream.as_raw_fd(), file.as_raw_fd());
    let mut offset = libc::off_t::try_from(start).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut remaining = len;
    while remaining > 0 {
        stream.writable().await?;
        let count = usize::try_from(remaining.min(1 << 30)).unwrap_or(1 << 30);
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call (the stream and
            // the file are borrowed), and `offset` is a valid, exclusively borrowed off_t.
            let sent = unsafe { libc::sendfile(socket, source, &mut offset, count) };
            if sent < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(sent as u64)
            }
        });
        match sent {
            // The file is shorter than it was when opened: never pad, drop the connection.
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(sent) => remaining -= sent.min(remaining),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_and_bad_ones_refused() {
        let Head::Request(request) =
            parse_head(b"GET /blobs/sha256:ab?x=1 HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n")
        else {
            panic!("a request");
        };
        assert!(request.method_ok && !request.head && !request.close && !request.has_body);
        assert_eq!(request.target, "/blobs/sha256:ab?x=1");
        assert_eq!(request.range.as_deref(), Some("bytes=0-1"));
        let Head::Request(request) = parse_head(b"HEAD / HTTP/1.0\r\nContent-Length: 3\r\n\r\n")
        else {
            panic!("a request");
        };
        assert!(request.head && request.close && request.has_body);
        assert!(matches!(
            parse_head(b"GET\x01 / HTTP/1.1\r\n\r\n"),
            Head::Refuse(Answer { status: 400, .. })
        ));
    }

    #[test]
    fn error_messages_are_json_strings() {
        assert_eq!(json_string("a \"b\"\\\n"), "\"a \\\"b\\\"\\\\\\u000a\"");
    }
}
