//! The library's one error type.
//!
//! Rules, in the spirit of rustic_core's error module:
//! - Every error says *what* failed and *where* (database, table, chunk file, path, child program).
//! - Server errors keep their message and SQLSTATE; the CLI prints the chain on one line.
//! - [`Error::is_retryable`] tells a retry loop whether a new attempt can help (connection lost,
//!   backend terminated, serialization failure) or not (permission denied, undefined table).
//! - [`Error::is_connection_loss`] tells whether the session itself ended; with it (and a look
//!   at the server) `snapshot_loss` decides whether a backup's snapshot died.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or an option combination is unusable (exit status 2).
    #[error("{0}")]
    Usage(String),

    /// Could not open a connection, or the server cancelled it during start-up.
    #[error("{}", connect_message(.target, .source))]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// Could not open a connection's socket, or not in time.
    #[error("cannot connect to {target}: error connecting to server: {source}")]
    ConnectIo {
        target: String,
        #[source]
        source: std::io::Error,
    },

    /// A statement failed; `what` says which step and on which object.
    #[error("{what}: {}", pg_message(.source))]
    Query {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A file system operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An object store refused or failed a request (after its retries): the operation, the
    /// object (`s3://bucket/key`) and the store's error code.
    #[error("{op} {location}: {detail}")]
    Storage {
        op: String,
        location: String,
        detail: String,
    },

    /// The file system is full (ENOSPC).
    #[error("disk full while writing {} ({written} bytes of it written); free space, then continue with --resume", .path.display())]
    DiskFull { path: PathBuf, written: u64 },

    /// The manifest cannot be read or does not describe a usable backup.
    #[error("manifest {}: {msg}", .path.display())]
    Manifest { path: PathBuf, msg: String },

    /// A chunk or schema file does not match what the manifest promises.
    #[error("{}: {msg}", .path.display())]
    Corrupt { path: PathBuf, msg: String },

    /// A child program (pg_dump, pg_restore, psql) failed.
    #[error("{program} failed ({status}){}", stderr_suffix(.stderr))]
    Child {
        program: String,
        status: String,
        stderr: String,
    },

    /// The target of a restore (or the output directory of a backup) is not in a state we may touch.
    #[error("{0}")]
    Refused(String),

    /// A step took longer than allowed.
    #[error("{what}: timeout after {after}")]
    Timeout { what: String, after: String },

    /// Several independent failures (verify reports every problem it finds).
    #[error("{} problem(s) found:\n{}", .0.len(), join_lines(.0))]
    Many(Vec<Error>),

    /// A restore drill found the backup does not restore into what its manifest says (or could
    /// not record its result): the drill's result lines.
    #[error("{0}")]
    DrillFailed(String),

    /// A restore failed (or was interrupted) after it had begun on its target: what failed
    /// where, then on the next line what the restore left there (the database it created
    /// dropped, or which phases were done and how to start over).
    #[error("restore into {target:?} failed in {phase}: {source}\n{left}")]
    RestoreFailed {
        target: String,
        phase: String,
        #[source]
        source: Box<Error>,
        left: String,
    },

    /// A pg_dump archive's header or table of contents cannot be read
    /// ([`crate::format::archive_toc`]).
    #[error("{0}")]
    Archive(#[from] ArchiveError),

    /// The job was interrupted (Ctrl-C / SIGTERM).
    #[error("interrupted")]
    Interrupted,

    /// A backup failed after its snapshot's transaction ended (server restart, connections
    /// lost, the `--snapshot` transaction closed): what it read is kept, the rest can only be
    /// read in a new snapshot. Decided in one place, `snapshot_loss::classify`.
    #[error("{source} (the snapshot's transaction is gone; continue with --resume --allow-inconsistent)")]
    SnapshotLost {
        #[source]
        source: Box<Error>,
    },

    /// WAL replay on a hot standby cancelled the backup's statement or ended its session
    /// because the backup's snapshot or locks held replay up for longer than
    /// `max_standby_streaming_delay`. Never retried: the same snapshot meets the same replay.
    /// Decided by [`crate::source::standby::conflict`].
    #[error("{source} (a recovery conflict: WAL replay on the standby cancelled the backup because its snapshot held replay up past max_standby_streaming_delay; retrying in the same snapshot cannot help: back up with --pause-replay, set hot_standby_feedback = on on the standby, or raise max_standby_streaming_delay)")]
    RecoveryConflict {
        #[source]
        source: Box<Error>,
    },
}

/// What is wrong with a pg_dump archive ([`Error::Archive`]); one line each. The caller adds
/// which file it was.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The bytes do not begin with pg_dump's magic string.
    #[error("not a pg_dump custom-format archive (it does not begin with PGDMP)")]
    NotArchive,
    /// A pg_dump archive, but a format other than custom (or a directory archive's toc.dat).
    #[error("pg_dump archive of format {0} not supported (only custom, pg_dump -Fc, and a directory archive's toc.dat)")]
    Format(u8),
    /// An archive version this reader does not know (older than pg_dump 12, newer than 18's).
    #[error("pg_dump archive version {0}.{1}.{2} not supported (this reader knows 1.14 to 1.16, written by pg_dump 12 to 18)")]
    Version(u8, u8, u8),
    /// The archive ends inside its header or table of contents.
    #[error("pg_dump archive truncated in {0}")]
    Truncated(String),
    /// A field holds a value pg_dump never writes.
    #[error("pg_dump archive damaged: {0}")]
    Damaged(String),
    /// An entry's SQL does not tokenize ([`crate::format::sql_requalify`]).
    #[error("cannot parse pg_dump's SQL: {0}")]
    Sql(String),
    /// Reading failed.
    #[error("reading pg_dump archive: {0}")]
    Io(#[source] std::io::Error),
}

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn query(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        Error::Query {
            what: what.into(),
            source,
        }
    }

    pub fn corrupt(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub fn manifest(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Manifest {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// True when a new attempt on a fresh connection may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Query { source, .. } => pg_retryable(source),
            Error::ConnectIo { .. } => true,
            _ => false,
        }
    }

    /// True when the session ended under the statement: the socket closed or broke, or the
    /// server ended it or refused it (connection exception 08xxx, admin or crash shutdown,
    /// cannot connect now). Its transaction, and any snapshot it held or exported, is gone.
    pub fn is_connection_loss(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Query { source, .. } => {
                pg_connection_loss(source)
            }
            Error::ConnectIo { .. } => true,
            Error::SnapshotLost { source } | Error::RecoveryConflict { source } => {
                source.is_connection_loss()
            }
            _ => false,
        }
    }

    /// The SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Connect { source, .. } | Error::Query { source, .. } => {
                source.as_db_error().map(|e| e.code().code())
            }
            Error::SnapshotLost { source }
            | Error::RestoreFailed { source, .. }
            | Error::RecoveryConflict { source } => source.sqlstate(),
            _ => None,
        }
    }
}

/// Connection-level failures and the SQLSTATEs a retry can cure. A recovery conflict is not
/// one of them, although it comes as serialization_failure: a retry imports the same snapshot,
/// which replay cancels again (or which died with the coordinator).
fn pg_retryable(e: &tokio_postgres::Error) -> bool {
    if pg_recovery_conflict(e) {
        return false;
    }
    pg_connection_loss(e)
        || e.as_db_error().is_some_and(|db| {
            // serialization_failure, deadlock_detected, lock_not_available
            matches!(db.code().code(), "40001" | "40P01" | "55P03")
        })
}

/// A hot standby's replay cancelled the statement or ended the session (postgres.c,
/// `ProcessRecoveryConflictInterrupt`/`ProcessInterrupts`): "canceling statement due to
/// conflict with recovery" or "terminating connection due to conflict with recovery", as
/// serialization_failure (40001), deadlock_detected (40P01, a buffer-pin deadlock with the
/// startup process) or database_dropped (57P04, the database was dropped on the primary). The
/// message text is English only with `lc_messages` English; 57P04 is raised for nothing else.
/// `standby::conflict` also asks `pg_stat_database_conflicts` when the text does not tell.
pub(crate) fn pg_recovery_conflict(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| match db.code().code() {
        "57P04" => true,
        "40001" | "40P01" | "57P01" => db.message().contains("conflict with recovery"),
        _ => false,
    })
}

/// The server ended or refused the session, or the socket closed or broke.
fn pg_connection_loss(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        // admin_shutdown, crash_shutdown, cannot_connect_now, connection exceptions (08xxx)
        Some(db) => {
            let code = db.code().code();
            matches!(code, "57P01" | "57P02" | "57P03") || code.starts_with("08")
        }
        // No server error: the socket closed, or an I/O error somewhere in the chain (a
        // conversion error also has a source, but is no loss of the connection).
        None => e.is_closed() || has_io_source(e),
    }
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if inner.is::<std::io::Error>() {
            return true;
        }
        src = inner.source();
    }
    false
}

/// "cannot connect to ...", unless the server accepted the connection and then cancelled it
/// during start-up (a recovery conflict on a standby, a cancel request, a deadlock): that is
/// no failure to connect, and saying so sends people looking at the network.
fn connect_message(target: &str, e: &tokio_postgres::Error) -> String {
    let cancelled = e.as_db_error().is_some_and(|db| {
        matches!(db.code().code(), "57014" | "40001" | "40P01" | "57P04")
            || db.message().contains("conflict with recovery")
    });
    if cancelled {
        format!(
            "connection to {target} was cancelled during start-up: {}",
            pg_message(e)
        )
    } else {
        format!("cannot connect to {target}: {}", pg_message(e))
    }
}

/// "ERROR: message (SQLSTATE 42P01)" for server errors, the driver's text otherwise.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; detail: {detail}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {}", t.replace('\n', " | "))
    }
}

fn join_lines(errors: &[Error]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}
