//! Holding a native backup still at a known point, without sleeps.
//!
//! The "gate" is a tiny table whose COPY blocks because another session queued an ACCESS
//! EXCLUSIVE lock on it behind the backup's own ACCESS SHARE lock (the coordinator locks every
//! table while probing, before any worker starts). The gate's unit is among the smallest, so it
//! runs last: every bigger unit is finished (and in the manifest) while the gate holds the
//! backup still.
//!
//! The exclusive lock must be queued after the coordinator locked the gate and before a worker
//! copies it. Watching for the coordinator's lock and then queueing ours would race the
//! workers, so a second table, `hold`, decides the order: the coordinator locks tables in name
//! order, `gate` before `hold`. [`hold_backup`] locks `hold` before the backup starts, so the
//! coordinator stops there, holding `gate`; [`close_gate`] queues the gate's lock and only then
//! lets the coordinator go on. (Native backups only: they have no separate probe transaction
//! that would wait for `hold` first.)

use std::process::Child;
use std::time::{Duration, Instant};

use super::{cluster, quote_literal};

/// Creates `gate` (three rows) and `hold` (empty) in `db`.
pub fn create_gate_tables(db: &str) {
    cluster().psql(
        db,
        "CREATE TABLE gate(id int); INSERT INTO gate VALUES (1), (2), (3); CREATE TABLE hold(id int);",
    );
}

/// A fresh database with the big fixture and the gate tables.
pub fn gated_db(prefix: &str) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.load_fixture(&db, "big_table.sql");
    create_gate_tables(&db);
    db
}

/// A session holding (or queued for) an ACCESS EXCLUSIVE lock on one table.
pub struct Lock {
    db: String,
    app: String,
    psql: Child,
}

impl Lock {
    /// Ends the locking session: a backend waiting for a lock or sleeping does not notice that
    /// its client died, so it is terminated on the server.
    pub fn release(mut self) {
        let _ = self.psql.kill();
        let _ = self.psql.wait();
        cluster().psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = {} AND application_name = {}",
                quote_literal(&self.db),
                quote_literal(&self.app)
            ),
        );
    }
}

impl Lock {
    /// Runs `sql` (which opens a transaction and takes its locks) in a session that then stays
    /// open; returns at once.
    pub fn hold(db: &str, sql: &str) -> Lock {
        let app = format!("lock_{}", cluster().unique_db("g"));
        let psql = cluster().hold_session(
            db,
            &format!("SET application_name = '{app}'; {sql} SELECT pg_sleep(600);"),
        );
        Lock {
            db: db.to_string(),
            app,
            psql,
        }
    }
}

/// Locks `table` exclusively from another session (queued behind any holder); returns at once.
pub fn lock_exclusively(db: &str, table: &str) -> Lock {
    Lock::hold(
        db,
        &format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;"),
    )
}

/// `SELECT` of whether some lock on `table` of the current database matches `cond`.
fn lock_query(table: &str, cond: &str) -> String {
    format!(
        "SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND c.relname = {} AND {cond}",
        quote_literal(table)
    )
}

/// Locks `hold` exclusively and waits until the lock is granted. Call before starting the
/// backup; hand the result to [`close_gate`].
pub fn hold_backup(db: &str) -> Lock {
    let hold = lock_exclusively(db, "hold");
    cluster().wait_for(
        db,
        &lock_query("hold", "l.granted AND l.mode = 'AccessExclusiveLock'"),
        "t",
        120,
    );
    hold
}

/// Waits until the backup's coordinator waits for its lock on `hold`: its snapshot is taken (by
/// its first query), it holds its locks on the tables named before `hold`, and no worker or
/// pg_dump has started.
pub fn wait_for_held_coordinator(db: &str) {
    cluster().wait_for(
        db,
        &lock_query("hold", "NOT l.granted AND l.mode = 'AccessShareLock'"),
        "t",
        120,
    );
}

/// Once the backup's coordinator waits for `hold` (so it holds its lock on `gate`), queues an
/// exclusive lock on `gate` and then releases `hold`. Returns the gate's lock.
pub fn close_gate(db: &str, hold: Lock) -> Lock {
    let c = cluster();
    wait_for_held_coordinator(db);
    let gate = lock_exclusively(db, "gate");
    c.wait_for(
        db,
        &lock_query("gate", "NOT l.granted AND l.mode = 'AccessExclusiveLock'"),
        "t",
        120,
    );
    hold.release();
    gate
}

/// Backend pids of the backup's statements on the gate (`COPY` of a worker, `LOCK TABLE` of
/// pg_dump) waiting for its lock.
fn blocked_at_gate(db: &str, statement: &str) -> Vec<String> {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = {} AND query LIKE '{statement} %gate%'
         AND wait_event_type = 'Lock'",
        quote_literal(db)
    );
    cluster()
        .psql("postgres", &sql)
        .lines()
        .map(str::to_string)
        .filter(|p| !p.is_empty())
        .collect()
}

fn wait_until_blocked(db: &str, statement: &str, except: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(pid) = blocked_at_gate(db, statement)
            .into_iter()
            .find(|p| !except.contains(&p.as_str()))
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no {statement} blocked on the gate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a worker's COPY of the gate, other than those in `except`, is blocked; returns
/// its backend pid.
pub fn wait_for_blocked_copy(db: &str, except: &[&str]) -> String {
    wait_until_blocked(db, "COPY", except)
}

/// Waits until the schema's first pg_dump (which has imported the snapshot, then locks every
/// table) is blocked at the gate; returns its backend pid.
pub fn wait_for_blocked_pg_dump(db: &str) -> String {
    wait_until_blocked(db, "LOCK TABLE", &[])
}
