//! `dbbackup contents`: what a backup holds, checked against the manifest, the source database
//! (`SELECT count(*)`) and the stock tool (`pg_restore --list` of the same archive), for native,
//! custom and plain backups, encrypted ones with and without an identity, in `s3://`, by repository
//! name, in a cluster backup; and bad input (missing, corrupt, wrong key) as one line.
//!
//! One database of `fixtures/hard_types.sql` (quoted, mixed-case, non-ASCII and space-holding
//! schema and table names, partitions, inheritance, sequences, large objects) and its backups
//! are made once and shared by the tests.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use dbbackup::format::name_pattern::NamePattern;
use dbbackup::format::sql_requalify::quote_ident as pattern_ident;
use serde_json::Value;
use support::{cluster, dbbackup, manifest_json, quote_ident, run_fail, run_ok};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Source {
    db: String,
    /// Native, unencrypted.
    native: PathBuf,
    /// Native, encrypted to `key`.
    encrypted: PathBuf,
    /// Custom, unencrypted.
    custom: PathBuf,
    /// Custom, encrypted to `key`.
    custom_encrypted: PathBuf,
    /// Plain, unencrypted.
    plain: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

/// An age key pair made by `age-keygen`: (identity file, public key).
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.txt"));
    run_ok(Command::new("age-keygen").arg("-o").arg(&file));
    let out = run_ok(Command::new("age-keygen").arg("-y").arg(&file));
    (file, text(&out.stdout).trim().to_string())
}

fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let c = cluster();
        let db = c.unique_db("contents_src");
        c.create_db(&db);
        c.load_fixture(&db, "hard_types.sql");
        let root = c.root_dir.join(format!("contents-{db}"));
        std::fs::create_dir_all(&root).unwrap();
        let (key, public) = age_key(&root, "key");
        let (other_key, _) = age_key(&root, "other");
        let backup = |name: &str, args: &[&str]| {
            let dir = root.join(name);
            run_ok(
                dbbackup()
                    .args(["backup", "single", &db, "--quiet", "--out"])
                    .arg(&dir)
                    .args(["--chunk-size", "256KiB"])
                    .args(args),
            );
            dir
        };
        Source {
            native: backup("native", &["--format", "native"]),
            encrypted: backup("encrypted", &["--format", "native", "--recipient", &public]),
            custom: backup("custom", &["--format", "custom"]),
            custom_encrypted: backup(
                "custom_enc",
                &["--format", "custom", "--recipient", &public],
            ),
            plain: backup("plain", &["--format", "plain"]),
            db,
            key,
            other_key,
        }
    })
}

fn contents_json(args: &[&str], dir: impl AsRef<std::ffi::OsStr>) -> Value {
    let out = run_ok(dbbackup().arg("contents").arg(dir).arg("--json").args(args));
    serde_json::from_slice(&out.stdout).expect("contents --json prints one JSON document")
}

/// A table as contents prints it: `schema.name`, each part as `-t` takes it. Checked to be a
/// pattern that selects exactly that table, which is what the printed name is for.
fn printed_name(schema: &str, name: &str) -> String {
    let qualified = format!("{}.{}", pattern_ident(schema), pattern_ident(name));
    let pattern = NamePattern::relation(&qualified).unwrap();
    assert!(
        pattern.matches(schema, name),
        "{qualified} does not select {schema}.{name}"
    );
    qualified
}

/// (schema, name) → (rows, raw_bytes, stored_bytes) summed over the manifest's chunks.
fn manifest_tables(m: &Value) -> BTreeMap<(String, String), (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for t in m["tables"].as_array().unwrap() {
        let mut sums = (0, 0, 0);
        for u in t["units"].as_array().unwrap() {
            for c in u["chunks"].as_array().unwrap() {
                sums.0 += c["rows"].as_u64().unwrap();
                sums.1 += c["raw_bytes"].as_u64().unwrap();
                sums.2 += c["stored_bytes"].as_u64().unwrap();
            }
        }
        let key = (
            t["schema"].as_str().unwrap().to_string(),
            t["name"].as_str().unwrap().to_string(),
        );
        out.insert(key, sums);
    }
    out
}

fn json_tables(v: &Value) -> BTreeMap<(String, String), (u64, u64, u64)> {
    v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let key = (
                t["schema"].as_str().unwrap().to_string(),
                t["name"].as_str().unwrap().to_string(),
            );
            let n = |k: &str| t[k].as_u64().unwrap();
            (key, (n("rows"), n("raw_bytes"), n("stored_bytes")))
        })
        .collect()
}

/// The stock tool's listing: dump id → the rest of the line after the two OIDs.
fn tool_listing(listing: &str) -> BTreeMap<u64, String> {
    listing
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| {
            let (id, rest) = l.split_once("; ").unwrap();
            let rest = rest.splitn(3, ' ').nth(2).unwrap();
            (id.parse().unwrap(), rest.to_string())
        })
        .collect()
}

/// contents' entries, put back into the tool's line shape (the same map as [`tool_listing`]).
fn json_listing(v: &Value) -> BTreeMap<u64, String> {
    v["objects"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().map(str::to_string);
            let line = format!(
                "{} {} {} {}",
                s("kind").unwrap(),
                s("schema").unwrap_or_else(|| "-".into()),
                s("name").unwrap(),
                s("owner").unwrap_or_default()
            );
            (e["id"].as_u64().unwrap(), line)
        })
        .collect()
}

/// Checks that contents' objects are the tool's listing, entry for entry, and that the counts
/// per kind add up; and that every table of `tables` is a TABLE entry with its schema and name
/// (which a wrong split of a line would break).
fn assert_objects_match(v: &Value, listing: &str, tables: &[(String, String)]) {
    assert_eq!(v["objects"]["state"], "listed", "{v}");
    assert_eq!(json_listing(v), tool_listing(listing));
    let kinds = v["objects"]["kinds"].as_object().unwrap();
    let total: u64 = kinds.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(total as usize, tool_listing(listing).len());
    let entries = v["objects"]["entries"].as_array().unwrap();
    for (schema, name) in tables {
        assert!(
            entries.iter().any(|e| e["kind"] == "TABLE"
                && e["schema"].as_str() == Some(schema)
                && e["name"].as_str() == Some(name)),
            "table {schema}.{name} is not a TABLE entry of its schema"
        );
    }
}

fn pg_restore_list(file: &Path) -> String {
    let c = cluster();
    text(&run_ok(Command::new(c.bin("pg_restore")).arg("--list").arg(file)).stdout)
}

// ---------------------------------------------------------------------------------------------
// Native
// ---------------------------------------------------------------------------------------------

#[test]
fn every_manifest_table_is_printed_with_its_rows() {
    let s = source();
    let out = run_ok(dbbackup().arg("contents").arg(&s.native));
    let printed = text(&out.stdout);
    let tables = manifest_tables(&manifest_json(&s.native));
    assert!(tables.len() > 10, "{tables:?}");
    for ((schema, name), (rows, _, _)) in &tables {
        let qualified = printed_name(schema, name);
        let line = printed
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{qualified} ")))
            .unwrap_or_else(|| panic!("{qualified} is not printed:\n{printed}"));
        let rest = &line.trim_start()[qualified.len()..];
        assert_eq!(
            rest.split_whitespace().next(),
            Some(rows.to_string().as_str()),
            "{line}"
        );
    }
    assert!(printed.contains(&format!("database {}", s.db)), "{printed}");
    assert!(
        printed.contains("native, complete, consistent"),
        "{printed}"
    );
    assert!(printed.contains("sequences: "), "{printed}");
}

#[test]
fn json_rows_match_the_manifest_and_the_server() {
    let s = source();
    let c = cluster();
    let v = contents_json(&[], &s.native);
    let m = manifest_json(&s.native);
    assert_eq!(json_tables(&v), manifest_tables(&m));
    assert_eq!(v["tables_from"], "manifest");
    assert_eq!(v["database"], s.db.as_str());
    assert_eq!(v["strategy"], "native");
    assert_eq!(v["totals"], m["totals"]);
    assert_eq!(v["large_objects"]["count"], m["large_objects"]["count"]);
    assert_eq!(
        v["sequences"].as_array().unwrap().len(),
        m["sequences"].as_array().unwrap().len()
    );
    for ((schema, name), (rows, _, _)) in json_tables(&v) {
        let counted = c.psql(
            &s.db,
            &format!(
                "SELECT count(*) FROM ONLY {}.{}",
                quote_ident(&schema),
                quote_ident(&name)
            ),
        );
        assert_eq!(counted.trim(), rows.to_string(), "{schema}.{name}");
    }
}

#[test]
fn objects_are_those_pg_restore_lists_in_the_schema_archive() {
    let s = source();
    let v = contents_json(&[], &s.native);
    let listing = pg_restore_list(&s.native.join("schema/schema.dump"));
    let tables: Vec<(String, String)> = json_tables(&v).into_keys().collect();
    assert_objects_match(&v, &listing, &tables);
    // The human output has one line per kind with its count.
    let printed = text(&run_ok(dbbackup().arg("contents").arg(&s.native)).stdout);
    for (kind, n) in v["objects"]["kinds"].as_object().unwrap() {
        assert!(
            printed
                .lines()
                .any(|l| l.trim_start().starts_with(kind.as_str())
                    && l.split_whitespace().last() == Some(n.to_string().as_str())),
            "no line `{kind} {n}`:\n{printed}"
        );
    }
    // --verbose names them.
    let verbose = text(&run_ok(dbbackup().arg("contents").arg(&s.native).arg("-v")).stdout);
    assert!(
        verbose.contains("      \"Sales Data\" MixedCase"),
        "{verbose}"
    );
}

// ---------------------------------------------------------------------------------------------
// Custom
// ---------------------------------------------------------------------------------------------

#[test]
fn a_custom_backup_lists_its_tables_and_objects_from_the_stream() {
    let s = source();
    let v = contents_json(&[], &s.custom);
    let m = manifest_json(&s.custom);
    let pieces: Vec<String> = m["stream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            s.custom
                .join(p["file"].as_str().unwrap())
                .display()
                .to_string()
        })
        .collect();
    assert!(
        pieces.len() > 1,
        "the TOC is read across pieces: {pieces:?}"
    );
    let listing = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat \"$@\" | zstd -dc | {} --list",
                cluster().bin("pg_restore").display()
            ))
            .arg("sh")
            .args(&pieces),
    );
    // The native backup's tables are the data-bearing ones; all are TABLE entries here too.
    let native_tables: Vec<(String, String)> = json_tables(&contents_json(&[], &s.native))
        .into_keys()
        .collect();
    assert_objects_match(&v, &text(&listing.stdout), &native_tables);
    assert_eq!(v["tables_from"], "archive");
    assert!(v["tables"][0]["rows"].is_null(), "{v}");
    let printed = text(&run_ok(dbbackup().arg("contents").arg(&s.custom)).stdout);
    assert!(printed.lines().any(|l| l == "  app.orders"), "{printed}");
    assert!(
        !printed.contains(" rows,"),
        "a custom manifest counts no rows:\n{printed}"
    );
    let sequences = v["sequences"].as_array().unwrap();
    assert!(
        sequences
            .iter()
            .any(|q| q["schema"] == "app" && q["name"] == "shared_seq"),
        "{v}"
    );
}

#[test]
fn a_plain_backup_says_what_it_cannot_list() {
    let s = source();
    let v = contents_json(&[], &s.plain);
    assert_eq!(v["strategy"], "plain");
    assert_eq!(v["tables_from"], "none");
    assert_eq!(v["tables"].as_array().unwrap().len(), 0);
    assert!(
        v["sequences"].is_null() && v["large_objects"].is_null(),
        "{v}"
    );
    assert_eq!(v["objects"]["state"], "not_listed");
    assert_eq!(v["totals"], manifest_json(&s.plain)["totals"]);
    let printed = text(&run_ok(dbbackup().arg("contents").arg(&s.plain)).stdout);
    assert!(printed.contains("tables: not listed"), "{printed}");
    assert!(printed.contains("one SQL script"), "{printed}");
}

// ---------------------------------------------------------------------------------------------
// Encrypted
// ---------------------------------------------------------------------------------------------

#[test]
fn encrypted_without_identity_prints_tables_and_one_hint_with_identity_the_objects() {
    let s = source();
    let out = run_ok(
        dbbackup()
            .arg("contents")
            .arg(&s.encrypted)
            .env_remove("DBBACKUP_IDENTITY_FILE"),
    );
    let printed = text(&out.stdout);
    for (schema, name) in manifest_tables(&manifest_json(&s.encrypted)).keys() {
        let qualified = printed_name(schema, name);
        assert!(printed.contains(&format!("  {qualified} ")), "{printed}");
    }
    let hints: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains("--identity FILE"))
        .collect();
    assert_eq!(hints.len(), 1, "{printed}");
    assert!(printed.contains("encrypted"), "{printed}");
    let v = contents_json(&[], &s.encrypted);
    assert_eq!(v["objects"]["state"], "needs_identity");
    assert_eq!(
        json_tables(&v),
        manifest_tables(&manifest_json(&s.encrypted))
    );

    // With the identity: the same kinds as the unencrypted backup of the same database.
    let key = s.key.to_str().unwrap();
    let v = contents_json(&["--identity", key], &s.encrypted);
    let plain = contents_json(&[], &s.native);
    assert_eq!(v["objects"]["state"], "listed");
    assert_eq!(v["objects"]["kinds"], plain["objects"]["kinds"]);
    // A custom backup's objects are all in its encrypted stream.
    let v = contents_json(&["--identity", key], &s.custom_encrypted);
    assert_eq!(
        v["objects"]["kinds"],
        contents_json(&[], &s.custom)["objects"]["kinds"]
    );
    let without = run_ok(dbbackup().arg("contents").arg(&s.custom_encrypted));
    let printed = text(&without.stdout);
    assert_eq!(
        printed
            .lines()
            .filter(|l| l.contains("--identity FILE"))
            .count(),
        1,
        "{printed}"
    );
}

// ---------------------------------------------------------------------------------------------
// Where backups are: s3://, a repository name, a cluster backup
// ---------------------------------------------------------------------------------------------

#[test]
fn a_backup_in_s3_is_listed() {
    let s = source();
    let location = support::s3::s3().location("contents");
    support::s3::run_ok_secretless(
        support::s3::dbbackup_s3()
            .args(["backup", "single", &s.db, "--quiet", "--format", "native"])
            .args(["--out", &location]),
    );
    let out = support::s3::run_ok_secretless(
        support::s3::dbbackup_s3().args(["contents", &location, "--json"]),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = support::s3::manifest_of(&location);
    assert_eq!(json_tables(&v), manifest_tables(&m));
    assert_eq!(v["location"], location.as_str());
    assert_eq!(
        v["objects"]["kinds"],
        contents_json(&[], &s.native)["objects"]["kinds"]
    );
}

#[test]
fn a_repository_name_is_resolved() {
    let s = source();
    let repo = cluster().root_dir.join(format!("contents-repo-{}", s.db));
    run_ok(
        dbbackup()
            .args([
                "backup", "single", &s.db, "--quiet", "--format", "native", "--repo",
            ])
            .arg(&repo),
    );
    let latest = format!("{}@latest", s.db);
    let v = contents_json(&["--repo", repo.to_str().unwrap()], &latest);
    assert_eq!(v["database"], s.db.as_str());
    let dir = PathBuf::from(v["location"].as_str().unwrap());
    assert!(dir.starts_with(&repo), "{dir:?}");
    assert_eq!(json_tables(&v), manifest_tables(&manifest_json(&dir)));
}

#[test]
fn a_cluster_backup_lists_its_databases_and_shows_one() {
    let s = source();
    let c = cluster();
    let dir = c.root_dir.join(format!("contents-cluster-{}", s.db));
    run_ok(
        dbbackup()
            .args([
                "backup", "cluster", "--quiet", "--format", "native", "--out",
            ])
            .arg(&dir)
            .args(["--include-database", &s.db]),
    );
    let printed = text(&run_ok(dbbackup().arg("contents").arg(&dir)).stdout);
    assert!(
        printed
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{} ", s.db)) && l.contains("complete")),
        "{printed}"
    );
    let v = contents_json(&[], &dir);
    assert_eq!(v["kind"], "cluster");
    assert_eq!(v["databases"][0]["name"], s.db.as_str());
    let one = contents_json(&["--database", &s.db], &dir);
    let db_dir = PathBuf::from(one["location"].as_str().unwrap());
    assert_eq!(json_tables(&one), manifest_tables(&manifest_json(&db_dir)));
    assert_eq!(one["objects"]["state"], "listed");
    // A database the backup does not hold: usage, naming the ones it does.
    let o = one_line_failure(
        dbbackup()
            .arg("contents")
            .arg(&dir)
            .args(["--database", "no_such_db"]),
        2,
    );
    assert!(o.contains(&s.db), "{o}");
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// Runs `cmd`, expects exit status `code` and one line on stderr; returns it.
fn one_line_failure(cmd: &mut Command, code: i32) -> String {
    let o: Output = cmd.stdin(Stdio::null()).output().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("dbbackup: error: "), "{err}");
    err
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    let s = source();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let err = one_line_failure(dbbackup().arg("contents").arg(&missing), 1);
    assert!(err.contains("nothing-here"), "{err}");

    // A corrupt manifest.
    let corrupt = tmp.path().join("corrupt");
    copy_dir(&s.native, &corrupt);
    std::fs::write(
        corrupt.join("manifest.json"),
        b"{\"format_version\": 1, \"tool\": ",
    )
    .unwrap();
    let err = one_line_failure(dbbackup().arg("contents").arg(&corrupt), 1);
    assert!(err.contains("manifest.json"), "{err}");

    // A damaged schema archive: its checksum says so, naming the file.
    let damaged = tmp.path().join("damaged");
    copy_dir(&s.native, &damaged);
    let archive = damaged.join("schema/schema.dump");
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&archive, bytes).unwrap();
    let err = one_line_failure(dbbackup().arg("contents").arg(&damaged), 1);
    assert!(
        err.contains("schema.dump") && err.contains("SHA-256"),
        "{err}"
    );

    // The wrong identity.
    let err = one_line_failure(
        dbbackup()
            .arg("contents")
            .arg(&s.encrypted)
            .arg("--identity")
            .arg(&s.other_key),
        1,
    );
    assert!(err.contains("schema.dump"), "{err}");

    // --database on a single-database backup.
    one_line_failure(
        dbbackup()
            .arg("contents")
            .arg(&s.native)
            .args(["--database", "x"]),
        2,
    );
    run_fail(dbbackup().arg("contents"));
}

fn copy_dir(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn a_filtered_backup_shows_its_filters_and_only_its_tables() {
    let s = source();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("filtered");
    run_ok(
        dbbackup()
            .args(["backup", "single", &s.db, "--quiet", "--format", "native"])
            .args(["-n", "app", "--exclude-table-data", "app.secrets", "--out"])
            .arg(&dir),
    );
    let printed = text(&run_ok(dbbackup().arg("contents").arg(&dir)).stdout);
    assert!(
        printed.contains("filters: -n app --exclude-table-data app.secrets"),
        "{printed}"
    );
    let v = contents_json(&[], &dir);
    assert_eq!(v["filters"]["schema"], serde_json::json!(["app"]));
    assert_eq!(
        v["filters"]["exclude_table_data"],
        serde_json::json!(["app.secrets"])
    );
    let tables = json_tables(&v);
    assert!(!tables.is_empty());
    assert!(
        tables.keys().all(|(schema, _)| schema == "app"),
        "{tables:?}"
    );
    // The unfiltered backup records none.
    assert!(contents_json(&[], &s.native)["filters"].is_null());
}
