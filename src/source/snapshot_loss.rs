//! Did a failed backup lose its snapshot?
//!
//! When the server restarts or the snapshot's transaction ends, every reader fails at once and
//! whichever notices first reports: a worker's COMMIT ("connection closed"), its COPY
//! (SQLSTATE 57P01), its reconnect (57P03, connection refused), its snapshot import ("invalid
//! snapshot identifier"), pg_dump (only a text on stderr), the coordinator's COMMIT. The step
//! that noticed says nothing about what happened, so the decision is not made per step but
//! here, once, after the backup's data phase failed:
//!
//! - a fresh session tries `SET TRANSACTION SNAPSHOT`, exactly what a worker or pg_dump would
//!   do next. This is asked while the coordinator's transaction is still open, so it sees the
//!   state the failure left behind. If the snapshot imports, it is not lost, even when the
//!   failure was a lost session (a worker's backend terminated on its own);
//! - only when that check cannot answer (no free connection slot, no answer in time, the run
//!   interrupted) does the loss of a session (see [`Error::is_connection_loss`]) count as the
//!   loss of the snapshot, whose transaction may have gone with it.
//!
//! A snapshot-lost failure gets the advice to go on with `--resume --allow-inconsistent`: a
//! new run can read the rest only in a new snapshot.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::format::manifest::quote_literal;
use crate::source::conn::ConnParams;

/// Bound for the import check; a server that does not answer within it is not judged.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns `err`, as [`Error::SnapshotLost`] if the backup's `snapshot` (in `dbname`) is gone.
/// An interruption is returned as it is: the user stopped the run, nothing was lost.
pub(crate) async fn classify(
    err: Error,
    conn: &ConnParams,
    dbname: &str,
    snapshot: &str,
    cancel: &CancellationToken,
) -> Error {
    if matches!(err, Error::Interrupted | Error::SnapshotLost { .. }) {
        return err;
    }
    // A lost session alone does not mean a lost snapshot: a worker whose backend was
    // terminated fails the same way while the coordinator's transaction, and the snapshot,
    // live on. The import check decides whenever it can answer.
    let importable = tokio::select! {
        r = tokio::time::timeout(CHECK_TIMEOUT, importable(conn, dbname, snapshot)) => {
            r.unwrap_or(Importable::Unknown)
        }
        _ = cancel.cancelled() => Importable::Unknown,
    };
    let lost = match importable {
        Importable::No => true,
        Importable::Yes => false,
        Importable::Unknown => err.is_connection_loss(),
    };
    if lost {
        Error::SnapshotLost {
            source: Box::new(err),
        }
    } else {
        err
    }
}

enum Importable {
    Yes,
    No,
    /// The check itself failed for another reason (no free connection slot, authentication).
    Unknown,
}

/// Imports `snapshot` in a fresh read-only transaction and rolls it back.
async fn importable(conn: &ConnParams, dbname: &str, snapshot: &str) -> Importable {
    let session = match conn.connect(dbname).await {
        Ok(s) => s,
        Err(e) if e.is_connection_loss() => return Importable::No,
        Err(_) => return Importable::Unknown,
    };
    let r = session
        .client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}; \
             ROLLBACK",
            quote_literal(snapshot)
        ))
        .await;
    let _ = session.close("the snapshot check").await;
    match r {
        Ok(()) => Importable::Yes,
        Err(e) => {
            let gone = matches!(
                e.code().map(|c| c.code()),
                // invalid_parameter_value: "invalid snapshot identifier" (the exporting
                // transaction ended, its snapshot file is gone); object_not_in_prerequisite_state:
                // "could not import the requested snapshot" (its process is not running).
                Some("22023") | Some("55000")
            );
            if gone || Error::query("", e).is_connection_loss() {
                Importable::No
            } else {
                Importable::Unknown
            }
        }
    }
}
