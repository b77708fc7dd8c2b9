//! The size probe and the choice of strategy: native (parallel COPY), or pg_dump's own plain or
//! custom format streamed through our compressor ([`crate::backup::stream`]).
//!
//! The auto rule (`--format auto`, the default), documented in `--help` and the README:
//!
//! 1. `--parallel-tables N` with N > 1 given explicitly → **native**: the parallel path;
//! 2. otherwise, `pg_database_size` below `--plain-threshold` (default 5 GiB) → **custom**:
//!    pg_restore keeps its selective (`-L`/`-n`/`-t`) and parallel (`-j`) restore;
//! 3. otherwise (at or above the threshold) → **plain**: one SQL stream, without custom
//!    format's per-object framing.
//!
//! The probe runs in a short REPEATABLE READ transaction before anything is written; it refuses
//! a local pg_dump older than the server. Its findings and the decision, with the reason in
//! words, are printed and recorded in the manifest (`probe`, `strategy`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backup::{backup_database, BackupOptions};
use crate::error::{Error, Result};
use crate::format::manifest::{Manifest, Strategy, StrategyKind};
use crate::progress::Progress;
use crate::source::conn::ConnParams;
use crate::source::probe::{probe, Probe};

/// Default of `--plain-threshold`: 5 GiB.
pub const DEFAULT_PLAIN_THRESHOLD: u64 = 5 << 30;

/// At most this many tables are listed (largest first) in the manifest's probe record.
const PROBE_TABLES_LISTED: usize = 1000;

/// What the user asked for with `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    Auto,
    Native,
    Plain,
    Custom,
}

/// The inputs of the strategy decision besides the probe.
#[derive(Debug, Clone)]
pub struct StrategyOptions {
    pub format: FormatChoice,
    /// `--parallel-tables` when the user gave it (not the default of one per core).
    pub parallel_tables_explicit: Option<usize>,
    /// `--plain-threshold`: database size from which auto picks plain over custom.
    pub plain_threshold: u64,
}

/// Applies `--format` and the auto rule to the probed database size.
pub fn decide(opts: &StrategyOptions, database_size: u64) -> Strategy {
    let (kind, reason) = match opts.format {
        FormatChoice::Native => (StrategyKind::Native, "--format native requested".to_string()),
        FormatChoice::Plain => (StrategyKind::Plain, "--format plain requested".to_string()),
        FormatChoice::Custom => (
            StrategyKind::Custom,
            "--format custom requested".to_string(),
        ),
        FormatChoice::Auto => match opts.parallel_tables_explicit {
            Some(n) if n > 1 => (
                StrategyKind::Native,
                format!(
                    "auto: --parallel-tables {n} was asked explicitly, so the parallel native engine"
                ),
            ),
            _ if database_size < opts.plain_threshold => (
                StrategyKind::Custom,
                format!(
                    "auto: database size {} is below --plain-threshold {}: custom format keeps pg_restore's selective and parallel restore",
                    human_bytes(database_size),
                    human_bytes(opts.plain_threshold)
                ),
            ),
            _ => (
                StrategyKind::Plain,
                format!(
                    "auto: database size {} is at or above --plain-threshold {}: a plain SQL stream avoids custom format's overhead",
                    human_bytes(database_size),
                    human_bytes(opts.plain_threshold)
                ),
            ),
        },
    };
    Strategy { kind, reason }
}

/// What the probe found, as recorded in the manifest and printed.
pub struct ProbeResult {
    pub probe: Probe,
    pub pg_dump_version: String,
    pub pg_dump_version_num: i32,
    /// The client tools chosen for the server, and why ([`pgtools`](crate::source::pgtools)).
    pub client_tools: String,
}

/// Chooses the client tools for the probed server ([`crate::source::pgtools`]) and refuses a
/// pg_dump older than the server.
pub fn with_client_tools(probe: Probe) -> Result<ProbeResult> {
    let tools = crate::source::pgtools::choose_for_backup(probe.server_version_num)?;
    check_pg_dump_version(
        tools.version_num,
        &tools.version,
        probe.server_version_num,
        &probe.server_version,
    )?;
    Ok(ProbeResult {
        probe,
        pg_dump_version: tools.version.clone(),
        pg_dump_version_num: tools.version_num,
        client_tools: tools.describe(),
    })
}

impl ProbeResult {
    /// The manifest's `probe` record: sizes, counts, versions, the largest tables.
    pub fn to_json(&self) -> serde_json::Value {
        let p = &self.probe;
        let mut tables: Vec<&crate::source::probe::TableInfo> = p.tables.iter().collect();
        tables.sort_by_key(|t| std::cmp::Reverse(t.size_bytes));
        let listed: Vec<serde_json::Value> = tables
            .iter()
            .take(PROBE_TABLES_LISTED)
            .map(|t| {
                serde_json::json!({
                    "schema": t.schema,
                    "name": t.name,
                    "size_bytes": t.size_bytes,
                    "row_estimate": t.row_estimate,
                })
            })
            .collect();
        let mut v = p.summary_json();
        let obj = v.as_object_mut().expect("summary is an object");
        obj.insert(
            "server_version_num".into(),
            serde_json::json!(p.server_version_num),
        );
        obj.insert(
            "pg_dump_version".into(),
            serde_json::json!(self.pg_dump_version),
        );
        obj.insert("client_tools".into(), serde_json::json!(self.client_tools));
        obj.insert(
            "row_estimate".into(),
            serde_json::json!(p.tables.iter().map(|t| t.row_estimate).sum::<i64>()),
        );
        obj.insert("largest_tables".into(), serde_json::Value::Array(listed));
        if p.tables.len() > PROBE_TABLES_LISTED {
            obj.insert(
                "largest_tables_note".into(),
                serde_json::json!(format!(
                    "the {PROBE_TABLES_LISTED} largest of {} tables",
                    p.tables.len()
                )),
            );
        }
        v
    }

    /// One line for people.
    pub fn summary_line(&self, dbname: &str) -> String {
        let p = &self.probe;
        format!(
            "probe of {dbname}: database size {}, {} tables ({} in tables, ~{} rows), {} large objects ({}), server {}, {}",
            human_bytes(p.database_size.max(0) as u64),
            p.tables.len(),
            human_bytes(p.tables.iter().map(|t| t.size_bytes.max(0) as u64).sum()),
            p.tables.iter().map(|t| t.row_estimate.max(0)).sum::<i64>(),
            p.large_object_count,
            human_bytes(p.large_object_bytes.max(0) as u64),
            p.server_version,
            self.client_tools
        )
    }
}

/// Refuses a pg_dump whose major version is older than the server's.
pub fn check_pg_dump_version(
    pg_dump_num: i32,
    pg_dump: &str,
    server_num: i32,
    server: &str,
) -> Result<()> {
    if pg_dump_num / 10000 < server_num / 10000 {
        return Err(Error::Refused(format!(
            "pg_dump {pg_dump} is older than the server ({server}); pg_dump cannot dump a newer server: install a pg_dump of version {} or newer (or point DBBACKUP_PG_BINDIR at one)",
            server_num / 10000
        )));
    }
    Ok(())
}

/// Runs the probe in a short REPEATABLE READ transaction and checks the local pg_dump.
pub async fn run_probe(
    conn: &ConnParams,
    dbname: &str,
    lock_timeout: std::time::Duration,
    sessions: &crate::backup::Sessions,
) -> Result<ProbeResult> {
    let session = conn.connect(dbname).await?;
    sessions.add(session.cancel.clone());
    let client = &session.client;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| Error::query("starting the probe transaction", e))?;
    let found = probe(client, dbname, lock_timeout).await?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| Error::query("ending the probe transaction", e))?;
    with_client_tools(found)
}

/// `backup single`: probe, decide, print the decision, then run the native engine or stream
/// pg_dump's plain/custom output. On failure the manifest (if one was started) says `failed`.
pub async fn backup_with_strategy(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    strategy_opts: &StrategyOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Manifest> {
    if opts.resume {
        // Only native backups resume; the backup in --out says what it is.
        if matches!(
            strategy_opts.format,
            FormatChoice::Plain | FormatChoice::Custom
        ) {
            return Err(Error::Usage(
                "--resume continues native backups only; a plain/custom backup is rerun from the start".into(),
            ));
        }
        return backup_database(conn, dbname, opts, progress, cancel).await;
    }
    // Native chosen without looking at sizes (asked for, or --parallel-tables N > 1): the
    // engine's own probe, inside its snapshot, is the only one.
    let without_probe = match strategy_opts.format {
        FormatChoice::Native => true,
        FormatChoice::Auto => strategy_opts
            .parallel_tables_explicit
            .is_some_and(|n| n > 1),
        FormatChoice::Plain | FormatChoice::Custom => false,
    };
    if without_probe {
        let strategy = decide(strategy_opts, 0);
        return crate::backup::backup_native(conn, dbname, opts, strategy, progress, cancel).await;
    }
    // Cancellable like the backup itself: a timeout or Ctrl-C during a probe that waits for a
    // lock cancels its statement on the server.
    let sessions = crate::backup::Sessions::default();
    let found = crate::backup::cancellable(
        &cancel,
        &sessions,
        run_probe(conn, dbname, opts.lock_timeout, &sessions),
    )
    .await?;
    let strategy = decide(strategy_opts, found.probe.database_size.max(0) as u64);
    progress.note(&found.summary_line(dbname));
    progress.note(&format!(
        "strategy: {} ({})",
        strategy.kind.as_str(),
        strategy.reason
    ));
    let probe_json = found.to_json();
    match strategy.kind {
        // (Not reached today: decide() picks native only in the cases handled above.)
        StrategyKind::Native => {
            crate::backup::backup_native(conn, dbname, opts, strategy, progress, cancel).await
        }
        StrategyKind::Plain | StrategyKind::Custom => {
            crate::backup::stream::backup_stream(
                conn,
                dbname,
                opts,
                crate::backup::stream::StreamPlan {
                    strategy,
                    probe: &found.probe,
                    probe_json,
                    pg_dump_version: found.pg_dump_version.clone(),
                },
                progress,
                cancel,
            )
            .await
        }
    }
}

pub use crate::progress::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: FormatChoice, parallel: Option<usize>, threshold: u64) -> StrategyOptions {
        StrategyOptions {
            format,
            parallel_tables_explicit: parallel,
            plain_threshold: threshold,
        }
    }

    #[test]
    fn auto_rule() {
        let t = 1000;
        let auto = |p, size| decide(&opts(FormatChoice::Auto, p, t), size).kind;
        assert_eq!(auto(None, 999), StrategyKind::Custom);
        assert_eq!(auto(None, 1000), StrategyKind::Plain);
        assert_eq!(auto(None, 1001), StrategyKind::Plain);
        assert_eq!(auto(Some(1), 10), StrategyKind::Custom);
        assert_eq!(auto(Some(1), 5000), StrategyKind::Plain);
        assert_eq!(auto(Some(2), 10), StrategyKind::Native);
        assert_eq!(auto(Some(8), 5000), StrategyKind::Native);
    }

    #[test]
    fn explicit_formats_win() {
        for (f, k) in [
            (FormatChoice::Native, StrategyKind::Native),
            (FormatChoice::Plain, StrategyKind::Plain),
            (FormatChoice::Custom, StrategyKind::Custom),
        ] {
            assert_eq!(decide(&opts(f, Some(8), 1), 10).kind, k);
            assert_eq!(decide(&opts(f, None, 1 << 40), 10).kind, k);
        }
    }

    #[test]
    fn reasons_are_words() {
        let s = decide(&opts(FormatChoice::Auto, None, 5 << 30), 12 << 20);
        assert!(s.reason.contains("12.0 MiB"), "{}", s.reason);
        assert!(s.reason.contains("5.0 GiB"), "{}", s.reason);
    }

    #[test]
    fn old_pg_dump_refused() {
        assert!(check_pg_dump_version(150004, "15.4", 160002, "16.2").is_err());
        assert!(check_pg_dump_version(160002, "16.2", 150004, "15.4").is_ok());
        assert!(check_pg_dump_version(150001, "15.1", 150018, "15.18").is_ok());
    }
}
