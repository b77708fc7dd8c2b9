//! The Prometheus text-format file for node_exporter's textfile collector: per database,
//! figures of its last backups, made from catalog records (a repository's, or the one backup
//! of a `--out` run), replaced atomically so the collector never reads half a file.
//!
//! Every sample has the label `database` (cluster backups: `database="cluster"`). The last
//! run's outcome is `dbbackup_last_status{status="complete"|"failed"|"interrupted"}`, 1 for
//! the status of the newest finished backup and 0 for the others. Sizes, counts, duration,
//! retries and peak memory are those of the newest complete backup (a failed run's partial
//! sizes would look like a shrunken database); `dbbackup_previous_*_bytes` are those of the
//! complete backup before it, for a "size changed" alert.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::repo::catalog::{BackupRecord, BackupStatus};

/// The statuses `dbbackup_last_status` has a sample for.
const RUN_STATUSES: [&str; 3] = ["complete", "failed", "interrupted"];

/// One metric family: name, help, and its samples (label sets beyond `database`, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(String, String, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, database: &str, value: f64) {
        self.samples
            .push((database.to_string(), String::new(), value));
    }

    fn add_labelled(&mut self, database: &str, labels: String, value: f64) {
        self.samples.push((database.to_string(), labels, value));
    }
}

fn seconds(t: time::OffsetDateTime) -> f64 {
    t.unix_timestamp() as f64
}

/// The file's text for `backups` (any order; several databases).
pub fn render(backups: &[BackupRecord]) -> String {
    let mut by_db: BTreeMap<&str, Vec<&BackupRecord>> = BTreeMap::new();
    for b in backups {
        by_db.entry(b.database.as_str()).or_default().push(b);
    }
    let mut success = Family::new(
        "dbbackup_last_success_timestamp_seconds",
        "When the newest complete backup finished (Unix time; 0: none).",
    );
    let mut failure = Family::new(
        "dbbackup_last_failure_timestamp_seconds",
        "When the newest failed or interrupted backup ended (Unix time; 0: none).",
    );
    let mut status = Family::new(
        "dbbackup_last_status",
        "1 for the status of the newest finished backup (complete, failed, interrupted), 0 for the others.",
    );
    let mut duration = Family::new(
        "dbbackup_last_duration_seconds",
        "Duration of the newest complete backup.",
    );
    let mut raw = Family::new(
        "dbbackup_last_raw_bytes",
        "Uncompressed size of the newest complete backup.",
    );
    let mut stored = Family::new(
        "dbbackup_last_stored_bytes",
        "Stored (compressed, encrypted) size of the newest complete backup.",
    );
    let mut prev_raw = Family::new(
        "dbbackup_previous_raw_bytes",
        "Uncompressed size of the complete backup before the newest.",
    );
    let mut prev_stored = Family::new(
        "dbbackup_previous_stored_bytes",
        "Stored size of the complete backup before the newest.",
    );
    let mut tables = Family::new(
        "dbbackup_last_tables",
        "Tables in the newest complete backup.",
    );
    let mut rows = Family::new("dbbackup_last_rows", "Rows in the newest complete backup.");
    let mut retries = Family::new(
        "dbbackup_last_retries",
        "Units dumped again after a retryable error in the newest complete backup.",
    );
    let mut rss = Family::new(
        "dbbackup_last_peak_rss_bytes",
        "Peak resident memory of the newest complete backup's run, when recorded.",
    );
    let mut count = Family::new(
        "dbbackup_backups",
        "Backups in the repository, whatever their status.",
    );
    let mut drill_at = Family::new(
        "dbbackup_last_drill_timestamp_seconds",
        "When the newest restore drill of the database's backups ended (Unix time).",
    );
    let mut drill_ok = Family::new(
        "dbbackup_last_drill_success",
        "1 when the newest restore drill passed, 0 when it failed.",
    );
    for (db, mut list) in by_db {
        list.sort_by_key(|b| std::cmp::Reverse(b.time));
        let mut complete = list.iter().filter(|b| b.status == BackupStatus::Complete);
        let newest = complete.next();
        let previous = complete.next();
        let failed = list
            .iter()
            .find(|b| matches!(b.status, BackupStatus::Failed | BackupStatus::Interrupted));
        success.add(db, newest.map_or(0.0, |b| seconds(b.ended())));
        failure.add(db, failed.map_or(0.0, |b| seconds(b.ended())));
        let finished = list.iter().find(|b| {
            matches!(
                b.status,
                BackupStatus::Complete | BackupStatus::Failed | BackupStatus::Interrupted
            )
        });
        if let Some(last) = finished {
            for s in RUN_STATUSES {
                let value = if last.status.as_str() == s { 1.0 } else { 0.0 };
                status.add_labelled(db, format!(",status=\"{s}\""), value);
            }
        }
        if let Some(b) = newest {
            duration.add(db, b.duration_secs);
            raw.add(db, b.raw_bytes as f64);
            stored.add(db, b.stored_bytes as f64);
            tables.add(db, b.tables as f64);
            rows.add(db, b.rows as f64);
            retries.add(db, f64::from(b.retries));
            if let Some(peak) = b.peak_rss_bytes {
                rss.add(db, peak as f64);
            }
        }
        if let Some(b) = previous {
            prev_raw.add(db, b.raw_bytes as f64);
            prev_stored.add(db, b.stored_bytes as f64);
        }
        count.add(db, list.len() as f64);
        if let Some(d) = list
            .iter()
            .filter_map(|b| b.last_drill.as_ref())
            .max_by_key(|d| d.at)
        {
            drill_at.add(db, seconds(d.at));
            drill_ok.add(db, if d.passed { 1.0 } else { 0.0 });
        }
    }
    let mut out = String::new();
    for f in [
        success,
        failure,
        status,
        duration,
        raw,
        stored,
        prev_raw,
        prev_stored,
        tables,
        rows,
        retries,
        rss,
        count,
        drill_at,
        drill_ok,
    ] {
        if f.samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} gauge", f.name);
        for (db, labels, value) in &f.samples {
            let _ = writeln!(
                out,
                "{}{{database=\"{}\"{labels}}} {value}",
                f.name,
                escape_label(db)
            );
        }
    }
    out
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Replaces the file `path` with `text` atomically: a temporary file in the same directory,
/// fsynced, renamed over it, and the directory fsynced.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".dbbackup-metrics")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("creating a temporary file in", &dir, e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("writing", tmp.path(), e))?;
    // node_exporter runs as another user: the file is readable by all, like any textfile.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("setting permissions of", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("replacing", path, e.error))?;
    crate::storage::local::sync_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }
}
