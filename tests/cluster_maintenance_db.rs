//! The maintenance database ("postgres") is part of a cluster backup but cannot be dropped over
//! its own connection: a cluster restore restores into it as it stands. Its own test binary
//! (its own cluster), because it changes the shared "postgres" database.

mod support;

use support::{assert_same, cluster, dbbackup, run_fail, run_ok};

#[test]
fn cluster_restore_restores_into_the_existing_postgres_database() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE TABLE kept(id int PRIMARY KEY, v text);
         INSERT INTO kept SELECT g, 'v' || g FROM generate_series(1, 500) g;
         COMMENT ON DATABASE postgres IS 'maintenance';",
    );
    let before = c.fingerprint("postgres");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    run_ok(
        dbbackup()
            .args(["backup", "cluster", "--quiet", "--format", "native"])
            .args(["--include-database", "postgres", "--out"])
            .arg(&out),
    );
    // Not empty and no --clean: refused, untouched.
    c.psql("postgres", "INSERT INTO kept VALUES (501, 'extra')");
    let changed = c.fingerprint("postgres");
    let o = run_fail(dbbackup().arg("restore").arg(&out).arg("--quiet"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same(&changed, &c.fingerprint("postgres"));
    // With --clean: the backup's objects are replaced, the database itself stays.
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--clean", "--quiet"]),
    );
    assert_same(&before, &c.fingerprint("postgres"));
    assert_eq!(
        c.psql("postgres", "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'postgres'"),
        "maintenance"
    );
}
