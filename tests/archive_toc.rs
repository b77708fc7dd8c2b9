//! The custom-format archive reader and the TOC selection against real pg_dump archives: for
//! every server major (13 to 18) the fixtures are dumped with `pg_dump -Fc` (Debian's 15 for
//! servers up to 15, archive version 1.14; the client 18 tools above, 1.16), `read_toc` must
//! agree with `pg_restore -l` of the same archive on every entry, and a table selection's `-L`
//! list must restore with real `pg_restore --exit-on-error` into a database that has only the
//! schemas.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dbbackup::format::archive_toc::{read_toc, Toc};
use support::{cluster_of, Cluster};

/// A database of `c` loaded with `fixtures`, dumped with `pg_dump -Fc` into a temp dir.
struct Dumped {
    db: String,
    archive: PathBuf,
    _dir: tempfile::TempDir,
}

fn dump(c: &Cluster, prefix: &str, fixtures: &[&str]) -> Dumped {
    let db = c.unique_db(prefix);
    c.create_db(&db);
    for f in fixtures {
        c.load_fixture(&db, f);
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("db.dump");
    let out = c
        .client_command("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&archive)
        .arg("-d")
        .arg(c.conninfo(&db))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Dumped {
        db,
        archive,
        _dir: dir,
    }
}

/// The archive's TOC and how many bytes `read_toc` consumed.
fn toc_of(archive: &Path) -> (Toc, u64) {
    let bytes = std::fs::read(archive).unwrap();
    let mut r = &bytes[..];
    let toc = read_toc(&mut r).unwrap_or_else(|e| panic!("read_toc {}: {e}", archive.display()));
    (toc, (bytes.len() - r.len()) as u64)
}

/// `pg_restore -l`'s entry lines by dump id.
fn pg_restore_list(c: &Cluster, archive: &Path) -> BTreeMap<i32, String> {
    let out = c
        .client_command("pg_restore")
        .arg("-l")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore -l failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| (l.split(';').next().unwrap().parse().unwrap(), l.to_string()))
        .collect()
}

/// Every entry `pg_restore -l` lists is read with the same id, catalog ids, desc, namespace,
/// tag and owner (the whole line equal), and the only entries it does not list are the ones
/// pg_restore never lists without `--create` (encoding, settings, the database itself).
fn assert_same_as_pg_restore(c: &Cluster, d: &Dumped, toc: &Toc) {
    let listed = pg_restore_list(c, &d.archive);
    assert!(listed.len() > 20, "too few entries: {listed:?}");
    let ours: BTreeMap<i32, _> = toc.entries.iter().map(|e| (e.dump_id, e)).collect();
    for (id, line) in &listed {
        let e = ours
            .get(id)
            .unwrap_or_else(|| panic!("entry {id} missing: {line}"));
        assert_eq!(&e.list_line(), line, "entry {id}");
    }
    for e in &toc.entries {
        if !listed.contains_key(&e.dump_id) {
            let special = ["ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE"];
            let database_level = e.tag.starts_with("DATABASE ")
                || e.desc == "DATABASE PROPERTIES"
                || special.contains(&e.desc.as_str());
            assert!(database_level, "read but not listed: {}", e.list_line());
        }
    }
}

fn list_agrees(major: u32) {
    let c = cluster_of(major);
    let mut fixtures = vec!["hard_types.sql"];
    if major >= 15 {
        // FOR TABLES IN SCHEMA and column lists in publications are 15's.
        fixtures.push("odd_schemas.sql");
    }
    let d = dump(c, "toc_list", &fixtures);
    let (toc, consumed) = toc_of(&d.archive);
    let want_minor = if major <= 15 { 14 } else { 16 };
    assert_eq!(toc.archive_version, (1, want_minor, 0));
    assert_eq!(toc.db_name, d.db);
    assert_same_as_pg_restore(c, &d, &toc);
    // The reader stopped where the data begins: pg_dump writes the first data block right
    // after the TOC, and the offsets it records are file positions.
    let first_data = toc.entries.iter().filter_map(|e| e.data_offset).min();
    assert_eq!(first_data, Some(consumed));
}

#[test]
fn toc_agrees_with_pg_restore_list_13() {
    list_agrees(13);
}

#[test]
fn toc_agrees_with_pg_restore_list_14() {
    list_agrees(14);
}

#[test]
fn toc_agrees_with_pg_restore_list_15() {
    list_agrees(15);
}

#[test]
fn toc_agrees_with_pg_restore_list_16() {
    list_agrees(16);
}

#[test]
fn toc_agrees_with_pg_restore_list_17() {
    list_agrees(17);
}

#[test]
fn toc_agrees_with_pg_restore_list_18() {
    list_agrees(18);
}
