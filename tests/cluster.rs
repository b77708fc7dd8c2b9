//! `backup cluster` and the restore of cluster backups, against a real server.
//!
//! The test cluster is shared by every test of this binary and a cluster backup sees all of
//! its databases, so each test backs up only its own databases (`--include-database` with a
//! unique prefix), and a round trip drops its source databases (and roles) before restoring.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{assert_same, cluster, dbbackup, quote_ident, quote_literal, run_fail, run_ok};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn entry<'a>(m: &'a Value, name: &str) -> &'a Value {
    m["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("database {name:?} not in cluster manifest: {m:#}"))
}

/// Roles whose names start with `prefix`: attributes, settings, comment.
fn role_facts(prefix: &str) -> String {
    cluster().psql(
        "postgres",
        &format!(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
                    rolreplication, rolconnlimit, rolvaliduntil, rolbypassrls,
                    rolconfig::text, shobj_description(oid, 'pg_authid')
             FROM pg_roles WHERE starts_with(rolname, {p}) ORDER BY rolname",
            p = quote_literal(prefix)
        ),
    )
}

/// Memberships touching roles whose names start with `prefix`.
fn membership_facts(prefix: &str) -> String {
    cluster().psql(
        "postgres",
        &format!(
            "SELECT r.rolname, m.rolname, a.admin_option
             FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid
             JOIN pg_roles m ON m.oid = a.member
             WHERE starts_with(r.rolname, {p}) OR starts_with(m.rolname, {p}) ORDER BY 1, 2",
            p = quote_literal(prefix)
        ),
    )
}

/// Properties of database `db` (owner, limit, comment, encoding, locale, ACL, settings).
fn db_facts(db: &str) -> String {
    cluster().psql(
        "postgres",
        &format!(
            "SELECT pg_get_userbyid(datdba), datconnlimit, shobj_description(oid, 'pg_database'),
                    pg_encoding_to_char(encoding), datcollate, datctype,
                    datacl::text,
                    (SELECT string_agg(coalesce(s.setrole::regrole::text, '-') || ':' || array_to_string(setconfig, ','), ';' ORDER BY s.setrole)
                       FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
             FROM pg_database d WHERE datname = {}",
            quote_literal(db)
        ),
    )
}

/// PIDs of live processes whose environment says they work for dbbackup process `pid`
/// (`PGAPPNAME=dbbackup/<pid>/...`), with their command lines.
fn leftover_children(pid: u32) -> Vec<String> {
    let needle = format!("PGAPPNAME=dbbackup/{pid}/");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{p}/environ")) else {
            continue;
        };
        if env
            .split(|b| *b == 0)
            .any(|v| v.starts_with(needle.as_bytes()))
        {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            out.push(format!("{p}: {}", text(&cmd).replace('\0', " ")));
        }
    }
    out
}

/// Backends of dbbackup (or a pg_dump of it) connected to a database whose name starts with
/// `prefix`.
fn leftover_backends(prefix: &str) -> String {
    cluster().psql(
        "postgres",
        &format!(
            "SELECT count(*) || coalesce(': ' || string_agg(pid || ' ' || application_name || ' ' || datname || ' ' || state || ' ' || query, '; '), '')
             FROM pg_stat_activity
             WHERE (application_name LIKE 'dbbackup%' OR application_name = 'pg_dump')
               AND starts_with(datname, {})",
            quote_literal(prefix)
        ),
    )
}

fn wait_until(db: &str, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster().psql(db, sql) != "t" {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn cluster_round_trip_restores_databases_roles_and_properties() {
    let c = cluster();
    let base = c.unique_db("clrt");
    // Three databases, three strategies; names with quotes, spaces, upper case and unicode.
    let db_native = format!("{base}_Nätive");
    let db_custom = format!("{base}_ \"Qu'oted\" Ünï/Db");
    let db_plain = format!("{base}_plain");
    let owner = format!("{base}_owner");
    let quoted_role = format!("{base}_Rôle \"x\" y");
    let (qo, qr) = (quote_ident(&owner), quote_ident(&quoted_role));

    c.psql(
        "postgres",
        &format!(
            "CREATE ROLE {qo} LOGIN CONNECTION LIMIT 4 VALID UNTIL '2031-01-01 00:00:00+00';
             CREATE ROLE {qr} NOLOGIN CREATEDB;
             GRANT {qo} TO {qr} WITH ADMIN OPTION;
             ALTER ROLE {qr} SET work_mem = '3MB';
             ALTER ROLE {qo} SET search_path = a, \"B c\";
             COMMENT ON ROLE {qr} IS 'the ''quoted'' role';"
        ),
    );
    for db in [&db_native, &db_custom, &db_plain] {
        c.create_db(db);
    }
    let (qn, qc, qp) = (
        quote_ident(&db_native),
        quote_ident(&db_custom),
        quote_ident(&db_plain),
    );
    c.psql(
        "postgres",
        &format!(
            "ALTER DATABASE {qn} OWNER TO {qo};
             ALTER DATABASE {qc} OWNER TO {qr};
             COMMENT ON DATABASE {qc} IS 'Ünï ''comment''';
             REVOKE ALL ON DATABASE {qc} FROM PUBLIC;
             GRANT CONNECT, TEMPORARY ON DATABASE {qc} TO {qo};
             ALTER DATABASE {qc} SET work_mem = '5MB';
             ALTER ROLE {qr} IN DATABASE {qc} SET statement_timeout = '1min';
             ALTER DATABASE {qp} CONNECTION LIMIT 9;
             ALTER DATABASE {qp} SET search_path = \"$user\", public, extra;"
        ),
    );
    c.load_fixture(&db_native, "hard_types.sql");
    c.psql(
        &db_custom,
        &format!(
            "CREATE TABLE \"Tâble \"\"q\"\"\" (id int PRIMARY KEY, v text);
             INSERT INTO \"Tâble \"\"q\"\"\" SELECT g, 'v' || g FROM generate_series(1, 500) g;
             ALTER TABLE \"Tâble \"\"q\"\"\" OWNER TO {qr};
             GRANT SELECT ON \"Tâble \"\"q\"\"\" TO {qo};"
        ),
    );
    c.psql(
        &db_plain,
        &format!(
            "CREATE TABLE t (id bigint PRIMARY KEY, payload text);
             INSERT INTO t SELECT g, repeat('x', g % 100) FROM generate_series(1, 20000) g;
             CREATE SEQUENCE s; SELECT setval('s', 42);
             ALTER TABLE t OWNER TO {qo};"
        ),
    );

    let dbs = [&db_native, &db_custom, &db_plain];
    let prints: Vec<_> = dbs.iter().map(|d| c.fingerprint(d)).collect();
    let props: Vec<_> = dbs.iter().map(|d| db_facts(d)).collect();
    let roles = role_facts(&base);
    let members = membership_facts(&base);
    assert!(roles.lines().count() == 2, "{roles}");
    assert!(!members.is_empty());

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let o = run_ok(
        dbbackup()
            .args(["backup", "cluster", "--quiet", "--out"])
            .arg(&out)
            .args(["--include-database", &format!("{base}_*")])
            .args(["--database-format", &format!("{base}_N*=native")])
            .args(["--database-format", &format!("{base}_plain=plain")])
            // No explicit --parallel-tables: auto picks custom for the small quoted database.
            .args(["--parallel-databases", "2", "--timeout", "5m"]),
    );
    let summary = text(&o.stdout);
    for db in &dbs {
        assert!(
            summary.contains(db.as_str()),
            "summary lacks {db}:\n{summary}"
        );
    }

    // The cluster manifest.
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["kind"], "cluster");
    assert_eq!(m["status"], "complete", "{m:#}");
    assert_eq!(m["globals"]["status"], "complete");
    assert_eq!(m["globals"]["role_passwords"], true);
    assert!(out
        .join(m["globals"]["file"]["file"].as_str().unwrap())
        .is_file());
    assert_eq!(m["databases"].as_array().unwrap().len(), 3, "{m:#}");
    for (db, strategy) in [
        (&db_native, "native"),
        (&db_custom, "custom"),
        (&db_plain, "plain"),
    ] {
        let e = entry(&m, db);
        assert_eq!(e["status"], "complete");
        assert_eq!(e["strategy"], strategy, "{db}");
        let dir = e["dir"].as_str().unwrap();
        assert!(
            dir.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-%".contains(&b)),
            "unsafe directory name {dir:?}"
        );
        let dbm = read_json(&out.join(dir).join("manifest.json"));
        assert_eq!(dbm["status"], "complete");
        assert_eq!(dbm["database"]["name"], db.as_str());
        assert!(e["duration_secs"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        entry(&m, &db_custom)["dir"],
        format!("{base}_%20%22Qu%27oted%22%20%C3%9Cn%C3%AF%2FDb")
    );
    run_ok(dbbackup().arg("verify").arg(&out));

    // Drop what the backup holds: databases first (the roles own them), then the roles.
    for db in &dbs {
        c.drop_db(db);
    }
    c.psql("postgres", &format!("DROP ROLE {qr}; DROP ROLE {qo};"));
    assert_eq!(role_facts(&base), "");

    let o = run_ok(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--jobs", "2", "--quiet"]),
    );
    let stderr = text(&o.stderr);
    assert!(
        // hard_types.sql made fixture_reader; roles outlive the databases that were dropped.
        stderr.contains("role \"fixture_reader\" already exists"),
        "existing roles are reported:\n{}",
        describe(&o)
    );
    assert_eq!(role_facts(&base), roles, "roles differ after restore");
    assert_eq!(membership_facts(&base), members, "memberships differ");
    for (i, db) in dbs.iter().enumerate() {
        assert_same(&prints[i], &c.fingerprint(db));
        assert_eq!(db_facts(db), props[i], "properties of {db}");
    }

    // A database that exists is refused unless --clean; --database picks a subset.
    let o =
        run_fail(
            dbbackup()
                .arg("restore")
                .arg(&out)
                .args(["--database", &db_custom, "--quiet"]),
        );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        text(&o.stdout).contains("already exists"),
        "{}",
        describe(&o)
    );
    assert!(
        !text(&o.stdout).contains(&db_plain),
        "only the chosen database: {}",
        describe(&o)
    );
    c.psql(&db_custom, "DELETE FROM \"Tâble \"\"q\"\"\" WHERE id > 10");
    run_ok(dbbackup().arg("restore").arg(&out).args([
        "--database",
        &db_custom,
        "--clean",
        "--quiet",
    ]));
    assert_same(&prints[1], &c.fingerprint(&db_custom));
    assert_eq!(db_facts(&db_custom), props[1]);

    // Usage: --dbname makes no sense for a cluster backup, and a name not in it is refused.
    let o = run_fail(dbbackup().arg("restore").arg(&out).args(["--dbname", "x"]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let o = run_fail(
        dbbackup()
            .arg("restore")
            .arg(&out)
            .args(["--database", "no_such_db_in_backup"]),
    );
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));

    // A single-database backup still needs --dbname.
    let single = out.join(entry(&m, &db_plain)["dir"].as_str().unwrap());
    let o = run_fail(dbbackup().arg("restore").arg(&single));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(text(&o.stderr).contains("--dbname"), "{}", describe(&o));

    for db in &dbs {
        c.drop_db(db);
    }
    c.psql("postgres", &format!("DROP ROLE {qr}; DROP ROLE {qo};"));
}

/// A psql session holding an ACCESS EXCLUSIVE lock on `table` in `db` until it is terminated
/// (by its application_name `app`); ten minutes at most.
fn hold_lock(db: &str, table: &str, app: &str) -> std::process::Child {
    let c = cluster();
    c.client_command("psql")
        .env("PGAPPNAME", app)
        .args(["-X", "-q", "-d", &c.conninfo(db), "-c"])
        .arg(format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);",
            quote_ident(table)
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn psql")
}

/// `--timeout` below: the locked database waits for it; the others must finish within it.
const TIMEOUT: &str = "15s";

#[test]
fn timeout_and_dropped_database_fail_alone_and_leave_nothing_behind() {
    let c = cluster();
    let base = c.unique_db("clto");
    let locked = format!("{base}_locked");
    let ok = format!("{base}_ok");
    let dropped = format!("{base}_zdrop");
    let skipped = format!("{base}_skip1");
    for db in [&locked, &ok, &dropped, &skipped] {
        c.create_db(db);
    }
    // Sizes make the order (largest first): locked, ok, then the empty ones.
    c.psql(
        &locked,
        "CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, repeat('y', 200) FROM generate_series(1, 20000) g;",
    );
    c.psql(
        &ok,
        "CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, repeat('y', 100) FROM generate_series(1, 2000) g;",
    );
    let ok_print = c.fingerprint(&ok);

    let locker_app = format!("{base}_locker");
    let mut locker = hold_lock(&locked, "t", &locker_app);
    wait_until(
        &locked,
        "SELECT count(*) > 0 FROM pg_locks WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        "the ACCESS EXCLUSIVE lock",
    );

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let started = Instant::now();
    let mut cmd = dbbackup();
    cmd.args(["backup", "cluster", "--quiet", "--out"])
        .arg(&out)
        .args(["--include-database", &format!("{base}_*")])
        .args(["--exclude-database", &format!("{base}_skip?")])
        .args(["--timeout", TIMEOUT, "--parallel-databases", "1"])
        .args(["--parallel-tables", "2", "--format", "native"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn dbbackup");
    let pid = child.id();
    // While the locked database is being tried, drop one that is still to come.
    wait_until(
        "postgres",
        &format!(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = {} AND application_name LIKE 'dbbackup/{pid}/%'",
            quote_literal(&locked)
        ),
        "the backup to connect to the locked database",
    );
    c.drop_db(&dropped);
    let o = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    // A hang detector; the errors below say that the timeout stopped the locked database.
    assert!(elapsed < Duration::from_secs(180), "took {elapsed:?}");

    // Checked while the lock is still held: a backend of ours waiting for it would still be
    // there, and so would a pg_dump blocked behind it.
    assert_eq!(leftover_backends(&base), "0", "backends left behind");
    assert_eq!(
        leftover_children(pid),
        Vec::<String>::new(),
        "child processes left behind"
    );

    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["status"], "failed");
    let l = entry(&m, &locked);
    assert_eq!(l["status"], "failed");
    let timed_out = format!("timeout after {TIMEOUT}");
    assert_eq!(l["error"], timed_out);
    assert_eq!(l["timed_out"], true);
    let lm = read_json(&out.join(l["dir"].as_str().unwrap()).join("manifest.json"));
    assert_eq!(lm["status"], "failed");
    assert_eq!(lm["error"], timed_out);
    assert_eq!(entry(&m, &ok)["status"], "complete");
    let d = entry(&m, &dropped);
    assert_eq!(d["status"], "failed");
    assert!(
        d["error"].as_str().unwrap().contains("does not exist"),
        "{d:#}"
    );
    assert!(
        !m["databases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == skipped.as_str()),
        "--exclude-database pattern ignored"
    );
    let stdout = text(&o.stdout);
    assert!(stdout.contains(&timed_out), "summary:\n{stdout}");
    assert!(
        stdout.contains(&ok) && stdout.contains("complete"),
        "summary:\n{stdout}"
    );
    assert!(text(&o.stderr).contains("2 problem(s)"), "{}", describe(&o));

    // The complete database restores; the failed one is reported, not restored.
    c.drop_db(&ok);
    let r = run_fail(dbbackup().arg("restore").arg(&out).arg("--quiet"));
    assert_eq!(r.status.code(), Some(1), "{}", describe(&r));
    assert!(
        text(&r.stdout).contains("its backup failed"),
        "{}",
        describe(&r)
    );
    assert_same(&ok_print, &c.fingerprint(&ok));

    // backup single --timeout behaves the same.
    let single = tmp.path().join("single");
    let mut cmd = dbbackup();
    cmd.args(["backup", "single", &locked, "--quiet", "--timeout", "2s"])
        .args(["--format", "native", "--parallel-tables", "2", "--out"])
        .arg(&single)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains("timeout after 2s"),
        "{}",
        describe(&o)
    );
    assert_eq!(
        read_json(&single.join("manifest.json"))["error"],
        "timeout after 2s"
    );
    assert_eq!(leftover_backends(&base), "0", "backends left behind");
    assert_eq!(leftover_children(pid), Vec::<String>::new());

    c.psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = {}",
            quote_literal(&locker_app)
        ),
    );
    let _ = locker.wait();
    for db in [&locked, &ok, &skipped] {
        c.drop_db(db);
    }
}

#[test]
fn too_few_free_connections_is_a_clear_error_before_anything_is_written() {
    let c = cluster();
    let base = c.unique_db("clconn");
    let (a, b) = (format!("{base}_a"), format!("{base}_b"));
    c.create_db(&a);
    c.create_db(&b);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let o = run_fail(
        dbbackup()
            .args(["backup", "cluster", "--quiet", "--out"])
            .arg(&out)
            .args(["--include-database", &format!("{base}_*")])
            .args(["--parallel-databases", "2", "--parallel-tables", "150"])
            .args(["--format", "native"]),
    );
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("not enough free server connections") && err.contains("--parallel-databases"),
        "{err}"
    );
    assert!(!out.exists(), "nothing may be written");
    c.drop_db(&a);
    c.drop_db(&b);
}

#[test]
fn usage_errors() {
    let o = run_fail(dbbackup().args([
        "backup",
        "cluster",
        "--out",
        "/nonexistent/x",
        "--timeout",
        "soon",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    let o = run_fail(Command::new(env!("CARGO_BIN_EXE_dbbackup")).args([
        "backup",
        "cluster",
        "--out",
        "/nonexistent/x",
        "--database-format",
        "x=fast",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
}

#[test]
fn non_superuser_gets_globals_without_role_passwords_and_is_told() {
    let c = cluster();
    let base = c.unique_db("clnosu");
    let role = format!("{base}_backup");
    let db = format!("{base}_db");
    c.psql(
        "postgres",
        &format!(
            "CREATE ROLE {} LOGIN PASSWORD 'not-in-backup'",
            quote_ident(&role)
        ),
    );
    c.create_db(&db);
    c.psql(
        "postgres",
        &format!(
            "ALTER DATABASE {} OWNER TO {}",
            quote_ident(&db),
            quote_ident(&role)
        ),
    );
    c.psql(
        &db,
        &format!(
            "SET ROLE {}; CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g;",
            quote_ident(&role)
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let o = run_ok(
        dbbackup()
            .args(["-U", &role, "backup", "cluster", "--out"])
            .arg(&out)
            .args(["--include-database", &db, "--format", "custom"])
            .args(["--compress", "none"]),
    );
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(all.contains("--no-role-passwords"), "{}", describe(&o));
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["status"], "complete", "{m:#}");
    assert_eq!(m["globals"]["role_passwords"], false);
    assert!(m["globals"]["notes"][0]
        .as_str()
        .unwrap()
        .contains("role passwords are NOT in this backup"));
    assert_eq!(entry(&m, &db)["status"], "complete");
    let globals =
        text(&std::fs::read(out.join(m["globals"]["file"]["file"].as_str().unwrap())).unwrap());
    assert!(
        globals.contains(&format!("CREATE ROLE {role};")),
        "{globals}"
    );
    assert!(!globals.contains("SCRAM-SHA-256"), "{globals}");
    c.drop_db(&db);
    c.psql("postgres", &format!("DROP ROLE {}", quote_ident(&role)));
}

#[test]
fn resume_skips_complete_databases_and_finishes_the_failed_one() {
    let c = cluster();
    let base = c.unique_db("clres");
    let locked = format!("{base}_locked");
    let ok = format!("{base}_ok");
    for db in [&locked, &ok] {
        c.create_db(db);
        c.psql(
            db,
            "CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3000) g;",
        );
    }
    let app = format!("{base}_locker");
    let mut locker = hold_lock(&locked, "t", &app);
    wait_until(
        &locked,
        "SELECT count(*) > 0 FROM pg_locks WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        "the ACCESS EXCLUSIVE lock",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let args = |extra: &[&str]| {
        let mut cmd = dbbackup();
        cmd.args(["backup", "cluster", "--quiet", "--out"])
            .arg(&out)
            .args(["--include-database", &format!("{base}_*")])
            .args([
                "--timeout",
                TIMEOUT,
                "--parallel-tables",
                "2",
                "--format",
                "native",
            ])
            .args(extra);
        cmd
    };
    let o = args(&[]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let first = read_json(&out.join("manifest.json"));
    assert_eq!(entry(&first, &locked)["status"], "failed");
    assert_eq!(entry(&first, &ok)["status"], "complete");
    let ok_dir = out.join(entry(&first, &ok)["dir"].as_str().unwrap());
    let ok_finished = read_json(&ok_dir.join("manifest.json"))["finished_at"].clone();

    let _ = locker.kill();
    let _ = locker.wait();
    c.psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = {}",
            quote_literal(&app)
        ),
    );
    let o = args(&["--resume", "--allow-inconsistent"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe(&o));
    let second = read_json(&out.join("manifest.json"));
    assert_eq!(second["status"], "complete");
    assert_eq!(entry(&second, &locked)["status"], "complete");
    // The complete database was skipped whole: its manifest was not rewritten.
    assert_eq!(
        read_json(&ok_dir.join("manifest.json"))["finished_at"],
        ok_finished
    );
    let verify = dbbackup().arg("verify").arg(&out).output().unwrap();
    assert!(verify.status.success(), "{}", describe(&verify));
}
