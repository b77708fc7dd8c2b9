//! Restore filters (`-t/-n/--exclude-*/--schema-only/--data-only`) on native and custom backups,
//! and restoring one table beside the live one (`--as`, `--into-schema`) — issue 19, §3 and §4.
//!
//! Filters are checked against the source table by table: row count and md5, and the table's
//! own schema dump (`pg_dump -t`). The targets are "live databases that lost some tables": the
//! source's schema with those tables dropped, so that what the tables need (types, functions,
//! schemas) is there, as it is in a real database a table is restored into.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;

use support::{cluster, dbbackup, normalize_schema, run_fail, run_ok, Cluster};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The hard_types source and its native and custom backups, made once.
struct Hard {
    db: String,
    native: PathBuf,
    custom: PathBuf,
    _dir: tempfile::TempDir,
}

fn hard() -> &'static Hard {
    static HARD: OnceLock<Hard> = OnceLock::new();
    HARD.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("rf_hard");
        c.create_db(&db);
        c.load_fixture(&db, "hard_types.sql");
        let dir = tempfile::tempdir().unwrap();
        let (native, custom) = (dir.path().join("native"), dir.path().join("custom"));
        for (format, out) in [("native", &native), ("custom", &custom)] {
            run_ok(
                dbbackup()
                    .args(["backup", "single", "-q", "--format", format, &db, "--out"])
                    .arg(out),
            );
        }
        Hard {
            db,
            native,
            custom,
            _dir: dir,
        }
    })
}

/// `pg_dump --schema-only` of `db`, with extra arguments, normalized.
fn dump(c: &Cluster, db: &str, extra: &[&str]) -> String {
    let mut cmd = c.client_command("pg_dump");
    cmd.arg("--schema-only")
        .args(extra)
        .arg("-d")
        .arg(format!("dbname={db}"))
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "pg_dump: {}", text(&out.stderr));
    normalize_schema(&text(&out.stdout))
}

/// A database with the source's schema, without the tables `drop` (CASCADE: views on them go too).
fn target_without(c: &Cluster, src: &str, drop: &[&str]) -> String {
    let t = c.unique_db("rf_dst");
    c.create_db(&t);
    let schema = {
        let mut cmd = c.client_command("pg_dump");
        cmd.args(["--schema-only", "-d"])
            .arg(format!("dbname={src}"))
            .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        text(&out.stdout)
    };
    c.psql(&t, &schema);
    for table in drop {
        c.psql(&t, &format!("DROP TABLE {table} CASCADE"));
    }
    t
}

/// (row count, md5 of the sorted rows) of `table`.
fn rows(c: &Cluster, db: &str, table: &str) -> String {
    c.psql(
        db,
        &format!(
            "SELECT count(*) || ' ' || coalesce(md5(string_agg((t.*)::text, E'\\n' ORDER BY (t.*)::text COLLATE \"C\")), '') FROM ONLY {table} t"
        ),
    )
}

fn exists(c: &Cluster, db: &str, table: &str) -> bool {
    c.psql(
        db,
        &format!(
            "SELECT to_regclass('{}') IS NOT NULL",
            table.replace('\'', "''")
        ),
    )
    .trim()
        == "t"
}

/// The table in `db` is the source's: rows, and its own schema dump.
fn assert_table_same(c: &Cluster, src: &str, db: &str, table: &str, pattern: &str) {
    assert_eq!(rows(c, src, table), rows(c, db, table), "rows of {table}");
    assert_eq!(
        dump(c, src, &["-t", pattern]),
        dump(c, db, &["-t", pattern]),
        "schema of {table}"
    );
}

fn restore(backup: &Path, target: &str, args: &[&str]) -> Output {
    run_ok(
        dbbackup()
            .args(["restore", "-d", target, "--jobs", "2"])
            .args(args)
            .arg(backup),
    )
}

#[test]
fn filters_restore_exactly_the_chosen_tables_from_native_and_custom_backups() {
    let c = cluster();
    let h = hard();
    for backup in [&h.native, &h.custom] {
        // -t (qualified, unqualified with unicode, identity and serial sequences, a policy).
        let dropped = [
            "app.orders",
            "app.ident_always",
            "\"données\".\"élèves\"",
            "app.secrets",
        ];
        let t = target_without(c, &h.db, &dropped);
        let o = restore(
            backup,
            &t,
            &[
                "-t",
                "app.orders",
                "-t",
                "app.ident_always",
                "-t",
                "élèves",
                "-t",
                "app.secrets",
            ],
        );
        assert!(text(&o.stdout).contains("4 tables"), "{}", text(&o.stdout));
        for (table, pattern) in [
            ("app.orders", "app.orders"),
            ("app.ident_always", "app.ident_always"),
            ("\"données\".\"élèves\"", "\"données\".\"élèves\""),
            ("app.secrets", "app.secrets"),
        ] {
            assert_table_same(c, &h.db, &t, table, pattern);
        }
        assert_eq!(
            c.psql(
                &h.db,
                "SELECT last_value FROM \"données\".\"élèves_id_seq\""
            ),
            c.psql(&t, "SELECT last_value FROM \"données\".\"élèves_id_seq\""),
            "owned sequence value"
        );
        // order_lines was kept by the target (empty): not chosen, so still empty.
        assert_eq!(
            rows(c, &t, "app.order_lines"),
            "0",
            "order_lines is not chosen"
        );

        // A foreign key to a table not restored is left out and listed; the restore succeeds.
        let t = target_without(c, &h.db, &["app.order_lines"]);
        c.psql(&t, "DROP TABLE app.orders CASCADE");
        let o = restore(backup, &t, &["-t", "app.order_lines"]);
        let out = text(&o.stdout);
        assert!(
            out.contains("foreign keys left out")
                && out.contains("app.order_lines.order_lines_order_id_fkey -> app.orders"),
            "{out}"
        );
        assert_eq!(
            rows(c, &h.db, "app.order_lines"),
            rows(c, &t, "app.order_lines")
        );
        assert_eq!(
            c.psql(&t, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'app.order_lines'::regclass"),
            "0"
        );

        // -n takes the schema whole (its function too), with --exclude-table; the excluded
        // partition (of a table in another schema) stays out. The target has the schema empty.
        let sales = [
            "\"Sales Data\".\"Ünïcode \"\"quoted\"\" table\"",
            "\"Sales Data\".\"MixedCase\"",
        ];
        let t = target_without(c, &h.db, &[]);
        c.psql(
            &t,
            "DROP SCHEMA \"Sales Data\" CASCADE; CREATE SCHEMA \"Sales Data\"",
        );
        restore(
            backup,
            &t,
            &[
                "-n",
                "\"Sales Data\"",
                "--exclude-table",
                "\"Sales Data\".\"by_region_Other\"",
            ],
        );
        for table in sales {
            assert_table_same(c, &h.db, &t, table, table);
        }
        assert_eq!(c.psql(&t, "SELECT \"Sales Data\".add_tax(10)"), "12.00");
        assert!(!exists(c, &t, "\"Sales Data\".\"by_region_Other\""));

        // --schema-only, then --data-only into the table it made.
        let t = target_without(c, &h.db, &["app.dropped_col"]);
        restore(backup, &t, &["--schema-only", "-t", "app.dropped_col"]);
        assert_eq!(rows(c, &t, "app.dropped_col"), "0");
        assert_eq!(
            dump(c, &h.db, &["-t", "app.dropped_col"]),
            dump(c, &t, &["-t", "app.dropped_col"])
        );
        restore(backup, &t, &["--data-only", "-t", "app.dropped_col"]);
        assert_table_same(c, &h.db, &t, "app.dropped_col", "app.dropped_col");

        // A partitioned table comes with its partitions.
        let t = target_without(c, &h.db, &["app.measurements"]);
        restore(backup, &t, &["-t", "app.measurements"]);
        for p in [
            "app.measurements_2023",
            "app.measurements_2024",
            "app.measurements_default",
        ] {
            assert_table_same(c, &h.db, &t, p, p);
        }
    }
}

#[test]
fn a_pattern_matching_nothing_is_refused_before_the_target_is_touched() {
    let c = cluster();
    let h = hard();
    let t = c.unique_db("rf_none");
    for backup in [&h.native, &h.custom] {
        let o = run_fail(
            dbbackup()
                .args(["restore", "--create", "-d", &t, "-t", "app.nosuch"])
                .arg(backup),
        );
        let err = text(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("\"app.nosuch\" matches no table"), "{err}");
        assert_eq!(
            c.psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname = '{t}'")
            ),
            "0",
            "the target was not created"
        );
    }
}

#[test]
fn a_plain_backup_refuses_filters_with_one_line() {
    let c = cluster();
    let db = c.unique_db("rf_plain");
    c.create_db(&db);
    c.psql(&db, "CREATE TABLE t (i int)");
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        dbbackup()
            .args(["backup", "single", "-q", "--format", "plain", &db, "--out"])
            .arg(dir.path().join("b")),
    );
    let o = run_fail(
        dbbackup()
            .args(["restore", "-d", &db, "-t", "t"])
            .arg(dir.path().join("b")),
    );
    let err = text(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("plain backup") && err.contains("cannot be split"),
        "{err}"
    );
}

// `--as` / `--into-schema`.
#[path = "restore_filters/beside.rs"]
mod beside;
#[path = "restore_filters/beside_custom.rs"]
mod beside_custom;
