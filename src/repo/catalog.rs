//! What a repository holds: one [`BackupRecord`] per backup directory, read from the
//! manifests (leniently: a backup that failed before it began has a minimal manifest, an
//! interrupted one may have none) and the locks.
//!
//! Status of a backup, as `list` shows it and `expire` decides on it:
//! - `complete`, `failed`: what its manifest says;
//! - `in_progress`: its manifest says so (or it has none yet) and its lock is held by a running
//!   dbbackup (on this host; a lock of another host always counts as held);
//! - `interrupted`: the same, but the lock is gone or stale (its process no longer runs);
//! - `deleting`: `expire` began removing it (the next `expire` finishes);
//! - `unknown`: the manifest cannot be read (for example one of a newer dbbackup): never
//!   deleted.

use std::collections::BTreeMap;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::clock::parse_rfc3339;
use crate::error::Result;
use crate::format::manifest::{Status, MANIFEST_FILE};
use crate::repo::layout::{database_of_dir, parse_stamp, CLUSTER};
use crate::storage::lock::{lock_state, LockState};
use crate::storage::Store;

/// The folder of drill records inside a backup (`drills/<time>.json`, written by `drill`).
pub const DRILLS_DIR: &str = "drills";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Single,
    Cluster,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Single => "single",
            Kind::Cluster => "cluster",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupStatus {
    Complete,
    Failed,
    InProgress,
    Interrupted,
    Deleting,
    Unknown,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Complete => "complete",
            BackupStatus::Failed => "failed",
            BackupStatus::InProgress => "in_progress",
            BackupStatus::Interrupted => "interrupted",
            BackupStatus::Deleting => "deleting",
            BackupStatus::Unknown => "unknown",
        }
    }
}

/// The newest drill record of a backup.
#[derive(Debug, Clone)]
pub struct DrillRecord {
    /// When it ended (its start when the end is not recorded).
    pub at: OffsetDateTime,
    pub passed: bool,
}

/// One backup in a repository.
#[derive(Debug, Clone)]
pub struct BackupRecord {
    /// The database's real name; [`CLUSTER`] for a cluster backup.
    pub database: String,
    pub kind: Kind,
    /// Its start, from the directory name (to the second, UTC).
    pub time: OffsetDateTime,
    /// Its directory relative to the repository: `<database dir>/<time>`.
    pub dir: String,
    pub status: BackupStatus,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// `native`, `plain`, `custom`; a cluster backup: its databases' strategies, `+`-joined.
    pub strategy: Option<String>,
    /// Read in one snapshot (a cluster backup: each of its databases in one snapshot).
    pub consistent: bool,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub duration_secs: f64,
    pub finished_at: Option<OffsetDateTime>,
    pub encrypted: bool,
    pub tables: u64,
    pub rows: u64,
    pub retries: u32,
    /// Peak resident memory of the run, when the manifest records it (`memory.peak_rss_bytes`).
    pub peak_rss_bytes: Option<u64>,
    /// The newest drill of this backup.
    pub last_drill: Option<DrillRecord>,
    /// The backup filters it was made with (`-t`, `-n`, …); `None`: every table.
    pub filters: Option<crate::format::selection::Filters>,
    /// Every object of the backup, relative to its directory (what `expire` removes).
    pub objects: Vec<String>,
}

impl BackupRecord {
    /// When it ended, or else when it began (what "last success/failure" timestamps use).
    pub fn ended(&self) -> OffsetDateTime {
        self.finished_at.unwrap_or(self.time)
    }
}

/// Every backup of a repository, newest first (then by database name).
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The repository, for messages.
    pub location: String,
    pub backups: Vec<BackupRecord>,
}

/// Reads every backup of the repository `repo`. Objects that are not inside a
/// `<dir>/<time>/` directory (the repository lock, stray files) are ignored.
pub fn scan(repo: &Store) -> Result<Catalog> {
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (name, _) in repo.list()? {
        let mut parts = name.splitn(3, '/');
        let (Some(top), Some(stamp), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if parse_stamp(stamp).is_none() {
            continue;
        }
        groups
            .entry((top.to_string(), stamp.to_string()))
            .or_default()
            .push(rest.to_string());
    }
    let mut backups = Vec::new();
    for ((top, stamp), objects) in groups {
        let time = parse_stamp(&stamp).expect("checked above");
        let (database, kind) = if top == CLUSTER {
            (CLUSTER.to_string(), Kind::Cluster)
        } else {
            (database_of_dir(&top).unwrap_or(top.clone()), Kind::Single)
        };
        let dir = format!("{top}/{stamp}");
        backups.push(read_backup(
            &repo.sub(&dir),
            database,
            kind,
            time,
            dir,
            objects,
        )?);
    }
    backups.sort_by(|a, b| b.time.cmp(&a.time).then(a.database.cmp(&b.database)));
    Ok(Catalog {
        location: repo.display(),
        backups,
    })
}

/// The one backup at `store` (a `--out` location): its name comes from its manifest.
pub fn record_at(store: &Store) -> Result<BackupRecord> {
    let objects = store.list()?.into_iter().map(|(n, _)| n).collect();
    let summary = read_summary(store).ok().flatten();
    let kind = match summary.as_ref().and_then(|s| s.kind.as_deref()) {
        Some(CLUSTER) => Kind::Cluster,
        _ => Kind::Single,
    };
    let database = match (&summary, kind) {
        (_, Kind::Cluster) => CLUSTER.to_string(),
        (Some(s), _) => s.database.name.clone(),
        (None, _) => String::new(),
    };
    let time = summary
        .as_ref()
        .and_then(|s| parse_rfc3339(&s.started_at))
        .unwrap_or_else(crate::clock::now);
    read_backup(store, database, kind, time, String::new(), objects)
}

fn read_backup(
    store: &Store,
    database: String,
    kind: Kind,
    time: OffsetDateTime,
    dir: String,
    objects: Vec<String>,
) -> Result<BackupRecord> {
    let mut r = BackupRecord {
        database,
        kind,
        time,
        dir,
        status: BackupStatus::Unknown,
        error: None,
        strategy: None,
        consistent: false,
        raw_bytes: 0,
        stored_bytes: 0,
        duration_secs: 0.0,
        finished_at: None,
        encrypted: false,
        tables: 0,
        rows: 0,
        retries: 0,
        peak_rss_bytes: None,
        last_drill: newest_drill(store, &objects),
        filters: None,
        objects,
    };
    let running = || -> Result<BackupStatus> {
        Ok(match lock_state(store)? {
            LockState::Held => BackupStatus::InProgress,
            LockState::Free | LockState::Stale => BackupStatus::Interrupted,
        })
    };
    let summary = match read_summary(store) {
        Ok(Some(s)) => s,
        Ok(None) => {
            r.status = running()?;
            return Ok(r);
        }
        Err(why) => {
            r.error = Some(why);
            return Ok(r);
        }
    };
    r.status = match summary.status {
        Status::Complete => BackupStatus::Complete,
        Status::Failed => BackupStatus::Failed,
        Status::Deleting => BackupStatus::Deleting,
        Status::InProgress => running()?,
    };
    r.error = summary.error.clone();
    r.finished_at = summary.finished_at.as_deref().and_then(parse_rfc3339);
    r.peak_rss_bytes = summary.memory.as_ref().and_then(|m| m.peak_rss_bytes);
    if r.kind == Kind::Cluster {
        add_cluster_figures(store, &summary, &mut r);
    } else {
        r.strategy = summary.strategy.as_ref().map(|s| s.kind.clone());
        r.consistent = summary.consistent;
        r.raw_bytes = summary.totals.raw_bytes;
        r.stored_bytes = summary.totals.stored_bytes;
        r.duration_secs = summary.totals.duration_secs;
        r.encrypted = !summary.options.recipients.is_empty();
        r.tables = summary.totals.tables;
        r.rows = summary.totals.rows;
        r.retries = summary.retries;
        r.filters = summary.filters.clone();
    }
    Ok(r)
}

/// A cluster backup's figures: sums over its databases (whose manifests are read for tables,
/// rows, retries and consistency) and its globals.
fn add_cluster_figures(store: &Store, summary: &Summary, r: &mut BackupRecord) {
    r.duration_secs = summary.duration_secs;
    r.filters = summary.options.filters.clone();
    r.encrypted = summary
        .options
        .database
        .as_ref()
        .is_some_and(|o| !o.recipients.is_empty());
    let globals = summary.globals.as_ref().and_then(|g| g.file.as_ref());
    r.raw_bytes = globals.map_or(0, |f| f.raw_bytes);
    r.stored_bytes = globals.map_or(0, |f| f.stored_bytes);
    r.encrypted |= globals.is_some_and(|f| f.encrypted);
    r.consistent = true;
    let mut strategies: Vec<String> = Vec::new();
    for d in &summary.databases {
        r.raw_bytes += d.raw_bytes;
        r.stored_bytes += d.stored_bytes;
        if let Some(s) = &d.strategy {
            if !strategies.contains(s) {
                strategies.push(s.clone());
            }
        }
        if d.status != "complete" {
            continue;
        }
        match read_summary(&store.sub(&d.dir)) {
            Ok(Some(m)) => {
                r.tables += m.totals.tables;
                r.rows += m.totals.rows;
                r.retries += m.retries;
                r.consistent &= m.consistent;
            }
            _ => r.consistent = false,
        }
    }
    strategies.sort();
    r.strategy = (!strategies.is_empty()).then(|| strategies.join("+"));
}

/// The newest `drills/<time>.json` among `objects`, read; unreadable records are passed over.
fn newest_drill(store: &Store, objects: &[String]) -> Option<DrillRecord> {
    let mut drills: Vec<&String> = objects
        .iter()
        .filter(|o| {
            o.strip_prefix(DRILLS_DIR)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|f| f.ends_with(".json") && !f.contains('/'))
        })
        .collect();
    drills.sort();
    drills.into_iter().rev().find_map(|name| {
        let text = store.read_small(name).ok()??;
        let d: DrillFile = serde_json::from_slice(&text).ok()?;
        let at = d
            .finished_at
            .as_deref()
            .and_then(parse_rfc3339)
            .or_else(|| parse_rfc3339(&d.started_at))?;
        Some(DrillRecord {
            at,
            passed: d.passed,
        })
    })
}

/// `manifest.json` read leniently; `Ok(None)` when there is none, `Err(why)` when it cannot be
/// read as a dbbackup manifest.
fn read_summary(store: &Store) -> Result<Option<Summary>, String> {
    let text = match store.read_small(MANIFEST_FILE) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let s: Summary = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}: not a manifest this dbbackup reads: {e}",
            store.describe(MANIFEST_FILE).display()
        )
    })?;
    if s.format_version > crate::format::manifest::FORMAT_VERSION {
        return Err(format!(
            "{}: written by a newer dbbackup (format_version {})",
            store.describe(MANIFEST_FILE).display(),
            s.format_version
        ));
    }
    Ok(Some(s))
}

// The parts of a manifest (database or cluster) the catalog reads; everything else may be
// missing, so that minimal and older manifests are listed too.

#[derive(Deserialize)]
struct Summary {
    #[serde(default)]
    format_version: u32,
    #[serde(default)]
    kind: Option<String>,
    status: Status,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    started_at: String,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    database: NameOnly,
    #[serde(default)]
    consistent: bool,
    #[serde(default)]
    options: OptionsSummary,
    #[serde(default)]
    strategy: Option<StrategySummary>,
    #[serde(default)]
    totals: TotalsSummary,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    memory: Option<MemorySummary>,
    #[serde(default)]
    filters: Option<crate::format::selection::Filters>,
    // Cluster manifests:
    #[serde(default)]
    duration_secs: f64,
    #[serde(default)]
    databases: Vec<ClusterDatabase>,
    #[serde(default)]
    globals: Option<GlobalsSummary>,
}

#[derive(Deserialize, Default)]
struct NameOnly {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct OptionsSummary {
    #[serde(default)]
    recipients: Vec<String>,
    /// Cluster manifests: the options of every database.
    #[serde(default)]
    database: Option<Box<OptionsSummary>>,
    /// Cluster manifests: the backup filters.
    #[serde(default)]
    filters: Option<crate::format::selection::Filters>,
}

#[derive(Deserialize)]
struct StrategySummary {
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TotalsSummary {
    tables: u64,
    rows: u64,
    raw_bytes: u64,
    stored_bytes: u64,
    duration_secs: f64,
}

#[derive(Deserialize)]
struct MemorySummary {
    #[serde(default)]
    peak_rss_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct ClusterDatabase {
    #[serde(default)]
    dir: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    raw_bytes: u64,
    #[serde(default)]
    stored_bytes: u64,
}

#[derive(Deserialize)]
struct GlobalsSummary {
    #[serde(default)]
    file: Option<FileSizes>,
}

#[derive(Deserialize)]
struct FileSizes {
    #[serde(default)]
    raw_bytes: u64,
    #[serde(default)]
    stored_bytes: u64,
    #[serde(default)]
    encrypted: bool,
}

/// A drill record (`drills/<time>.json`); only what metrics need.
#[derive(Deserialize)]
struct DrillFile {
    #[serde(default)]
    started_at: String,
    #[serde(default)]
    finished_at: Option<String>,
    passed: bool,
}
