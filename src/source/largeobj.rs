//! Large objects. Their data is dumped here as chunk files of records
//! `oid: u32 | offset: u64 | length: u32 | bytes` ([`crate::format::largeobj`]), each at most
//! [`PIECE`] bytes, so a chunk is self-contained and a multi-GB object never sits in memory.
//!
//! Their metadata (existence, owner, ACL, comment) is dumped here too, as SQL in
//! [`METADATA_FILE`], and not left to the schema archive: pg_dump up to 16 puts it in the
//! pre-data section, pg_dump 17 and newer in the data section (which the native engine does
//! not ask pg_dump for), and pg_restore 17 and newer skip it when reading an older archive's
//! pre-data. The script is idempotent, so it also applies after a pre-data that created them.

use std::io::BufRead;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::format::chunk::{ChunkReader, ChunkWriter};
use crate::format::compress::Codec;
use crate::format::copyfmt::Piece;
use crate::format::largeobj::{PIECE, RECORD_HEADER};
use crate::format::manifest::Chunk;
use crate::progress::Progress;
use crate::source::sink::{spawn_sink, SinkConfig, BATCH_BYTES};

/// Where the metadata script is stored, relative to the backup.
pub const METADATA_FILE: &str = "large_objects/metadata.sql";

/// One row per large object: the statements that create it if missing and give it its owner,
/// ACL (grants as aclexplode lists them, after revoking the defaults) and comment.
const METADATA_SQL: &str = "
SELECT format('SELECT pg_catalog.lo_create(%s) WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_largeobject_metadata WHERE oid = %s);', m.oid, m.oid)
    || format(E'\nALTER LARGE OBJECT %s OWNER TO %I;', m.oid, pg_get_userbyid(m.lomowner))
    || CASE WHEN m.lomacl IS NULL THEN '' ELSE
         format(E'\nREVOKE ALL ON LARGE OBJECT %s FROM PUBLIC;\nREVOKE ALL ON LARGE OBJECT %s FROM %I;',
                m.oid, m.oid, pg_get_userbyid(m.lomowner))
         -- Also from everyone the ACL names: when a pre-data already created the object with
         -- its ACL, the grants below must not be appended to it out of order.
         || coalesce((SELECT string_agg(DISTINCT format(E'\nREVOKE ALL ON LARGE OBJECT %s FROM %I;', m.oid, pg_get_userbyid(a.grantee)), '')
                      FROM aclexplode(m.lomacl) a WHERE a.grantee <> 0), '')
         || coalesce((SELECT string_agg(format(E'\nGRANT %s ON LARGE OBJECT %s TO %s%s;',
                                              a.privilege_type, m.oid,
                                              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                                              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END),
                                       '' ORDER BY a.ordinality)
                      FROM aclexplode(m.lomacl) WITH ORDINALITY a), '')
       END
    || coalesce(format(E'\nCOMMENT ON LARGE OBJECT %s IS %L;', m.oid, obj_description(m.oid, 'pg_largeobject')), '')
FROM pg_catalog.pg_largeobject_metadata m ORDER BY m.oid";

/// Statements sent to the server at once when the metadata is restored.
const METADATA_BATCH: usize = 500;

/// Writes the metadata script of every large object (none: no file) in the caller's snapshot.
/// Statements of one object are separated from the next by a NUL byte, which SQL text cannot
/// contain.
pub async fn dump_metadata(client: &Client, root: &crate::storage::Store) -> Result<Option<Chunk>> {
    use futures_util::TryStreamExt;
    let rows = client
        .query_raw(METADATA_SQL, std::iter::empty::<i32>())
        .await
        .map_err(|e| Error::query("reading large-object metadata", e))?;
    futures_util::pin_mut!(rows);
    let mut writer: Option<ChunkWriter> = None;
    let mut count = 0u64;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| Error::query("reading large-object metadata", e))?
    {
        let w = match writer.as_mut() {
            Some(w) => w,
            None => {
                root.create_dir("large_objects")?;
                writer.insert(ChunkWriter::create(root, METADATA_FILE, Codec::None, 0, 0)?)
            }
        };
        let sql: &str = row.get(0);
        w.write(sql.as_bytes())?;
        w.write(b"\0")?;
        count += 1;
    }
    writer.map(|w| w.finish(count)).transpose()
}

/// Runs the metadata script in one transaction, which commits only once the file's checksum
/// and size proved it intact. The script streams: a batch of objects at a time is held, so
/// memory does not grow with the number of large objects.
pub async fn restore_metadata(
    client: &Client,
    root: &crate::storage::Store,
    chunk: &Chunk,
) -> Result<()> {
    let what = || format!("restoring large-object metadata from {}", chunk.file);
    let mut reader = std::io::BufReader::new(ChunkReader::open(root, chunk)?);
    let path = reader.get_ref().path().to_path_buf();
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| Error::query(what(), e))?;
    let outcome: Result<()> = async {
        let mut objects = 0u64;
        let mut batch = Vec::new();
        let mut in_batch = 0;
        loop {
            let n = reader
                .read_until(0, &mut batch)
                .map_err(|e| Error::io("reading", &path, e))?;
            let at_end = n == 0;
            if n > 0 && batch.last() == Some(&0) {
                batch.pop();
                batch.push(b'\n');
                objects += 1;
                in_batch += 1;
            }
            if (at_end || in_batch == METADATA_BATCH) && !batch.is_empty() {
                let sql = String::from_utf8_lossy(&batch).into_owned();
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| Error::query(what(), e))?;
                batch.clear();
                in_batch = 0;
            }
            if at_end {
                break;
            }
        }
        reader.into_inner().finish()?;
        if objects != chunk.rows {
            return Err(Error::corrupt(
                &path,
                format!("holds {objects} objects, the manifest says {}", chunk.rows),
            ));
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| Error::query(what(), e))
}

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
    crate::source::sink::join_unit(result, handle, &root, "large objects").await
}
