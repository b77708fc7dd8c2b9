//! The replay watchdog: `dbbackup __resume-replay-watchdog`, started by
//! [`super::replay::pause`] before it pauses replay, never by people.
//!
//! It connects (the connection settings come in its environment, as pg_dump's do), prints
//! [`READY`], and reads its stdin, a pipe from the backup. The backup writes
//! [`super::replay::DISARM`] once it resumed replay itself; if the pipe ends without it, the
//! backup died (kill -9, a crash) or could not resume, and the watchdog resumes replay,
//! reconnecting if its session was lost, for at most [`GIVE_UP`].

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::source::conn::{ConnParams, ConnectOptions};

/// The hidden subcommand that runs [`run`].
pub const SUBCOMMAND: &str = "__resume-replay-watchdog";
/// The watchdog's first line on stdout: connected, watching.
pub const READY: &str = "ready";
/// How long the watchdog keeps trying to resume replay.
const GIVE_UP: Duration = Duration::from_secs(120);

/// The watchdog's whole life; see the module documentation.
pub async fn run() -> Result<()> {
    let conn = ConnParams::resolve(&ConnectOptions::default())?;
    let db = conn.maintenance_db.clone();
    let mut session = Some(conn.connect(&db).await?);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}")
            .and_then(|_| out.flush())
            .map_err(|e| Error::io("telling the backup the watchdog is ready on", "stdout", e))?;
    }
    let said = tokio::task::spawn_blocking(|| {
        let mut text = String::new();
        // An error reading is an end too: the parent is gone either way.
        let _ = std::io::stdin().lock().read_to_string(&mut text);
        text
    })
    .await
    .unwrap_or_default();
    if said.lines().any(|l| l.trim() == super::replay::DISARM) {
        return Ok(());
    }
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let s = match session.take() {
            Some(s) => s,
            None => match conn.connect(&db).await {
                Ok(s) => s,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        // A recovery conflict may cancel the statement once replay runs again (its snapshot
        // is older): then the next round finds replay running and resumes nothing new.
        let r = s
            .client
            .batch_execute(
                "SELECT pg_catalog.pg_wal_replay_resume() WHERE pg_catalog.pg_is_in_recovery()",
            )
            .await;
        match r {
            Ok(()) => {
                eprintln!(
                    "dbbackup: the backup ended without resuming WAL replay on {}:{}; its watchdog resumed it",
                    conn.host, conn.port
                );
                return Ok(());
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(Error::query("resuming WAL replay (watchdog)", e)),
        }
    }
}
