//! The data: every chunk loaded in parallel with `COPY ... FROM STDIN` (each in its own
//! transaction, its SHA-256 checked as it streams), then the large objects' data.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::chunk::ChunkReader;
use crate::format::manifest::{Chunk, Manifest, Table};
use crate::progress::Progress;
use crate::source::conn::ConnParams;
use crate::source::copy::copy_in_sql;
use crate::storage::Store;

use super::failure::Ledger;
use super::options::{RestoreOptions, RestoreSummary};

/// A unit of loading work.
#[derive(Clone)]
enum Load {
    Rows { table: usize, chunk: Chunk },
    LargeObjects { chunk: Chunk },
}

impl Load {
    fn chunk(&self) -> &Chunk {
        match self {
            Load::Rows { chunk, .. } | Load::LargeObjects { chunk } => chunk,
        }
    }
}

pub(super) async fn load_data(
    conn: &ConnParams,
    opts: &RestoreOptions,
    manifest: &Manifest,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
    summary: &mut RestoreSummary,
    ledger: &Ledger,
) -> Result<()> {
    let mut loads: Vec<Load> = Vec::new();
    for (i, t) in manifest.tables.iter().enumerate() {
        loads.extend(
            t.chunks()
                .cloned()
                .map(|chunk| Load::Rows { table: i, chunk }),
        );
    }
    loads.extend(
        manifest
            .large_objects
            .chunks
            .iter()
            .cloned()
            .map(|chunk| Load::LargeObjects { chunk }),
    );
    // Largest first, as in backup: the longest loads must not start last.
    loads.sort_by_key(|l| std::cmp::Reverse(l.chunk().raw_bytes));
    summary.chunks = loads.len() as u64;
    summary.raw_bytes = loads.iter().map(|l| l.chunk().raw_bytes).sum();
    summary.rows = manifest.tables.iter().map(|t| t.rows()).sum();
    progress.start("restore", summary.raw_bytes);

    let workers = opts.jobs.max(1).min(loads.len().max(1));
    let queue = Arc::new(Mutex::new(VecDeque::from(loads)));
    let tables = Arc::new(manifest.tables.clone());
    // Chunks committed per table: what a failed restore reports having loaded.
    let committed = Arc::new(Mutex::new(vec![0usize; manifest.tables.len()]));
    let mut set = JoinSet::new();
    for worker in 0..workers {
        let conn = conn.clone();
        let target = opts.target.clone();
        let root = opts.dir.clone();
        let queue = queue.clone();
        let tables = tables.clone();
        let progress = progress.clone();
        let committed = committed.clone();
        // --data-only fills tables that were there before: never truncated.
        let fresh = !opts.filter.data_only;
        set.spawn(async move {
            let session = conn.connect(&target).await?;
            // A crash mid-restore means restoring again anyway, so loaders need not wait for
            // each commit's WAL flush; the final ANALYZE's commit flushes everything before.
            session
                .client
                .batch_execute("SET synchronous_commit = off")
                .await
                .map_err(|e| Error::query("setting up a loader session", e))?;
            loop {
                let next = queue.lock().unwrap().pop_front();
                let Some(load) = next else { break };
                match &load {
                    Load::Rows { table, chunk } => {
                        let t = &tables[*table];
                        progress.worker_busy(worker, &t.display_name());
                        load_rows(&session.client, &root, t, chunk, fresh, &progress).await?;
                        committed.lock().unwrap()[*table] += 1;
                    }
                    Load::LargeObjects { chunk } => {
                        progress.worker_busy(worker, "large objects");
                        load_large_objects(&session.client, &root, chunk, &progress).await?;
                    }
                }
                progress.worker_idle(worker);
            }
            Ok::<(), Error>(())
        });
    }
    let mut failure = None;
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => { failure = Some(e); break; }
                Some(Err(join)) => { failure = Some(Error::Refused(format!("restore worker crashed: {join}"))); break; }
            },
            _ = cancel.cancelled() => { failure = Some(Error::Interrupted); break; }
        }
    }
    set.abort_all();
    while set.join_next().await.is_some() {}
    progress.finish();
    let committed = committed.lock().unwrap();
    ledger.tables(
        manifest
            .tables
            .iter()
            .zip(committed.iter())
            .map(|(t, done)| (t.chunks().count(), *done))
            .collect(),
    );
    failure.map_or(Ok(()), Err)
}

/// Reads a chunk on a plain thread and hands its payload over in pieces; the last message
/// says whether size and checksum matched.
fn spawn_chunk_reader(root: Store, chunk: Chunk) -> mpsc::Receiver<Result<Option<Bytes>>> {
    spawn_reader(root, chunk, 8, |reader| {
        // Below the allocator's mmap threshold (see main.rs): these buffers are allocated per
        // read and must be recycled by the heap, not mapped each time.
        let mut buf = vec![0u8; 64 * 1024];
        let n = reader.read(&mut buf)?;
        buf.truncate(n);
        Ok((n > 0).then(|| Bytes::from(buf)))
    })
}

/// Reads items out of a chunk on a plain thread and hands them over; the last message says
/// whether size and checksum matched (`Ok(None)`) or what went wrong, naming the file. A
/// checksum mismatch is reported in preference to the decompression or framing error it
/// caused: it says what really happened.
fn spawn_reader<T: Send + 'static>(
    root: Store,
    chunk: Chunk,
    depth: usize,
    mut next: impl FnMut(&mut ChunkReader) -> std::io::Result<Option<T>> + Send + 'static,
) -> mpsc::Receiver<Result<Option<T>>> {
    let (tx, rx) = mpsc::channel(depth);
    tokio::task::spawn_blocking(move || {
        let mut run = || -> Result<()> {
            let mut reader = ChunkReader::open(&root, &chunk)?;
            loop {
                let item = match next(&mut reader) {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(e) => {
                        let path = root.describe(&chunk.file);
                        return Err(reader
                            .finish()
                            .err()
                            .unwrap_or_else(|| Error::corrupt(path, e.to_string())));
                    }
                };
                if tx.blocking_send(Ok(Some(item))).is_err() {
                    return Ok(());
                }
            }
            reader.finish()
        };
        let last = run().map(|()| None);
        let _ = tx.blocking_send(last);
    });
    rx
}

async fn load_rows(
    client: &Client,
    root: &Store,
    table: &Table,
    chunk: &Chunk,
    fresh: bool,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    let what = || format!("loading into table {}", table.display_name());
    // A table loaded by a single chunk was created empty by pre-data in this restore: truncating
    // it in the loading transaction lets COPY write frozen, all-visible rows (no hint-bit
    // rewrites or freezing vacuum later; no WAL at all with wal_level=minimal), as pg_restore
    // does. Tables of several chunks load concurrently and cannot be truncated.
    // An extension's configuration table already holds the extension's own rows: never
    // truncated, the backup's rows are appended (as pg_restore does).
    let single = fresh && table.chunks().count() == 1 && table.extension_config.is_none();
    let begin = if single {
        format!("BEGIN; TRUNCATE ONLY {}", table.qualified())
    } else {
        "BEGIN".to_string()
    };
    client
        .batch_execute(&begin)
        .await
        .map_err(|e| Error::query(what(), e))?;
    let mut sql = copy_in_sql(table);
    if single {
        sql = format!("{}, FREEZE)", sql.trim_end_matches(')'));
    }
    // Boxed so that dropping it really drops the sink, which aborts the COPY.
    let mut sink = Box::pin(
        client
            .copy_in::<_, Bytes>(sql.as_str())
            .await
            .map_err(|e| Error::query(what(), e))?,
    );
    let mut rx = spawn_chunk_reader(root.clone(), chunk.clone());
    let mut outcome: Result<()> = Err(Error::Refused(format!("{}: reader stopped", what())));
    while let Some(msg) = rx.recv().await {
        match msg {
            Ok(Some(bytes)) => {
                let n = bytes.len() as u64;
                if let Err(e) = sink.send(bytes).await {
                    outcome = Err(Error::query(what(), e));
                    break;
                }
                progress.add_bytes(n);
            }
            Ok(None) => {
                outcome = Ok(());
                break;
            }
            Err(e) => {
                outcome = Err(Error::Refused(format!("{}: {e}", what())));
                break;
            }
        }
    }
    match outcome {
        Ok(()) => {
            let rows = sink
                .as_mut()
                .finish()
                .await
                .map_err(|e| Error::query(what(), e))?;
            if rows != chunk.rows {
                return Err(Error::corrupt(
                    root.describe(&chunk.file),
                    format!(
                        "loaded {rows} rows into {}, the manifest says {}",
                        table.display_name(),
                        chunk.rows
                    ),
                ));
            }
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| Error::query(what(), e))
        }
        Err(e) => {
            // Dropping the sink unfinished aborts the COPY; nothing of this chunk commits.
            drop(sink);
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn load_large_objects(
    client: &Client,
    root: &Store,
    chunk: &Chunk,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    let path = root.describe(&chunk.file);
    let what = || format!("loading large objects from {}", chunk.file);
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| Error::query(what(), e))?;
    let put = client
        .prepare("SELECT pg_catalog.lo_put($1::oid, $2::bigint, $3::bytea)")
        .await
        .map_err(|e| Error::query(what(), e))?;
    let mut rx = spawn_reader(root.clone(), chunk.clone(), 4, |reader| {
        crate::format::largeobj::read_record(reader)
    });
    let mut records = 0u64;
    loop {
        match rx.recv().await {
            Some(Ok(Some(rec))) => {
                let data: &[u8] = &rec.data;
                client
                    .query_one(&put, &[&rec.oid, &(rec.offset as i64), &data])
                    .await
                    .map_err(|e| {
                        Error::query(format!("{}: large object {}", what(), rec.oid), e)
                    })?;
                records += 1;
                progress.add_bytes(rec.data.len() as u64 + 16);
            }
            Some(Ok(None)) => break,
            Some(Err(e)) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
            None => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(Error::corrupt(&path, "reader stopped early"));
            }
        }
    }
    if records != chunk.rows {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(Error::corrupt(
            &path,
            format!("holds {records} records, the manifest says {}", chunk.rows),
        ));
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| Error::query(what(), e))
}
