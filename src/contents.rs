//! `contents`: what one backup holds, without a server: its header facts and tables from the
//! manifest, the other objects from the table of contents of its pg_dump archive (read by
//! [`crate::format::archive_toc`], listed as `pg_restore --list` lists them; no client tools
//! are needed).
//!
//! Where each part comes from, by strategy:
//!
//! - native: tables (rows, raw and stored bytes summed over their units' chunks), sequences
//!   and large objects from the manifest, which is never encrypted; the other objects from
//!   `schema/schema.dump` (pre-data and post-data), which needs an identity when encrypted.
//! - custom: the manifest lists no tables; tables, sequences and every other object come from
//!   the table of contents at the start of the stored pg_dump stream (only its first pieces
//!   are read), without rows or sizes, which the stream does not record per table. Encrypted:
//!   nothing but the header facts without an identity.
//! - plain: one SQL script; nothing is listed (that would mean decompressing all of it).
//!
//! The archive is decrypted and decompressed in memory only, never onto disk.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::archive_toc::{read_toc, Toc};
use crate::format::chunk::ChunkReader;
use crate::format::manifest::{Manifest, StrategyKind, Totals};
use crate::format::selection::Filters;
use crate::format::stream::{open_stream, stream_error};
use crate::storage::Store;

/// What a backup holds. Serialized as `contents --json` prints it (docs/contents.md): the field
/// names are a stable interface.
#[derive(Debug, Serialize)]
pub struct Contents {
    /// Where the backup is (directory or `s3://` location).
    pub location: String,
    /// The database that was backed up.
    pub database: String,
    /// `complete`, `failed`, `in_progress`, `deleting`.
    pub status: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// `native`, `plain` or `custom`.
    pub strategy: String,
    pub server_version: String,
    pub pg_dump_version: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub consistent: bool,
    /// Every stored file is encrypted (restore and the object list need an identity).
    pub encrypted: bool,
    /// The manifest's totals (tables, rows, chunks, raw_bytes, stored_bytes, duration_secs).
    pub totals: Totals,
    /// The table and schema filters the backup was taken with (`--table`, `--exclude-table`,
    /// ...), as the manifest records them; `None` when it records none.
    pub filters: Option<Filters>,
    /// Where `tables` comes from: `manifest`, `archive` (custom backups) or `none` (plain
    /// backups, and custom ones whose archive could not be read without an identity).
    pub tables_from: &'static str,
    pub tables: Vec<TableContents>,
    /// From the manifest (native) or the archive's `SEQUENCE` entries (custom); `None` where
    /// neither is read (plain; encrypted custom without an identity).
    pub sequences: Option<Vec<Named>>,
    /// `None` where the manifest does not count them (plain, custom: they are in the stream).
    pub large_objects: Option<LargeObjectsContents>,
    pub objects: Objects,
}

/// One table: from the manifest (native) with its rows and sizes, or from the archive's table
/// of contents (custom) without them.
#[derive(Debug, Serialize)]
pub struct TableContents {
    pub schema: String,
    pub name: String,
    pub rows: Option<u64>,
    /// Uncompressed COPY bytes of its chunks.
    pub raw_bytes: Option<u64>,
    /// Stored (compressed, encrypted) bytes of its chunks.
    pub stored_bytes: Option<u64>,
    pub chunks: Option<u64>,
    /// False while some of its units are not finished (a failed or running backup).
    pub complete: bool,
    /// Set for an extension's configuration table: the extension's name.
    pub extension: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Named {
    pub schema: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct LargeObjectsContents {
    pub count: u64,
    pub bytes: u64,
}

/// The entries of the backup's pg_dump archive.
#[derive(Debug, Serialize)]
pub struct Objects {
    /// `listed`; `needs_identity` (the archive is encrypted and no identity was given);
    /// `not_listed` (see `note`).
    pub state: &'static str,
    /// Why they are not listed, when they are not.
    pub note: Option<String>,
    /// Number of entries per kind (`INDEX`, `FK CONSTRAINT`, ...).
    pub kinds: BTreeMap<String, u64>,
    pub entries: Vec<TocEntry>,
}

impl Objects {
    fn not_listed(state: &'static str, note: impl Into<String>) -> Objects {
        Objects {
            state,
            note: Some(note.into()),
            kinds: BTreeMap::new(),
            entries: Vec::new(),
        }
    }

    fn listed(entries: Vec<TocEntry>) -> Objects {
        let mut kinds = BTreeMap::new();
        for e in &entries {
            *kinds.entry(e.kind.clone()).or_insert(0) += 1;
        }
        Objects {
            state: "listed",
            note: None,
            kinds,
            entries,
        }
    }
}

/// Builds the contents of the single-database backup in `dir`. A manifest that cannot be read,
/// an archive that does not match its checksum, an identity that does not open it, or a
/// table of contents that cannot be read are errors; an encrypted archive without any identity is not
/// (the objects then say `needs_identity`).
pub fn contents(dir: &Store) -> Result<Contents> {
    let m = Manifest::load(dir)?;
    let objects = archive_objects(dir, &m)?;
    let (tables_from, tables) = match m.strategy.kind {
        StrategyKind::Native => ("manifest", m.tables.iter().map(manifest_table).collect()),
        StrategyKind::Custom if objects.state == "listed" => ("archive", archive_tables(&objects)),
        _ => ("none", Vec::new()),
    };
    let sequences = match m.strategy.kind {
        StrategyKind::Native => Some(
            m.sequences
                .iter()
                .map(|s| Named {
                    schema: s.schema.clone(),
                    name: s.name.clone(),
                })
                .collect(),
        ),
        StrategyKind::Custom if objects.state == "listed" => Some(
            objects
                .entries
                .iter()
                .filter(|e| e.kind == "SEQUENCE")
                .map(|e| Named {
                    schema: e.schema.clone().unwrap_or_default(),
                    name: e.name.clone(),
                })
                .collect(),
        ),
        _ => None,
    };
    let large_objects = (m.strategy.kind == StrategyKind::Native).then_some(LargeObjectsContents {
        count: m.large_objects.count,
        bytes: m.large_objects.bytes,
    });
    Ok(Contents {
        location: dir.display(),
        database: m.database.name.clone(),
        status: m.status.as_str().to_string(),
        error: m.error.clone(),
        strategy: m.strategy.kind.as_str().to_string(),
        server_version: m.server_version.clone(),
        pg_dump_version: m.pg_dump_version.clone(),
        started_at: m.started_at.clone(),
        finished_at: m.finished_at.clone(),
        consistent: m.consistent,
        encrypted: !m.options.recipients.is_empty(),
        totals: m.totals.clone(),
        filters: m.filters.clone().filter(|f| !f.is_empty()),
        tables_from,
        tables,
        sequences,
        large_objects,
        objects,
    })
}

fn manifest_table(t: &crate::format::manifest::Table) -> TableContents {
    TableContents {
        schema: t.schema.clone(),
        name: t.name.clone(),
        rows: Some(t.rows()),
        raw_bytes: Some(t.chunks().map(|c| c.raw_bytes).sum()),
        stored_bytes: Some(t.chunks().map(|c| c.stored_bytes).sum()),
        chunks: Some(t.chunks().count() as u64),
        complete: t.units.iter().all(|u| u.done),
        extension: t.extension_config.as_ref().map(|e| e.extension.clone()),
    }
}

/// A custom archive's tables: its `TABLE` entries.
fn archive_tables(objects: &Objects) -> Vec<TableContents> {
    objects
        .entries
        .iter()
        .filter(|e| e.kind == "TABLE")
        .map(|e| TableContents {
            schema: e.schema.clone().unwrap_or_default(),
            name: e.name.clone(),
            rows: None,
            raw_bytes: None,
            stored_bytes: None,
            chunks: None,
            complete: true,
            extension: None,
        })
        .collect()
}

/// The note of an encrypted archive read without an identity: `what` needs one.
fn needs_identity_note(what: &str) -> String {
    format!(
        "{what} needs --identity FILE (or {})",
        crate::encryption::IDENTITY_FILE_ENV
    )
}

/// The entries of the backup's archive(s).
fn archive_objects(dir: &Store, m: &Manifest) -> Result<Objects> {
    let can_decrypt = dir.sealing().can_decrypt();
    match m.strategy.kind {
        StrategyKind::Plain => Ok(Objects::not_listed(
            "not_listed",
            "a plain backup is one SQL script: its tables and objects are not in the manifest, and listing them would mean decompressing the whole script",
        )),
        StrategyKind::Native if m.schema.is_empty() => Ok(Objects::not_listed(
            "not_listed",
            "the backup has no schema archive (it ended before pg_dump wrote one)",
        )),
        StrategyKind::Custom if m.stream.is_empty() => Ok(Objects::not_listed(
            "not_listed",
            "the backup has no stream files (it ended before pg_dump wrote any)",
        )),
        StrategyKind::Native if m.schema.iter().any(|s| s.chunk.encrypted) && !can_decrypt => {
            Ok(Objects::not_listed(
                "needs_identity",
                needs_identity_note("the schema archive is encrypted: listing the other objects"),
            ))
        }
        StrategyKind::Custom if m.stream.iter().any(|c| c.encrypted) && !can_decrypt => {
            Ok(Objects::not_listed(
                "needs_identity",
                needs_identity_note("the pg_dump archive is encrypted: listing its tables and objects"),
            ))
        }
        StrategyKind::Native => {
            let mut entries = Vec::new();
            // Backups of earlier versions have one archive per section.
            for s in &m.schema {
                entries.extend(list_schema_archive(dir, &s.chunk)?);
            }
            Ok(Objects::listed(entries))
        }
        StrategyKind::Custom => {
            Ok(Objects::listed(list_stream(dir, m)?))
        }
    }
}

/// A native schema archive: read whole (it is small), so that its size and SHA-256 are proven
/// before its table of contents is believed.
fn list_schema_archive(
    dir: &Store,
    chunk: &crate::format::manifest::Chunk,
) -> Result<Vec<TocEntry>> {
    let mut reader = ChunkReader::open(dir, chunk)?;
    let path = reader.path().to_path_buf();
    let toc = read_toc(&mut reader);
    // The checksum explains a damaged file better than the reader's complaint.
    reader.finish()?;
    let toc = toc.map_err(|e| Error::corrupt(&path, e.to_string()))?;
    Ok(listed_entries(&toc))
}

/// A custom backup's stream: only the pieces that hold the table of contents are read (and
/// each of those that is read to its end is checked); `verify` checks the rest.
fn list_stream(dir: &Store, m: &Manifest) -> Result<Vec<TocEntry>> {
    let mut dec = open_stream(dir, m)?;
    match read_toc(&mut dec) {
        Ok(toc) => Ok(listed_entries(&toc)),
        Err(Error::Archive(crate::error::ArchiveError::Io(e))) => Err(stream_error(&mut dec, e)),
        Err(e) => Err(Error::corrupt(
            dir.describe(&m.stream[0].file),
            e.to_string(),
        )),
    }
}

/// One entry of the archive's table of contents, as `pg_restore --list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TocEntry {
    /// pg_dump's dump id (what a `pg_restore -L` list file names).
    pub id: u32,
    /// pg_dump's description: `TABLE`, `INDEX`, `FK CONSTRAINT`, `SEQUENCE`, ...
    pub kind: String,
    /// `None` for objects outside a schema.
    pub schema: Option<String>,
    pub name: String,
    /// `None` for objects without an owner.
    pub owner: Option<String>,
}

/// The entries `pg_restore --list` shows: not the session settings pg_dump records, nor the
/// database itself and what hangs on it (pg_restore restores those only with `--create`).
fn listed_entries(toc: &Toc) -> Vec<TocEntry> {
    const SESSION: &[&str] = &["ENCODING", "STDSTRINGS", "SEARCHPATH"];
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    toc.entries
        .iter()
        .filter(|e| {
            !SESSION.contains(&e.desc.as_str())
                && e.desc != "DATABASE"
                && e.desc != "DATABASE PROPERTIES"
                && !e.tag.starts_with("DATABASE ")
        })
        .map(|e| TocEntry {
            id: e.dump_id as u32,
            kind: e.desc.clone(),
            schema: some(&e.namespace),
            name: e.tag.clone(),
            owner: some(&e.owner),
        })
        .collect()
}
