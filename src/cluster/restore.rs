//! Cluster `restore`: the globals, then every database of a cluster backup.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::chunk::ChunkReader;
use crate::format::manifest::{Chunk, Status};
use crate::progress::Progress;
use crate::restore::{restore_database, RestoreOptions};
use crate::source::child::Child;
use crate::source::conn::ConnParams;
use crate::storage::Store;

use super::manifest::{ClusterManifest, DbStatus};

/// psql stderr lines kept while restoring globals (every "already exists" is reported).
const GLOBALS_STDERR_LINES: usize = 100_000;

// Restore
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ClusterRestoreOptions {
    pub dir: crate::storage::Store,
    /// `--database NAME`: restore only these (empty = all).
    pub databases: Vec<String>,
    pub clean: bool,
    pub jobs: usize,
    pub work_dir: Option<PathBuf>,
    /// `--memory-limit` (one database restores at a time, so each gets all of it).
    pub memory_limit: Option<u64>,
    pub jobs_explicit: bool,
    /// `--keep-failed`: a database whose restore failed is kept as it was left, not dropped.
    pub keep_failed: bool,
}

#[derive(Debug, Default)]
pub struct GlobalsOutcome {
    /// The globals were not restored (no file, or psql could not run).
    pub failed: Option<String>,
    /// psql's "... already exists" errors: expected when roles are there already.
    pub already_exists: Vec<String>,
    /// Every other error psql reported.
    pub errors: Vec<String>,
}

#[derive(Debug)]
pub struct DbRestoreOutcome {
    pub name: String,
    pub strategy: Option<String>,
    pub ok: bool,
    pub raw_bytes: u64,
    pub duration_secs: f64,
    pub reason: Option<String>,
}

#[derive(Debug, Default)]
pub struct ClusterRestoreReport {
    pub globals: GlobalsOutcome,
    pub databases: Vec<DbRestoreOutcome>,
}

impl ClusterRestoreReport {
    /// True when the globals had no error other than "already exists" and every chosen
    /// database restored.
    pub fn success(&self) -> bool {
        self.globals.failed.is_none()
            && self.globals.errors.is_empty()
            && self.databases.iter().all(|d| d.ok)
    }
}

/// Restores a cluster backup: globals through psql (errors reported, none fatal), then each
/// chosen database created from template0 with its original properties, then its data.
/// A database that fails does not stop the others; the report says what happened to each.
pub async fn restore_cluster(
    conn: &ConnParams,
    opts: &ClusterRestoreOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<ClusterRestoreReport> {
    let manifest = ClusterManifest::load(&opts.dir)?;
    for want in &opts.databases {
        if !manifest.databases.iter().any(|d| &d.name == want) {
            let names: Vec<&str> = manifest.databases.iter().map(|d| d.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "--database {want:?} is not in this cluster backup (it has: {})",
                names.join(", ")
            )));
        }
    }
    let mut report = ClusterRestoreReport::default();
    // Globals need a psql that reads what the backup's pg_dumpall wrote; each database's
    // restore chooses again for its own archive.
    crate::source::pgtools::choose_for_restore_into(
        conn,
        manifest.server_version_num,
        0,
        progress.as_ref(),
    )
    .await?;

    match &manifest.globals.file {
        Some(chunk) if manifest.globals.status == Status::Complete => {
            let (conn2, dir, chunk) = (conn.clone(), opts.dir.clone(), chunk.clone());
            report.globals =
                tokio::task::spawn_blocking(move || restore_globals(&conn2, &dir, &chunk))
                    .await
                    .unwrap_or_else(|e| GlobalsOutcome {
                        failed: Some(format!("globals thread failed: {e}")),
                        ..Default::default()
                    });
        }
        _ => {
            report.globals.failed = Some(format!(
                "the backup has no globals ({})",
                manifest.globals.error.as_deref().unwrap_or("not complete")
            ));
        }
    }
    if !manifest.globals.role_passwords {
        progress.note("warning: this backup's globals carry no role passwords (it was not taken as a superuser)");
    }
    for line in &report.globals.already_exists {
        progress.note(&format!("globals: {line} (kept)"));
    }
    for line in &report.globals.errors {
        progress.note(&format!("globals: error: {line}"));
    }

    for d in &manifest.databases {
        if !opts.databases.is_empty() && !opts.databases.contains(&d.name) {
            continue;
        }
        if d.status == DbStatus::Skipped {
            continue;
        }
        if cancel.is_cancelled() {
            report.databases.push(DbRestoreOutcome {
                name: d.name.clone(),
                strategy: d.strategy.clone(),
                ok: false,
                raw_bytes: 0,
                duration_secs: 0.0,
                reason: Some("interrupted before it started".into()),
            });
            continue;
        }
        let started = Instant::now();
        if d.status != DbStatus::Complete {
            report.databases.push(DbRestoreOutcome {
                name: d.name.clone(),
                strategy: d.strategy.clone(),
                ok: false,
                raw_bytes: 0,
                duration_secs: 0.0,
                reason: Some(format!(
                    "not restorable: its backup failed ({})",
                    d.error.as_deref().unwrap_or("no reason recorded")
                )),
            });
            continue;
        }
        progress.note(&format!("database {}: restoring", d.name));
        let ropts = RestoreOptions {
            dir: opts.dir.sub(&d.dir),
            target: d.name.clone(),
            create: true,
            clean: opts.clean,
            jobs: opts.jobs,
            work_dir: opts.work_dir.clone(),
            memory_limit: opts.memory_limit,
            jobs_explicit: opts.jobs_explicit,
            keep_failed: opts.keep_failed,
            filter: Default::default(),
            rename: None,
        };
        let r = restore_database(conn, &ropts, progress.clone(), cancel.clone()).await;
        let outcome = DbRestoreOutcome {
            name: d.name.clone(),
            strategy: d.strategy.clone(),
            ok: r.is_ok(),
            raw_bytes: d.raw_bytes,
            duration_secs: started.elapsed().as_secs_f64(),
            reason: r.err().map(|e| e.to_string()),
        };
        progress.note(&format!(
            "database {}: {}",
            d.name,
            match &outcome.reason {
                None => "restored".to_string(),
                Some(r) => format!("FAILED: {r}"),
            }
        ));
        report.databases.push(outcome);
    }
    Ok(report)
}

/// Feeds the globals SQL to psql without ON_ERROR_STOP, so that one role that exists already
/// does not stop the rest; every error line psql prints is sorted into the outcome.
fn restore_globals(conn: &ConnParams, dir: &Store, chunk: &Chunk) -> GlobalsOutcome {
    let mut outcome = GlobalsOutcome::default();
    // Small: checked whole before psql sees a byte of it.
    if let Err(e) =
        crate::format::check::verify_chunk(dir, chunk, crate::format::check::Payload::Opaque)
    {
        outcome.failed = Some(e.to_string());
        return outcome;
    }
    let args: Vec<OsString> = vec![
        "-X".into(),
        "-q".into(),
        "--no-password".into(),
        "-v".into(),
        "ON_ERROR_STOP=0".into(),
        "-f".into(),
        "-".into(),
    ];
    let run = || -> Result<Child> {
        let mut child = Child::spawn_keeping(
            "psql",
            &args,
            &conn.child_env(&conn.maintenance_db),
            Stdio::piped(),
            Stdio::null(),
            GLOBALS_STDERR_LINES,
        )?;
        let mut stdin = child.stdin().expect("piped");
        let mut reader = ChunkReader::open(dir, chunk)?;
        let path = dir.describe(&chunk.file);
        std::io::copy(&mut reader, &mut stdin)
            .map_err(|e| Error::io("feeding psql from", &path, e))?;
        drop(stdin);
        reader.finish()?;
        Ok(child)
    };
    let child = match run() {
        Ok(c) => c,
        Err(e) => {
            outcome.failed = Some(e.to_string());
            return outcome;
        }
    };
    let (status, tail) = child.wait_with_stderr();
    if let Err(e) = status {
        outcome.failed = Some(e.to_string());
    }
    for line in tail.lines() {
        let Some(pos) = line.find("ERROR:").or_else(|| line.find("FATAL:")) else {
            continue;
        };
        let msg = line[pos..]
            .split_once(':')
            .map_or("", |x| x.1)
            .trim()
            .to_string();
        if msg.ends_with("already exists") {
            outcome.already_exists.push(msg);
        } else {
            outcome.errors.push(msg);
        }
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
