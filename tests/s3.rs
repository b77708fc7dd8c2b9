//! Backups in an S3-compatible store (SeaweedFS, started by the harness): round trips of every
//! format and of a cluster through `s3://`, verify against damaged objects, kill -9 mid-upload
//! and resume without incomplete uploads left, and clear failures for wrong credentials, a
//! missing bucket and an unreachable endpoint. (The store going away mid-backup is in
//! `s3_outage.rs`: it stops the server, which would disturb the tests here.)

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::s3::{s3, BUCKET, SECRET_KEY};
use support::{assert_same, cluster};

fn dbb() -> Command {
    support::s3::dbbackup_s3()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(cmd: &mut Command) -> Output {
    support::s3::run_ok_secretless(cmd)
}

fn fail(cmd: &mut Command) -> Output {
    let o = cmd.stdin(Stdio::null()).output().expect("run dbbackup");
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        !text(&o.stderr).contains(SECRET_KEY),
        "the secret key was printed"
    );
    o
}

fn manifest(location: &str) -> serde_json::Value {
    support::s3::manifest_of(location)
}

fn fixture_db(prefix: &str) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.load_fixture(&db, "hard_types.sql");
    c.load_fixture(&db, "big_table.sql");
    db
}

fn restore_and_compare(db: &str, location: &str) {
    let c = cluster();
    let target = c.unique_db("s3_dst");
    ok(dbb()
        .args([
            "restore", location, "--dbname", &target, "--create", "--quiet",
        ])
        .args(["--jobs", "2"]));
    assert_same(&c.fingerprint(db), &c.fingerprint(&target));
    c.drop_db(&target);
}

#[test]
fn every_format_round_trips_through_s3() {
    let db = fixture_db("s3_rt");
    for format in ["native", "plain", "custom"] {
        let location = s3().location(format);
        ok(dbb()
            .args(["backup", "single", &db, "--quiet", "--format", format])
            // Chunks above the 5 MiB part size go up as multipart uploads.
            .args([
                "--chunk-size",
                "16MiB",
                "--compress",
                "none",
                "--out",
                &location,
            ]));
        let m = manifest(&location);
        assert_eq!(m["status"], "complete", "{format}");
        assert!(!text(&serde_json::to_vec(&m).unwrap()).contains(SECRET_KEY));
        // The object layout is the directory layout.
        let objects = s3().list(&location);
        assert!(objects.iter().any(|o| o == "manifest.json"), "{objects:?}");
        assert!(
            !objects
                .iter()
                .any(|o| o.ends_with(".upload") || o.ends_with(".lock")),
            "{objects:?}"
        );
        ok(dbb().args(["verify", &location]));
        restore_and_compare(&db, &location);
    }
}

#[test]
fn a_cluster_backup_round_trips_through_s3() {
    let c = cluster();
    let base = c.unique_db("s3cl");
    let (one, two) = (format!("{base}_one"), format!("{base}_two"));
    for db in [&one, &two] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, repeat('v', g % 50) FROM generate_series(1, 20000) g;",
        );
    }
    let prints = [c.fingerprint(&one), c.fingerprint(&two)];
    let location = s3().location("cluster");
    ok(dbb()
        .args(["backup", "cluster", "--quiet", "--out", &location])
        .args(["--include-database", &format!("{base}_*")])
        .args(["--database-format", &format!("{base}_one=native")])
        .args(["--database-format", &format!("{base}_two=custom")]));
    ok(dbb().args(["verify", &location]));
    for db in [&one, &two] {
        c.drop_db(db);
    }
    ok(dbb().args(["restore", &location, "--quiet", "--jobs", "2"]));
    assert_same(&prints[0], &c.fingerprint(&one));
    assert_same(&prints[1], &c.fingerprint(&two));
    for db in [&one, &two] {
        c.drop_db(db);
    }
}

#[test]
fn verify_catches_a_flipped_byte_a_truncated_and_a_missing_object() {
    let db = fixture_db("s3_verify");
    let location = s3().location("verify");
    ok(dbb()
        .args(["backup", "single", &db, "--quiet", "--format", "native"])
        .args(["--chunk-size", "1MiB", "--out", &location]));
    let m = manifest(&location);
    let files: Vec<String> = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["units"].as_array().unwrap().clone())
        .flat_map(|u| u["chunks"].as_array().unwrap().clone())
        .map(|c| c["file"].as_str().unwrap().to_string())
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    let (flip, cut, gone) = (&files[0], &files[1], &files[2]);

    let mut bytes = s3().read(&location, flip);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    s3().write(&location, flip, &bytes);
    let mut bytes = s3().read(&location, cut);
    bytes.truncate(bytes.len() - 1);
    s3().write(&location, cut, &bytes);
    s3().delete(&location, gone);

    let o = fail(dbb().args(["verify", &location]));
    let err = text(&o.stderr);
    assert!(err.contains(&format!("{flip}: SHA-256 mismatch")), "{err}");
    assert!(err.contains(&format!("{cut}: size is")), "{err}");
    assert!(
        err.contains(&format!("{gone}: chunk file is missing")),
        "{err}"
    );
    assert!(err.contains(&format!("s3://{BUCKET}/")), "{err}");
}

/// A table of incompressible bytes, so that its chunk is a multipart upload of many parts.
fn big_random_db() -> String {
    let c = cluster();
    let db = c.unique_db("s3_kill");
    c.create_db(&db);
    c.psql(
        &db,
        "CREATE TABLE small (id int, v text);
         INSERT INTO small SELECT g, 'v' || g FROM generate_series(1, 1000) g;
         CREATE TABLE random_bytes (id int, b bytea);
         INSERT INTO random_bytes
           SELECT i, (SELECT decode(string_agg(md5(i::text || '.' || j::text), ''), 'hex')
                      FROM generate_series(1, 65536) j)
           FROM generate_series(1, 40) i;",
    );
    db
}

#[test]
fn kill_9_mid_upload_then_resume_completes_and_leaves_no_incomplete_upload() {
    let db = big_random_db();
    let backup = |location: &str, extra: &[&str]| {
        let mut cmd = dbb();
        cmd.args(["backup", "single", &db, "--quiet", "--format", "native"])
            .args([
                "--chunk-size",
                "256MiB",
                "--compress",
                "none",
                "--out",
                location,
            ])
            .args(extra);
        cmd
    };
    // Kill while a multipart upload is open: its marker object is there and the store lists
    // the upload. dbbackup is stopped (SIGSTOP) before the check, so the upload cannot finish
    // between the check and the kill; if it finished before, the attempt starts over in a new
    // location (a run that was not caught is left to finish, so it leaves nothing open).
    let mut caught = None;
    for _attempt in 0..5 {
        let location = s3().location("kill");
        let mut child = backup(&location, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let marker_seen = loop {
            if s3().list(&location).iter().any(|o| o.ends_with(".upload")) {
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !marker_seen {
            continue;
        }
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
        let open = s3().incomplete_uploads();
        let marked = s3().list(&location).iter().any(|o| o.ends_with(".upload"));
        child.kill().unwrap(); // SIGKILL: no cleanup
        let _ = child.wait();
        if marked && !open.is_empty() {
            caught = Some((location, open));
            break;
        }
        // The upload completed just before the stop: let a new run try again.
    }
    let (location, open_at_kill) = caught.expect("never caught an upload in progress");
    assert_eq!(manifest(&location)["status"], "in_progress");

    ok(&mut backup(
        &location,
        &["--resume", "--allow-inconsistent"],
    ));
    assert_eq!(manifest(&location)["status"], "complete");
    // Every upload open at the kill is gone (ours aborted by the resume; any of a test running
    // beside this one completed); no marker is left.
    let still_open: Vec<String> = s3()
        .incomplete_uploads()
        .into_iter()
        .filter(|u| open_at_kill.contains(u))
        .collect();
    assert!(
        still_open.is_empty(),
        "incomplete uploads left: {still_open:?}"
    );
    let objects = s3().list(&location);
    assert!(
        !objects.iter().any(|o| o.ends_with(".upload")),
        "{objects:?}"
    );
    ok(dbb().args(["verify", &location]));
    restore_and_compare(&db, &location);
}

#[test]
fn wrong_secret_missing_bucket_and_unreachable_endpoint_each_give_one_clear_line() {
    let db = cluster().unique_db("s3_bad");
    cluster().create_db(&db);
    let backup = |location: &str| {
        let mut cmd = dbb();
        cmd.args([
            "backup", "single", &db, "--format", "native", "--out", location,
        ]);
        cmd
    };
    let one_line = |o: &Output| {
        let err = text(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        err
    };

    let o = fail(backup(&s3().location("badkey")).env("AWS_SECRET_ACCESS_KEY", "not-the-secret"));
    let err = one_line(&o);
    assert!(err.contains(&format!("s3://{BUCKET}")), "{err}");
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");

    let o = fail(&mut backup("s3://no-such-bucket/x"));
    let err = one_line(&o);
    assert!(err.contains("s3://no-such-bucket"), "{err}");
    assert!(err.contains("NoSuchBucket"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let o = fail(
        backup(&s3().location("unreachable"))
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
    );
    let err = one_line(&o);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn a_lock_of_a_live_process_or_another_host_is_respected_and_named() {
    let db = cluster().unique_db("s3_lock");
    cluster().create_db(&db);
    let location = s3().location("locked");
    let backup = || {
        let mut cmd = dbb();
        cmd.args([
            "backup", "single", &db, "--format", "native", "--out", &location,
        ]);
        cmd
    };
    // A live process of this host holds it: the test process itself.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = |host: &str, pid: u32| {
        format!(
            r#"{{"host":"{}","pid":{pid},"started_at":"2026-11-29T02:00:00Z"}}"#,
            host.trim()
        )
    };
    s3().write(
        &location,
        ".dbbackup.lock",
        lock(&host, std::process::id()).as_bytes(),
    );
    let o = fail(&mut backup());
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(err.contains("in use by another dbbackup"), "{err}");
    // Another host's lock is never taken over, whatever its pid.
    s3().write(
        &location,
        ".dbbackup.lock",
        lock("elsewhere.example", 1).as_bytes(),
    );
    let o = fail(&mut backup());
    let err = text(&o.stderr);
    assert!(err.contains("on host elsewhere.example"), "{err}");
    assert!(err.contains(".dbbackup.lock"), "{err}");
    // A stale lock of this host (a process that is gone) is taken over.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    s3().write(
        &location,
        ".dbbackup.lock",
        lock(&host, gone_pid).as_bytes(),
    );
    ok(backup().arg("--quiet"));
    assert!(
        !s3().list(&location).iter().any(|o| o == ".dbbackup.lock"),
        "the lock is released at the end"
    );
}

#[test]
fn credentials_come_from_the_shared_files_of_aws_profile() {
    let db = cluster().unique_db("s3_profile");
    cluster().create_db(&db);
    cluster().psql(
        &db,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let tmp = tempfile::tempdir().unwrap();
    let credentials = tmp.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[nightly]\naws_access_key_id = {}\naws_secret_access_key = {SECRET_KEY}\n",
            support::s3::ACCESS_KEY
        ),
    )
    .unwrap();
    let location = s3().location("profile");
    ok(dbb()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_CONFIG_FILE", tmp.path().join("no-config"))
        .env("AWS_PROFILE", "nightly")
        .args([
            "backup", "single", &db, "--quiet", "--format", "native", "--out", &location,
        ]));
    assert_eq!(manifest(&location)["status"], "complete");
}

#[test]
fn an_encrypted_backup_in_s3_verifies_without_a_key_and_restores_with_one() {
    let db = fixture_db("s3_age");
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.txt");
    support::run_ok(Command::new("age-keygen").arg("-o").arg(&key));
    let public = text(&support::run_ok(Command::new("age-keygen").arg("-y").arg(&key)).stdout);
    let location = s3().location("age");
    ok(dbb()
        .args(["backup", "single", &db, "--quiet", "--format", "native"])
        .args([
            "--chunk-size",
            "16MiB",
            "--recipient",
            public.trim(),
            "--out",
            &location,
        ]));
    // Every stored object but the manifest is an age file.
    for object in s3().list(&location) {
        if object != "manifest.json" {
            let bytes = s3().read(&location, &object);
            assert!(
                bytes.starts_with(b"age-encryption.org/v1"),
                "{object} is not an age file"
            );
        }
    }
    let o = ok(dbb().args(["verify", &location]));
    assert!(
        text(&o.stderr).contains("contents were not"),
        "{}",
        text(&o.stderr)
    );
    ok(dbb().args(["verify", &location, "--identity"]).arg(&key));
    let target = cluster().unique_db("s3_age_dst");
    ok(dbb()
        .args([
            "restore",
            &location,
            "--dbname",
            &target,
            "--create",
            "--quiet",
            "--identity",
        ])
        .arg(&key));
    assert_same(&cluster().fingerprint(&db), &cluster().fingerprint(&target));
    cluster().drop_db(&target);
}
