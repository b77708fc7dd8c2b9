//! The native backup's coordinator: the snapshot, the probe, the plan and the manifest; the
//! units themselves run in [`super::workers`].

use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::backup::resume::{check_options, check_tables, reconcile};
use crate::clock::now_rfc3339;
use crate::error::{Error, Result};
use crate::format::manifest::{
    quote_ident, quote_literal, Manifest, Sequence, Status, Strategy, StrategyKind, Table, Totals,
    Unit, FORMAT_VERSION,
};
use crate::progress::Progress;
use crate::source::child::ChildSet;
use crate::source::conn::ConnParams;
use crate::source::plan::plan_units;
use crate::source::probe::{probe, Probe};
use crate::storage::lock::DirLock;

use super::budget;
use super::options::{options_record, prepare_out_dir, BackupOptions};
use super::probe::with_client_tools;
use super::sessions::{cancellable, Sessions};
use super::workers::{run_jobs, JobsCtx};
use crate::memory::Wanted;

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
    let (paused, opts) =
        super::standby::pause_if_asked(conn, dbname, opts, progress.as_ref()).await?;
    let result = backup_native(conn, dbname, &opts, strategy, progress.clone(), cancel).await;
    if let Some(p) = paused {
        p.resume(progress.as_ref()).await;
    }
    result
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
    // Decided before anything is created: a configuration that cannot fit is refused whole.
    let budget = budget::native(
        opts.memory_limit,
        opts.backups_at_once,
        Wanted {
            workers: opts.parallel_tables,
            explicit: opts.parallel_tables_explicit,
            flag: "--parallel-tables",
        },
        opts.codec,
        opts.level,
        &opts.out,
    )?;
    let mut planned = opts.clone();
    planned.parallel_tables = budget.workers;
    let opts = &planned;
    let _lock = if opts.resume {
        if !opts.out.exists(crate::format::manifest::MANIFEST_FILE)? {
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
        &budget,
        strategy,
        progress,
        &cancel,
        &sessions,
        &children,
        &mut manifest,
    )
    .await;
    let result = match result {
        Err(e) => {
            sessions.cancel_all().await;
            let children = children.clone();
            let _ = tokio::task::spawn_blocking(move || children.terminate()).await;
            let baseline = manifest
                .as_ref()
                .and_then(|m| super::standby::conflict_baseline(&m.probe));
            Err(crate::source::standby::conflict::classify(e, conn, dbname, baseline).await)
        }
        ok => ok,
    };
    let Some(mut m) = manifest else {
        return result.map(|_| unreachable!("a successful backup has a manifest"));
    };
    if matches!(result, Ok(Done::AlreadyComplete)) {
        return Ok(m);
    }
    m.totals.duration_secs += started.elapsed().as_secs_f64();
    m.finished_at = Some(now_rfc3339());
    m.memory = Some(budget.record());
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
            // Not a consistent backup: not a whole one. A resume in the same snapshot makes
            // it consistent again (see `backup_locked`).
            m.consistent = false;
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
    budget: &crate::memory::Budget,
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
        // Another selection would mix two backups' tables.
        let filters = opts.selection(dbname)?.filters().recorded();
        if m.filters != filters {
            let show = |f: &Option<crate::format::selection::Filters>| {
                f.as_ref()
                    .map_or_else(|| "none (every table)".to_string(), |f| f.describe())
            };
            return Err(Error::Usage(format!(
                "--resume: the backup in {} was started with filters {}, not {}; resume it with the same ones (or none, to take them from the backup)",
                opts.out.display(),
                show(&m.filters),
                show(&filters)
            )));
        }
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
    let selection = opts.selection(dbname)?;
    let check = !opts.filters_per_database;
    let found = cancellable(
        cancel,
        sessions,
        probe(client, dbname, opts.lock_timeout, selection, check),
    )
    .await?;
    let findings = with_client_tools(found)?;
    let pg_dump_version = findings.pg_dump_version.clone();
    progress.note(&findings.summary_line(dbname));
    super::standby::warn_if_at_risk(&findings.probe, dbname, opts, progress.as_ref());
    progress.note(&format!("strategy: native ({})", strategy.reason));
    progress.note(&budget.line());
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
            let r = reconcile(&opts.out, &mut m, &snapshot)?;
            for bad in &r.bad_chunks {
                progress.note(&format!(
                    "resume: redoing a unit whose chunk failed its check: {bad}"
                ));
            }
            for table in &r.tables_recopied {
                progress.note(&format!(
                    "resume: copying table {table} again whole: its finished ranges were read in the first run's snapshot and its other ranges would be read in a new one"
                ));
            }
            progress.note(&format!(
                "resume: keeping {} finished units, redoing {}, deleted {} leftover files",
                r.units_kept, r.units_redo, r.files_deleted
            ));
            // Consistent when everything kept was read in the snapshot this run reads in
            // (a failed run's manifest says false until then).
            m.consistent = m.snapshot.as_deref() == Some(snapshot.as_str())
                && m.tables
                    .iter()
                    .flat_map(|t| &t.units)
                    .filter(|u| u.done)
                    .all(|u| u.snapshot.as_deref() == Some(snapshot.as_str()));
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
        return Err(
            crate::source::snapshot_loss::classify(e, conn, dbname, &snapshot, cancel).await,
        );
    }
    Ok(Done::Finished)
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
                    crate::format::copyfmt::CopyFormat::Text => t
                        .not_binary_because
                        .clone()
                        .or_else(|| Some("--copy-format text".into())),
                    crate::format::copyfmt::CopyFormat::Binary => None,
                },
                extension_config: t.extension_config.clone(),
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
        large_objects: crate::format::manifest::LargeObjects {
            count: found.large_object_count.max(0) as u64,
            bytes: 0,
            done: found.large_object_count == 0,
            chunks: vec![],
            metadata: None,
        },
        stream: vec![],
        totals: Totals::default(),
        memory: None,
        retries: 0,
        filters: found.selection.filters().recorded(),
    }
}
