//! Objects the regression database does not leave behind (fixtures/odd_schemas.sql: contrib
//! types, partitions attached with another column order, dropped and generated columns, identity
//! sequences, row security, publications, 63-byte identifiers, OID-like names) round-trip through
//! a native backup on servers 15 and 18. The only difference allowed is the one stock pg_dump
//! makes too: the inheritance child whose parent gained a column has its columns reordered.

mod support;

use support::snapshot::{describe, differences, same_lines_reordered, snapshot};
use support::{cluster, cluster_of, dbbackup_for, run_ok, Cluster};

/// 18 only: a virtual generated column (new in 18) next to a stored one.
const VIRTUAL_18: &str = "
CREATE TABLE gen_virtual (a int, v int GENERATED ALWAYS AS (a + 1) VIRTUAL, s text GENERATED ALWAYS AS (a::text) STORED);
INSERT INTO gen_virtual (a) VALUES (1), (NULL), (41);";

fn native_round_trip(c: &Cluster) {
    let db = c.unique_db("odd");
    c.create_db(&db);
    c.load_fixture(&db, "odd_schemas.sql");
    if c.major() >= 18 {
        c.psql(&db, VIRTUAL_18);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    run_ok(
        dbbackup_for(c)
            .args(["backup", "single", &db, "--quiet", "--format", "native"])
            .args(["--parallel-tables", "4", "--out"])
            .arg(&dir),
    );
    let target = c.unique_db("odd_copy");
    run_ok(
        dbbackup_for(c)
            .args(["restore", "--quiet", "--create", "--jobs", "4", "--dbname", &target])
            .arg(&dir),
    );
    let diffs = differences(&snapshot(c, &db), &snapshot(c, &target));
    let reordered = "schema CREATE TABLE public.child_t (";
    let unexpected: Vec<_> = diffs
        .iter()
        .filter(|(name, a, b)| {
            !(name == reordered
                && same_lines_reordered(a.as_deref().unwrap_or(""), b.as_deref().unwrap_or("")))
        })
        .cloned()
        .collect();
    assert!(
        unexpected.is_empty(),
        "PostgreSQL {}: the native copy differs from the original (left):\n{}",
        c.major(),
        describe(&unexpected)
    );
    c.drop_db(&target);
    c.drop_db(&db);
}

#[test]
fn odd_schemas_round_trip_natively_on_15() {
    native_round_trip(cluster());
}

#[test]
fn odd_schemas_round_trip_natively_on_18() {
    native_round_trip(cluster_of(18));
}
