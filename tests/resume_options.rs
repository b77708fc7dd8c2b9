//! `--resume` takes the options the backup was started with: options not given come from the
//! manifest, given ones that would change what is stored must equal the recorded ones.
//!
//! A backup is made incomplete deterministically the way a `kill -9` after most units leaves
//! it: the manifest says `in_progress` and one unit is not done, its chunk files still on disk.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::{assert_same, cluster, dbbackup, run_fail, run_ok};

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Turns the complete native backup in `dir` into one killed before `table`'s last unit was
/// recorded. Returns that unit's index.
fn undo_last_unit(dir: &Path, table: &str) -> u64 {
    let path = dir.join("manifest.json");
    let mut m = read_json(&path);
    m["status"] = "in_progress".into();
    m.as_object_mut().unwrap().remove("finished_at");
    let t = m["tables"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == table)
        .unwrap_or_else(|| panic!("no table {table}"));
    let unit = t["units"].as_array_mut().unwrap().last_mut().unwrap();
    assert_eq!(unit["done"], true);
    assert!(!unit["chunks"].as_array().unwrap().is_empty());
    unit["done"] = false.into();
    unit["snapshot"] = Value::Null;
    unit["chunks"] = Value::Array(vec![]);
    let index = unit["index"].as_u64().unwrap();
    write_json(&path, &m);
    index
}

/// The snapshot `table`'s unit `index` was read in.
fn unit_snapshot(m: &Value, table: &str, index: u64) -> String {
    let t = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .unwrap();
    let u = t["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["index"] == index)
        .unwrap();
    u["snapshot"].as_str().unwrap().to_string()
}

fn restore_and_compare(source: &str, backup: &Path) {
    let c = cluster();
    let target = c.unique_db("resopt_dst");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(backup)
            .args(["--dbname", &target, "--create", "--quiet"]),
    );
    assert_same(&c.fingerprint(source), &c.fingerprint(&target));
    c.drop_db(&target);
}

#[test]
fn single_resume_takes_the_recorded_options_and_refuses_only_given_different_ones() {
    let c = cluster();
    let db = c.unique_db("resopt_single");
    c.create_db(&db);
    c.load_fixture(&db, "hard_types.sql");
    c.load_fixture(&db, "big_table.sql");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    // The split size is given too: its default (4 x chunk size) would differ from it.
    run_ok(support::backup_native(&db, &out).args([
        "--parallel-tables",
        "2",
        "--chunk-size",
        "8MiB",
        "--split-tables-larger-than",
        "8MiB",
        "--quiet",
    ]));
    let first = read_json(&out.join("manifest.json"));
    let first_snapshot = first["snapshot"].as_str().unwrap().to_string();
    let resume = |extra: &[&str]| {
        let mut cmd = dbbackup();
        cmd.args(["backup", "single", &db, "--out"])
            .arg(&out)
            .args(["--resume", "--allow-inconsistent"])
            .args(extra);
        cmd
    };

    let unit = undo_last_unit(&out, "big_events");
    assert!(unit > 0, "big_events should be split into several units");
    let incomplete = std::fs::read(out.join("manifest.json")).unwrap();

    // Given and different: refused, each named with both values; nothing touched.
    let o = run_fail(&mut resume(&["--chunk-size", "4MiB", "--compress", "gzip"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--chunk-size: given 4MiB, the backup was started with 8MiB"),
        "{e}"
    );
    assert!(
        e.contains("--compress: given gzip, the backup was started with zstd"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    let o = run_fail(&mut resume(&["--format", "plain"]));
    assert!(
        stderr(&o).contains("--format: given plain, the backup was started with native"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        incomplete,
        "a refused resume must not touch the backup"
    );

    // Given and equal: accepted. Parallelism may change (it is not about what is stored).
    let o = run_ok(&mut resume(&[
        "--format",
        "native",
        "--chunk-size",
        "8MiB",
        "--compress",
        "zstd",
        "--parallel-tables",
        "1",
    ]));
    // A split table with an unfinished range is read again whole in the new snapshot.
    assert!(
        stderr(&o).contains("copying table public.big_events again whole"),
        "{}",
        stderr(&o)
    );
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["status"], "complete");
    assert_eq!(m["options"]["parallel_tables"], 1);

    // Nothing given: everything from the manifest (the engine itself refuses options that
    // differ from the recorded ones, so 256MiB chunks or 32MiB splits would fail here).
    let unit = undo_last_unit(&out, "big_events");
    let o = run_ok(&mut resume(&[]));
    assert!(stderr(&o).contains("again whole"), "{}", stderr(&o));
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["status"], "complete");
    assert_eq!(m["consistent"], false);
    assert_eq!(m["strategy"]["kind"], "native");
    assert_eq!(m["options"]["chunk_size"], 8 << 20);
    assert_eq!(m["options"]["split_tables_larger_than"], 8 << 20);
    assert_eq!(m["options"]["codec"], "zstd");
    assert_eq!(
        m["options"]["parallel_tables"], 1,
        "the recorded parallelism, not the default"
    );
    assert_ne!(unit_snapshot(&m, "big_events", unit), first_snapshot);
    assert_eq!(
        unit_snapshot(&m, "big_events", 0),
        unit_snapshot(&m, "big_events", unit),
        "a split table is read in one snapshot: its finished ranges are read again too"
    );
    run_ok(dbbackup().arg("verify").arg(&out));
    restore_and_compare(&db, &out);
    c.drop_db(&db);
}

#[test]
fn cluster_resume_takes_the_recorded_options() {
    let c = cluster();
    let base = c.unique_db("resopt_cl");
    let (a, b) = (format!("{base}_a"), format!("{base}_b"));
    for db in [&a, &b] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, repeat('v', g % 50) FROM generate_series(1, 20000) g;
             CREATE TABLE u (id bigint, d bytea);
             INSERT INTO u SELECT g, decode(md5(g::text), 'hex') FROM generate_series(1, 5000) g;",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let include = format!("{base}_*");
    run_ok(
        dbbackup()
            .args(["backup", "cluster", "--quiet", "--out"])
            .arg(&out)
            .args(["--include-database", &include, "--format", "native"])
            .args(["--parallel-tables", "2", "--chunk-size", "8MiB"])
            .args(["--compress", "gzip", "--timeout", "10m"]),
    );
    let resume = |extra: &[&str]| {
        let mut cmd = dbbackup();
        cmd.args(["backup", "cluster", "--quiet", "--out"])
            .arg(&out)
            .args(["--resume", "--allow-inconsistent"])
            .args(extra);
        cmd
    };
    let manifest = out.join("manifest.json");
    let first = read_json(&manifest);
    assert_eq!(first["options"]["database"]["chunk_size"], 8 << 20);
    let dir_of = |m: &Value, name: &str| {
        let d = m["databases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap();
        out.join(d["dir"].as_str().unwrap())
    };
    let (dir_a, dir_b) = (dir_of(&first, &a), dir_of(&first, &b));
    let a_finished = read_json(&dir_a.join("manifest.json"))["finished_at"].clone();

    // Database b failed part-way; `keep_record`: false drops `options.database` as older
    // versions wrote the manifest (the databases' own manifests then have the options).
    let break_b = |keep_record: bool| {
        let mut m = read_json(&manifest);
        m["status"] = "failed".into();
        for d in m["databases"].as_array_mut().unwrap() {
            if d["name"] == b.as_str() {
                d["status"] = "failed".into();
            }
        }
        if !keep_record {
            m["options"].as_object_mut().unwrap().remove("database");
        }
        write_json(&manifest, &m);
        undo_last_unit(&dir_b, "t")
    };

    break_b(true);
    let o = run_fail(&mut resume(&[
        "--chunk-size",
        "4MiB",
        "--include-database",
        "x*",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--chunk-size: given 4MiB, the backup was started with 8MiB"),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "--include-database: given x*, the backup was started with {include}"
        )),
        "{e}"
    );
    // Nothing given: the databases, format, codec and sizes of the first run.
    for keep_record in [true, false] {
        if !keep_record {
            break_b(false);
        }
        let o = run_ok(&mut resume(&[]));
        let m = read_json(&manifest);
        assert_eq!(m["status"], "complete", "{}", stderr(&o));
        let names: Vec<&str> = m["databases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "only the included databases: {names:?}");
        assert_eq!(m["options"]["timeout"], "10m");
        assert_eq!(m["options"]["format"], "native");
        assert_eq!(m["options"]["parallel_tables"], 2);
        let mb = read_json(&dir_b.join("manifest.json"));
        assert_eq!(mb["status"], "complete");
        assert_eq!(mb["consistent"], false, "b was resumed, not redone");
        assert_eq!(mb["options"]["codec"], "gzip");
        assert_eq!(mb["options"]["chunk_size"], 8 << 20);
        assert_eq!(
            read_json(&dir_a.join("manifest.json"))["finished_at"],
            a_finished,
            "the complete database is skipped whole"
        );
    }
    run_ok(dbbackup().arg("verify").arg(&out));
    restore_and_compare(&b, &dir_b);
    c.drop_db(&a);
    c.drop_db(&b);
}

/// `--repo` with `--resume`: the newest backup of the database in the repository is continued
/// in place when it was interrupted; a complete newest one leaves nothing to resume.
#[test]
fn repository_resume_continues_the_newest_interrupted_backup_in_place() {
    let c = cluster();
    let db = c.unique_db("resopt_repo");
    c.create_db(&db);
    c.load_fixture(&db, "hard_types.sql");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let backup = |at: &str, extra: &[&str]| {
        let mut cmd = dbbackup();
        cmd.env("DBBACKUP_TEST_NOW", at)
            .args([
                "backup", "single", &db, "--format", "native", "--quiet", "--repo",
            ])
            .arg(&repo)
            .args(extra);
        cmd
    };
    run_ok(&mut backup("2026-11-28T02:00:00Z", &[]));
    let nothing = run_fail(&mut backup(
        "2026-11-28T03:00:00Z",
        &["--resume", "--allow-inconsistent"],
    ));
    assert_eq!(nothing.status.code(), Some(2), "{}", stderr(&nothing));
    assert!(
        stderr(&nothing).contains("nothing to resume"),
        "{}",
        stderr(&nothing)
    );

    // The next night's run dies after most units (no lock left: interrupted).
    run_ok(&mut backup("2026-11-29T02:00:00Z", &[]));
    let dir = repo.join(&db).join("20261129T020000Z");
    undo_last_unit(&dir, "wide");
    run_ok(&mut backup(
        "2026-11-29T04:00:00Z",
        &["--resume", "--allow-inconsistent"],
    ));
    let m = read_json(&dir.join("manifest.json"));
    assert_eq!(m["status"], "complete", "continued in place");
    let entries = std::fs::read_dir(repo.join(&db)).unwrap().count();
    assert_eq!(entries, 2, "no third backup directory");
    restore_and_compare(&db, &dir);
}
