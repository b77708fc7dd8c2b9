//! Shared integration-test harness for `dbbackup`.
//!
//! Every integration test binary includes this module with `mod support;`. It provides:
//!
//! * [`cluster()`]: one throwaway PostgreSQL cluster per test binary, started lazily on first use
//!   and stopped (and its directory removed) when the process exits; [`cluster_of()`] does the
//!   same for another server major (13 to 18), from the binaries `scripts/test.sh` installs;
//! * [`dbbackup()`], [`run_ok()`], [`run_fail()`]: running the `dbbackup` binary against that
//!   cluster, with `pg_dump` & co. of the server's version first on `PATH`;
//! * [`Cluster::fingerprint()`] and [`assert_same()`]: a comparison of two databases (schema,
//!   table contents, sequence states, large objects) that reports precisely what differs;
//! * [`gate`]: holding a native backup still at a known point, without sleeps.
//!
//! The harness deliberately does not use the `dbbackup` library crate, so it keeps working while
//! the library is being changed. A missing PostgreSQL installation makes the tests fail (panic);
//! it never skips them.

#![allow(dead_code)]

pub mod gate;
pub mod measure;
pub mod regress;
pub mod s3;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// OS user that owns and runs the server when the tests run as root.
const PG_OS_USER: &str = "postgres";
/// Database superuser created by `initdb -U`.
const SUPERUSER: &str = "postgres";
/// psql field separator for machine-readable output (cannot occur in the values we select).
const FS: char = '\x1f';
/// psql record separator for machine-readable output.
const RS: char = '\x1e';
/// First character of every fingerprint row (see `FINGERPRINT_DATA_SQL`).
const ROW_MARK: char = '\x1d';
/// What psql prints for SQL NULL in machine-readable output.
const NULL_MARK: &str = "\x02NULL\x02";

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
/// Clusters of other majors ([`cluster_of`]), started on demand and kept for the process.
static OTHER_CLUSTERS: std::sync::Mutex<BTreeMap<u32, &'static Cluster>> =
    std::sync::Mutex::new(BTreeMap::new());
static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The shared throwaway cluster of this test binary; started on the first call (thread-safe).
///
/// Panics (failing the test) if the PostgreSQL server binaries are missing or the server does
/// not start; the panic message includes the tail of the server log.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let bin = find_pg_bin_dir();
        Cluster::start(bin.clone(), bin)
    })
}

/// A throwaway cluster of server major `major` (13 to 18), one per major and test binary.
///
/// The server binaries come from `DBBACKUP_TEST_PG<major>_BINDIR` (set by `scripts/test.sh`,
/// which installs them); the client tools are Debian's for servers up to 15 and those of
/// `DBBACKUP_TEST_CLIENT18_BINDIR` for newer ones (pg_dump must not be older than the
/// server). A missing installation fails the test.
pub fn cluster_of(major: u32) -> &'static Cluster {
    let mut clusters = OTHER_CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = clusters.get(&major) {
        return c;
    }
    let server = PathBuf::from(env_dir(&format!("DBBACKUP_TEST_PG{major}_BINDIR")));
    let client = if major <= 15 {
        find_pg_bin_dir()
    } else {
        client18_bin_dir()
    };
    let c: &'static Cluster = Box::leak(Box::new(Cluster::start(server, client)));
    assert_eq!(
        c.major(),
        major,
        "{} is not PostgreSQL {major}",
        c.bin_dir.display()
    );
    clusters.insert(major, c);
    c
}

/// The client tools of PostgreSQL 18 (pg_dump, pg_restore, psql) from `scripts/test.sh`.
pub fn client18_bin_dir() -> PathBuf {
    PathBuf::from(env_dir("DBBACKUP_TEST_CLIENT18_BINDIR"))
}

fn env_dir(var: &str) -> String {
    match std::env::var(var) {
        Ok(dir) if Path::new(&dir).is_dir() => dir,
        _ => panic!(
            "{var} is not set to a directory: run the tests with `bash scripts/test.sh`, which \
             installs PostgreSQL 13-18 into its cache and sets it"
        ),
    }
}

/// A running PostgreSQL cluster (local trust auth for the `postgres` superuser over the socket).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// TCP port (the server also listens on 127.0.0.1; TCP connections need a password).
    pub port: u16,
    /// Directory holding the Unix socket; use it as `PGHOST`.
    pub socket_dir: PathBuf,
    /// Directory with the server programs (`initdb`, `pg_ctl`, `postgres`).
    pub bin_dir: PathBuf,
    /// Directory with the client tools (`pg_dump`, `pg_restore`, `psql`) used with this server:
    /// of its major or newer.
    pub client_dir: PathBuf,
    /// The cluster's data directory.
    pub data_dir: PathBuf,
    /// Server log file.
    pub log_file: PathBuf,
    /// Temporary directory holding everything above; removed at exit.
    pub root_dir: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL binaries and root handling (the only place that knows about them)
// ---------------------------------------------------------------------------------------------

/// Locates the PostgreSQL server binaries: the highest version under `/usr/lib/postgresql/*/bin`,
/// else `pg_config --bindir`. Panics with an installation hint if neither has `initdb`/`postgres`.
fn find_pg_bin_dir() -> PathBuf {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key: Option<Vec<u64>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = entry.path().join("bin");
            Some((key?, bin)).filter(|(_, bin)| usable(bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && usable(&bin) {
            return bin;
        }
    }
    panic!(
        "PostgreSQL server binaries not found: install postgresql (apt-get install -y postgresql); \
         looked in /usr/lib/postgresql/*/bin and `pg_config --bindir`"
    );
}

/// True when the tests run as root; the server then runs as the `postgres` OS user.
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid/gid of the `postgres` OS user.
fn pg_os_user_ids() -> (u32, u32) {
    let name = CString::new(PG_OS_USER).unwrap();
    // SAFETY: getpwnam returns NULL or a pointer to a static passwd record that we read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, but there is no `{PG_OS_USER}` OS user to run the PostgreSQL server \
         (install postgresql: apt-get install -y postgresql)"
    );
    // SAFETY: pw is non-null and points to a valid passwd record.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A command for a server-side tool (`initdb`, `pg_ctl`): run as the `postgres` OS user via
/// `runuser` when we are root, directly otherwise. Runs in `cwd` with PG* connection variables
/// cleared so the caller's environment cannot redirect it.
fn server_command(program: &Path, cwd: &Path) -> Command {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--"]).arg(program);
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
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Makes `path` owned by the `postgres` OS user when we run as root (no-op otherwise).
fn give_to_pg_user(path: &Path) {
    if running_as_root() {
        let (uid, gid) = pg_os_user_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to {PG_OS_USER}: {e}", path.display()));
    }
}

fn command_failure(what: &str, cmd: &Command, out: &Output) -> String {
    format!(
        "{what} failed ({})\ncommand: {cmd:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Last `lines` lines of a file (for error messages).
fn file_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Quotes an SQL identifier (any string, including quotes and unicode).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings = on).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A libpq connection string selecting database `db` (so names containing `=` etc. are safe).
fn conninfo_for(db: &str) -> String {
    format!("dbname={}", conninfo_quote(db))
}

/// Quotes a value for a libpq connection string.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Single-quotes a word for /bin/sh.
fn shell_quote(s: impl AsRef<OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', "'\\''"))
}

// ---------------------------------------------------------------------------------------------
// Cluster lifecycle
// ---------------------------------------------------------------------------------------------

impl Cluster {
    fn start(bin_dir: PathBuf, client_dir: PathBuf) -> Cluster {
        let root_dir = make_root_dir();
        let data_dir = root_dir.join("data");
        let socket_dir = root_dir.join("sock");
        let log_file = root_dir.join("server.log");
        std::fs::create_dir(&socket_dir).expect("create socket dir");
        give_to_pg_user(&socket_dir);

        init_db(&bin_dir, &root_dir, &data_dir);

        // The port is probed and released before the server binds it; retry on a lost race.
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
                 -c fsync=off -c full_page_writes=off -c synchronous_commit=off \
                 -c shared_buffers=128MB",
                shell_quote(&socket_dir)
            );
            let mut cmd = server_command(&bin_dir.join("pg_ctl"), &root_dir);
            cmd.arg("-D")
                .arg(&data_dir)
                .arg("-l")
                .arg(&log_file)
                .args(["-w", "-t", "120", "-o", &options, "start"])
                .stdin(Stdio::null());
            let out = cmd.output().expect("run pg_ctl start");
            if out.status.success() {
                let cluster = Cluster {
                    port,
                    socket_dir,
                    bin_dir,
                    client_dir,
                    data_dir,
                    log_file,
                    root_dir,
                };
                cluster.register_cleanup();
                let answer = cluster.try_psql("postgres", "select 1");
                assert_eq!(
                    answer.as_deref(),
                    Ok("1"),
                    "server started but does not answer; log tail:\n{}",
                    file_tail(&cluster.log_file, 40)
                );
                return cluster;
            }
            last_error = format!(
                "{}\n--- server log tail ({}) ---\n{}",
                command_failure("pg_ctl start", &cmd, &out),
                log_file.display(),
                file_tail(&log_file, 40)
            );
            // A half-started server must not survive; ignore errors (it usually is not running).
            let _ = server_command(&bin_dir.join("pg_ctl"), &root_dir)
                .arg("-D")
                .arg(&data_dir)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        panic!("could not start the test PostgreSQL cluster:\n{last_error}");
    }

    /// Stops the server at process exit: an `atexit` handler (normal exit of the test harness)
    /// plus a detached watchdog that cleans up if the process is killed (e.g. Ctrl-C).
    fn register_cleanup(&self) {
        extern "C" fn stop_at_exit() {
            // Must not unwind across the FFI boundary.
            let _ = std::panic::catch_unwind(|| {
                if let Some(cluster) = CLUSTER.get() {
                    cluster.stop();
                }
                if let Ok(others) = OTHER_CLUSTERS.try_lock() {
                    others.values().for_each(|c| c.stop());
                }
            });
        }
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        // SAFETY: registering a plain extern "C" function without captured state.
        REGISTERED.call_once(|| unsafe {
            libc::atexit(stop_at_exit);
        });

        let stop = self.stop_command_line();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if [ -d {root} ]; then {stop} >/dev/null 2>&1; rm -rf {root}; fi",
            pid = std::process::id(),
            root = shell_quote(&self.root_dir),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }

    /// Shell command line stopping the server (as the `postgres` OS user when root).
    fn stop_command_line(&self) -> String {
        let pg_ctl = format!(
            "{} -D {} -m immediate stop",
            shell_quote(self.bin_dir.join("pg_ctl")),
            shell_quote(&self.data_dir)
        );
        if running_as_root() {
            format!("cd / && runuser -u {PG_OS_USER} -- {pg_ctl}")
        } else {
            format!("cd / && {pg_ctl}")
        }
    }

    /// Stops the server (immediate mode) and removes the cluster directory.
    fn stop(&self) {
        let _ = server_command(&self.bin_dir.join("pg_ctl"), Path::new("/"))
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root_dir);
    }
}

/// Creates the cluster's temporary directory (world-traversable, owned by postgres when root).
/// Unix socket paths are limited to ~107 bytes, so a very long `TMPDIR` falls back to `/tmp`.
fn make_root_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    let name = format!(
        "dbbackup-test-pg-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    );
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() + name.len() > 60 {
        base = PathBuf::from("/tmp");
    }
    let root = base.join(name);
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("create cluster dir {}: {e}", root.display()));
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
        .expect("chmod cluster dir");
    give_to_pg_user(&root);
    root
}

/// Runs initdb, with locale C.UTF-8 and a fallback to C.
fn init_db(bin_dir: &Path, root_dir: &Path, data_dir: &Path) {
    let mut failures = Vec::new();
    for locale in ["C.UTF-8", "C"] {
        let mut cmd = server_command(&bin_dir.join("initdb"), root_dir);
        cmd.arg("-D")
            .arg(data_dir)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--no-sync"])
            .arg(format!("--locale={locale}"))
            .stdin(Stdio::null());
        let out = cmd.output().expect("run initdb");
        if out.status.success() {
            return;
        }
        failures.push(command_failure("initdb", &cmd, &out));
        let _ = std::fs::remove_dir_all(data_dir);
    }
    panic!("initdb failed:\n{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

impl Cluster {
    /// Name of the database superuser (`postgres`).
    pub fn superuser(&self) -> &'static str {
        SUPERUSER
    }

    /// Connection environment for clients: `PGHOST` (socket dir), `PGPORT`, `PGUSER`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "PGHOST".into(),
                self.socket_dir.to_string_lossy().into_owned(),
            ),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), SUPERUSER.into()),
        ]
    }

    /// A libpq connection string for database `db` of the cluster (socket, port, superuser).
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} {}",
            conninfo_quote(&self.socket_dir.to_string_lossy()),
            self.port,
            conninfo_for(db)
        )
    }

    /// Path of a client program used with this server (`pg_dump`, `psql`, …).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.client_dir.join(name)
    }

    /// The server's major version, from `postgres --version` ("postgres (PostgreSQL) 17.10").
    pub fn major(&self) -> u32 {
        let out = Command::new(self.bin_dir.join("postgres"))
            .arg("--version")
            .output()
            .expect("run postgres --version");
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.split_whitespace().nth(2).unwrap_or_default();
        version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the version in {text:?}"))
    }

    /// A command for a PostgreSQL client program connected (via the environment) to the cluster.
    pub fn client_command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin(name));
        for var in [
            "PGPASSWORD",
            "PGDATABASE",
            "PGSERVICE",
            "PGOPTIONS",
            "PGSSLMODE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.env());
        cmd
    }

    /// psql with `-X -v ON_ERROR_STOP=1 -At -q`, the script fed on stdin, plus `extra` args.
    fn psql_raw(&self, db: &str, sql: &str, extra: &[&str]) -> Result<String, String> {
        let mut cmd = self.client_command("psql");
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-q"])
            .args(extra)
            .args(["-f", "-", "-d"])
            .arg(conninfo_for(db))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let mut stdin = child.stdin.take().unwrap();
        let script = sql.to_owned();
        let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait for psql: {e}"))?;
        let _ = writer.join();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(command_failure(
                &format!("psql on database {db:?}"),
                &cmd,
                &out,
            ))
        }
    }

    /// Runs SQL in `db`; returns trimmed stdout (unaligned, tuples only) or the error report.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.psql_raw(db, sql, &[]).map(|s| s.trim().to_owned())
    }

    /// Runs SQL in `db` (stops at the first error); returns trimmed stdout. Panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("{e}\n--- sql ---\n{sql}"))
    }

    /// Creates database `name` (any name: it is quoted) from template1.
    pub fn create_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        );
    }

    /// Drops database `name` if it exists, terminating its connections.
    pub fn drop_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)),
        );
    }

    /// Runs `fixtures/<file>` with `psql -v ON_ERROR_STOP=1 -f` in `db`. Panics on error.
    pub fn load_fixture(&self, db: &str, file: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(file);
        assert!(path.is_file(), "fixture {} does not exist", path.display());
        let mut cmd = self.client_command("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&path)
            .arg("-d")
            .arg(conninfo_for(db))
            .stdin(Stdio::null());
        let out = cmd.output().expect("run psql");
        if !out.status.success() {
            panic!(
                "{}",
                command_failure(&format!("loading fixture {file} into {db:?}"), &cmd, &out)
            );
        }
    }

    /// A fresh database name, unique within this process and across concurrent test binaries.
    pub fn unique_db(&self, prefix: &str) -> String {
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{}_{n}", std::process::id())
    }
}

// ---------------------------------------------------------------------------------------------
// Running dbbackup
// ---------------------------------------------------------------------------------------------

/// A command for the `dbbackup` binary, connected to the shared cluster through `PGHOST`,
/// `PGPORT`, `PGUSER`; `PGPASSWORD`/`PGDATABASE` removed; the cluster's bin dir first on `PATH`.
pub fn dbbackup() -> Command {
    dbbackup_for(cluster())
}

/// [`dbbackup()`] connected to cluster `c`, with `c`'s client tools first on `PATH` (so that
/// dbbackup's own choice among the installed client versions is what is tested).
pub fn dbbackup_for(c: &Cluster) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbbackup"));
    cmd.env_remove("PGPASSWORD")
        .env_remove("PGDATABASE")
        .envs(c.env());
    cmd.env_remove("DBBACKUP_PG_BINDIR");
    let mut path = std::ffi::OsString::from(c.client_dir.as_os_str());
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    cmd.env("PATH", path);
    cmd
}

fn describe_output(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {cmd:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to completion (stdin closed); panics with status, stdout and stderr unless it
/// succeeded.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "command failed but should have succeeded\n{}",
            describe_output(cmd, &out)
        );
    }
    out
}

/// Runs `cmd` to completion (stdin closed); panics with its output if it succeeded.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if out.status.success() {
        panic!(
            "command succeeded but should have failed\n{}",
            describe_output(cmd, &out)
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------------------------

/// Everything a backup must preserve about one database, in comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// `pg_dump --schema-only` (owners and privileges kept) without comments, blank lines and
    /// `\restrict`/`\unrestrict` lines.
    pub schema: String,
    /// `format('%I.%I', schema, table)` → (row count, md5 of the sorted row texts; '' if empty)
    /// for every table, partition, unlogged table and materialized view (rows of the relation
    /// itself, i.e. `FROM ONLY`); a never-refreshed materialized view is `(-1, "not populated")`.
    pub tables: BTreeMap<String, (i64, String)>,
    /// `format('%I.%I', schema, sequence)` → (last_value, is_called).
    pub sequences: BTreeMap<String, (i64, bool)>,
    /// Large objects ordered by OID.
    pub large_objects: Vec<LargeObject>,
}

/// A large object: (oid, owner, acl, comment, md5 of the data).
pub type LargeObject = (u32, String, Option<String>, Option<String>, String);

/// Session settings making text renderings independent of server/user defaults.
const FINGERPRINT_SETTINGS: &str = "\
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 3;
SET bytea_output = 'hex';
SET row_security = off;
SET statement_timeout = 0;
";

/// One psql session: a row per table (T), sequence (S) and large object (L). Rows are hashed as
/// `(t.*)::text`, not `t::text`, which would mean a column named `t` if there is one. Every row starts
/// with [`ROW_MARK`], because psql ends the rows of each *result set* (one per `\gexec` query)
/// with a newline rather than the record separator.
const FINGERPRINT_DATA_SQL: &str = r#"
SELECT CASE WHEN c.relkind = 'm' AND NOT c.relispopulated
            THEN format('SELECT chr(29) || %L, %L, -1, %L', 'T', format('%I.%I', n.nspname, c.relname), 'not populated')
            ELSE format('SELECT chr(29) || %L, %L, count(*), coalesce(md5(string_agg((t.*)::text, E''\n'' ORDER BY (t.*)::text COLLATE "C")), '''') FROM %s %I.%I AS t',
                        'T', format('%I.%I', n.nspname, c.relname),
                        CASE WHEN c.relkind = 'm' THEN '' ELSE 'ONLY' END, n.nspname, c.relname)
       END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
ORDER BY n.nspname, c.relname
\gexec
SELECT format('SELECT chr(29) || %L, %L, last_value, is_called FROM %I.%I', 'S', format('%I.%I', n.nspname, c.relname), n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
ORDER BY n.nspname, c.relname
\gexec
SELECT chr(29) || 'L', oid, lomowner::regrole::text, lomacl::text, obj_description(oid, 'pg_largeobject'), md5(lo_get(oid))
FROM pg_largeobject_metadata ORDER BY oid;
"#;

impl Cluster {
    /// `pg_dump --schema-only` of `db` (owners, privileges, comments kept), normalized.
    pub fn schema_dump(&self, db: &str) -> String {
        let mut cmd = self.client_command("pg_dump");
        cmd.args(["--schema-only", "-d"])
            .arg(conninfo_for(db))
            .stdin(Stdio::null());
        let out = cmd.output().expect("run pg_dump");
        if !out.status.success() {
            panic!("{}", command_failure("pg_dump --schema-only", &cmd, &out));
        }
        normalize_schema(&String::from_utf8_lossy(&out.stdout))
    }

    /// Fingerprint of database `db`: schema, table contents, sequences and large objects.
    pub fn fingerprint(&self, db: &str) -> Fingerprint {
        let schema = self.schema_dump(db);
        let script = format!("{FINGERPRINT_SETTINGS}{FINGERPRINT_DATA_SQL}");
        let fs = FS.to_string();
        let rs = RS.to_string();
        let null = format!("null={NULL_MARK}");
        let raw = self
            .psql_raw(db, &script, &["-F", &fs, "-R", &rs, "-P", &null])
            .unwrap_or_else(|e| panic!("fingerprint of {db:?}: {e}"));

        let mut fp = Fingerprint {
            schema,
            tables: BTreeMap::new(),
            sequences: BTreeMap::new(),
            large_objects: Vec::new(),
        };
        for record in raw.split(ROW_MARK).skip(1) {
            // Drop the separator psql put after the row (the last field never ends in one).
            let record = record.trim_end_matches(['\n', RS]);
            let f: Vec<&str> = record.split(FS).collect();
            let bad = || -> ! { panic!("unexpected fingerprint row from {db:?}: {record:?}") };
            let opt = |s: &str| (s != NULL_MARK).then(|| s.to_owned());
            match (f[0], f.len()) {
                ("T", 4) => {
                    let rows = f[2].parse().unwrap_or_else(|_| bad());
                    fp.tables.insert(f[1].to_owned(), (rows, f[3].to_owned()));
                }
                ("S", 4) => {
                    let last = f[2].parse().unwrap_or_else(|_| bad());
                    fp.sequences.insert(f[1].to_owned(), (last, f[3] == "t"));
                }
                ("L", 6) => {
                    let oid = f[1].parse().unwrap_or_else(|_| bad());
                    fp.large_objects.push((
                        oid,
                        f[2].to_owned(),
                        opt(f[3]),
                        opt(f[4]),
                        f[5].to_owned(),
                    ));
                }
                _ => bad(),
            }
        }
        fp
    }
}

/// Keeps the schema dump's meaningful lines: drops `--` comments, blank lines and the
/// `\restrict <key>` / `\unrestrict <key>` lines (random keys, pg_dump 15.14+).
pub fn normalize_schema(dump: &str) -> String {
    let mut out = String::with_capacity(dump.len());
    for line in dump.lines() {
        if line.starts_with("--")
            || line.trim().is_empty()
            || line.starts_with("\\restrict ")
            || line.starts_with("\\unrestrict ")
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Asserts two fingerprints are equal; otherwise panics naming every part that differs
/// (schema: the first differing region as a diff snippet; tables/sequences: names and both
/// values; large objects: the OIDs and both values).
pub fn assert_same(a: &Fingerprint, b: &Fingerprint) {
    let mut report = String::new();
    if a.schema != b.schema {
        let _ = writeln!(
            report,
            "schema differs (- left, + right):\n{}",
            schema_diff(&a.schema, &b.schema)
        );
    }
    diff_maps("table (rows, md5)", &a.tables, &b.tables, &mut report);
    diff_maps(
        "sequence (last_value, is_called)",
        &a.sequences,
        &b.sequences,
        &mut report,
    );
    let lo_a: BTreeMap<u32, _> = a
        .large_objects
        .iter()
        .map(|l| (l.0, (&l.1, &l.2, &l.3, &l.4)))
        .collect();
    let lo_b: BTreeMap<u32, _> = b
        .large_objects
        .iter()
        .map(|l| (l.0, (&l.1, &l.2, &l.3, &l.4)))
        .collect();
    diff_maps(
        "large object (owner, acl, comment, md5)",
        &lo_a,
        &lo_b,
        &mut report,
    );
    if !report.is_empty() {
        panic!("fingerprints differ:\n{report}");
    }
    assert_eq!(a, b, "fingerprints differ (unreported part)");
}

fn diff_maps<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    what: &str,
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    report: &mut String,
) {
    let keys: BTreeSet<&K> = a.keys().chain(b.keys()).collect();
    for key in keys {
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let _ = writeln!(report, "{what} {key:?}: left {x:?} != right {y:?}");
            }
            (Some(x), None) => {
                let _ = writeln!(report, "{what} {key:?}: only in left: {x:?}");
            }
            (None, Some(y)) => {
                let _ = writeln!(report, "{what} {key:?}: only in right: {y:?}");
            }
            (None, None) => unreachable!(),
        }
    }
}

/// A unified-ish diff of two schema dumps: the first few hunks (3 lines of context before each,
/// at most 30 lines per side and hunk). Hunks are found greedily: after a difference, the
/// nearest point where both sides agree again for a few lines.
fn schema_diff(a: &str, b: &str) -> String {
    const CONTEXT: usize = 3;
    const MAX_LINES: usize = 30;
    const MAX_HUNKS: usize = 6;
    let la: Vec<&str> = a.lines().collect();
    let lb: Vec<&str> = b.lines().collect();
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    for hunk in 0.. {
        while i < la.len() && j < lb.len() && la[i] == lb[j] {
            i += 1;
            j += 1;
        }
        if i == la.len() && j == lb.len() {
            break;
        }
        if hunk == MAX_HUNKS {
            let _ = writeln!(
                out,
                "… (more differences after left line {}, right line {})",
                i + 1,
                j + 1
            );
            break;
        }
        let (di, dj) = resync(&la[i..], &lb[j..]);
        let _ = writeln!(out, "@@ left line {}, right line {} @@", i + 1, j + 1);
        for line in &la[i.saturating_sub(CONTEXT)..i] {
            let _ = writeln!(out, "  {line}");
        }
        for (sign, lines) in [('-', &la[i..i + di]), ('+', &lb[j..j + dj])] {
            for line in lines.iter().take(MAX_LINES) {
                let _ = writeln!(out, "{sign} {line}");
            }
            if lines.len() > MAX_LINES {
                let _ = writeln!(out, "{sign} … ({} more lines)", lines.len() - MAX_LINES);
            }
        }
        i += di;
        j += dj;
    }
    out
}

/// Smallest (skip in `a`, skip in `b`) after which both agree on the next few lines (or both
/// end); searched within a window, else everything that remains.
fn resync(a: &[&str], b: &[&str]) -> (usize, usize) {
    const SYNC: usize = 3;
    const WINDOW: usize = 500;
    let agree = |di: usize, dj: usize| {
        let n = SYNC.min(a.len() - di).min(b.len() - dj);
        if n == 0 {
            di == a.len() && dj == b.len()
        } else {
            a[di..di + n] == b[dj..dj + n]
        }
    };
    for total in 1..=2 * WINDOW {
        for di in total.saturating_sub(WINDOW)..=total.min(WINDOW) {
            let dj = total - di;
            if di <= a.len() && dj <= b.len() && agree(di, dj) {
                return (di, dj);
            }
        }
    }
    (a.len(), b.len())
}

impl Cluster {
    /// `pg_ctl restart -m fast`: every connection is closed, the server comes back with the
    /// same options. Only for test binaries that own their cluster alone (it disrupts others).
    pub fn restart_fast(&self) {
        let out = server_command(&self.bin_dir.join("pg_ctl"), &self.root_dir)
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "120", "-m", "fast", "restart"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl restart");
        assert!(
            out.status.success(),
            "pg_ctl restart failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            file_tail(&self.log_file, 40)
        );
    }

    /// Runs `sql` in a psql session that stays open (for holding locks) until the returned
    /// child is killed.
    pub fn hold_session(&self, db: &str, sql: &str) -> std::process::Child {
        let mut cmd = self.client_command("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(conninfo_for(db))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().expect("spawn psql session")
    }

    /// Polls `sql` (a query returning one value) until it returns `want`, or panics after
    /// `secs` seconds.
    pub fn wait_for(&self, db: &str, sql: &str, want: &str, secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if self.try_psql(db, sql).as_deref() == Ok(want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {sql:?} to return {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The `manifest.json` of the backup directory `dir`, as JSON.
pub fn manifest_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// `dbbackup backup single --format native DB --out OUT`: the native backup most tests make;
/// callers add their own flags.
pub fn backup_native(db: &str, out: &Path) -> Command {
    let mut cmd = dbbackup();
    cmd.args(["backup", "single", "--format", "native", db, "--out"])
        .arg(out);
    cmd
}
