//! The native backup's workers: each takes units off the shared queue, dumps them into chunk
//! files through its own session in the exported snapshot, and reports; the coordinator
//! records every finished unit in the manifest.

use std::collections::VecDeque;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::manifest::{
    quote_literal, Chunk, Manifest, SchemaFile, Table, SCHEMA_FILE, SCHEMA_SECTION,
};
use crate::progress::Progress;
use crate::source::child::ChildSet;
use crate::source::conn::{ConnParams, Session};
use crate::source::copy::{dump_unit, kind_of};
use crate::source::plan::{schedule, WorkUnit};
use crate::source::probe::Probe;
use crate::source::sink::SinkConfig;

use super::options::BackupOptions;
use super::sessions::Sessions;

/// How often, at most, the manifest is rewritten while units complete.
const MANIFEST_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// One job for a worker.
#[derive(Debug, Clone)]
enum Job {
    Unit(WorkUnit),
    LargeObjects,
}

/// What workers tell the coordinator.
enum Event {
    Done(Job, Vec<Chunk>),
    /// A unit is dumped again after a retryable error (counted in the manifest).
    Retried,
    Failed(Error),
}

/// What the job runner shares with its workers.
pub(super) struct JobsCtx<'a> {
    pub(super) conn: &'a ConnParams,
    pub(super) dbname: &'a str,
    pub(super) snapshot: &'a str,
    pub(super) opts: &'a BackupOptions,
    pub(super) found: &'a Probe,
    pub(super) progress: Arc<dyn Progress>,
    pub(super) cancel: &'a CancellationToken,
    pub(super) sessions: &'a Sessions,
    pub(super) children: &'a ChildSet,
}

/// Runs the schema dumps and the data workers; keeps the manifest current as units finish.
pub(super) async fn run_jobs(ctx: &JobsCtx<'_>, manifest: &mut Manifest) -> Result<()> {
    let opts = ctx.opts;
    // The schema in its own thread: pg_dump reads the same snapshot. A resumed backup keeps
    // the schema of its first run when it is intact (one archive, or the two section archives
    // of earlier versions).
    let schema_task = if manifest.schema.is_empty() {
        let conn = ctx.conn.clone();
        let dbname = ctx.dbname.to_string();
        let snapshot = ctx.snapshot.to_string();
        let root = opts.out.clone();
        let children = ctx.children.clone();
        // The same selection as the data: pg_dump then takes the tables the probe took.
        let selection = ctx.found.selection.pg_dump_args();
        Some(tokio::task::spawn_blocking(
            move || -> Result<Vec<SchemaFile>> {
                root.create_dir("schema")?;
                let chunk = crate::source::pgdump::dump_schema(
                    &conn,
                    &dbname,
                    &snapshot,
                    &root,
                    SCHEMA_FILE,
                    &selection,
                    &children,
                )?;
                Ok(vec![SchemaFile {
                    section: SCHEMA_SECTION.to_string(),
                    chunk,
                }])
            },
        ))
    } else {
        None
    };

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
        let lo_bytes = ctx.found.large_object_bytes.max(0) as u64;
        let pos = ordered
            .iter()
            .position(|j| matches!(j, Job::Unit(u) if u.est_bytes < lo_bytes))
            .unwrap_or(ordered.len());
        ordered.insert(pos, Job::LargeObjects);
    }
    let remaining: u64 = ordered
        .iter()
        .map(|j| match j {
            Job::Unit(u) => u.est_bytes,
            Job::LargeObjects => ctx.found.large_object_bytes.max(0) as u64,
        })
        .sum();
    let workers_wanted = opts.parallel_tables.max(1).min(ordered.len().max(1));
    let queue = Arc::new(Mutex::new(VecDeque::from(ordered)));
    let tables = Arc::new(manifest.tables.clone());
    ctx.progress.start("backup", remaining);

    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut workers = JoinSet::new();
    for worker in 0..workers_wanted {
        let w = WorkerCtx {
            conn: ctx.conn.clone(),
            dbname: ctx.dbname.to_string(),
            snapshot: ctx.snapshot.to_string(),
            opts: opts.clone(),
            tables: tables.clone(),
            queue: queue.clone(),
            progress: ctx.progress.clone(),
            sessions: ctx.sessions.clone(),
            worker,
        };
        let tx = tx.clone();
        workers.spawn(async move {
            if let Err(e) = w.run(&tx).await {
                let _ = tx.send(Event::Failed(e));
            }
        });
    }
    drop(tx);

    let mut dirty = false;
    let mut tick = tokio::time::interval(MANIFEST_SYNC_INTERVAL);
    let mut failure: Option<Error> = None;
    // The schema dump is watched alongside the workers: if pg_dump fails, the backup stops now,
    // not after every table has been copied.
    let mut schema_task = schema_task;
    let mut workers_done = false;
    while failure.is_none() && !(workers_done && schema_task.is_none()) {
        tokio::select! {
            ev = rx.recv(), if !workers_done => match ev {
                Some(Event::Done(job, chunks)) => {
                    apply_done(manifest, job, chunks, ctx.snapshot);
                    dirty = true;
                }
                Some(Event::Retried) => manifest.retries += 1,
                Some(Event::Failed(e)) => failure = Some(e),
                None => workers_done = true,
            },
            r = async { schema_task.as_mut().expect("guarded").await }, if schema_task.is_some() => {
                schema_task = None;
                match r.expect("schema thread panicked") {
                    Ok(schema) => manifest.schema = schema,
                    Err(e) => failure = Some(e),
                }
            },
            // Batched: the manifest is rewritten at most every interval, never per row.
            _ = tick.tick() => if dirty {
                manifest.recompute_totals();
                manifest.store(&opts.out)?;
                dirty = false;
            },
            _ = ctx.cancel.cancelled() => failure = Some(Error::Interrupted),
        }
    }
    if failure.is_some() {
        ctx.sessions.cancel_all().await;
    }
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    ctx.progress.finish();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
            let (metadata, chunks): (Vec<Chunk>, Vec<Chunk>) = chunks
                .into_iter()
                .partition(|c| c.file == crate::source::largeobj::METADATA_FILE);
            manifest.large_objects.metadata = metadata.into_iter().next();
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
    sessions: Sessions,
    worker: usize,
}

impl WorkerCtx {
    /// A connection inside the shared snapshot (every session has an empty `search_path`, see
    /// [`ConnParams::connect`], so text COPY writes `reg*` values schema-qualified).
    async fn open(&self) -> Result<Session> {
        let session = self.conn.connect(&self.dbname).await?;
        self.sessions.add(session.cancel.clone());
        session
            .client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(&self.snapshot)
            ))
            .await
            .map_err(|e| Error::query(format!("importing snapshot {}", self.snapshot), e))?;
        Ok(session)
    }

    async fn run(&self, tx: &mpsc::UnboundedSender<Event>) -> Result<()> {
        let mut session = Some(self.open().await?);
        loop {
            let job = self.queue.lock().unwrap().pop_front();
            let Some(job) = job else { break };
            let mut attempt = 0;
            let chunks = loop {
                if session.is_none() {
                    session = Some(self.open().await?);
                }
                let client = &session.as_ref().expect("open").client;
                match self.dump(client, &job).await {
                    Ok(chunks) => break chunks,
                    Err(e) if e.is_retryable() && attempt < self.opts.retries => {
                        attempt += 1;
                        let _ = tx.send(Event::Retried);
                        let wait = backoff(attempt);
                        self.progress.note(&format!(
                            "retrying {} (attempt {} of {}) in {:.1}s after: {e}",
                            self.job_name(&job),
                            attempt + 1,
                            self.opts.retries + 1,
                            wait.as_secs_f64()
                        ));
                        // The failed attempt's files were removed by dump_unit; the connection
                        // is not trusted any more.
                        session = None;
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            self.progress.worker_idle(self.worker);
            if tx.send(Event::Done(job, chunks)).is_err() {
                break;
            }
        }
        if let Some(s) = session {
            s.client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| Error::query("ending worker transaction", e))?;
        }
        Ok(())
    }

    fn job_name(&self, job: &Job) -> String {
        match job {
            Job::Unit(u) => format!(
                "table {} unit {}",
                self.tables[u.table].display_name(),
                u.index
            ),
            Job::LargeObjects => "large objects".into(),
        }
    }

    async fn dump(&self, client: &Client, job: &Job) -> Result<Vec<Chunk>> {
        match job {
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
                dump_unit(client, table, u, sink, self.opts.chunk_size, &self.progress).await
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
                let metadata =
                    crate::source::largeobj::dump_metadata(client, &self.opts.out).await?;
                let mut chunks = crate::source::largeobj::dump(
                    client,
                    sink,
                    self.opts.chunk_size,
                    &self.progress,
                )
                .await?;
                chunks.extend(metadata);
                Ok(chunks)
            }
        }
    }
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s, … (capped at 30 s), each ±25%.
fn backoff(attempt: u32) -> Duration {
    let base = 500u64
        .saturating_mul(1 << attempt.min(6).saturating_sub(1))
        .min(30_000);
    // Jitter from the clock's nanoseconds: enough to keep workers from retrying in lockstep.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let jitter = (nanos % (base / 2 + 1)) as i64 - (base / 4) as i64;
    Duration::from_millis((base as i64 + jitter).max(1) as u64)
}
