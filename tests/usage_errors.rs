//! Usage errors of every subcommand: one line on stderr naming the argument, exit status 2,
//! nothing on stdout, nothing created. No server is needed: parsing fails before any
//! connection is made.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs dbbackup with `args`; the environment cannot point it at a server by accident.
fn dbbackup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbbackup"))
        .args(args)
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGDATABASE")
        .env("PGCONNECT_TIMEOUT", "1")
        .stdin(Stdio::null())
        .output()
        .expect("spawn dbbackup")
}

/// Asserts the usage-error contract and that the one error line contains every needle.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let o = dbbackup(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let what = format!(
        "dbbackup {}\nstatus: {}\nstderr:\n{stderr}",
        args.join(" "),
        o.status
    );
    assert_eq!(o.status.code(), Some(2), "{what}");
    assert!(o.stdout.is_empty(), "stdout not empty: {what}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {what}");
    assert!(lines[0].starts_with("dbbackup: error: "), "{what}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing: {what}");
    }
}

#[test]
fn backup_single_usage_errors_name_the_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let out = out.to_str().unwrap();
    let single = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["backup", "single", "mydb", "--out", out]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let check = |args: Vec<String>, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_usage_error(&args, needles);
    };
    assert_usage_error(&["backup", "single", "mydb"], &["required", "--out <DIR>"]);
    assert_usage_error(
        &["backup", "single", "--out", out],
        &["required", "<DBNAME>"],
    );
    check(single(&["--bogus"]), &["unexpected argument '--bogus'"]);
    check(
        single(&["--chunk-sze", "8MiB"]),
        &["'--chunk-sze'", "similar argument exists: '--chunk-size'"],
    );
    check(
        single(&["--chunk-size", "12parsecs"]),
        &["--chunk-size <SIZE>", "12parsecs"],
    );
    check(
        single(&["--format", "fast"]),
        &["--format <FORMAT>", "'fast'", "auto, native, plain, custom"],
    );
    check(
        single(&["--timeout", "soon"]),
        &["--timeout <DURATION>", "soon"],
    );
    check(
        single(&["--parallel-tables", "many"]),
        &["--parallel-tables <N>"],
    );
    check(
        single(&["--chunk-size"]),
        &["--chunk-size <SIZE>", "value is required"],
    );
    check(single(&["--allow-inconsistent"]), &["required", "--resume"]);
    check(
        single(&["--out", "/tmp/y"]),
        &["--out <DIR>", "multiple times"],
    );
    // Refused by dbbackup's own checks, before connecting.
    check(single(&["--parallel-tables", "0"]), &["--parallel-tables"]);
    check(single(&["--compress-level", "99"]), &["99"]);
    assert!(
        !Path::new(out).exists(),
        "a usage error must not create --out"
    );

    // --resume of a directory holding the other kind of backup says which command resumes it.
    let cluster_dir = tmp.path().join("cluster");
    std::fs::create_dir(&cluster_dir).unwrap();
    std::fs::write(cluster_dir.join("manifest.json"), r#"{"kind": "cluster"}"#).unwrap();
    let dir = cluster_dir.to_str().unwrap();
    assert_usage_error(
        &["backup", "single", "mydb", "--out", dir, "--resume"],
        &[
            "holds a cluster backup",
            "backup cluster --out DIR --resume",
        ],
    );
}

#[test]
fn backup_cluster_usage_errors_name_the_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let out = out.to_str().unwrap();
    assert_usage_error(&["backup", "cluster"], &["required", "--out <DIR>"]);
    let cluster = ["backup", "cluster", "--out", out];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        cluster
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };
    assert_usage_error(&with(&["--bogus"]), &["unexpected argument '--bogus'"]);
    assert_usage_error(
        &with(&["--timeout", "soon"]),
        &["--timeout <DURATION>", "soon"],
    );
    assert_usage_error(
        &with(&["--parallel-databases", "x"]),
        &["--parallel-databases <M>", "'x'"],
    );
    assert_usage_error(
        &with(&["--database-format", "x=fast"]),
        &["--database-format", "x=fast"],
    );
    assert_usage_error(
        &with(&["--parallel-databases", "0"]),
        &["--parallel-databases"],
    );
    assert!(
        !Path::new(out).exists(),
        "a usage error must not create --out"
    );
}

#[test]
fn restore_and_verify_usage_errors_name_the_argument() {
    assert_usage_error(&["restore"], &["required", "<DIR>"]);
    assert_usage_error(&["restore", "/nonexistent", "--bogus"], &["'--bogus'"]);
    assert_usage_error(
        &["restore", "/nonexistent", "--jobs", "abc"],
        &["--jobs <N>", "'abc'"],
    );
    assert_usage_error(
        &["restore", "/nonexistent", "--dbname"],
        &["--dbname <DBNAME>"],
    );
    assert_usage_error(&["verify"], &["required", "<DIR>"]);
    assert_usage_error(&["verify", "/nonexistent", "--bogus"], &["'--bogus'"]);
}

#[test]
fn top_level_usage_errors_name_the_argument() {
    assert_usage_error(&["frobnicate"], &["unrecognized subcommand 'frobnicate'"]);
    assert_usage_error(
        &["backup", "everything"],
        &["unrecognized subcommand 'everything'"],
    );
    assert_usage_error(
        &["--port", "high", "verify", "x"],
        &["--port <PORT>", "'high'"],
    );
    // Without a subcommand: the help listing them, as a usage error.
    for args in [&[][..], &["backup"][..]] {
        let o = dbbackup(args);
        assert_eq!(o.status.code(), Some(2), "dbbackup {args:?}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("Commands:"), "dbbackup {args:?}: {stderr}");
    }
}
