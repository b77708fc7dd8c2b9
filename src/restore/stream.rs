//! Restore of the pg_dump strategies' backups ([`crate::format::stream`]).
//!
//! Restore streams the decompressed pieces, checking each piece's SHA-256 as it goes, into
//! `psql -v ON_ERROR_STOP=1 --single-transaction` (plain; the large objects' own
//! `BEGIN;`/`COMMIT;` left out, see [`crate::source::script_filter`]) or
//! `pg_restore --single-transaction` (custom, `--jobs 1`). A bad piece kills the child before
//! its input ends, so its transaction rolls back and nothing of the restore is committed.
//! Custom with `--jobs N > 1` (or `--clean` into an existing database) needs a seekable file:
//! the archive is decompressed (and so fully verified) into `--work-dir` first, then restored
//! section by section ([`restore_sections`]).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::storage::Store;
use std::process::Stdio;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use std::collections::BTreeSet;

use super::failure::{stream_plan, Ledger, Phase};
use super::filter::TableName;
use super::options::{RestoreOptions, RestoreSummary};
use super::target::{drop_foreign_keys, prepare_target};
use super::toc_plan::SectionLists;
use crate::error::{Error, Result};
use crate::format::manifest::{Manifest, StrategyKind};
use crate::format::stream::{check_pieces, finish_stream, open_stream, stream_error, IO_BUF};
use crate::progress::human_bytes;
use crate::progress::Progress;
use crate::source::child::supervise;
use crate::source::child::Child;
use crate::source::conn::dbname_conninfo;
use crate::source::conn::ConnParams;

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// Restores a custom archive (decompressed into `file`) section by section: pre-data in one
/// transaction, then data and post-data, each with `pg_restore --jobs N`.
///
/// Why not one `pg_restore --jobs N` over the whole archive: the archive came through a pipe,
/// so it has no data offsets, and pg_restore then follows its own order rather than waiting
/// for the data — PostgreSQL 18's `NOT NULL ... NOT VALID` on a partitioned parent depends
/// only on the parent, ran before a partition's rows were loaded, and refused them. Sections
/// make every statement of post-data wait for all of the data, as the native restore does.
///
/// With `clean` (`restore --clean` into an existing database): `pg_restore --clean` over the
/// whole archive trips over objects it drops in the wrong order (foreign keys between the
/// archive's tables, partitions' inherited constraints). So the foreign keys touching the
/// archive's tables are dropped first, and pre-data is cleaned and recreated in its one
/// transaction.
async fn restore_sections(
    conn: &ConnParams,
    opts: &RestoreOptions,
    file: &Path,
    cancel: &CancellationToken,
    clean: bool,
    lists: Option<&SectionLists>,
    ledger: &Ledger,
) -> Result<()> {
    if clean {
        ledger.begin(Phase::CleanForeignKeys);
        drop_archive_foreign_keys(conn, opts, file, lists.and_then(|l| l.chosen.as_ref())).await?;
    }
    let env = conn.child_env(&opts.target);
    let target = dbname_conninfo(&opts.target);
    let mut pre: Vec<OsString> = vec!["--section=pre-data".into()];
    if clean {
        pre.extend(["--clean".into(), "--if-exists".into()]);
    }
    pre.push("--single-transaction".into());
    let passes: [Vec<OsString>; 3] = [
        pre,
        vec![
            "--section=data".into(),
            format!("--jobs={}", opts.jobs.max(1)).into(),
        ],
        vec![
            "--section=post-data".into(),
            format!("--jobs={}", opts.jobs.max(1)).into(),
        ],
    ];
    for (phase, mut args) in [Phase::PreData, Phase::Data, Phase::PostData]
        .into_iter()
        .zip(passes)
    {
        // A filtered restore: only the chosen entries, and no pass at all for a section it
        // leaves out (--schema-only, --data-only).
        if let Some(l) = lists {
            let list = match phase {
                Phase::PreData => &l.pre_data,
                Phase::Data => &l.data,
                _ => &l.post_data,
            };
            if !list.runs() {
                continue;
            }
            args.extend(list.args());
        }
        ledger.begin(phase);
        args.extend([
            "--exit-on-error".into(),
            "--no-password".into(),
            format!("--dbname={target}").into(),
            file.as_os_str().to_os_string(),
        ]);
        let child = crate::source::pgrestore::spawn(args, &env, Stdio::null())?;
        let pid = child.id();
        let handle = tokio::task::spawn_blocking(move || child.wait());
        supervise(pid, handle, cancel).await?;
    }
    Ok(())
}

/// Drops the foreign keys that touch the tables of the archive `file` in the target (for
/// `--clean`).
async fn drop_archive_foreign_keys(
    conn: &ConnParams,
    opts: &RestoreOptions,
    file: &Path,
    only: Option<&BTreeSet<TableName>>,
) -> Result<()> {
    let session = conn.connect(&opts.target).await?;
    let listing = std::process::Command::new(crate::source::child::pg_program("pg_restore"))
        .arg("--list")
        .arg(file)
        .output()
        .map_err(|e| Error::io("running pg_restore --list on", file, e))?;
    let toc = String::from_utf8_lossy(&listing.stdout);
    // TOC lines read `ID; OID OID TABLE schema name owner`, names unquoted: match them against
    // the target's tables instead of splitting on spaces.
    let existing: Vec<(String, String, String)> = session
        .client
        .query(
            "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')",
            &[],
        )
        .await
        .map_err(|e| Error::query("listing the target's tables (--clean)", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let in_archive: Vec<(String, String)> = existing
        .into_iter()
        .filter(|(schema, name, owner)| {
            let entry = format!(" TABLE {schema} {name} {owner}");
            toc.lines().any(|l| l.ends_with(&entry))
        })
        .map(|(schema, name, _)| (schema, name))
        .filter(|t| only.is_none_or(|o| o.contains(t)))
        .collect();
    drop_foreign_keys(&session.client, &in_archive).await
}

/// Restores a plain or custom backup (see the module documentation).
pub(crate) async fn restore_stream(
    conn: &ConnParams,
    opts: &RestoreOptions,
    manifest: &Manifest,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
    ledger: &Ledger,
) -> Result<RestoreSummary> {
    let kind = manifest.strategy.kind;
    if kind == StrategyKind::Plain && opts.clean && !opts.create {
        return Err(Error::Refused(
            "a plain backup carries no DROP statements, so --clean needs --create (drop and recreate the whole database)".into(),
        ));
    }
    check_pieces(&opts.dir, manifest)?;
    crate::source::pgtools::choose_for_restore_into(
        conn,
        manifest.server_version_num,
        crate::source::pgtools::version_num(&manifest.pg_dump_version),
        progress.as_ref(),
    )
    .await?;
    let raw_total: u64 = manifest.stream.iter().map(|c| c.raw_bytes).sum();

    // pg_restore --jobs needs a seekable file: decompress (and so verify) it before anything
    // touches the target. --clean into an existing database needs it too: it is restored
    // section by section (see restore_sections), even with --jobs 1.
    let mut temp: Option<TempFile> = None;
    let clean_existing = opts.clean && !opts.create;
    let filtered = opts.filter.is_active();
    if kind == StrategyKind::Custom && (opts.jobs > 1 || clean_existing || filtered) {
        temp = Some(decompress_archive(opts, manifest, &progress, &cancel).await?);
    }
    // Chosen from the archive's TOC before anything touches the target.
    let lists = match (&temp, filtered) {
        (Some(t), true) => Some(super::toc_plan::plan_lists(
            &super::toc_plan::read_file_toc(&t.0)?,
            None,
            &manifest.database.name,
            &opts.filter,
            opts.create,
            opts.work_dir.as_deref(),
        )?),
        _ => None,
    };

    let first: &[Phase] = match (kind, &temp) {
        (StrategyKind::Custom, Some(_)) if clean_existing => &[
            Phase::CleanForeignKeys,
            Phase::PreData,
            Phase::Data,
            Phase::PostData,
        ],
        (StrategyKind::Custom, Some(_)) => &[Phase::PreData, Phase::Data, Phase::PostData],
        (StrategyKind::Plain, _) => &[Phase::Script],
        _ => &[Phase::Archive],
    };
    ledger.plan(&stream_plan(first, opts.create));
    prepare_target(conn, opts, &manifest.database, progress.as_ref(), ledger).await?;
    // Section-by-section restores mark their own phases as they go.
    if !matches!(first[0], Phase::CleanForeignKeys | Phase::PreData) {
        ledger.begin(first[0]);
    }
    let target = dbname_conninfo(&opts.target);
    let env = conn.child_env(&opts.target);
    progress.start("restore", raw_total);
    let result = match (kind, &temp) {
        (StrategyKind::Custom, Some(file)) => {
            progress.worker_busy(0, "pg_restore");
            restore_sections(
                conn,
                opts,
                &file.0,
                &cancel,
                clean_existing,
                lists.as_ref(),
                ledger,
            )
            .await
        }
        _ => {
            let (program, mut args): (&str, Vec<OsString>) = match kind {
                StrategyKind::Plain => (
                    "psql",
                    vec![
                        "-X".into(),
                        "-q".into(),
                        "--echo-errors".into(),
                        "-v".into(),
                        "ON_ERROR_STOP=1".into(),
                        "--single-transaction".into(),
                        "--no-password".into(),
                        "-f".into(),
                        "-".into(),
                    ],
                ),
                _ => (
                    "pg_restore",
                    vec![
                        "--exit-on-error".into(),
                        "--single-transaction".into(),
                        "--no-password".into(),
                    ],
                ),
            };
            args.push(format!("--dbname={target}").into());
            progress.worker_busy(0, program);
            let child = if program == "pg_restore" {
                crate::source::pgrestore::spawn(args, &env, Stdio::piped())?
            } else {
                Child::spawn(program, &args, &env, Stdio::piped(), Stdio::null())?
            };
            let pid = child.id();
            let handle = {
                let (dir, m, progress, cancel) = (
                    opts.dir.clone(),
                    manifest.clone(),
                    progress.clone(),
                    cancel.clone(),
                );
                tokio::task::spawn_blocking(move || feed(child, &dir, &m, &progress, &cancel))
            };
            supervise(pid, handle, &cancel).await
        }
    };
    progress.worker_idle(0);
    progress.finish();
    drop(temp);
    result?;

    ledger.begin(Phase::Analyze);
    let session = conn.connect(&opts.target).await?;
    session
        .client
        .batch_execute("ANALYZE")
        .await
        .map_err(|e| Error::query(format!("analyzing database {}", opts.target), e))?;
    drop(session);
    if opts.create {
        ledger.begin(Phase::Settings);
        crate::source::dbprops::apply_database_properties(conn, &opts.target, &manifest.database)
            .await?;
    }
    Ok(RestoreSummary {
        tables: match &lists {
            Some(SectionLists {
                chosen: Some(c), ..
            }) => c.len() as u64,
            _ => manifest
                .probe
                .get("tables")
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        },
        left_out_foreign_keys: lists.map(|l| l.left_out).unwrap_or_default(),
        rows: 0,
        chunks: manifest.stream.len() as u64,
        raw_bytes: raw_total,
        warnings: vec![],
        ..RestoreSummary::default()
    })
}

/// Streams the decompressed backup into `child`'s stdin. Every piece's checksum is checked
/// before the child sees the end of its input; on any problem the child is killed first (so a
/// single-transaction restore rolls back), then the error is returned.
fn feed(
    mut child: Child,
    dir: &Store,
    m: &Manifest,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<()> {
    // A plain script from newer tools may set parameters the target lacks (see pgrestore),
    // and its large objects' own BEGIN/COMMIT would end psql's single transaction early
    // (see script_filter). A custom archive is binary and goes through unchanged.
    let plain = m.strategy.kind == StrategyKind::Plain;
    let mut stdin = crate::source::script_filter::ScriptFilter::new(
        child.stdin().expect("stdin is piped"),
        if plain {
            crate::source::pgrestore::settings_to_leave_out()
        } else {
            vec![]
        },
        plain,
    );
    let mut dec = match open_stream(dir, m) {
        Ok(d) => d,
        Err(e) => {
            child.terminate();
            return Err(e);
        }
    };
    let mut buf = vec![0u8; IO_BUF];
    let mut raw = 0u64;
    loop {
        if cancel.is_cancelled() {
            child.terminate();
            return Err(Error::Interrupted);
        }
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                child.terminate();
                return Err(stream_error(&mut dec, e));
            }
        };
        raw += n as u64;
        if let Err(e) = stdin.write_all(&buf[..n]) {
            drop(stdin);
            // The child stopped reading: its exit status and stderr say why.
            child.wait()?;
            return Err(Error::Refused(format!(
                "the restore program stopped reading its input before the end ({e})"
            )));
        }
        progress.add_bytes(n as u64);
    }
    if let Err(e) = finish_stream(&mut dec, m, dir, raw) {
        child.terminate();
        return Err(e);
    }
    // Only now may the child see the end of its input (and commit).
    if let Err(e) = stdin.flush() {
        drop(stdin);
        child.wait()?;
        return Err(Error::Refused(format!(
            "the restore program stopped reading its input before the end ({e})"
        )));
    }
    drop(stdin);
    child.wait()
}

/// Decompresses (and so verifies) the custom archive of the backup into `--work-dir` (by
/// default beside the backup), as a file removed when dropped.
pub(super) async fn decompress_archive(
    opts: &RestoreOptions,
    manifest: &Manifest,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<TempFile> {
    let raw_total: u64 = manifest.stream.iter().map(|c| c.raw_bytes).sum();
    let work_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None => default_work_dir(&opts.dir),
    };
    check_free_space(&work_dir, raw_total)?;
    let path = work_dir.join(format!(".dbbackup-restore-{}.dump", std::process::id()));
    let t = TempFile(path.clone());
    progress.start("decompress", raw_total);
    let handle = {
        let (dir, m, progress, cancel) = (
            opts.dir.clone(),
            manifest.clone(),
            progress.clone(),
            cancel.clone(),
        );
        tokio::task::spawn_blocking(move || decompress_to(&dir, &m, &path, &progress, &cancel))
    };
    let r = handle
        .await
        .unwrap_or_else(|e| Err(Error::Refused(format!("decompression thread failed: {e}"))));
    progress.finish();
    r?;
    Ok(t)
}

/// A file removed when dropped.
pub(super) struct TempFile(pub(super) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Beside the backup: the directory that holds the backup directory; for a backup in an
/// object store, the system's temporary directory.
fn default_work_dir(backup: &Store) -> PathBuf {
    let Some(dir) = backup.local_dir() else {
        return std::env::temp_dir();
    };
    let abs = fs::canonicalize(&dir).unwrap_or(dir);
    abs.parent().map_or(abs.clone(), Path::to_path_buf)
}

/// Refuses to start when `dir` has less than `need` bytes free (plus a small margin).
fn check_free_space(dir: &Path, need: u64) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| {
        Error::io(
            "checking free space in --work-dir",
            dir,
            io::Error::from_raw_os_error(e as i32),
        )
    })?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    let margin = 16u64 << 20;
    if free < need.saturating_add(margin) {
        return Err(Error::Refused(format!(
            "--work-dir {}: pg_restore --jobs needs the decompressed archive as a seekable file there: {} needed ({} bytes), only {} free; choose another --work-dir, or use --jobs 1 to stream into pg_restore",
            dir.display(),
            human_bytes(need.saturating_add(margin)),
            need,
            human_bytes(free)
        )));
    }
    Ok(())
}

/// Decompresses (and so verifies) the stream into `path` (created 0600, new).
fn decompress_to(
    dir: &Store,
    m: &Manifest,
    path: &Path,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("creating the temporary archive", path, e))?;
    let guard = TempFile(path.to_path_buf());
    let mut out = io::BufWriter::with_capacity(IO_BUF, file);
    let mut dec = open_stream(dir, m)?;
    let mut buf = vec![0u8; IO_BUF];
    let mut raw = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(&mut dec, e)),
        };
        raw += n as u64;
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("writing the temporary archive", path, e))?;
        progress.add_bytes(n as u64);
    }
    finish_stream(&mut dec, m, dir, raw)?;
    out.flush()
        .map_err(|e| Error::io("writing the temporary archive", path, e))?;
    std::mem::forget(guard);
    Ok(())
}
