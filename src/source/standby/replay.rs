//! `--pause-replay`: WAL replay on the standby paused from before the backup's snapshot is
//! taken until its data is read, so that replay cannot cancel it.
//!
//! Replay is resumed on every way out. The backup resumes it itself when it ends (success,
//! failure, Ctrl-C, timeout: every path returns through the caller, which calls
//! [`PausedReplay::resume`]). For the ways out that skip that (`kill -9`, a crash, the process
//! ending before the job returns) a watchdog process holds the other end of a pipe: dbbackup
//! re-executed with a hidden subcommand ([`super::watchdog`]), started before the pause, in its
//! own process group (a terminal's Ctrl-C does not reach it). When the pipe reaches EOF
//! without the word that says "resumed", the parent is gone and the watchdog resumes replay.
//! Why a process and not, say, a server-side timeout: nothing in PostgreSQL resumes replay by
//! itself, and a process is the only thing that notices at once that dbbackup died, whatever
//! killed it. The watchdog is dbbackup itself rather than, say, psql fed the resume on a pipe:
//! it connects exactly as the backup does (TLS, pgpass, environment), says when it is ready,
//! and acts only on a closed pipe without the word, not on psql's rules for input at EOF.
//!
//! Replay paused by someone else is left as it was: no pause, no resume, no watchdog.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::progress::{human_bytes, Progress};
use crate::source::conn::{ConnParams, Session};

/// How long the pause may take to become effective (replay finishing the record it is on).
const PAUSE_WAIT: Duration = Duration::from_secs(60);
/// How long the watchdog may take to connect and say it is ready.
const WATCHDOG_READY: Duration = Duration::from_secs(60);
/// The parent's word to the watchdog: replay is resumed, go away.
pub(super) const DISARM: &str = "resumed";

/// Replay paused by this backup; [`PausedReplay::resume`] resumes it. Dropped without that,
/// the watchdog's pipe closes and the watchdog resumes it.
pub struct PausedReplay {
    session: Session,
    watchdog: Option<Child>,
    stdin: Option<ChildStdin>,
    paused_at: Instant,
    target: String,
    version: i32,
}

/// `pg_wal_replay_pause()` and its state: 'not paused', 'pause requested', 'paused'. 14+ tell
/// when the pause took effect; 13 and older only that it was asked for.
fn state_sql(version: i32) -> &'static str {
    if version >= 140000 {
        "SELECT pg_get_wal_replay_pause_state()"
    } else {
        "SELECT CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END"
    }
}

async fn state(session: &Session, version: i32) -> Result<String> {
    session
        .client
        .query_one(state_sql(version), &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| Error::query("reading the WAL replay pause state", e))
}

/// Pauses replay on the server of `dbname` if it is a standby whose replay runs, after
/// checking the privilege (a refusal names it and how to grant it). Returns `None` on a primary
/// (with a note: the flag is a no-op there) and when replay was already paused by someone else
/// (with a note: it stays as it was). Waits until the pause is effective.
pub async fn pause(
    conn: &ConnParams,
    dbname: &str,
    progress: &dyn Progress,
) -> Result<Option<PausedReplay>> {
    let session = conn.connect(dbname).await?;
    let row = session
        .client
        .query_one(
            "SELECT pg_is_in_recovery(), current_user::text,
                    has_function_privilege('pg_catalog.pg_wal_replay_pause()', 'EXECUTE'),
                    has_function_privilege('pg_catalog.pg_wal_replay_resume()', 'EXECUTE'),
                    current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(|e| Error::query("checking --pause-replay", e))?;
    let target = format!("{}:{}", conn.host, conn.port);
    let (in_recovery, user, may_pause, may_resume, version): (bool, String, bool, bool, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if !in_recovery {
        progress.note(&format!(
            "--pause-replay: {target} is not a standby (pg_is_in_recovery() is false): there is no replay to pause; going on without"
        ));
        let _ = session.close("the --pause-replay check").await;
        return Ok(None);
    }
    if !(may_pause && may_resume) {
        return Err(Error::Refused(format!(
            "--pause-replay: role {user} may not execute pg_wal_replay_pause()/pg_wal_replay_resume() on the standby {target}: connect as a superuser, or on the primary GRANT EXECUTE ON FUNCTION pg_wal_replay_pause(), pg_wal_replay_resume() TO {user}"
        )));
    }
    let before = state(&session, version).await?;
    if before != "not paused" {
        progress.note(&format!(
            "--pause-replay: replay on the standby {target} is already paused ({before}) by someone else: it stays paused, and this backup will not resume it"
        ));
        wait_paused(&session, version).await?;
        let _ = session.close("the --pause-replay check").await;
        return Ok(None);
    }
    let (watchdog, stdin) = start_watchdog(conn, dbname).await?;
    let mut paused = PausedReplay {
        session,
        watchdog: Some(watchdog),
        stdin: Some(stdin),
        paused_at: Instant::now(),
        target,
        version,
    };
    // From here on, any way out resumes replay: this function's errors drop `paused`, which
    // closes the watchdog's pipe.
    paused
        .session
        .client
        .batch_execute("SELECT pg_catalog.pg_wal_replay_pause()")
        .await
        .map_err(|e| Error::query("pausing WAL replay", e))?;
    wait_paused(&paused.session, version).await?;
    paused.paused_at = Instant::now();
    progress.note(&format!(
        "--pause-replay: WAL replay on the standby {} is paused until the backup's data is read (a watchdog, pid {}, resumes it if dbbackup dies)",
        paused.target,
        paused.watchdog.as_ref().map_or(0, Child::id)
    ));
    Ok(Some(paused))
}

/// Polls the pause state until it is 'paused' (the startup process stopped), at most
/// [`PAUSE_WAIT`].
async fn wait_paused(session: &Session, version: i32) -> Result<()> {
    let deadline = Instant::now() + PAUSE_WAIT;
    loop {
        let s = state(session, version).await?;
        if s == "paused" {
            return Ok(());
        }
        if s == "not paused" {
            return Err(Error::Refused(
                "--pause-replay: replay was resumed by someone else while the backup waited for its pause".into(),
            ));
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: "--pause-replay: waiting for WAL replay to pause".into(),
                after: format!("{}s", PAUSE_WAIT.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the watchdog (this executable with the hidden subcommand, the connection in its
/// environment) and waits until it is connected.
async fn start_watchdog(conn: &ConnParams, dbname: &str) -> Result<(Child, ChildStdin)> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("finding dbbackup's own executable", "/proc/self/exe", e))?;
    let mut cmd = Command::new(&exe);
    cmd.arg(super::watchdog::SUBCOMMAND)
        .envs(conn.child_env(dbname))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("starting the replay watchdog", &exe, e))?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let answer = tokio::time::timeout(WATCHDOG_READY, ready).await;
    match answer {
        Ok(Ok(Ok(line))) if line.trim() == super::watchdog::READY => Ok((child, stdin)),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Refused(format!(
                "--pause-replay: the watchdog that resumes replay if dbbackup dies did not start ({}); replay was not paused",
                match other {
                    Err(_) => format!("not ready after {}s", WATCHDOG_READY.as_secs()),
                    Ok(Ok(Ok(line))) if line.is_empty() => "it exited".into(),
                    Ok(Ok(Ok(line))) => format!("it said {:?}", line.trim()),
                    Ok(Ok(Err(e))) => e.to_string(),
                    Ok(Err(e)) => e.to_string(),
                }
            )))
        }
    }
}

impl PausedReplay {
    /// Resumes replay and says how long it was paused and how much WAL waits to be replayed.
    /// If resuming fails, the watchdog is left to do it (and says so on stderr).
    pub async fn resume(mut self, progress: &dyn Progress) {
        let secs = self.paused_at.elapsed().as_secs_f64();
        let lag = self
            .session
            .client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint",
                &[],
            )
            .await
            .ok()
            .and_then(|r| r.get::<_, Option<i64>>(0));
        let resumed = match self
            .session
            .client
            .batch_execute("SELECT pg_catalog.pg_wal_replay_resume()")
            .await
        {
            Ok(()) => Ok(()),
            // The statement's own snapshot is from before the resume: replay, which has
            // waited for longer than the delay by now, may cancel it as soon as it runs again.
            // The resume itself took effect then; the state says so.
            Err(e) if crate::error::pg_recovery_conflict(&e) => {
                match state(&self.session, self.version).await {
                    Ok(s) if s == "not paused" => Ok(()),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match resumed {
            Ok(()) => {
                if let Some(mut stdin) = self.stdin.take() {
                    let _ = writeln!(stdin, "{DISARM}");
                }
                progress.note(&format!(
                    "--pause-replay: WAL replay on the standby {} was paused for {secs:.1}s and runs again; it built a lag of {} of received WAL to replay",
                    self.target,
                    lag.map_or("an unknown amount".into(), |b| human_bytes(b.max(0) as u64))
                ));
            }
            Err(e) => {
                progress.note(&format!(
                    "--pause-replay: resuming WAL replay on {} failed ({}); the watchdog resumes it",
                    self.target,
                    crate::error::pg_message(&e)
                ));
                self.stdin = None;
            }
        }
        self.stdin = None;
        // The watchdog ends at once when disarmed, after its own attempt otherwise.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = tokio::task::spawn_blocking(move || watchdog.wait()).await;
        }
    }
}

impl Drop for PausedReplay {
    fn drop(&mut self) {
        // Closing the pipe without the word is what tells the watchdog to resume replay.
        self.stdin = None;
    }
}
