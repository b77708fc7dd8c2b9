//! An extension's configuration tables and sequences (`pg_extension_config_dump`) come back
//! from a native backup as from pg_dump: the user's rows the condition selects appended to the
//! extension's own, a row the condition excludes left out, the sequence's position kept.
//!
//! The extension is a real one, installed by the test into the server's extension directory
//! (control file and script, the way any extension is packaged): it needs no download, and its
//! script states exactly which rows are the extension's and which condition selects the
//! user's (PostGIS's `spatial_ref_sys` works the same way, with 8,500 rows of its own).

mod support;

use std::path::{Path, PathBuf};

use support::{cluster, dbbackup, run_ok};

const EXTENSION: &str = "dbbackup_cfgtest";

const CONTROL: &str = "comment = 'dbbackup test: configuration tables'
default_version = '1.0'
relocatable = false
";

/// Two tables: one with the extension's own rows and a condition that selects the user's, one
/// without a condition (every row is the user's), and a sequence.
const SCRIPT: &str = "
CREATE TABLE cfg_settings(id int PRIMARY KEY, name text NOT NULL, builtin bool NOT NULL DEFAULT false);
INSERT INTO cfg_settings VALUES (1, 'shipped one', true), (2, 'shipped two', true);
SELECT pg_catalog.pg_extension_config_dump('cfg_settings', 'WHERE NOT builtin');
CREATE TABLE cfg_all(id int, note text);
SELECT pg_catalog.pg_extension_config_dump('cfg_all', '');
CREATE SEQUENCE cfg_seq;
SELECT pg_catalog.pg_extension_config_dump('cfg_seq', '');
CREATE TABLE cfg_internal(id int);
INSERT INTO cfg_internal VALUES (1);
";

/// Writes the extension's files into the server's extension directory (as root, which the
/// tests run as); the same bytes every time, so concurrent test binaries agree.
fn install_extension() {
    let c = cluster();
    let share = c.psql(
        "postgres",
        "SELECT setting FROM pg_catalog.pg_config WHERE name = 'SHAREDIR'",
    );
    let dir = PathBuf::from(share).join("extension");
    write_if_changed(&dir.join(format!("{EXTENSION}.control")), CONTROL);
    write_if_changed(&dir.join(format!("{EXTENSION}--1.0.sql")), SCRIPT);
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap();
}

/// What must come back, as text: both configuration tables' rows and the sequence's state.
fn contents(db: &str) -> String {
    cluster().psql(
        db,
        "SELECT (SELECT string_agg(format('%s/%s/%s', id, name, builtin), ' ' ORDER BY id) FROM cfg_settings)
             || ' | ' || (SELECT string_agg(format('%s/%s', id, note), ' ' ORDER BY id) FROM cfg_all)
             || ' | ' || (SELECT last_value || '/' || is_called FROM cfg_seq)
             || ' | ' || (SELECT count(*) FROM cfg_internal)",
    )
}

fn restore(out: &Path, target: &str, extra: &[&str]) {
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(out)
            .args(["--dbname", target, "--jobs", "2", "--quiet"])
            .args(extra),
    );
}

#[test]
fn user_rows_of_configuration_tables_round_trip_natively_as_with_pg_dump() {
    install_extension();
    let c = cluster();
    let db = c.unique_db("extcfg_src");
    c.create_db(&db);
    c.psql(
        &db,
        &format!(
            "CREATE EXTENSION {EXTENSION};
             INSERT INTO cfg_settings VALUES (10, 'added by the user', false);
             -- A row the condition excludes: pg_dump leaves it out too.
             INSERT INTO cfg_settings VALUES (11, 'user row marked builtin', true);
             INSERT INTO cfg_all VALUES (1, 'first'), (2, 'second');
             SELECT nextval('cfg_seq') FROM generate_series(1, 5);"
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let native = tmp.path().join("native");
    run_ok(support::backup_native(&db, &native).arg("--quiet"));
    let custom = tmp.path().join("custom");
    run_ok(
        dbbackup()
            .args([
                "backup", "single", "--format", "custom", &db, "--quiet", "--out",
            ])
            .arg(&custom),
    );

    // The manifest records each configuration table with its extension and condition.
    let m = support::manifest_json(&native);
    let table = |name: &str| {
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} is backed up: {m}"))
            .clone()
    };
    assert_eq!(
        table("cfg_settings")["extension_config"],
        serde_json::json!({"extension": EXTENSION, "filter": "WHERE NOT builtin"})
    );
    assert_eq!(table("cfg_settings")["units"][0]["chunks"][0]["rows"], 1);
    assert_eq!(
        table("cfg_all")["extension_config"],
        serde_json::json!({"extension": EXTENSION})
    );
    assert!(
        !m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "cfg_internal"),
        "other extension members are the extension's own"
    );
    assert!(
        m["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "cfg_seq"),
        "{}",
        m["sequences"]
    );
    run_ok(dbbackup().arg("verify").arg(&native));

    let from_native = c.unique_db("extcfg_native");
    restore(&native, &from_native, &["--create"]);
    let from_custom = c.unique_db("extcfg_custom");
    restore(&custom, &from_custom, &["--create"]);
    let want = contents(&from_custom);
    assert_eq!(
        want,
        "1/shipped one/t 2/shipped two/t 10/added by the user/f | 1/first 2/second | 5/true | 1",
        "what pg_dump gives back"
    );
    assert_eq!(contents(&from_native), want);

    // Restored again over itself with --clean: the extension is made again with its own rows,
    // and the user's are appended once.
    restore(&native, &from_native, &["--clean"]);
    assert_eq!(contents(&from_native), want);

    // A drill counts the configuration table's rows as the extension's plus the backup's.
    run_ok(dbbackup().arg("drill").arg(&native).args([
        "--scratch-name",
        &c.unique_db("extcfg_drill"),
        "--quiet",
    ]));
    for d in [&from_native, &from_custom, &db] {
        c.drop_db(d);
    }
}
