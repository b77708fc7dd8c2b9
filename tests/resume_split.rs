//! A resumed backup reads every table in one snapshot. A split table (several ctid ranges) with
//! ranges finished in the first run and ranges left for the resumed run is copied again whole
//! when the resumed run reads in a new snapshot: rows updated in between would otherwise move
//! between finished and unfinished ranges (duplicated one way, lost the other). With
//! `--snapshot` (the same snapshot in both runs) the finished ranges are kept. Whole tables
//! finished in the first run are kept as they are.
//!
//! The interruption is placed exactly by editing the manifest of a finished backup back to what
//! a kill between two ranges leaves (the last range not recorded, status `in_progress`), as
//! tests/resume_options.rs does: resume sees only the manifest and the files.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{cluster, dbbackup, run_ok};

/// Rows of 80 characters take 116 bytes of a heap page (tuple and line pointer): 70 fill a page
/// with 48 bytes to spare, too few for another row. A multiple of 70 leaves every page full,
/// so where an updated row goes is decided by the free space the test makes.
const ROWS_PER_PAGE: i64 = 70;
const TABLE_ROWS: i64 = 571 * ROWS_PER_PAGE;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A table of about 4.5 MB, every heap page full (split into several ranges at 1 MiB) and a small whole table.
fn source(prefix: &str) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.psql(
        &db,
        &format!(
            "CREATE TABLE split_t(id int PRIMARY KEY, v text);
             INSERT INTO split_t SELECT i, repeat(chr(97 + i % 26), 80) FROM generate_series(1, {TABLE_ROWS}) i;
             CREATE TABLE whole_t(id int, v text); INSERT INTO whole_t VALUES (1, 'first run');
             VACUUM ANALYZE split_t;"
        ),
    );
    db
}

fn backup_args<'a>(db: &'a str, out: &'a Path) -> Vec<std::ffi::OsString> {
    [
        "backup",
        "single",
        "--format",
        "native",
        db,
        "--parallel-tables",
        "2",
        "--chunk-size",
        "256KiB",
        "--split-tables-larger-than",
        "1MiB",
        "--out",
    ]
    .iter()
    .map(Into::into)
    .chain([out.as_os_str().to_owned()])
    .collect()
}

/// Marks `split_t`'s last range unfinished, as a kill before it was recorded leaves it.
/// Returns the first heap page of that range.
fn interrupt_before_last_range(out: &Path) -> u64 {
    let path = out.join("manifest.json");
    let mut m = read_json(&path);
    m["status"] = "in_progress".into();
    m.as_object_mut().unwrap().remove("finished_at");
    let t = m["tables"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == "split_t")
        .unwrap();
    let units = t["units"].as_array_mut().unwrap();
    assert!(units.len() >= 3, "split_t should be split: {}", units.len());
    let last = units.last_mut().unwrap();
    last["done"] = false.into();
    last["snapshot"] = Value::Null;
    last["chunks"] = Value::Array(vec![]);
    let from = last["ctid_from"].as_u64().unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    from
}

fn page_of(db: &str, id: i64) -> u64 {
    cluster()
        .psql(
            db,
            &format!("SELECT (ctid::text::point)[0]::bigint FROM split_t WHERE id = {id}"),
        )
        .parse()
        .unwrap()
}

/// Between the runs: rows of the first range are updated (their new versions land at the end
/// of the table, in the unfinished range), and a row of the unfinished range is updated into
/// space freed in the first range.
fn move_rows_both_ways(db: &str, last_from: u64) {
    move_rows_forward(db, last_from);
    move_a_row_back(db, last_from);
}

/// Rows of the first range updated: their new versions land at the end of the table.
fn move_rows_forward(db: &str, last_from: u64) {
    let c = cluster();
    // Three whole pages of rows: their new versions fill three new pages at the end.
    let forward: Vec<i64> = (1..=3 * ROWS_PER_PAGE).collect();
    c.psql(
        db,
        &format!(
            "UPDATE split_t SET v = v || '!' WHERE id BETWEEN 1 AND {}",
            3 * ROWS_PER_PAGE
        ),
    );
    for id in &forward {
        assert!(
            page_of(db, *id) >= last_from,
            "row {id} should have moved into the unfinished range"
        );
    }
}

/// A row of the unfinished range's first page updated into space freed in the first range
/// (which needs the dead rows to be removable: no older snapshot open).
fn move_a_row_back(db: &str, last_from: u64) {
    let c = cluster();
    // Free space in the first range, then move a row of the last range's first page there.
    c.psql(db, "DELETE FROM split_t WHERE id BETWEEN 300 AND 400");
    // With index cleanup forced: a VACUUM that bypasses it (few dead rows) leaves the freed
    // space out of the free space map.
    c.psql(db, "VACUUM (INDEX_CLEANUP ON) split_t");
    let back: i64 = c
        .psql(
            db,
            &format!(
                "SELECT id FROM split_t WHERE (ctid::text::point)[0] = {last_from} ORDER BY id LIMIT 1"
            ),
        )
        .parse()
        .unwrap();
    c.psql(
        db,
        &format!("UPDATE split_t SET v = v || '?' WHERE id = {back}"),
    );
    assert!(
        page_of(db, back) < last_from,
        "row {back} should have moved into a finished range"
    );
}

fn rows(db: &str, table: &str) -> String {
    cluster().psql(
        db,
        &format!(
            "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM {table}"
        ),
    )
}

fn restore(out: &Path) -> String {
    let c = cluster();
    let target = c.unique_db("resume_split_dst");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(out)
            .args(["--dbname", &target, "--create", "--jobs", "2", "--quiet"]),
    );
    target
}

fn unit_snapshots(m: &Value, table: &str) -> Vec<String> {
    m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .unwrap()["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["snapshot"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_split_table_with_an_unfinished_range_is_copied_again_whole_in_the_new_snapshot() {
    let c = cluster();
    let db = source("resume_split");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    run_ok(dbbackup().args(backup_args(&db, &out)));
    let first_snapshot = read_json(&out.join("manifest.json"))["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let last_from = interrupt_before_last_range(&out);
    let whole_before = rows(&db, "whole_t");
    move_rows_both_ways(&db, last_from);
    c.psql(&db, "UPDATE whole_t SET v = 'changed after the first run'");

    let o = run_ok(
        dbbackup()
            .args(backup_args(&db, &out))
            .args(["--resume", "--allow-inconsistent"]),
    );
    run_ok(dbbackup().arg("verify").arg(&out));

    // The restore builds the primary key (no duplicate) and split_t is the source's table as
    // it is now, row for row; whole_t is as the first run read it.
    let target = restore(&out);
    assert_eq!(rows(&target, "split_t"), rows(&db, "split_t"));
    assert_eq!(rows(&target, "whole_t"), whole_before);

    // The summary says so; the manifest shows which snapshot each range came from.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("copying table public.split_t again whole"),
        "the summary says so: {stderr}"
    );
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["status"], "complete");
    assert_eq!(m["consistent"], false);
    let split = unit_snapshots(&m, "split_t");
    assert!(
        split.iter().all(|s| *s != first_snapshot && *s == split[0]),
        "every range of split_t from the resumed run's snapshot: {split:?}"
    );
    assert_eq!(
        unit_snapshots(&m, "whole_t"),
        [first_snapshot],
        "a whole table finished in the first run is kept"
    );
    c.drop_db(&target);
    c.drop_db(&db);
}

#[test]
fn with_the_same_snapshot_the_finished_ranges_are_kept() {
    let c = cluster();
    let db = source("resume_split_snap");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The user's transaction, exporting the snapshot both runs read in.
    let (user, conn) = rt
        .block_on(tokio_postgres::connect(
            &c.conninfo(&db),
            tokio_postgres::NoTls,
        ))
        .unwrap();
    rt.spawn(conn);
    let snapshot: String = rt
        .block_on(async {
            user.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await?;
            user.query_one("SELECT pg_export_snapshot()", &[]).await
        })
        .unwrap()
        .get(0);
    let at_snapshot = rows(&db, "split_t");
    run_ok(
        dbbackup()
            .args(backup_args(&db, &out))
            .args(["--snapshot", &snapshot]),
    );
    let last_from = interrupt_before_last_range(&out);
    // (The open snapshot keeps dead rows, so no space is freed for a move the other way.)
    move_rows_forward(&db, last_from);

    let o =
        run_ok(
            dbbackup()
                .args(backup_args(&db, &out))
                .args(["--resume", "--snapshot", &snapshot]),
        );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("again whole"), "{stderr}");
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["status"], "complete");
    assert_eq!(m["consistent"], true);
    assert!(
        unit_snapshots(&m, "split_t").iter().all(|s| *s == snapshot),
        "{m}"
    );
    rt.block_on(user.batch_execute("COMMIT")).unwrap();
    let target = restore(&out);
    assert_eq!(rows(&target, "split_t"), at_snapshot);
    c.drop_db(&target);
    c.drop_db(&db);
}
