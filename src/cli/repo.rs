//! `list`, `expire` and `--metrics-file`: the commands on a backup repository.

use std::path::Path;

use serde_json::json;

use dbbackup::clock::rfc3339;
use dbbackup::cluster::glob_match;
use dbbackup::repo::catalog::{scan, BackupRecord, Catalog};
use dbbackup::repo::expire::{plan, remove_backup, Verdict};
use dbbackup::repo::layout::stamp;
use dbbackup::repo::metrics::{render, write_atomically};
use dbbackup::repo::retention::Policy;
use dbbackup::storage::lock::DirLock;
use dbbackup::storage::Store;
use dbbackup::{Error, Result};

use super::args::{parse_duration, ExpireArgs, ListArgs, MetricsArgs};
use super::progress::human_bytes;

/// After a backup or a drill, successful or not: writes `--metrics-file` (from the
/// repository, or from the one backup alone). The run's own error comes first; a metrics file
/// that cannot be written fails an otherwise successful run.
pub fn write_metrics_after(
    metrics: &MetricsArgs,
    repo: Option<&str>,
    out: &Store,
    result: Result<()>,
) -> Result<()> {
    let Some(path) = &metrics.metrics_file else {
        return result;
    };
    let written = match repo {
        Some(repo) => super::location::open_repo(repo).and_then(|r| metrics_from_repo(&r, path)),
        None => dbbackup::repo::catalog::record_at(out)
            .and_then(|record| write_atomically(path, &render(&[record]))),
    };
    match (result, written) {
        (Ok(()), written) => written,
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(m)) => {
            eprintln!("dbbackup: warning: metrics file: {m}");
            Err(e)
        }
    }
}

fn metrics_from_repo(repo: &Store, path: &Path) -> Result<()> {
    write_atomically(path, &render(&scan(repo)?.backups))
}

/// `list --repo LOCATION [--database PATTERN] [--json] [--metrics-file FILE]`.
pub fn list(args: ListArgs) -> Result<()> {
    let repo = super::location::open_repo(&args.repo)?;
    let catalog = scan(&repo)?;
    if let Some(path) = &args.metrics.metrics_file {
        write_atomically(path, &render(&catalog.backups))?;
    }
    let shown: Vec<&BackupRecord> = catalog
        .backups
        .iter()
        .filter(|b| matches_pattern(args.database.as_deref(), b))
        .collect();
    if args.json {
        let doc = json!({
            "repository": catalog.location,
            "backups": shown.iter().map(|b| record_json(&repo, b)).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serializes")
        );
        return Ok(());
    }
    if shown.is_empty() {
        println!("no backups in {}", catalog.location);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = shown.iter().map(|b| record_row(b)).collect();
    super::cluster::print_table(
        &[
            "database",
            "time",
            "kind",
            "strategy",
            "status",
            "consistent",
            "raw",
            "stored",
            "duration",
            "encrypted",
        ],
        &rows,
    );
    Ok(())
}

fn matches_pattern(pattern: Option<&str>, b: &BackupRecord) -> bool {
    pattern.is_none_or(|p| glob_match(p, &b.database))
}

fn yes_no(v: bool) -> String {
    if v { "yes" } else { "no" }.to_string()
}

fn record_row(b: &BackupRecord) -> Vec<String> {
    let finished = matches!(b.status.as_str(), "complete" | "failed");
    vec![
        b.database.clone(),
        stamp(b.time),
        b.kind.as_str().into(),
        // Not the whole database: said where the strategy is (details in --json).
        match (&b.strategy, &b.filters) {
            (Some(s), Some(_)) => format!("{s}, filtered"),
            (None, Some(_)) => "filtered".into(),
            (s, None) => s.clone().unwrap_or_else(|| "-".into()),
        },
        b.status.as_str().into(),
        yes_no(b.consistent),
        human_bytes(b.raw_bytes),
        human_bytes(b.stored_bytes),
        if finished {
            format!("{:.1}s", b.duration_secs)
        } else {
            "-".into()
        },
        yes_no(b.encrypted),
    ]
}

fn record_json(repo: &Store, b: &BackupRecord) -> serde_json::Value {
    json!({
        "database": b.database,
        "time": stamp(b.time),
        "name": format!("{}@{}", b.database, stamp(b.time)),
        "started_at": rfc3339(b.time),
        "finished_at": b.finished_at.map(rfc3339),
        "kind": b.kind.as_str(),
        "strategy": b.strategy,
        "status": b.status.as_str(),
        "error": b.error,
        "consistent": b.consistent,
        "raw_bytes": b.raw_bytes,
        "stored_bytes": b.stored_bytes,
        "duration_secs": b.duration_secs,
        "encrypted": b.encrypted,
        "tables": b.tables,
        "rows": b.rows,
        "retries": b.retries,
        "filters": b.filters,
        "peak_rss_bytes": b.peak_rss_bytes,
        "last_drill": b.last_drill.as_ref().map(|d| json!({
            "at": rfc3339(d.at),
            "passed": d.passed,
        })),
        "location": repo.describe(&b.dir).display().to_string(),
    })
}

/// `expire --repo LOCATION --keep-* ... [--dry-run]`.
pub fn expire(args: ExpireArgs) -> Result<()> {
    let policy = Policy {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_within: args
            .keep_within
            .as_ref()
            .map(|t| parse_duration(t).map(|d| (d, t.clone())))
            .transpose()
            .map_err(Error::Usage)?,
    };
    if policy.is_empty() {
        return Err(Error::Usage(
            "no rule given: expire deletes nothing without --keep-last, --keep-daily, --keep-weekly, --keep-monthly or --keep-within".into(),
        ));
    }
    let repo = super::location::open_repo(&args.repo)?;
    // One expire at a time; backups lock their own directories, not this one.
    let _lock = match args.dry_run {
        true => None,
        false => Some(DirLock::acquire(&repo)?),
    };
    let catalog = scan(&repo)?;
    let result = run_expire(&repo, &catalog, &policy, &args);
    if let Some(path) = &args.metrics.metrics_file {
        let written = metrics_from_repo(&repo, path);
        return result.and(written);
    }
    result
}

fn run_expire(repo: &Store, catalog: &Catalog, policy: &Policy, args: &ExpireArgs) -> Result<()> {
    let decisions = plan(catalog, policy, args.database.as_deref());
    let mut problems = Vec::new();
    let (mut kept, mut removed) = (0, 0);
    for d in &decisions {
        let b = &d.backup;
        let name = format!("{}@{}", b.database, stamp(b.time));
        match &d.verdict {
            Verdict::Keep(why) => {
                kept += 1;
                println!(
                    "keep    {name}  ({}; {})",
                    b.status.as_str(),
                    why.join(", ")
                );
            }
            Verdict::Remove(why) => {
                let verb = if args.dry_run {
                    "would remove"
                } else {
                    "remove"
                };
                println!("{verb:<7} {name}  ({}; {why})", b.status.as_str());
                if args.dry_run {
                    removed += 1;
                    continue;
                }
                match remove_backup(repo, b) {
                    Ok(()) => removed += 1,
                    Err(e) => problems.push(Error::Refused(format!("removing {name}: {e}"))),
                }
            }
        }
    }
    println!(
        "expire {}: {kept} kept, {removed} {}",
        catalog.location,
        if args.dry_run {
            "would be removed (dry run: nothing deleted)"
        } else {
            "removed"
        }
    );
    match problems.is_empty() {
        true => Ok(()),
        false => Err(Error::Many(problems)),
    }
}
