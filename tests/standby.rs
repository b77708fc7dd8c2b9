//! Backups from a hot standby (issue 18), against a real primary and a streaming standby with
//! `hot_standby_feedback = off` and `max_standby_streaming_delay = 1s`, the primary under
//! pgbench writes and VACUUMs ([`pair`]).
//!
//! Nothing here waits on luck: a backup is held where a test needs it by a lock that replay
//! holds on the standby (taken on the primary, replayed, and observed in the standby's
//! `pg_locks`), and every "replay runs again" is a bounded wait on the standby's
//! `pg_get_wal_replay_pause_state()`.

#[path = "support/standby_pair.rs"]
mod standby_pair;
mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use standby_pair::{pair, serial, Pair, DB};
use support::gate::Lock;
use support::{dbbackup, dbbackup_for, manifest_json, run_fail, run_ok};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `dbbackup backup single DB --format FORMAT --out OUT` against the standby.
fn backup_on_standby(p: &Pair, format: &str, out: &Path) -> Command {
    let mut cmd = dbbackup_for(&p.standby);
    cmd.args(["backup", "single", DB, "--format", format, "--out"])
        .arg(out);
    cmd
}

/// pgbench's invariant in database `db` of the primary: every transfer moved the same delta
/// into an account, a teller, a branch and the history. Returns the history's row count.
fn assert_pgbench_invariant(db: &str) -> i64 {
    let c = support::cluster();
    let row = c.psql(
        db,
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' ||
                (SELECT sum(tbalance) FROM pgbench_tellers) || ' ' ||
                (SELECT sum(bbalance) FROM pgbench_branches) || ' ' ||
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history) || ' ' ||
                (SELECT count(*) FROM pgbench_history)",
    );
    let v: Vec<i64> = row.split(' ').map(|x| x.parse().unwrap()).collect();
    assert!(
        v[0] == v[1] && v[1] == v[2] && v[2] == v[3],
        "pgbench invariant broken in {db}: accounts {} tellers {} branches {} history {}",
        v[0],
        v[1],
        v[2],
        v[3]
    );
    v[4]
}

/// Spawns `cmd` with its output captured; stdin closed.
fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dbbackup")
}

/// Waits (bounded) for `child` to exit; returns its status and all it printed. Its stderr is
/// read to the end, which includes whatever the replay watchdog (which shares it) printed.
fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "dbbackup did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut all = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut all)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut all)
        .unwrap();
    (status, all)
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// Resumes replay if a test left it paused (its assertions failed midway).
struct ResumeAtEnd<'a>(&'a Pair);

impl Drop for ResumeAtEnd<'_> {
    fn drop(&mut self) {
        let _ = self.0.standby.try_psql(
            "postgres",
            "SELECT pg_wal_replay_resume() WHERE pg_get_wal_replay_pause_state() <> 'not paused'",
        );
    }
}

#[test]
fn pause_replay_backups_of_every_strategy_restore_with_the_invariant_intact() {
    let _serial = serial();
    let p = pair();
    let _resume = ResumeAtEnd(p);
    for format in ["native", "custom", "plain"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("b");
        let done = run_ok(backup_on_standby(p, format, &out).arg("--pause-replay"));
        let said = text(&done);
        // Resumed before dbbackup exited: no waiting needed.
        assert_eq!(p.replay_state(), "not paused", "{format}: {said}");
        for expected in [
            "standby (in recovery): hot_standby_feedback off, max_standby_streaming_delay 1s",
            "--pause-replay: WAL replay on the standby",
            "was paused for",
            "of received WAL to replay",
        ] {
            assert!(
                said.contains(expected),
                "{format}: {expected:?} missing:\n{said}"
            );
        }
        assert!(
            !said.contains("warning:"),
            "{format}: no warning when paused:\n{said}"
        );
        let m = manifest_json(&out);
        assert_eq!(m["status"], "complete", "{format}");
        assert_eq!(m["consistent"], true, "{format}");
        assert_eq!(m["probe"]["standby"]["hot_standby_feedback"], false);
        assert_eq!(
            m["probe"]["standby"]["max_standby_streaming_delay_ms"],
            1000
        );

        let target = support::cluster().unique_db(&format!("restored_{format}"));
        run_ok(
            dbbackup()
                .arg("restore")
                .arg(&out)
                .args(["--dbname", &target, "--create", "--quiet"]),
        );
        let history = assert_pgbench_invariant(&target);
        assert!(
            history > 0,
            "{format}: the load wrote nothing before the backup"
        );
        support::cluster().drop_db(&target);
    }
}

#[test]
fn without_the_flag_replay_cancels_the_backup_and_the_error_names_conflict_and_remedies() {
    let _serial = serial();
    let p = pair();
    // native: the coordinator's probe; custom: the strategy probe before pg_dump.
    for format in ["native", "custom"] {
        cancelled_without_the_flag(p, format);
    }
}

fn cancelled_without_the_flag(p: &Pair, format: &str) {
    p.catch_up();
    // Replay takes this lock on the standby; the backup's probe reads pg_shdescription (the
    // database's comment) right after its snapshot is taken, and waits there. The lock's
    // transaction is in another database, so it does not keep VACUUM in `bench` from
    // removing rows.
    let shared = p.hold_on_standby("postgres", "pg_catalog.pg_shdescription");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let child = spawn(&mut backup_on_standby(p, format, &out));
    p.wait_blocked_on(DB, "pg_shdescription");
    // Rows the backup's snapshot still sees become dead and VACUUM removes them; replay of
    // that cleanup conflicts with the snapshot and cancels it after one second. Repeated until
    // the backup ends: a VACUUM that found a concurrent pgbench transaction still running may
    // have left the rows for the next one.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the backup was never cancelled");
        p.primary.psql(
            DB,
            "UPDATE pgbench_branches SET filler = coalesce(filler, '') WHERE bid = 1; \
             VACUUM pgbench_branches;",
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (status, said) = finish(child);
    p.release(shared, "postgres", "pg_catalog.pg_shdescription");
    assert!(!status.success(), "{said}");
    for expected in [
        "conflict with recovery",
        "a recovery conflict",
        "--pause-replay",
        "hot_standby_feedback = on",
        "raise max_standby_streaming_delay",
    ] {
        assert!(said.contains(expected), "{expected:?} missing:\n{said}");
    }
    assert!(
        !said.contains("(attempt "),
        "a conflict is not retried:\n{said}"
    );
    assert!(!said.contains("--allow-inconsistent"), "{said}");
    assert_eq!(
        said.lines()
            .filter(|l| l.starts_with("dbbackup: error:"))
            .count(),
        1,
        "{said}"
    );
}

#[test]
fn replay_runs_again_after_a_failed_backup() {
    let _serial = serial();
    let p = pair();
    let _resume = ResumeAtEnd(p);
    let hold = p.hold_on_standby(DB, "hold");
    let tmp = tempfile::tempdir().unwrap();
    let failed = run_fail(backup_on_standby(p, "native", &tmp.path().join("b")).args([
        "--pause-replay",
        "--lock-wait-timeout",
        "1s",
    ]));
    // Resumed by dbbackup itself, before it exited.
    assert_eq!(p.replay_state(), "not paused");
    p.release(hold, DB, "hold");
    let said = text(&failed);
    assert!(
        said.contains("timed out after 1s waiting for an ACCESS SHARE lock on table public.hold"),
        "{said}"
    );
    assert!(said.contains("was paused for"), "{said}");
}

/// Starts a `--pause-replay` backup held by a replayed lock, waits until replay is paused and
/// the backup waits for the lock; returns it with the lock.
fn held_paused_backup(p: &Pair, out: &Path) -> (Child, Lock) {
    let hold = p.hold_on_standby(DB, "hold");
    let child = spawn(backup_on_standby(p, "native", out).arg("--pause-replay"));
    p.wait_replay("paused", 120);
    p.wait_blocked_on(DB, "hold");
    (child, hold)
}

#[test]
fn replay_runs_again_after_ctrl_c() {
    let _serial = serial();
    let p = pair();
    let _resume = ResumeAtEnd(p);
    let tmp = tempfile::tempdir().unwrap();
    let (child, hold) = held_paused_backup(p, &tmp.path().join("b"));
    signal(&child, libc::SIGINT);
    let (status, said) = finish(child);
    let state = p.replay_state();
    p.release(hold, DB, "hold");
    assert!(!status.success());
    assert_eq!(state, "not paused", "{said}");
    assert!(said.contains("interrupted"), "{said}");
    assert!(
        said.contains("was paused for"),
        "resumed by dbbackup itself:\n{said}"
    );
}

#[test]
fn replay_runs_again_after_a_timeout() {
    let _serial = serial();
    let p = pair();
    let _resume = ResumeAtEnd(p);
    let hold = p.hold_on_standby(DB, "hold");
    let tmp = tempfile::tempdir().unwrap();
    // Held by the replayed lock (the lock wait allows 60 s) until --timeout stops it.
    let child = spawn(backup_on_standby(p, "native", &tmp.path().join("b")).args([
        "--pause-replay",
        "--timeout",
        "5s",
    ]));
    let (status, said) = finish(child);
    let state = p.replay_state();
    p.release(hold, DB, "hold");
    assert!(!status.success(), "{said}");
    assert!(said.contains("timeout after 5s"), "{said}");
    assert!(
        said.contains("was paused for"),
        "resumed by dbbackup itself:\n{said}"
    );
    assert_eq!(state, "not paused", "{said}");
}

#[test]
fn replay_runs_again_after_kill_9() {
    let _serial = serial();
    let p = pair();
    let _resume = ResumeAtEnd(p);
    let tmp = tempfile::tempdir().unwrap();
    let (child, hold) = held_paused_backup(p, &tmp.path().join("b"));
    let killed = Instant::now();
    signal(&child, libc::SIGKILL);
    // The watchdog notices the closed pipe and resumes replay.
    p.wait_replay("not paused", 30);
    let took = killed.elapsed();
    let (_, said) = finish(child);
    p.release(hold, DB, "hold");
    assert!(said.contains("its watchdog resumed it"), "{said}");
    eprintln!("replay resumed {:.2}s after kill -9", took.as_secs_f64());
}

#[test]
fn replay_paused_by_someone_else_stays_paused() {
    let _serial = serial();
    let p = pair();
    let _resume = ResumeAtEnd(p);
    p.standby.psql("postgres", "SELECT pg_wal_replay_pause()");
    p.wait_replay("paused", 60);
    let tmp = tempfile::tempdir().unwrap();
    let done = run_ok(backup_on_standby(p, "native", &tmp.path().join("b")).arg("--pause-replay"));
    let said = text(&done);
    assert!(said.contains("is already paused"), "{said}");
    assert!(!said.contains("was paused for"), "{said}");
    assert_eq!(p.replay_state(), "paused", "{said}");

    // Without the flag (replay is paused, so nothing can cancel it): the probe line names the
    // standby's settings and the warning comes before the data is read.
    let done = run_ok(&mut backup_on_standby(p, "native", &tmp.path().join("c")));
    let said = text(&done);
    for expected in [
        "standby (in recovery): hot_standby_feedback off, max_standby_streaming_delay 1s",
        "warning: bench is on a standby with hot_standby_feedback off and max_standby_streaming_delay 1s",
        "at a conservative 50.0 MiB/s",
        "--pause-replay, hot_standby_feedback = on on the standby, or a larger max_standby_streaming_delay",
    ] {
        assert!(said.contains(expected), "{expected:?} missing:\n{said}");
    }
    assert_eq!(p.replay_state(), "paused");
}

#[test]
fn on_a_primary_the_flag_is_a_no_op_with_a_note() {
    let _serial = serial();
    let _ = pair();
    let tmp = tempfile::tempdir().unwrap();
    let done = run_ok(
        dbbackup()
            .args([
                "backup",
                "single",
                DB,
                "--format",
                "custom",
                "--pause-replay",
                "--out",
            ])
            .arg(tmp.path().join("b")),
    );
    let said = text(&done);
    assert!(
        said.contains("is not a standby (pg_is_in_recovery() is false)"),
        "{said}"
    );
    assert!(!said.contains("standby (in recovery)"), "{said}");
    assert!(manifest_json(&tmp.path().join("b"))["probe"]
        .get("standby")
        .is_none());
}

#[test]
fn without_the_privilege_the_flag_is_refused_up_front() {
    let _serial = serial();
    let p = pair();
    p.primary.psql(
        "postgres",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'no_pause') THEN
           CREATE ROLE no_pause LOGIN; END IF; END $$",
    );
    p.catch_up();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let refused = run_fail(
        backup_on_standby(p, "native", &out)
            .env("PGUSER", "no_pause")
            .arg("--pause-replay"),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--pause-replay: role no_pause may not execute pg_wal_replay_pause()/pg_wal_replay_resume()")
            && stderr.contains("GRANT EXECUTE ON FUNCTION"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written before the refusal");
    assert_eq!(p.replay_state(), "not paused");
}

#[test]
fn cluster_backup_pauses_once_for_the_whole_run() {
    let _serial = serial();
    let p = pair();
    let _resume = ResumeAtEnd(p);
    let tmp = tempfile::tempdir().unwrap();
    let done = run_ok(
        dbbackup_for(&p.standby)
            .args([
                "backup",
                "cluster",
                "--pause-replay",
                "--include-database",
                DB,
            ])
            .args(["--include-database", "postgres", "--out"])
            .arg(tmp.path().join("c")),
    );
    let said = text(&done);
    assert_eq!(said.matches("was paused for").count(), 1, "{said}");
    assert_eq!(
        said.matches("WAL replay on the standby").count(),
        2,
        "{said}"
    );
    assert_eq!(p.replay_state(), "not paused");
}

/// Not a standby matter, but the same promise: a backup that failed in its data phase (here a
/// worker's backend terminated, no retries) is no consistent backup, and its manifest says so.
#[test]
fn a_failed_backup_does_not_claim_to_be_consistent() {
    let c = support::cluster();
    let db = support::gate::gated_db("standby_failed");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let hold = support::gate::hold_backup(&db);
    let backup = spawn(
        dbbackup()
            .args(["backup", "single", "--format", "native", &db])
            .args(["--retries", "0", "--out"])
            .arg(&out),
    );
    let gate = support::gate::close_gate(&db, hold);
    let pid = support::gate::wait_for_blocked_copy(&db, &[]);
    c.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    let (status, said) = finish(backup);
    gate.release();
    assert!(!status.success(), "{said}");
    let m = manifest_json(&out);
    assert_eq!(m["status"], "failed", "{said}");
    assert_eq!(m["consistent"], false, "{said}");
    c.drop_db(&db);
}
