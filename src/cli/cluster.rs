//! `backup cluster` and the restore of a cluster backup: options, the run, the summary table.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use dbbackup::backup::strategy::StrategyOptions;
use dbbackup::backup::BackupOptions;
use dbbackup::cluster::{ClusterManifest, ClusterRestoreOptions, DbStatus, Deadline};
use dbbackup::format::manifest::Status;
use dbbackup::progress::Progress;
use dbbackup::source::conn::ConnParams;
use dbbackup::{Error, Result};

use super::args::{parse_duration, ClusterArgs, RestoreArgs};
use super::progress::{human_bytes, reporter};

pub async fn backup_cluster(
    conn: &ConnParams,
    args: ClusterArgs,
    cancel: CancellationToken,
) -> Result<()> {
    let opts = super::resolve::cluster(&args)?;
    let progress: Arc<dyn Progress> = reporter(args.quiet);
    let result = dbbackup::cluster::backup_cluster(conn, &opts, progress, cancel).await;
    let result = result.and_then(|m| summarize_backup(&m, &opts.out, opts.db.memory_limit));
    super::repo::write_metrics_after(&args.metrics, args.repo.as_deref(), &opts.out, result)
}

/// The summary table; an error naming every part that failed unless all went well.
fn summarize_backup(
    m: &ClusterManifest,
    out: &dbbackup::storage::Store,
    memory_limit: Option<u64>,
) -> Result<()> {
    print_backup_summary(m, out);
    // The whole run's peak: every database's backup ran in this process.
    let whole_run = dbbackup::memory::MemoryRecord::peaks_now(memory_limit);
    if let Some(line) = super::commands::memory_summary(Some(&whole_run)) {
        println!("{line}");
    }
    if m.status == Status::Complete {
        return Ok(());
    }
    let mut problems = Vec::new();
    if let Some(e) = &m.globals.error {
        problems.push(Error::Refused(format!("globals: {e}")));
    }
    for d in &m.databases {
        if matches!(d.status, DbStatus::Failed | DbStatus::Pending) {
            problems.push(Error::Refused(format!(
                "database {:?}: {}",
                d.name,
                d.error.as_deref().unwrap_or("failed")
            )));
        }
    }
    Err(Error::Many(problems))
}

/// A table whose columns are as wide as their widest cell (counted in characters).
pub(super) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                s.push_str(&c);
            } else {
                let pad = widths[i] - c.chars().count();
                s.push_str(&c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Names with control characters would break the table: show them escaped.
fn shown(name: &str) -> String {
    if name.chars().any(|c| c.is_control()) {
        format!("{name:?}")
    } else {
        name.to_string()
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " | ")
}

fn print_backup_summary(m: &ClusterManifest, out: &dbbackup::storage::Store) {
    let mut rows = vec![vec![
        "(globals)".to_string(),
        "pg_dumpall".to_string(),
        match m.globals.status {
            Status::Complete => "complete".to_string(),
            _ => "failed".to_string(),
        },
        m.globals
            .file
            .as_ref()
            .map(|c| human_bytes(c.stored_bytes))
            .unwrap_or_default(),
        format!("{:.1}s", m.globals.duration_secs),
        one_line(
            &m.globals
                .error
                .clone()
                .or_else(|| m.globals.notes.first().cloned())
                .unwrap_or_default(),
        ),
    ]];
    for d in &m.databases {
        rows.push(vec![
            shown(&d.name),
            d.strategy.clone().unwrap_or_else(|| "-".into()),
            d.status.as_str().to_string(),
            if d.status == DbStatus::Complete {
                human_bytes(d.stored_bytes)
            } else {
                "-".into()
            },
            format!("{:.1}s", d.duration_secs),
            one_line(d.error.as_deref().unwrap_or("")),
        ]);
    }
    println!();
    print_table(
        &[
            "database", "strategy", "status", "size", "duration", "reason",
        ],
        &rows,
    );
    let ok = m
        .databases
        .iter()
        .filter(|d| d.status == DbStatus::Complete)
        .count();
    let failed = m
        .databases
        .iter()
        .filter(|d| d.status == DbStatus::Failed)
        .count();
    println!(
        "cluster backup {}: {ok} databases complete, {failed} failed, {} skipped, {} stored, {:.1}s -> {}",
        match m.status {
            Status::Complete => "complete",
            _ => "FAILED",
        },
        m.databases.len() - ok - failed,
        human_bytes(
            m.databases.iter().map(|d| d.stored_bytes).sum::<u64>()
                + m.globals.file.as_ref().map_or(0, |c| c.stored_bytes)
        ),
        m.duration_secs,
        out.display()
    );
    if !m.globals.role_passwords {
        println!("note: role passwords are not in this backup (not taken as a superuser: pg_dumpall --no-role-passwords)");
    }
}

/// `restore DIR --database NAME -d TARGET` with table filters (or `--as`): the one database's
/// backup inside the cluster backup, restored as a single-database backup.
pub fn one_database(
    store: &dbbackup::storage::Store,
    databases: &[String],
    target: Option<&str>,
) -> Result<dbbackup::storage::Store> {
    let [name] = databases else {
        return Err(Error::Usage(
            "table filters on a cluster backup need one --database NAME (the database the tables are in) and --dbname TARGET".into(),
        ));
    };
    if target.is_none() {
        return Err(Error::Usage(format!(
            "table filters on a cluster backup restore into an existing database: add --dbname TARGET (e.g. --dbname {name})"
        )));
    }
    let manifest = ClusterManifest::load(store)?;
    let Some(d) = manifest.databases.iter().find(|d| &d.name == name) else {
        let names: Vec<&str> = manifest.databases.iter().map(|d| d.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "--database {name:?} is not in this cluster backup (it has: {})",
            names.join(", ")
        )));
    };
    Ok(store.sub(&d.dir))
}

/// `restore DIR` of a cluster backup.
pub async fn restore_cluster(
    conn: &ConnParams,
    args: RestoreArgs,
    store: dbbackup::storage::Store,
    cancel: CancellationToken,
) -> Result<()> {
    if args.dbname.is_some() {
        return Err(Error::Usage(format!(
            "{} is a cluster backup: every database is restored under its own name; choose databases with --database NAME, not --dbname",
            args.dir.display()
        )));
    }
    if args.create {
        return Err(Error::Usage(
            "--create is implied for cluster backups (every database is created with its original properties)".into(),
        ));
    }
    let jobs = args.load.jobs()?;
    let started = Instant::now();
    let opts = ClusterRestoreOptions {
        memory_limit: args.load.memory_limit(),
        jobs_explicit: args.load.jobs_explicit(),
        dir: store,
        databases: args.database.clone(),
        clean: args.clean,
        jobs,
        work_dir: args.load.work_dir.clone(),
        keep_failed: args.keep_failed,
    };
    let progress: Arc<dyn Progress> = reporter(args.quiet);
    let report = dbbackup::cluster::restore_cluster(conn, &opts, progress, cancel).await?;

    // Roles that exist already are reported even with --quiet: they were kept as they are.
    for line in &report.globals.already_exists {
        eprintln!("dbbackup: note: globals: {line} (kept)");
    }
    for line in &report.globals.errors {
        eprintln!("dbbackup: warning: globals: {line}");
    }
    let g = &report.globals;
    let mut rows = vec![vec![
        "(globals)".to_string(),
        "psql".to_string(),
        if g.failed.is_some() || !g.errors.is_empty() {
            "failed".to_string()
        } else {
            "restored".to_string()
        },
        String::new(),
        String::new(),
        one_line(&match (&g.failed, g.errors.len(), g.already_exists.len()) {
            (Some(f), _, _) => f.clone(),
            (None, 0, 0) => String::new(),
            (None, e, a) => {
                let mut parts = Vec::new();
                if e > 0 {
                    parts.push(format!("{e} errors"));
                }
                if a > 0 {
                    parts.push(format!("{a} already existed (kept)"));
                }
                parts.join(", ")
            }
        }),
    ]];
    for d in &report.databases {
        rows.push(vec![
            shown(&d.name),
            d.strategy.clone().unwrap_or_else(|| "-".into()),
            if d.ok { "restored" } else { "failed" }.to_string(),
            if d.ok {
                human_bytes(d.raw_bytes)
            } else {
                "-".into()
            },
            format!("{:.1}s", d.duration_secs),
            one_line(d.reason.as_deref().unwrap_or("")),
        ]);
    }
    println!();
    print_table(
        &[
            "database", "strategy", "status", "size", "duration", "reason",
        ],
        &rows,
    );
    let ok = report.databases.iter().filter(|d| d.ok).count();
    println!(
        "cluster restore {}: {ok} of {} databases restored, {:.1}s",
        if report.success() {
            "complete"
        } else {
            "FAILED"
        },
        report.databases.len(),
        started.elapsed().as_secs_f64()
    );
    if report.success() {
        return Ok(());
    }
    let mut problems = Vec::new();
    if let Some(f) = &g.failed {
        problems.push(Error::Refused(format!("globals: {f}")));
    }
    for e in &g.errors {
        problems.push(Error::Refused(format!("globals: {e}")));
    }
    for d in report.databases.iter().filter(|d| !d.ok) {
        problems.push(Error::Refused(format!(
            "database {:?}: {}",
            d.name,
            d.reason.as_deref().unwrap_or("failed")
        )));
    }
    Err(Error::Many(problems))
}

/// `backup single --timeout`: the same guard as each database of a cluster backup.
pub async fn single_with_timeout(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    strategy: &StrategyOptions,
    timeout: &str,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<dbbackup::format::manifest::Manifest> {
    let deadline = Deadline {
        after: parse_duration(timeout).map_err(Error::Usage)?,
        text: timeout.to_string(),
    };
    let (name, o, s) = (dbname.to_string(), opts.clone(), strategy.clone());
    dbbackup::cluster::run_guarded(
        conn,
        dbname,
        &opts.out,
        Some(&deadline),
        &cancel,
        move |c, tok| async move {
            dbbackup::backup::strategy::backup_with_strategy(&c, &name, &o, &s, progress, tok).await
        },
    )
    .await
}
