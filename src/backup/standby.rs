//! `--pause-replay` around one backup, and the standby warning, for every strategy: the pause
//! is taken before the first snapshot (the strategy probe's or the coordinator's) and resumed
//! after the backup's data is read and its snapshot released ([`crate::source::standby`]).

use crate::error::Result;
use crate::progress::Progress;
use crate::source::conn::ConnParams;
use crate::source::probe::Probe;
use crate::source::standby::replay::{self, PausedReplay};

use super::options::{BackupOptions, ReplayPause};

/// With [`ReplayPause::Asked`]: pauses replay on the server of `dbname` (refusing up front,
/// before anything is written, without the privilege) and returns the options the backup then
/// runs with ([`ReplayPause::Held`]). Resume with [`PausedReplay::resume`]; dropping the pause
/// leaves it to the watchdog.
pub async fn pause_if_asked(
    conn: &ConnParams,
    dbname: &str,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<(Option<PausedReplay>, BackupOptions)> {
    if opts.pause_replay != ReplayPause::Asked {
        return Ok((None, opts.clone()));
    }
    let paused = replay::pause(conn, dbname, progress).await?;
    let held = BackupOptions {
        pause_replay: ReplayPause::Held,
        ..opts.clone()
    };
    Ok((paused, held))
}

/// The probe's warning when the server is a standby and the backup will likely outlive
/// `max_standby_streaming_delay` unprotected.
pub(super) fn warn_if_at_risk(
    found: &Probe,
    dbname: &str,
    opts: &BackupOptions,
    progress: &dyn Progress,
) {
    if let Some(info) = &found.standby {
        let paused = opts.pause_replay != ReplayPause::Off;
        if let Some(w) =
            crate::source::standby::duration_warning(info, dbname, found.data_bytes(), paused)
        {
            progress.note(&w);
        }
    }
}

/// The conflict count the probe read on a standby, from a manifest's `probe.standby` record
/// (the baseline of [`crate::source::standby::conflict::classify`]).
pub(super) fn conflict_baseline(probe: &serde_json::Value) -> Option<i64> {
    probe.get("standby")?.get("conflicts_at_start")?.as_i64()
}
