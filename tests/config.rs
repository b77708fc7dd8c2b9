//! `--config FILE` and the default config file: the file's settings are used, the command
//! line wins over them, wrong files are refused with the key, the file and the line.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use support::{cluster, dbbackup, manifest_json, run_fail, run_ok};

fn source_db() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("config_src");
        c.create_db(&db);
        c.psql(
            &db,
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 1000) i;",
        );
        db
    })
}

/// `dbbackup` that finds no default config file of the machine (tests must not depend on
/// /etc): the test-only variable points to one that does not exist.
fn dbbackup_no_default(tmp: &Path) -> Command {
    let mut cmd = dbbackup();
    cmd.env("DBBACKUP_DEFAULT_CONFIG", tmp.join("no-such-default.toml"));
    cmd
}

fn write(tmp: &Path, name: &str, text: &str) -> PathBuf {
    let path = tmp.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const NIGHTLY: &str = "\
# what a nightly job needs
compress-level = 7

[backup]
parallel-tables = 3
compress = \"gzip\"
";

#[test]
fn the_files_settings_are_used_and_the_command_line_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write(tmp.path(), "dbbackup.toml", NIGHTLY);
    let from_file = tmp.path().join("from_file");
    run_ok(
        dbbackup_no_default(tmp.path())
            .arg("--config")
            .arg(&config)
            .args([
                "backup",
                "single",
                "--format",
                "native",
                source_db(),
                "--quiet",
                "--out",
            ])
            .arg(&from_file),
    );
    let m = manifest_json(&from_file);
    assert_eq!(m["options"]["parallel_tables"], 3);
    assert_eq!(m["options"]["codec"], "gzip");
    assert_eq!(m["options"]["level"], 7);

    let overridden = tmp.path().join("overridden");
    run_ok(
        dbbackup_no_default(tmp.path())
            .args([
                "backup",
                "single",
                "--format",
                "native",
                source_db(),
                "--quiet",
            ])
            .args(["--parallel-tables", "2", "--compress-level", "4", "--out"])
            .arg(&overridden)
            .arg("--config")
            .arg(&config),
    );
    let m = manifest_json(&overridden);
    assert_eq!(m["options"]["parallel_tables"], 2);
    assert_eq!(m["options"]["level"], 4);
    assert_eq!(m["options"]["codec"], "gzip", "not given: still the file's");
}

#[test]
fn the_default_file_is_read_when_present() {
    let tmp = tempfile::tempdir().unwrap();
    let default = write(
        tmp.path(),
        "default.toml",
        "[backup.single]\nparallel-tables = 3\n",
    );
    let out = tmp.path().join("backup");
    run_ok(
        dbbackup()
            .env("DBBACKUP_DEFAULT_CONFIG", &default)
            .args([
                "backup",
                "single",
                "--format",
                "native",
                source_db(),
                "--quiet",
                "--out",
            ])
            .arg(&out),
    );
    assert_eq!(manifest_json(&out)["options"]["parallel_tables"], 3);
}

#[test]
fn the_connection_can_come_from_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cluster();
    let config = write(
        tmp.path(),
        "conn.toml",
        &format!(
            "host = \"{}\"\nport = {}\nusername = \"postgres\"\n",
            c.socket_dir.display(),
            c.port
        ),
    );
    let out = tmp.path().join("backup");
    let mut cmd = dbbackup_no_default(tmp.path());
    cmd.env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGUSER");
    run_ok(
        cmd.arg("--config")
            .arg(&config)
            .args(["backup", "single", source_db(), "--quiet", "--out"])
            .arg(&out),
    );
    assert_eq!(manifest_json(&out)["status"], "complete");
}

#[test]
fn an_unknown_key_is_a_usage_error_naming_key_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write(
        tmp.path(),
        "typo.toml",
        "compress-level = 7\n\n[backup]\nparallel-tabels = 3\n",
    );
    let out = run_fail(
        dbbackup_no_default(tmp.path())
            .arg("--config")
            .arg(&config)
            .args(["verify", "/nonexistent"]),
    );
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("`parallel-tabels`")
            && e.contains(&config.display().to_string())
            && e.contains("line 4"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn secrets_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, line) in [
        ("password", 2),
        ("aws-secret-access-key", 2),
        ("aws-session-token", 2),
    ] {
        let config = write(
            tmp.path(),
            "secret.toml",
            &format!("[backup]\n{key} = \"hunter2\"\n"),
        );
        let out = run_fail(
            dbbackup_no_default(tmp.path())
                .arg("--config")
                .arg(&config)
                .args(["verify", "/nonexistent"]),
        );
        assert_eq!(out.status.code(), Some(2));
        let e = stderr(&out);
        assert!(
            e.contains(&format!("`{key}`"))
                && e.contains("secret")
                && e.contains(&format!("line {line}")),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "the secret is repeated: {e}");
    }
}

#[test]
fn a_missing_config_file_is_an_error_and_a_missing_default_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let out = run_fail(
        dbbackup_no_default(tmp.path())
            .arg("--config")
            .arg(&missing)
            .args(["verify", "/nonexistent"]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );

    // No default file: the command runs (and fails for its own reason, the missing backup).
    let out = run_fail(dbbackup_no_default(tmp.path()).args(["verify", "/nonexistent"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_file_that_is_not_toml_names_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write(tmp.path(), "broken.toml", "compress-level = 7\n[backup\n");
    let out = run_fail(
        dbbackup_no_default(tmp.path())
            .arg("--config")
            .arg(&config)
            .args(["verify", "/nonexistent"]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
}

/// What a nightly job runs: `backup single DB` and `expire`, everything else from the file:
/// the repository, the memory limit and the retention.
#[test]
fn a_nightly_job_needs_only_the_database_name() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let config = write(
        tmp.path(),
        "nightly.toml",
        &format!(
            "repo = {:?}\nmemory-limit = \"64MiB\"\n\n[backup]\nformat = \"native\"\n\n\
             [expire]\nkeep-last = 1\n",
            repo.to_str().unwrap()
        ),
    );
    for day in ["2026-11-27T02:00:00Z", "2026-11-28T02:00:00Z"] {
        run_ok(
            dbbackup_no_default(tmp.path())
                .env("DBBACKUP_TEST_NOW", day)
                .arg("--config")
                .arg(&config)
                .args(["backup", "single", source_db(), "--quiet"]),
        );
    }
    let db_dir = repo.join(source_db());
    let newest = db_dir.join("20261128T020000Z");
    let m = manifest_json(&newest);
    assert_eq!(m["memory"]["limit_bytes"], 64 * 1024 * 1024);
    assert_eq!(std::fs::read_dir(&db_dir).unwrap().count(), 2);
    run_ok(
        dbbackup_no_default(tmp.path())
            .env("DBBACKUP_TEST_NOW", "2026-11-28T03:00:00Z")
            .arg("--config")
            .arg(&config)
            .arg("expire"),
    );
    let left: Vec<_> = std::fs::read_dir(&db_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["20261128T020000Z"], "keep-last 1 from the file");
}
