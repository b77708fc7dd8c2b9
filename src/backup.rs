//! `backup single`: one database, one consistent snapshot, many parallel COPY streams.
//!
//! The coordinator connection opens a REPEATABLE READ transaction, probes the catalog (which
//! fixes the snapshot), locks every table it will dump (ACCESS SHARE, with a lock timeout),
//! exports the snapshot and keeps it open until every worker and pg_dump call is done. Workers
//! import it with `SET TRANSACTION SNAPSHOT`, so every row comes from the same instant.

use std::collections::VecDeque;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::child::ChildSet;
use crate::compress::Codec;
use crate::conn::{ConnParams, Session};
use crate::copy::{dump_unit, kind_of};
use crate::dirlock::DirLock;
use crate::error::{Error, Result};
use crate::manifest::{
    now_rfc3339, quote_ident, quote_literal, Chunk, Manifest, OptionsRecord, SchemaFile, Sequence,
    Status, Strategy, StrategyKind, Table, Totals, Unit, FORMAT_VERSION,
};
use crate::plan::{plan_units, schedule, WorkUnit};
use crate::probe::{probe, CopyFormatChoice, Probe};
use crate::progress::Progress;
use crate::resume::{check_options, check_tables, reconcile};
use crate::sink::SinkConfig;

/// How often, at most, the manifest is rewritten while units complete.
const MANIFEST_SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Options of a native backup (the CLI's flags, validated).
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub out: crate::storage::Store,
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
    /// Attempts after the first for a unit that fails with a retryable error.
    pub retries: u32,
    /// Continue the backup already in `out` instead of starting a new one.
    pub resume: bool,
    /// With `resume`: accept that the resumed units come from a new snapshot.
    pub allow_inconsistent: bool,
    /// Read in this exported snapshot (of a transaction the user keeps open) instead of our own.
    pub snapshot: Option<String>,
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

/// Claims the location of a new backup: creates it (a directory private to the owner, 0700),
/// takes its lock (so that a second dbbackup is told whose run it is), and refuses it if it
/// holds anything else.
pub fn prepare_out_dir(out: &crate::storage::Store) -> Result<DirLock> {
    out.create_dir("")?;
    let lock = DirLock::acquire(out)?;
    out.check_empty(&[crate::dirlock::LOCK_FILE])?;
    Ok(lock)
}

/// Cancel keys of every session a backup opened, so that stopping it (failure, Ctrl-C, a
/// cluster timeout) cancels their running statements on the server: closing a socket does not
/// wake a backend that waits for a lock.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<Vec<tokio_postgres::CancelToken>>>);

impl Sessions {
    pub fn add(&self, token: tokio_postgres::CancelToken) {
        self.0.lock().unwrap().push(token);
    }

    pub async fn cancel_all(&self) {
        let tokens: Vec<_> = std::mem::take(&mut *self.0.lock().unwrap());
        for t in tokens {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), crate::conn::cancel_query(&t)).await;
        }
    }
}

/// Runs `fut` unless `cancel` fires first; then cancels the sessions' statements.
pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    sessions: &Sessions,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = fut => r,
        _ = cancel.cancelled() => {
            sessions.cancel_all().await;
            Err(Error::Interrupted)
        }
    }
}

/// Backs up `dbname` natively into `opts.out` (or continues the backup there with
/// `opts.resume`). On failure or cancellation the running statements are cancelled, children
/// terminated, connections closed, the manifest says `failed` with the reason, and the error is
/// returned.
pub async fn backup_database(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    let strategy = Strategy {
        kind: StrategyKind::Native,
        reason: "native requested".into(),
    };
    backup_native(conn, dbname, opts, strategy, progress, cancel).await
}

/// [`backup_database`] recording `strategy` (the decision that chose native, with its reason)
/// in the manifest. The coordinator's probe is the only probe: its findings are printed and
/// recorded too.
pub async fn backup_native(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    strategy: Strategy,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    let _lock = if opts.resume {
        if !opts.out.exists(crate::manifest::MANIFEST_FILE)? {
            return Err(Error::Refused(format!(
                "nothing to resume: {} has no manifest.json",
                opts.out.display()
            )));
        }
        DirLock::acquire(&opts.out)?
    } else {
        prepare_out_dir(&opts.out)?
    };
    let sessions = Sessions::default();
    let children = ChildSet::default();
    let mut manifest: Option<Manifest> = None;
    let started = Instant::now();
    let result = backup_locked(
        conn,
        dbname,
        opts,
        strategy,
        progress,
        &cancel,
        &sessions,
        &children,
        &mut manifest,
    )
    .await;
    if result.is_err() {
        sessions.cancel_all().await;
        let children = children.clone();
        let _ = tokio::task::spawn_blocking(move || children.terminate()).await;
    }
    let Some(mut m) = manifest else {
        return result.map(|_| unreachable!("a successful backup has a manifest"));
    };
    if matches!(result, Ok(Done::AlreadyComplete)) {
        return Ok(m);
    }
    m.totals.duration_secs += started.elapsed().as_secs_f64();
    m.finished_at = Some(now_rfc3339());
    m.recompute_totals();
    match result {
        Ok(_) => {
            m.status = Status::Complete;
            m.error = None;
            m.store(&opts.out)?;
            Ok(m)
        }
        Err(e) => {
            m.status = Status::Failed;
            m.error = Some(e.to_string());
            // The manifest on disk stays valid even if this store fails (a full disk): it is
            // then the last one stored, still `in_progress`, and resume treats it the same.
            let _ = m.store(&opts.out);
            Err(e)
        }
    }
}

enum Done {
    Finished,
    AlreadyComplete,
}

#[allow(clippy::too_many_arguments)]
async fn backup_locked(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    strategy: Strategy,
    progress: Arc<dyn Progress>,
    cancel: &CancellationToken,
    sessions: &Sessions,
    children: &ChildSet,
    slot: &mut Option<Manifest>,
) -> Result<Done> {
    let previous = if opts.resume {
        let m = Manifest::load(&opts.out)?;
        if m.status == Status::Complete {
            progress.note(&format!(
                "the backup in {} is already complete; nothing to do",
                opts.out.display()
            ));
            *slot = Some(m);
            return Ok(Done::AlreadyComplete);
        }
        check_options(&m.options, &options_record(opts))?;
        if m.database.name != dbname {
            return Err(Error::Refused(format!(
                "{} holds a backup of database {:?}, not {dbname:?}",
                opts.out.display(),
                m.database.name
            )));
        }
        if opts.snapshot.is_none() && !opts.allow_inconsistent {
            return Err(Error::Refused(
                "the first run's snapshot died with it: resuming reads the rest in a new snapshot, \
                 so the backup would not be consistent; pass --allow-inconsistent to accept that, \
                 or --snapshot ID of a transaction that is still open"
                    .into(),
            ));
        }
        Some(m)
    } else {
        None
    };
    let coordinator = cancellable(cancel, sessions, conn.connect(dbname)).await?;
    sessions.add(coordinator.cancel.clone());
    let client = &coordinator.client;
    let begin = match &opts.snapshot {
        Some(id) => format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(id)
        ),
        None => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_string(),
    };
    cancellable(cancel, sessions, async {
        client
            .batch_execute(&begin)
            .await
            .map_err(|e| Error::query("starting the snapshot transaction", e))
    })
    .await?;
    let found = cancellable(cancel, sessions, probe(client, dbname, opts.lock_timeout)).await?;
    let findings = crate::strategy::with_client_tools(found)?;
    let pg_dump_version = findings.pg_dump_version.clone();
    progress.note(&findings.summary_line(dbname));
    progress.note(&format!("strategy: native ({})", strategy.reason));
    let probe_json = findings.to_json();
    let found = findings.probe;
    let snapshot: String = match &opts.snapshot {
        Some(id) => id.clone(),
        None => {
            cancellable(cancel, sessions, async {
                client
                    .query_one("SELECT pg_export_snapshot()", &[])
                    .await
                    .map_err(|e| Error::query("exporting the snapshot", e))
                    .map(|r| r.get(0))
            })
            .await?
        }
    };

    let manifest = match previous {
        Some(mut m) => {
            check_tables(&m, &found)?;
            let r = reconcile(&opts.out, &mut m)?;
            for bad in &r.bad_chunks {
                progress.note(&format!(
                    "resume: redoing a unit whose chunk failed its check: {bad}"
                ));
            }
            progress.note(&format!(
                "resume: keeping {} finished units, redoing {}, deleted {} leftover files",
                r.units_kept, r.units_redo, r.files_deleted
            ));
            if m.snapshot.as_deref() != Some(snapshot.as_str()) {
                m.consistent = false;
            }
            m.status = Status::InProgress;
            m.error = None;
            m.finished_at = None;
            m.options.parallel_tables = opts.parallel_tables;
            m
        }
        None => {
            let sequences = cancellable(cancel, sessions, read_sequences(client, &found)).await?;
            let mut m =
                initial_manifest(&found, dbname, &snapshot, opts, &pg_dump_version, sequences);
            m.strategy = strategy;
            m.probe = probe_json;
            m
        }
    };
    manifest.store(&opts.out)?;
    *slot = Some(manifest);
    let manifest = slot.as_mut().expect("just set");

    let ctx = JobsCtx {
        conn,
        dbname,
        snapshot: &snapshot,
        opts,
        found: &found,
        progress,
        cancel,
        sessions,
        children,
    };
    let data = async {
        run_jobs(&ctx, manifest).await?;
        // Ending the transaction releases the snapshot: only now, after every reader is done.
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| Error::query("ending the snapshot transaction", e))
    };
    if let Err(e) = data.await {
        // Asked while the coordinator's transaction is still open.
        return Err(crate::snapshot_loss::classify(e, conn, dbname, &snapshot, cancel).await);
    }
    Ok(Done::Finished)
}

/// What a backup with `opts` records as its `options`.
pub fn options_record(opts: &BackupOptions) -> OptionsRecord {
    OptionsRecord {
        codec: opts.codec,
        level: opts.level,
        chunk_size: opts.chunk_size,
        split_tables_larger_than: opts.split_larger_than,
        parallel_tables: opts.parallel_tables,
        copy_format: format!("{:?}", opts.copy_format).to_lowercase(),
        recipients: opts.out.sealing().recipients().to_vec(),
    }
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
        options: options_record(opts),
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
            metadata: None,
        },
        stream: vec![],
        totals: Totals::default(),
    }
}

/// What the job runner shares with its workers.
struct JobsCtx<'a> {
    conn: &'a ConnParams,
    dbname: &'a str,
    snapshot: &'a str,
    opts: &'a BackupOptions,
    found: &'a Probe,
    progress: Arc<dyn Progress>,
    cancel: &'a CancellationToken,
    sessions: &'a Sessions,
    children: &'a ChildSet,
}

/// Runs the schema dumps and the data workers; keeps the manifest current as units finish.
async fn run_jobs(ctx: &JobsCtx<'_>, manifest: &mut Manifest) -> Result<()> {
    let opts = ctx.opts;
    // The schema in its own thread: pg_dump reads the same snapshot. A resumed backup keeps
    // the schema of its first run when it is intact.
    let schema_task = if manifest.schema.is_empty() {
        let conn = ctx.conn.clone();
        let dbname = ctx.dbname.to_string();
        let snapshot = ctx.snapshot.to_string();
        let root = opts.out.clone();
        let children = ctx.children.clone();
        Some(tokio::task::spawn_blocking(
            move || -> Result<Vec<SchemaFile>> {
                root.create_dir("schema")?;
                ["pre-data", "post-data"]
                    .iter()
                    .map(|section| {
                        let rel = format!("schema/{section}.dump");
                        let chunk = crate::pgdump::dump_schema_section(
                            &conn, &dbname, &snapshot, section, &root, &rel, &children,
                        )?;
                        Ok(SchemaFile {
                            section: section.to_string(),
                            chunk,
                        })
                    })
                    .collect()
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
                .partition(|c| c.file == crate::largeobj::METADATA_FILE);
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
    /// A connection inside the shared snapshot.
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
                let metadata = crate::largeobj::dump_metadata(client, &self.opts.out).await?;
                let mut chunks =
                    crate::largeobj::dump(client, sink, self.opts.chunk_size, &self.progress)
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
