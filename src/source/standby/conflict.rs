//! Naming a recovery conflict.
//!
//! Replay cancels a backup in several ways at once: a worker's COPY gets "canceling statement
//! due to conflict with recovery" (SQLSTATE 40001), the idle coordinator holding the exported
//! snapshot is terminated ("terminating connection due to conflict with recovery", 40001 or
//! 57P04), pg_dump prints the server's message on stderr, and whatever step notices first may
//! only see a closed connection or a snapshot that can no longer be imported. So the decision
//! is made once, on the backup's final error, from two facts:
//!
//! - the error itself is a recovery conflict (its SQLSTATE and message, or pg_dump's stderr;
//!   see [`is_recovery_conflict`]);
//! - or the server is in recovery and this database's `pg_stat_database_conflicts` counters
//!   grew since the probe read them: replay cancelled one of our sessions, whatever the
//!   message (translated with another `lc_messages`) says.
//!
//! Such a failure becomes [`Error::RecoveryConflict`], which is never retried and tells the
//! three ways out; it replaces the snapshot-lost advice (`--resume --allow-inconsistent`
//! would meet the same replay).

use std::time::Duration;

use crate::error::Error;
use crate::source::conn::ConnParams;

/// Bound for the statistics check; a server that does not answer within it is not judged.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// True when `err` (or the error it wraps) is a recovery-conflict cancellation, by its
/// SQLSTATE and server message, or by pg_dump's stderr.
pub fn is_recovery_conflict(err: &Error) -> bool {
    match err {
        Error::Connect { source, .. } | Error::Query { source, .. } => {
            crate::error::pg_recovery_conflict(source)
        }
        Error::Child { stderr, .. } => stderr.contains("conflict with recovery"),
        Error::SnapshotLost { source } => is_recovery_conflict(source),
        Error::RecoveryConflict { .. } => true,
        Error::Many(all) => all.iter().any(is_recovery_conflict),
        _ => false,
    }
}

/// Wraps `err` as [`Error::RecoveryConflict`] when its own text says it is one (no server
/// round trip; for failures before the probe recorded a baseline).
pub fn name(err: Error) -> Error {
    match err {
        Error::RecoveryConflict { .. } | Error::Interrupted => err,
        Error::SnapshotLost { source } if is_recovery_conflict(&source) => {
            Error::RecoveryConflict { source }
        }
        e if is_recovery_conflict(&e) => Error::RecoveryConflict {
            source: Box::new(e),
        },
        e => e,
    }
}

/// [`name`], and when the text does not tell: with `baseline` (the conflict count the probe
/// read on a standby), asks the server whether replay cancelled sessions of `dbname` since.
pub async fn classify(err: Error, conn: &ConnParams, dbname: &str, baseline: Option<i64>) -> Error {
    let err = name(err);
    if matches!(err, Error::RecoveryConflict { .. } | Error::Interrupted) {
        return err;
    }
    let Some(baseline) = baseline else {
        return err;
    };
    let now = tokio::time::timeout(CHECK_TIMEOUT, conflicts_now(conn, dbname)).await;
    match now {
        Ok(Some(n)) if n > baseline => {
            let source = match err {
                Error::SnapshotLost { source } => source,
                e => Box::new(e),
            };
            Error::RecoveryConflict { source }
        }
        _ => err,
    }
}

/// This database's recovery-conflict count, if the server is (still) in recovery.
async fn conflicts_now(conn: &ConnParams, dbname: &str) -> Option<i64> {
    let session = conn.connect(dbname).await.ok()?;
    let row = session
        .client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    coalesce((SELECT confl_tablespace + confl_lock + confl_snapshot
                                     + confl_bufferpin + confl_deadlock
                                FROM pg_stat_database_conflicts
                               WHERE datname = current_database()), 0)",
            &[],
        )
        .await
        .ok();
    let _ = session.close("the recovery-conflict check").await;
    let row = row?;
    row.get::<_, bool>(0).then(|| row.get(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_dump_stderr_names_the_conflict() {
        let e = Error::Child {
            program: "pg_dump".into(),
            status: "exit status: 1".into(),
            stderr: "pg_dump: error: Dumping the contents of table \"t\" failed: PQgetResult() failed.\npg_dump: detail: Error message from server: ERROR:  canceling statement due to conflict with recovery".into(),
        };
        let named = name(e);
        assert!(matches!(named, Error::RecoveryConflict { .. }));
        let text = named.to_string();
        for remedy in [
            "--pause-replay",
            "hot_standby_feedback = on",
            "max_standby_streaming_delay",
            "recovery conflict",
        ] {
            assert!(text.contains(remedy), "{remedy:?} missing in {text}");
        }
        assert!(!named.is_retryable());
    }

    #[test]
    fn other_errors_stay_what_they_are() {
        let e = name(Error::Refused("x".into()));
        assert!(matches!(e, Error::Refused(_)));
        let lost = Error::SnapshotLost {
            source: Box::new(Error::Child {
                program: "pg_dump".into(),
                status: "1".into(),
                stderr: "terminating connection due to conflict with recovery".into(),
            }),
        };
        let e = name(lost);
        assert!(matches!(e, Error::RecoveryConflict { .. }), "{e:?}");
        assert!(!e.to_string().contains("--allow-inconsistent"), "{e}");
    }
}
