//! Tests of the test harness itself (tests/support) and of the fixtures: the cluster starts,
//! fixtures load, and fingerprints are neither too lax (they notice data, sequence, large-object
//! and schema changes) nor too strict (a template copy and a pg_dump | psql round trip match).

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Stdio;
use support::{assert_same, cluster, Fingerprint};

/// A fresh database loaded with `fixtures/hard_types.sql`.
fn hard_types_db(prefix: &str) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.load_fixture(&db, "hard_types.sql");
    db
}

/// The message of the panic raised by `f` (which must panic).
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn cluster_starts_and_answers() {
    let c = cluster();
    assert_eq!(c.psql("postgres", "select 1"), "1");
    assert_eq!(c.superuser(), "postgres");
    assert!(c.bin("pg_dump").is_file() && c.bin("pg_restore").is_file() && c.bin("psql").is_file());
    assert_eq!(c.psql("postgres", "show server_encoding"), "UTF8");
    // Same cluster for every caller.
    assert!(std::ptr::eq(c, cluster()));
    // Errors are reported, not swallowed.
    let err = c
        .try_psql("postgres", "select * from no_such_table")
        .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    // Multi-statement scripts and any database name.
    let db = c.unique_db("Odd \"name\" ☃ = x");
    c.create_db(&db);
    assert_eq!(
        c.psql(
            &db,
            "create table t(x int); insert into t values (41); select x + 1 from t"
        ),
        "42"
    );
    // conninfo() works for external clients, whatever the database name.
    let out = std::process::Command::new(c.bin("psql"))
        .args([
            "-X",
            "-At",
            "-c",
            "select current_database()",
            "-d",
            &c.conninfo(&db),
        ])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .output()
        .expect("run psql");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        db,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.drop_db(&db);
    assert_eq!(
        c.psql(
            "postgres",
            &format!(
                "select count(*) from pg_database where datname = {}",
                support::quote_literal(&db)
            )
        ),
        "0"
    );
}

#[test]
fn dbbackup_command_is_wired_to_the_cluster() {
    let c = cluster();
    let cmd = support::dbbackup();
    let envs: Vec<(String, Option<String>)> = cmd
        .get_envs()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.map(|v| v.to_string_lossy().into_owned()),
            )
        })
        .collect();
    let get = |k: &str| {
        envs.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("PGHOST"),
        Some(Some(c.socket_dir.to_string_lossy().into_owned()))
    );
    assert_eq!(get("PGPORT"), Some(Some(c.port.to_string())));
    assert_eq!(get("PGUSER"), Some(Some("postgres".into())));
    assert_eq!(get("PGPASSWORD"), Some(None));
    assert_eq!(get("PGDATABASE"), Some(None));
    let path = get("PATH").flatten().expect("PATH set");
    assert!(path.starts_with(&*c.bin_dir.to_string_lossy()), "{path}");

    // run_ok / run_fail behave.
    support::run_ok(&mut std::process::Command::new("true"));
    support::run_fail(&mut std::process::Command::new("false"));
    let msg = panic_message(|| {
        support::run_ok(
            std::process::Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        );
    });
    assert!(
        msg.contains("out") && msg.contains("err") && msg.contains('3'),
        "{msg}"
    );
}

#[test]
fn fingerprint_is_stable_and_notices_every_kind_of_change() {
    let c = cluster();
    let db = hard_types_db("fp_changes");
    let base = c.fingerprint(&db);
    assert_same(&base, &c.fingerprint(&db));

    // Sanity: the fingerprint actually sees the fixture's objects.
    for table in [
        "app.wide",
        "app.zerocol",
        "app.measurements_default",
        "\"Sales Data\".\"Ünïcode \"\"quoted\"\" table\"",
        "app.measurement_stats",
        "app.unlogged_stuff",
        "app.vehicle",
        "app.truck",
        "app.secrets",
    ] {
        assert!(
            base.tables.contains_key(table),
            "{table} missing from {:?}",
            base.tables.keys()
        );
    }
    assert!(
        !base.tables.contains_key("app.measurements"),
        "partitioned parent has no rows of its own"
    );
    assert_eq!(base.tables["app.zerocol"].0, 3);
    assert_eq!(
        base.tables["app.vehicle"].0, 2,
        "FROM ONLY: parent rows only"
    );
    assert_eq!(base.tables["app.secrets"].0, 3, "RLS must not hide rows");
    assert_eq!(base.tables["app.empty_table"], (0, String::new()));
    assert_eq!(base.sequences["app.unused_seq"], (1, false));
    assert_eq!(base.sequences["app.shared_seq"], (105, true));
    assert_eq!(base.large_objects.len(), 3);
    let lo = &base.large_objects[2];
    assert_eq!(
        (lo.0, lo.3.as_deref()),
        (910003, Some("a commented large object"))
    );
    assert_eq!(base.large_objects[1].1, "fixture_writer");
    assert!(base.large_objects[1]
        .2
        .as_deref()
        .unwrap_or("")
        .contains("fixture_reader=r/"));
    assert!(!base.schema.contains("\\restrict") && !base.schema.contains("\n--"));
    assert!(
        base.schema.contains("OWNER TO fixture_writer") && base.schema.contains("GRANT SELECT")
    );

    // Each change must alter exactly the expected part.
    let check = |sql: &str, what: &str, part: fn(&Fingerprint, &Fingerprint) -> bool| {
        let before = c.fingerprint(&db);
        c.psql(&db, sql);
        let after = c.fingerprint(&db);
        assert!(before != after, "{what} not noticed");
        assert!(part(&before, &after), "{what}: unexpected part changed");
        let msg = panic_message(|| assert_same(&before, &after));
        assert!(msg.contains("differ"), "{msg}");
        msg
    };
    let msg = check(
        "UPDATE app.wide SET n = n + 1 WHERE id = 4",
        "row update",
        |a, b| {
            a.schema == b.schema
                && a.tables["app.wide"] != b.tables["app.wide"]
                && a.sequences == b.sequences
        },
    );
    assert!(msg.contains("app.wide"), "report names the table: {msg}");
    check("SELECT setval('app.shared_seq', 1000)", "setval", |a, b| {
        a.tables == b.tables && a.sequences != b.sequences && a.schema == b.schema
    });
    check(
        "SELECT setval('app.unused_seq', 1, true)",
        "is_called flip",
        |a, b| a.sequences != b.sequences,
    );
    check("SELECT lo_put(910002, 100, '\\x00')", "lo_put", |a, b| {
        a.large_objects[1].4 != b.large_objects[1].4 && a.tables == b.tables
    });
    check(
        "COMMENT ON LARGE OBJECT 910001 IS 'now commented'",
        "large object comment",
        |a, b| a.large_objects != b.large_objects,
    );
    let msg = check(
        "COMMENT ON TABLE app.empty_table IS 'changed'",
        "comment on table",
        |a, b| a.schema != b.schema && a.tables == b.tables,
    );
    assert!(
        msg.contains("+ COMMENT ON TABLE app.empty_table IS 'changed';"),
        "diff snippet: {msg}"
    );
    check(
        "INSERT INTO app.zerocol DEFAULT VALUES",
        "row in zero-column table",
        |a, b| a.tables["app.zerocol"].0 + 1 == b.tables["app.zerocol"].0,
    );
    check(
        "UPDATE app.secrets SET secret = 'x' WHERE id = 2",
        "RLS-hidden row",
        |a, b| a.tables != b.tables,
    );
    check(
        "GRANT SELECT ON app.empty_table TO fixture_writer",
        "privilege",
        |a, b| a.schema != b.schema,
    );
    c.drop_db(&db);
}

#[test]
fn template_copy_has_the_same_fingerprint() {
    let c = cluster();
    let a = hard_types_db("tpl_src");
    let b = c.unique_db("tpl_copy");
    c.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {} TEMPLATE {}",
            support::quote_ident(&b),
            support::quote_ident(&a)
        ),
    );
    assert_same(&c.fingerprint(&a), &c.fingerprint(&b));
    c.drop_db(&a);
    c.drop_db(&b);
}

#[test]
fn pg_dump_round_trip_has_the_same_fingerprint() {
    let c = cluster();
    let src = hard_types_db("rt_src");
    let dst = c.unique_db("rt_dst");
    c.create_db(&dst);

    let dump = c
        .client_command("pg_dump")
        .args(["-d", &src])
        .stdin(Stdio::null())
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    c.psql(&dst, &String::from_utf8(dump.stdout).expect("utf8 dump"));

    let (a, b) = (c.fingerprint(&src), c.fingerprint(&dst));
    assert_same(&a, &b);
    // The trigger bumps `updated` on insert: data restored before the trigger is unchanged.
    assert_eq!(
        c.psql(
            &dst,
            "SELECT string_agg(updated::text, ',' ORDER BY id) FROM app.audited"
        ),
        c.psql(
            &src,
            "SELECT string_agg(updated::text, ',' ORDER BY id) FROM app.audited"
        )
    );
    c.drop_db(&src);
    c.drop_db(&dst);
}

#[test]
fn big_table_fixture_loads() {
    let c = cluster();
    let db = c.unique_db("big");
    c.create_db(&db);
    c.load_fixture(&db, "big_table.sql");
    assert_eq!(c.psql(&db, "SELECT count(*) FROM big_events"), "300000");
    let avg: f64 = c
        .psql(&db, "SELECT avg(pg_column_size(e.*)) FROM big_events e")
        .parse()
        .unwrap();
    assert!((50.0..=90.0).contains(&avg), "average row size {avg}");
    assert_eq!(
        c.psql(
            &db,
            "SELECT count(*), min(length(data)), max(length(data)) FROM big_blobs"
        ),
        "40|262144|262144"
    );
    let fp = c.fingerprint(&db);
    assert_eq!(fp.tables["public.big_events"].0, 300000);
    assert_eq!(fp.tables["public.big_blobs"].0, 40);
    c.drop_db(&db);
}

/// Two S3 stores run side by side, as the stores of two test binaries do when
/// `scripts/test.sh` runs binaries at once: each listens on its own ports only (SeaweedFS opens
/// some fixed ports of its own unless told otherwise, and a second store then exits).
#[test]
fn two_s3_stores_run_side_by_side() {
    let a = support::s3::own_s3();
    let b = support::s3::own_s3();
    let (la, lb) = (a.location("side-a"), b.location("side-b"));
    a.write(&la, "object", b"in a");
    b.write(&lb, "object", b"in b");
    assert_eq!(a.read(&la, "object"), b"in a");
    assert_eq!(b.read(&lb, "object"), b"in b");
    assert_eq!(a.list(&lb), Vec::<String>::new(), "b's object is not in a");
}
