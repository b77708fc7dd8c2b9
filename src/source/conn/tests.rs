use super::pgpass::{parse_pgpass, parse_pgpass_line};
use super::*;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    let map: HashMap<&str, &str> = pairs.iter().copied().collect();
    move |k| map.get(k).map(|v| v.to_string())
}

fn resolve(opts: &ConnectOptions, pairs: &[(&str, &str)]) -> Result<ConnParams> {
    ConnParams::resolve_with(opts, &env_of(pairs), None)
}

fn flags(host: &str, port: u16, user: &str) -> ConnectOptions {
    ConnectOptions {
        host: Some(host.into()),
        port: Some(port),
        username: Some(user.into()),
    }
}

/// Params with a pgpass file's contents (no file system involved).
fn with_pgpass(host: &str, port: u16, user: &str, pgpass: &str) -> ConnParams {
    let mut p = resolve(&flags(host, port, user), &[]).unwrap();
    p.pgpass = parse_pgpass(pgpass);
    p
}

#[test]
fn flags_beat_env_beat_defaults() {
    let env = [
        ("PGHOST", "envhost"),
        ("PGPORT", "6543"),
        ("PGUSER", "envuser"),
    ];
    let p = resolve(&flags("flaghost", 7777, "flaguser"), &env).unwrap();
    assert_eq!(
        (p.host.as_str(), p.port, p.user.as_str()),
        ("flaghost", 7777, "flaguser")
    );

    let p = resolve(&ConnectOptions::default(), &env).unwrap();
    assert_eq!(
        (p.host.as_str(), p.port, p.user.as_str()),
        ("envhost", 6543, "envuser")
    );

    let p = resolve(&ConnectOptions::default(), &[]).unwrap();
    assert!(
        p.host == "/var/run/postgresql" || p.host == "/tmp",
        "{}",
        p.host
    );
    assert_eq!(p.port, 5432);
    let os_user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    assert_eq!(p.user, os_user.name);
    assert_eq!(p.maintenance_db, "postgres");
    assert_eq!(p.sslmode, SslMode::Prefer);
    assert_eq!(p.connect_timeout, None);
    assert_eq!(p.application_name, "dbbackup");
    assert_eq!(p.password(), None);

    // Empty variables count as unset.
    let p = resolve(
        &ConnectOptions::default(),
        &[("PGPORT", ""), ("PGUSER", "")],
    )
    .unwrap();
    assert_eq!((p.port, p.user.as_str()), (5432, os_user.name.as_str()));
}

#[test]
fn other_env_settings() {
    let p = resolve(
        &ConnectOptions::default(),
        &[
            ("PGDATABASE", "maint"),
            ("PGCONNECT_TIMEOUT", "10"),
            ("PGSSLMODE", "disable"),
        ],
    )
    .unwrap();
    assert_eq!(p.maintenance_db, "maint");
    assert_eq!(p.connect_timeout, Some(Duration::from_secs(10)));
    assert_eq!(p.sslmode, SslMode::Disable);

    let timeout = |v| resolve(&ConnectOptions::default(), &[("PGCONNECT_TIMEOUT", v)]);
    assert_eq!(timeout("0").unwrap().connect_timeout, None);
    assert_eq!(timeout("-5").unwrap().connect_timeout, None);
    assert_eq!(
        timeout("1").unwrap().connect_timeout,
        Some(Duration::from_secs(2))
    );
    assert!(matches!(timeout("soon"), Err(Error::Usage(_))));

    let bad_port = resolve(&ConnectOptions::default(), &[("PGPORT", "99999")]);
    assert!(matches!(bad_port, Err(Error::Usage(m)) if m.contains("PGPORT")));
    let multi = resolve(&ConnectOptions::default(), &[("PGHOST", "a,b")]);
    assert!(matches!(multi, Err(Error::Usage(_))));
}

#[test]
fn sslmode_parsing_and_mapping() {
    for m in [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ] {
        assert_eq!(SslMode::parse(m).unwrap().as_str(), m);
        // Every mode resolves; TLS file problems surface when a TCP connection needs TLS.
        let p = resolve(&ConnectOptions::default(), &[("PGSSLMODE", m)]).unwrap();
        assert_eq!(p.sslmode.as_str(), m);
    }
    assert_eq!(SslMode::parse("Prefer"), None);
    assert!(matches!(
        resolve(&ConnectOptions::default(), &[("PGSSLMODE", "bogus")]),
        Err(Error::Usage(_))
    ));

    use tokio_postgres::config::SslMode as Tp;
    let tcp = |m| resolve(&flags("db", 5432, "u"), &[("PGSSLMODE", m)]).unwrap();
    let expected = [
        ("disable", Tp::Disable),
        ("allow", Tp::Prefer),
        ("prefer", Tp::Prefer),
        ("require", Tp::Require),
        ("verify-ca", Tp::Require),
        ("verify-full", Tp::Require),
    ];
    for (m, tp) in expected {
        assert_eq!(tcp(m).pg_config("d").get_ssl_mode(), tp, "{m}");
        assert_eq!(tcp(m).tls.is_some(), m != "disable", "{m}");
    }
    // Unix sockets never use TLS.
    let sock = resolve(&flags("/sock", 5432, "u"), &[("PGSSLMODE", "verify-full")]).unwrap();
    assert_eq!(sock.pg_config("d").get_ssl_mode(), Tp::Disable);
}

#[tokio::test]
async fn verify_modes_without_root_cert_fail_clearly_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    for m in ["verify-ca", "verify-full"] {
        // Port 1 on a TEST-NET address: the check must come before any network traffic.
        let p = ConnParams::resolve_with(
            &flags("192.0.2.1", 1, "u"),
            &env_of(&[("PGSSLMODE", m)]),
            Some(dir.path()),
        )
        .unwrap();
        match p.connect("d").await {
            Err(Error::Usage(msg)) => {
                assert!(msg.contains(&format!("sslmode={m}")), "{msg}");
                assert!(msg.contains("192.0.2.1:1"), "{msg}");
                assert!(
                    msg.contains(".postgresql/root.crt\" does not exist"),
                    "{msg}"
                );
            }
            Err(e) => panic!("{m}: {e}"),
            Ok(_) => panic!("{m}: connected"),
        }
    }
}

#[test]
fn pgpass_wildcards_comments_first_match_and_per_database() {
    let p = with_pgpass(
        "db.example",
        5432,
        "alice",
        "# comment:*:*:*:never\n\
         too:few:fields\n\
         db.example:5432:sales:alice:sales-pw\n\
         db.example:5432:sales:alice:shadowed\n\
         db.example:6000:*:alice:wrong-port\n\
         *:*:*:bob:bobs\n\
         db.example:*:*:alice:fallback\n",
    );
    assert_eq!(p.password_for("sales"), Some("sales-pw"));
    assert_eq!(p.password_for("hr"), Some("fallback"));
    assert_eq!(p.password(), Some("fallback")); // maintenance db "postgres"

    let nobody = with_pgpass("db.example", 5432, "carol", "db.example:5432:*:alice:x\n");
    assert_eq!(nobody.password_for("sales"), None);
}

#[test]
fn pgpass_escapes() {
    let e = parse_pgpass_line(r"h\:x:5432:d\\b:u:p\:w\\d:ignored").unwrap();
    assert_eq!(e.host.as_deref(), Some("h:x"));
    assert_eq!(e.database.as_deref(), Some(r"d\b"));
    assert_eq!(e.password, r"p:w\d");
    // An escaped star is a literal '*', not a wildcard.
    let e = parse_pgpass_line(r"\*:*:*:*:pw").unwrap();
    assert_eq!(e.host.as_deref(), Some("*"));
    assert_eq!(e.port, None);
    // Windows line endings and an empty password.
    let all = parse_pgpass("h:1:d:u:pw\r\nh:1:d:u:\n");
    assert_eq!(all[0].password, "pw");
    assert_eq!(all[1].password, "");
}

#[test]
fn pgpass_socket_matches_localhost() {
    let text = "localhost:5432:*:u:local\n";
    assert_eq!(
        with_pgpass("/tmp", 5432, "u", text).password(),
        Some("local")
    );
    let text = "/sock:5432:*:u:bypath\n";
    assert_eq!(
        with_pgpass("/sock", 5432, "u", text).password(),
        Some("bypath")
    );
    // A TCP host name does not match "localhost" entries.
    assert_eq!(
        with_pgpass("db", 5432, "u", "localhost:*:*:*:x\n").password(),
        None
    );
}

#[test]
fn pgpass_file_location_permissions_and_pgpassword_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".pgpass");
    std::fs::write(&file, "h:5432:*:u:from-file\n").unwrap();
    let opts = flags("h", 5432, "u");
    let file_s = file.to_str().unwrap();

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let by_home = ConnParams::resolve_with(&opts, &env_of(&[]), Some(dir.path())).unwrap();
    assert_eq!(by_home.password(), Some("from-file"));
    let by_env = resolve(&opts, &[("PGPASSFILE", file_s)]).unwrap();
    assert_eq!(by_env.password(), Some("from-file"));
    let env_pw = [("PGPASSFILE", file_s), ("PGPASSWORD", "from-env")];
    assert_eq!(
        resolve(&opts, &env_pw).unwrap().password_for("x"),
        Some("from-env")
    );

    // Group/world readable: ignored (with a warning on stderr).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        resolve(&opts, &[("PGPASSFILE", file_s)])
            .unwrap()
            .password(),
        None
    );
    // Missing file and a directory: no password.
    let missing = dir.path().join("nope");
    let missing = [("PGPASSFILE", missing.to_str().unwrap())];
    assert_eq!(resolve(&opts, &missing).unwrap().password(), None);
    let as_dir = [("PGPASSFILE", dir.path().to_str().unwrap())];
    assert_eq!(resolve(&opts, &as_dir).unwrap().password(), None);
}

#[test]
fn child_env_and_no_password_leaks() {
    let get =
        |v: &[(String, String)], k: &str| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.clone());
    let p = resolve(&flags("/sock", 5433, "u"), &[("PGCONNECT_TIMEOUT", "7")]).unwrap();
    let env = p.child_env("sales");
    assert_eq!(get(&env, "PGHOST").as_deref(), Some("/sock"));
    assert_eq!(get(&env, "PGPORT").as_deref(), Some("5433"));
    assert_eq!(get(&env, "PGUSER").as_deref(), Some("u"));
    assert_eq!(get(&env, "PGDATABASE").as_deref(), Some("sales"));
    assert_eq!(get(&env, "PGSSLMODE").as_deref(), Some("prefer"));
    assert_eq!(get(&env, "PGAPPNAME").as_deref(), Some("dbbackup"));
    assert_eq!(get(&env, "PGCONNECT_TIMEOUT").as_deref(), Some("7"));
    assert_eq!(get(&env, "PGPASSWORD"), None);
    assert_eq!(get(&env, "PGSSLROOTCERT"), None);

    let tls_env = [
        ("PGSSLROOTCERT", "/ca.crt"),
        ("PGSSLCERT", "/me.crt"),
        ("PGSSLKEY", "/me.key"),
    ];
    let env = resolve(&flags("h", 1, "u"), &tls_env)
        .unwrap()
        .child_env("x");
    for (k, v) in tls_env {
        assert_eq!(get(&env, k).as_deref(), Some(v), "{k}");
    }

    let p = with_pgpass("/sock", 5433, "u", "*:*:sales:*:s3cret\n");
    assert_eq!(
        get(&p.child_env("sales"), "PGPASSWORD").as_deref(),
        Some("s3cret")
    );
    assert_eq!(get(&p.child_env("hr"), "PGPASSWORD"), None);
    assert_eq!(get(&p.child_env("hr"), "PGCONNECT_TIMEOUT"), None);

    let p = resolve(&flags("h", 1, "u"), &[("PGPASSWORD", "s3cret")]).unwrap();
    assert_eq!(
        get(&p.child_env("x"), "PGPASSWORD").as_deref(),
        Some("s3cret")
    );
    let shown = format!("{p:?} {}", p.describe("x"));
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("<set>"), "{shown}");
    assert_eq!(p.describe("x"), "database \"x\" on h:1 as user u");
    assert!(format!("{:?}", resolve(&flags("h", 1, "u"), &[]).unwrap()).contains("<none>"));
}

#[test]
fn pg_config_host_kind_and_password() {
    use tokio_postgres::config::Host;
    let p = with_pgpass("/sock", 5433, "u", "*:*:sales:*:pw\n");
    let c = p.pg_config("sales");
    assert!(matches!(c.get_hosts(), [Host::Unix(d)] if d == Path::new("/sock")));
    assert_eq!(c.get_ports(), &[5433]);
    assert_eq!(c.get_user(), Some("u"));
    assert_eq!(c.get_dbname(), Some("sales"));
    assert_eq!(c.get_password(), Some(&b"pw"[..]));
    assert_eq!(c.get_application_name(), Some("dbbackup"));
    assert_eq!(p.pg_config("hr").get_password(), None);

    let c = resolve(&flags("db.example", 5432, "u"), &[])
        .unwrap()
        .pg_config("d");
    assert!(matches!(c.get_hosts(), [Host::Tcp(h)] if h == "db.example"));
}

#[test]
fn clap_flags_parse_when_help_short_is_disabled() {
    use clap::Parser;
    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct Cli {
        #[command(flatten)]
        conn: ConnectOptions,
    }
    let cli = Cli::try_parse_from(["x", "-h", "/sock", "-p", "5444", "-U", "bob"]).unwrap();
    assert_eq!(cli.conn.host.as_deref(), Some("/sock"));
    assert_eq!(cli.conn.port, Some(5444));
    assert_eq!(cli.conn.username.as_deref(), Some("bob"));
}
