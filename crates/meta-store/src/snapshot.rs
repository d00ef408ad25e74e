//! The snapshot format: every row of every state table, as stored, plus `last_applied` and the
//! membership. Building reads a RocksDB snapshot (a consistent point in time); installing
//! replaces every state table in one write.
//!
//! The rows are copied as raw bytes, so a table added to [`Table::STATE`] travels in snapshots
//! with no change here (format 1 listed typed fields per table, and a table it did not name, such
//! as the access-control state in `cluster`, was silently left out).
//!
//! ```text
//! "WHARFSNAP2\n"
//! u32 BE header length, header (json: last_applied, membership)
//! repeated: u8 table (index in Table::STATE), u32 BE key length, key, u32 BE value length, value
//! ```

use openraft::LogId;
use serde::{Deserialize, Serialize};

use crate::db::{decode, encode, Table};
use crate::error::StoreError;
use crate::kv::{KvRead, Txn};
use crate::state::{self, Membership};

const MAGIC: &[u8] = b"WHARFSNAP2\n";

/// The whole registry state at `last_applied`.
#[derive(Debug, Default)]
pub(crate) struct SnapshotBody {
    pub last_applied: Option<LogId<u64>>,
    pub membership: Membership,
    /// (table, key, value), table by table in key order.
    pub rows: Vec<(Table, Vec<u8>, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    last_applied: Option<LogId<u64>>,
    membership: Membership,
}

/// Reads the whole state from `kv`, which should be a point-in-time view.
pub(crate) fn dump(kv: &impl KvRead) -> Result<SnapshotBody, StoreError> {
    let mut body = SnapshotBody {
        last_applied: state::last_applied(kv)?,
        membership: state::membership(kv)?,
        rows: Vec::new(),
    };
    for table in Table::STATE {
        kv.scan(table, b"", None, &mut |key, value| {
            body.rows.push((table, key.to_vec(), value.to_vec()));
            Ok(true)
        })?;
    }
    Ok(body)
}

pub(crate) fn encode_body(body: &SnapshotBody) -> Result<Vec<u8>, StoreError> {
    let header = encode(
        "snapshot header",
        &Header {
            last_applied: body.last_applied,
            membership: body.membership.clone(),
        },
    )?;
    let rows: usize = body
        .rows
        .iter()
        .map(|(_, key, value)| 9 + key.len() + value.len())
        .sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + rows);
    out.extend_from_slice(MAGIC);
    put_len(&mut out, header.len())?;
    out.extend_from_slice(&header);
    for (table, key, value) in &body.rows {
        let index = Table::STATE
            .iter()
            .position(|state_table| state_table == table)
            .ok_or_else(|| {
                StoreError::corrupt("snapshot", format!("{table:?} is no state table"))
            })?;
        out.push(index as u8);
        put_len(&mut out, key.len())?;
        out.extend_from_slice(key);
        put_len(&mut out, value.len())?;
        out.extend_from_slice(value);
    }
    Ok(out)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), StoreError> {
    let len = u32::try_from(len)
        .map_err(|_| StoreError::corrupt("snapshot", format!("a field of {len} bytes")))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads what [`encode_body`] wrote; anything else (another format, a truncated body, an unknown
/// table) is refused as corrupt.
pub(crate) fn decode_body(bytes: &[u8]) -> Result<SnapshotBody, StoreError> {
    let mut rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| StoreError::corrupt("snapshot", "not a format 2 snapshot"))?;
    let header: Header = decode("snapshot header", take_field(&mut rest)?)?;
    let mut body = SnapshotBody {
        last_applied: header.last_applied,
        membership: header.membership,
        rows: Vec::new(),
    };
    while let Some((&index, after)) = rest.split_first() {
        rest = after;
        let table = *Table::STATE
            .get(usize::from(index))
            .ok_or_else(|| StoreError::corrupt("snapshot", format!("unknown table {index}")))?;
        let key = take_field(&mut rest)?.to_vec();
        let value = take_field(&mut rest)?.to_vec();
        body.rows.push((table, key, value));
    }
    Ok(body)
}

fn take_field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], StoreError> {
    let truncated = || StoreError::corrupt("snapshot", "truncated");
    let (len, after) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
    let len = u32::from_be_bytes(*len) as usize;
    if after.len() < len {
        return Err(truncated());
    }
    let (field, after) = after.split_at(len);
    *rest = after;
    Ok(field)
}

/// Stages, in `txn`, the replacement of every state table by `body`'s rows.
pub(crate) fn restore(txn: &mut Txn<'_>, body: SnapshotBody) -> Result<(), StoreError> {
    for table in Table::STATE {
        let mut keys = Vec::new();
        txn.scan(table, b"", None, &mut |key, _| {
            keys.push(key.to_vec());
            Ok(true)
        })?;
        for key in keys {
            txn.delete(table, key);
        }
    }
    for (table, key, value) in body.rows {
        txn.put(table, key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_round_trips_and_damage_is_refused() {
        let body = SnapshotBody {
            last_applied: None,
            membership: Membership::default(),
            rows: vec![
                (Table::Tags, b"a\0v1".to_vec(), b"{}".to_vec()),
                (Table::ClusterMeta, b"auth".to_vec(), vec![0, 255, 1]),
                (Table::Fences, Vec::new(), Vec::new()),
            ],
        };
        let bytes = encode_body(&body).expect("encodes");
        let back = decode_body(&bytes).expect("decodes");
        assert_eq!(back.rows, body.rows);
        assert!(decode_body(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_body(b"{\"format\":1}").is_err());
        let mut unknown = bytes.clone();
        unknown.extend_from_slice(&[200, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(decode_body(&unknown).is_err());
    }
}
