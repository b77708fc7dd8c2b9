//! One database of a cluster run under a deadline ([`run_guarded`]): its sessions and children
//! tagged through application_name, cancelled, terminated and killed when its time is up.

use std::fs;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::now_rfc3339;
use crate::error::{Error, Result};
use crate::format::manifest::{Manifest, Status, MANIFEST_FILE};
use crate::source::conn::ConnParams;
use crate::storage::Store;

/// How long a cancelled database backup gets to stop by itself before it is terminated.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long we keep terminating a timed-out database's backends before giving up.
const TERMINATE_FOR: Duration = Duration::from_secs(15);

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
pub(super) fn mark_failed(out: &Store, dbname: &str, reason: &str) {
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
        "format_version": crate::format::manifest::FORMAT_VERSION,
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
            let _ = crate::format::manifest::store_atomically(
                out,
                &serde_json::to_vec_pretty(&v).expect("serializes"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
