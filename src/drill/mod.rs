//! `drill`: proves that a backup restores, the weekly "test your backups" job as one call.
//!
//! The backup is restored through the ordinary restore path into a scratch database created
//! for it (`dbbackup_drill_<db>_<YYYYMMDDTHHMMSSZ>`), every table's row count, every sequence
//! and the number of large objects are compared with the manifest ([`compare`]), the scratch
//! database is dropped (also when the restore failed; kept only when asked), and the result is
//! recorded beside the backup ([`record`]).
//!
//! A backup that does not restore, or restores into something else than its manifest says, is
//! a failed drill: an outcome with `passed: false`, not an error. Errors are reserved for what
//! prevents a drill from being run at all (an unreadable manifest, a scratch name in use).
//!
//! A cluster backup is drilled database by database, each through its own directory, which is
//! an ordinary database backup; each gets its own scratch database and record.

pub mod compare;
pub mod record;

pub use record::{DrillRecord, DRILLS_DIR};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::manifest::{quote_ident, Manifest};
use crate::progress::Progress;
use crate::restore::{restore_database, RestoreOptions};
use crate::source::conn::{ConnParams, Session};
use crate::storage::Store;

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1).
const MAX_NAME_BYTES: usize = 63;

#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The backup: one database's backup location (with identities for an encrypted one).
    pub backup: Store,
    /// The scratch database's name (default: see [`scratch_name`]); it must not exist.
    pub scratch_name: Option<String>,
    /// Leave the scratch database in place afterwards.
    pub keep_scratch: bool,
    /// Parallel loaders of the restore.
    pub jobs: usize,
    /// Where pg_restore's seekable archive goes (custom-format backups), as for restore.
    pub work_dir: Option<PathBuf>,
    /// The restore's `--memory-limit`.
    pub memory_limit: Option<u64>,
    /// `jobs` was given by the user (refused, not shrunk, when it does not fit the limit).
    pub jobs_explicit: bool,
}

/// One drill's result.
#[derive(Debug)]
pub struct DrillOutcome {
    /// `db@YYYYMMDDTHHMMSSZ`: the database and when its backup started.
    pub label: String,
    pub record: DrillRecord,
    /// What the comparison covered (all zero when the restore failed).
    pub tables: u64,
    pub rows: u64,
    pub sequences: u64,
    pub large_objects: u64,
    /// Where the record was stored, or why it could not be.
    pub stored: std::result::Result<String, String>,
}

impl DrillOutcome {
    /// `drill of shop@20261129T020000Z: passed in 12.3 s (30 tables, 300357 rows, 2 sequences,
    /// 3 large objects)`, or `… FAILED in 4.1 s: <first difference>` with the other
    /// differences on the lines below.
    pub fn summary(&self) -> String {
        let r = &self.record;
        if r.passed {
            format!(
                "drill of {}: passed in {:.1} s ({} tables, {} rows, {} sequences, {} large objects)",
                self.label, r.duration_secs, self.tables, self.rows, self.sequences, self.large_objects
            )
        } else {
            let mut text = format!(
                "drill of {}: FAILED in {:.1} s: ",
                self.label, r.duration_secs
            );
            text.push_str(&r.differences.join("\n"));
            text
        }
    }
}

/// The default scratch database name: `dbbackup_drill_<db>_<YYYYMMDDTHHMMSSZ>`, with every
/// character of the database name outside `[A-Za-z0-9_]` replaced by `_` and the name
/// shortened so that the whole fits PostgreSQL's 63 bytes.
pub fn scratch_name(database: &str, at: OffsetDateTime) -> String {
    let stamp = record::compact(at);
    let room = MAX_NAME_BYTES - "dbbackup_drill__".len() - stamp.len();
    let db: String = database
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => c,
            _ => '_',
        })
        .take(room)
        .collect();
    format!("dbbackup_drill_{db}_{stamp}")
}

/// Drills the backup of one database (see the module documentation). `conn` is the server to
/// restore into.
pub async fn drill_database(
    conn: &ConnParams,
    opts: &DrillOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<DrillOutcome> {
    let manifest = Manifest::load(&opts.backup)?;
    let started = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let scratch = opts
        .scratch_name
        .clone()
        .unwrap_or_else(|| scratch_name(&manifest.database.name, started));
    // Held until the scratch database is dropped: a second drill choosing the same name (the
    // same backup drilled twice in one second) is refused instead of sharing, or dropping, it.
    let claim = claim_scratch(conn, &scratch).await?;

    let restore = RestoreOptions {
        dir: opts.backup.clone(),
        target: scratch.clone(),
        create: true,
        clean: false,
        jobs: opts.jobs.max(1),
        work_dir: opts.work_dir.clone(),
        memory_limit: opts.memory_limit,
        jobs_explicit: opts.jobs_explicit,
        // A failed restore drops the scratch database itself, saying so, unless it is kept.
        keep_failed: opts.keep_scratch,
        filter: Default::default(),
        rename: None,
    };
    let mut differences = Vec::new();
    let mut counted = (0, 0, 0, 0);
    match restore_database(conn, &restore, progress.clone(), cancel).await {
        Err(e) => differences.push(format!("the restore failed: {e}")),
        Ok(_) => match conn.connect(&scratch).await {
            Err(e) => differences.push(format!("the restored database cannot be opened: {e}")),
            Ok(session) => {
                let seen = compare::observe(&session.client, &manifest).await;
                differences = compare::differences(&manifest, &seen);
                counted = (
                    manifest.tables.len() as u64,
                    manifest.tables.iter().map(|t| t.rows()).sum(),
                    manifest.sequences.len() as u64,
                    manifest.large_objects.count,
                );
            }
        },
    }
    if opts.keep_scratch {
        progress.note(&format!(
            "the scratch database {scratch:?} is kept (--keep-scratch)"
        ));
    } else if let Err(e) = drop_scratch(&claim, &scratch).await {
        differences.push(format!(
            "the scratch database {scratch:?} could not be dropped: {e}"
        ));
    }

    let record = DrillRecord {
        database: manifest.database.name.clone(),
        backup_started_at: manifest.started_at.clone(),
        started_at: record::rfc3339(started),
        finished_at: crate::clock::now_rfc3339(),
        duration_secs: clock.elapsed().as_secs_f64(),
        passed: differences.is_empty(),
        differences,
        scratch_database: scratch,
        tool: format!("dbbackup {}", env!("CARGO_PKG_VERSION")),
    };
    let stored = record.store(&opts.backup).map_err(|e| e.to_string());
    let backup_time = record::parse_rfc3339(&manifest.started_at)
        .map(record::compact)
        .unwrap_or_else(|| manifest.started_at.clone());
    Ok(DrillOutcome {
        label: format!("{}@{backup_time}", manifest.database.name),
        record,
        tables: counted.0,
        rows: counted.1,
        sequences: counted.2,
        large_objects: counted.3,
        stored,
    })
}

/// Drills every database of a cluster backup that was backed up completely, one after the
/// other, each into its own scratch database; a database whose backup failed is a failed
/// drill of its own. `scratch_name` does not apply (one name cannot serve several databases).
pub async fn drill_cluster(
    conn: &ConnParams,
    opts: &DrillOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Vec<DrillOutcome>> {
    if opts.scratch_name.is_some() {
        return Err(Error::Usage(
            "--scratch-name names one database; a cluster backup is drilled into one scratch database per database (leave it out)".into(),
        ));
    }
    let cluster = crate::cluster::ClusterManifest::load(&opts.backup)?;
    let mut outcomes = Vec::new();
    for db in &cluster.databases {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        if db.status == crate::cluster::DbStatus::Skipped {
            continue;
        }
        let one = DrillOptions {
            backup: opts.backup.sub(&db.dir),
            ..opts.clone()
        };
        progress.note(&format!("drilling database {:?}", db.name));
        let outcome = match drill_database(conn, &one, progress.clone(), cancel.clone()).await {
            Ok(outcome) => outcome,
            // This database's backup cannot even be read: its drill failed, the others go on.
            Err(e @ (Error::Manifest { .. } | Error::Corrupt { .. })) => {
                unreadable(&one.backup, &db.name, &cluster.started_at, e)
            }
            Err(e) => return Err(e),
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The failed drill of a database whose backup has no readable manifest, recorded all the same.
fn unreadable(backup: &Store, database: &str, cluster_started: &str, e: Error) -> DrillOutcome {
    let now = crate::clock::now_rfc3339();
    let record = DrillRecord {
        database: database.to_string(),
        backup_started_at: cluster_started.to_string(),
        started_at: now.clone(),
        finished_at: now,
        duration_secs: 0.0,
        passed: false,
        differences: vec![format!("the backup cannot be read: {e}")],
        scratch_database: String::new(),
        tool: format!("dbbackup {}", env!("CARGO_PKG_VERSION")),
    };
    let stored = record.store(backup).map_err(|e| e.to_string());
    let backup_time = record::parse_rfc3339(cluster_started)
        .map(record::compact)
        .unwrap_or_else(|| cluster_started.to_string());
    DrillOutcome {
        label: format!("{database}@{backup_time}"),
        record,
        tables: 0,
        rows: 0,
        sequences: 0,
        large_objects: 0,
        stored,
    }
}

/// A drill creates its scratch database and drops it afterwards: it must never be one that
/// was there before.
/// Advisory-lock class of scratch-database names (the other key is the name's hash).
const SCRATCH_LOCK_CLASS: i32 = 0x6462_6472; // "dbdr"

/// Claims scratch database `name` for this drill: a session on the maintenance database that
/// holds an advisory lock on the name (refused if another drill holds it), after checking that
/// no such database exists (a drill restores only into a database it creates, and drops only
/// that). The claim lasts as long as the session.
async fn claim_scratch(conn: &ConnParams, name: &str) -> Result<Session> {
    let maint = conn.connect(&conn.maintenance_db).await?;
    let claimed: bool = maint
        .client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&SCRATCH_LOCK_CLASS, &name],
        )
        .await
        .map_err(|e| Error::query("claiming the scratch database's name", e))?
        .get(0);
    if !claimed {
        return Err(Error::Refused(format!(
            "another drill is using the scratch database name {name:?} right now; run this one \
             later or give it another --scratch-name"
        )));
    }
    let exists = maint
        .client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| Error::query("looking up the scratch database", e))?
        .is_some();
    if exists {
        return Err(Error::Refused(format!(
            "database {name:?} already exists: a drill restores only into a database it creates (choose another --scratch-name, or drop it)"
        )));
    }
    Ok(maint)
}

async fn drop_scratch(claim: &Session, name: &str) -> Result<()> {
    claim
        .client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
        .map_err(|e| Error::query(format!("dropping the scratch database {name:?}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_fit_and_need_no_quoting() {
        let at = record::parse_rfc3339("2026-11-29T02:00:00Z").unwrap();
        assert_eq!(
            scratch_name("shop", at),
            "dbbackup_drill_shop_20261129T020000Z"
        );
        let long = scratch_name(&"Ä-very-long-Name".repeat(10), at);
        assert_eq!(long.len(), MAX_NAME_BYTES);
        assert!(
            long.starts_with("dbbackup_drill___very_long_Name"),
            "{long}"
        );
    }
}
