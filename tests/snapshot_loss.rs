//! A native backup whose snapshot dies under it fails with the advice to continue with
//! `--resume --allow-inconsistent`, whichever step notices first, and that resume completes it.
//! Here the coordinator's session is terminated, and the transaction of a `--snapshot` ends;
//! a server restart is in tests/fault_restart.rs. Each fault is placed with the gate
//! (tests/support/gate.rs), never with a sleep.

mod support;

use std::path::Path;
use std::process::{Child, Output, Stdio};

use support::gate::{self, Lock};
use support::{cluster, dbbackup, run_ok};

const ADVICE: &str =
    "(the snapshot's transaction is gone; continue with --resume --allow-inconsistent)";

fn manifest(dir: &std::path::Path) -> serde_json::Value {
    support::manifest_json(dir)
}

fn gated_db(prefix: &str) -> String {
    gate::gated_db(prefix)
}

fn backup_args<'a>(db: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "backup",
        "single",
        "--format",
        "native",
        db,
        "--parallel-tables",
        "2",
        "--chunk-size",
        "1MiB",
    ];
    args.extend_from_slice(extra);
    args
}

/// Starts the backup with the coordinator held at `hold`; returns it with the coordinator's pid.
fn start(db: &str, out: &Path, extra: &[&str]) -> (Child, String, Lock) {
    let hold = gate::hold_backup(db);
    let backup = dbbackup()
        .args(backup_args(db, extra))
        .args(["--lock-wait-timeout", "10m", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting_for_hold = "SELECT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE c.relname = 'hold' AND NOT l.granted
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    cluster().wait_for(
        db,
        &format!("SELECT count(*) FROM ({waiting_for_hold}) w"),
        "1",
        120,
    );
    let coordinator = cluster().psql(db, waiting_for_hold);
    let gate = gate::close_gate(db, hold);
    (backup, coordinator, gate)
}

/// Checks the failed run, then resumes it to a complete, verified backup.
fn assert_fails_with_advice_and_resumes(db: &str, out: &Path, o: Output, what: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(what), "{what:?} not in: {stderr}");
    assert!(stderr.contains(ADVICE), "says how to go on: {stderr}");
    let m = manifest(out);
    assert_eq!(m["status"], "failed");
    assert!(m["error"].as_str().is_some_and(|e| e.contains(ADVICE)));
    run_ok(
        dbbackup()
            .args(backup_args(db, &[]))
            .args(["--resume", "--allow-inconsistent", "--quiet", "--out"])
            .arg(out),
    );
    let m = manifest(out);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["consistent"], false);
    run_ok(dbbackup().arg("verify").arg(out));
}

#[test]
fn a_terminated_coordinator_fails_the_backup_with_the_advice_to_resume() {
    let c = cluster();
    let db = gated_db("lost_coordinator");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let (backup, coordinator, gate) = start(&db, &out, &[]);
    gate::wait_for_blocked_copy(&db, &[]);
    gate::wait_for_blocked_pg_dump(&db);
    // The readers at the gate (a worker and the schema's one pg_dump) hold the snapshot and go
    // on; the coordinator's own connection is found gone when it ends the snapshot's
    // transaction.
    c.psql(
        "postgres",
        &format!("SELECT pg_terminate_backend({coordinator}, 60000)"),
    );
    gate.release();
    let o = backup.wait_with_output().unwrap();
    assert_fails_with_advice_and_resumes(&db, &out, o, "ending the snapshot transaction");
}

#[test]
fn an_ended_snapshot_transaction_fails_the_backup_with_the_advice_to_resume() {
    let c = cluster();
    let db = gated_db("lost_snapshot");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The user's transaction, exporting the snapshot the backup reads in.
    let (user, conn) = rt
        .block_on(tokio_postgres::connect(
            &c.conninfo(&db),
            tokio_postgres::NoTls,
        ))
        .unwrap();
    rt.spawn(conn);
    let snapshot: String = rt
        .block_on(async {
            user.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await?;
            user.query_one("SELECT pg_export_snapshot()", &[]).await
        })
        .unwrap()
        .get(0);
    let (backup, _, gate) = start(&db, &out, &["--snapshot", &snapshot]);
    let pid = gate::wait_for_blocked_copy(&db, &[]);
    // pg_dump has imported the snapshot and waits at the gate until the backup ends.
    gate::wait_for_blocked_pg_dump(&db);
    // The transaction ends; the worker at the gate loses its session and, retrying, can no
    // longer import the snapshot.
    rt.block_on(user.batch_execute("COMMIT")).unwrap();
    c.psql(
        "postgres",
        &format!("SELECT pg_terminate_backend({pid}, 60000)"),
    );
    let o = backup.wait_with_output().unwrap();
    gate.release();
    assert_fails_with_advice_and_resumes(&db, &out, o, "importing snapshot");
}

#[test]
fn a_terminated_worker_is_not_reported_as_a_lost_snapshot() {
    // With --retries 0 the worker's lost session fails the backup, but the coordinator's
    // transaction, and the snapshot, live on: the error is the lost session, not the advice
    // to go on in another snapshot.
    let c = cluster();
    let db = gated_db("lost_worker");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let (backup, _, gate) = start(&db, &out, &["--retries", "0"]);
    let worker = gate::wait_for_blocked_copy(&db, &[]);
    c.psql(
        "postgres",
        &format!("SELECT pg_terminate_backend({worker}, 60000)"),
    );
    gate.release();
    let o = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains(ADVICE), "the snapshot lives on: {stderr}");
    assert!(
        stderr.contains("terminat") || stderr.contains("connection"),
        "names the lost session: {stderr}"
    );
    assert_eq!(manifest(&out)["status"], "failed");
}
