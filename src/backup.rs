//! `backup single`: one database, one consistent snapshot, many parallel COPY streams.
//!
//! The coordinator connection opens a REPEATABLE READ transaction, probes the catalog (which
//! fixes the snapshot), locks every table it will dump (ACCESS SHARE, with a lock timeout),
//! exports the snapshot and keeps it open until every worker and pg_dump call is done. Workers
//! import it with `SET TRANSACTION SNAPSHOT`, so every row comes from the same instant.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::child::tool_version;
use crate::chunk::create_private_dir;
use crate::compress::Codec;
use crate::conn::ConnParams;
use crate::copy::{dump_unit, kind_of};
use crate::error::{Error, Result};
use crate::manifest::{
    now_rfc3339, quote_ident, quote_literal, Chunk, Manifest, OptionsRecord, SchemaFile, Sequence,
    Status, Strategy, StrategyKind, Table, Totals, Unit, FORMAT_VERSION,
};
use crate::plan::{plan_units, schedule, WorkUnit};
use crate::probe::{probe, CopyFormatChoice, Probe};
use crate::progress::Progress;
use crate::sink::SinkConfig;

/// How often, at most, the manifest is rewritten while units complete.
const MANIFEST_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Options of a native backup (the CLI's flags, validated).
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub out: PathBuf,
    pub parallel_tables: usize,
    pub codec: Codec,
    pub level: i32,
    /// Uncompressed bytes per chunk; a unit's stream rotates to a new chunk on a row boundary.
    pub chunk_size: u64,
    /// Tables whose `pg_table_size` exceeds this are split into ctid ranges.
    pub split_larger_than: u64,
    pub copy_format: CopyFormatChoice,
    /// How long to wait for each table's ACCESS SHARE lock.
    pub lock_timeout: Duration,
}

/// One job for a worker.
#[derive(Debug, Clone)]
enum Job {
    Unit(WorkUnit),
    LargeObjects,
}

/// What workers tell the coordinator.
enum Event {
    Done(Job, Vec<Chunk>),
    Failed(Error),
}

/// Refuses an output directory that holds anything; creates it private (0700).
pub fn prepare_out_dir(out: &Path) -> Result<()> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Refused(format!(
                    "output directory {} is not empty; choose a new directory",
                    out.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private_dir(out),
        Err(e) => Err(Error::io("opening output directory", out, e)),
    }
}

/// Backs up `dbname` natively into `opts.out`. On failure the manifest says `failed` with the
/// reason, and the error is returned.
pub async fn backup_database(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    prepare_out_dir(&opts.out)?;
    let started = Instant::now();
    let (pg_dump_num, pg_dump_version) = tool_version("pg_dump")?;

    let coordinator = conn.connect(dbname).await?;
    let client = &coordinator.client;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| Error::query("starting the snapshot transaction", e))?;
    let found = probe(client, dbname).await?;
    if pg_dump_num / 10000 < found.server_version_num / 10000 {
        return Err(Error::Refused(format!(
            "pg_dump {pg_dump_version} is older than the server ({}); install a pg_dump of version {} or newer",
            found.server_version,
            found.server_version_num / 10000
        )));
    }
    lock_tables(client, &found, opts.lock_timeout).await?;
    let snapshot: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| Error::query("exporting the snapshot", e))?
        .get(0);
    let sequences = read_sequences(client, &found).await?;

    let mut manifest =
        initial_manifest(&found, dbname, &snapshot, opts, &pg_dump_version, sequences);
    manifest.store(&opts.out)?;

    let outcome = run_jobs(
        conn,
        dbname,
        &snapshot,
        opts,
        &found,
        &mut manifest,
        progress.clone(),
        cancel,
    )
    .await;
    manifest.totals.duration_secs = started.elapsed().as_secs_f64();
    manifest.finished_at = Some(now_rfc3339());
    manifest.recompute_totals();
    match outcome {
        Ok(()) => {
            // Ending the transaction releases the snapshot: only now, after every reader is done.
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| Error::query("ending the snapshot transaction", e))?;
            manifest.status = Status::Complete;
            manifest.store(&opts.out)?;
            Ok(manifest)
        }
        Err(e) => {
            manifest.status = Status::Failed;
            manifest.error = Some(e.to_string());
            manifest.store(&opts.out)?;
            Err(e)
        }
    }
}

/// ACCESS SHARE on every table, one at a time so a timeout names the table that is blocked.
async fn lock_tables(client: &Client, found: &Probe, timeout: Duration) -> Result<()> {
    client
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = {}",
            timeout.as_millis().max(1)
        ))
        .await
        .map_err(|e| Error::query("setting lock_timeout", e))?;
    for t in &found.tables {
        let sql = format!(
            "LOCK TABLE ONLY {}.{} IN ACCESS SHARE MODE",
            quote_ident(&t.schema),
            quote_ident(&t.name)
        );
        if let Err(e) = client.batch_execute(&sql).await {
            let what = if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                format!(
                    "timed out after {:?} waiting for an ACCESS SHARE lock on table {} (another session holds a conflicting lock)",
                    timeout,
                    t.display_name()
                )
            } else {
                format!("locking table {}", t.display_name())
            };
            return Err(Error::query(what, e));
        }
    }
    client
        .batch_execute("SET LOCAL lock_timeout = 0")
        .await
        .map_err(|e| Error::query("resetting lock_timeout", e))
}

/// Sequence values are not transactional; read them while holding the snapshot, as pg_dump does.
async fn read_sequences(client: &Client, found: &Probe) -> Result<Vec<Sequence>> {
    let mut out = Vec::with_capacity(found.sequences.len());
    for s in &found.sequences {
        let sql = format!(
            "SELECT last_value, is_called FROM {}.{}",
            quote_ident(&s.schema),
            quote_ident(&s.name)
        );
        let row = client
            .query_one(sql.as_str(), &[])
            .await
            .map_err(|e| Error::query(format!("reading sequence {}.{}", s.schema, s.name), e))?;
        out.push(Sequence {
            schema: s.schema.clone(),
            name: s.name.clone(),
            last_value: row.get(0),
            is_called: row.get(1),
        });
    }
    Ok(out)
}

fn initial_manifest(
    found: &Probe,
    dbname: &str,
    snapshot: &str,
    opts: &BackupOptions,
    pg_dump_version: &str,
    sequences: Vec<Sequence>,
) -> Manifest {
    let units = plan_units(&found.tables, opts.split_larger_than);
    let tables = found
        .tables
        .iter()
        .zip(units)
        .map(|(t, units)| {
            let copy_format = t.copy_format(opts.copy_format);
            Table {
                oid: t.oid,
                schema: t.schema.clone(),
                name: t.name.clone(),
                relkind: t.relkind.clone(),
                columns: t.columns.clone(),
                size_bytes: t.size_bytes,
                row_estimate: t.row_estimate,
                copy_format,
                copy_format_reason: match copy_format {
                    crate::copyfmt::CopyFormat::Text => t
                        .not_binary_because
                        .clone()
                        .or_else(|| Some("--copy-format text".into())),
                    crate::copyfmt::CopyFormat::Binary => None,
                },
                units: units
                    .into_iter()
                    .map(|u| Unit {
                        index: u.index,
                        ctid_from: u.ctid_from,
                        ctid_to: u.ctid_to,
                        done: false,
                        snapshot: None,
                        chunks: vec![],
                    })
                    .collect(),
            }
        })
        .collect();
    let mut database = found.database.clone();
    database.name = dbname.to_string();
    Manifest {
        format_version: FORMAT_VERSION,
        tool: format!("dbbackup {}", env!("CARGO_PKG_VERSION")),
        status: Status::InProgress,
        error: None,
        started_at: now_rfc3339(),
        finished_at: None,
        server_version: found.server_version.clone(),
        server_version_num: found.server_version_num,
        pg_dump_version: pg_dump_version.to_string(),
        database,
        snapshot: Some(snapshot.to_string()),
        consistent: true,
        options: OptionsRecord {
            codec: opts.codec,
            level: opts.level,
            chunk_size: opts.chunk_size,
            split_tables_larger_than: opts.split_larger_than,
            parallel_tables: opts.parallel_tables,
            copy_format: format!("{:?}", opts.copy_format).to_lowercase(),
        },
        strategy: Strategy {
            kind: StrategyKind::Native,
            reason: "native requested".into(),
        },
        probe: found.summary_json(),
        schema: vec![],
        tables,
        sequences,
        large_objects: crate::manifest::LargeObjects {
            count: found.large_object_count.max(0) as u64,
            bytes: 0,
            done: found.large_object_count == 0,
            chunks: vec![],
        },
        stream: vec![],
        totals: Totals::default(),
    }
}

/// Runs the schema dumps and the data workers; keeps the manifest current as units finish.
#[allow(clippy::too_many_arguments)]
async fn run_jobs(
    conn: &ConnParams,
    dbname: &str,
    snapshot: &str,
    opts: &BackupOptions,
    found: &Probe,
    manifest: &mut Manifest,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<()> {
    // Schema first in its own thread: pg_dump reads the same snapshot.
    let schema_task = {
        let conn = conn.clone();
        let dbname = dbname.to_string();
        let snapshot = snapshot.to_string();
        let root = opts.out.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<SchemaFile>> {
            create_private_dir(&root.join("schema"))?;
            ["pre-data", "post-data"]
                .iter()
                .map(|section| {
                    let rel = format!("schema/{section}.dump");
                    let chunk = crate::pgdump::dump_schema_section(
                        &conn, &dbname, &snapshot, section, &root, &rel,
                    )?;
                    Ok(SchemaFile {
                        section: section.to_string(),
                        chunk,
                    })
                })
                .collect()
        })
    };

    let mut queue: VecDeque<Job> = VecDeque::new();
    let units: Vec<Vec<WorkUnit>> = manifest
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.units
                .iter()
                .filter(|u| !u.done)
                .map(|u| WorkUnit {
                    table: i,
                    index: u.index,
                    ctid_from: u.ctid_from,
                    ctid_to: u.ctid_to,
                    est_bytes: (t.size_bytes.max(0) as u64) / t.units.len().max(1) as u64,
                })
                .collect()
        })
        .collect();
    let mut ordered: Vec<Job> = schedule(&units).into_iter().map(Job::Unit).collect();
    if !manifest.large_objects.done {
        // Place the large objects among the units by their estimated size.
        let lo_bytes = found.large_object_bytes.max(0) as u64;
        let pos = ordered
            .iter()
            .position(|j| matches!(j, Job::Unit(u) if u.est_bytes < lo_bytes))
            .unwrap_or(ordered.len());
        ordered.insert(pos, Job::LargeObjects);
    }
    queue.extend(ordered);
    let workers_wanted = opts.parallel_tables.max(1).min(queue.len().max(1));
    let queue = Arc::new(Mutex::new(queue));
    let tables = Arc::new(manifest.tables.clone());
    progress.start("backup", found.data_bytes());

    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut workers = JoinSet::new();
    for worker in 0..workers_wanted {
        let ctx = WorkerCtx {
            conn: conn.clone(),
            dbname: dbname.to_string(),
            snapshot: snapshot.to_string(),
            opts: opts.clone(),
            tables: tables.clone(),
            queue: queue.clone(),
            progress: progress.clone(),
            worker,
        };
        let tx = tx.clone();
        workers.spawn(async move {
            if let Err(e) = ctx.run(&tx).await {
                let _ = tx.send(Event::Failed(e));
            }
        });
    }
    drop(tx);

    let mut schema_task = Some(schema_task);
    let mut last_store = Instant::now();
    let mut failure: Option<Error> = None;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Done(job, chunks)) => {
                    apply_done(manifest, job, chunks, snapshot);
                    if last_store.elapsed() >= MANIFEST_SYNC_INTERVAL {
                        manifest.recompute_totals();
                        manifest.store(&opts.out)?;
                        last_store = Instant::now();
                    }
                }
                Some(Event::Failed(e)) => { failure = Some(e); break; }
                None => break,
            },
            _ = cancel.cancelled() => { failure = Some(Error::Interrupted); break; }
        }
    }
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    progress.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    let schema = tokio::select! {
        r = schema_task.take().expect("once") => r.expect("schema thread panicked")?,
        _ = cancel.cancelled() => return Err(Error::Interrupted),
    };
    manifest.schema = schema;
    Ok(())
}

fn apply_done(manifest: &mut Manifest, job: Job, chunks: Vec<Chunk>, snapshot: &str) {
    match job {
        Job::Unit(u) => {
            let unit = manifest.tables[u.table]
                .units
                .iter_mut()
                .find(|x| x.index == u.index)
                .expect("planned unit");
            unit.chunks = chunks;
            unit.done = true;
            unit.snapshot = Some(snapshot.to_string());
        }
        Job::LargeObjects => {
            manifest.large_objects.bytes = chunks.iter().map(|c| c.raw_bytes).sum();
            manifest.large_objects.chunks = chunks;
            manifest.large_objects.done = true;
        }
    }
}

/// Everything a worker needs; each worker owns one connection in the shared snapshot.
struct WorkerCtx {
    conn: ConnParams,
    dbname: String,
    snapshot: String,
    opts: BackupOptions,
    tables: Arc<Vec<Table>>,
    queue: Arc<Mutex<VecDeque<Job>>>,
    progress: Arc<dyn Progress>,
    worker: usize,
}

impl WorkerCtx {
    async fn run(&self, tx: &mpsc::UnboundedSender<Event>) -> Result<()> {
        let session = self.conn.connect(&self.dbname).await?;
        let client = &session.client;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(&self.snapshot)
            ))
            .await
            .map_err(|e| Error::query(format!("importing snapshot {}", self.snapshot), e))?;
        loop {
            let job = self.queue.lock().unwrap().pop_front();
            let Some(job) = job else { break };
            let chunks = match &job {
                Job::Unit(u) => {
                    let table = &self.tables[u.table];
                    self.progress
                        .worker_busy(self.worker, &table.display_name());
                    let sink = SinkConfig {
                        root: self.opts.out.clone(),
                        dir: format!("data/{}", table.oid),
                        stem: format!("u{:04}", u.index),
                        kind: kind_of(table.copy_format),
                        codec: self.opts.codec,
                        level: self.opts.level,
                        threads: 0,
                    };
                    dump_unit(client, table, u, sink, self.opts.chunk_size, &self.progress).await?
                }
                Job::LargeObjects => {
                    self.progress.worker_busy(self.worker, "large objects");
                    let sink = SinkConfig {
                        root: self.opts.out.clone(),
                        dir: "large_objects".into(),
                        stem: "lo".into(),
                        kind: "lo",
                        codec: self.opts.codec,
                        level: self.opts.level,
                        threads: 0,
                    };
                    crate::largeobj::dump(client, sink, self.opts.chunk_size, &self.progress)
                        .await?
                }
            };
            self.progress.worker_idle(self.worker);
            if tx.send(Event::Done(job, chunks)).is_err() {
                break;
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| Error::query("ending worker transaction", e))?;
        Ok(())
    }
}
