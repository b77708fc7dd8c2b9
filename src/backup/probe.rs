//! The probe as a backup uses it: the catalog probe in a short transaction (with the search for
//! values too large for pg_dump), the client tools chosen for the server, and the record of
//! them in the manifest.

use crate::error::{Error, Result};
use crate::progress::{human_bytes, Progress};
use crate::source::conn::ConnParams;
use crate::source::large_values::{self, LargeValue, LARGE_VALUE_LIMIT};
use crate::source::probe::{probe, Probe};

/// At most this many tables are listed (largest first) in the manifest's probe record.
const PROBE_TABLES_LISTED: usize = 1000;

/// What the probe found, as recorded in the manifest and printed.
pub struct ProbeResult {
    pub probe: Probe,
    pub pg_dump_version: String,
    pub pg_dump_version_num: i32,
    /// The client tools chosen for the server, and why ([`pgtools`](crate::source::pgtools)).
    pub client_tools: String,
    /// What the search for values too large for pg_dump found; `None` when it did not run
    /// (the native engine's own probe, which does not need it).
    pub large_values: Option<LargeValueCheck>,
}

/// The result of [`large_values`]: how many tables could hold such a value, and the values over
/// the limit in the first table found with any.
pub struct LargeValueCheck {
    pub candidate_tables: usize,
    pub over_limit: Vec<LargeValue>,
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
        large_values: None,
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
        // Only plain/custom manifests carry it, and those only exist when nothing was over.
        if let Some(check) = &self.large_values {
            obj.insert(
                "large_values".into(),
                serde_json::json!({
                    "limit_bytes": LARGE_VALUE_LIMIT,
                    "candidate_tables": check.candidate_tables,
                }),
            );
        }
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
        let line = format!(
            "probe of {dbname}: database size {}, {} tables ({} in tables, ~{} rows), {} large objects ({}), server {}, {}",
            human_bytes(p.database_size.max(0) as u64),
            p.tables.len(),
            human_bytes(p.tables.iter().map(|t| t.size_bytes.max(0) as u64).sum()),
            p.tables.iter().map(|t| t.row_estimate.max(0)).sum::<i64>(),
            p.large_object_count,
            human_bytes(p.large_object_bytes.max(0) as u64),
            p.server_version,
            self.client_tools
        );
        // The counts above are of what the filters selected: say so.
        let line = match p.selection.is_everything() {
            true => line,
            false => format!("{line}; selected by {}", p.selection.filters().describe()),
        };
        match &p.standby {
            Some(s) => format!("{line}; {}", s.describe()),
            None => line,
        }
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

/// Runs the probe of the pg_dump strategies in a short REPEATABLE READ transaction, with the
/// search for values too large for pg_dump's text output ([`large_values`]: catalog, then one
/// heap pass per table that can hold one), and checks the local pg_dump.
pub async fn run_probe(
    conn: &ConnParams,
    dbname: &str,
    lock_timeout: std::time::Duration,
    selection: crate::format::selection::Selection,
    check_matches: bool,
    sessions: &crate::backup::Sessions,
    progress: &dyn Progress,
) -> Result<ProbeResult> {
    let session = conn.connect(dbname).await?;
    sessions.add(session.cancel.clone());
    let client = &session.client;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| Error::query("starting the probe transaction", e))?;
    let found = probe(client, dbname, lock_timeout, selection, check_matches).await?;
    let candidates = large_values::candidates(client, &found.tables).await?;
    if !candidates.is_empty() {
        progress.note(&format!(
            "probe of {dbname}: {} table(s) can hold values over {} MiB (TOAST of {} or more); reading their heap ({}) for the sizes",
            candidates.len(),
            LARGE_VALUE_LIMIT >> 20,
            human_bytes(large_values::MIN_TOAST_BYTES),
            human_bytes(candidates.iter().map(|c| c.heap_bytes).sum())
        ));
    }
    let over_limit = large_values::measure(client, &candidates).await?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| Error::query("ending the probe transaction", e))?;
    let mut result = with_client_tools(found)?;
    result.large_values = Some(LargeValueCheck {
        candidate_tables: candidates.len(),
        over_limit,
    });
    Ok(result)
}
