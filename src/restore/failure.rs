//! A failed restore says what it left.
//!
//! The phases of a restore note in a [`Ledger`] where they are: the database `--create` made
//! (by its OID), the phase running, the tables whose every chunk committed. When the restore
//! fails — an error or Ctrl-C alike — [`restore_database`] turns the ledger into the second
//! line of the error:
//!
//! - a database this run created is dropped (unless `keep_failed`): a half-built database that
//!   looks normal is worse than none. Only that database: it is dropped only while it still has
//!   the OID this run created it with, never one that existed before, never the maintenance
//!   database a `--create` restore reuses (that one is not created, so never recorded);
//! - otherwise the line names what was done (phases done, the one that failed and whether its
//!   transaction rolled back, N of M tables loaded, what did not run) and how to start over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::manifest::quote_ident;
use crate::progress::Progress;
use crate::source::conn::ConnParams;

use super::options::{RestoreOptions, RestoreSummary};

/// After Ctrl-C, how long the restore gets to stop its children and return (they get SIGTERM,
/// then SIGKILL after 5 s) before the database it created is dropped under it. The CLI waits
/// 15 s for the whole job.
const WIND_DOWN: Duration = Duration::from_secs(8);

/// A step of a restore, as the failure message names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `--clean` into an existing database: foreign keys touching the backup's tables dropped.
    CleanForeignKeys,
    PreData,
    Data,
    PostData,
    /// Native: sequence values and ANALYZE.
    Sequences,
    /// A plain backup's script through `psql --single-transaction`.
    Script,
    /// A custom archive through `pg_restore --single-transaction`.
    Archive,
    Analyze,
    /// `--create`: the database's comment, grants and settings, applied last.
    Settings,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::CleanForeignKeys => "foreign-key drop (--clean)",
            Phase::PreData => "pre-data (schema)",
            Phase::Data => "data",
            Phase::PostData => "post-data (indexes, constraints, triggers)",
            Phase::Sequences => "sequences and ANALYZE",
            Phase::Script => "the SQL script",
            Phase::Archive => "pg_restore",
            Phase::Analyze => "ANALYZE",
            Phase::Settings => "database settings",
        }
    }

    /// Runs in one transaction: when it fails, nothing of it is committed.
    fn atomic(self) -> bool {
        matches!(self, Phase::PreData | Phase::Script | Phase::Archive)
    }
}

/// The phases of a native restore, in order.
pub(crate) fn native_plan(clean_existing: bool, settings: bool) -> Vec<Phase> {
    let mut plan = Vec::new();
    if clean_existing {
        plan.push(Phase::CleanForeignKeys);
    }
    plan.extend([
        Phase::PreData,
        Phase::Data,
        Phase::PostData,
        Phase::Sequences,
    ]);
    if settings {
        plan.push(Phase::Settings);
    }
    plan
}

/// The phases of a plain or custom restore: `first` the program's run(s), then ANALYZE and
/// with `--create` the database's settings.
pub(crate) fn stream_plan(first: &[Phase], settings: bool) -> Vec<Phase> {
    let mut plan = first.to_vec();
    plan.push(Phase::Analyze);
    if settings {
        plan.push(Phase::Settings);
    }
    plan
}

/// Where a restore is; shared by its phases (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Ledger(Mutex<State>);

#[derive(Debug, Default, Clone)]
struct State {
    /// The database this run created, and its OID.
    created: Option<(String, u32)>,
    plan: Vec<Phase>,
    done: Vec<Phase>,
    running: Option<Phase>,
    /// Per table of a native backup: (chunks in all, chunks committed).
    tables: Vec<(usize, usize)>,
}

impl Ledger {
    pub(crate) fn plan(&self, phases: &[Phase]) {
        self.0.lock().unwrap().plan = phases.to_vec();
    }

    /// `phase` starts; the one running before it finished.
    pub(crate) fn begin(&self, phase: Phase) {
        let mut s = self.0.lock().unwrap();
        if let Some(p) = s.running.take() {
            s.done.push(p);
        }
        s.running = Some(phase);
    }

    /// This run created database `name`, which has `oid`.
    pub(crate) fn created(&self, name: &str, oid: u32) {
        self.0.lock().unwrap().created = Some((name.to_string(), oid));
    }

    /// The data phase's tally: per table, chunks in all and chunks committed.
    pub(crate) fn tables(&self, tally: Vec<(usize, usize)>) {
        self.0.lock().unwrap().tables = tally;
    }

    fn state(&self) -> State {
        self.0.lock().unwrap().clone()
    }
}

/// Restores a backup into `opts.target` (see [`super`]); when that fails, says what the restore
/// left and, with `--create`, drops the database it created (see the module documentation).
pub async fn restore_database(
    conn: &ConnParams,
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<RestoreSummary> {
    let ledger = Ledger::default();
    let result = {
        let run = super::restore_phases(conn, opts, progress, cancel.clone(), &ledger);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            _ = cancel.cancelled() => {
                match tokio::time::timeout(WIND_DOWN, &mut run).await {
                    Ok(r) => r,
                    // Stuck in a statement: its session ends with the database, dropped below.
                    Err(_) => Err(Error::Interrupted),
                }
            }
        }
    };
    match result {
        Ok(summary) => Ok(summary),
        Err(e) => Err(explain(conn, opts, &ledger.state(), e).await),
    }
}

/// The error, with what the restore left (and the database it created dropped).
async fn explain(conn: &ConnParams, opts: &RestoreOptions, s: &State, e: Error) -> Error {
    if s.running.is_none() && s.created.is_none() {
        // Refused or failed before touching the target: nothing to say about it.
        return e;
    }
    let phase = s
        .running
        .map_or("preparing the target", Phase::name)
        .to_string();
    let left = match &s.created {
        Some((name, oid)) if !opts.keep_failed => match drop_created(conn, name, *oid).await {
            Ok(true) => format!("the database {name:?} that this restore created was dropped"),
            Ok(false) => format!(
                "the database {name:?} that this restore created is no longer there as created; nothing was dropped"
            ),
            Err(why) => format!(
                "the database {name:?} that this restore created could not be dropped ({why}); it is left as the restore stopped: {}",
                what_was_done(s)
            ),
        },
        Some((name, _)) => format!(
            "the database {name:?} that this restore created is kept as the restore left it: {}",
            what_was_done(s)
        ),
        None if s.done.is_empty() && s.running.is_some_and(Phase::atomic) => format!(
            "nothing was committed to database {:?}: {} runs in one transaction",
            opts.target, phase
        ),
        None => format!(
            "database {:?} is left part-restored: {}; {}",
            opts.target,
            what_was_done(s),
            if s.plan.contains(&Phase::Script) {
                "a plain backup cannot clean it: restore again with --create --clean (drops and recreates it) to start over"
            } else {
                "restore again with --clean to start over"
            }
        ),
    };
    Error::RestoreFailed {
        target: opts.target.clone(),
        phase,
        source: Box::new(e),
        left,
    }
}

/// `database created; pre-data (schema) done; data loaded (7 tables); post-data (...) stopped
/// part-way; not run: sequences and ANALYZE, database settings`.
fn what_was_done(s: &State) -> String {
    let mut parts = Vec::new();
    if s.created.is_some() {
        parts.push("database created".to_string());
    }
    for p in &s.done {
        parts.push(match p {
            Phase::Data if !s.tables.is_empty() => {
                format!("data loaded ({})", tables(s.tables.len()))
            }
            p => format!("{} done", p.name()),
        });
    }
    if let Some(p) = s.running {
        parts.push(match p {
            Phase::Data if !s.tables.is_empty() => {
                let loaded = s.tables.iter().filter(|(all, done)| done >= all).count();
                let partly = s
                    .tables
                    .iter()
                    .filter(|(all, done)| *done > 0 && done < all)
                    .count();
                let mut t = format!(
                    "data stopped part-way ({loaded} of {} loaded",
                    tables(s.tables.len())
                );
                if partly > 0 {
                    t.push_str(&format!(", {partly} partly"));
                }
                t.push(')');
                t
            }
            p if p.atomic() => format!("{} failed and was rolled back", p.name()),
            p => format!("{} stopped part-way", p.name()),
        });
    }
    let not_run: Vec<&str> = s
        .plan
        .iter()
        .filter(|p| !s.done.contains(p) && s.running != Some(**p))
        .map(|p| p.name())
        .collect();
    if !not_run.is_empty() {
        parts.push(format!("not run: {}", not_run.join(", ")));
    }
    parts.join("; ")
}

fn tables(n: usize) -> String {
    if n == 1 {
        "1 table".into()
    } else {
        format!("{n} tables")
    }
}

/// Drops database `name` if it is still the one this run created (`oid`); `Ok(false)` when it
/// is not (gone, or dropped and made again by someone else meanwhile).
async fn drop_created(conn: &ConnParams, name: &str, oid: u32) -> Result<bool> {
    if name == conn.maintenance_db {
        return Ok(false);
    }
    let maint = conn.connect(&conn.maintenance_db).await?;
    let now: Option<u32> = maint
        .client
        .query_opt("SELECT oid FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| Error::query("looking up the database to drop", e))?
        .map(|r| r.get(0));
    if now != Some(oid) {
        return Ok(false);
    }
    // FORCE: the failed restore's own sessions (a pg_restore still dying) must not keep it.
    maint
        .client
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", quote_ident(name)))
        .await
        .map_err(|e| Error::query(format!("dropping database {name:?}"), e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_done_names_phases_tables_and_the_rest() {
        let s = State {
            created: None,
            plan: native_plan(false, false),
            done: vec![Phase::PreData],
            running: Some(Phase::Data),
            tables: vec![(1, 1), (3, 1), (2, 0), (0, 0)],
        };
        assert_eq!(
            what_was_done(&s),
            "pre-data (schema) done; data stopped part-way (2 of 4 tables loaded, 1 partly); \
             not run: post-data (indexes, constraints, triggers), sequences and ANALYZE"
        );
    }
}
