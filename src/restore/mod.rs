//! `restore`: rebuilds a database from a manifest.
//!
//! Order: pre-data schema (pg_restore in one transaction; large objects' owners, ACLs and
//! comments from the backup's metadata file right after), then every chunk in parallel with
//! `COPY ... FROM STDIN` (several chunks of one table may load at once, each in its own
//! transaction), large-object data, post-data (indexes, constraints, triggers, matview refresh;
//! `pg_restore -j`, reading the archive that also holds pre-data so that it knows which tables
//! each statement locks), sequence values, ANALYZE, and with `--create` the database's own
//! settings last, so that a setting such as
//! `default_transaction_read_only = on` cannot break the restore itself.
//!
//! Each chunk's SHA-256 is checked as it streams; a mismatch aborts that chunk's COPY (its
//! transaction rolls back) and stops the restore with the file and table named.
//!
//! This file runs the phases in order; the target database is prepared in `target.rs`, the
//! pg_restore sections and sequences are `schema.rs`, the data `load.rs`, and backups made by
//! pg_dump (plain/custom) are restored by [`stream`]. What a failed restore left, and dropping
//! the database it created, is `failure.rs`, which wraps the whole. A filtered restore (`-t`,
//! `-n`, ...; `filter.rs`) restores the schema with `pg_restore -L` lists made from the
//! archive's TOC (`toc_plan.rs`) and loads only the chosen tables' chunks; `--as` and
//! `--into-schema` (one table beside the live ones) are `beside.rs`.

mod beside;
mod beside_custom;
mod beside_move;
pub mod budget;
mod failure;
mod filter;
mod load;
mod options;
mod rename;
mod schema;
pub mod stream;
mod target;
mod toc_plan;

pub use failure::restore_database;
pub use filter::{TableFilter, TableName};
pub use options::{RestoreOptions, RestoreSummary};
pub use rename::{rename_all, renamed, RenameTarget, MAX_NAME_BYTES};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::check::{verify_chunk, Payload};
use crate::format::manifest::{Manifest, Status, StrategyKind};
use crate::memory::Wanted;
use crate::progress::Progress;
use crate::source::conn::ConnParams;

use failure::{Ledger, Phase};
use load::load_data;
use schema::{pg_restore, set_sequences};
use target::{drop_foreign_keys, prepare_target};

async fn restore_phases(
    conn: &ConnParams,
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
    ledger: &Ledger,
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
    let native = manifest.strategy.kind == StrategyKind::Native;
    if opts.rename.is_some() {
        if manifest.strategy.kind == StrategyKind::Plain {
            return Err(Error::Usage(
                "--as/--into-schema need a native or custom backup: a plain backup is one SQL script, which cannot be split into tables safely; restore it whole into a scratch database instead".into(),
            ));
        }
        return beside::restore_beside(conn, opts, manifest, progress, cancel).await;
    }
    if manifest.strategy.kind == StrategyKind::Plain && opts.filter.is_active() {
        return Err(Error::Usage(
            "table filters need a native or custom backup: a plain backup is one SQL script, which cannot be split into tables safely (restore it whole, then drop what you do not need)".into(),
        ));
    }
    // Custom: a pattern that matches nothing is said before anything else (the plan proper
    // is made from the decompressed archive later); only the archive's head is read.
    if manifest.strategy.kind == StrategyKind::Custom && opts.filter.selects_tables() {
        let mut head = crate::format::stream::open_stream(&opts.dir, &manifest)?;
        let toc = crate::format::archive_toc::read_toc(&mut head)?;
        toc_plan::choose(&toc, &manifest.database.name, &opts.filter)?;
    }
    // Native: chosen from the schema archive's TOC before anything touches the target; the
    // manifest is narrowed to the chosen tables, so that only their chunks are read.
    let mut manifest = manifest;
    let lists = if native && opts.filter.is_active() {
        Some(toc_plan::plan_native(
            &opts.dir,
            &mut manifest,
            &opts.filter,
            opts.create,
            opts.work_dir.as_deref(),
        )?)
    } else {
        None
    };
    let manifest = manifest;
    let budget = budget::plan(
        opts.memory_limit,
        Wanted {
            workers: opts.jobs,
            explicit: opts.jobs_explicit,
            flag: "--jobs",
        },
        &manifest,
        &opts.dir,
    )?;
    progress.note(&budget.line());
    // The maintenance database cannot be dropped and recreated over the connection that would
    // do it (a cluster restore meets "postgres" this way). Like pg_dumpall, restore into it as
    // it stands: empty, or cleaned object by object with --clean; its properties still apply.
    let reuse = opts.create && opts.target == conn.maintenance_db;
    let opts = &RestoreOptions {
        create: opts.create && !reuse,
        // pg_restore's --jobs are child processes: only our own loaders are budgeted.
        jobs: if native { budget.workers } else { opts.jobs },
        ..opts.clone()
    };
    if manifest.strategy.kind != StrategyKind::Native {
        let mut s = stream::restore_stream(conn, opts, &manifest, progress, cancel, ledger).await?;
        if reuse {
            ledger.begin(Phase::Settings);
            crate::source::dbprops::apply_database_properties(
                conn,
                &opts.target,
                &manifest.database,
            )
            .await?;
        }
        s.memory = Some(budget.record());
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
    crate::format::chunk::ChunkReader::check_readable(&opts.dir, manifest.all_chunks())?;
    // The schema archives are small: check them before anything touches the target.
    for s in &manifest.schema {
        verify_chunk(&opts.dir, &s.chunk, Payload::Opaque)?;
    }

    let mut clock = std::time::Instant::now();
    let mut phase = |summary: &mut RestoreSummary, name: &'static str| {
        summary.phases.push((name, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    crate::source::pgtools::choose_for_restore_into(
        conn,
        manifest.server_version_num,
        crate::source::pgtools::version_num(&manifest.pg_dump_version),
        progress.as_ref(),
    )
    .await?;
    let clean_existing = opts.clean && !opts.create;
    ledger.plan(&failure::native_plan(clean_existing, opts.create || reuse));
    prepare_target(conn, opts, &manifest.database, progress.as_ref(), ledger).await?;
    let target = conn.connect(&opts.target).await?;
    if clean_existing {
        ledger.begin(Phase::CleanForeignKeys);
        let tables: Vec<(String, String)> = manifest
            .tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        drop_foreign_keys(&target.client, &tables).await?;
    }

    // One transaction: the schema goes in whole or not at all.
    let run_pre = lists.as_ref().is_none_or(|l| l.pre_data.runs());
    let run_data = lists.as_ref().is_none_or(|l| l.data.runs());
    if run_pre {
        ledger.begin(Phase::PreData);
        let mut pre = vec![
            "--section=pre-data".into(),
            "--exit-on-error".into(),
            "--single-transaction".into(),
        ];
        if opts.clean && !opts.create {
            pre.push("--clean".into());
            pre.push("--if-exists".into());
        }
        if let Some(l) = &lists {
            pre.extend(l.pre_data.args());
        }
        pg_restore(
            conn,
            &opts.dir,
            opts.work_dir.as_deref(),
            &opts.target,
            &manifest,
            "pre-data",
            pre,
            &cancel,
        )
        .await?;
        phase(&mut summary, "pre-data");
    }

    if run_data {
        ledger.begin(Phase::Data);
        if let Some(metadata) = &manifest.large_objects.metadata {
            crate::source::largeobj::restore_metadata(&target.client, &opts.dir, metadata).await?;
        }
        load_data(
            conn,
            opts,
            &manifest,
            &progress,
            &cancel,
            &mut summary,
            ledger,
        )
        .await?;
        phase(&mut summary, "data");
    }

    if run_pre {
        ledger.begin(Phase::PostData);
        // Stop at the first error: going on past one would build the rest of post-data on top of
        // a failure that the exit status reports anyway.
        let mut post = vec![
            "--section=post-data".into(),
            "--exit-on-error".into(),
            format!("--jobs={}", opts.jobs.max(1)).into(),
        ];
        if let Some(l) = &lists {
            post.extend(l.post_data.args());
        }
        pg_restore(
            conn,
            &opts.dir,
            opts.work_dir.as_deref(),
            &opts.target,
            &manifest,
            "post-data",
            post,
            &cancel,
        )
        .await?;
        phase(&mut summary, "post-data");
    }

    ledger.begin(Phase::Sequences);
    set_sequences(&target.client, &manifest).await?;
    target
        .client
        .batch_execute("ANALYZE")
        .await
        .map_err(|e| Error::query(format!("analyzing database {}", opts.target), e))?;
    phase(&mut summary, "analyze");
    if opts.create || reuse {
        ledger.begin(Phase::Settings);
        crate::source::dbprops::apply_database_properties(conn, &opts.target, &manifest.database)
            .await?;
    }
    summary.tables = match &lists {
        Some(toc_plan::SectionLists {
            chosen: Some(c), ..
        }) => c.len() as u64,
        _ => manifest.tables.len() as u64,
    };
    if let Some(l) = lists {
        summary.left_out_foreign_keys = l.left_out;
    }
    summary.memory = Some(budget.record());
    Ok(summary)
}
