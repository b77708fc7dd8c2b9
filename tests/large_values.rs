//! Values pg_dump's text output cannot carry (over 500 MiB): found by the probe before pg_dump
//! starts. `--format auto` then picks native and says why; an explicit `--format plain|custom`
//! is refused with one line naming the table and column, before anything is written. Ordinary
//! data, even with a large TOAST, keeps auto's usual choice.
//!
//! The big database holds one `bytea` of 510 MiB, lz4-compressed by the server (about 2 MiB of
//! TOAST: an insert of ~3 s and almost no disk; it is also close to the smallest TOAST that can
//! hold such a value, which the probe's bound must still count). It is built once per binary.
//! Its round trip through a restore is another test's business.

mod support;

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use serde_json::Value;
use support::{cluster, dbbackup, manifest_json, quote_ident, run_fail, run_ok};

/// The size of the big value: over the 500 MiB limit, under PostgreSQL's 1 GB.
const BIG_MIB: u64 = 510;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The database with the 510 MiB value in `public.blobs.b` (and a small table beside it).
fn big_db() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("lvbig");
        c.create_db(&db);
        c.psql(
            &db,
            &format!(
                "CREATE TABLE small (id int PRIMARY KEY, note text);
                 INSERT INTO small SELECT g, 'note ' || g FROM generate_series(1, 100) g;
                 CREATE TABLE blobs (id int PRIMARY KEY, b bytea, t text);
                 ALTER TABLE blobs ALTER COLUMN b SET COMPRESSION lz4;
                 INSERT INTO blobs VALUES (1, 'small', 'small');
                 INSERT INTO blobs VALUES
                   (2, convert_to(repeat('x', {BIG_MIB} * 1024 * 1024), 'UTF8'), 'beside it');"
            ),
        );
        // The premise: the value is that large, its TOAST small (so the bound is exercised).
        let sizes = c.psql(
            &db,
            "SELECT max(octet_length(b)), pg_relation_size(reltoastrelid) < 4 * 1024 * 1024
             FROM blobs, pg_class WHERE pg_class.oid = 'blobs'::regclass GROUP BY 2",
        );
        assert_eq!(sizes, format!("{}|t", BIG_MIB << 20));
        db
    })
}

/// The line every refusal of the big database must carry.
fn refusal(db: &str) -> String {
    format!(
        "database {db}: table public.blobs column b holds a value of {BIG_MIB}.0 MiB; pg_dump's plain/custom formats cannot carry values over 500 MiB: use --format native"
    )
}

fn is_absent_or_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

#[test]
fn explicit_plain_and_custom_are_refused_naming_table_and_column_before_anything_is_written() {
    let db = big_db();
    for format in ["custom", "plain"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let out = run_fail(
            dbbackup()
                .args(["backup", "single", db, "--format", format, "--out"])
                .arg(&dir),
        );
        assert_eq!(out.status.code(), Some(1), "{format}: {}", describe(&out));
        let stderr = text(&out.stderr);
        let want = format!("dbbackup: error: {}", refusal(db));
        assert!(
            stderr.lines().any(|l| l == want),
            "{format}: wanted the line\n{want}\n{}",
            describe(&out)
        );
        // pg_dump never ran: its messages would be in the error.
        assert!(!stderr.contains("pg_dump:"), "{format}: {stderr}");
        assert!(
            is_absent_or_empty(&dir),
            "{format}: {} was written to",
            dir.display()
        );
    }
}

#[test]
fn auto_picks_native_and_records_why() {
    let db = big_db();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let out = run_ok(
        dbbackup()
            .args(["backup", "single", db, "--out"])
            .arg(&dir)
            .args(["--compress", "zstd", "--compress-level", "1"]),
    );
    let want = format!(
        "auto: public.blobs.b holds a value of {BIG_MIB}.0 MiB; pg_dump's text output cannot carry values over 500 MiB (hex of a bytea doubles it past PostgreSQL's 1 GB limit), so the native engine (binary COPY), one table at a time (--parallel-tables N > 1 for more)"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("strategy: native ({want})")),
        "{}",
        describe(&out)
    );
    let m = manifest_json(&dir);
    assert_eq!(m["status"], "complete", "{m:#}");
    assert_eq!(m["strategy"]["kind"], "native", "{m:#}");
    assert_eq!(m["strategy"]["reason"], want.as_str(), "{m:#}");
    // The whole table was dumped: both rows, and at least the big value's bytes.
    assert_eq!(table_rows(&m, "blobs"), 2, "{m:#}");
    // One worker, as pg_dump would have been one stream (a cluster budgets auto that way).
    assert_eq!(m["options"]["parallel_tables"], 1, "{m:#}");
    assert!(
        m["totals"]["raw_bytes"].as_u64().unwrap() > BIG_MIB << 20,
        "{m:#}"
    );
}

#[test]
fn ordinary_data_with_a_large_toast_keeps_custom() {
    let c = cluster();
    let db = c.unique_db("lvsmall");
    c.create_db(&db);
    // 40 incompressible values of 100 KiB: 4 MiB of TOAST, over the bound, so the table is
    // measured, but no value anywhere near the limit.
    c.psql(
        &db,
        "CREATE TABLE docs (id int PRIMARY KEY, body bytea, title varchar(100));
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO docs SELECT g, decode(string_agg(md5(g::text || ':' || i), ''), 'hex'), 'doc ' || g
         FROM generate_series(1, 40) g, generate_series(1, 6400) i GROUP BY g;",
    );
    let toast: i64 = c
        .psql(
            &db,
            "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'docs'::regclass",
        )
        .parse()
        .unwrap();
    assert!(
        toast > 2_048_000,
        "TOAST of {toast} bytes is below the bound"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let out = run_ok(
        dbbackup()
            .args(["backup", "single", &db, "--out"])
            .arg(&dir),
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("1 table(s) can hold values over 500 MiB"),
        "{}",
        describe(&out)
    );
    let m = manifest_json(&dir);
    assert_eq!(m["strategy"]["kind"], "custom", "{m:#}");
    assert!(
        m["strategy"]["reason"]
            .as_str()
            .unwrap()
            .contains("below --plain-threshold"),
        "{m:#}"
    );
    let check = &m["probe"]["large_values"];
    assert_eq!(check["limit_bytes"], 500u64 << 20, "{m:#}");
    assert_eq!(check["candidate_tables"], 1, "{m:#}");
    c.drop_db(&db);
}

#[test]
fn cluster_refuses_the_database_given_custom_and_backs_up_the_others() {
    let c = cluster();
    let big = big_db();
    let other = c.unique_db("lvother");
    c.create_db(&other);
    c.psql(&other, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("cluster");
    let out = run_fail(
        dbbackup()
            .args(["backup", "cluster", "--out"])
            .arg(&out_dir)
            .args(["--include-database", big, "--include-database", &other])
            .args(["--database-format", &format!("{big}=custom")]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains(&refusal(big)),
        "{}",
        describe(&out)
    );
    let m: Value = serde_json::from_slice(
        &std::fs::read(out_dir.join("manifest.json")).expect("cluster manifest"),
    )
    .unwrap();
    let entry = |name: &str| {
        m["databases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {m:#}"))
            .clone()
    };
    let refused = entry(big);
    assert_eq!(refused["status"], "failed", "{m:#}");
    assert_eq!(refused["error"], refusal(big).as_str(), "{m:#}");
    assert!(refused["strategy"].is_null(), "{m:#}");
    let fine = entry(&other);
    assert_eq!(fine["status"], "complete", "{m:#}");
    assert_eq!(fine["strategy"], "custom", "{m:#}");
    c.psql(
        "postgres",
        &format!("DROP DATABASE {} WITH (FORCE)", quote_ident(&other)),
    );
}

/// Rows of table `name` in a native manifest: the sum over its units' chunks.
#[test]
fn cluster_with_auto_backs_the_database_up_native() {
    let big = big_db();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("cluster");
    let out = run_ok(
        dbbackup()
            .args(["backup", "cluster", "--out"])
            .arg(&out_dir)
            .args(["--include-database", big]),
    );
    assert!(
        text(&out.stderr).contains("strategy: native (auto: public.blobs.b holds a value of"),
        "{}",
        describe(&out)
    );
    let m: Value = serde_json::from_slice(
        &std::fs::read(out_dir.join("manifest.json")).expect("cluster manifest"),
    )
    .unwrap();
    let entry = &m["databases"][0];
    assert_eq!(entry["name"], big, "{m:#}");
    assert_eq!(entry["status"], "complete", "{m:#}");
    assert_eq!(entry["strategy"], "native", "{m:#}");
    let db_manifest = manifest_json(&out_dir.join(entry["dir"].as_str().unwrap()));
    assert!(
        db_manifest["strategy"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("auto: public.blobs.b holds a value of 510.0 MiB"),
        "{db_manifest:#}"
    );
}

fn table_rows(m: &Value, name: &str) -> u64 {
    let table = m["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("table {name} not in {m:#}"));
    table["units"]
        .as_array()
        .expect("units")
        .iter()
        .flat_map(|u| u["chunks"].as_array().expect("chunks"))
        .map(|c| c["rows"].as_u64().expect("rows"))
        .sum()
}
