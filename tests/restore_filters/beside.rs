//! `--as` / `--into-schema`: one table restored beside the live ones (issue 19 §4).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::support::{self, cluster, dbbackup, run_fail, run_ok, Cluster};
use super::{dump, exists, restore, rows, text};

const SHOP: &str = "
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers,
    amount numeric(10,2) NOT NULL CHECK (amount >= 0),
    placed timestamptz NOT NULL DEFAULT '2026-01-01',
    note text
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX by_placed ON orders (placed);
CREATE STATISTICS orders_stats ON customer_id, amount FROM orders;
COMMENT ON TABLE orders IS 'every order';
CREATE TABLE order_items (order_id bigint REFERENCES orders ON DELETE CASCADE, sku text, PRIMARY KEY (order_id, sku));
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    at date NOT NULL,
    what text,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX events_what ON events (what);
INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 50) g;
INSERT INTO orders (customer_id, amount, placed, note)
    SELECT 1 + g % 50, g % 1000, timestamptz '2026-01-01' + g * interval '1 minute', repeat('n', g % 200)
    FROM generate_series(1, 30000) g;
INSERT INTO order_items SELECT id, 'sku' || id FROM orders WHERE id % 3 = 0;
INSERT INTO events (at, what) SELECT date '2025-06-01' + g % 400, 'e' || g FROM generate_series(1, 3000) g;
";

/// The shop source (a template for the live databases) and its native backup, orders split in
/// several chunks so that they load in parallel.
pub(super) struct Shop {
    pub(super) src: String,
    backup: PathBuf,
    dir: tempfile::TempDir,
}

pub(super) fn shop() -> &'static Shop {
    static SHOP_: OnceLock<Shop> = OnceLock::new();
    SHOP_.get_or_init(|| {
        let c = cluster();
        let src = c.unique_db("rf_shop");
        c.create_db(&src);
        c.psql(&src, SHOP);
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("shop");
        run_ok(
            dbbackup()
                .args([
                    "backup",
                    "single",
                    "-q",
                    "--format",
                    "native",
                    "--chunk-size",
                    "256KiB",
                ])
                .args(["--split-tables-larger-than", "512KiB", &src, "--out"])
                .arg(&backup),
        );
        let m = support::manifest_json(&backup);
        let orders = m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "orders")
            .unwrap();
        let chunks: usize = orders["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["chunks"].as_array().unwrap().len())
            .sum();
        assert!(
            chunks >= 3,
            "orders should span several chunks, has {chunks}"
        );
        Shop { src, backup, dir }
    })
}

/// A live copy of the shop whose orders were all deleted.
pub(super) fn live_shop(c: &Cluster) -> String {
    let db = c.unique_db("rf_live");
    c.psql(
        "postgres",
        &format!("CREATE DATABASE {db} TEMPLATE {}", shop().src),
    );
    c.psql(&db, "DELETE FROM orders");
    db
}

pub(super) fn no_scratch_left(c: &Cluster, db: &str) {
    assert_eq!(
        c.psql(
            db,
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'dbbackup\\_restore%'"
        ),
        "0",
        "a scratch schema was left behind"
    );
}

pub(super) fn names(c: &Cluster, db: &str, sql: &str) -> Vec<String> {
    c.psql(db, sql).lines().map(str::to_string).collect()
}

#[test]
fn as_restores_last_nights_orders_beside_the_live_table() {
    let c = cluster();
    let s = shop();
    let db = live_shop(c);
    let before = dump(c, &db, &[]);
    // Another session keeps writing to the live table (its transaction open) meanwhile.
    let writer = c.hold_session(
        &db,
        "BEGIN; INSERT INTO orders (customer_id, amount) VALUES (1, 1); SELECT pg_sleep(600)",
    );
    c.wait_for(
        &db,
        "SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = l.relation WHERE r.relname = 'orders' AND l.mode = 'RowExclusiveLock'",
        "1",
        60,
    );
    let o = restore(
        &s.backup,
        &db,
        &["--table", "public.orders", "--as", "public.orders_restored"],
    );
    let mut writer = writer;
    c.psql(
        &db,
        &format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"),
    );
    let _ = writer.kill();
    let _ = writer.wait();
    let out = text(&o.stdout);
    assert!(out.contains("created: public.orders_restored"), "{out}");
    assert!(
        out.contains("public.orders.orders_customer_id_fkey -> public.customers"),
        "left-out foreign key listed: {out}"
    );
    assert_eq!(
        rows(c, &s.src, "public.orders"),
        rows(c, &db, "public.orders_restored")
    );
    assert_eq!(
        c.psql(&db, "SELECT count(*) FROM orders"),
        "0",
        "the live table untouched"
    );
    // Nothing else changed: the schema without the new table, its sequence and its statistics
    // object (which pg_dump 15 dumps with its schema, not its table) is as before.
    let without_stats: String = dump(c, &db, &["-T", "public.orders_restored*"])
        .lines()
        .filter(|l| !l.contains("orders_restored_stats"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(before, without_stats);
    assert_eq!(
        names(c, &db, "SELECT stxnamespace::regnamespace || '.' || stxname FROM pg_statistic_ext WHERE stxrelid = 'orders_restored'::regclass"),
        ["public.orders_restored_stats"]
    );
    assert_eq!(
        names(
            c,
            &db,
            "SELECT indexname FROM pg_indexes WHERE tablename = 'orders_restored' ORDER BY 1"
        ),
        [
            "orders_restored_by_placed",
            "orders_restored_customer_idx",
            "orders_restored_pkey"
        ]
    );
    assert_eq!(
        names(c, &db, "SELECT conname FROM pg_constraint WHERE conrelid = 'orders_restored'::regclass AND contype <> 'n' ORDER BY 1"),
        ["orders_restored_amount_check", "orders_restored_pkey"]
    );
    // Its own sequence, with the backed-up value, not the live table's.
    assert_eq!(
        c.psql(&db, "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'orders_restored'::regclass AND adnum = 1"),
        "nextval('orders_restored_id_seq'::regclass)"
    );
    assert_eq!(
        c.psql(&s.src, "SELECT last_value FROM orders_id_seq"),
        c.psql(&db, "SELECT last_value FROM orders_restored_id_seq")
    );
    assert_eq!(
        c.psql(&db, "SELECT obj_description('orders_restored'::regclass)"),
        "every order"
    );
    no_scratch_left(c, &db);

    // The name is taken now: refused, nothing left behind.
    let after = dump(c, &db, &[]);
    let o = run_fail(
        dbbackup()
            .args([
                "restore",
                "-d",
                &db,
                "--table",
                "orders",
                "--as",
                "orders_restored",
            ])
            .arg(&s.backup),
    );
    let err = text(&o.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(after, dump(c, &db, &[]));
    no_scratch_left(c, &db);

    // --as with --create/--clean, or a pattern of several tables: refused.
    let o = run_fail(
        dbbackup()
            .args(["restore", "-d", &db, "--clean", "-t", "orders", "--as", "x"])
            .arg(&s.backup),
    );
    assert!(
        text(&o.stderr).contains("--create/--clean"),
        "{}",
        text(&o.stderr)
    );
    let o = run_fail(
        dbbackup()
            .args(["restore", "-d", &db, "-t", "order*", "--as", "x"])
            .arg(&s.backup),
    );
    assert!(
        text(&o.stderr).contains("matches 2 tables"),
        "{}",
        text(&o.stderr)
    );

    // --into-schema: names kept, the schema created.
    restore(
        &s.backup,
        &db,
        &["-t", "orders", "--into-schema", "restored"],
    );
    assert_eq!(
        rows(c, &s.src, "public.orders"),
        rows(c, &db, "restored.orders")
    );
    assert_eq!(
        names(
            c,
            &db,
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'restored' ORDER BY 1"
        ),
        ["by_placed", "orders_customer_idx", "orders_pkey"]
    );
    assert_eq!(after, dump(c, &db, &["-N", "restored"]));
    no_scratch_left(c, &db);
}

#[test]
fn as_restores_a_partitioned_table_with_its_partitions_renamed() {
    let c = cluster();
    let s = shop();
    let db = live_shop(c);
    let before = dump(c, &db, &[]);
    restore(&s.backup, &db, &["-t", "events", "--as", "events_old"]);
    for (old, new) in [
        ("events_2025", "events_old_2025"),
        ("events_2026", "events_old_2026"),
    ] {
        assert_eq!(rows(c, &s.src, old), rows(c, &db, new), "{new}");
    }
    assert_eq!(
        names(c, &db, "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'events_old'::regclass ORDER BY 1"),
        ["events_old_2025", "events_old_2026"]
    );
    assert_eq!(before, dump(c, &db, &["-T", "public.events_old*"]));
    let idx = names(
        c,
        &db,
        "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'events_old%' ORDER BY 1",
    );
    assert!(idx.iter().all(|i| i.starts_with("events_old")), "{idx:?}");
    no_scratch_left(c, &db);
}

#[test]
fn a_failure_in_the_middle_leaves_no_scratch_schema_and_no_table() {
    let c = cluster();
    let s = shop();
    let db = live_shop(c);
    let before = dump(c, &db, &[]);
    // A copy of the backup with one chunk of orders damaged (its last byte flipped).
    let copy = s.dir.path().join("damaged");
    run_ok(Command::new("cp").arg("-r").arg(&s.backup).arg(&copy));
    let m = support::manifest_json(&copy);
    let orders = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    let file = orders["units"][0]["chunks"][0]["file"].as_str().unwrap();
    let path = copy.join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let o = run_fail(
        dbbackup()
            .args([
                "restore",
                "-d",
                &db,
                "-t",
                "orders",
                "--as",
                "orders_restored",
            ])
            .arg(&copy),
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("scratch schema") && err.contains("was dropped"),
        "{err}"
    );
    assert!(!exists(c, &db, "public.orders_restored"));
    no_scratch_left(c, &db);
    assert_eq!(before, dump(c, &db, &[]));
}

#[test]
fn as_works_from_one_database_of_a_cluster_backup() {
    let c = cluster();
    let s = shop();
    let out = s.dir.path().join("cluster");
    run_ok(
        dbbackup()
            .args([
                "backup",
                "cluster",
                "-q",
                "--format",
                "native",
                "--include-database",
                &s.src,
                "--out",
            ])
            .arg(&out),
    );
    let db = live_shop(c);
    // Without --database: refused with one line.
    let o = run_fail(
        dbbackup()
            .args([
                "restore",
                "-d",
                &db,
                "-t",
                "orders",
                "--as",
                "orders_restored",
            ])
            .arg(&out),
    );
    assert!(
        text(&o.stderr).contains("one --database NAME"),
        "{}",
        text(&o.stderr)
    );
    restore(
        &out,
        &db,
        &[
            "--database",
            &s.src,
            "-t",
            "orders",
            "--as",
            "orders_restored",
        ],
    );
    assert_eq!(
        rows(c, &s.src, "public.orders"),
        rows(c, &db, "public.orders_restored")
    );
    no_scratch_left(c, &db);
}

#[test]
fn as_works_from_s3_and_from_an_encrypted_backup_named_in_a_repository() {
    let c = cluster();
    let s = shop();
    let want = rows(c, &s.src, "public.orders");

    // s3://
    let location = support::s3::s3().location("rfilter");
    support::s3::run_ok_secretless(support::s3::dbbackup_s3().args([
        "backup", "single", "-q", "--format", "native", &s.src, "--out", &location,
    ]));
    let db = live_shop(c);
    support::s3::run_ok_secretless(support::s3::dbbackup_s3().args([
        "restore",
        "-q",
        "-d",
        &db,
        "-t",
        "orders",
        "--as",
        "orders_restored",
        &location,
    ]));
    assert_eq!(want, rows(c, &db, "public.orders_restored"));
    no_scratch_left(c, &db);

    // Encrypted, in a repository, named DB@latest.
    let keys = tempfile::tempdir().unwrap();
    let identity = keys.path().join("key.txt");
    run_ok(Command::new("age-keygen").arg("-o").arg(&identity));
    let public = text(&run_ok(Command::new("age-keygen").arg("-y").arg(&identity)).stdout)
        .trim()
        .to_string();
    let repo = s.dir.path().join("repo");
    run_ok(
        dbbackup()
            .args([
                "backup",
                "single",
                "-q",
                "--format",
                "native",
                "--recipient",
                &public,
                &s.src,
                "--repo",
            ])
            .arg(&repo),
    );
    let db = live_shop(c);
    run_ok(
        dbbackup()
            .args([
                "restore",
                "-q",
                "-d",
                &db,
                "-t",
                "orders",
                "--as",
                "orders_restored",
                "--identity",
            ])
            .arg(&identity)
            .arg("--repo")
            .arg(&repo)
            .arg(format!("{}@latest", s.src)),
    );
    assert_eq!(want, rows(c, &db, "public.orders_restored"));
    no_scratch_left(c, &db);
}
