//! The snapshot format: every row of every state table, as stored, plus `last_applied` and the
//! membership, streamed to and from a file so that no snapshot is ever held in memory whole
//! (format 2 built the body as one `Vec` and stored it as one RocksDB value: a few times the state's
//! size on the heap at every snapshot, which glibc then kept).
//!
//! The rows are copied as raw bytes, so a table added to [`Table::STATE`] travels in snapshots
//! with no change here. A file ends with a row count and the SHA-256 of everything before it, so a
//! truncated or damaged file is refused before any of it is installed.
//!
//! ```text
//! "WHARFSNAP3\n"
//! u32 BE header length, header (json: last_applied, membership)
//! repeated: u8 table (index in Table::STATE), u32 BE key length, key, u32 BE value length, value
//! u8 0xFF, u64 BE number of rows, SHA-256 of every byte before it (32 bytes)
//! ```

use std::io::{self, BufReader, BufWriter, Read, Write};

use openraft::LogId;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::db::{decode, encode, Table};
use crate::error::StoreError;
use crate::state::Membership;

const MAGIC: &[u8] = b"WHARFSNAP3\n";
/// The record type that ends the rows.
const END: u8 = 0xFF;
/// Buffer of the file reader and writer.
const IO_BUFFER: usize = 256 << 10;

/// What a snapshot is of: the log position its state includes, and the membership there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub last_applied: Option<LogId<u64>>,
    pub membership: Membership,
}

/// Writes a snapshot row by row, hashing as it goes.
pub(crate) struct SnapshotWriter<W: Write> {
    out: HashingWriter<BufWriter<W>>,
    rows: u64,
}

impl<W: Write> SnapshotWriter<W> {
    pub(crate) fn start(out: W, header: &Header) -> Result<SnapshotWriter<W>, StoreError> {
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(IO_BUFFER, out),
            hasher: Sha256::new(),
            written: 0,
        };
        let header = encode("snapshot header", header)?;
        out.write_all(MAGIC).map_err(io_error)?;
        write_field(&mut out, &header)?;
        Ok(SnapshotWriter { out, rows: 0 })
    }

    pub(crate) fn row(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let index = Table::STATE
            .iter()
            .position(|state_table| *state_table == table)
            .ok_or_else(|| {
                StoreError::corrupt("snapshot", format!("{table:?} is no state table"))
            })?;
        self.out.write_all(&[index as u8]).map_err(io_error)?;
        write_field(&mut self.out, key)?;
        write_field(&mut self.out, value)?;
        self.rows += 1;
        Ok(())
    }

    /// Writes the end record and returns the underlying writer, flushed, and the bytes written.
    pub(crate) fn finish(mut self) -> Result<(W, u64), StoreError> {
        self.out.write_all(&[END]).map_err(io_error)?;
        self.out
            .write_all(&self.rows.to_be_bytes())
            .map_err(io_error)?;
        let digest = self.out.hasher.finalize_reset();
        let HashingWriter {
            mut inner, written, ..
        } = self.out;
        inner.write_all(&digest).map_err(io_error)?;
        let inner = inner
            .into_inner()
            .map_err(|error| io_error(error.into_error()))?;
        Ok((inner, written + digest.len() as u64))
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_field(out: &mut impl Write, field: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(field.len()).map_err(|_| {
        StoreError::corrupt("snapshot", format!("a field of {} bytes", field.len()))
    })?;
    out.write_all(&len.to_be_bytes()).map_err(io_error)?;
    out.write_all(field).map_err(io_error)
}

fn io_error(error: io::Error) -> StoreError {
    StoreError::Io {
        what: "snapshot file",
        source: error,
    }
}

/// Reads a snapshot row by row. [`verify`] a file before trusting its rows: the reader checks
/// the structure as it goes but only the end record proves the rows complete.
pub(crate) struct SnapshotReader<R: Read> {
    input: HashingReader<BufReader<R>>,
    header: Header,
    rows: u64,
    ended: bool,
}

/// One row: table, key, value.
pub(crate) type Row = (Table, Vec<u8>, Vec<u8>);

impl<R: Read> SnapshotReader<R> {
    pub(crate) fn open(input: R) -> Result<SnapshotReader<R>, StoreError> {
        let mut input = HashingReader {
            inner: BufReader::with_capacity(IO_BUFFER, input),
            hasher: Sha256::new(),
        };
        let mut magic = [0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .map_err(|_| StoreError::corrupt("snapshot", "not a format 3 snapshot"))?;
        if magic != MAGIC {
            return Err(StoreError::corrupt("snapshot", "not a format 3 snapshot"));
        }
        let header = decode("snapshot header", &read_field(&mut input)?)?;
        Ok(SnapshotReader {
            input,
            header,
            rows: 0,
            ended: false,
        })
    }

    /// The next row, or `None` once the end record was read and found to match.
    pub(crate) fn next_row(&mut self) -> Result<Option<Row>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        let mut kind = [0u8; 1];
        self.input.read_exact(&mut kind).map_err(truncated)?;
        if kind[0] == END {
            self.check_end()?;
            self.ended = true;
            return Ok(None);
        }
        let table = *Table::STATE
            .get(usize::from(kind[0]))
            .ok_or_else(|| StoreError::corrupt("snapshot", format!("unknown table {}", kind[0])))?;
        let key = read_field(&mut self.input)?;
        let value = read_field(&mut self.input)?;
        self.rows += 1;
        Ok(Some((table, key, value)))
    }

    fn check_end(&mut self) -> Result<(), StoreError> {
        let mut count = [0u8; 8];
        self.input.read_exact(&mut count).map_err(truncated)?;
        let expected = self.input.hasher.finalize_reset();
        let mut digest = [0u8; 32];
        self.input
            .inner
            .read_exact(&mut digest)
            .map_err(truncated)?;
        if u64::from_be_bytes(count) != self.rows {
            return Err(StoreError::corrupt(
                "snapshot",
                format!(
                    "{} rows, the end record says {}",
                    self.rows,
                    u64::from_be_bytes(count)
                ),
            ));
        }
        if digest[..] != expected[..] {
            return Err(StoreError::corrupt("snapshot", "checksum mismatch"));
        }
        let mut rest = [0u8; 1];
        match self.input.inner.read(&mut rest) {
            Ok(0) => Ok(()),
            Ok(_) => Err(StoreError::corrupt(
                "snapshot",
                "bytes after the end record",
            )),
            Err(error) => Err(io_error(error)),
        }
    }
}

/// Reads a whole snapshot, checking its structure, row count and checksum; returns its header.
pub(crate) fn verify(input: impl Read) -> Result<Header, StoreError> {
    let mut reader = SnapshotReader::open(input)?;
    while reader.next_row()?.is_some() {}
    Ok(reader.header)
}

struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

fn truncated(error: io::Error) -> StoreError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        StoreError::corrupt("snapshot", "truncated")
    } else {
        io_error(error)
    }
}

/// Most bytes one field may claim: keys and values are far smaller (a manifest is at most
/// 4 MiB), so a larger length is damage, not a reason to allocate.
const MAX_FIELD: usize = 64 << 20;

fn read_field(input: &mut impl Read) -> Result<Vec<u8>, StoreError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(truncated)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FIELD {
        return Err(StoreError::corrupt(
            "snapshot",
            format!("a field claims {len} bytes"),
        ));
    }
    let mut field = vec![0u8; len];
    input.read_exact(&mut field).map_err(truncated)?;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let header = Header::default();
        let mut writer = SnapshotWriter::start(Vec::new(), &header).expect("start");
        writer.row(Table::Tags, b"a\0v1", b"{}").expect("row");
        writer
            .row(Table::ClusterMeta, b"auth", &[0, 255, 1])
            .expect("row");
        writer.row(Table::Fences, b"", b"").expect("row");
        writer.finish().expect("finish").0
    }

    #[test]
    fn rows_round_trip() {
        let bytes = sample();
        let mut reader = SnapshotReader::open(&bytes[..]).expect("open");
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row().expect("row") {
            rows.push(row);
        }
        assert_eq!(
            rows,
            vec![
                (Table::Tags, b"a\0v1".to_vec(), b"{}".to_vec()),
                (Table::ClusterMeta, b"auth".to_vec(), vec![0, 255, 1]),
                (Table::Fences, Vec::new(), Vec::new()),
            ]
        );
        assert_eq!(verify(&bytes[..]).expect("verifies"), Header::default());
    }

    #[test]
    fn damage_is_refused() {
        let bytes = sample();
        // Truncated anywhere, at a row boundary too (the end record is missing).
        for cut in [bytes.len() - 1, bytes.len() - 33, 20, MAGIC.len()] {
            assert!(verify(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
        // One flipped bit in a value.
        let mut flipped = bytes.clone();
        let position = bytes.len() - 45;
        flipped[position] ^= 1;
        assert!(verify(&flipped[..]).is_err());
        // Trailing bytes, another format, an unknown table.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(verify(&longer[..]).is_err());
        assert!(verify(&b"WHARFSNAP2\n{}"[..]).is_err());
        let mut unknown = bytes[..bytes.len() - 41].to_vec();
        unknown.extend_from_slice(&[200, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(verify(&unknown[..]).is_err());
    }
}
