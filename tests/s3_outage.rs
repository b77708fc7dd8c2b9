//! The S3 store going away in the middle of a backup: object_store's retries ride it out, or
//! the run fails cleanly and `--resume` finishes it. Its own test binary, because stopping the
//! store would break the other S3 tests sharing it.

mod support;

use std::process::{Command, Output, Stdio};

use support::s3::{s3, SECRET_KEY};
use support::{assert_same, cluster, gate};

fn dbb() -> Command {
    support::s3::dbbackup_s3()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(cmd: &mut Command) -> Output {
    support::s3::run_ok_secretless(cmd)
}

fn manifest(location: &str) -> serde_json::Value {
    support::s3::manifest_of(location)
}

#[test]
fn the_store_going_away_mid_backup_is_retried_or_fails_cleanly_and_resume_finishes() {
    let c = cluster();
    let db = c.unique_db("s3_outage");
    c.create_db(&db);
    c.load_fixture(&db, "big_table.sql");
    gate::create_gate_tables(&db);
    let location = s3().location("outage");
    let hold = gate::hold_backup(&db);
    let child = dbb()
        .args([
            "backup",
            "single",
            &db,
            "--format",
            "native",
            "--parallel-tables",
            "2",
        ])
        .args(["--chunk-size", "1MiB", "--out", &location])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gate_lock = gate::close_gate(&db, hold);
    gate::wait_for_blocked_copy(&db, &[]);
    // Every other unit is done; the store goes away, then the gate opens.
    s3().stop();
    gate_lock.release();
    s3().start_again();
    let o = child.wait_with_output().unwrap();
    let stderr = text(&o.stderr);
    assert!(!stderr.contains(SECRET_KEY));
    if !o.status.success() {
        // A clean failure: one line naming the store, and a backup that resumes.
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("s3://"), "{stderr}");
        ok(dbb()
            .args(["backup", "single", &db, "--quiet", "--format", "native"])
            .args(["--resume", "--allow-inconsistent", "--out", &location]));
    } else {
        assert!(stderr.contains("retry"), "retries are logged: {stderr}");
    }
    assert_eq!(manifest(&location)["status"], "complete");
    ok(dbb().args(["verify", &location]));
    c.psql(&db, "DROP TABLE gate, hold");
    let target = c.unique_db("s3_outage_dst");
    ok(dbb().args([
        "restore", &location, "--dbname", &target, "--create", "--quiet",
    ]));
    // The gate tables were dropped from the source after the backup: compare what remains.
    c.psql(&target, "DROP TABLE gate, hold");
    assert_same(&c.fingerprint(&db), &c.fingerprint(&target));
}
