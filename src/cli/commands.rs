//! One function per subcommand: build the engine's options, call it, print the summary.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use dbbackup::backup::{backup_database, BackupOptions};
use dbbackup::conn::ConnParams;
use dbbackup::restore::{restore_database, RestoreOptions};
use dbbackup::{Error, Result};

use super::args::{RestoreArgs, SingleArgs, VerifyArgs};
use super::progress::{human_bytes, reporter};

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

pub async fn backup_single(
    conn: &ConnParams,
    args: SingleArgs,
    cancel: CancellationToken,
) -> Result<()> {
    let level = args.compress_level.unwrap_or(args.compress.default_level());
    args.compress.check_level(level).map_err(Error::Usage)?;
    let parallel = args.parallel_tables.unwrap_or_else(cores);
    if parallel == 0 {
        return Err(Error::Usage("--parallel-tables must be at least 1".into()));
    }
    let opts = BackupOptions {
        out: args.out,
        parallel_tables: parallel,
        codec: args.compress,
        level,
        chunk_size: args.chunk_size,
        split_larger_than: args
            .split_tables_larger_than
            .unwrap_or(args.chunk_size.saturating_mul(4)),
        copy_format: args.copy_format,
        lock_timeout: args.lock_wait_timeout,
    };
    let progress = reporter(args.quiet);
    let m = backup_database(conn, &args.dbname, &opts, progress, cancel).await?;
    let t = &m.totals;
    if !args.quiet {
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
    Ok(())
}

pub fn verify(args: VerifyArgs) -> Result<()> {
    let started = Instant::now();
    let report = dbbackup::verify::verify_dir(&args.dir)?;
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
    let started = Instant::now();
    let jobs = args.jobs.unwrap_or_else(cores);
    if jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let opts = RestoreOptions {
        dir: args.dir,
        target: args.dbname,
        create: args.create,
        clean: args.clean,
        jobs,
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
    }
    Ok(())
}
