//! `dbbackup drill`: a backup restored into a scratch database, compared with its manifest,
//! the scratch database dropped, the result recorded in the backup's `drills/`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use support::{assert_same, cluster, dbbackup, manifest_json, run_fail, run_ok};

/// One source database (the hard-types fixture: many tables, sequences, 3 large objects).
fn source_db() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("drill_src");
        c.create_db(&db);
        c.load_fixture(&db, "hard_types.sql");
        db
    })
}

/// A fresh native backup of the source in its own directory.
fn backup(tmp: &Path) -> PathBuf {
    let out = tmp.join("backup");
    run_ok(support::backup_native(source_db(), &out).args(["--parallel-tables", "2", "--quiet"]));
    out
}

/// `dbbackup drill BACKUP --scratch-name NAME --quiet`: tests that run at the same time drill
/// the same source, whose default scratch names would then be the same.
fn drill_named(out: &Path, scratch: &str) -> std::process::Command {
    let mut cmd = dbbackup();
    cmd.arg("drill")
        .arg(out)
        .args(["--scratch-name", scratch, "--quiet"]);
    cmd
}

/// The drill records in `dir/drills/`, parsed.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("drills"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
        .collect()
}

fn database_exists(name: &str) -> bool {
    let sql = format!(
        "SELECT count(*) FROM pg_database WHERE datname = {}",
        support::quote_literal(name)
    );
    cluster().psql("postgres", &sql) == "1"
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_good_backup_passes_and_leaves_a_record_and_no_scratch_database() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(tmp.path());
    let m = manifest_json(&out);
    let metrics = tmp.path().join("dbbackup.prom");
    let drilled = run_ok(
        dbbackup()
            .arg("drill")
            .arg(&out)
            .arg("--quiet")
            .arg("--metrics-file")
            .arg(&metrics),
    );
    let stdout = text(&drilled.stdout);
    let src = source_db();
    // The metrics file carries the drill's result (and the backup's figures, peak RSS too).
    let prom = std::fs::read_to_string(&metrics).unwrap();
    for line in [
        format!("dbbackup_last_drill_success{{database=\"{src}\"}} 1"),
        format!("dbbackup_last_drill_timestamp_seconds{{database=\"{src}\"}} "),
        format!("dbbackup_last_peak_rss_bytes{{database=\"{src}\"}} "),
    ] {
        assert!(prom.contains(&line), "{line:?} missing from:\n{prom}");
    }
    assert!(
        stdout.starts_with(&format!("drill of {src}@")) && stdout.contains(": passed in "),
        "{stdout}"
    );
    let tables = m["tables"].as_array().unwrap().len();
    assert!(stdout.contains(&format!("({tables} tables, ")), "{stdout}");
    assert!(stdout.contains(", 3 large objects)"), "{stdout}");

    let records = records(&out);
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["database"], src);
    assert_eq!(r["backup_started_at"], m["started_at"]);
    assert_eq!(r["differences"], serde_json::json!([]));
    assert!(r["duration_secs"].as_f64().unwrap() > 0.0);
    let scratch = r["scratch_database"].as_str().unwrap();
    let prefix = format!("dbbackup_drill_{src}_");
    let stamp = scratch.strip_prefix(&prefix).unwrap_or_default();
    assert!(stamp.len() == 16 && stamp.ends_with('Z'), "{scratch}");
    assert!(
        !database_exists(scratch),
        "the scratch database {scratch} is left"
    );

    // The drills/ directory does not upset verify or restore.
    run_ok(dbbackup().arg("verify").arg(&out));
    let c = cluster();
    let target = c.unique_db("drill_restored");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--create", "--quiet"]),
    );
    assert_same(&c.fingerprint(src), &c.fingerprint(&target));
    c.drop_db(&target);
}

#[test]
fn a_missing_chunk_fails_the_drill_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(tmp.path());
    let m = manifest_json(&out);
    let chunk = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["units"].as_array().unwrap())
        .flat_map(|u| u["chunks"].as_array().unwrap())
        .next()
        .expect("a data chunk")["file"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(out.join(&chunk)).unwrap();
    let scratch = cluster().unique_db("drill_missing");
    let failed = run_fail(&mut drill_named(&out, &scratch));
    assert_eq!(failed.status.code(), Some(1));
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains(": FAILED in ") && stderr.contains(&chunk),
        "{stderr}"
    );
    let r = &records(&out)[0];
    assert_eq!(r["passed"], false);
    assert!(
        r["differences"][0].as_str().unwrap().contains(&chunk),
        "{r}"
    );
    assert!(!database_exists(&scratch));
}

#[test]
fn a_chunk_that_fails_mid_restore_drops_the_scratch_database_it_created() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(tmp.path());
    let m = manifest_json(&out);
    // Same size, other bytes: the restore creates the scratch database and starts loading
    // before the checksum finds it.
    let chunk = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["units"].as_array().unwrap())
        .flat_map(|u| u["chunks"].as_array().unwrap())
        .find(|c| c["rows"].as_u64().unwrap() > 0)
        .expect("a chunk with rows")["file"]
        .as_str()
        .unwrap()
        .to_string();
    let path = out.join(&chunk);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0x5a; len]).unwrap();
    let scratch = cluster().unique_db("drill_corrupt");
    let failed = run_fail(&mut drill_named(&out, &scratch));
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        text(&failed.stderr).contains("the restore failed"),
        "{}",
        text(&failed.stderr)
    );
    assert_eq!(records(&out)[0]["passed"], false);
    assert!(
        !database_exists(&scratch),
        "the scratch database {scratch} is left"
    );
}

#[test]
fn the_comparison_fails_when_the_restore_differs_from_the_manifest() {
    // The manifest's large-object count is what the drill compares; restore itself checks each
    // file's records, not this number, so raising it by one makes the restore succeed and the
    // restored database differ from what the manifest claims.
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(tmp.path());
    let mut m = manifest_json(&out);
    assert_eq!(m["large_objects"]["count"], 3);
    m["large_objects"]["count"] = 4.into();
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    // Named: drills of the same backup in the same second would share the default name.
    let scratch = cluster().unique_db("drill_differs");
    let failed = run_fail(&mut drill_named(&out, &scratch));
    assert_eq!(failed.status.code(), Some(1));
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains("FAILED") && stderr.contains("large objects: 4 in the backup, 3 restored"),
        "{stderr}"
    );
    let r = &records(&out)[0];
    assert_eq!(r["passed"], false);
    assert_eq!(
        r["differences"],
        serde_json::json!(["large objects: 4 in the backup, 3 restored"])
    );
    assert!(!database_exists(r["scratch_database"].as_str().unwrap()));
}

#[test]
fn an_existing_scratch_database_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(tmp.path());
    let c = cluster();
    let existing = c.unique_db("drill_existing");
    c.create_db(&existing);
    c.psql(
        &existing,
        "CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (1)",
    );
    let failed = run_fail(
        dbbackup()
            .arg("drill")
            .arg(&out)
            .args(["--scratch-name", &existing]),
    );
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        text(&failed.stderr).contains("already exists"),
        "{}",
        text(&failed.stderr)
    );
    assert_eq!(c.psql(&existing, "SELECT count(*) FROM keep_me"), "1");
    c.drop_db(&existing);
}

#[test]
fn keep_scratch_keeps_the_restored_database() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(tmp.path());
    let c = cluster();
    let scratch = c.unique_db("drill_kept");
    run_ok(dbbackup().arg("drill").arg(&out).args([
        "--scratch-name",
        &scratch,
        "--keep-scratch",
        "--quiet",
    ]));
    assert_same(&c.fingerprint(source_db()), &c.fingerprint(&scratch));
    c.drop_db(&scratch);
}

#[test]
fn a_record_that_cannot_be_written_fails_the_drill_naming_why() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(tmp.path());
    // A file where the drills/ directory would go.
    std::fs::write(out.join("drills"), b"in the way").unwrap();
    let scratch = cluster().unique_db("drill_unrecorded");
    let failed = run_fail(&mut drill_named(&out, &scratch));
    assert_eq!(failed.status.code(), Some(1));
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains(": passed in ") && stderr.contains("record could not be written"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("drills")).unwrap(), b"in the way");
}

#[test]
fn a_cluster_backup_is_drilled_database_by_database() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    // Its own database: the scratch names of a cluster drill are the default ones, which a
    // drill of source_db() in the same second would share.
    let c = cluster();
    let src = c.unique_db("drill_cluster_src");
    let src = src.as_str();
    c.create_db(src);
    c.psql(
        src,
        "CREATE TABLE t (id serial PRIMARY KEY, v text);
         INSERT INTO t (v) SELECT 'v' || i FROM generate_series(1, 100) i;",
    );
    run_ok(
        dbbackup()
            .args([
                "backup",
                "cluster",
                "--include-database",
                src,
                "--quiet",
                "--out",
            ])
            .arg(&out),
    );
    let cm = manifest_json(&out);
    let dir = cm["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == src)
        .expect("the source in the cluster manifest")["dir"]
        .as_str()
        .unwrap()
        .to_string();
    let drilled = run_ok(dbbackup().arg("drill").arg(&out).arg("--quiet"));
    assert!(
        text(&drilled.stdout).contains(&format!("drill of {src}@")),
        "{}",
        text(&drilled.stdout)
    );
    let r = &records(&out.join(dir))[0];
    assert_eq!(r["passed"], true, "{r}");
    assert!(!database_exists(r["scratch_database"].as_str().unwrap()));
    run_ok(dbbackup().arg("verify").arg(&out));
}

#[test]
fn a_plain_backup_in_s3_is_drilled_and_its_record_stored_there() {
    use support::s3::{dbbackup_s3, s3};
    let location = s3().location("drill");
    let src = source_db();
    run_ok(dbbackup_s3().args([
        "backup", "single", src, "--format", "plain", "--quiet", "--out", &location,
    ]));
    let drilled = support::s3::run_ok_secretless(
        dbbackup_s3()
            .args([
                "drill",
                &location,
                "--quiet",
                "--jobs",
                "2",
                "--scratch-name",
            ])
            .arg(cluster().unique_db("drill_s3")),
    );
    assert!(
        text(&drilled.stdout).contains(", 3 large objects)"),
        "{}",
        text(&drilled.stdout)
    );
    let names: Vec<String> = s3()
        .list(&location)
        .into_iter()
        .filter(|o| o.starts_with("drills/") && o.ends_with(".json"))
        .collect();
    assert_eq!(names.len(), 1, "{:?}", s3().list(&location));
    let r: serde_json::Value = serde_json::from_slice(&s3().read(&location, &names[0])).unwrap();
    assert_eq!(r["passed"], true, "{r}");
    assert!(!database_exists(r["scratch_database"].as_str().unwrap()));
    run_ok(dbbackup_s3().args(["verify", &location]));
}

#[test]
fn a_second_drill_of_the_same_scratch_name_is_refused_while_the_first_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(tmp.path());
    let c = cluster();
    let scratch = c.unique_db("drill_claimed");
    // What a running drill holds: the advisory lock on its scratch name.
    let mut first = c.hold_session(
        "postgres",
        &format!(
            "SELECT pg_advisory_lock({}, hashtext('{scratch}')); SELECT pg_sleep(600)",
            0x6462_6472
        ),
    );
    c.wait_for(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND classid = {}::oid AND objid = hashtext('{scratch}')::oid",
            0x6462_6472
        ),
        "1",
        30,
    );
    let refused = run_fail(&mut drill_named(&out, &scratch));
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("another drill is using the scratch database name"),
        "{stderr}"
    );
    assert!(!database_exists(&scratch));
    assert!(records(&out).is_empty(), "a refused drill records nothing");
}
