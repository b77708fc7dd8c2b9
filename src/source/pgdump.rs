//! pg_dump as a child: its output read from a pipe into chunk files, never held whole.

use std::ffi::OsString;
use std::io::Read;

use std::process::Stdio;

use crate::error::{Error, Result};
use crate::format::chunk::ChunkWriter;
use crate::format::compress::Codec;
use crate::format::manifest::Chunk;
use crate::source::child::{Child, ChildSet};
use crate::source::conn::ConnParams;

/// Runs `pg_dump --format=custom --section=pre-data --section=post-data --snapshot=ID` on
/// `dbname` and stores its archive as `root/rel` (pg_dump compresses custom archives itself, so
/// stored as-is).
///
/// One archive with both sections, restored section by section: pg_restore's parallel
/// scheduler learns which tables a post-data statement locks from the TABLE entries it depends
/// on, so they must be in the archive it reads (a post-data-only archive has none, and two
/// foreign keys on the same tables then run at once and can deadlock). Not `--schema-only`:
/// that also leaves out the post-data `REFRESH MATERIALIZED VIEW` entries, which are how a
/// native restore fills materialized views. The data section stays out (the COPY workers
/// have it); large-object metadata is dbbackup's own file (pg_dump before 17 also puts it in
/// pre-data, where its restore is a no-op beside ours). `selection`: the backup filters as
/// pg_dump switches, so the schema holds the tables whose data is copied.
pub fn dump_schema(
    conn: &ConnParams,
    dbname: &str,
    snapshot: &str,
    root: &crate::storage::Store,
    rel: &str,
    selection: &[String],
    children: &ChildSet,
) -> Result<Chunk> {
    let mut args: Vec<OsString> = vec![
        "--format=custom".into(),
        "--section=pre-data".into(),
        "--section=post-data".into(),
        format!("--snapshot={snapshot}").into(),
        "--no-password".into(),
    ];
    args.extend(selection.iter().map(OsString::from));
    let mut child = Child::spawn(
        "pg_dump",
        &args,
        &conn.child_env(dbname),
        Stdio::null(),
        Stdio::piped(),
    )?;
    children.track(&child);
    let mut stdout = child.stdout().expect("piped");
    let mut writer = ChunkWriter::create(root, rel, Codec::None, 0, 0)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stdout
            .read(&mut buf)
            .map_err(|e| Error::io("reading pg_dump output for", root.describe(rel), e))?;
        if n == 0 {
            break;
        }
        writer.write(&buf[..n])?;
    }
    // Only a zero exit makes the file part of the backup; otherwise the writer's temp file is
    // deleted when it is dropped.
    child.wait()?;
    writer.finish(0)
}
