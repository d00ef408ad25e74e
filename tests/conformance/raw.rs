//! Requests an HTTP client library will not send: paths it would normalise (`..`), bodies shorter
//! or longer than their `Content-Length`, chunked bodies cut off. Written on a raw `TcpStream`,
//! and the first response read back by hand.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::Reply;

/// How long a raw exchange may take before the test fails: a deadline, not a synchronisation.
const DEADLINE: Duration = Duration::from_secs(30);

/// Writes `head` (request line and headers, without the blank line) and `body` to a new
/// connection, then closes the write half when `close_write` is set, and reads the first response.
/// `None` when the server closed the connection without answering.
pub async fn exchange(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
    close_write: bool,
) -> Option<Reply> {
    let context = head.lines().next().unwrap_or_default().to_owned();
    let run = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connects to the registry");
        let mut request = format!("{head}\r\nHost: {addr}\r\n\r\n").into_bytes();
        request.extend_from_slice(body);
        // The server may answer and close before taking everything we send (a refused oversize
        // body): that is an answer, not a failure of the test.
        let _ = stream.write_all(&request).await;
        if close_write {
            let _ = stream.shutdown().await;
        }
        read_response(&mut stream, &context).await
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("{context}: no response within {DEADLINE:?}"))
}

async fn read_response(stream: &mut TcpStream, context: &str) -> Option<Reply> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(position) = find(&buffer, b"\r\n\r\n") {
            break position;
        }
        if !read_more(stream, &mut buffer).await {
            assert!(
                buffer.is_empty(),
                "{context}: connection closed in the middle of a response head: {:?}",
                String::from_utf8_lossy(&buffer)
            );
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("{context}: bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{context}: bad header line {line:?}"));
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name"),
            HeaderValue::from_str(value.trim()).expect("a header value"),
        );
    }
    let mut rest = buffer.split_off(head_end + 4);
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let length = headers
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let body = if chunked {
        read_chunked(stream, rest, context).await
    } else if let Some(length) = length {
        while rest.len() < length && read_more(stream, &mut rest).await {}
        assert!(rest.len() >= length, "{context}: response body cut short");
        rest.truncate(length);
        rest
    } else {
        while read_more(stream, &mut rest).await {}
        rest
    };
    Some(Reply {
        context: context.to_owned(),
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// Decodes a chunked body, reading as needed.
async fn read_chunked(stream: &mut TcpStream, mut pending: Vec<u8>, context: &str) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(position) = find(&pending, b"\r\n") {
                break position;
            }
            assert!(
                read_more(stream, &mut pending).await,
                "{context}: chunked response cut short"
            );
        };
        let size_text = String::from_utf8_lossy(&pending[..line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("{context}: bad chunk size {size_text:?}"));
        pending.drain(..line_end + 2);
        if size == 0 {
            return body;
        }
        while pending.len() < size + 2 {
            assert!(
                read_more(stream, &mut pending).await,
                "{context}: chunk cut short"
            );
        }
        body.extend_from_slice(&pending[..size]);
        pending.drain(..size + 2);
    }
}

/// Reads what is available into `buffer`; false at end of stream (or a reset, which for these
/// tests means the same: the server is done with the connection).
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(read) => {
            buffer.extend_from_slice(&chunk[..read]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
