//! A primary and a streaming hot standby, for tests/standby.rs.
//!
//! The primary is the test binary's shared cluster ([`cluster()`]); the standby is made from it
//! with `pg_basebackup -R` into its own temporary directory, on a free port, run as the
//! `postgres` OS user when we are root, with `hot_standby_feedback = off` and
//! `max_standby_streaming_delay = 1s`: replay cancels any snapshot it needs to clean up after
//! one second. The primary holds `bench`, a pgbench database (scale [`SCALE`]) under a steady
//! write load plus a VACUUM every two seconds, for the life of the test process.
//!
//! Replay is paused for the whole standby, so tests that use the pair run one at a time
//! ([`serial`]).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::gate::Lock;
use crate::support::{cluster, Cluster};

/// pgbench's scale: 5 × 100 000 accounts, about 80 MB, enough for the probe's duration
/// estimate (at 50 MiB/s) to exceed the standby's one-second delay.
pub const SCALE: u32 = 5;
/// The pgbench database.
pub const DB: &str = "bench";

pub struct Pair {
    pub primary: &'static Cluster,
    pub standby: Cluster,
    /// The load's processes (pgbench writing, pgbench vacuuming); they end with the primary.
    _load: Vec<Child>,
}

static PAIR: OnceLock<Pair> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the pair for one test at a time (a failed test does not block the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pair, set up on first use: pgbench data, standby, load.
pub fn pair() -> &'static Pair {
    PAIR.get_or_init(|| {
        let primary = cluster();
        // A set-up that failed half-way in an earlier test is done again from the start.
        primary.drop_db(DB);
        primary.create_db(DB);
        let out = primary
            .client_command("pgbench")
            .args(["-i", "-q", "-s", &SCALE.to_string(), DB])
            .stdin(Stdio::null())
            .output()
            .expect("run pgbench -i");
        assert!(
            out.status.success(),
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `hold`: a table tests lock on the primary so that replay holds the lock on the
        // standby (a backup there then waits for it).
        primary.psql(DB, "CREATE TABLE IF NOT EXISTS hold(id int)");
        let standby = start_standby(primary);
        standby.wait_for(DB, "SELECT count(*) FROM hold", "0", 120);
        let load = start_load(primary);
        Pair {
            primary,
            standby,
            _load: load,
        }
    })
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A server-side command, as the `postgres` OS user when root.
fn as_server_user(program: &Path, cwd: &Path) -> Command {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir(cwd);
    for var in [
        "PGDATA",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn chown_to_server_user(path: &Path) {
    if running_as_root() {
        let out = Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .output()
            .expect("chown");
        assert!(out.status.success(), "chown {}", path.display());
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().expect(what);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_standby(primary: &Cluster) -> Cluster {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .subsec_nanos();
    let root = PathBuf::from(format!(
        "/tmp/dbbackup-test-standby-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&root).expect("standby root");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_to_server_user(&root);
    let data_dir = root.join("data");
    let socket_dir = root.join("sock");
    std::fs::create_dir(&socket_dir).unwrap();
    chown_to_server_user(&socket_dir);
    let log_file = root.join("server.log");
    run(
        as_server_user(&primary.bin_dir.join("pg_basebackup"), &root)
            .arg("-D")
            .arg(&data_dir)
            .args(["-R", "-X", "stream", "-c", "fast", "-h"])
            .arg(&primary.socket_dir)
            .args(["-p", &primary.port.to_string(), "-U", "postgres"]),
        "pg_basebackup -R",
    );
    // Stopped when this process is gone, however it ends.
    let stop = format!(
        "cd / && {} {} -D {} -m immediate stop",
        if running_as_root() {
            "runuser -u postgres --"
        } else {
            ""
        },
        primary.bin_dir.join("pg_ctl").display(),
        data_dir.display()
    );
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {}",
        std::process::id(),
        root.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let port = free_port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses='' -c hot_standby=on \
         -c hot_standby_feedback=off -c max_standby_streaming_delay=1s \
         -c fsync=off -c max_connections=200",
        socket_dir.display()
    );
    let started = as_server_user(&primary.bin_dir.join("pg_ctl"), &root)
        .arg("-D")
        .arg(&data_dir)
        .arg("-l")
        .arg(&log_file)
        .args(["-w", "-t", "120", "-o", &options, "start"])
        .stdin(Stdio::null())
        .output()
        .expect("run pg_ctl start");
    assert!(
        started.status.success(),
        "pg_ctl start (standby) failed:\n{}\n--- log ---\n{}",
        String::from_utf8_lossy(&started.stderr),
        std::fs::read_to_string(&log_file).unwrap_or_default()
    );
    let standby = Cluster {
        port,
        socket_dir,
        bin_dir: primary.bin_dir.clone(),
        client_dir: primary.client_dir.clone(),
        data_dir,
        log_file,
        root_dir: root,
    };
    assert_eq!(
        standby.psql("postgres", "SELECT pg_is_in_recovery()"),
        "t",
        "the standby is not in recovery"
    );
    standby
}

/// pgbench's TPC-B-like writes at a bounded rate (the machine is shared) and a VACUUM of its
/// updated tables every two seconds: the cleanup records replay must apply on the standby.
fn start_load(primary: &Cluster) -> Vec<Child> {
    let script = primary.root_dir.join("vacuum.sql");
    std::fs::write(
        &script,
        "VACUUM pgbench_branches, pgbench_tellers, pgbench_accounts;\n",
    )
    .unwrap();
    let spawn = |args: &[&str]| {
        primary
            .client_command("pgbench")
            .args(args)
            .arg(DB)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pgbench")
    };
    vec![
        spawn(&["-n", "-c", "2", "-R", "100", "-T", "3600"]),
        spawn(&[
            "-n",
            "-c",
            "1",
            "-R",
            "0.5",
            "-T",
            "3600",
            "-f",
            &script.to_string_lossy(),
        ]),
    ]
}

impl Pair {
    /// The standby's replay state: 'not paused', 'pause requested' or 'paused'.
    pub fn replay_state(&self) -> String {
        self.standby
            .psql("postgres", "SELECT pg_get_wal_replay_pause_state()")
    }

    /// Waits (at most `secs`) until the standby's replay state is `want`.
    pub fn wait_replay(&self, want: &str, secs: u64) {
        self.standby.wait_for(
            "postgres",
            "SELECT pg_get_wal_replay_pause_state()",
            want,
            secs,
        );
    }

    /// Waits until the standby has replayed everything the primary wrote so far.
    pub fn catch_up(&self) {
        // The insert position: with synchronous_commit = off a commit can be past the
        // written one.
        let lsn = self
            .primary
            .psql("postgres", "SELECT pg_current_wal_insert_lsn()");
        self.standby.wait_for(
            "postgres",
            &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
            "t",
            120,
        );
    }

    /// Locks `table` of `db` exclusively on the primary (see [`Lock::hold`]) once no earlier
    /// lock on it is left on either server, and waits until replay holds it on the standby.
    pub fn hold_on_standby(&self, db: &str, table: &str) -> Lock {
        self.settle(db, table);
        let lock = Lock::hold(
            db,
            &format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;"),
        );
        self.wait_replayed_lock(db, table);
        lock
    }

    /// Ends `lock` and waits until its end is replayed: no lock on `table` is left on the
    /// primary (its backend is gone) nor on the standby.
    pub fn release(&self, lock: Lock, db: &str, table: &str) {
        lock.release();
        self.settle(db, table);
    }

    fn settle(&self, db: &str, table: &str) {
        let none = format!("SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass");
        self.primary.wait_for(db, &none, "0", 120);
        self.catch_up();
        self.standby.wait_for(db, &none, "0", 120);
    }

    /// Waits until the standby's replay holds an ACCESS EXCLUSIVE lock on `table` (of `db`),
    /// taken by a primary session.
    pub fn wait_replayed_lock(&self, db: &str, table: &str) {
        self.standby.wait_for(
            db,
            &format!(
                "SELECT count(*) > 0 FROM pg_locks WHERE relation = '{table}'::regclass
                   AND mode = 'AccessExclusiveLock' AND granted"
            ),
            "t",
            120,
        );
    }

    /// Waits until some session of the standby waits for a lock on `table` (of `db`).
    pub fn wait_blocked_on(&self, db: &str, table: &str) {
        self.standby.wait_for(
            db,
            &format!(
                "SELECT count(*) > 0 FROM pg_locks WHERE relation = '{table}'::regclass
                   AND NOT granted"
            ),
            "t",
            120,
        );
    }
}
