//! Native backups restore exactly: every fixture, several worker counts, chunk sizes, codecs
//! and COPY formats, compared with the source by fingerprint (schema, rows, sequences, large
//! objects).

mod support;

use std::sync::OnceLock;

use support::{assert_same, cluster, dbbackup, run_ok};

/// One source database with every fixture loaded, shared by the tests of this binary.
fn source_db() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("rt_src");
        c.create_db(&db);
        c.load_fixture(&db, "hard_types.sql");
        c.load_fixture(&db, "big_table.sql");
        db
    })
}

fn manifest(dir: &std::path::Path) -> serde_json::Value {
    support::manifest_json(dir)
}

/// Backs up the source with `args`, verifies, restores into a new database, compares.
fn round_trip(args: &[&str]) -> serde_json::Value {
    let c = cluster();
    let src = source_db();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("backup");
    run_ok(support::backup_native(src, &out).args(args).arg("--quiet"));
    run_ok(dbbackup().arg("verify").arg(&out));
    let target = c.unique_db("rt_dst");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--create", "--jobs", "3", "--quiet"]),
    );
    assert_same(&c.fingerprint(src), &c.fingerprint(&target));
    c.drop_db(&target);
    manifest(&out)
}

#[test]
fn default_options_round_trip_exactly() {
    let m = round_trip(&["--parallel-tables", "2"]);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["strategy"]["kind"], "native");
    assert_eq!(m["consistent"], true);
}

#[test]
fn small_chunks_split_big_tables_into_ctid_ranges_and_still_round_trip() {
    let m = round_trip(&[
        "--parallel-tables",
        "4",
        "--chunk-size",
        "256KiB",
        "--split-tables-larger-than",
        "2MiB",
    ]);
    let big = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "big_events")
        .expect("big_events in manifest");
    let units = big["units"].as_array().unwrap();
    assert!(
        units.len() > 2,
        "big_events should be split: {}",
        units.len()
    );
    let chunks: usize = units
        .iter()
        .map(|u| u["chunks"].as_array().unwrap().len())
        .sum();
    assert!(
        chunks > units.len(),
        "units should rotate into several chunks"
    );
    let rows: u64 = units
        .iter()
        .flat_map(|u| u["chunks"].as_array().unwrap())
        .map(|c| c["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 300_000);
}

#[test]
fn gzip_round_trips_exactly() {
    round_trip(&[
        "--compress",
        "gzip",
        "--parallel-tables",
        "2",
        "--chunk-size",
        "1MiB",
    ]);
}

#[test]
fn uncompressed_round_trips_exactly() {
    round_trip(&["--compress", "none", "--parallel-tables", "1"]);
}

#[test]
fn text_copy_format_round_trips_exactly() {
    let m = round_trip(&["--copy-format", "text", "--chunk-size", "1MiB"]);
    for t in m["tables"].as_array().unwrap() {
        assert_eq!(t["copy_format"], "text", "table {}", t["name"]);
    }
}

#[test]
fn auto_copy_format_uses_text_only_where_binary_is_not_portable() {
    let m = round_trip(&["--parallel-tables", "3"]);
    let tables = m["tables"].as_array().unwrap();
    let format_of = |name: &str| {
        tables
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("table {name} in manifest"))["copy_format"]
            .clone()
    };
    assert_eq!(format_of("big_events"), "binary");
    // Tables with enum, composite or user-defined array columns must go as text, with a reason.
    let text: Vec<_> = tables
        .iter()
        .filter(|t| t["copy_format"] == "text")
        .collect();
    assert!(!text.is_empty(), "the fixture has enum/composite columns");
    for t in text {
        assert!(
            t["copy_format_reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "text table {} has no reason",
            t["name"]
        );
    }
}

#[test]
fn restore_with_one_job_and_no_create_into_an_empty_database() {
    let c = cluster();
    let src = source_db();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    run_ok(support::backup_native(src, &out).args(["--quiet"]));
    let target = c.unique_db("rt_plain");
    c.create_db(&target);
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--jobs", "1", "--quiet"]),
    );
    assert_same(&c.fingerprint(src), &c.fingerprint(&target));
    c.drop_db(&target);
}

#[test]
fn create_restores_database_properties() {
    let c = cluster();
    let src = c.unique_db("rt_props");
    c.create_db(&src);
    c.psql(
        "postgres",
        &format!(
            "DO $$ BEGIN CREATE ROLE props_owner; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             ALTER DATABASE {q} OWNER TO props_owner;
             COMMENT ON DATABASE {q} IS 'the ''props'' database';
             REVOKE ALL ON DATABASE {q} FROM PUBLIC;
             GRANT CONNECT ON DATABASE {q} TO fixture_reader_x;
             ALTER DATABASE {q} CONNECTION LIMIT 7;
             ALTER DATABASE {q} SET work_mem = '7MB';
             ALTER DATABASE {q} SET search_path = \"$user\", public, extra;
             ALTER ROLE props_owner IN DATABASE {q} SET statement_timeout = '5min';
             ALTER DATABASE {q} SET default_transaction_read_only = on;",
            q = support::quote_ident(&src)
        )
        .replace(
            "GRANT CONNECT ON DATABASE",
            "DO $x$ BEGIN CREATE ROLE fixture_reader_x; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $x$; GRANT CONNECT ON DATABASE",
        ),
    );
    c.psql(&src, "SET default_transaction_read_only = off; CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2);");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    run_ok(support::backup_native(&src, &out).args(["--quiet"]));
    let target = c.unique_db("rt_props_dst");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--create", "--quiet"]),
    );
    let props = |db: &str| {
        c.psql(
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(datdba), datconnlimit, shobj_description(oid, 'pg_database'),
                        pg_encoding_to_char(encoding), datcollate, datctype,
                        replace(datacl::text, datname, 'X'),
                        (SELECT string_agg(coalesce(setrole::regrole::text, '-') || ':' || array_to_string(setconfig, ','), ';' ORDER BY setrole)
                           FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
                 FROM pg_database d WHERE datname = {}",
                support::quote_literal(db)
            ),
        )
    };
    assert_eq!(props(&src), props(&target));
    // Data went in before default_transaction_read_only took effect.
    assert_eq!(c.psql(&target, "SELECT count(*) FROM t"), "2");
}

#[test]
fn row_level_security_errors_instead_of_a_short_backup() {
    let c = cluster();
    let db = c.unique_db("rt_rls");
    c.create_db(&db);
    c.psql(
        &db,
        "DO $$ BEGIN CREATE ROLE rls_reader LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         CREATE TABLE secrets(id int, owner text);
         INSERT INTO secrets VALUES (1, 'rls_reader'), (2, 'someone_else');
         ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON secrets FOR SELECT USING (owner = current_user);
         GRANT SELECT ON secrets TO rls_reader;",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let o =
        support::run_fail(support::backup_native(&db, &out).args(["--quiet", "-U", "rls_reader"]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("row-level security"), "stderr: {stderr}");
    assert_ne!(manifest(&out)["status"], "complete");
}
