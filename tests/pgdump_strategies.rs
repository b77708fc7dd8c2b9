//! The pg_dump strategies (plain and custom streamed through dbbackup's compressor), the probe
//! and the auto rule that chooses among native/plain/custom, and their restore and verify.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{assert_same, cluster, dbbackup, run_fail, run_ok};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn read_manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"))
        .expect("manifest is JSON")
}

fn stream_files(m: &Value) -> Vec<String> {
    m["stream"]
        .as_array()
        .expect("stream list")
        .iter()
        .map(|c| c["file"].as_str().unwrap().to_string())
        .collect()
}

/// A fresh database loaded with `fixture`.
fn fixture_db(prefix: &str, fixture: &str) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.load_fixture(&db, fixture);
    db
}

fn backup(db: &str, out: &Path, extra: &[&str]) -> Output {
    run_ok(
        dbbackup()
            .args(["backup", "single", db, "--out"])
            .arg(out)
            .args(extra),
    )
}

fn restore_create(dir: &Path, target: &str, extra: &[&str]) -> Output {
    run_ok(
        dbbackup()
            .args(["restore", "--quiet", "--create", "--dbname", target])
            .arg(dir)
            .args(extra),
    )
}

fn database_exists(db: &str) -> bool {
    cluster().psql(
        "postgres",
        &format!(
            "select count(*) from pg_database where datname = {}",
            support::quote_literal(db)
        ),
    ) == "1"
}

fn user_relations(db: &str) -> i64 {
    cluster()
        .psql(
            db,
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r','p','v','m','S') \
               and n.nspname not in ('pg_catalog','information_schema') \
               and n.nspname !~ '^pg_toast'",
        )
        .parse()
        .unwrap()
}

/// Backs `src` up with `--format kind` and each codec (small chunks, so streams are cut into
/// several files), verifies, restores with `--create` (and `restore_extra`) and compares.
fn round_trip_every_codec(src: &str, kind: &str, chunk: &str, restore_extra: &[&str]) {
    let c = cluster();
    let before = c.fingerprint(src);
    for codec in ["zstd", "gzip", "none"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let out = backup(
            src,
            &dir,
            &["--format", kind, "--compress", codec, "--chunk-size", chunk],
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("strategy: {kind} (--format {kind} requested)")),
            "{stderr}"
        );
        assert!(stderr.contains("probe of"), "{stderr}");
        let m = read_manifest(&dir);
        assert_eq!(m["status"], "complete");
        assert_eq!(m["strategy"]["kind"], kind);
        assert_eq!(m["options"]["codec"], codec);
        assert!(m["probe"]["database_size"].as_i64().unwrap() > 0, "{m}");
        assert!(m["probe"]["pg_dump_version"].is_string(), "{m}");
        let files = stream_files(&m);
        assert!(
            files.len() > 1,
            "{kind}/{codec}: expected several pieces, got {files:?}"
        );
        for f in &files {
            assert!(dir.join(f).is_file(), "{f}");
        }
        let v = run_ok(dbbackup().arg("verify").arg(&dir));
        assert!(text(&v.stdout).contains("OK"), "{}", describe(&v));

        let target = c.unique_db(&format!("rt_{kind}_{codec}"));
        restore_create(&dir, &target, restore_extra);
        assert_same(&before, &c.fingerprint(&target));
        c.drop_db(&target);
    }
}

#[test]
fn plain_round_trip_hard_types_every_codec() {
    let src = fixture_db("plain_src", "hard_types.sql");
    round_trip_every_codec(&src, "plain", "256KiB", &["--jobs", "1"]);
}

#[test]
fn custom_round_trip_hard_types_every_codec_streamed() {
    let src = fixture_db("custom_src", "hard_types.sql");
    round_trip_every_codec(&src, "custom", "256KiB", &["--jobs", "1"]);
}

#[test]
fn custom_round_trip_hard_types_every_codec_parallel_restore() {
    let src = fixture_db("customj_src", "hard_types.sql");
    let work = tempfile::tempdir().unwrap();
    let work_arg = work.path().to_str().unwrap().to_string();
    round_trip_every_codec(
        &src,
        "custom",
        "256KiB",
        &["--jobs", "3", "--work-dir", &work_arg],
    );
    // The temporary archive is gone.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[test]
fn big_table_round_trip_plain_and_custom() {
    let c = cluster();
    let src = fixture_db("big_src", "big_table.sql");
    let before = c.fingerprint(&src);
    for (kind, codec, jobs) in [("plain", "zstd", "1"), ("custom", "gzip", "2")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        backup(
            &src,
            &dir,
            &[
                "--quiet",
                "--format",
                kind,
                "--compress",
                codec,
                "--chunk-size",
                "4MiB",
            ],
        );
        let target = c.unique_db(&format!("big_{kind}"));
        restore_create(&dir, &target, &["--jobs", jobs]);
        assert_same(&before, &c.fingerprint(&target));
        c.drop_db(&target);
    }
}

#[test]
fn stock_tools_restore_the_concatenated_chunks() {
    let c = cluster();
    let src = fixture_db("stock_src", "hard_types.sql");
    let before = c.fingerprint(&src);
    for (kind, codec, decompress, tool) in [
        (
            "plain",
            "zstd",
            "zstd -dc",
            "psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d \"$T\"",
        ),
        (
            "custom",
            "gzip",
            "gzip -dc",
            "pg_restore --exit-on-error -d \"$T\"",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let out = backup(
            &src,
            &dir,
            &[
                "--format",
                kind,
                "--compress",
                codec,
                "--chunk-size",
                "128KiB",
            ],
        );
        // The recipe printed at the end names the files.
        let ext = if kind == "plain" { "sql" } else { "dump" };
        let suffix = if codec == "zstd" { "zst" } else { "gz" };
        let glob = format!("stream/pg_dump.{ext}.{suffix}.*");
        assert!(text(&out.stdout).contains(&glob), "{}", describe(&out));

        let target = c.unique_db(&format!("stock_{kind}"));
        c.create_db(&target);
        let script = format!("cat {}/{glob} | {decompress} | {tool}", dir.display());
        run_ok(
            Command::new("sh")
                .args(["-c", &script])
                .envs(c.env())
                .env("T", c.conninfo(&target))
                .env("PATH", path_with_pg_bin()),
        );
        // Database-level properties are dbbackup's addition; the objects and data must match.
        assert_same(&before, &c.fingerprint(&target));
        c.drop_db(&target);
    }
}

fn path_with_pg_bin() -> String {
    format!(
        "{}:{}",
        cluster().bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A small database whose size pg_database_size reports.
fn small_db(prefix: &str) -> (String, u64) {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.psql(&db, "create table t (id int primary key, v text); insert into t select g, 'x' || g from generate_series(1, 100) g");
    c.psql(&db, "checkpoint");
    let size: u64 = c
        .psql(&db, "select pg_database_size(current_database())")
        .parse()
        .unwrap();
    (db, size)
}

#[test]
fn auto_rule_at_both_sides_of_each_threshold() {
    let c = cluster();
    let (db, size) = small_db("auto");
    let before = c.fingerprint(&db);
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        // Below the threshold → custom.
        (
            vec!["--plain-threshold".into(), (size + 1).to_string()],
            "custom",
            "below --plain-threshold",
        ),
        // At the threshold → plain.
        (
            vec!["--plain-threshold".into(), size.to_string()],
            "plain",
            "at or above --plain-threshold",
        ),
        // Above → plain.
        (
            vec!["--plain-threshold".into(), "1KiB".into()],
            "plain",
            "at or above --plain-threshold",
        ),
        // --parallel-tables > 1 asked explicitly → native, whatever the size.
        (
            vec![
                "--plain-threshold".into(),
                "1KiB".into(),
                "--parallel-tables".into(),
                "2".into(),
            ],
            "native",
            "--parallel-tables 2 was asked explicitly",
        ),
        // --parallel-tables 1 is not the parallel path.
        (
            vec![
                "--plain-threshold".into(),
                "1TiB".into(),
                "--parallel-tables".into(),
                "1".into(),
            ],
            "custom",
            "below --plain-threshold",
        ),
        // Default threshold (5GiB) with the small database → custom.
        (vec![], "custom", "below --plain-threshold 5.0 GiB"),
    ];
    for (extra, want, reason) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
        args.extend(["--chunk-size", "1MiB"]);
        let out = backup(&db, &dir, &args);
        let m = read_manifest(&dir);
        assert_eq!(m["strategy"]["kind"], want, "{extra:?}: {}", describe(&out));
        let recorded = m["strategy"]["reason"].as_str().unwrap();
        assert!(recorded.contains(reason), "{extra:?}: {recorded}");
        assert!(recorded.starts_with("auto:"), "{recorded}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("strategy: {want} (auto:")),
            "{stderr}"
        );
        assert_eq!(m["probe"]["database_size"].as_u64(), Some(size), "{m}");
        assert_eq!(m["probe"]["tables"], 1);
        let tables = m["probe"]["largest_tables"].as_array().unwrap();
        assert_eq!(tables[0]["name"], "t");
        assert!(tables[0]["size_bytes"].as_i64().unwrap() > 0);
        // Whatever was chosen restores.
        let target = c.unique_db(&format!("auto_{want}"));
        restore_create(&dir, &target, &[]);
        assert_same(&before, &c.fingerprint(&target));
        c.drop_db(&target);
    }
    // --quiet prints no decision.
    let tmp = tempfile::tempdir().unwrap();
    let out = backup(&db, &tmp.path().join("b"), &["--quiet"]);
    assert!(
        !text(&out.stderr).contains("strategy:"),
        "{}",
        describe(&out)
    );
}

/// A directory holding a `pg_dump` script in front of the real one (for DBBACKUP_PG_BINDIR).
fn fake_pg_dump(body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = cluster().bin("pg_dump");
    let script = format!("#!/bin/sh\nREAL='{}'\n{body}\n", real.display());
    let path = dir.path().join("pg_dump");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn assert_failed_backup(dir: &Path) {
    let m = read_manifest(dir);
    assert_eq!(m["status"], "failed", "{m}");
    assert!(stream_files(&m).is_empty(), "{m}");
    assert!(
        !dir.join("stream").exists() || std::fs::read_dir(dir.join("stream")).unwrap().count() == 0
    );
    let v = run_fail(dbbackup().arg("verify").arg(dir));
    assert!(text(&v.stderr).contains("failed"), "{}", describe(&v));
    let r = run_fail(
        dbbackup()
            .args(["restore", "--create", "--dbname", "never_created_db"])
            .arg(dir),
    );
    assert!(text(&r.stderr).contains("not complete"), "{}", describe(&r));
}

#[test]
fn pg_dump_failing_after_its_output_fails_the_backup_with_its_stderr() {
    let (db, _) = small_db("dumpfail");
    // The whole dump comes through, then pg_dump says it failed: still no backup.
    let bin = fake_pg_dump(
        "case \"$1\" in --version) exec \"$REAL\" --version;; esac\n\
         \"$REAL\" \"$@\" || exit 1\n\
         echo 'pg_dump: error: simulated failure after the output' >&2\n\
         exit 3",
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let out = run_fail(
        dbbackup()
            .args(["backup", "single", &db, "--format", "plain", "--out"])
            .arg(&dir)
            .env("DBBACKUP_PG_BINDIR", bin.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pg_dump failed (exit status 3)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("simulated failure after the output"),
        "{stderr}"
    );
    assert_failed_backup(&dir);
}

#[test]
fn pg_dump_older_than_the_server_is_refused() {
    let (db, _) = small_db("olddump");
    let bin = fake_pg_dump("echo 'pg_dump (PostgreSQL) 9.6.24'; exit 0");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let out = run_fail(
        dbbackup()
            .args(["backup", "single", &db, "--format", "custom", "--out"])
            .arg(&dir)
            .env("DBBACKUP_PG_BINDIR", bin.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pg_dump 9.6.24 is older than the server"),
        "{stderr}"
    );
    assert!(!dir.join("manifest.json").exists());
}

/// A database with a partitioned table: `LOCK TABLE ONLY parent` blocks pg_dump (which locks
/// every table) but not the probe (which reads the sizes of leaf tables only).
fn lockable_db(prefix: &str) -> String {
    let c = cluster();
    let db = c.unique_db(prefix);
    c.create_db(&db);
    c.psql(
        &db,
        "create table parent (id int) partition by range (id); \
         create table part1 partition of parent for values from (0) to (1000); \
         insert into parent select generate_series(0, 999)",
    );
    db
}

/// Children of `parent` (pid) whose command is pg_dump.
fn pg_dump_children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap() + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if comm == "pg_dump" && fields.get(1).and_then(|p| p.parse().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let close = stat.rfind(')').unwrap();
            !stat[close + 2..].starts_with('Z')
        }
    }
}

/// Starts a plain backup of a locked `lockable_db`; returns it once pg_dump waits for the lock.
struct BlockedBackup {
    db: String,
    locker: std::process::Child,
    child: std::process::Child,
    pg_dump: u32,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl BlockedBackup {
    fn start(prefix: &str) -> BlockedBackup {
        let c = cluster();
        let db = lockable_db(prefix);
        let locker = c.hold_session(
            &db,
            "begin; lock table only parent in access exclusive mode; select pg_sleep(600)",
        );
        c.wait_for(
            &db,
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation \
             where c.relname = 'parent' and l.mode = 'AccessExclusiveLock' and l.granted",
            "1",
            30,
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let child = dbbackup()
            .args(["backup", "single", &db, "--format", "plain", "--out"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // pg_dump waits for its ACCESS SHARE lock on parent.
        c.wait_for(
            &db,
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation \
             where c.relname = 'parent' and not l.granted",
            "1",
            30,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let pg_dump = loop {
            if let Some(p) = pg_dump_children(child.id()).first() {
                break *p;
            }
            assert!(Instant::now() < deadline, "no pg_dump child found");
            std::thread::sleep(Duration::from_millis(50));
        };
        BlockedBackup {
            db,
            locker,
            child,
            pg_dump,
            dir,
            _tmp: tmp,
        }
    }

    fn wait(self) -> (Output, PathBuf, String, u32, tempfile::TempDir) {
        let BlockedBackup {
            db,
            mut locker,
            child,
            pg_dump,
            dir,
            _tmp,
        } = self;
        let out = wait_with_timeout(child, Duration::from_secs(60));
        let _ = locker.kill();
        let _ = locker.wait();
        (out, dir, db, pg_dump, _tmp)
    }
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dbbackup did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn pg_dump_killed_mid_stream_fails_the_backup() {
    let b = BlockedBackup::start("killed");
    let pid = b.pg_dump;
    run_ok(Command::new("kill").args(["-KILL", &pid.to_string()]));
    let (out, dir, _, _, _tmp) = b.wait();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("pg_dump failed (killed by signal 9)"),
        "{}",
        describe(&out)
    );
    assert_failed_backup(&dir);
}

#[test]
fn pg_dump_losing_its_connection_fails_the_backup_with_its_stderr_tail() {
    let c = cluster();
    let b = BlockedBackup::start("terminated");
    c.psql(
        &b.db,
        "select pg_terminate_backend(pid) from pg_locks where relation = 'parent'::regclass and not granted",
    );
    let (out, dir, _, _, _tmp) = b.wait();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pg_dump failed (exit status 1)"),
        "{stderr}"
    );
    // pg_dump's own words, from its stderr tail.
    assert!(stderr.contains("pg_dump: error:"), "{stderr}");
    assert!(stderr.contains("terminating connection"), "{stderr}");
    assert_failed_backup(&dir);
}

#[test]
fn ctrl_c_leaves_no_pg_dump_behind() {
    for signal in ["-INT", "-TERM"] {
        let b = BlockedBackup::start("ctrlc");
        let pg_dump = b.pg_dump;
        assert!(process_alive(pg_dump));
        run_ok(Command::new("kill").args([signal, &b.child.id().to_string()]));
        let started = Instant::now();
        let (out, dir, _, pg_dump, _tmp) = b.wait();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            text(&out.stderr).contains("interrupted"),
            "{}",
            describe(&out)
        );
        assert!(
            !process_alive(pg_dump),
            "pg_dump {pg_dump} survived {signal}"
        );
        let m = read_manifest(&dir);
        assert_eq!(m["status"], "failed", "{m}");
    }
}

#[test]
fn plain_restore_stops_at_the_first_sql_error_and_commits_nothing() {
    let c = cluster();
    let src = c.unique_db("sqlerr_src");
    c.create_db(&src);
    c.psql(
        &src,
        "create type public.color as enum ('red', 'green'); \
         create table public.paint (id int, c public.color); \
         insert into public.paint values (1, 'red'), (2, 'green')",
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    backup(&src, &dir, &["--quiet", "--format", "plain"]);
    // The target has no relations (so it counts as empty) but a conflicting type.
    let target = c.unique_db("sqlerr_dst");
    c.create_db(&target);
    c.psql(&target, "create type public.color as enum ('blue')");
    let out = run_fail(
        dbbackup()
            .args(["restore", "--quiet", "--dbname", &target])
            .arg(&dir),
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("psql failed"), "{stderr}");
    assert!(stderr.contains("type \"color\" already exists"), "{stderr}");
    // --single-transaction: nothing of the dump stayed.
    assert_eq!(user_relations(&target), 0);
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = at.min(bytes.len() - 1);
    bytes[i] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn corrupt_chunk_stops_restore_and_verify_naming_the_file() {
    let c = cluster();
    let src = fixture_db("corrupt_src", "hard_types.sql");
    for (kind, jobs) in [("plain", "1"), ("custom", "1"), ("custom", "2")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        backup(
            &src,
            &dir,
            &["--quiet", "--format", kind, "--chunk-size", "128KiB"],
        );
        let m = read_manifest(&dir);
        let files = stream_files(&m);
        assert!(files.len() >= 3, "{files:?}");
        let victim = &files[1];
        flip_byte(&dir.join(victim), 1000);

        let v = run_fail(dbbackup().arg("verify").arg(&dir));
        assert!(
            text(&v.stderr).contains(victim.as_str()),
            "{}",
            describe(&v)
        );

        let target = c.unique_db(&format!("corrupt_{kind}_{jobs}"));
        // --keep-failed: the database the failed restore created stays, to look inside.
        let out = run_fail(
            dbbackup()
                .args([
                    "restore",
                    "--quiet",
                    "--create",
                    "--jobs",
                    jobs,
                    "--dbname",
                    &target,
                    "--keep-failed",
                ])
                .arg(&dir),
        );
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            text(&out.stderr).contains(victim.as_str()),
            "{}",
            describe(&out)
        );
        if jobs == "1" {
            // Streamed: the child saw part of the stream but was killed before its end, so its
            // single transaction rolled back.
            assert_eq!(user_relations(&target), 0);
            c.drop_db(&target);
        } else {
            // Decompressed (and verified) before pg_restore or even the target was touched.
            assert!(!database_exists(&target));
        }

        // A truncated piece is caught before anything starts.
        let victim = &files[files.len() - 1];
        let p = dir.join(victim);
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let target = c.unique_db("truncated");
        let out = run_fail(
            dbbackup()
                .args(["restore", "--quiet", "--create", "--dbname", &target])
                .arg(&dir),
        );
        assert!(
            text(&out.stderr).contains(victim.as_str()),
            "{}",
            describe(&out)
        );
        assert!(!database_exists(&target));
    }
}

#[test]
fn parallel_custom_restore_checks_work_dir_free_space() {
    let src = small_db("space").0;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    backup(&src, &dir, &["--quiet", "--format", "custom"]);
    // A tiny tmpfs would be ideal; /proc has no free space at all.
    let target = cluster().unique_db("space_dst");
    let out = run_fail(
        dbbackup()
            .args([
                "restore",
                "--quiet",
                "--create",
                "--jobs",
                "2",
                "--work-dir",
                "/proc",
                "--dbname",
                &target,
            ])
            .arg(&dir),
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--work-dir /proc"), "{stderr}");
    assert!(stderr.contains("needed"), "{stderr}");
    assert!(!database_exists(&target));
}

/// Runs `cmd` and returns its exit status and peak RSS in KiB (`ru_maxrss` from wait4).
fn run_measuring_peak_rss(cmd: &mut Command) -> (i32, u64) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; pid is our own unwaited child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    (libc::WEXITSTATUS(status), usage.ru_maxrss as u64)
}

#[test]
fn peak_rss_stays_flat_whatever_the_dump_size() {
    let c = cluster();
    let db = c.unique_db("rss");
    c.create_db(&db);
    // ~200 MiB of pg_dump output that compresses well (so the test stays quick).
    c.psql(
        &db,
        "create table fat (id int, v text); \
         insert into fat select g, repeat(md5(g::text), 31) from generate_series(1, 200000) g",
    );
    let (small, _) = small_db("rss_small");
    for (kind, codec) in [("plain", "zstd"), ("custom", "gzip")] {
        let peak = |db: &str| {
            let tmp = tempfile::tempdir().unwrap();
            let (code, kib) = run_measuring_peak_rss(
                dbbackup()
                    .args(["backup", "single", db, "--quiet", "--format", kind])
                    .args(["--compress", codec, "--compress-level", "1", "--out"])
                    .arg(tmp.path().join("b")),
            );
            assert_eq!(code, 0, "backup of {db} failed");
            let raw = read_manifest(&tmp.path().join("b"))["totals"]["raw_bytes"]
                .as_u64()
                .unwrap();
            (kib, raw)
        };
        let (small_kib, small_raw) = peak(&small);
        let (big_kib, big_raw) = peak(&db);
        assert!(big_raw > 190 << 20, "dump is only {big_raw} bytes");
        assert!(small_raw < 1 << 20);
        // Bounded by the compressor's buffers, far below the dump's size.
        assert!(
            big_kib < 160 * 1024,
            "{kind}/{codec}: peak RSS {big_kib} KiB for a {big_raw}-byte dump (small dump: {small_kib} KiB)"
        );
        assert!(
            big_kib * 1024 < big_raw / 2,
            "{kind}/{codec}: peak RSS {big_kib} KiB for a {big_raw}-byte dump"
        );
        eprintln!("{kind}/{codec}: peak RSS {small_kib} KiB ({small_raw} B dump), {big_kib} KiB ({big_raw} B dump)");
    }
}
