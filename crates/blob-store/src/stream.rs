//! Moving blob bytes between streams and files with bounded memory and no extra copies.
//!
//! Reads: each chunk is read by one `pread` straight into the buffer that becomes the stream's
//! `Bytes`, on the blocking pool, one chunk ahead of the consumer. Writes: the network side keeps
//! receiving while a blocking task writes and hashes the previous batches, through a channel of
//! [`PIPELINE_BATCHES`] batches; that bounds an upload's memory to a few MiB.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cluster_api::{BlobError, ByteStream};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::staging::BatchWriter;

/// Chunk size of read streams: one blocking-pool round trip and one gRPC message per chunk.
const READ_CHUNK_BYTES: usize = crate::MAX_READ_CHUNK_BYTES;

/// Appended data is written in batches of about this size, so a stream of tiny chunks does not
/// cost one blocking-pool round trip per chunk.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Batches queued between the network and the writer of one upload.
const PIPELINE_BATCHES: usize = 2;

/// Chunks read ahead of the consumer: the read runs on the blocking pool while the consumer sends
/// the current chunk on. Two ahead slowed `serve`'s in-process pulls (a median of 1.6 against
/// 2.9 GB/s over six runs each); the gRPC server adds its own chunk of read-ahead instead.
const READ_AHEAD: usize = 1;

/// A stream of bytes `range` of `file`, read [`READ_AHEAD`] chunks ahead.
pub(crate) fn read_file(file: File, path: PathBuf, range: Range<u64>) -> ByteStream {
    let mut reader = ChunkReader {
        file: Arc::new(file),
        path,
        position: range.start,
        end: range.end,
        pending: VecDeque::with_capacity(READ_AHEAD),
    };
    reader.fill();
    let stream = futures::stream::unfold(reader, |mut reader| async move {
        let pending = reader.pending.pop_front()?;
        let chunk = match pending.await {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(error)) => {
                reader.stop();
                let error = BlobError::Io(format!("read blob {}: {error}", reader.path.display()));
                return Some((Err(error), reader));
            }
            Err(error) => {
                reader.stop();
                let error = BlobError::Io(format!("blocking file task failed: {error}"));
                return Some((Err(error), reader));
            }
        };
        reader.fill();
        Some((Ok(chunk), reader))
    });
    Box::pin(stream)
}

struct ChunkReader {
    file: Arc<File>,
    path: PathBuf,
    /// Where the next read to start begins.
    position: u64,
    end: u64,
    /// Reads started, in order.
    pending: VecDeque<JoinHandle<io::Result<Bytes>>>,
}

impl ChunkReader {
    /// Starts reads until [`READ_AHEAD`] are in flight or the range is covered.
    fn fill(&mut self) {
        while self.pending.len() < READ_AHEAD && self.position < self.end {
            let len = (self.end - self.position).min(READ_CHUNK_BYTES as u64) as usize;
            let (file, position) = (self.file.clone(), self.position);
            self.pending.push_back(tokio::task::spawn_blocking(move || {
                read_chunk(&file, position, len)
            }));
            self.position += len as u64;
        }
    }

    /// Ends the stream after an error: nothing more is read or yielded.
    fn stop(&mut self) {
        self.pending.clear();
        self.position = self.end;
    }
}

/// Reads `len` bytes at `position` into a fresh buffer, without first zeroing it (a measurable
/// cost at a few GB/s: the profile in benches/README.md).
fn read_chunk(file: &File, position: u64, len: usize) -> io::Result<Bytes> {
    let mut buffer = BytesMut::with_capacity(len);
    while buffer.len() < len {
        let filled = buffer.len();
        let spare = buffer.spare_capacity_mut();
        let want = spare.len().min(len - filled);
        let at = position + filled as u64;
        // SAFETY: pread writes at most `want` bytes into the spare capacity it is given, which
        // is allocated and owned by `buffer`; only the bytes it reports are marked initialised.
        let read = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                want,
                at as libc::off_t,
            )
        };
        match read {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            read if read > 0 => {
                // SAFETY: pread initialised exactly `read` bytes past the current length.
                unsafe { buffer.set_len(filled + read as usize) };
            }
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(buffer.freeze())
}

/// Copies `data` into `writer` (a staging or a replica file) until the stream ends (returning the
/// writer), fails, or the caller goes away. On error the file may hold part of the data: the
/// caller truncates or discards it (the writer has stopped by then).
pub(crate) async fn copy_stream<W: BatchWriter>(
    writer: W,
    data: &mut ByteStream,
    caller_gone: &mut oneshot::Receiver<()>,
) -> Result<W, BlobError> {
    let (batches, mut incoming) = mpsc::channel::<Vec<Bytes>>(PIPELINE_BATCHES);
    let writing = tokio::task::spawn_blocking(move || {
        let mut writer = writer;
        while let Some(batch) = incoming.blocking_recv() {
            writer.write_batch(&batch)?;
        }
        Ok::<W, BlobError>(writer)
    });
    let received = loop {
        let (batch, end) = next_batch(data, caller_gone).await;
        // A closed channel means the writer failed; its error is returned below.
        if !batch.is_empty() && batches.send(batch).await.is_err() {
            break Ok(());
        }
        if let Some(end) = end {
            break end;
        }
    };
    drop(batches);
    let written = writing
        .await
        .map_err(|error| BlobError::Io(format!("blocking file task failed: {error}")))?;
    received.and(written)
}

/// Waits for the next chunk, then takes every further chunk that is ready without waiting, up to
/// about [`WRITE_BATCH_BYTES`]. Returns the batch and, when the stream is over, how it ended.
async fn next_batch(
    data: &mut ByteStream,
    caller_gone: &mut oneshot::Receiver<()>,
) -> (Vec<Bytes>, Option<Result<(), BlobError>>) {
    let first = tokio::select! {
        // Checked first so an abandoned append stops before writing anything more.
        biased;
        _ = &mut *caller_gone => {
            return (Vec::new(), Some(Err(BlobError::Unavailable("append abandoned by its caller".into()))))
        }
        item = data.next() => item,
    };
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    let mut item = first;
    loop {
        match item {
            None => return (batch, Some(Ok(()))),
            Some(Err(error)) => return (batch, Some(Err(error))),
            Some(Ok(chunk)) => {
                batch_bytes += chunk.len();
                batch.push(chunk);
            }
        }
        if batch_bytes >= WRITE_BATCH_BYTES {
            return (batch, None);
        }
        match data.next().now_or_never() {
            Some(next) => item = next,
            None => return (batch, None),
        }
    }
}
