//! The server matrix: every supported PostgreSQL major (13 to 18) round-trips the fixtures in
//! every format, backs up and restores a cluster, resumes, and every older major's backup
//! restores exactly into 18 (upgrades). The rest of the suite runs on 15; this file runs on the
//! others, with the servers `scripts/test.sh` installs (a missing one fails, never skips).
//!
//! Client tools are what a host would have: Debian's 15 for servers 13 to 15, 18 for newer
//! ones, first on `PATH`, and dbbackup picks among them itself.

mod support;

use std::path::Path;

use support::{assert_same, cluster_of, dbbackup_for, quote_ident, quote_literal, run_ok, Cluster};

/// Database-level properties that must survive a restore with `--create`: owner, limit,
/// comment, encoding, locale (provider and ICU/builtin locale where the server has them), ACL
/// and settings.
fn db_facts(c: &Cluster, db: &str) -> String {
    let major = c.major();
    let locale = match major {
        ..=14 => "'libc'",
        15 => "datlocprovider::text || ':' || coalesce(daticulocale, '')",
        16 => "datlocprovider::text || ':' || coalesce(daticulocale, '') || ':' || coalesce(daticurules, '')",
        _ => "datlocprovider::text || ':' || coalesce(datlocale, '') || ':' || coalesce(daticurules, '')",
    };
    c.psql(
        "postgres",
        &format!(
            "SELECT pg_get_userbyid(datdba), datconnlimit, shobj_description(oid, 'pg_database'),
                    pg_encoding_to_char(encoding), datcollate, datctype, {locale},
                    datacl::text,
                    (SELECT string_agg(coalesce(s.setrole::regrole::text, '-') || ':' || array_to_string(setconfig, ','), ';' ORDER BY s.setrole)
                       FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
             FROM pg_database d WHERE datname = {}",
            quote_literal(db)
        ),
    )
}

/// A database with both fixtures and non-default properties (owner, comment, grants, limit,
/// settings), created with the richest locale provider the server has: libc before 15, ICU
/// from 15 (with tailoring rules from 16), builtin from 17.
fn source_db(c: &Cluster, prefix: &str) -> String {
    let db = c.unique_db(prefix);
    let owner = format!("{db}_owner");
    let q = quote_ident(&db);
    let locale = match c.major() {
        ..=14 => String::new(),
        15 => " LOCALE_PROVIDER icu ICU_LOCALE 'en-US'".into(),
        16 => " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' ICU_RULES '&a < g'".into(),
        _ => " LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'".into(),
    };
    c.psql(
        "postgres",
        &format!(
            "CREATE ROLE {o} LOGIN;
             CREATE DATABASE {q} TEMPLATE template0 ENCODING 'UTF8'{locale} OWNER {o}",
            o = quote_ident(&owner)
        ),
    );
    c.psql(
        "postgres",
        &format!(
            "COMMENT ON DATABASE {q} IS 'matrix ''source''';
             REVOKE ALL ON DATABASE {q} FROM PUBLIC;
             GRANT CONNECT ON DATABASE {q} TO PUBLIC;
             GRANT TEMPORARY ON DATABASE {q} TO {o} WITH GRANT OPTION;
             ALTER DATABASE {q} CONNECTION LIMIT 40;
             ALTER DATABASE {q} SET work_mem = '5MB';
             ALTER ROLE {o} IN DATABASE {q} SET search_path = a, \"B c\";",
            o = quote_ident(&owner)
        ),
    );
    c.load_fixture(&db, "hard_types.sql");
    c.load_fixture(&db, "big_table.sql");
    db
}

/// The same client tools' view of two databases that may live on different servers: a
/// fingerprint of `db` on `c` taken with `client`'s pg_dump and psql.
fn fingerprint_with(c: &Cluster, client: &Path, db: &str) -> support::Fingerprint {
    let mut view = c.clone();
    view.client_dir = client.to_path_buf();
    view.fingerprint(db)
}

/// Backs up `db` of `from` in `format`, restores it into `to` with `--create` under a new
/// name, and checks rows, sequences, large objects, schema (dumped by `to`'s client tools,
/// the newer ones in an upgrade) and database properties.
fn round_trip(from: &Cluster, to: &Cluster, db: &str, format: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(format);
    run_ok(
        dbbackup_for(from)
            .args(["backup", "single", db, "--quiet", "--format", format])
            .args(["--parallel-tables", "2", "--out"])
            .arg(&out),
    );
    run_ok(dbbackup_for(from).arg("verify").arg(&out));
    let target = to.unique_db(&format!("{format}_from{}", from.major()));
    run_ok(
        dbbackup_for(to)
            .arg("restore")
            .arg(&out)
            .args(["--dbname", &target, "--create", "--jobs", "2", "--quiet"]),
    );
    let mut expected = fingerprint_with(from, &to.client_dir, db);
    if from.major() != to.major() {
        // Servers print some definitions differently across majors (16 stopped qualifying
        // the columns of single-table views, for one): the schema to expect is the one the
        // stock upgrade path gives, pg_dump piped into pg_restore of the newer tools.
        expected.schema = stock_upgrade_schema(from, to, db);
    }
    assert_same(&expected, &to.fingerprint(&target));
    let (before, after) = (db_facts(from, db), db_facts(to, &target));
    if from.major() == to.major() {
        assert_eq!(before, after, "database properties of {db} ({format})");
    } else {
        // Across majors the locale columns differ in shape; compare the rest.
        let strip = |s: &str| {
            let mut f: Vec<String> = s.split('|').map(str::to_string).collect();
            f.remove(6);
            f.join("|")
        };
        assert_eq!(
            strip(&before),
            strip(&after),
            "database properties of {db} ({format})"
        );
    }
    to.drop_db(&target);
}

/// The schema of `db` moved from `from` to `to` by the newer pg_dump and pg_restore.
fn stock_upgrade_schema(from: &Cluster, to: &Cluster, db: &str) -> String {
    let reference = to.unique_db("stock_upgrade");
    to.create_db(&reference);
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("stock.dump");
    let mut dump = to.client_command("pg_dump");
    dump.envs(from.env())
        .args(["-Fc", "--schema-only", "-f"])
        .arg(&archive)
        .args(["-d", db]);
    run_ok(&mut dump);
    let mut restore = to.client_command("pg_restore");
    restore
        .args(["--exit-on-error", "--single-transaction", "-d", &reference])
        .arg(&archive);
    run_ok(&mut restore);
    let schema = to.schema_dump(&reference);
    to.drop_db(&reference);
    schema
}

fn fixtures_round_trip(major: u32) {
    let c = cluster_of(major);
    let db = source_db(c, "matrix");
    for format in ["native", "plain", "custom"] {
        round_trip(c, c, &db, format);
    }
}

/// Roles with memberships (and, from 16, the INHERIT/SET options of a grant) and two
/// databases go through `backup cluster` and `restore` of the whole backup; a database that
/// cannot take its lock fails alone and `--resume` finishes it.
fn cluster_round_trip_and_resume(major: u32) {
    let c = cluster_of(major);
    let base = c.unique_db("mcl");
    let (ra, rb) = (format!("{base}_a"), format!("{base}_b"));
    let (qa, qb) = (quote_ident(&ra), quote_ident(&rb));
    let grant_options = if major >= 16 {
        " WITH ADMIN OPTION, INHERIT FALSE, SET TRUE"
    } else {
        " WITH ADMIN OPTION"
    };
    c.psql(
        "postgres",
        &format!(
            "CREATE ROLE {qa} LOGIN CONNECTION LIMIT 3 PASSWORD 'secret-a';
             CREATE ROLE {qb} NOLOGIN CREATEDB;
             GRANT {qa} TO {qb}{grant_options};
             ALTER ROLE {qb} SET work_mem = '3MB';"
        ),
    );
    let roles_sql = format!(
        "SELECT r.rolname, r.rolcanlogin, r.rolcreatedb, r.rolconnlimit, r.rolpassword IS NOT NULL,
                (SELECT string_agg(array_to_string(setconfig, ','), ';') FROM pg_db_role_setting s WHERE s.setrole = r.oid)
         FROM pg_authid r WHERE starts_with(r.rolname, {p}) ORDER BY 1",
        p = quote_literal(&base)
    );
    let members_sql = format!(
        "SELECT g.rolname, m.rolname, {extra}
         FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
         WHERE starts_with(g.rolname, {p}) ORDER BY 1, 2",
        extra = if major >= 16 {
            "a.admin_option, a.inherit_option, a.set_option"
        } else {
            "a.admin_option"
        },
        p = quote_literal(&base)
    );
    let (d1, d2) = (format!("{base}_one"), format!("{base}_two"));
    for d in [&d1, &d2] {
        c.create_db(d);
        c.psql(
            d,
            &format!(
                "CREATE TABLE t (id int PRIMARY KEY, v text);
                 INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5000) g;
                 CREATE SEQUENCE s; SELECT setval('s', 77);
                 ALTER TABLE t OWNER TO {qb};"
            ),
        );
    }
    c.psql(
        "postgres",
        &format!("ALTER DATABASE {} OWNER TO {qa}", quote_ident(&d2)),
    );
    let roles = c.psql("postgres", &roles_sql);
    let members = c.psql("postgres", &members_sql);
    let prints = [c.fingerprint(&d1), c.fingerprint(&d2)];
    let facts = [db_facts(c, &d1), db_facts(c, &d2)];

    // d2 is locked: its backup cannot take its lock and fails alone.
    let app = format!("{base}_locker");
    let mut locker = c.hold_session(
        &d2,
        &format!(
            "SET application_name = '{app}'; BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);"
        ),
    );
    c.wait_for(
        &d2,
        "SELECT count(*) > 0 FROM pg_locks WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        "t",
        60,
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let backup = |extra: &[&str]| {
        let mut cmd = dbbackup_for(c);
        cmd.args(["backup", "cluster", "--quiet", "--out"])
            .arg(&out)
            .args(["--include-database", &format!("{base}_*")])
            .args(["--format", "native", "--lock-wait-timeout", "1s"])
            .args(extra);
        cmd
    };
    let o = backup(&[]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = locker.kill();
    let _ = locker.wait();
    c.psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = {}",
            quote_literal(&app)
        ),
    );
    run_ok(&mut backup(&["--resume", "--allow-inconsistent"]));
    run_ok(dbbackup_for(c).arg("verify").arg(&out));

    for d in [&d1, &d2] {
        c.drop_db(d);
    }
    c.psql("postgres", &format!("DROP ROLE {qb}; DROP ROLE {qa};"));
    run_ok(
        dbbackup_for(c)
            .arg("restore")
            .arg(&out)
            .args(["--jobs", "2", "--quiet"]),
    );
    assert_eq!(c.psql("postgres", &roles_sql), roles, "roles");
    assert_eq!(c.psql("postgres", &members_sql), members, "memberships");
    for (i, d) in [&d1, &d2].into_iter().enumerate() {
        assert_same(&prints[i], &c.fingerprint(d));
        assert_eq!(db_facts(c, d), facts[i], "properties of {d}");
        c.drop_db(d);
    }
    c.psql("postgres", &format!("DROP ROLE {qb}; DROP ROLE {qa};"));
}

/// A backup taken on `major` restores exactly into 18 (native and custom).
fn upgrade_into_18(major: u32) {
    let from = cluster_of(major);
    let to = cluster_of(18);
    let db = source_db(from, &format!("up{major}"));
    // Roles are global: an upgrade restores them first (here by hand, as `restore` of a
    // cluster backup would).
    to.psql(
        "postgres",
        &format!(
            "CREATE ROLE {} LOGIN;
             DO $$ BEGIN CREATE ROLE fixture_reader NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             DO $$ BEGIN CREATE ROLE fixture_writer NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
            quote_ident(&format!("{db}_owner"))
        ),
    );
    for format in ["native", "custom"] {
        round_trip(from, to, &db, format);
    }
}

macro_rules! per_major {
    ($($major:literal => $fixtures:ident, $cluster:ident;)*) => {$(
        #[test]
        fn $fixtures() {
            fixtures_round_trip($major);
        }
        #[test]
        fn $cluster() {
            cluster_round_trip_and_resume($major);
        }
    )*};
}

per_major! {
    13 => server_13_round_trips_the_fixtures, server_13_cluster_backup_restore_and_resume;
    14 => server_14_round_trips_the_fixtures, server_14_cluster_backup_restore_and_resume;
    16 => server_16_round_trips_the_fixtures, server_16_cluster_backup_restore_and_resume;
    17 => server_17_round_trips_the_fixtures, server_17_cluster_backup_restore_and_resume;
    18 => server_18_round_trips_the_fixtures, server_18_cluster_backup_restore_and_resume;
}

#[test]
fn upgrade_13_to_18() {
    upgrade_into_18(13);
}

#[test]
fn upgrade_14_to_18() {
    upgrade_into_18(14);
}

#[test]
fn upgrade_15_to_18() {
    upgrade_into_18(15);
}

#[test]
fn upgrade_16_to_18() {
    upgrade_into_18(16);
}

#[test]
fn upgrade_17_to_18() {
    upgrade_into_18(17);
}
