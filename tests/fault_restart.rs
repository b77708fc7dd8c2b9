//! A server restart in the middle of a backup: the run fails cleanly (exit 1, manifest
//! `failed`), and `--resume --allow-inconsistent` completes it. Its own test binary, because
//! restarting the server would break the other tests sharing a cluster.

mod support;

use std::process::Stdio;

use support::{assert_same, cluster, dbbackup, gate, run_ok};

fn manifest(dir: &std::path::Path) -> serde_json::Value {
    support::manifest_json(dir)
}

#[test]
fn a_server_restart_fails_the_backup_cleanly_and_resume_completes_it() {
    let c = cluster();
    let db = c.unique_db("restart");
    c.create_db(&db);
    c.load_fixture(&db, "big_table.sql");
    gate::create_gate_tables(&db);
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
    // Hold the backup at the gate (see tests/support/gate.rs), then restart the server under
    // it: a worker and pg_dump wait at the gate, the other worker is wherever the machine's
    // speed left it. The outcome must not depend on which session notices the restart first.
    let hold = gate::hold_backup(&db);
    let backup = dbbackup()
        .args(args)
        .args(["--lock-wait-timeout", "10m", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gate = gate::close_gate(&db, hold);
    gate::wait_for_blocked_copy(&db, &[]);
    gate::wait_for_blocked_pg_dump(&db);
    c.restart_fast();
    // The restart ended the gate's session; release() only reaps its psql.
    gate.release();
    let o = backup.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("dbbackup: error:"), "{stderr}");
    assert!(
        stderr.contains(
            "(the snapshot's transaction is gone; continue with --resume --allow-inconsistent)"
        ),
        "says how to go on: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let m = manifest(&out);
    assert_eq!(m["status"], "failed");
    assert!(
        m["error"]
            .as_str()
            .is_some_and(|e| e.contains("--resume --allow-inconsistent")),
        "{}",
        m["error"]
    );

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
