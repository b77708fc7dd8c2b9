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
            .args([
                "restore", "--quiet", "--create", "--jobs", "4", "--dbname", &target,
            ])
            .arg(&dir),
    );
    let diffs = differences(&snapshot(c, &db), &snapshot(c, &target));
    // pg_dump recreates the child with INHERITS (the parent's columns first): its rows must
    // still match by column name.
    let reordered = "schema CREATE TABLE public.child_t (";
    assert!(
        diffs.iter().any(|d| d.0 == reordered),
        "expected the columns of public.child_t reordered, as stock pg_dump does"
    );
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

/// reg* values copied as text name their object the way the backup session's search_path
/// makes them print: `app.target` prints as `target` where `app` is on the path (here the
/// database's own `search_path` setting). The restore session resolves the name with its own
/// path, so the backup must print every name schema-qualified (as pg_dump does, with an empty
/// search_path), or `target` silently becomes `public.target`.
#[test]
fn reg_values_copied_as_text_keep_their_schema_when_the_database_sets_a_search_path() {
    let c = cluster();
    let db = c.unique_db("regpath");
    c.create_db(&db);
    c.psql(
        &db,
        &format!(
            "CREATE SCHEMA app;
             CREATE TABLE app.target (a int);
             CREATE TABLE public.target (a int);
             CREATE TYPE app.mood AS ENUM ('a');
             CREATE TYPE public.mood AS ENUM ('b');
             CREATE TABLE refs (id int, r regclass, t regtype);
             INSERT INTO refs VALUES (1, 'app.target', 'app.mood'), (2, 'public.target', 'public.mood');
             ALTER DATABASE {} SET search_path = app, public;",
            support::quote_ident(&db)
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    run_ok(
        dbbackup_for(c)
            .args(["backup", "single", &db, "--quiet", "--format", "native"])
            .args(["--copy-format", "text", "--out"])
            .arg(&dir),
    );
    let target = c.unique_db("regpath_copy");
    run_ok(
        dbbackup_for(c)
            .args(["restore", "--quiet", "--create", "--dbname", &target])
            .arg(&dir),
    );
    let names = "SET search_path = pg_catalog; SELECT id, r, t FROM public.refs ORDER BY id";
    assert_eq!(
        c.psql(&db, names),
        "1|app.target|app.mood\n2|public.target|public.mood"
    );
    assert_eq!(c.psql(&target, names), c.psql(&db, names));
    c.drop_db(&target);
    c.drop_db(&db);
}
