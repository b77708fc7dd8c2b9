//! `backup cluster` / cluster `restore`: every database of a server plus its globals (roles,
//! memberships, role settings, tablespaces), each database isolated from the others' failures.
//!
//! Layout of a cluster backup:
//!
//! ```text
//! DIR/manifest.json               the cluster manifest (kind "cluster", ClusterManifest)
//! DIR/globals/globals.sql[.zst]   pg_dumpall --globals-only, a checksummed chunk
//! DIR/<dir name>/                 one ordinary database backup (its own manifest.json)
//! ```
//!
//! A database's directory name is its name with every byte outside `[A-Za-z0-9_.-]`
//! percent-encoded ([`dir_name`]); the real name is in the cluster manifest.
//!
//! Each database runs under [`run_guarded`]: its connections (and its pg_dump children, through
//! `PGAPPNAME`) carry an application_name of their own, `dbbackup/<pid>/<n>`. When the
//! database's `--timeout` expires (or the run is interrupted) its cancellation token is
//! cancelled, its running statements are cancelled on the server (`pg_cancel_backend`), then,
//! after a grace period, whatever of it is still connected is terminated
//! (`pg_terminate_backend`) and its child processes are killed; its manifest is marked failed
//! (`timeout after <DURATION>`) and the cluster backup goes on with the next database.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backup::{prepare_out_dir, BackupOptions};
use crate::child::Child;
use crate::chunk::{ChunkReader, ChunkWriter};
use crate::conn::ConnParams;
use crate::error::{Error, Result};
use crate::manifest::{now_rfc3339, Chunk, Manifest, OptionsRecord, Status, MANIFEST_FILE};
use crate::progress::{Progress, Silent};
use crate::restore::{restore_database, RestoreOptions};
use crate::storage::Store;
use crate::strategy::{FormatChoice, StrategyOptions};

/// Version of the cluster manifest layout; readers refuse newer ones.
pub const CLUSTER_FORMAT_VERSION: u32 = 1;
/// The `kind` field that tells a cluster manifest from a database manifest.
pub const CLUSTER_KIND: &str = "cluster";
/// Directory of the globals chunk.
const GLOBALS_DIR: &str = "globals";
/// How long a cancelled database backup gets to stop by itself before it is terminated.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long we keep terminating a timed-out database's backends before giving up.
const TERMINATE_FOR: Duration = Duration::from_secs(15);
/// psql stderr lines kept while restoring globals (every "already exists" is reported).
const GLOBALS_STDERR_LINES: usize = 100_000;

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
        let (path, v) = crate::manifest::read_versioned(dir, CLUSTER_FORMAT_VERSION, "cluster ")?;
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
        crate::manifest::store_atomically(dir, &json)
    }

    fn recompute_status(&mut self) {
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
fn is_plain_dir_name(s: &str) -> bool {
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

// ---------------------------------------------------------------------------------------------
// One database under a deadline
// ---------------------------------------------------------------------------------------------

/// A `--timeout`: the duration, and the text the user gave (used in messages: `timeout after 2h`).
#[derive(Debug, Clone)]
pub struct Deadline {
    pub after: Duration,
    pub text: String,
}

impl Deadline {
    pub fn reason(&self) -> String {
        format!("timeout after {}", self.text)
    }
}

static JOB_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh application_name for one job's connections and children: `dbbackup/<pid>/<n>`
/// (at most 63 bytes, so the server keeps it whole).
pub fn job_tag(conn: &ConnParams) -> String {
    let n = JOB_SEQ.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("/{}/{n}", std::process::id());
    let mut base: String = conn
        .application_name
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// How a guarded job ended when it did not end by itself.
enum Stopped {
    Timeout,
    Interrupted,
}

/// Runs one database backup `job` (given its tagged connection settings and its own
/// cancellation token) writing into `out`, under `deadline`.
///
/// When the deadline passes (or `cancel` fires): the job's token is cancelled and its running
/// statements are cancelled on the server; after a grace period whatever of the job is still
/// connected is terminated and its children are killed; `out/manifest.json` then says failed
/// with `timeout after <DURATION>` (or `interrupted`). A failed job without a manifest gets a
/// minimal failed one, so that every database directory says what happened.
pub async fn run_guarded<F, Fut>(
    conn: &ConnParams,
    dbname: &str,
    out: &Store,
    deadline: Option<&Deadline>,
    cancel: &CancellationToken,
    job: F,
) -> Result<Manifest>
where
    F: FnOnce(ConnParams, CancellationToken) -> Fut,
    Fut: Future<Output = Result<Manifest>> + Send + 'static,
{
    // Only a directory this job owns may be marked failed: never a finished backup that was
    // in the way, nor a directory of somebody else's files.
    let touchable = match Manifest::load(out) {
        Ok(m) => m.status != Status::Complete,
        Err(_) => out.list().map_or(true, |objects| objects.is_empty()),
    };
    let mark_failed = |reason: &str| {
        if touchable {
            mark_failed(out, dbname, reason)
        }
    };
    let tag = job_tag(conn);
    let mut tagged = conn.clone();
    tagged.application_name = tag.clone();
    let token = cancel.child_token();
    let mut handle = tokio::spawn(job(tagged, token.clone()));
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep(d.after).await,
            None => std::future::pending::<()>().await,
        }
    };
    let (stopped, finished) = tokio::select! {
        r = &mut handle => (None, Some(r)),
        _ = sleep => (Some(Stopped::Timeout), None),
        _ = cancel.cancelled() => (Some(Stopped::Interrupted), None),
    };
    let how = match (stopped, finished) {
        (None, Some(joined)) => {
            let r =
                joined.unwrap_or_else(|e| Err(Error::Refused(format!("backup task failed: {e}"))));
            if let Err(e) = &r {
                // The engine should have cleaned up; make sure.
                clean_up(conn, &tag).await;
                mark_failed(&e.to_string());
            }
            return r;
        }
        (Some(how), _) => how,
        (None, None) => unreachable!("select yields one branch"),
    };
    token.cancel();
    let _ = signal_backends(conn, &tag, false).await;
    match tokio::time::timeout(STOP_GRACE, &mut handle).await {
        Ok(_) => {}
        Err(_) => handle.abort(),
    }
    clean_up(conn, &tag).await;
    let (reason, err) = match (how, deadline) {
        (Stopped::Timeout, Some(d)) => (
            d.reason(),
            Error::Timeout {
                what: format!("backup of database {dbname:?}"),
                after: d.text.clone(),
            },
        ),
        _ => ("interrupted".to_string(), Error::Interrupted),
    };
    mark_failed(&reason);
    Err(err)
}

/// Terminates what is left of job `tag`: its backends (until none is left, or
/// [`TERMINATE_FOR`]) and its child processes.
async fn clean_up(conn: &ConnParams, tag: &str) {
    let until = Instant::now() + TERMINATE_FOR;
    loop {
        match signal_backends(conn, tag, true).await {
            Ok(0) => break,
            Ok(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => break,
        }
    }
    let tag = tag.to_string();
    let _ = tokio::task::spawn_blocking(move || kill_tagged_children(&tag)).await;
}

/// `pg_cancel_backend` (or `pg_terminate_backend`) for every backend whose application_name is
/// `tag`; returns how many there were.
async fn signal_backends(conn: &ConnParams, tag: &str, terminate: bool) -> Result<i64> {
    let session = conn.connect(&conn.maintenance_db).await?;
    let sql = if terminate {
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()"
    } else {
        "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()"
    };
    let n: i64 = session
        .client
        .query_one(sql, &[&tag])
        .await
        .map_err(|e| Error::query("signalling the backends of a stopped backup", e))?
        .get(0);
    let _ = session.close("maintenance connection").await;
    Ok(n)
}

/// Our direct children whose environment carries `PGAPPNAME=<tag>`: their process groups get
/// SIGTERM, then SIGKILL after a grace period (Linux: reads /proc).
fn kill_tagged_children(tag: &str) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let find = || -> Vec<i32> {
        let me = std::process::id();
        let needle = format!("PGAPPNAME={tag}");
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return out;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let ppid: Option<u32> = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            if ppid != Some(me) {
                continue;
            }
            let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                out.push(pid);
            }
        }
        out
    };
    let found = find();
    if found.is_empty() {
        return;
    }
    for pid in &found {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !find().is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in find() {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Marks `out/manifest.json` failed with `reason` (written as a minimal failed manifest when
/// the job never wrote one). Best effort: the reason is reported elsewhere as well.
fn mark_failed(out: &Store, dbname: &str, reason: &str) {
    if let Ok(mut m) = Manifest::load(out) {
        m.status = Status::Failed;
        m.error = Some(reason.to_string());
        if m.finished_at.is_none() {
            m.finished_at = Some(now_rfc3339());
        }
        let _ = m.store(out);
        return;
    }
    if out.exists(MANIFEST_FILE).unwrap_or(true) || out.create_dir("").is_err() {
        return;
    }
    let now = now_rfc3339();
    let v = serde_json::json!({
        "format_version": crate::manifest::FORMAT_VERSION,
        "tool": format!("dbbackup {}", env!("CARGO_PKG_VERSION")),
        "status": "failed",
        "error": reason,
        "started_at": now,
        "finished_at": now,
        "server_version": "",
        "server_version_num": 0,
        "pg_dump_version": "",
        "database": {
            "name": dbname, "encoding": "", "collate": "", "ctype": "",
            "locale_provider": "", "owner": "", "connection_limit": -1,
            "grants": [], "settings": []
        },
        "consistent": false,
        "options": {
            "codec": "none", "level": 0, "chunk_size": 0, "split_tables_larger_than": 0,
            "parallel_tables": 0, "copy_format": ""
        },
        "strategy": { "kind": "native", "reason": "the backup failed before choosing" },
        "totals": { "tables": 0, "rows": 0, "chunks": 0, "raw_bytes": 0, "stored_bytes": 0, "duration_secs": 0.0 }
    });
    match serde_json::from_value::<Manifest>(v.clone()) {
        Ok(m) => {
            let _ = m.store(out);
        }
        Err(_) => {
            let _ = crate::manifest::store_atomically(
                out,
                &serde_json::to_vec_pretty(&v).expect("serializes"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
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
    let tools = crate::pgtools::choose_for_backup(server_version_num)?;
    crate::strategy::check_pg_dump_version(
        tools.version_num,
        &tools.version,
        server_version_num,
        &server_version,
    )?;
    progress.note(&format!("server {server_version}, {}", tools.describe()));

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
                size: r.get(3),
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
        (Some(previous), crate::dirlock::DirLock::acquire(&opts.out)?)
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
                crate::strategy::human_bytes(chunk.raw_bytes),
                crate::strategy::human_bytes(chunk.stored_bytes)
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
            let mut db_opts = opts.db.clone();
            db_opts.out = out.clone();
            if opts.db.resume {
                // Native backups continue where they stopped; anything else starts over.
                // A placeholder manifest (the backup failed before planning) has nothing to keep.
                let resumable = Manifest::load(&out).is_ok_and(|m| {
                    m.strategy.kind == crate::manifest::StrategyKind::Native
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
                        crate::strategy::backup_with_strategy(
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
    for i in queue {
        let entry = &mut manifest.databases[i];
        entry.status = DbStatus::Failed;
        entry.error = Some("interrupted before it started".into());
    }
    manifest.duration_secs = started.elapsed().as_secs_f64();
    manifest.finished_at = Some(now_rfc3339());
    manifest.recompute_status();
    manifest.store(&opts.out)?;
    Ok(manifest)
}

/// `pg_dumpall --globals-only` into `out/globals/globals.sql[.zst]`, through the environment's
/// connection settings (never a password on the command line).
fn dump_globals(
    conn: &ConnParams,
    out: &Store,
    codec: crate::compress::Codec,
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
    crate::pgtools::choose_for_restore_into(
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
    if let Err(e) = crate::verify::verify_chunk(dir, chunk, crate::verify::Payload::Opaque) {
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
// Verify
// ---------------------------------------------------------------------------------------------

/// Verifies a cluster backup: the globals chunk and every complete database's directory
/// (with [`crate::verify::verify_dir`]); failed databases are reported as problems.
pub fn verify_cluster(dir: &Store) -> Result<crate::verify::Report> {
    let m = ClusterManifest::load(dir)?;
    let mut report = crate::verify::Report::default();
    match (&m.globals.file, m.globals.status) {
        (Some(c), Status::Complete) => {
            report.files += 1;
            report.stored_bytes += c.stored_bytes;
            report.raw_bytes += c.raw_bytes;
            if c.encrypted && !dir.sealing().can_decrypt() {
                report.warnings.push(crate::verify::contents_not_checked());
            }
            if let Err(e) = crate::verify::verify_chunk(dir, c, crate::verify::Payload::Opaque) {
                report.problems.push(e);
            }
        }
        _ => report.problems.push(Error::manifest(
            dir.describe(MANIFEST_FILE),
            format!(
                "the globals failed: {}",
                m.globals.error.as_deref().unwrap_or("no file")
            ),
        )),
    }
    for d in &m.databases {
        match d.status {
            DbStatus::Skipped => {}
            DbStatus::Complete => match crate::verify::verify_dir(&dir.sub(&d.dir)) {
                Ok(r) => {
                    report.files += r.files;
                    report.stored_bytes += r.stored_bytes;
                    report.raw_bytes += r.raw_bytes;
                    report.rows += r.rows;
                    report.problems.extend(r.problems);
                    report
                        .warnings
                        .extend(r.warnings.into_iter().map(|w| format!("{}: {w}", d.name)));
                }
                Err(e) => report.problems.push(e),
            },
            _ => report.problems.push(Error::manifest(
                dir.describe(MANIFEST_FILE),
                format!(
                    "database {:?} failed: {}",
                    d.name,
                    d.error.as_deref().unwrap_or("no reason recorded")
                ),
            )),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("shop_*", "shop_eu"));
        assert!(!glob_match("shop_*", "shop"));
        assert!(glob_match("shop?", "shop1"));
        assert!(!glob_match("shop?", "shop12"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("*.old", "x.y.old"));
        assert!(glob_match("ü?", "üß"));
        assert!(!glob_match("Shop", "shop"));
        assert!(glob_match("**x", "x"));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn selection() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(selected("a", &[], &[]));
        assert!(selected("app1", &s(&["app*"]), &[]));
        assert!(!selected("other", &s(&["app*"]), &[]));
        assert!(!selected("app_old", &s(&["app*"]), &s(&["*_old"])));
    }

    #[test]
    fn directory_names() {
        assert_eq!(dir_name("shop_1.v-2"), "shop_1.v-2");
        assert_eq!(dir_name("a b"), "a%20b");
        assert_eq!(dir_name("x/y"), "x%2Fy");
        assert_eq!(dir_name("q\"'"), "q%22%27");
        assert_eq!(dir_name("ü"), "%C3%BC");
        assert_eq!(dir_name("."), "%2E");
        assert_eq!(dir_name(".."), "%2E.");
        assert_eq!(dir_name("globals"), "%67lobals");
        assert_eq!(dir_name("manifest.json"), "%6Danifest.json");
        assert_eq!(dir_name("100%"), "100%25");
        for n in [".", "..", "globals", "a b", "ü", "x/y", "manifest.json"] {
            assert!(is_plain_dir_name(&dir_name(n)), "{n}");
        }
    }

    #[test]
    fn tags_fit_application_name() {
        let mut c = ConnParams::resolve_with(&Default::default(), &|_| None, None).unwrap();
        c.application_name = "x".repeat(100);
        assert!(job_tag(&c).len() <= 63);
        c.application_name = "dbbackup".into();
        assert!(job_tag(&c).starts_with("dbbackup/"));
    }
}
