//! The native schema archive: one pg_dump archive of pre-data and post-data (so that
//! pg_restore's parallel post-data sees the TABLE entries its statements lock), restored
//! section by section; and backups of earlier versions, with one archive per section, still
//! restore.

mod support;

use std::path::Path;
use std::process::Stdio;

use sha2::{Digest, Sha256};
use support::{assert_same, cluster, dbbackup, run_ok};

const SOURCE: &str = "
CREATE TABLE parent (id int PRIMARY KEY, name text);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent, v text);
CREATE INDEX child_v ON child (v);
CREATE MATERIALIZED VIEW child_count AS SELECT count(*) AS n FROM child;
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 100) g;
INSERT INTO child SELECT g, 1 + g % 100, md5(g::text) FROM generate_series(1, 2000) g;
REFRESH MATERIALIZED VIEW child_count;
SELECT lo_from_bytea(0, 'large object');
COMMENT ON TABLE child IS 'the child';
";

fn source(prefix: &str) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.psql(&db, SOURCE);
    db
}

fn restore_and_compare(src: &str, out: &Path) {
    let c = cluster();
    run_ok(dbbackup().arg("verify").arg(out));
    let target = c.unique_db("sa_dst");
    run_ok(
        dbbackup()
            .args([
                "restore", "--quiet", "--create", "--jobs", "4", "--dbname", &target,
            ])
            .arg(out),
    );
    assert_same(&c.fingerprint(src), &c.fingerprint(&target));
    c.drop_db(&target);
}

/// `pg_restore --list` of an archive.
fn toc(archive: &Path) -> String {
    let out = cluster()
        .client_command("pg_restore")
        .arg("--list")
        .arg(archive)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn one_archive_holds_both_sections_and_tables() {
    let src = source("sa_one");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    run_ok(support::backup_native(&src, &out).arg("--quiet"));
    let m = support::manifest_json(&out);
    let schema = m["schema"].as_array().unwrap();
    assert_eq!(schema.len(), 1, "{schema:?}");
    assert_eq!(schema[0]["section"], "pre-data,post-data");
    assert_eq!(schema[0]["file"], "schema/schema.dump");
    let list = toc(&out.join("schema/schema.dump"));
    for entry in [
        " TABLE public parent ",
        " TABLE public child ",
        " FK CONSTRAINT public child child_parent_id_fkey ",
        " INDEX public child_v ",
        " MATERIALIZED VIEW DATA public child_count ",
    ] {
        assert!(list.contains(entry), "{entry:?} missing in\n{list}");
    }
    assert!(!list.contains(" TABLE DATA "), "{list}");
    restore_and_compare(&src, &out);
}

/// A backup written by an earlier version: `schema/pre-data.dump` and `schema/post-data.dump`
/// (`pg_dump --section=...` each), listed as sections `pre-data` and `post-data`.
#[test]
fn backups_with_one_archive_per_section_still_restore() {
    let c = cluster();
    let src = source("sa_two");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    run_ok(support::backup_native(&src, &out).arg("--quiet"));
    std::fs::remove_file(out.join("schema/schema.dump")).unwrap();
    let mut files = Vec::new();
    for section in ["pre-data", "post-data"] {
        let rel = format!("schema/{section}.dump");
        let path = out.join(&rel);
        run_ok(
            c.client_command("pg_dump")
                .args(["--format=custom", &format!("--section={section}"), "-f"])
                .arg(&path)
                .arg(&src),
        );
        let bytes = std::fs::read(&path).unwrap();
        files.push(serde_json::json!({
            "section": section,
            "file": rel,
            "codec": "none",
            "rows": 0,
            "raw_bytes": bytes.len(),
            "stored_bytes": bytes.len(),
            "sha256": hex::encode(Sha256::digest(&bytes)),
        }));
    }
    let mut m = support::manifest_json(&out);
    m["schema"] = serde_json::Value::Array(files);
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    restore_and_compare(&src, &out);
}
