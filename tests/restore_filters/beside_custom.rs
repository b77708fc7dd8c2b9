//! `--as` / `--into-schema` from a custom-strategy backup (pg_dump's archive): the same
//! restore beside the live table as from a native backup, rows loaded from the archive.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::beside::{live_shop, names, no_scratch_left, shop};
use super::support::{self, cluster, dbbackup, run_ok};
use super::{dump, restore, rows, text};

/// A custom-strategy backup of the shop (and the directory that holds it).
fn custom_backup() -> &'static (PathBuf, tempfile::TempDir) {
    static B: OnceLock<(PathBuf, tempfile::TempDir)> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("shop_custom");
        run_ok(
            dbbackup()
                .args([
                    "backup",
                    "single",
                    "-q",
                    "--format",
                    "custom",
                    &shop().src,
                    "--out",
                ])
                .arg(&backup),
        );
        assert_eq!(
            support::manifest_json(&backup)["strategy"]["kind"],
            "custom"
        );
        (backup, dir)
    })
}

#[test]
fn as_restores_orders_beside_the_live_table_from_a_custom_backup() {
    let c = cluster();
    let s = shop();
    let backup = &custom_backup().0;
    let db = live_shop(c);
    let before = dump(c, &db, &[]);
    let o = restore(
        backup,
        &db,
        &["--table", "public.orders", "--as", "public.orders_restored"],
    );
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
    let without_stats: String = dump(c, &db, &["-T", "public.orders_restored*"])
        .lines()
        .filter(|l| !l.contains("orders_restored_stats"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(before, without_stats);
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
    // Its own sequence, with the backed-up value (the archive's setval, requalified).
    assert_eq!(
        c.psql(&db, "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'orders_restored'::regclass AND adnum = 1"),
        "nextval('orders_restored_id_seq'::regclass)"
    );
    assert_eq!(
        c.psql(&s.src, "SELECT last_value FROM orders_id_seq"),
        c.psql(&db, "SELECT last_value FROM orders_restored_id_seq")
    );
    no_scratch_left(c, &db);

    // --into-schema from the same archive.
    restore(backup, &db, &["-t", "orders", "--into-schema", "restored"]);
    assert_eq!(
        rows(c, &s.src, "public.orders"),
        rows(c, &db, "restored.orders")
    );
    assert_eq!(c.psql(&db, "SELECT count(*) FROM orders"), "0");
    no_scratch_left(c, &db);
}

#[test]
fn as_restores_a_partitioned_table_from_a_custom_backup() {
    let c = cluster();
    let s = shop();
    let db = live_shop(c);
    let before = dump(c, &db, &[]);
    restore(
        &custom_backup().0,
        &db,
        &["-t", "events", "--as", "events_old"],
    );
    for (old, new) in [
        ("events_2025", "events_old_2025"),
        ("events_2026", "events_old_2026"),
    ] {
        assert_eq!(rows(c, &s.src, old), rows(c, &db, new), "{old}");
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
