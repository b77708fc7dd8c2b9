//! The drill record: what one drill found, kept with the backup it tested, at
//! `<backup>/drills/<YYYYMMDDTHHMMSSZ>.json` (the time the drill started, UTC).
//!
//! Monitoring reads these (the newest per database) to tell when a backup was last proven to
//! restore; `verify` and `restore` ignore the `drills/` directory.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::storage::Store;

/// The directory of a backup that holds its drill records.
pub const DRILLS_DIR: &str = "drills";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DrillRecord {
    /// The database the backup is of (its name on the source server).
    pub database: String,
    /// When the backup started (RFC 3339, from its manifest): which backup was drilled.
    pub backup_started_at: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_secs: f64,
    pub passed: bool,
    /// What differed, one line each, or why the restore failed; empty when it passed.
    pub differences: Vec<String>,
    /// The database the backup was restored into (dropped afterwards unless kept).
    pub scratch_database: String,
    /// `dbbackup <version>` that ran the drill.
    pub tool: String,
}

impl DrillRecord {
    /// Stores the record in `backup`'s `drills/`, named after its start time, atomically as
    /// every object is written; never replaces an earlier record (a second drill started in
    /// the same second gets `-2`, `-3`…). Returns where it went.
    pub fn store(&self, backup: &Store) -> Result<String> {
        let stamp = parse_rfc3339(&self.started_at)
            .map(compact)
            .unwrap_or_else(|| self.started_at.replace([':', '-'], ""));
        backup.create_dir(DRILLS_DIR)?;
        let json = serde_json::to_vec_pretty(self).expect("a drill record serializes");
        for n in 1..100 {
            let name = match n {
                1 => format!("{DRILLS_DIR}/{stamp}.json"),
                n => format!("{DRILLS_DIR}/{stamp}-{n}.json"),
            };
            if !backup.exists(&name)? {
                backup.put_atomic(&name, &json)?;
                return Ok(backup.describe(&name).display().to_string());
            }
        }
        Err(Error::Refused(format!(
            "{} holds 99 drill records started at {stamp}; not adding another",
            backup.describe(DRILLS_DIR).display()
        )))
    }

    /// Every drill record of `backup`, oldest first (by name, which is by start time).
    pub fn load_all(backup: &Store) -> Result<Vec<DrillRecord>> {
        let prefix = format!("{DRILLS_DIR}/");
        let mut names: Vec<String> = backup
            .list()?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(&prefix) && name.ends_with(".json"))
            .collect();
        // `<stamp>.json` before `<stamp>-2.json`: by stamp, then by the counter.
        names.sort_by_key(|name| {
            let stem = name.trim_end_matches(".json");
            match stem.rsplit_once('-') {
                Some((stamp, n)) => (stamp.to_string(), n.parse::<u32>().unwrap_or(0)),
                None => (stem.to_string(), 1),
            }
        });
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            let Some(data) = backup.read_small(&name)? else {
                continue;
            };
            let record = serde_json::from_slice(&data).map_err(|e| {
                Error::corrupt(backup.describe(&name), format!("not a drill record: {e}"))
            })?;
            records.push(record);
        }
        Ok(records)
    }
}

/// A time as `YYYYMMDDTHHMMSSZ` (UTC): file names, scratch database names, backup labels.
pub fn compact(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(time::macros::format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .expect("formats")
}

/// Parses an RFC 3339 time as manifests write it.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// RFC 3339 of `t` (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_times_are_utc() {
        let t = parse_rfc3339("2026-11-29T03:00:00+01:00").unwrap();
        assert_eq!(compact(t), "20261129T020000Z");
    }

    #[test]
    fn records_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path());
        let record = DrillRecord {
            database: "shop".into(),
            backup_started_at: "2026-11-29T02:00:00Z".into(),
            started_at: "2026-11-30T04:00:00Z".into(),
            finished_at: "2026-11-30T04:00:12Z".into(),
            duration_secs: 12.0,
            passed: true,
            differences: vec![],
            scratch_database: "dbbackup_drill_shop_20261130T040000Z".into(),
            tool: "dbbackup test".into(),
        };
        let first = record.store(&store).unwrap();
        let failed = DrillRecord {
            passed: false,
            ..record.clone()
        };
        let second = failed.store(&store).unwrap();
        assert!(first.ends_with("drills/20261130T040000Z.json"), "{first}");
        assert!(
            second.ends_with("drills/20261130T040000Z-2.json"),
            "{second}"
        );
        assert_eq!(DrillRecord::load_all(&store).unwrap(), vec![record, failed]);
    }
}
