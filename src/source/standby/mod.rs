//! Backups from a hot standby: knowing that the server is one, the settings that decide
//! whether a long snapshot survives WAL replay, and what to do about it.
//!
//! On a standby, replay removes row versions a backup's snapshot still sees and takes locks
//! its reads still hold; after `max_standby_streaming_delay` the startup process cancels the
//! backup (a *recovery conflict*). Three things avoid that: `hot_standby_feedback = on` (the
//! primary keeps the rows), a delay longer than the backup, or pausing replay for the backup
//! (`--pause-replay`, [`replay`]). The probe reads the settings ([`read`]) and warns before a
//! backup that is likely to outlive the delay ([`duration_warning`]); [`conflict`] names a
//! cancellation as what it is; [`watchdog`] resumes replay if dbbackup dies while it is paused.

pub mod conflict;
pub mod replay;
pub mod watchdog;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::progress::human_bytes;

/// Bytes per second a backup is assumed to read at most when estimating its duration for the
/// warning: deliberately low (a native backup of a warm database reads several times this),
/// so that the warning comes too often rather than too late.
pub const CONSERVATIVE_RATE: u64 = 50 << 20;

/// What a standby's probe found; `None` in [`crate::source::probe::Probe`] on a primary.
#[derive(Debug, Clone, PartialEq)]
pub struct StandbyInfo {
    pub hot_standby_feedback: bool,
    /// `max_standby_streaming_delay` in milliseconds; -1 = wait forever.
    pub max_standby_streaming_delay_ms: i64,
    /// Age of the last replayed commit (`pg_last_xact_replay_timestamp()`); grows on an idle
    /// primary too, so read it with `replay_lag_bytes`.
    pub replay_lag_secs: Option<f64>,
    /// WAL received but not yet replayed.
    pub replay_lag_bytes: Option<i64>,
    /// Sum of this database's `pg_stat_database_conflicts` counters when probed: the baseline
    /// [`conflict::classify`] compares with after a failure.
    pub conflicts: i64,
}

/// Reads whether the server is in recovery and, if so, its standby settings. Any session will
/// do; the probe runs it inside the snapshot's transaction.
pub async fn read(client: &Client) -> Result<Option<StandbyInfo>> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    current_setting('hot_standby_feedback') = 'on',
                    (SELECT setting::bigint FROM pg_settings
                      WHERE name = 'max_standby_streaming_delay'),
                    extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8,
                    pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint,
                    coalesce((SELECT confl_tablespace + confl_lock + confl_snapshot
                                     + confl_bufferpin + confl_deadlock
                                FROM pg_stat_database_conflicts
                               WHERE datname = current_database()), 0)",
            &[],
        )
        .await
        .map_err(|e| Error::query("reading the standby settings", e))?;
    if !row.get::<_, bool>(0) {
        return Ok(None);
    }
    Ok(Some(StandbyInfo {
        hot_standby_feedback: row.get(1),
        max_standby_streaming_delay_ms: row.get(2),
        replay_lag_secs: row.get(3),
        replay_lag_bytes: row.get(4),
        conflicts: row.get(5),
    }))
}

impl StandbyInfo {
    /// `max_standby_streaming_delay` as the server prints it: "1s", "30s", "-1 (wait forever)".
    pub fn delay_text(&self) -> String {
        match self.max_standby_streaming_delay_ms {
            ms if ms < 0 => "-1 (replay waits forever)".into(),
            ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
            ms => format!("{ms}ms"),
        }
    }

    /// The probe line's part: "standby: hot_standby_feedback off, max_standby_streaming_delay
    /// 1s, replay lag 0.4s (0 B received, not replayed)".
    pub fn describe(&self) -> String {
        let lag = match (self.replay_lag_secs, self.replay_lag_bytes) {
            (Some(s), Some(b)) => format!(
                "replay lag {s:.1}s ({} received, not replayed)",
                human_bytes(b.max(0) as u64)
            ),
            (None, Some(b)) => format!(
                "replay lag {} received, not replayed",
                human_bytes(b.max(0) as u64)
            ),
            (Some(s), None) => format!("replay lag {s:.1}s"),
            (None, None) => "replay lag unknown".into(),
        };
        format!(
            "standby (in recovery): hot_standby_feedback {}, max_standby_streaming_delay {}, {lag}",
            if self.hot_standby_feedback {
                "on"
            } else {
                "off"
            },
            self.delay_text()
        )
    }

    /// The manifest's `probe.standby` record.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "hot_standby_feedback": self.hot_standby_feedback,
            "max_standby_streaming_delay_ms": self.max_standby_streaming_delay_ms,
            "replay_lag_secs": self.replay_lag_secs,
            "replay_lag_bytes": self.replay_lag_bytes,
            "conflicts_at_start": self.conflicts,
        })
    }
}

/// The warning printed before a backup from a standby that is likely to outlive
/// `max_standby_streaming_delay` while nothing else protects its snapshot: feedback off and
/// replay not paused. The duration is estimated as `data_bytes` at [`CONSERVATIVE_RATE`].
pub fn duration_warning(
    info: &StandbyInfo,
    dbname: &str,
    data_bytes: u64,
    replay_paused: bool,
) -> Option<String> {
    let delay = info.max_standby_streaming_delay_ms;
    if replay_paused || info.hot_standby_feedback || delay < 0 {
        return None;
    }
    let estimate_ms = data_bytes.saturating_mul(1000) / CONSERVATIVE_RATE;
    if estimate_ms <= delay as u64 {
        return None;
    }
    Some(format!(
        "warning: {dbname} is on a standby with hot_standby_feedback off and max_standby_streaming_delay {}; this backup may take {:.0}s or more ({} at a conservative {}/s), long enough for WAL replay to cancel it (a recovery conflict). To avoid that: --pause-replay, hot_standby_feedback = on on the standby, or a larger max_standby_streaming_delay",
        info.delay_text(),
        (estimate_ms as f64 / 1000.0).ceil(),
        human_bytes(data_bytes),
        human_bytes(CONSERVATIVE_RATE)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(feedback: bool, delay_ms: i64) -> StandbyInfo {
        StandbyInfo {
            hot_standby_feedback: feedback,
            max_standby_streaming_delay_ms: delay_ms,
            replay_lag_secs: Some(0.5),
            replay_lag_bytes: Some(0),
            conflicts: 0,
        }
    }

    #[test]
    fn warns_only_when_the_estimate_outlives_an_unprotected_delay() {
        let big = 100 << 20; // 2 s at the conservative rate
        let w = duration_warning(&info(false, 1000), "db", big, false).expect("warned");
        for remedy in [
            "--pause-replay",
            "hot_standby_feedback = on",
            "larger max_standby_streaming_delay",
            "max_standby_streaming_delay 1s",
            "2s or more (100.0 MiB at a conservative 50.0 MiB/s)",
        ] {
            assert!(w.contains(remedy), "{remedy:?} missing in {w}");
        }
        assert_eq!(duration_warning(&info(false, 3000), "db", big, false), None);
        assert_eq!(duration_warning(&info(true, 1000), "db", big, false), None);
        assert_eq!(duration_warning(&info(false, -1), "db", big, false), None);
        assert_eq!(duration_warning(&info(false, 1000), "db", big, true), None);
    }

    #[test]
    fn describes_settings() {
        let d = info(false, 30_000).describe();
        assert!(d.contains("hot_standby_feedback off"), "{d}");
        assert!(d.contains("max_standby_streaming_delay 30s"), "{d}");
        assert!(
            d.contains("replay lag 0.5s (0 B received, not replayed)"),
            "{d}"
        );
        assert!(info(true, -1).describe().contains("waits forever"));
        assert!(info(true, 1500).describe().contains("1500ms"));
    }
}
