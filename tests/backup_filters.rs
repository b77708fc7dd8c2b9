//! Backup filters (`-t`, `-T`, `-n`, `-N`, `--exclude-table-data`, `--filter`, `--strict-names`)
//! select what pg_dump with the same switches selects, in every format: the database restored
//! from dbbackup's backup is compared (schema dump, every table's rows, sequences, large
//! objects) with the one restored from the real pg_dump run with the same switches.

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use support::{assert_same, cluster, dbbackup, run_fail, run_ok};

/// One source database for every test (read only).
fn source() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("bfilter_src");
        c.create_db(&db);
        c.load_fixture(&db, "hard_types.sql");
        db
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// An empty database with `schemas` created: `-t` dumps hold no CREATE SCHEMA, so both
/// restores need the tables' schemas in place (as a user restoring a `-t` dump would).
fn target(prefix: &str, schemas: &[&str]) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    for s in schemas {
        c.psql(&db, &format!("CREATE SCHEMA {s}"));
    }
    db
}

/// The reference: `pg_dump -Fc SWITCHES` of the source restored with pg_restore.
fn pg_dump_reference(switches: &[&str], schemas: &[&str], dir: &Path) -> String {
    let c = cluster();
    let file = dir.join("reference.dump");
    let mut dump = c.client_command("pg_dump");
    dump.args(["-Fc", "-f"])
        .arg(&file)
        .args(switches)
        .arg("-d")
        .arg(c.conninfo(source()))
        .stdin(Stdio::null());
    run_ok(&mut dump);
    let db = target("bfilter_ref", schemas);
    let mut restore = c.client_command("pg_restore");
    restore
        .args(["--exit-on-error", "-d"])
        .arg(c.conninfo(&db))
        .arg(&file)
        .stdin(Stdio::null());
    run_ok(&mut restore);
    db
}

/// `backup single` of the source in `format` with `switches`, restored into a new database.
fn dbbackup_restored(format: &str, switches: &[&str], schemas: &[&str], dir: &Path) -> String {
    let out = dir.join(format!("backup-{format}"));
    run_ok(
        dbbackup()
            .args([
                "backup",
                "single",
                "--quiet",
                "--format",
                format,
                source(),
                "--out",
            ])
            .arg(&out)
            .args(switches),
    );
    let db = target("bfilter_dst", schemas);
    run_ok(
        dbbackup()
            .args(["restore", "--quiet", "--dbname", &db])
            .arg(&out),
    );
    db
}

/// Every format selects what pg_dump selects with `reference` (the switches pg_dump is given;
/// `ours` those dbbackup is given, the same unless a filter file stands for them).
fn same_as_pg_dump(ours: &[&str], reference: &[&str], schemas: &[&str]) {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let expected = pg_dump_reference(reference, schemas, dir.path());
    let want = c.fingerprint(&expected);
    // The selection changed something (a test of a switch that does nothing proves nothing).
    assert_ne!(
        want,
        c.fingerprint(source()),
        "{reference:?} selected everything"
    );
    for format in ["native", "custom", "plain"] {
        let got = dbbackup_restored(format, ours, schemas, dir.path());
        eprintln!("{format} {ours:?}");
        assert_same(&want, &c.fingerprint(&got));
        let m = read_json(&dir.path().join(format!("backup-{format}/manifest.json")));
        assert!(m["filters"].is_object(), "{format}: no filters in {m}");
        c.drop_db(&got);
    }
    c.drop_db(&expected);
}

#[test]
fn tables_with_wildcards_quotes_and_unicode() {
    let t = [
        "-t",
        "app.ident_*",
        "-t",
        "\"Sales Data\".\"MixedCase\"",
        "--table",
        "\"données\".élèves",
    ];
    same_as_pg_dump(&t, &t, &["app", "\"Sales Data\"", "\"données\""]);
}

#[test]
fn excluded_tables_unqualified_patterns_see_the_search_path() {
    // `wide` is unqualified and app is not on the search_path: it matches nothing, so
    // app.wide (with rows) stays.
    let t = ["-T", "app.secrets", "-T", "app.no_pk_*", "-T", "wide"];
    same_as_pg_dump(&t, &t, &[]);
}

#[test]
fn schemas_included_and_excluded() {
    let n = ["-n", "app", "-n", "donn*"];
    same_as_pg_dump(&n, &n, &[]);
    let nx = ["-N", "\"Sales Data\""];
    same_as_pg_dump(&nx, &nx, &[]);
}

#[test]
fn excluded_table_data_keeps_definitions() {
    let t = [
        "--exclude-table-data",
        "app.measurements_20*",
        "--exclude-table-data",
        "app.measurement_stats",
        "--exclude-table-data",
        "app.set_seq",
    ];
    same_as_pg_dump(&t, &t, &[]);
}

#[test]
fn filter_file_is_expanded_into_the_same_switches() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("filters.txt");
    std::fs::write(
        &file,
        "# what the nightly job takes\ninclude schema app\nexclude table app.secrets  # private\n\
         EXCLUDE table_data \"app\".wide\n",
    )
    .unwrap();
    let file = file.to_str().unwrap().to_string();
    same_as_pg_dump(
        &["--filter", &file],
        &[
            "-n",
            "app",
            "-T",
            "app.secrets",
            "--exclude-table-data",
            "\"app\".wide",
        ],
        &[],
    );
}

#[test]
fn patterns_matching_nothing_are_refused_as_pg_dump_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["native", "custom"] {
        let out = dir.path().join(format!("strict-{format}"));
        let o = run_fail(
            dbbackup()
                .args([
                    "backup",
                    "single",
                    "--quiet",
                    "--format",
                    format,
                    source(),
                    "--out",
                ])
                .arg(&out)
                .args(["-t", "app.orders", "-t", "app.nosuch*", "--strict-names"]),
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("no matching tables were found for pattern \"app.nosuch*\""),
            "{}",
            stderr(&o)
        );
        let out = dir.path().join(format!("none-{format}"));
        let o = run_fail(
            dbbackup()
                .args([
                    "backup",
                    "single",
                    "--quiet",
                    "--format",
                    format,
                    source(),
                    "--out",
                ])
                .arg(&out)
                .args(["-t", "nosuch", "-n", "app"]),
        );
        assert!(
            stderr(&o).contains("no matching tables were found"),
            "{}",
            stderr(&o)
        );
    }
    // Without --strict-names a pattern matching nothing beside one that matches is fine.
    let out = dir.path().join("lenient");
    run_ok(
        dbbackup()
            .args([
                "backup",
                "single",
                "--quiet",
                "--format",
                "native",
                source(),
                "--out",
            ])
            .arg(&out)
            .args(["-t", "app.orders", "-t", "app.nosuch*"]),
    );
    let m = read_json(&out.join("manifest.json"));
    let names: Vec<&str> = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"]);
    assert_eq!(
        m["filters"]["table"],
        serde_json::json!(["app.orders", "app.nosuch*"])
    );
    // -t leaves large objects out, as pg_dump does.
    assert_eq!(m["large_objects"]["count"], 0);
}

#[test]
fn bad_patterns_and_filter_lines_are_usage_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_fail(
        dbbackup()
            .args(["backup", "single", source(), "--out"])
            .arg(dir.path().join("a"))
            .args(["-t", "a.b.c.d"]),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("a.b.c.d") && e.trim().lines().count() == 1,
        "{e}"
    );
    let file = dir.path().join("f.txt");
    std::fs::write(
        &file,
        "include table app.orders\ninclude extension pgcrypto\n",
    )
    .unwrap();
    let o = run_fail(
        dbbackup()
            .args(["backup", "single", source(), "--out"])
            .arg(dir.path().join("b"))
            .arg("--filter")
            .arg(&file),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("f.txt") && e.contains("line 2") && e.trim().lines().count() == 1,
        "{e}"
    );
    let o = run_fail(
        dbbackup()
            .args(["backup", "single", source(), "--out"])
            .arg(dir.path().join("c"))
            .args(["-t", "otherdb.app.orders"]),
    );
    assert!(
        stderr(&o).contains("cross-database references are not implemented: otherdb.app.orders"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn list_shows_filters_and_resume_keeps_them() {
    let c = cluster();
    let repo = tempfile::tempdir().unwrap();
    let switches = ["-n", "app", "--exclude-table-data", "app.wide"];
    run_ok(
        dbbackup()
            .args([
                "backup",
                "single",
                "--quiet",
                "--format",
                "native",
                source(),
                "--repo",
            ])
            .arg(repo.path())
            .args(switches),
    );
    let o = run_ok(
        dbbackup()
            .args(["list", "--json", "--repo"])
            .arg(repo.path()),
    );
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let b = &doc["backups"][0];
    assert_eq!(b["filters"]["schema"], serde_json::json!(["app"]));
    assert_eq!(
        b["filters"]["exclude_table_data"],
        serde_json::json!(["app.wide"])
    );
    let o = run_ok(dbbackup().args(["list", "--repo"]).arg(repo.path()));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("native, filtered"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // Interrupted after most units (as a kill -9 leaves it), then resumed without switches.
    let dir = Path::new(b["location"].as_str().unwrap()).to_path_buf();
    let path = dir.join("manifest.json");
    let mut m = read_json(&path);
    m["status"] = "in_progress".into();
    let t = m["tables"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == "orders")
        .unwrap();
    let unit = &mut t["units"][0];
    unit["done"] = false.into();
    unit["snapshot"] = Value::Null;
    unit["chunks"] = Value::Array(vec![]);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    // Different switches are refused, naming both.
    let o = run_fail(
        dbbackup()
            .args(["backup", "single", "--quiet", source(), "--out"])
            .arg(&dir)
            .args(["--resume", "--allow-inconsistent", "-n", "public"]),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("filters: given -n public, the backup was started with -n app"),
        "{}",
        stderr(&o)
    );
    run_ok(
        dbbackup()
            .args(["backup", "single", "--quiet", source(), "--out"])
            .arg(&dir)
            .args(["--resume", "--allow-inconsistent"]),
    );
    let m = read_json(&path);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["filters"]["schema"], serde_json::json!(["app"]));
    // The resumed backup restores to what pg_dump takes with the same switches.
    let work = tempfile::tempdir().unwrap();
    let expected = pg_dump_reference(&switches, &[], work.path());
    let got = target("bfilter_res", &[]);
    run_ok(
        dbbackup()
            .args(["restore", "--quiet", "--dbname", &got])
            .arg(&dir),
    );
    assert_same(&c.fingerprint(&expected), &c.fingerprint(&got));
    c.drop_db(&got);
    c.drop_db(&expected);
}

#[test]
fn cluster_backup_applies_filters_in_every_database_and_skips_those_without_a_match() {
    let c = cluster();
    let other = c.unique_db("bfilter_other");
    c.create_db(&other);
    c.psql(
        &other,
        "CREATE TABLE lonely (x int); INSERT INTO lonely VALUES (1)",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cluster");
    let src = source();
    let pattern = format!("{src}.app.orders");
    run_ok(
        dbbackup()
            .args([
                "backup", "cluster", "--quiet", "--format", "native", "--out",
            ])
            .arg(&out)
            .args(["--include-database", src, "--include-database", &other])
            .args(["-t", &pattern, "-t", "lonely", "--strict-names"]),
    );
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(
        m["options"]["filters"]["table"],
        serde_json::json!([pattern, "lonely"])
    );
    let entry = |name: &str| {
        m["databases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap()
            .clone()
    };
    for (db, table, filters) in [
        (src, "orders", serde_json::json!([pattern, "lonely"])),
        (other.as_str(), "lonely", serde_json::json!(["lonely"])),
    ] {
        let e = entry(db);
        assert_eq!(e["status"], "complete", "{e}");
        let dbm = read_json(&out.join(e["dir"].as_str().unwrap()).join("manifest.json"));
        let names: Vec<&str> = dbm["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [table], "{db}");
        // Each database records the patterns that apply to it.
        assert_eq!(dbm["filters"]["table"], filters, "{db}");
    }
    // A pattern that matches in no database: refused with --strict-names, before anything.
    let o = run_fail(
        dbbackup()
            .args(["backup", "cluster", "--quiet", "--out"])
            .arg(dir.path().join("strict"))
            .args(["--include-database", src, "--include-database", &other])
            .args(["-t", "lonely", "-t", "nowhere", "--strict-names"]),
    );
    assert!(
        stderr(&o).contains("no matching tables were found for pattern \"nowhere\""),
        "{}",
        stderr(&o)
    );
    // Without a match in one database, that database is skipped.
    let out = dir.path().join("skip");
    run_ok(
        dbbackup()
            .args([
                "backup", "cluster", "--quiet", "--format", "custom", "--out",
            ])
            .arg(&out)
            .args(["--include-database", src, "--include-database", &other])
            .args(["-t", "lonely"]),
    );
    let m = read_json(&out.join("manifest.json"));
    let e = m["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == src)
        .unwrap();
    assert_eq!(e["status"], "skipped", "{e}");
    c.drop_db(&other);
}
