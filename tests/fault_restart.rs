//! A server restart in the middle of a backup: the run fails cleanly (exit 1, manifest
//! `failed`), and `--resume --allow-inconsistent` completes it. Its own test binary, because
//! restarting the server would break the other tests sharing a cluster.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{assert_same, cluster, dbbackup, run_ok};

fn manifest(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_server_restart_fails_the_backup_cleanly_and_resume_completes_it() {
    let c = cluster();
    let db = c.unique_db("restart");
    c.create_db(&db);
    c.load_fixture(&db, "big_table.sql");
    c.psql(
        &db,
        "CREATE TABLE gate(id int); INSERT INTO gate VALUES (1), (2);",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let args = [
        "backup",
        "single",
        "--format",
        "native",
        &db,
        "--parallel-tables",
        "2",
        "--chunk-size",
        "1MiB",
    ];
    let backup = dbbackup()
        .args(args)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Hold the backup at the gate (see tests/faults.rs), then restart the server under it.
    c.wait_for(
        &db,
        "SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE c.relname = 'gate' AND l.granted AND l.mode = 'AccessShareLock'",
        "t",
        60,
    );
    let mut gate = c.hold_session(
        &db,
        "BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %gate%' AND wait_event_type = 'Lock'",
    ) == "0"
    {
        assert!(Instant::now() < deadline, "no COPY waiting at the gate");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.restart_fast();
    let _ = gate.kill();
    let _ = gate.wait();
    let o = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("dbbackup: error:"), "{stderr}");
    assert!(
        stderr.contains("--resume --allow-inconsistent"),
        "says how to go on: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let m = manifest(&out);
    assert_eq!(m["status"], "failed");
    assert!(m["error"].as_str().is_some_and(|e| !e.is_empty()));

    run_ok(
        dbbackup()
            .args(args)
            .args(["--resume", "--allow-inconsistent", "--quiet", "--out"])
            .arg(&out),
    );
    let m = manifest(&out);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["consistent"], false);
    run_ok(dbbackup().arg("verify").arg(&out));
    let target = c.unique_db("restart_dst");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--create", "--quiet"]),
    );
    assert_same(&c.fingerprint(&db), &c.fingerprint(&target));
}
