//! The cluster manifest (`DIR/manifest.json` of kind "cluster") and the names in a cluster
//! backup: database directory names, `--include`/`--exclude` globs, the per-database format.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backup::strategy::FormatChoice;
use crate::error::{Error, Result};
use crate::format::manifest::{Chunk, OptionsRecord, Status, MANIFEST_FILE};
use crate::storage::Store;

/// Version of the cluster manifest layout; readers refuse newer ones.
pub const CLUSTER_FORMAT_VERSION: u32 = 1;
/// The `kind` field that tells a cluster manifest from a database manifest.
pub const CLUSTER_KIND: &str = "cluster";
/// Directory of the globals chunk.
pub(crate) const GLOBALS_DIR: &str = "globals";

// ---------------------------------------------------------------------------------------------
// Cluster manifest
// ---------------------------------------------------------------------------------------------

/// `DIR/manifest.json` of a cluster backup.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClusterManifest {
    /// Always `"cluster"`.
    pub kind: String,
    pub format_version: u32,
    pub tool: String,
    /// `complete` when the globals and every database are complete; `failed` otherwise (the
    /// complete databases still restore).
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub server_version: String,
    pub server_version_num: i32,
    pub options: ClusterOptionsRecord,
    pub globals: GlobalsRecord,
    pub databases: Vec<DatabaseEntry>,
    #[serde(default)]
    pub duration_secs: f64,
    /// The whole run's memory: the limit and the peak of the process that backed up every
    /// database (their own manifests have their plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::memory::MemoryRecord>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClusterOptionsRecord {
    /// `--timeout` as given (e.g. `2h`).
    pub timeout: String,
    pub parallel_databases: usize,
    pub parallel_tables: usize,
    pub format: String,
    #[serde(default)]
    pub database_formats: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Whether `--parallel-tables` was given (with `--format auto` it chooses native).
    #[serde(default)]
    pub parallel_tables_explicit: bool,
    /// The options of every database's backup (what its manifest's `options` says); absent
    /// in manifests of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<OptionsRecord>,
    /// The backup filters as given (each database's manifest records those that apply to it);
    /// absent when every table was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<crate::format::selection::Filters>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct GlobalsRecord {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The `pg_dumpall --globals-only` output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Chunk>,
    /// False when the role passwords are not in the backup (`--no-role-passwords`, because the
    /// backup did not run as a superuser).
    pub role_passwords: bool,
    /// Remarks for people (why passwords are missing, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    pub duration_secs: f64,
}

/// State of one database in a cluster backup.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DbStatus {
    /// Not started yet.
    Pending,
    Complete,
    Failed,
    /// Not backed up on purpose (connections not allowed, invalid database).
    Skipped,
}

impl DbStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DbStatus::Pending => "pending",
            DbStatus::Complete => "complete",
            DbStatus::Failed => "failed",
            DbStatus::Skipped => "skipped",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DatabaseEntry {
    /// The real database name.
    pub name: String,
    /// Its directory, relative to the cluster backup directory ([`dir_name`]).
    pub dir: String,
    pub status: DbStatus,
    /// `native`, `plain` or `custom` (from the database's manifest), when it got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// `pg_database_size` when the cluster backup started.
    #[serde(default)]
    pub database_size: i64,
    #[serde(default)]
    pub raw_bytes: u64,
    #[serde(default)]
    pub stored_bytes: u64,
    #[serde(default)]
    pub duration_secs: f64,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when it failed by `--timeout`.
    #[serde(default)]
    pub timed_out: bool,
}

impl ClusterManifest {
    /// Reads and validates `DIR/manifest.json` of a cluster backup.
    pub fn load(dir: &Store) -> Result<ClusterManifest> {
        let (path, v) =
            crate::format::manifest::read_versioned(dir, CLUSTER_FORMAT_VERSION, "cluster ")?;
        if v.get("kind").and_then(|k| k.as_str()) != Some(CLUSTER_KIND) {
            return Err(Error::manifest(&path, "not a cluster backup manifest"));
        }
        let m: ClusterManifest = serde_json::from_value(v)
            .map_err(|e| Error::manifest(&path, format!("malformed: {e}")))?;
        let mut seen = HashSet::new();
        for d in &m.databases {
            if !is_plain_dir_name(&d.dir) || !seen.insert(d.dir.clone()) {
                return Err(Error::manifest(
                    &path,
                    format!("database directory {:?} is not a plain, unique name", d.dir),
                ));
            }
        }
        if let Some(f) = &m.globals.file {
            let ok = Path::new(&f.file)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !ok || f.file.is_empty() {
                return Err(Error::manifest(
                    &path,
                    format!("globals file {:?} is not a plain relative path", f.file),
                ));
            }
        }
        Ok(m)
    }

    /// Atomically replaces `DIR/manifest.json` (temp file, fsync, rename, fsync of the directory).
    pub fn store(&self, dir: &Store) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("cluster manifest serializes");
        crate::format::manifest::store_atomically(dir, &json)
    }

    pub(super) fn recompute_status(&mut self) {
        let failed: Vec<&DatabaseEntry> = self
            .databases
            .iter()
            .filter(|d| matches!(d.status, DbStatus::Failed | DbStatus::Pending))
            .collect();
        let globals_ok = self.globals.status == Status::Complete;
        if failed.is_empty() && globals_ok {
            self.status = Status::Complete;
            self.error = None;
        } else {
            self.status = Status::Failed;
            let mut parts = Vec::new();
            if !globals_ok {
                parts.push("the globals failed".to_string());
            }
            if !failed.is_empty() {
                parts.push(format!(
                    "{} of {} databases failed",
                    failed.len(),
                    self.databases.len()
                ));
            }
            self.error = Some(parts.join("; "));
        }
    }
}

/// True when `DIR/manifest.json` is a cluster manifest (`kind: "cluster"`). Anything else,
/// including a missing or unreadable manifest, is not (the single-database path reports it).
pub fn is_cluster_backup(dir: &Store) -> bool {
    let Ok(Some(text)) = dir.read_small(MANIFEST_FILE) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("kind")?.as_str().map(|k| k == CLUSTER_KIND))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/// Entries of a cluster backup directory that a database directory must never be named.
const RESERVED_NAMES: &[&str] = &[GLOBALS_DIR, MANIFEST_FILE, "manifest.json.tmp"];

/// The directory name of database `name`: bytes outside `[A-Za-z0-9_.-]` become `%XX`
/// (upper-case hex); names that would be `.`, `..` or a reserved entry (`globals`,
/// `manifest.json`) get their first byte encoded too. Distinct names give distinct directories.
pub fn dir_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() || out == "." || out == ".." || RESERVED_NAMES.contains(&out.as_str()) {
        let first = name.as_bytes().first().copied().unwrap_or(b'_');
        out = format!("%{first:02X}{}", &out[1.min(out.len())..]);
    }
    out
}

/// A directory name as [`dir_name`] makes them: one plain path component.
pub(super) fn is_plain_dir_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !RESERVED_NAMES.contains(&s)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'%'))
}

/// Shell-style glob: `*` any run of characters (also none), `?` exactly one character;
/// everything else matches itself (case-sensitive, as database names are).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Position after the last `*` and the name position it was tried at (backtracking point).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Which databases a cluster backup takes: all (or those matching an `include` pattern), minus
/// those matching an `exclude` pattern.
pub fn selected(name: &str, include: &[String], exclude: &[String]) -> bool {
    (include.is_empty() || include.iter().any(|p| glob_match(p, name)))
        && !exclude.iter().any(|p| glob_match(p, name))
}

/// `--database-format PATTERN=FORMAT`: the first matching pattern's format, else `default`.
pub fn format_for(
    name: &str,
    overrides: &[(String, FormatChoice)],
    default: FormatChoice,
) -> FormatChoice {
    overrides
        .iter()
        .find(|(p, _)| glob_match(p, name))
        .map(|(_, f)| *f)
        .unwrap_or(default)
}

pub fn format_name(f: FormatChoice) -> &'static str {
    match f {
        FormatChoice::Auto => "auto",
        FormatChoice::Native => "native",
        FormatChoice::Plain => "plain",
        FormatChoice::Custom => "custom",
    }
}
