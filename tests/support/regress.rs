//! PostgreSQL's own regression database, built the way `pg_regress` builds it, for
//! tests/regression.rs.
//!
//! The suite's SQL (src/test/regress of the major's Debian source package) comes from
//! `scripts/test.sh` (`ensure_regress_sources`, `DBBACKUP_REGRESS<major>_DIR`). Its tests run
//! one after another through psql into a database named `regression`, with the environment and
//! database settings `pg_regress` gives them. Statements that need the C test library
//! `regress.so` fail: that is expected, what the suite leaves behind is what we back up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{client18_bin_dir, env_dir, find_pg_bin_dir, give_to_pg_user, Cluster};

/// A throwaway cluster of `major` (15 or 18) whose server is of the regression sources' minor:
/// Debian's 15 for 15; for 18 the PyPI build 18.6 (`DBBACKUP_TEST_CLIENT18_BINDIR`, the
/// client tools' directory, which has initdb and postgres too), because the 18.6 suite crashes
/// the npm 18.4 server of the matrix (`sqljson`, `hash_part`). One per major and process.
pub fn regress_cluster(major: u32) -> &'static Cluster {
    static CLUSTERS: Mutex<Vec<(u32, &'static Cluster)>> = Mutex::new(Vec::new());
    let mut clusters = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = clusters.iter().find(|(m, _)| *m == major) {
        return c;
    }
    let bin = match major {
        15 => find_pg_bin_dir(),
        18 => client18_bin_dir(),
        _ => panic!("no regression server for PostgreSQL {major}"),
    };
    // The cluster's watchdog stops it and removes its directory when the process ends.
    let c: &'static Cluster = Box::leak(Box::new(Cluster::start(bin.clone(), bin)));
    assert_eq!(
        c.major(),
        major,
        "{} is not PostgreSQL {major}",
        c.bin_dir.display()
    );
    clusters.push((major, c));
    c
}

/// What building the regression database did.
#[derive(Debug)]
pub struct RegressBuild {
    /// The suite's version (the source package's upstream version, e.g. "18.6").
    pub version: String,
    /// How long running the schedule took.
    pub elapsed: Duration,
    /// Every test of the schedule, in order, with the number of `ERROR:` lines psql printed.
    pub errors: Vec<(String, usize)>,
}

/// The tests of a `parallel_schedule`, in order (each `test:` line's group one after another).
pub fn schedule_tests(schedule: &str) -> Vec<String> {
    schedule
        .lines()
        .filter_map(|l| l.trim().strip_prefix("test:"))
        .flat_map(|group| group.split_whitespace().map(str::to_owned))
        .collect()
}

/// Builds PostgreSQL's regression database `regression` in `c` from the suite of `c`'s major.
///
/// The suite is copied into the cluster's directory, owned by the `postgres` OS user: the server
/// reads its data/ files (`COPY ... FROM :'filename'`) and writes into results/. Each test runs in
/// its own psql session (`psql -X -a -q`, as pg_regress runs it), without ON_ERROR_STOP. Panics if
/// the server crashes during a test (the test's name and the psql output tail are reported).
pub fn build_regression_db(c: &Cluster) -> RegressBuild {
    let major = c.major();
    let source = PathBuf::from(env_dir(&format!("DBBACKUP_REGRESS{major}_DIR")));
    let version = std::fs::read_to_string(source.join("VERSION"))
        .unwrap_or_else(|e| panic!("{}/VERSION: {e}", source.display()))
        .trim()
        .to_owned();
    let dir = c.root_dir.join("regress");
    copy_for_server(&source, &dir);

    // pg_regress's create_database(): from template0, with these database settings.
    c.psql(
        "postgres",
        "CREATE DATABASE regression TEMPLATE=template0;
         ALTER DATABASE regression SET lc_messages TO 'C';
         ALTER DATABASE regression SET lc_monetary TO 'C';
         ALTER DATABASE regression SET lc_numeric TO 'C';
         ALTER DATABASE regression SET lc_time TO 'C';
         ALTER DATABASE regression SET bytea_output TO 'hex';
         ALTER DATABASE regression SET timezone_abbreviations TO 'Default';",
    );

    let schedule = std::fs::read_to_string(dir.join("parallel_schedule")).expect("schedule");
    // The server's own library directory: the suite's refint/autoinc triggers load from there
    // (pg_regress copies them next to regress.so, which no binary package has).
    let libdir = c.bin_dir.join("../lib");
    let started = Instant::now();
    let mut errors = Vec::new();
    for test in schedule_tests(&schedule) {
        let sql = dir.join("sql").join(format!("{test}.sql"));
        let input = std::fs::File::open(&sql).unwrap_or_else(|e| panic!("{}: {e}", sql.display()));
        let mut cmd = c.client_command("psql");
        cmd.args(["-X", "-a", "-q", "-d", "regression"])
            .args(["-v", "HIDE_TABLEAM=on", "-v", "HIDE_TOAST_COMPRESSION=on"])
            .current_dir(&dir)
            .env("PGAPPNAME", "pg_regress")
            .env("PG_ABS_SRCDIR", &dir)
            .env("PG_ABS_BUILDDIR", &dir)
            .env("PG_LIBDIR", &libdir)
            .env("PG_DLSUFFIX", ".so")
            .env_remove("LANGUAGE")
            .env_remove("LC_ALL")
            .env("LC_MESSAGES", "C")
            .env("PGTZ", "America/Los_Angeles")
            .env("PGDATESTYLE", "Postgres, MDY")
            .env("PGOPTIONS", "-c intervalstyle=postgres_verbose")
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().expect("run psql");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::write(dir.join("results").join(format!("{test}.out")), &text);
        if text.contains("server closed the connection unexpectedly")
            || text.contains("terminated by signal")
        {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!(
                "PostgreSQL {version}'s regression test {test} crashed the server {}:\n{}",
                c.bin_dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let n = text.lines().filter(|l| l.contains("ERROR:")).count();
        errors.push((test, n));
    }
    RegressBuild {
        version,
        elapsed: started.elapsed(),
        errors,
    }
}

/// Copies the suite to `dir` (plus an empty results/) and gives it to the `postgres` OS user.
fn copy_for_server(source: &Path, dir: &Path) {
    let out = Command::new("cp")
        .arg("-R")
        .arg(source)
        .arg(dir)
        .output()
        .expect("run cp");
    assert!(
        out.status.success(),
        "copying {} to {}: {}",
        source.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(dir.join("results")).expect("create results/");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        give_to_pg_user(&p);
        if p.is_dir() {
            for entry in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(entry.expect("dir entry").path());
            }
        }
    }
}
