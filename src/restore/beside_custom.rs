//! The seam of [`super::beside`] between the strategies ([`source`]): where the TOC comes
//! from, and where the rows come from. A custom backup's TOC is its pg_dump archive's (the
//! `stream`, decompressed and so verified into `--work-dir` before the target is touched).
//!
//! The rows are inside pg_dump's archive, addressed to the original table's name. They are
//! loaded by `pg_restore --data-only -L <the family's TABLE DATA and SEQUENCE SET entries>
//! -f -`, piped into `psql --single-transaction` through a line filter that rewrites only the
//! lines the TOC says pg_restore writes for those entries: each `COPY … FROM stdin;` header
//! (the entry's `copy_stmt`, requalified into the scratch schema) and each `setval(…)` (the
//! entry's `defn`). COPY data passes untouched up to its `\.` line. Any other `COPY` or
//! `setval` line outside COPY data stops the load, so no row can reach the live table. The
//! archive is one stream, so the tables load one after another (`--jobs` does not apply).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::archive_toc::Toc;
use crate::format::manifest::{Manifest, StrategyKind};
use crate::format::sql_requalify::{quote_ident, requalify, Renames};
use crate::progress::Progress;
use crate::source::child::{supervise, Child};
use crate::source::conn::{dbname_conninfo, ConnParams};
use crate::source::script_filter::ScriptFilter;

use super::options::RestoreOptions;
use super::toc_plan::read_native_toc;

/// The line of pg_restore's script each chosen data entry writes, and its replacement.
fn rewrites(
    toc: &Toc,
    data: &[i32],
    renames: &Renames,
    scratch: &str,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut map = BTreeMap::new();
    for e in toc.entries.iter().filter(|e| data.contains(&e.dump_id)) {
        match e.desc.as_str() {
            "TABLE DATA" => {
                let new = requalify(&e.copy_stmt, renames)?;
                if new == e.copy_stmt {
                    return Err(Error::Refused(format!(
                        "the COPY statement of {}.{} in the archive names no table of the family: {:?}",
                        e.namespace, e.tag, e.copy_stmt
                    )));
                }
                map.insert(e.copy_stmt.clone().into_bytes(), new.into_bytes());
            }
            "SEQUENCE SET" => {
                // `setval('schema.name', …)`: a plain literal, which requalify leaves alone; the
                // names quoted only where needed, as pg_dump writes them.
                let lit = |schema: &str| {
                    let name = format!("{}.{}", quote_ident(schema), quote_ident(&e.tag));
                    format!("setval('{}'", name.replace('\'', "''"))
                };
                let (old, new) = (lit(&e.namespace), lit(scratch));
                let rewritten = e.defn.replace(&old, &new);
                if rewritten == e.defn {
                    return Err(Error::Refused(format!(
                        "the setval of sequence {}.{} in the archive does not read as expected: {:?}",
                        e.namespace, e.tag, e.defn
                    )));
                }
                map.insert(e.defn.clone().into_bytes(), rewritten.into_bytes());
            }
            _ => {}
        }
    }
    Ok(map)
}

/// Copies pg_restore's script to psql, rewriting the lines of `map` (see the module
/// documentation).
fn filter(
    from: &mut dyn BufRead,
    to: &mut dyn Write,
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> std::io::Result<()> {
    let mut out = ScriptFilter::new(to, crate::source::pgrestore::settings_to_leave_out(), false);
    let mut line = Vec::with_capacity(256);
    let mut in_copy = false;
    loop {
        line.clear();
        if from.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if in_copy {
            if line == b"\\.\n" {
                in_copy = false;
            }
            out.write_all(&line)?;
            continue;
        }
        if let Some(new) = map.get(&line) {
            in_copy = line.starts_with(b"COPY ");
            out.write_all(new)?;
        } else if line.starts_with(b"COPY ") || line.starts_with(b"SELECT pg_catalog.setval(") {
            return Err(std::io::Error::other(format!(
                "pg_restore wrote a line the archive's TOC does not announce, left out of the load: {}",
                String::from_utf8_lossy(&line).trim_end()
            )));
        } else {
            out.write_all(&line)?;
        }
    }
    out.flush()
}

/// Loads the data entries `data` of the archive `file` into the scratch schema.
#[allow(clippy::too_many_arguments)]
pub(super) async fn load(
    conn: &ConnParams,
    opts: &RestoreOptions,
    file: &Path,
    toc: &Toc,
    data: &[i32],
    renames: &Renames,
    scratch: &str,
    cancel: &CancellationToken,
) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let map = rewrites(toc, data, renames, scratch)?;
    let list = super::toc_plan::write_list(toc, data, opts.work_dir.as_deref())?;
    let env = conn.child_env(&opts.target);
    let psql_args: Vec<OsString> = vec![
        "-X".into(),
        "-q".into(),
        "--echo-errors".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "--single-transaction".into(),
        "--no-password".into(),
        format!("--dbname={}", dbname_conninfo(&opts.target)).into(),
        "-f".into(),
        "-".into(),
    ];
    let restore_args: Vec<OsString> = vec![
        "--data-only".into(),
        "-L".into(),
        list.path().as_os_str().to_os_string(),
        "-f".into(),
        "-".into(),
        file.as_os_str().to_os_string(),
    ];
    let psql = Child::spawn("psql", &psql_args, &env, Stdio::piped(), Stdio::null())?;
    let restore = Child::spawn(
        "pg_restore",
        &restore_args,
        &env,
        Stdio::null(),
        Stdio::piped(),
    )?;
    let child = restore.pipe_into(psql, Box::new(move |from, to| filter(from, to, &map)));
    let pid = child.id();
    let handle = tokio::task::spawn_blocking(move || child.wait());
    let r = supervise(pid, handle, cancel).await;
    drop(list);
    r
}

/// Where the family's rows come from.
pub(super) enum Rows {
    /// The backup's chunks, loaded in parallel.
    Native,
    /// The custom backup's pg_dump archive, decompressed into `--work-dir` (removed when
    /// dropped).
    Custom(super::stream::TempFile),
}

/// The backup's TOC (and, for a native backup whose post-data is a file of its own, that
/// one's), and where the rows will come from.
pub(super) async fn source(
    conn: &ConnParams,
    opts: &RestoreOptions,
    manifest: &Manifest,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<(Rows, Toc, Option<Toc>)> {
    Ok(if manifest.strategy.kind == StrategyKind::Custom {
        crate::source::pgtools::choose_for_restore_into(
            conn,
            manifest.server_version_num,
            crate::source::pgtools::version_num(&manifest.pg_dump_version),
            progress.as_ref(),
        )
        .await?;
        crate::format::stream::check_pieces(&opts.dir, manifest)?;
        let file = super::stream::decompress_archive(opts, manifest, progress, cancel).await?;
        let toc = super::toc_plan::read_file_toc(&file.0)?;
        (Rows::Custom(file), toc, None)
    } else {
        let toc = read_native_toc(&opts.dir, manifest, "pre-data")?;
        let post_toc = match (
            manifest.schema_file("pre-data"),
            manifest.schema_file("post-data"),
        ) {
            (Some(a), Some(b)) if a.chunk.file != b.chunk.file => {
                Some(read_native_toc(&opts.dir, manifest, "post-data")?)
            }
            _ => None,
        };
        (Rows::Native, toc, post_toc)
    })
}
