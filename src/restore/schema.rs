//! The schema sections through pg_restore (pre-data, post-data, with our session settings),
//! and the sequence values.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::chunk::ChunkReader;
use crate::format::manifest::{quote_ident, Chunk, Manifest};
use crate::source::child::{supervise, Child};
use crate::source::conn::{dbname_conninfo, ConnParams};
use crate::storage::Store;

/// Session settings for pg_restore's connections (added to the user's `PGOPTIONS`): commits
/// need not wait for WAL flushes (a crash means restoring again anyway; the last commit of the
/// restore flushes everything), and index builds sort in memory.
fn restore_pgoptions() -> String {
    let ours = "-c synchronous_commit=off -c maintenance_work_mem=512MB";
    match std::env::var("PGOPTIONS") {
        Ok(user) if !user.trim().is_empty() => format!("{user} {ours}"),
        _ => ours.to_string(),
    }
}

/// Runs pg_restore for one schema section of the backup into `target`: `args` name the
/// section (`--section=...`), which selects it from the archive that holds it (one archive of
/// both sections, or that section's own archive in backups of earlier versions). On
/// cancellation its process group is stopped ([`supervise`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn pg_restore(
    conn: &ConnParams,
    dir: &Store,
    work_dir: Option<&std::path::Path>,
    target: &str,
    manifest: &Manifest,
    section: &str,
    mut args: Vec<OsString>,
    cancel: &CancellationToken,
) -> Result<()> {
    let Some(file) = manifest.schema_file(section) else {
        return Err(Error::Refused(format!(
            "the manifest lists no {section} schema file"
        )));
    };
    args.push("--no-password".into());
    args.push(format!("--dbname={}", dbname_conninfo(target)).into());
    let mut env = conn.child_env(target);
    env.push(("PGOPTIONS".into(), restore_pgoptions()));
    if file.chunk.encrypted {
        args.retain(|a| !a.to_string_lossy().starts_with("--jobs="));
        // Opened first: a missing or wrong identity is said before pg_restore starts.
        let reader = ChunkReader::open(dir, &file.chunk)?;
        let child = crate::source::pgrestore::spawn(args, &env, Stdio::piped())?;
        let pid = child.id();
        let what = dir.describe(&file.chunk.file);
        let handle =
            tokio::task::spawn_blocking(move || pg_restore_from_stdin(child, reader, what));
        return supervise(pid, handle, cancel).await;
    }
    // pg_restore --jobs reads a file; from an object store it is staged (and checked) first.
    let staged = match dir.local_dir() {
        Some(d) => {
            args.push(d.join(&file.chunk.file).into_os_string());
            None
        }
        None => {
            let staged = stage(dir, &file.chunk, work_dir)?;
            args.push(staged.path().as_os_str().to_os_string());
            Some(staged)
        }
    };
    let child = crate::source::pgrestore::spawn(args, &env, Stdio::null())?;
    let pid = child.id();
    let handle = tokio::task::spawn_blocking(move || {
        let result = child.wait();
        drop(staged);
        result
    });
    supervise(pid, handle, cancel).await
}

/// An encrypted archive is decrypted in memory only: pg_restore reads it from its stdin (which
/// rules out `--jobs`, for that needs a file to seek in). pg_restore sees the end of its input
/// only once the stored bytes' size and checksum proved right; otherwise it is stopped first.
fn pg_restore_from_stdin(mut child: Child, mut reader: ChunkReader, what: PathBuf) -> Result<()> {
    let mut stdin = child.stdin().expect("stdin is piped");
    if let Err(e) = std::io::copy(&mut reader, &mut stdin) {
        drop(stdin);
        // pg_restore stopped reading: its exit status says why, if it failed.
        child.wait()?;
        return Err(Error::io("feeding pg_restore from", what, e));
    }
    if let Err(e) = reader.finish() {
        child.terminate();
        return Err(e);
    }
    drop(stdin);
    child.wait()
}

/// Copies a chunk of `dir` into a private temporary file in `work_dir` (default: the system's
/// temporary directory), checking its size and checksum on the way.
fn stage(
    dir: &Store,
    chunk: &Chunk,
    work_dir: Option<&std::path::Path>,
) -> Result<tempfile::NamedTempFile> {
    let base = work_dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    let mut file = tempfile::Builder::new()
        .prefix(".dbbackup-stage-")
        .tempfile_in(&base)
        .map_err(|e| Error::io("creating a staging file in", &base, e))?;
    let mut reader = ChunkReader::open(dir, chunk)?;
    std::io::copy(&mut reader, file.as_file_mut())
        .map_err(|e| Error::io("staging", dir.describe(&chunk.file), e))?;
    reader.finish()?;
    Ok(file)
}

pub(super) async fn set_sequences(client: &Client, manifest: &Manifest) -> Result<()> {
    for s in &manifest.sequences {
        let name = format!("{}.{}", quote_ident(&s.schema), quote_ident(&s.name));
        client
            .query_one(
                "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                &[&name, &s.last_value, &s.is_called],
            )
            .await
            .map_err(|e| Error::query(format!("setting sequence {}.{}", s.schema, s.name), e))?;
    }
    Ok(())
}
