//! One function per subcommand: build the engine's options, call it, print the summary.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use dbbackup::backup::strategy::backup_with_strategy;
use dbbackup::format::manifest::StrategyKind;
use dbbackup::format::stream::stock_restore_recipe;
use dbbackup::restore::{restore_database, RestoreOptions};
use dbbackup::source::conn::ConnParams;
use dbbackup::{Error, Result};

use super::args::{RestoreArgs, SingleArgs, VerifyArgs};
use super::progress::{human_bytes, reporter};

pub async fn backup_single(
    conn: &ConnParams,
    args: SingleArgs,
    cancel: CancellationToken,
) -> Result<()> {
    let (opts, strategy_opts) = super::resolve::single(&args)?;
    let (metrics, repo, out) = (args.metrics.clone(), args.repo.clone(), opts.out.clone());
    let result = run_single(conn, args, opts, strategy_opts, cancel).await;
    super::repo::write_metrics_after(&metrics, repo.as_deref(), &out, result)
}

async fn run_single(
    conn: &ConnParams,
    args: SingleArgs,
    opts: dbbackup::backup::BackupOptions,
    strategy_opts: dbbackup::backup::strategy::StrategyOptions,
    cancel: CancellationToken,
) -> Result<()> {
    let progress = reporter(args.quiet);
    let m = match &args.timeout {
        None => {
            backup_with_strategy(conn, &args.dbname, &opts, &strategy_opts, progress, cancel)
                .await?
        }
        Some(t) => {
            let (db, o, s) = (&args.dbname, &opts, &strategy_opts);
            super::cluster::single_with_timeout(conn, db, o, s, t, progress, cancel).await?
        }
    };
    let t = &m.totals;
    if !args.quiet && m.strategy.kind != StrategyKind::Native {
        println!(
            "backup of {} complete: {} (pg_dump {}), {} raw, {} stored (ratio {:.2}), {} chunks, {:.1}s, {}/s -> {}\nrestore with stock tools: {}",
            args.dbname,
            m.strategy.kind.as_str(),
            m.pg_dump_version,
            human_bytes(t.raw_bytes),
            human_bytes(t.stored_bytes),
            t.raw_bytes as f64 / t.stored_bytes.max(1) as f64,
            t.chunks,
            t.duration_secs,
            human_bytes((t.raw_bytes as f64 / t.duration_secs.max(0.001)) as u64),
            opts.out.display(),
            stock_restore_recipe(&opts.out, m.strategy.kind, m.options.codec, !m.options.recipients.is_empty())
        );
    } else if !args.quiet {
        let ratio = if t.stored_bytes > 0 {
            t.raw_bytes as f64 / t.stored_bytes as f64
        } else {
            0.0
        };
        println!(
            "backup of {} complete: {} tables, {} rows, {} large objects, {} raw, {} stored (ratio {:.2}), {} chunks, {:.1}s, {}/s -> {}",
            args.dbname,
            t.tables,
            t.rows,
            m.large_objects.count,
            human_bytes(t.raw_bytes),
            human_bytes(t.stored_bytes),
            ratio,
            t.chunks,
            t.duration_secs,
            human_bytes((t.raw_bytes as f64 / t.duration_secs.max(0.001)) as u64),
            opts.out.display()
        );
    }
    if !args.quiet {
        if let Some(line) = memory_summary(m.memory.as_ref()) {
            println!("{line}");
        }
    }
    Ok(())
}

/// `memory: peak RSS 27.3 MiB of the 128.0 MiB limit (planned 31.2 MiB); child programs' peak
/// 40.1 MiB (not counted)`.
pub fn memory_summary(record: Option<&dbbackup::format::manifest::MemoryRecord>) -> Option<String> {
    use dbbackup::memory::mib;
    let r = record?;
    let limit = match r.limit_bytes {
        Some(l) => format!("of the {} limit", mib(l)),
        None => "(no limit)".to_string(),
    };
    let children = if r.children_peak_rss_bytes > 0 {
        format!(
            "; child programs' peak {} (not counted)",
            mib(r.children_peak_rss_bytes)
        )
    } else {
        String::new()
    };
    let planned = if r.planned_bytes > 0 {
        format!(" (planned {})", mib(r.planned_bytes))
    } else {
        String::new()
    };
    Some(format!(
        "memory: peak RSS {} {limit}{planned}{children}",
        mib(r.peak_rss_bytes),
    ))
}

pub fn verify(args: VerifyArgs) -> Result<()> {
    let started = Instant::now();
    let store = super::location::backup_location_with_identities(
        args.repo.as_deref(),
        &args.dir,
        &args.keys,
    )?;
    let report = if dbbackup::cluster::is_cluster_backup(&store) {
        dbbackup::cluster::verify_cluster(&store)?
    } else {
        dbbackup::verify::verify_dir(&store)?
    };
    for w in &report.warnings {
        eprintln!("dbbackup: warning: {w}");
    }
    if !report.problems.is_empty() {
        return Err(Error::Many(report.problems));
    }
    if !args.quiet {
        println!(
            "verify {}: OK, {} files, {} rows, {} stored, {} raw, {:.1}s",
            args.dir.display(),
            report.files,
            report.rows,
            human_bytes(report.stored_bytes),
            human_bytes(report.raw_bytes),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

pub async fn restore(
    conn: &ConnParams,
    args: RestoreArgs,
    cancel: CancellationToken,
) -> Result<()> {
    let store = super::location::backup_location_with_identities(
        args.repo.as_deref(),
        &args.dir,
        &args.keys,
    )?;
    let filter = args.filter.filter()?;
    let rename = args.filter.rename(args.create, args.clean)?;
    let mut store = store;
    if dbbackup::cluster::is_cluster_backup(&store) {
        if !filter.is_active() {
            return super::cluster::restore_cluster(conn, args, store, cancel).await;
        }
        store = super::cluster::one_database(&store, &args.database, args.dbname.as_deref())?;
    } else if !args.database.is_empty() {
        return Err(Error::Usage(
            "--database chooses databases of a cluster backup; this is a single-database backup (use --dbname)".into(),
        ));
    }
    let Some(target) = args.dbname.clone() else {
        return Err(Error::Usage(format!(
            "--dbname is required: {} is a single-database backup (only cluster backups restore without it)",
            args.dir.display()
        )));
    };
    let started = Instant::now();
    let jobs = args.load.jobs()?;
    let opts = RestoreOptions {
        memory_limit: args.load.memory_limit(),
        jobs_explicit: args.load.jobs_explicit(),
        dir: store,
        target,
        create: args.create,
        clean: args.clean,
        jobs,
        work_dir: args.load.work_dir,
        keep_failed: args.keep_failed,
        filter,
        rename,
    };
    let progress: Arc<dyn dbbackup::progress::Progress> = reporter(args.quiet);
    let s = restore_database(conn, &opts, progress, cancel).await?;
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64();
        println!(
            "restore into {} complete: {} tables, {} rows, {} chunks, {} raw, {:.1}s, {}/s",
            opts.target,
            s.tables,
            s.rows,
            s.chunks,
            human_bytes(s.raw_bytes),
            secs,
            human_bytes((s.raw_bytes as f64 / secs.max(0.001)) as u64)
        );
        if let Some(created) = &s.created {
            println!("  created: {created}");
        }
        if !s.left_out_foreign_keys.is_empty() {
            println!(
                "  foreign keys left out ({}; the tables they reference were not restored): {}",
                s.left_out_foreign_keys.len(),
                s.left_out_foreign_keys.join(", ")
            );
        }
        if !s.phases.is_empty() {
            let phases: Vec<String> = s
                .phases
                .iter()
                .map(|(name, secs)| format!("{name} {secs:.1}s"))
                .collect();
            println!("  phases: {}", phases.join(", "));
        }
        if let Some(line) = memory_summary(s.memory.as_ref()) {
            println!("{line}");
        }
    }
    Ok(())
}
