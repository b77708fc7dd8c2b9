//! `backup cluster`: the globals and every selected database, each isolated from the others'
//! failures.

use std::ffi::OsString;
use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backup::strategy::{FormatChoice, StrategyOptions};
use crate::backup::{prepare_out_dir, BackupOptions};
use crate::clock::now_rfc3339;
use crate::error::{Error, Result};
use crate::format::chunk::ChunkWriter;
use crate::format::manifest::{Chunk, Manifest, Status};
use crate::progress::{Progress, Silent};
use crate::source::child::Child;
use crate::source::conn::ConnParams;
use crate::storage::Store;

use super::guard::{run_guarded, Deadline};
use super::manifest::{
    dir_name, format_for, format_name, glob_match, selected, ClusterManifest, ClusterOptionsRecord,
    DatabaseEntry, DbStatus, GlobalsRecord, CLUSTER_FORMAT_VERSION, CLUSTER_KIND, GLOBALS_DIR,
};

// Backup
// ---------------------------------------------------------------------------------------------

/// Options of `backup cluster`.
#[derive(Debug, Clone)]
pub struct ClusterBackupOptions {
    pub out: crate::storage::Store,
    pub timeout: Deadline,
    pub parallel_databases: usize,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Per-database options; `out` is replaced by the database's directory.
    pub db: BackupOptions,
    /// `--format` etc.; `format` is replaced per database by `database_formats`.
    pub strategy: StrategyOptions,
    /// `--database-format PATTERN=FORMAT`, first match wins.
    pub database_formats: Vec<(String, FormatChoice)>,
}

/// A database found on the server.
struct Candidate {
    name: String,
    size: i64,
    skip: Option<String>,
}

/// Server connections one database backup may hold at once with `format`.
fn connections_per_database(
    format: FormatChoice,
    strategy: &StrategyOptions,
    parallel_tables: usize,
) -> usize {
    let native = match format {
        FormatChoice::Native => true,
        FormatChoice::Auto => strategy.parallel_tables_explicit.is_some_and(|n| n > 1),
        FormatChoice::Plain | FormatChoice::Custom => false,
    };
    if native {
        // Workers, the coordinator, one pg_dump.
        parallel_tables.max(1) + 2
    } else if format == FormatChoice::Auto {
        // A value too large for pg_dump turns auto native with one worker (see
        // backup::strategy): coordinator + worker + pg_dump.
        3
    } else {
        // The probe, then pg_dump.
        2
    }
}

/// Backs up the globals and every selected database into `opts.out`. Failures of single
/// databases (or of the globals) do not stop the run: they are recorded in the returned
/// manifest, whose status is then `failed`. Errors are returned only for what prevents the
/// run as a whole (output directory, server unreachable, too few free connections).
pub async fn backup_cluster(
    conn: &ConnParams,
    opts: &ClusterBackupOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<ClusterManifest> {
    let started = Instant::now();
    let maint = conn.connect(&conn.maintenance_db).await?;
    let facts = maint
        .client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),
                    current_setting('max_connections')::int,
                    current_setting('superuser_reserved_connections')::int
                      + coalesce(current_setting('reserved_connections', true)::int, 0),
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
                    coalesce((SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user), -1),
                    (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user
                       AND backend_type = 'client backend')::int",
            &[],
        )
        .await
        .map_err(|e| Error::query("reading server facts", e))?;
    let server_version: String = facts.get(0);
    let server_version_num: i32 = facts.get(1);
    let superuser: bool = facts.get(2);
    let max_connections: i32 = facts.get(3);
    let reserved: i32 = facts.get(4);
    let in_use: i32 = facts.get(5);
    let role_limit: i32 = facts.get(6);
    let role_in_use: i32 = facts.get(7);
    let tools = crate::source::pgtools::choose_for_backup(server_version_num)?;
    crate::backup::probe::check_pg_dump_version(
        tools.version_num,
        &tools.version,
        server_version_num,
        &server_version,
    )?;
    progress.note(&format!("server {server_version}, {}", tools.describe()));
    // One pause for the whole run, not one per database: replay is paused for the whole
    // server, so with --parallel-databases one database's resume would expose another's
    // snapshot, and between databases it would only pause again at once.
    let (paused, db_opts) =
        crate::backup::pause_if_asked(conn, &conn.maintenance_db, &opts.db, progress.as_ref())
            .await?;

    // Templates are never dumped; databases that refuse connections (or were left invalid by
    // an interrupted DROP DATABASE) are listed as skipped.
    let rows = maint
        .client
        .query(
            "SELECT datname, datallowconn, datconnlimit = -2,
                    CASE WHEN has_database_privilege(oid, 'CONNECT') AND datallowconn
                         THEN pg_database_size(oid) ELSE 0 END
             FROM pg_database WHERE NOT datistemplate",
            &[],
        )
        .await
        .map_err(|e| Error::query("listing databases", e))?;
    let mut candidates: Vec<Candidate> = rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let allow: bool = r.get(1);
            let invalid: bool = r.get(2);
            Candidate {
                name,
                // NULL when the database is dropped while we list it (its row is still in
                // our snapshot of pg_database, its files are gone).
                size: r.get::<_, Option<i64>>(3).unwrap_or(0),
                skip: if invalid {
                    Some("invalid database (interrupted DROP DATABASE)".into())
                } else if !allow {
                    Some("datallowconn is false: connections are not allowed".into())
                } else {
                    None
                },
            }
        })
        .filter(|c| selected(&c.name, &opts.include, &opts.exclude))
        .collect();
    if !opts.db.filters.is_empty() {
        let names: Vec<String> = candidates
            .iter()
            .filter(|c| c.skip.is_none())
            .map(|c| c.name.clone())
            .collect();
        let skips = super::filters::check_databases(conn, &opts.db.filters, &names).await?;
        let mut skips = skips.into_iter();
        for c in candidates.iter_mut().filter(|c| c.skip.is_none()) {
            c.skip = skips.next().flatten();
        }
    }
    // Largest first: the longest backup must not start last.
    candidates.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
    for p in &opts.include {
        if !rows
            .iter()
            .any(|r| glob_match(p, r.get::<_, String>(0).as_str()))
        {
            progress.note(&format!(
                "warning: --include-database {p:?} matches no database"
            ));
        }
    }

    // Connection budget.
    let runnable = candidates.iter().filter(|c| c.skip.is_none()).count();
    let parallel = opts.parallel_databases.max(1).min(runnable.max(1));
    let per_db = candidates
        .iter()
        .filter(|c| c.skip.is_none())
        .map(|c| {
            connections_per_database(
                format_for(&c.name, &opts.database_formats, opts.strategy.format),
                &opts.strategy,
                opts.db.parallel_tables,
            )
        })
        .max()
        .unwrap_or(0);
    // +1: the maintenance connection that stops a timed-out database.
    let needed = (parallel * per_db + 1) as i32;
    let mut free = max_connections - in_use - if superuser { 0 } else { reserved };
    if !superuser && role_limit >= 0 {
        free = free.min(role_limit - role_in_use);
    }
    if runnable > 0 && needed > free {
        return Err(Error::Refused(format!(
            "not enough free server connections: --parallel-databases {parallel} x {per_db} connections per database (--parallel-tables {} + coordinator + pg_dump) + 1 = {needed} needed, but only {free} are free (max_connections {max_connections}, {in_use} in use{}{}); lower --parallel-databases or --parallel-tables",
            opts.db.parallel_tables,
            if superuser { String::new() } else { format!(", {reserved} reserved for superusers") },
            if !superuser && role_limit >= 0 { format!(", role connection limit {role_limit} with {role_in_use} in use") } else { String::new() },
        )));
    }

    let (previous, _lock) = if opts.db.resume {
        let previous = ClusterManifest::load(&opts.out)?;
        (
            Some(previous),
            crate::storage::lock::DirLock::acquire(&opts.out)?,
        )
    } else {
        (None, prepare_out_dir(&opts.out)?)
    };
    let mut manifest = ClusterManifest {
        kind: CLUSTER_KIND.into(),
        format_version: CLUSTER_FORMAT_VERSION,
        tool: format!("dbbackup {}", env!("CARGO_PKG_VERSION")),
        status: Status::InProgress,
        error: None,
        started_at: now_rfc3339(),
        finished_at: None,
        server_version,
        server_version_num,
        options: ClusterOptionsRecord {
            timeout: opts.timeout.text.clone(),
            parallel_databases: opts.parallel_databases,
            parallel_tables: opts.db.parallel_tables,
            format: format_name(opts.strategy.format).into(),
            database_formats: opts
                .database_formats
                .iter()
                .map(|(p, f)| format!("{p}={}", format_name(*f)))
                .collect(),
            include: opts.include.clone(),
            exclude: opts.exclude.clone(),
            parallel_tables_explicit: opts.strategy.parallel_tables_explicit.is_some(),
            database: Some(crate::backup::options_record(&opts.db)),
            filters: opts.db.filters.recorded(),
        },
        globals: GlobalsRecord {
            status: Status::InProgress,
            error: None,
            file: None,
            role_passwords: superuser,
            notes: vec![],
            duration_secs: 0.0,
        },
        databases: candidates
            .iter()
            .map(|c| DatabaseEntry {
                name: c.name.clone(),
                dir: dir_name(&c.name),
                status: if c.skip.is_some() {
                    DbStatus::Skipped
                } else {
                    DbStatus::Pending
                },
                strategy: None,
                database_size: c.size,
                raw_bytes: 0,
                stored_bytes: 0,
                duration_secs: 0.0,
                error: c.skip.clone(),
                timed_out: false,
            })
            .collect(),
        duration_secs: 0.0,
        memory: None,
    };
    drop(maint);
    let mut globals_done = false;
    if let Some(prev) = &previous {
        // Resume: what completed stays, whole; the rest runs again.
        if prev.globals.status == Status::Complete && prev.globals.file.is_some() {
            manifest.globals = prev.globals.clone();
            globals_done = true;
        }
        for entry in &mut manifest.databases {
            let Some(old) = prev.databases.iter().find(|d| d.name == entry.name) else {
                continue;
            };
            let dir = opts.out.sub(&old.dir);
            let complete = old.status == DbStatus::Complete
                && Manifest::load(&dir).is_ok_and(|m| m.status == Status::Complete);
            if complete {
                *entry = old.clone();
                progress.note(&format!(
                    "database {}: already complete, skipped",
                    entry.name
                ));
            }
        }
    }
    manifest.store(&opts.out)?;

    // Globals first.
    let g_started = Instant::now();
    if !superuser {
        let note = "not connected as a superuser: globals dumped with pg_dumpall --no-role-passwords; role passwords are NOT in this backup".to_string();
        progress.note(&format!("warning: {note}"));
        manifest.globals.notes.push(note);
    }
    let globals = if globals_done {
        Ok(manifest
            .globals
            .file
            .clone()
            .expect("complete globals have a file"))
    } else {
        let (conn, out, codec, level) =
            (conn.clone(), opts.out.clone(), opts.db.codec, opts.db.level);
        tokio::task::spawn_blocking(move || dump_globals(&conn, &out, codec, level, superuser))
            .await
            .unwrap_or_else(|e| Err(Error::Refused(format!("globals thread failed: {e}"))))
    };
    manifest.globals.duration_secs = g_started.elapsed().as_secs_f64();
    match globals {
        Ok(chunk) => {
            progress.note(&format!(
                "globals: complete ({} roles/tablespaces SQL, {} stored)",
                crate::progress::human_bytes(chunk.raw_bytes),
                crate::progress::human_bytes(chunk.stored_bytes)
            ));
            manifest.globals.file = Some(chunk);
            manifest.globals.status = Status::Complete;
        }
        Err(e) => {
            progress.note(&format!("globals: FAILED: {e}"));
            manifest.globals.status = Status::Failed;
            manifest.globals.error = Some(e.to_string());
        }
    }
    manifest.store(&opts.out)?;

    // Then the databases, `parallel` at a time.
    let per_db_progress: Arc<dyn Progress> = if parallel == 1 {
        progress.clone()
    } else {
        Arc::new(Silent)
    };
    let mut queue: std::collections::VecDeque<usize> = manifest
        .databases
        .iter()
        .enumerate()
        .filter(|(_, d)| d.status == DbStatus::Pending)
        .map(|(i, _)| i)
        .collect();
    let total = queue.len();
    let mut done = 0usize;
    let mut running: JoinSet<(usize, Result<Manifest>, f64)> = JoinSet::new();
    loop {
        while running.len() < parallel && !cancel.is_cancelled() {
            let Some(i) = queue.pop_front() else { break };
            let entry = &manifest.databases[i];
            let name = entry.name.clone();
            let out = opts.out.sub(&entry.dir);
            let mut db_opts = db_opts.clone();
            db_opts.out = out.clone();
            if opts.db.resume {
                // Native backups continue where they stopped; anything else starts over.
                // A placeholder manifest (the backup failed before planning) has nothing to keep.
                let resumable = Manifest::load(&out).is_ok_and(|m| {
                    m.strategy.kind == crate::format::manifest::StrategyKind::Native
                        && !m.server_version.is_empty()
                });
                db_opts.resume = resumable;
                if !resumable {
                    let cleared = out.clean_incomplete().and_then(|_| {
                        out.list()?
                            .into_iter()
                            .try_for_each(|(name, _)| out.delete(&name))
                    });
                    if let Err(e) = cleared {
                        progress.note(&format!(
                            "database {name}: cannot clear {}: {e}",
                            out.display()
                        ));
                    }
                }
            }
            let mut sopts = opts.strategy.clone();
            sopts.format = format_for(&name, &opts.database_formats, opts.strategy.format);
            let (conn, deadline, cancel, progress) = (
                conn.clone(),
                opts.timeout.clone(),
                cancel.clone(),
                per_db_progress.clone(),
            );
            progress.note(&format!("database {name}: starting"));
            running.spawn(async move {
                let t = Instant::now();
                let name2 = name.clone();
                let r = run_guarded(
                    &conn,
                    &name,
                    &out,
                    Some(&deadline),
                    &cancel,
                    move |c, tok| async move {
                        crate::backup::strategy::backup_with_strategy(
                            &c, &name2, &db_opts, &sopts, progress, tok,
                        )
                        .await
                    },
                )
                .await;
                (i, r, t.elapsed().as_secs_f64())
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, result, secs) = match joined {
            Ok(x) => x,
            Err(e) => {
                return Err(Error::Refused(format!(
                    "a database backup task failed: {e}"
                )));
            }
        };
        done += 1;
        let entry = &mut manifest.databases[i];
        entry.duration_secs = secs;
        let dir = opts.out.sub(&entry.dir);
        let m = Manifest::load(&dir).ok();
        if let Some(m) = &m {
            entry.strategy = Some(m.strategy.kind.as_str().to_string());
            entry.raw_bytes = m.totals.raw_bytes;
            entry.stored_bytes = m.totals.stored_bytes;
        }
        match result {
            Ok(_) => {
                entry.status = DbStatus::Complete;
                entry.error = None;
            }
            Err(e) => {
                entry.status = DbStatus::Failed;
                entry.timed_out = matches!(e, Error::Timeout { .. });
                entry.error = Some(if entry.timed_out {
                    opts.timeout.reason()
                } else {
                    e.to_string()
                });
                // A failed database keeps no strategy it never got to use.
                if m.as_ref().is_some_and(|m| m.server_version.is_empty()) {
                    entry.strategy = None;
                }
            }
        }
        progress.note(&format!(
            "database {} ({done}/{total}): {}{} in {:.1}s",
            entry.name,
            entry.status.as_str(),
            entry
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            secs
        ));
        manifest.store(&opts.out)?;
    }
    if let Some(p) = paused {
        p.resume(progress.as_ref()).await;
    }
    for i in queue {
        let entry = &mut manifest.databases[i];
        entry.status = DbStatus::Failed;
        entry.error = Some("interrupted before it started".into());
    }
    manifest.duration_secs = started.elapsed().as_secs_f64();
    manifest.finished_at = Some(now_rfc3339());
    manifest.memory = Some(crate::memory::MemoryRecord::peaks_now(opts.db.memory_limit));
    manifest.recompute_status();
    manifest.store(&opts.out)?;
    Ok(manifest)
}

/// `pg_dumpall --globals-only` into `out/globals/globals.sql[.zst]`, through the environment's
/// connection settings (never a password on the command line).
fn dump_globals(
    conn: &ConnParams,
    out: &Store,
    codec: crate::format::compress::Codec,
    level: i32,
    superuser: bool,
) -> Result<Chunk> {
    out.create_dir(GLOBALS_DIR)?;
    let mut args: Vec<OsString> = vec![
        "--globals-only".into(),
        "--no-password".into(),
        "--database".into(),
        conn.maintenance_db.clone().into(),
    ];
    if !superuser {
        args.push("--no-role-passwords".into());
    }
    let mut child = Child::spawn(
        "pg_dumpall",
        &args,
        &conn.child_env(&conn.maintenance_db),
        Stdio::null(),
        Stdio::piped(),
    )?;
    let mut stdout = child.stdout().expect("piped");
    let rel = format!("{GLOBALS_DIR}/globals.sql{}", codec.extension());
    let mut writer = ChunkWriter::create(out, &rel, codec, level, 0)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stdout
            .read(&mut buf)
            .map_err(|e| Error::io("reading pg_dumpall output for", out.describe(&rel), e))?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n])?;
    }
    child.wait()?;
    writer.finish(0)
}

// ---------------------------------------------------------------------------------------------
