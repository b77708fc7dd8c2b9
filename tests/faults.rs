//! Real faults, not mocks: a terminated backend, a killed dbbackup, a corrupted chunk, a full
//! disk, an interrupted restore. Each proves nothing is lost and the backup finishes.
//!
//! Most tests make a fault deterministic with a "gate" (tests/support/gate.rs): a tiny table
//! whose COPY blocks because another session queued an ACCESS EXCLUSIVE lock on it behind the
//! backup's own ACCESS SHARE lock. The gate's unit runs last: every bigger unit is finished
//! (and in the manifest) while the gate holds the backup still.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::gate::{self, Lock};
use support::{assert_same, cluster, dbbackup, run_fail, run_ok};

fn manifest(dir: &std::path::Path) -> serde_json::Value {
    support::manifest_json(dir)
}

fn gated_db(prefix: &str) -> String {
    gate::gated_db(prefix)
}

/// A native backup of a gated database, output piped.
fn backup_cmd(db: &str, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = dbbackup();
    cmd.args([
        "backup",
        "single",
        "--format",
        "native",
        db,
        "--parallel-tables",
        "2",
        "--chunk-size",
        "1MiB",
        // The coordinator waits at `hold` until the gate is closed.
        "--lock-wait-timeout",
        "10m",
    ])
    .args(extra)
    .arg("--out")
    .arg(out)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Starts `cmd` (a backup of `db`) with the gate closed before any worker can reach it;
/// returns the backup and the gate's lock.
fn start_gated(db: &str, cmd: &mut Command) -> (Child, Lock) {
    let hold = gate::hold_backup(db);
    let backup = cmd.spawn().expect("spawn dbbackup");
    (backup, gate::close_gate(db, hold))
}

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("wait for dbbackup")
}

fn restore_and_compare(src: &str, backup: &Path) {
    let c = cluster();
    let target = c.unique_db("faults_dst");
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(backup)
            .args(["--dbname", &target, "--create", "--quiet"]),
    );
    assert_same(&c.fingerprint(src), &c.fingerprint(&target));
    c.drop_db(&target);
}

fn unit_snapshots(m: &serde_json::Value) -> Vec<(String, u64, Option<String>)> {
    m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["units"].as_array().unwrap().iter().map(move |u| {
                (
                    t["name"].as_str().unwrap().to_string(),
                    u["index"].as_u64().unwrap(),
                    u["snapshot"].as_str().map(str::to_string),
                )
            })
        })
        .collect()
}

#[test]
fn a_terminated_worker_backend_is_retried_in_the_same_snapshot() {
    let c = cluster();
    let db = gated_db("faults_retry");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let (backup, gate) = start_gated(&db, &mut backup_cmd(&db, &out, &[]));
    let pid = gate::wait_for_blocked_copy(&db, &[]);
    c.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    // The retry, on a new connection in the same snapshot, finds the gate still closed; then
    // the gate opens.
    gate::wait_for_blocked_copy(&db, &[&pid]);
    gate.release();
    let o = finish(backup);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "backup failed: {stderr}");
    assert!(
        stderr.contains("retrying table public.gate"),
        "no retry logged: {stderr}"
    );
    let m = manifest(&out);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["consistent"], true);
    let snapshot = m["snapshot"].as_str().unwrap().to_string();
    for (table, unit, snap) in unit_snapshots(&m) {
        assert_eq!(
            snap.as_deref(),
            Some(snapshot.as_str()),
            "{table} unit {unit}"
        );
    }
    restore_and_compare(&db, &out);
}

/// `backup single --resume` of the gated database with the killed test's options.
fn resume(db: &str, out: &Path, chunk_size: &str, extra: &[&str]) -> Command {
    let mut cmd = dbbackup();
    cmd.args([
        "backup",
        "single",
        "--format",
        "native",
        db,
        "--chunk-size",
        chunk_size,
    ])
    .args(["--split-tables-larger-than", "4MiB", "--resume"])
    .args(extra)
    .arg("--out")
    .arg(out);
    cmd
}

#[test]
fn a_killed_backup_resumes_redoing_only_missing_and_corrupted_units_and_their_tables() {
    let db = gated_db("faults_resume");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let (mut backup, gate) = start_gated(
        &db,
        &mut backup_cmd(&db, &out, &["--split-tables-larger-than", "4MiB"]),
    );
    gate::wait_for_blocked_copy(&db, &[]);
    // Wait until the manifest shows every unit but the gate's finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = manifest(&out);
        let pending: Vec<_> = unit_snapshots(&m)
            .into_iter()
            .filter(|(_, _, s)| s.is_none())
            .collect();
        if pending.len() == 1 && pending[0].0 == "gate" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "units never completed: {pending:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    backup.kill().unwrap(); // SIGKILL: no cleanup, no manifest update
    let _ = backup.wait();
    gate.release();
    let before = manifest(&out);
    assert_eq!(before["status"], "in_progress");
    let first_snapshot = before["snapshot"].as_str().unwrap().to_string();

    // Corrupt one finished chunk of big_events: resume must notice and redo that unit.
    let big = before["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "big_events")
        .unwrap()
        .clone();
    assert!(
        big["units"].as_array().unwrap().len() > 1,
        "big_events should be split"
    );
    let victim = big["units"][0]["chunks"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let path = out.join(&victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    // Without --allow-inconsistent, resume refuses and says why.
    let o = run_fail(&mut resume(&db, &out, "1MiB", &[]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--allow-inconsistent"));
    // With different options, it refuses too.
    let o = run_fail(&mut resume(&db, &out, "2MiB", &["--allow-inconsistent"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--chunk-size"));

    let o = run_ok(&mut resume(&db, &out, "1MiB", &["--allow-inconsistent"]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("redoing"), "{stderr}");
    let after = manifest(&out);
    assert_eq!(after["status"], "complete");
    assert_eq!(after["consistent"], false);
    for (table, unit, snap) in unit_snapshots(&after) {
        let snap = snap.expect("every unit done");
        // The corrupted unit makes big_events unfinished: a split table is read in one
        // snapshot, so all of it is read again.
        let redone = table == "gate" || table == "big_events";
        assert_eq!(
            snap != first_snapshot,
            redone,
            "{table} unit {unit}: only the gate and the table of the corrupted unit may be redone"
        );
    }
    // No leftovers of the killed run.
    let tmp_files: Vec<PathBuf> = walk(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(tmp_files.is_empty(), "{tmp_files:?}");
    let v = run_ok(dbbackup().arg("verify").arg(&out));
    assert!(String::from_utf8_lossy(&v.stderr).contains("not consistent"));
    restore_and_compare(&db, &out);

    // Resuming a complete backup does nothing, and says so.
    let o = run_ok(&mut resume(&db, &out, "1MiB", &["--allow-inconsistent"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already complete"));
    assert_eq!(manifest(&out)["finished_at"], after["finished_at"]);
}

#[test]
fn two_backups_cannot_write_the_same_directory() {
    let db = gated_db("faults_lock");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let (backup, gate) = start_gated(&db, &mut backup_cmd(&db, &out, &[]));
    gate::wait_for_blocked_copy(&db, &[]);
    let o = run_fail(support::backup_native(&db, &out).args([
        "--chunk-size",
        "1MiB",
        "--resume",
        "--allow-inconsistent",
    ]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("in use by another dbbackup"), "{stderr}");
    gate.release();
    let o = finish(backup);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !out.join(".dbbackup.lock").exists(),
        "the lock is released at the end"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A small tmpfs, mounted for the test (needs root, as CI runs).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the disk-full test mounts a tmpfs and must run as root"
        );
        let dir = tempfile::tempdir().unwrap().keep();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs failed");
        Tmpfs(dir)
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_fails_clearly_and_resume_finishes_once_space_is_freed() {
    let c = cluster();
    let db = c.unique_db("faults_enospc");
    c.create_db(&db);
    c.load_fixture(&db, "big_table.sql");
    let fs = Tmpfs::mount("3M");
    let out = fs.0.join("b");
    let o = run_fail(support::backup_native(&db, &out).args([
        "--quiet",
        "--parallel-tables",
        "1",
        "--chunk-size",
        "1MiB",
    ]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("disk full while writing"), "{stderr}");
    assert!(
        stderr.contains(&out.display().to_string()),
        "names the path: {stderr}"
    );
    let m = manifest(&out);
    assert_ne!(m["status"], "complete");
    fs.resize("200M");
    run_ok(support::backup_native(&db, &out).args([
        "--quiet",
        "--parallel-tables",
        "1",
        "--chunk-size",
        "1MiB",
        "--resume",
        "--allow-inconsistent",
    ]));
    assert_eq!(manifest(&out)["status"], "complete");
    run_ok(dbbackup().arg("verify").arg(&out));
    restore_and_compare(&db, &out);
}

#[test]
fn an_interrupted_restore_rerun_with_clean_is_exact() {
    let c = cluster();
    let db = c.unique_db("faults_rst");
    c.create_db(&db);
    c.load_fixture(&db, "hard_types.sql");
    c.load_fixture(&db, "big_table.sql");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    run_ok(support::backup_native(&db, &out).args(["--quiet", "--chunk-size", "1MiB"]));
    let target = c.unique_db("faults_rst_dst");
    c.create_db(&target);
    // Hold the restore in its data phase at the big table, each step waiting for what the
    // server shows. The schema goes in as one transaction (pg_restore): it stops at its first
    // table in `public` while another session's drop of that schema is pending.
    let locks = |cond: &str| {
        format!(
            "SELECT count(*) > 0 FROM pg_locks WHERE {cond}
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    };
    let on_public = "locktype = 'object' AND classid = 'pg_namespace'::regclass
                     AND objid = 'public'::regnamespace::oid";
    let schema = Lock::hold(&target, "BEGIN; DROP SCHEMA public;");
    c.wait_for(
        &target,
        &locks(&format!("{on_public} AND granted")),
        "t",
        120,
    );
    let mut restore = dbbackup()
        .arg("restore")
        .arg(&out)
        .args(["--dbname", &target, "--jobs", "2", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let restore_pid = nix::unistd::Pid::from_raw(restore.id() as i32);
    c.wait_for(
        &target,
        &locks(&format!("{on_public} AND NOT granted")),
        "t",
        120,
    );
    // dbbackup waits for pg_restore: stopped, it cannot begin the data until continued.
    nix::sys::signal::kill(restore_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    schema.release();
    c.wait_for(
        &target,
        "SELECT to_regclass('public.big_events') IS NOT NULL",
        "t",
        120,
    );
    let on_big = "relation = 'public.big_events'::regclass";
    let lock = gate::lock_exclusively(&target, "public.big_events");
    c.wait_for(&target, &locks(&format!("{on_big} AND granted")), "t", 120);
    nix::sys::signal::kill(restore_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    c.wait_for(
        &target,
        &locks(&format!("{on_big} AND NOT granted")),
        "t",
        120,
    );
    restore.kill().unwrap(); // SIGKILL mid-restore
    let _ = restore.wait();
    lock.release();
    // The half-restored target is not empty: a plain re-run is refused, --clean is exact.
    run_fail(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--quiet"]),
    );
    run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--clean", "--jobs", "2", "--quiet"]),
    );
    assert_same(&c.fingerprint(&db), &c.fingerprint(&target));
}

#[test]
fn resume_refuses_when_tables_changed_since_the_first_run() {
    let c = cluster();
    let db = c.unique_db("faults_changed");
    c.create_db(&db);
    c.psql(
        &db,
        "CREATE TABLE a(x int); INSERT INTO a VALUES (1); CREATE TABLE b(y int);",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let args = [
        "backup", "single", "--format", "native", &db, "--quiet", "--out",
    ];
    run_ok(dbbackup().args(args).arg(&out));
    // Pretend the run failed half-way, then change the database under it.
    let mut m = manifest(&out);
    m["status"] = "failed".into();
    m["tables"][0]["units"][0]["done"] = false.into();
    std::fs::write(out.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    c.psql(
        &db,
        "ALTER TABLE a ADD COLUMN z text; DROP TABLE b; CREATE TABLE c(w int);",
    );
    let o = run_fail(
        dbbackup()
            .args(args)
            .arg(&out)
            .args(["--resume", "--allow-inconsistent"]),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    for what in [
        "columns of public.a changed",
        "table public.b is gone",
        "table public.c is new",
    ] {
        assert!(stderr.contains(what), "{what:?} not in: {stderr}");
    }
}

#[test]
fn ctrl_c_stops_a_native_backup_cleanly_and_leaves_nothing_running() {
    let c = cluster();
    let db = gated_db("faults_sigint");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let (backup, gate) = start_gated(&db, &mut backup_cmd(&db, &out, &[]));
    let pid = backup.id();
    gate::wait_for_blocked_copy(&db, &[]);
    // The schema's pg_dump usually finished before the gate closed; if one still runs, it
    // must not survive the interrupt.
    let children = children_named(pid, "pg_dump");
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = finish(backup);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(manifest(&out)["status"], "failed");
    // The pg_dump child is gone with its whole process group.
    for child in &children {
        assert!(
            !Path::new(&format!("/proc/{child}")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "pg_dump {child} survived"
        );
    }
    // Our backends were cancelled and closed, including the one waiting for a lock: checked
    // while the gate is still closed, so nothing but the cancel could have freed it.
    c.wait_for(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = {}
             AND application_name IN ('dbbackup', 'pg_dump')",
            support::quote_literal(&db)
        ),
        "0",
        10,
    );
    gate.release();
}

/// Pids of the live children of `parent` whose command name is `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let comm = head.split_once('(').map(|x| x.1).unwrap_or("");
            let ppid = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            comm == name && ppid == Some(parent)
        })
        .collect()
}

#[test]
fn a_failing_schema_dump_stops_the_backup_without_waiting_for_the_data() {
    let db = gated_db("faults_pgdump");
    let tmp = tempfile::tempdir().unwrap();
    // A pg_dump that knows its version, waits for the test's signal, then fails as one refused
    // by the server would.
    let bin = tmp.path().join("bin");
    let go = tmp.path().join("go");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("pg_dump");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'pg_dump (PostgreSQL) 15.18'; exit 0; }}\n\
             while [ ! -e '{}' ]; do sleep 0.1; done\n\
             echo 'pg_dump: error: schema dump refused for the test' >&2\nexit 1\n",
            go.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = tmp.path().join("b");
    let mut cmd = support::backup_native(&db, &out);
    cmd.args(["--parallel-tables", "2", "--chunk-size", "1MiB"])
        .args(["--lock-wait-timeout", "10m"])
        .env("DBBACKUP_PG_BINDIR", &bin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Hold the data back at the gate, then let pg_dump fail: only the schema's failure can
    // end the backup while the gate stays closed.
    let (mut backup, gate) = start_gated(&db, &mut cmd);
    gate::wait_for_blocked_copy(&db, &[]);
    std::fs::write(&go, b"").unwrap();
    // Not a race: the gate stays closed, so only a hang could make the backup this late.
    let deadline = Instant::now() + Duration::from_secs(120);
    while backup.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            gate.release();
            let _ = backup.kill();
            panic!("the backup waited for its data although pg_dump had failed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    gate.release();
    let o = finish(backup);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("schema dump refused for the test"),
        "{stderr}"
    );
    assert_eq!(manifest(&out)["status"], "failed");
}
