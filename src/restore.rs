//! `restore`: rebuilds a database from a manifest.
//!
//! Order: pre-data schema (pg_restore, which also creates large objects with their owners,
//! ACLs and comments), then every chunk in parallel with `COPY ... FROM STDIN` (several chunks
//! of one table may load at once, each in its own transaction), large-object data, post-data
//! (indexes, constraints, triggers, matview refresh; `pg_restore -j`), sequence values, ANALYZE,
//! and with `--create` the database's own settings last, so that a setting such as
//! `default_transaction_read_only = on` cannot break the restore itself.
//!
//! Each chunk's SHA-256 is checked as it streams; a mismatch aborts that chunk's COPY (its
//! transaction rolls back) and stops the restore with the file and table named.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::chunk::ChunkReader;
use crate::conn::ConnParams;
use crate::copy::copy_in_sql;
use crate::error::{Error, Result};
use crate::manifest::{quote_ident, Chunk, DatabaseInfo, Manifest, Status, StrategyKind, Table};
use crate::progress::Progress;
use crate::storage::Store;
use crate::verify::{verify_chunk, Payload};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: crate::storage::Store,
    pub target: String,
    pub create: bool,
    pub clean: bool,
    pub jobs: usize,
    /// Plain/custom backups: where `pg_restore --jobs` gets its decompressed archive
    /// (default: beside the backup directory).
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct RestoreSummary {
    pub tables: u64,
    pub rows: u64,
    pub chunks: u64,
    pub raw_bytes: u64,
    pub warnings: Vec<String>,
    /// Seconds spent in each phase, in order: where a restore's time goes.
    pub phases: Vec<(&'static str, f64)>,
}

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

pub async fn restore_database(
    conn: &ConnParams,
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<RestoreSummary> {
    let manifest = Manifest::load(&opts.dir)?;
    if manifest.status != Status::Complete {
        return Err(Error::Refused(format!(
            "the backup in {} is not complete (status {:?}{}); it cannot be restored",
            opts.dir.display(),
            manifest.status,
            manifest
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )));
    }
    // The maintenance database cannot be dropped and recreated over the connection that would
    // do it (a cluster restore meets "postgres" this way). Like pg_dumpall, restore into it as
    // it stands: empty, or cleaned object by object with --clean; its properties still apply.
    let reuse = opts.create && opts.target == conn.maintenance_db;
    let owned;
    let opts = if reuse {
        owned = RestoreOptions {
            create: false,
            ..opts.clone()
        };
        &owned
    } else {
        opts
    };
    if manifest.strategy.kind != StrategyKind::Native {
        let s = crate::pgstream::restore_stream(conn, opts, &manifest, progress, cancel).await?;
        if reuse {
            crate::dbprops::apply_database_properties(conn, &opts.target, &manifest.database)
                .await?;
        }
        return Ok(s);
    }
    let mut summary = RestoreSummary::default();
    if !manifest.consistent {
        let w =
            "warning: this backup is not consistent: its units were read in different snapshots"
                .to_string();
        progress.note(&w);
        summary.warnings.push(w);
    }
    // The schema archives are small: check them before anything touches the target.
    ChunkReader::check_readable(&opts.dir, manifest.all_chunks())?;
    for s in &manifest.schema {
        verify_chunk(&opts.dir, &s.chunk, Payload::Opaque)?;
    }

    let mut clock = std::time::Instant::now();
    let mut phase = |summary: &mut RestoreSummary, name: &'static str| {
        summary.phases.push((name, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    crate::pgtools::choose_for_restore_into(
        conn,
        manifest.server_version_num,
        crate::child::version_num(&manifest.pg_dump_version),
        progress.as_ref(),
    )
    .await?;
    prepare_target(conn, opts, &manifest.database, progress.as_ref()).await?;
    let target = conn.connect(&opts.target).await?;
    if opts.clean && !opts.create {
        let tables: Vec<(String, String)> = manifest
            .tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        drop_foreign_keys(&target.client, &tables).await?;
    }

    // One transaction: the schema goes in whole or not at all.
    let mut pre = vec![
        "--section=pre-data".into(),
        "--exit-on-error".into(),
        "--single-transaction".into(),
    ];
    if opts.clean && !opts.create {
        pre.push("--clean".into());
        pre.push("--if-exists".into());
    }
    pg_restore(
        conn,
        &opts.dir,
        opts.work_dir.as_deref(),
        &opts.target,
        &manifest,
        "pre-data",
        pre,
    )?;
    phase(&mut summary, "pre-data");

    if let Some(metadata) = &manifest.large_objects.metadata {
        crate::largeobj::restore_metadata(&target.client, &opts.dir, metadata).await?;
    }
    load_data(conn, opts, &manifest, &progress, &cancel, &mut summary).await?;
    phase(&mut summary, "data");

    let post = vec![
        "--section=post-data".into(),
        format!("--jobs={}", opts.jobs.max(1)).into(),
    ];
    pg_restore(
        conn,
        &opts.dir,
        opts.work_dir.as_deref(),
        &opts.target,
        &manifest,
        "post-data",
        post,
    )?;
    phase(&mut summary, "post-data");

    set_sequences(&target.client, &manifest).await?;
    target
        .client
        .batch_execute("ANALYZE")
        .await
        .map_err(|e| Error::query(format!("analyzing database {}", opts.target), e))?;
    phase(&mut summary, "analyze");
    if opts.create || reuse {
        crate::dbprops::apply_database_properties(conn, &opts.target, &manifest.database).await?;
    }
    summary.tables = manifest.tables.len() as u64;
    Ok(summary)
}

/// Creates the target (`--create`) or checks that it may be written to.
pub(crate) async fn prepare_target(
    conn: &ConnParams,
    opts: &RestoreOptions,
    db: &DatabaseInfo,
    progress: &dyn Progress,
) -> Result<()> {
    let maint = conn.connect(&conn.maintenance_db).await?;
    let exists = maint
        .client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&opts.target],
        )
        .await
        .map_err(|e| Error::query("looking up the target database", e))?
        .is_some();
    if opts.create {
        if exists {
            if !opts.clean {
                return Err(Error::Refused(format!(
                    "database {:?} already exists; add --clean to drop and recreate it, or restore into it without --create",
                    opts.target
                )));
            }
            maint
                .client
                .batch_execute(&format!(
                    "DROP DATABASE {} WITH (FORCE)",
                    quote_ident(&opts.target)
                ))
                .await
                .map_err(|e| {
                    Error::query(format!("dropping database {:?} (--clean)", opts.target), e)
                })?;
        }
        let version: i32 = maint
            .client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| Error::query("reading server version", e))?
            .get(0);
        let (create, warning) = crate::dbprops::create_database_sql(&opts.target, db, version);
        if let Some(warning) = warning {
            progress.note(&format!("warning: {warning}"));
        }
        maint
            .client
            .batch_execute(&create)
            .await
            .map_err(|e| Error::query(format!("creating database {:?}", opts.target), e))?;
        return Ok(());
    }
    if !exists {
        return Err(Error::Refused(format!(
            "target database {:?} does not exist; add --create to create it",
            opts.target
        )));
    }
    if opts.clean {
        return Ok(());
    }
    let target = conn.connect(&opts.target).await?;
    let row = target
        .client
        .query_one(
            "SELECT count(*), min(format('%I.%I', n.nspname, c.relname))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .await
        .map_err(|e| Error::query("checking that the target is empty", e))?;
    let count: i64 = row.get(0);
    if count > 0 {
        let example: String = row.get(1);
        return Err(Error::Refused(format!(
            "target database {:?} is not empty ({count} relations, e.g. {example}); add --clean to replace the backup's objects, or restore into a new database with --create",
            opts.target
        )));
    }
    Ok(())
}

/// `--clean` into an existing database: foreign keys touching the backup's tables are dropped
/// first, so that pg_restore's `DROP TABLE IF EXISTS` does not trip over them. Post-data
/// recreates them.
pub(crate) async fn drop_foreign_keys(client: &Client, tables: &[(String, String)]) -> Result<()> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.1.as_str()).collect();
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), quote_ident(con.conname)
             FROM pg_constraint con
             JOIN pg_class c ON c.oid = con.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class r ON r.oid = con.confrelid
             JOIN pg_namespace rn ON rn.oid = r.relnamespace
             WHERE con.contype = 'f'
               AND ((n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
                    OR (rn.nspname, r.relname) IN (SELECT * FROM unnest($1::text[], $2::text[])))",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| Error::query("listing foreign keys to drop (--clean)", e))?;
    for r in rows {
        let table: String = r.get(0);
        let name: String = r.get(1);
        client
            .batch_execute(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"
            ))
            .await
            .map_err(|e| {
                Error::query(
                    format!("dropping foreign key {name} on {table} (--clean)"),
                    e,
                )
            })?;
    }
    Ok(())
}

/// libpq conninfo naming just the database; everything else comes from the environment.
fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Session settings for pg_restore's connections (added to the user's `PGOPTIONS`): commits
/// need not wait for WAL flushes (a crash means restoring again anyway; the last commit of the
/// restore flushes everything), and index builds sort in memory.
fn restore_pgoptions() -> String {
    let ours = "-c synchronous_commit=off -c maintenance_work_mem=512MB";
    match std::env::var("PGOPTIONS") {
        Ok(user) if !user.trim().is_empty() => format!("{user} {ours}"),
        _ => ours.to_string(),
    }
}

/// Runs pg_restore for one schema section of the backup into `target`.
fn pg_restore(
    conn: &ConnParams,
    dir: &Store,
    work_dir: Option<&std::path::Path>,
    target: &str,
    manifest: &Manifest,
    section: &str,
    mut args: Vec<OsString>,
) -> Result<()> {
    let Some(file) = manifest.schema.iter().find(|s| s.section == section) else {
        return Err(Error::Refused(format!(
            "the manifest lists no {section} schema file"
        )));
    };
    args.push("--no-password".into());
    args.push(format!("--dbname={}", dbname_conninfo(target)).into());
    // pg_restore --jobs reads a file; from an object store it is staged (and checked) first,
    // and so is an encrypted archive (decrypted into a private file of the restore host).
    let staged = match dir.local_dir().filter(|_| !file.chunk.encrypted) {
        Some(d) => {
            args.push(d.join(&file.chunk.file).into_os_string());
            None
        }
        None => {
            let staged = stage(dir, &file.chunk, work_dir)?;
            args.push(staged.path().as_os_str().to_os_string());
            Some(staged)
        }
    };
    let mut env = conn.child_env(target);
    env.push(("PGOPTIONS".into(), restore_pgoptions()));
    let result = crate::pgrestore::spawn(args, &env, Stdio::null())?.wait();
    drop(staged);
    result
}

/// Copies a chunk of `dir` into a private temporary file in `work_dir` (default: the system's
/// temporary directory), checking its size and checksum on the way.
fn stage(
    dir: &Store,
    chunk: &Chunk,
    work_dir: Option<&std::path::Path>,
) -> Result<tempfile::NamedTempFile> {
    let base = work_dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    let mut file = tempfile::Builder::new()
        .prefix(".dbbackup-stage-")
        .tempfile_in(&base)
        .map_err(|e| Error::io("creating a staging file in", &base, e))?;
    let mut reader = ChunkReader::open(dir, chunk)?;
    std::io::copy(&mut reader, file.as_file_mut())
        .map_err(|e| Error::io("staging", dir.describe(&chunk.file), e))?;
    reader.finish()?;
    Ok(file)
}

async fn set_sequences(client: &Client, manifest: &Manifest) -> Result<()> {
    for s in &manifest.sequences {
        let name = format!("{}.{}", quote_ident(&s.schema), quote_ident(&s.name));
        client
            .query_one(
                "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                &[&name, &s.last_value, &s.is_called],
            )
            .await
            .map_err(|e| Error::query(format!("setting sequence {}.{}", s.schema, s.name), e))?;
    }
    Ok(())
}

async fn load_data(
    conn: &ConnParams,
    opts: &RestoreOptions,
    manifest: &Manifest,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
    summary: &mut RestoreSummary,
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
    let mut set = JoinSet::new();
    for worker in 0..workers {
        let conn = conn.clone();
        let target = opts.target.clone();
        let root = opts.dir.clone();
        let queue = queue.clone();
        let tables = tables.clone();
        let progress = progress.clone();
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
                        load_rows(&session.client, &root, t, chunk, &progress).await?;
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
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    let what = || format!("loading into table {}", table.display_name());
    // A table loaded by a single chunk was created empty by pre-data in this restore: truncating
    // it in the loading transaction lets COPY write frozen, all-visible rows (no hint-bit
    // rewrites or freezing vacuum later; no WAL at all with wal_level=minimal), as pg_restore
    // does. Tables of several chunks load concurrently and cannot be truncated.
    let single = table.chunks().count() == 1;
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
        crate::largeobj::read_record(reader)
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
