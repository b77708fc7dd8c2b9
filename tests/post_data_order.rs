//! Post-data never deadlocks: a native restore with `--jobs 4` of schemas whose foreign keys
//! lock the same tables from several statements (issue 17, failure 1). pg_restore's parallel
//! scheduler keeps two statements that lock the same table apart only when it sees the TABLE
//! entries they depend on; the native backup's schema archive must carry them.
//!
//! Shapes: (a) the partitioned foreign keys of PostgreSQL's regression test `foreign_key.sql`
//! (a partitioned table whose foreign key recurses into partitions and sub-partitions that have
//! foreign keys of their own to the same referenced table); (b) two tables that reference each
//! other, with other tables, keys and indexes around them. Each is restored 20 times; (b) once
//! more while other sessions hold locks on both tables exactly when the foreign keys start.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::gate::Lock;
use support::{assert_same, cluster, dbbackup, quote_literal, run_ok};

const REPETITIONS: usize = 20;

/// Shape (a), after `foreign_key.sql` of PostgreSQL 15 (fk_partitioned_fk and its partitions).
const PARTITIONED_FKS: &str = "
CREATE TABLE fk_notpartitioned_pk (a int, b int, PRIMARY KEY (a, b));
CREATE TABLE fk_partitioned_fk (a int DEFAULT 2501, b int DEFAULT 142857) PARTITION BY LIST (a);
CREATE TABLE fk_partitioned_fk_1 PARTITION OF fk_partitioned_fk FOR VALUES IN (NULL, 500, 501, 502);
ALTER TABLE fk_partitioned_fk ADD FOREIGN KEY (a, b) REFERENCES fk_notpartitioned_pk
  ON DELETE CASCADE ON UPDATE CASCADE;
CREATE TABLE fk_partitioned_fk_2 (b int, c text, a int,
  FOREIGN KEY (a, b) REFERENCES fk_notpartitioned_pk ON UPDATE CASCADE ON DELETE CASCADE);
ALTER TABLE fk_partitioned_fk_2 DROP COLUMN c;
ALTER TABLE fk_partitioned_fk ATTACH PARTITION fk_partitioned_fk_2 FOR VALUES IN (1500, 1502);
CREATE TABLE fk_partitioned_fk_3 (a int, b int);
ALTER TABLE fk_partitioned_fk ATTACH PARTITION fk_partitioned_fk_3 FOR VALUES IN (2500, 2501, 2502, 2503);
CREATE TABLE fk_partitioned_fk_4 (a int, b int, FOREIGN KEY (a, b) REFERENCES fk_notpartitioned_pk(a, b)
  ON UPDATE CASCADE ON DELETE CASCADE) PARTITION BY RANGE (b, a);
CREATE TABLE fk_partitioned_fk_4_1 PARTITION OF fk_partitioned_fk_4 FOR VALUES FROM (1,1) TO (100,100);
CREATE TABLE fk_partitioned_fk_4_2 (a int, b int, FOREIGN KEY (a, b) REFERENCES fk_notpartitioned_pk(a, b)
  ON UPDATE SET NULL);
ALTER TABLE fk_partitioned_fk_4 ATTACH PARTITION fk_partitioned_fk_4_2 FOR VALUES FROM (100,100) TO (1000,1000);
ALTER TABLE fk_partitioned_fk ATTACH PARTITION fk_partitioned_fk_4 FOR VALUES IN (3500, 3502);
ALTER TABLE fk_partitioned_fk DETACH PARTITION fk_partitioned_fk_4;
ALTER TABLE fk_partitioned_fk ATTACH PARTITION fk_partitioned_fk_4 FOR VALUES IN (3500, 3502);
CREATE TABLE fk_partitioned_fk_5 (a int, b int,
  FOREIGN KEY (a, b) REFERENCES fk_notpartitioned_pk(a, b) ON UPDATE CASCADE ON DELETE CASCADE DEFERRABLE,
  FOREIGN KEY (a, b) REFERENCES fk_notpartitioned_pk(a, b) MATCH FULL ON UPDATE CASCADE ON DELETE CASCADE)
  PARTITION BY RANGE (a);
CREATE TABLE fk_partitioned_fk_5_1 (a int, b int, FOREIGN KEY (a, b) REFERENCES fk_notpartitioned_pk);
ALTER TABLE fk_partitioned_fk ATTACH PARTITION fk_partitioned_fk_5 FOR VALUES IN (4500);
ALTER TABLE fk_partitioned_fk_5 ATTACH PARTITION fk_partitioned_fk_5_1 FOR VALUES FROM (0) TO (10);
INSERT INTO fk_notpartitioned_pk SELECT a, b FROM
  (VALUES (500), (501), (502), (1500), (1502), (2500), (2501), (2502), (2503), (3500), (3502), (4500)) v(a),
  generate_series(1, 200) b;
INSERT INTO fk_partitioned_fk SELECT a, b FROM fk_notpartitioned_pk WHERE a <> 3500 AND a <> 3502 AND a <> 4500;
INSERT INTO fk_partitioned_fk SELECT 3500, b FROM generate_series(1, 99) b;
INSERT INTO fk_partitioned_fk SELECT 3502, b FROM generate_series(100, 200) b;
";

/// Shape (b): `departments.head_id -> agents` and `agents.department_id -> departments`, with
/// rows, and other tables with keys, foreign keys and indexes around them. `zz_gate`'s check
/// waits for advisory lock 4242 while a test holds it (the lock test uses it to stop the data
/// load at a known point).
const MUTUAL_FKS: &str = "
CREATE TABLE regions (id int PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE departments (id int PRIMARY KEY, name text NOT NULL, head_id int, region_id int);
CREATE TABLE agents (id int PRIMARY KEY, name text NOT NULL, department_id int);
ALTER TABLE departments ADD CONSTRAINT departments_head FOREIGN KEY (head_id) REFERENCES agents;
ALTER TABLE agents ADD CONSTRAINT agents_department FOREIGN KEY (department_id) REFERENCES departments;
CREATE TABLE projects (id int PRIMARY KEY, region_id int REFERENCES regions, title text);
CREATE INDEX projects_title ON projects (title);
CREATE INDEX projects_region ON projects (region_id);
CREATE TABLE notes (id int PRIMARY KEY, project_id int REFERENCES projects, body text);
CREATE INDEX notes_body ON notes (body);
CREATE FUNCTION gate_open() RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN true; END $$;
CREATE TABLE zz_gate (id int PRIMARY KEY, CHECK (gate_open()));
INSERT INTO regions SELECT g, 'region ' || g FROM generate_series(1, 50) g;
INSERT INTO departments SELECT g, 'department ' || g, NULL, 1 + g % 50 FROM generate_series(1, 500) g;
INSERT INTO agents SELECT g, 'agent ' || g, 1 + g % 500 FROM generate_series(1, 5000) g;
UPDATE departments SET head_id = id * 7;
INSERT INTO projects SELECT g, 1 + g % 50, 'project ' || g FROM generate_series(1, 5000) g;
INSERT INTO notes SELECT g, 1 + g % 5000, md5(g::text) FROM generate_series(1, 5000) g;
INSERT INTO zz_gate SELECT generate_series(1, 10);
";

/// A source database with `sql`, backed up natively into `out`.
fn backed_up(prefix: &str, sql: &str, out: &Path) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.psql(&db, sql);
    run_ok(support::backup_native(&db, out).args(["--parallel-tables", "2", "--quiet"]));
    db
}

fn restore_cmd(out: &Path, target: &str, create: bool) -> std::process::Command {
    let mut cmd = dbbackup();
    cmd.arg("restore")
        .arg(out)
        .args(["--dbname", target, "--jobs", "4", "--quiet"]);
    if create {
        cmd.arg("--create");
    }
    cmd
}

fn foreign_keys(db: &str) -> String {
    cluster().psql(
        db,
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE n.nspname = 'public' AND c.contype = 'f'",
    )
}

/// Restores `out` 20 times with `--jobs 4`; every restore must succeed at once (a deadlock is
/// a bug, never retried) with every foreign key. The first copy is compared with the source.
fn restore_repeatedly(src: &str, out: &Path, prefix: &str) {
    let c = cluster();
    let want = foreign_keys(src);
    let mut failures = Vec::new();
    for i in 0..REPETITIONS {
        let target = c.unique_db(prefix);
        let o = restore_cmd(out, &target, true)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if !o.status.success() {
            failures.push(format!(
                "restore {}: {}",
                i + 1,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        } else {
            assert_eq!(
                foreign_keys(&target),
                want,
                "foreign keys of restore {}",
                i + 1
            );
            if i == 0 {
                assert_same(&c.fingerprint(src), &c.fingerprint(&target));
            }
        }
        c.drop_db(&target);
    }
    assert!(
        failures.is_empty(),
        "{} of {REPETITIONS} restores failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn partitioned_foreign_keys_restore_twenty_times_with_four_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let src = backed_up("pfk_src", PARTITIONED_FKS, &out);
    restore_repeatedly(&src, &out, "pfk_dst");
}

#[test]
fn mutually_referencing_tables_restore_twenty_times_with_four_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let src = backed_up("mfk_src", MUTUAL_FKS, &out);
    restore_repeatedly(&src, &out, "mfk_dst");
}

/// Whether `cond` holds for some lock on `table` in `db` (pg_locks joined with pg_class `c`
/// and pg_stat_activity `a`).
fn lock_seen(db: &str, table: &str, cond: &str) -> String {
    format!(
        "SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
           JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.database = (SELECT oid FROM pg_database WHERE datname = {})
           AND c.relname = {} AND {cond}",
        quote_literal(db),
        quote_literal(table)
    )
}

/// Another session holds locks on both tables of the cycle at the moment their foreign keys
/// start: each foreign key then waits for a lock, and both locks are released at once. With
/// both foreign keys running, each would get one table and wait for the other: a deadlock.
///
/// The moment is made, not waited for: the data load stops at `zz_gate` (advisory lock 4242),
/// the primary keys of both tables are held back by an ACCESS SHARE lock, the locks under test
/// (ROW EXCLUSIVE, one session per table) queue behind the primary keys, and so are granted
/// when the primary keys commit, before pg_restore can start a foreign key on them.
#[test]
fn mutually_referencing_tables_restore_while_another_session_holds_their_locks() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let src = backed_up("mfl_src", MUTUAL_FKS, &out);
    let target = c.unique_db("mfl_dst");
    c.create_db(&target);
    // pg_class is per database: the lock queries run in the target.
    let wait = |sql: &str| c.wait_for(&target, sql, "t", 300);

    let gate = Lock::hold(&target, "SELECT pg_advisory_lock(4242);");
    wait(&format!(
        "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = {})",
        quote_literal(&target)
    ));
    let restore = restore_cmd(&out, &target, false)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The data load waits at the gate once both tables are loaded.
    wait(&format!(
        "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = {})",
        quote_literal(&target)
    ));
    c.wait_for(
        &target,
        "SELECT (SELECT count(*) FROM departments) || ',' || (SELECT count(*) FROM agents)",
        "500,5000",
        300,
    );
    let readers = Lock::hold(
        &target,
        "BEGIN; LOCK TABLE departments, agents IN ACCESS SHARE MODE;",
    );
    for table in ["departments", "agents"] {
        wait(&lock_seen(
            &target,
            table,
            "l.granted AND l.mode = 'AccessShareLock' AND a.application_name LIKE 'lock_%'",
        ));
    }
    gate.release();
    // Post-data: both primary keys wait for the readers.
    for table in ["departments", "agents"] {
        wait(&lock_seen(
            &target,
            table,
            "NOT l.granted AND l.mode = 'AccessExclusiveLock' AND a.query LIKE '%PRIMARY KEY%'",
        ));
    }
    let holders: Vec<Lock> = ["departments", "agents"]
        .iter()
        .map(|table| {
            let lock = Lock::hold(
                &target,
                &format!("BEGIN; LOCK TABLE {table} IN ROW EXCLUSIVE MODE;"),
            );
            wait(&lock_seen(
                &target,
                table,
                "NOT l.granted AND l.mode = 'RowExclusiveLock' AND a.application_name LIKE 'lock_%'",
            ));
            lock
        })
        .collect();
    readers.release();
    // The holders got their locks as the primary keys committed; a foreign key waits for them.
    for table in ["departments", "agents"] {
        wait(&lock_seen(
            &target,
            table,
            "l.granted AND l.mode = 'RowExclusiveLock' AND a.application_name LIKE 'lock_%'",
        ));
    }
    wait(&format!(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = {}
           AND wait_event_type = 'Lock' AND query LIKE '%FOREIGN KEY%'",
        quote_literal(&target)
    ));
    for lock in holders {
        lock.release();
    }
    let o = restore.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the restore failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same(&c.fingerprint(&src), &c.fingerprint(&target));
}
