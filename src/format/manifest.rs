//! The manifest: the one description of a backup that backup writes and restore/verify read.
//!
//! `DIR/manifest.json` is rewritten atomically (temp file, fsync, rename, fsync of the directory)
//! every time a unit of work completes, so that at any instant the file on disk is a valid
//! manifest that lists only chunks that are already written, fsynced and checksummed.
//! The format is documented in `docs/manifest.md`; bump [`FORMAT_VERSION`] on any change that an
//! older reader would misread.

use std::path::{Component, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::compress::Codec;
use crate::format::copyfmt::CopyFormat;
use crate::storage::Store;

/// Version of the manifest layout written by this build; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Complete,
    Failed,
    /// `expire` is removing the backup: its files go first, this manifest last. A backup in
    /// this state is never read; the next `expire` finishes the deletion.
    Deleting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Complete => "complete",
            Status::Failed => "failed",
            Status::Deleting => "deleting",
        }
    }
}

/// How the data of a database was dumped.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Parallel `COPY ... TO STDOUT` per table, schema from pg_dump custom-format sections.
    Native,
    /// `pg_dump -Fp` streamed through our compressor.
    Plain,
    /// `pg_dump -Fc -Z0` streamed through our compressor.
    Custom,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Native => "native",
            StrategyKind::Plain => "plain",
            StrategyKind::Custom => "custom",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Strategy {
    pub kind: StrategyKind,
    /// Why the probe chose it, in words.
    pub reason: String,
}

/// One stored file: a data chunk, a schema archive, a piece of a pg_dump stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Path relative to the backup directory.
    pub file: String,
    pub codec: Codec,
    /// Rows (COPY chunks) or records (large-object chunks) inside; 0 for other files.
    pub rows: u64,
    /// Uncompressed payload size.
    pub raw_bytes: u64,
    /// Size of the file on disk.
    pub stored_bytes: u64,
    /// SHA-256 of the file on disk, lower-case hex.
    pub sha256: String,
    /// The file is an age file (encrypted to the backup's recipients) holding the compressed
    /// payload; sizes and SHA-256 above are those of the encrypted bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

/// A piece of a table's data dumped by one COPY: the whole table, or one ctid range of it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Unit {
    pub index: u32,
    /// First heap page of the range (inclusive); `None` = from the start.
    pub ctid_from: Option<u32>,
    /// Last heap page of the range (exclusive); `None` = to the end.
    pub ctid_to: Option<u32>,
    /// True once every chunk of the unit is on disk and listed below.
    pub done: bool,
    /// The snapshot the unit's rows were read in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub chunks: Vec<Chunk>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type()` of the column, for people and for change detection on resume.
    pub type_name: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `r` ordinary or partition leaf (unlogged included).
    pub relkind: String,
    /// The columns COPY reads and writes, in order (no generated or dropped columns).
    pub columns: Vec<Column>,
    /// `pg_table_size` at probe time: heap + TOAST, what decides scheduling.
    pub size_bytes: i64,
    pub row_estimate: i64,
    pub copy_format: CopyFormat,
    /// Why text was chosen, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_format_reason: Option<String>,
    /// Set for an extension's configuration table: its rows are appended to those the
    /// extension's script inserts when pre-data creates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_config: Option<ExtensionConfig>,
    pub units: Vec<Unit>,
}

/// A table an extension marked with `pg_extension_config_dump(table, condition)`: the
/// extension creates it, and only the rows the condition selects (the user's, not the
/// extension's own) are backed up, as pg_dump does.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ExtensionConfig {
    pub extension: String,
    /// The condition as the extension gave it (`WHERE NOT builtin`); `None` when empty: every
    /// row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.units.iter().flat_map(|u| u.chunks.iter())
    }

    pub fn rows(&self) -> u64 {
        self.chunks().map(|c| c.rows).sum()
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

/// Large objects: metadata comes with the pre-data schema (pg_dump), data is in these chunks.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct LargeObjects {
    pub count: u64,
    pub bytes: u64,
    pub done: bool,
    pub chunks: Vec<Chunk>,
    /// The SQL that re-creates them with owner, ACL and comment (see `largeobj`); absent in
    /// backups without large objects and in those made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Chunk>,
}

/// Properties of the source database that `restore --create` re-applies.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct DatabaseInfo {
    pub name: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `c` (libc), `i` (ICU, from 15) or `b` (builtin, from 17), as `datlocprovider`.
    pub locale_provider: String,
    /// The ICU locale, for provider `i`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icu_locale: Option<String>,
    /// The builtin provider's locale (`C` or `C.UTF-8`), for provider `b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin_locale: Option<String>,
    /// ICU tailoring rules (`ICU_RULES`, from 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icu_rules: Option<String>,
    pub owner: String,
    pub connection_limit: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the database has default privileges (`datacl` is NULL); `grants` is then empty.
    #[serde(default = "yes")]
    pub default_acl: bool,
    /// The entries of `datacl`, when it is not the default.
    pub grants: Vec<Grant>,
    /// `ALTER DATABASE ... SET` and `ALTER ROLE ... IN DATABASE ... SET` settings.
    pub settings: Vec<Setting>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub grantor: String,
    /// Role name, or `PUBLIC`.
    pub grantee: String,
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// `None` for `ALTER DATABASE SET`, the role for `ALTER ROLE ... IN DATABASE ... SET`.
    pub role: Option<String>,
    pub name: String,
    pub value: String,
}

fn yes() -> bool {
    true
}

/// The options a backup ran with; resume refuses different ones.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OptionsRecord {
    pub codec: Codec,
    pub level: i32,
    pub chunk_size: u64,
    pub split_tables_larger_than: u64,
    pub parallel_tables: usize,
    pub copy_format: String,
    /// Public keys (age `age1…`, `ssh-ed25519 …`, `ssh-rsa …`) every file is encrypted to,
    /// sorted; empty for an unencrypted backup. Never an identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

pub use crate::memory::MemoryRecord;

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Totals {
    pub tables: u64,
    pub rows: u64,
    pub chunks: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub duration_secs: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
    pub format_version: u32,
    /// `dbbackup <version>` that wrote the backup.
    pub tool: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub server_version: String,
    pub server_version_num: i32,
    pub pg_dump_version: String,
    pub database: DatabaseInfo,
    /// The exported snapshot every unit and pg_dump call read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// False when units were read in different snapshots (a resumed backup).
    pub consistent: bool,
    pub options: OptionsRecord,
    pub strategy: Strategy,
    /// What the probe saw (sizes, counts), free-form for people.
    #[serde(default)]
    pub probe: serde_json::Value,
    /// Native: one pg_dump custom-format archive of the pre-data and post-data sections
    /// ([`SCHEMA_SECTION`]); backups of earlier versions have two, `pre-data` and `post-data`.
    #[serde(default)]
    pub schema: Vec<SchemaFile>,
    #[serde(default)]
    pub tables: Vec<Table>,
    #[serde(default)]
    pub sequences: Vec<Sequence>,
    #[serde(default)]
    pub large_objects: LargeObjects,
    /// Plain/custom: the pg_dump output, compressed as one stream and cut into these files.
    #[serde(default)]
    pub stream: Vec<Chunk>,
    pub totals: Totals,
    /// The memory limit, the plan made from it, and the peaks measured (absent in backups
    /// written before 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryRecord>,
    /// Units dumped again after a retryable error (connection lost, serialization failure).
    #[serde(default)]
    pub retries: u32,
    /// The selection switches (`-t`, `-T`, `-n`, `-N`, `--exclude-table-data`, …) the backup
    /// was made with; absent when it took the whole database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<crate::format::selection::Filters>,
}

/// The `section` of the native schema archive that holds both pre-data and post-data.
pub const SCHEMA_SECTION: &str = "pre-data,post-data";
/// Where the native schema archive is stored.
pub const SCHEMA_FILE: &str = "schema/schema.dump";

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SchemaFile {
    /// [`SCHEMA_SECTION`]; `pre-data` or `post-data` in backups of earlier versions.
    pub section: String,
    #[serde(flatten)]
    pub chunk: Chunk,
}

impl Manifest {
    /// The schema archive that holds `section` (`pre-data` or `post-data`).
    pub fn schema_file(&self, section: &str) -> Option<&SchemaFile> {
        self.schema
            .iter()
            .find(|s| s.section.split(',').any(|part| part == section))
    }

    /// Whether the schema archives cover both sections (a resumed backup keeps them then).
    pub fn schema_complete(&self) -> bool {
        self.schema_file("pre-data").is_some() && self.schema_file("post-data").is_some()
    }

    /// Every stored file the manifest lists.
    pub fn all_chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.schema
            .iter()
            .map(|s| &s.chunk)
            .chain(self.tables.iter().flat_map(|t| t.chunks()))
            .chain(self.large_objects.metadata.iter())
            .chain(self.large_objects.chunks.iter())
            .chain(self.stream.iter())
    }

    /// Recomputes the totals from the chunks listed.
    pub fn recompute_totals(&mut self) {
        let mut t = Totals {
            tables: self.tables.len() as u64,
            duration_secs: self.totals.duration_secs,
            ..Totals::default()
        };
        for table in &self.tables {
            t.rows += table.rows();
        }
        for c in self.all_chunks() {
            t.chunks += 1;
            t.raw_bytes += c.raw_bytes;
            t.stored_bytes += c.stored_bytes;
        }
        self.totals = t;
    }

    /// Reads and validates `DIR/manifest.json`.
    pub fn load(dir: &Store) -> Result<Manifest> {
        let (path, value) = read_versioned(dir, FORMAT_VERSION, "")?;
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| Error::manifest(&path, format!("malformed: {e}")))?;
        for c in manifest.all_chunks() {
            check_relative(&c.file).map_err(|msg| Error::manifest(&path, msg))?;
        }
        Ok(manifest)
    }

    /// Atomically replaces `DIR/manifest.json` (see [`store_atomically`]).
    pub fn store(&self, dir: &Store) -> Result<()> {
        store_atomically(
            dir,
            &serde_json::to_vec_pretty(self).expect("manifest serializes"),
        )
    }
}

/// Reads `DIR/manifest.json` as JSON and checks its `format_version` against the newest this
/// build reads (`label` names the kind in messages, e.g. "cluster "). Returns the path too, for
/// the caller's own messages.
pub fn read_versioned(
    dir: &Store,
    newest: u32,
    label: &str,
) -> Result<(PathBuf, serde_json::Value)> {
    let path = dir.describe(MANIFEST_FILE);
    let text = dir
        .read_small(MANIFEST_FILE)?
        .ok_or_else(|| Error::manifest(&path, "not found: is this a dbbackup backup directory?"))?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::manifest(&path, format!("not valid JSON: {e}")))?;
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::manifest(&path, "not a dbbackup manifest (no format_version)"))?;
    if version > u64::from(newest) {
        return Err(Error::manifest(
            &path,
            format!(
                "{label}format_version {version} was written by a newer dbbackup; this build reads up to {newest}"
            ),
        ));
    }
    Ok((path, value))
}

/// Atomically replaces `DIR/manifest.json` with `json`: at every instant the stored manifest
/// is either the old or the new one (a renamed, fsynced file; one object PUT).
pub fn store_atomically(dir: &Store, json: &[u8]) -> Result<()> {
    let mut data = Vec::with_capacity(json.len() + 1);
    data.extend_from_slice(json);
    data.push(b'\n');
    dir.put_atomic(MANIFEST_FILE, &data)
}

/// A manifest must never make us read or write outside the backup directory.
fn check_relative(file: &str) -> std::result::Result<(), String> {
    let p = PathBuf::from(file);
    let ok = !file.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(format!("file name {file:?} is not a plain relative path"))
    }
}

/// Quotes an SQL identifier the way `quote_ident` does, always (never pasted raw into SQL).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings is on in every session we open).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
