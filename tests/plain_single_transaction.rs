//! A plain restore is all or nothing, large objects included (issue 17, failure 6). pg_dump's
//! plain script wraps the large objects' data in its own `BEGIN; ... COMMIT;`; inside psql's
//! `--single-transaction` that COMMIT committed everything before it, so an error later left
//! tables, rows and large objects behind.

mod support;

use support::{cluster, cluster_of, dbbackup_for, run_fail, run_ok, Cluster};

/// pg_dump 15 writes one `BLOBS` entry (`Name: BLOBS`), 17 and newer one per group of objects
/// (`Name: 16401..16402`).
#[test]
fn a_failing_plain_restore_with_large_objects_commits_nothing_15() {
    failing_plain_restore_commits_nothing(cluster());
}

#[test]
fn a_failing_plain_restore_with_large_objects_commits_nothing_18() {
    failing_plain_restore_commits_nothing(cluster_of(18));
}

fn failing_plain_restore_commits_nothing(c: &Cluster) {
    let src = c.unique_db("plo_src");
    c.create_db(&src);
    c.psql(
        &src,
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
         CREATE INDEX items_v_idx ON items (v);
         SELECT lo_from_bytea(0, convert_to(repeat('large object ', 5000), 'UTF8'));
         SELECT lo_from_bytea(0, '');",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    run_ok(
        dbbackup_for(c)
            .args([
                "backup", "single", "--format", "plain", "--quiet", &src, "--out",
            ])
            .arg(&out),
    );
    // The target holds a composite type named like the backup's post-data index: everything
    // up to that CREATE INDEX (tables, rows, large objects, the primary key) goes in first.
    let target = c.unique_db("plo_dst");
    c.create_db(&target);
    c.psql(&target, "CREATE TYPE items_v_idx AS (x int);");
    let o = run_fail(
        dbbackup_for(c)
            .args(["restore", "--quiet", "--dbname", &target])
            .arg(&out),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("items_v_idx"), "{stderr}");
    assert_eq!(
        c.psql(
            &target,
            "SELECT (SELECT count(*) FROM pg_class WHERE relname IN ('items', 'items_pkey'))
                 || ',' || (SELECT count(*) FROM pg_largeobject_metadata)"
        ),
        "0,0",
        "the failed restore left objects behind"
    );
}
