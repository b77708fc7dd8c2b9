//! A failed restore says what it left (issue 17, failure 7): with `--create` the database it
//! created is dropped (kept with `--keep-failed`), on an error and on Ctrl-C alike, and never a
//! database that was there before; into an existing database the error names what was done and
//! that `--clean` starts over; and the error line gives the first `ERROR:` with its statement,
//! not the tail of the child's stderr, in every format.
//!
//! The backups come from `fixtures/fails_in_post_data.sql`: its restore fails in post-data,
//! after the data is loaded and after many unrelated WARNINGs.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use support::{cluster, dbbackup, manifest_json, quote_literal, run_ok};

const FORMATS: [&str; 3] = ["native", "custom", "plain"];

/// One backup per format of the fixture database, made once per test binary.
fn backup(format: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("failing_src");
        c.create_db(&db);
        c.load_fixture(&db, "fails_in_post_data.sql");
        // Kept for the whole run: tests read the backups concurrently.
        let dir = tempfile::tempdir().unwrap().keep();
        for f in FORMATS {
            run_ok(
                dbbackup()
                    .args(["backup", "single", &db, "--quiet", "--format", f, "--out"])
                    .arg(dir.join(f)),
            );
        }
        dir
    });
    dir.join(format)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn restore(dir: &Path, args: &[&str]) -> Output {
    dbbackup()
        .arg("restore")
        .arg(dir)
        .args(["--quiet"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn database_exists(db: &str) -> bool {
    cluster().psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            quote_literal(db)
        ),
    ) == "1"
}

/// Exit status 1 and exactly one `dbbackup: error: ` line: returns that line and the indented
/// lines after it.
fn error_message(out: &Output) -> (String, Vec<String>) {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}", describe(out));
    let mut lines = stderr
        .lines()
        .skip_while(|l| !l.starts_with("dbbackup: error: "));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no error line\n{}", describe(out)))
        .to_string();
    let rest: Vec<String> = lines
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("dbbackup: error: "))
            .count(),
        1,
        "{}",
        describe(out)
    );
    (first, rest)
}

/// The error line names the target and the phase, then the first ERROR with its statement from
/// its beginning, and none of the warnings printed before it.
fn assert_first_error(first: &str, out: &Output) {
    let at = first
        .find("ERROR:")
        .unwrap_or_else(|| panic!("no ERROR: in the error line\n{}", describe(out)));
    assert!(
        first[at..].starts_with("ERROR:  division by zero"),
        "the error line does not give the first ERROR\n{}",
        describe(out)
    );
    assert!(
        !first[..at].contains("WARNING") && !text(&out.stderr).contains("unrelated warning"),
        "unrelated warnings shown\n{}",
        describe(out)
    );
    assert!(
        first[at..].contains("REFRESH MATERIALIZED VIEW public.mv;"),
        "the failed statement is not named\n{}",
        describe(out)
    );
    assert!(
        first.starts_with("dbbackup: error: restore into "),
        "the line does not say what failed\n{}",
        describe(out)
    );
}

#[test]
fn a_failed_create_restore_drops_the_database_it_created_and_names_the_first_error() {
    for format in FORMATS {
        let target = cluster().unique_db(&format!("failed_create_{format}"));
        // --jobs 2: pg_restore's parallel workers keep printing while the first one fails.
        let out = restore(&backup(format), &["-d", &target, "--create", "--jobs", "2"]);
        let (first, rest) = error_message(&out);
        assert_first_error(&first, &out);
        assert_eq!(
            rest,
            [format!(
                "the database \"{target}\" that this restore created was dropped"
            )],
            "{format}\n{}",
            describe(&out)
        );
        assert!(
            !database_exists(&target),
            "{format}: the half-built database {target} is left"
        );
    }
}

#[test]
fn keep_failed_keeps_the_database_and_says_what_the_restore_left() {
    let expected = [
        (
            "native",
            "database created; pre-data (schema) done; data loaded (2 tables); post-data \
             (indexes, constraints, triggers) stopped part-way; not run: sequences and ANALYZE, \
             database settings",
        ),
        (
            "custom",
            "database created; pg_restore failed and was rolled back; not run: ANALYZE, \
             database settings",
        ),
        (
            "plain",
            "database created; the SQL script failed and was rolled back; not run: ANALYZE, \
             database settings",
        ),
    ];
    for (format, what) in expected {
        let c = cluster();
        let target = c.unique_db(&format!("failed_kept_{format}"));
        let out = restore(
            &backup(format),
            &["-d", &target, "--create", "--keep-failed", "--jobs", "1"],
        );
        let (first, rest) = error_message(&out);
        assert_first_error(&first, &out);
        assert_eq!(
            rest,
            [format!(
                "the database \"{target}\" that this restore created is kept as the restore left it: {what}"
            )],
            "{format}\n{}",
            describe(&out)
        );
        assert!(database_exists(&target), "{format}: {target} was dropped");
        // What the line says is what is there: the native restore loaded the rows.
        let has_t = c.psql(&target, "SELECT count(*) FROM pg_class WHERE relname = 't'");
        assert_eq!(
            has_t,
            if format == "native" { "1" } else { "0" },
            "{format}"
        );
        c.drop_db(&target);
    }
}

#[test]
fn into_an_existing_database_the_error_names_what_was_done_and_clean() {
    let expected = [
        (
            "native",
            "is left part-restored: pre-data (schema) done; data loaded (2 tables); post-data \
             (indexes, constraints, triggers) stopped part-way; not run: sequences and ANALYZE; \
             restore again with --clean to start over",
        ),
        (
            "custom",
            "is left part-restored: pre-data (schema) done; data done; post-data (indexes, \
             constraints, triggers) stopped part-way; not run: ANALYZE; restore again with \
             --clean to start over",
        ),
    ];
    for (format, what) in expected {
        let c = cluster();
        let target = c.unique_db(&format!("failed_existing_{format}"));
        c.create_db(&target);
        let out = restore(&backup(format), &["-d", &target, "--jobs", "2"]);
        let (first, rest) = error_message(&out);
        assert_first_error(&first, &out);
        assert_eq!(
            rest,
            [format!("database \"{target}\" {what}")],
            "{format}\n{}",
            describe(&out)
        );
        assert!(database_exists(&target), "{format}: {target} was dropped");
        c.drop_db(&target);
    }
    // A plain restore is one transaction: nothing of it was committed.
    let c = cluster();
    let target = c.unique_db("failed_existing_plain");
    c.create_db(&target);
    let out = restore(&backup("plain"), &["-d", &target]);
    let (first, rest) = error_message(&out);
    assert_first_error(&first, &out);
    assert_eq!(
        rest,
        [format!(
            "nothing was committed to database \"{target}\": the SQL script runs in one transaction"
        )],
        "{}",
        describe(&out)
    );
    assert_eq!(
        c.psql(&target, "SELECT count(*) FROM pg_class WHERE relname = 't'"),
        "0"
    );
    c.drop_db(&target);
}

#[test]
fn a_data_phase_failure_counts_the_tables_loaded() {
    // Copy the native backup and damage the chunk of the small table `t`: with --jobs 1 the
    // larger `big` loads first and commits, then `t`'s chunk fails its checksum.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    run_ok(Command::new("cp").arg("-a").arg(backup("native")).arg(&dir));
    let m = manifest_json(&dir);
    let t = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "t")
        .unwrap();
    let chunk = t["units"][0]["chunks"][0]["file"].as_str().unwrap();
    let path = dir.join(chunk);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0x5a; len]).unwrap();

    let c = cluster();
    let target = c.unique_db("failed_data");
    c.create_db(&target);
    let out = restore(&dir, &["-d", &target, "--jobs", "1"]);
    let (first, rest) = error_message(&out);
    assert!(
        first.starts_with(&format!(
            "dbbackup: error: restore into \"{target}\" failed in data: "
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(
        rest,
        [format!(
            "database \"{target}\" is left part-restored: pre-data (schema) done; data stopped \
             part-way (1 of 2 tables loaded); not run: post-data (indexes, constraints, \
             triggers), sequences and ANALYZE; restore again with --clean to start over"
        )],
        "{}",
        describe(&out)
    );
    assert_eq!(c.psql(&target, "SELECT count(*) FROM big"), "5000");
    assert_eq!(c.psql(&target, "SELECT count(*) FROM t"), "0");
    c.drop_db(&target);
}

#[test]
fn the_maintenance_database_a_create_restore_reuses_is_never_dropped() {
    // `restore --create` into the maintenance database (PGDATABASE) restores into it as it
    // stands; when that fails it must stay.
    let c = cluster();
    let maint = c.unique_db("failed_maint");
    c.create_db(&maint);
    let out = dbbackup()
        .env("PGDATABASE", &maint)
        .arg("restore")
        .arg(backup("native"))
        .args(["--quiet", "-d", &maint, "--create", "--jobs", "2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (first, rest) = error_message(&out);
    assert_first_error(&first, &out);
    assert_eq!(rest.len(), 1, "{}", describe(&out));
    assert!(
        rest[0].starts_with(&format!("database \"{maint}\" is left part-restored: ")),
        "{}",
        describe(&out)
    );
    assert!(
        database_exists(&maint),
        "the maintenance database was dropped"
    );
    c.drop_db(&maint);
}

#[test]
fn ctrl_c_during_a_create_restore_drops_the_database_it_created() {
    // The chunk of `big` becomes a FIFO that nobody writes: the loader's COPY starts and then
    // waits for it, with the database created and its schema in place.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    run_ok(Command::new("cp").arg("-a").arg(backup("native")).arg(&dir));
    let m = manifest_json(&dir);
    let big = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "big")
        .unwrap();
    let path = dir.join(big["units"][0]["chunks"][0]["file"].as_str().unwrap());
    std::fs::remove_file(&path).unwrap();
    run_ok(Command::new("mkfifo").arg(&path));

    let c = cluster();
    let target = c.unique_db("failed_ctrlc");
    let child = dbbackup()
        .arg("restore")
        .arg(&dir)
        .args(["--quiet", "-d", &target, "--create", "--jobs", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.wait_for(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND query LIKE 'COPY %'",
            quote_literal(&target)
        ),
        "1",
        120,
    );
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    let (first, rest) = error_message(&out);
    assert_eq!(
        first,
        format!("dbbackup: error: restore into \"{target}\" failed in data: interrupted"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        rest,
        [format!(
            "the database \"{target}\" that this restore created was dropped"
        )],
        "{}",
        describe(&out)
    );
    assert!(!database_exists(&target), "{target} is left");
}

#[test]
fn a_cluster_restore_drops_the_database_that_failed_and_keeps_it_with_keep_failed() {
    // Every database of a cluster backup is created by its restore: one that fails is dropped
    // like with --create, and the others are restored all the same.
    let c = cluster();
    let base = c.unique_db("failed_cl");
    let (bad, good) = (format!("{base}_bad"), format!("{base}_good"));
    c.create_db(&bad);
    c.load_fixture(&bad, "fails_in_post_data.sql");
    c.create_db(&good);
    c.psql(
        &good,
        "CREATE TABLE g(x int); INSERT INTO g VALUES (1), (2)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    run_ok(
        dbbackup()
            .args([
                "backup", "cluster", "--quiet", "--format", "native", "--out",
            ])
            .arg(&out)
            .args(["--include-database", &format!("{base}_*")]),
    );
    for keep in [false, true] {
        let mut cmd = dbbackup();
        cmd.arg("restore")
            .arg(&out)
            .args(["--quiet", "--clean", "--jobs", "2"]);
        if keep {
            cmd.arg("--keep-failed");
        }
        let o = cmd.stdin(Stdio::null()).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
        let stderr = text(&o.stderr);
        let said = if keep {
            format!("the database \"{bad}\" that this restore created is kept as the restore left it: database created; pre-data (schema) done; data loaded (2 tables); post-data")
        } else {
            format!("the database \"{bad}\" that this restore created was dropped")
        };
        assert!(stderr.contains(&said), "{said:?}\n{}", describe(&o));
        assert!(
            stderr.contains(
                "ERROR:  division by zero | Command was: REFRESH MATERIALIZED VIEW public.mv;"
            ),
            "{}",
            describe(&o)
        );
        assert_eq!(database_exists(&bad), keep, "keep-failed {keep}");
        assert_eq!(c.psql(&good, "SELECT count(*) FROM g"), "2");
    }
    c.drop_db(&bad);
    c.drop_db(&good);
}

/// On server `major` with the client tools the harness gives it (18 for 16 and 18): the same
/// failure in every format, found in those tools' words. On 16 the 18 tools' pg_restore writes
/// its script into psql (`transaction_timeout` is left out), so the first error comes from psql.
fn fails_and_drops_on(major: u32) {
    let c = support::cluster_of(major);
    let src = c.unique_db(&format!("failing_src_{major}"));
    c.create_db(&src);
    c.load_fixture(&src, "fails_in_post_data.sql");
    let tmp = tempfile::tempdir().unwrap();
    for format in FORMATS {
        let dir = tmp.path().join(format);
        run_ok(
            support::dbbackup_for(c)
                .args([
                    "backup", "single", &src, "--quiet", "--format", format, "--out",
                ])
                .arg(&dir),
        );
        let target = c.unique_db(&format!("failed_{major}_{format}"));
        let out = support::dbbackup_for(c)
            .arg("restore")
            .arg(&dir)
            .args(["--quiet", "-d", &target, "--create", "--jobs", "2"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (first, rest) = error_message(&out);
        assert_first_error(&first, &out);
        if major == 16 {
            // pg_restore's script through psql, which echoes the failed statement.
            assert!(first.contains(": psql failed"), "{}", describe(&out));
        }
        assert_eq!(
            rest,
            [format!(
                "the database \"{target}\" that this restore created was dropped"
            )],
            "{major} {format}\n{}",
            describe(&out)
        );
        let left = c.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = {}",
                quote_literal(&target)
            ),
        );
        assert_eq!(left, "0", "{major} {format}: {target} is left");
    }
}

#[test]
fn the_first_error_is_found_in_what_the_18_tools_write_on_16_and_18() {
    fails_and_drops_on(16);
    fails_and_drops_on(18);
}
