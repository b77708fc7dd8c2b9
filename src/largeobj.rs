//! Large objects. Their metadata (owner, ACL, comment) travels in the pre-data schema archive
//! that pg_dump writes; their data is dumped here as chunk files of records
//! `oid: u32 | offset: u64 | length: u32 | bytes` (big-endian), each at most [`PIECE`] bytes,
//! so a chunk is self-contained and a multi-GB object never sits in memory.

use std::io::Read;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::Client;

use crate::copyfmt::Piece;
use crate::error::{Error, Result};
use crate::manifest::Chunk;
use crate::progress::Progress;
use crate::sink::{spawn_sink, SinkConfig, BATCH_BYTES};

/// Bytes read per `lo_get` call and stored per record.
pub const PIECE: usize = 1024 * 1024;
const RECORD_HEADER: usize = 16;

/// Dumps every large object's data, in the caller's snapshot.
pub async fn dump(
    client: &Client,
    sink: SinkConfig,
    chunk_size: u64,
    progress: &Arc<dyn Progress>,
) -> Result<Vec<Chunk>> {
    let oids: Vec<u32> = client
        .query("SELECT oid FROM pg_largeobject_metadata ORDER BY oid", &[])
        .await
        .map_err(|e| Error::query("listing large objects", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let get = client
        .prepare("SELECT lo_get($1::oid, $2::bigint, $3::int)")
        .await
        .map_err(|e| Error::query("reading large objects", e))?;
    let root = sink.root.clone();
    let (tx, handle) = spawn_sink(sink);
    let result = async {
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        let mut chunk_raw = 0u64;
        let mut chunk_records = 0u64;
        for oid in oids {
            let mut offset: i64 = 0;
            loop {
                let row = client
                    .query_one(&get, &[&oid, &offset, &(PIECE as i32)])
                    .await
                    .map_err(|e| Error::query(format!("reading large object {oid}"), e))?;
                let data: &[u8] = row.get(0);
                let len = data.len();
                // Zero-length objects need no record: the metadata creates them.
                if len > 0 {
                    let mut rec = BytesMut::with_capacity(RECORD_HEADER + len);
                    rec.put_u32(oid);
                    rec.put_u64(offset as u64);
                    rec.put_u32(len as u32);
                    rec.put_slice(data);
                    chunk_raw += rec.len() as u64;
                    batch_bytes += rec.len();
                    chunk_records += 1;
                    batch.push(Piece::Data(rec.freeze()));
                    if chunk_raw >= chunk_size {
                        batch.push(Piece::EndChunk {
                            rows: chunk_records,
                            raw_bytes: chunk_raw,
                        });
                        chunk_raw = 0;
                        chunk_records = 0;
                    }
                    if batch_bytes >= BATCH_BYTES {
                        progress.add_bytes(batch_bytes as u64);
                        batch_bytes = 0;
                        if tx.send(std::mem::take(&mut batch)).await.is_err() {
                            return Ok(false);
                        }
                    }
                }
                if len < PIECE {
                    break;
                }
                offset += len as i64;
            }
        }
        if chunk_records > 0 || batch.is_empty() {
            batch.push(Piece::EndChunk {
                rows: chunk_records,
                raw_bytes: chunk_raw,
            });
        }
        progress.add_bytes(batch_bytes as u64);
        Ok::<bool, Error>(tx.send(batch).await.is_ok())
    }
    .await;
    drop(tx);
    crate::sink::join_unit(result, handle, &root, "large objects").await
}

/// One record of a large-object chunk.
pub struct Record {
    pub oid: u32,
    pub offset: u64,
    pub data: Bytes,
}

/// Reads records from a decompressed chunk; `Ok(None)` at a clean end.
pub fn read_record<R: Read>(r: &mut R) -> std::io::Result<Option<Record>> {
    let mut header = [0u8; RECORD_HEADER];
    let mut got = 0;
    while got < RECORD_HEADER {
        let n = r.read(&mut header[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "large-object chunk ends inside a record header",
            ));
        }
        got += n;
    }
    let oid = u32::from_be_bytes(header[0..4].try_into().unwrap());
    let offset = u64::from_be_bytes(header[4..12].try_into().unwrap());
    let len = u32::from_be_bytes(header[12..16].try_into().unwrap()) as usize;
    if len > PIECE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("large-object record of {len} bytes exceeds {PIECE}"),
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some(Record {
        oid,
        offset,
        data: Bytes::from(data),
    }))
}

/// Walks a decompressed chunk, returning its record count.
pub fn walk<R: Read>(mut r: R) -> std::io::Result<u64> {
    let mut n = 0;
    while read_record(&mut r)?.is_some() {
        n += 1;
    }
    Ok(n)
}
