//! TLS with libpq's sslmode semantics, against a cluster with `ssl = on` (a test CA signed the
//! server's certificate for "localhost"). pg_hba rejects plain-text TCP connections of the test
//! role, so every connection that works over TCP used TLS, including pg_dump's and psql's.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dbbackup::source::conn::{ConnParams, ConnectOptions};
use dbbackup::Error;
use support::{assert_same, cluster, dbbackup, run_ok};

const ROLE: &str = "tls_admin";
const PASSWORD: &str = "tls-secret";

struct Tls {
    /// The CA that signed the server certificate.
    ca: PathBuf,
    /// A CA that signed nothing the server has.
    other_ca: PathBuf,
    /// An empty home directory (no ~/.postgresql).
    empty_home: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run openssl (apt-get install -y openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA certificate and key `<name>.crt`/`<name>.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "3650",
            "-subj",
            &format!("/CN=dbbackup test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// Turns TLS on (once per test binary) and creates the password role.
fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let c = cluster();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_ca(d, "ca");
        make_ca(d, "other_ca");
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "3650",
                "-extfile",
                "server.ext",
            ],
        );
        for f in ["server.crt", "server.key"] {
            let to = c.data_dir.join(f);
            std::fs::copy(d.join(f), &to).unwrap();
            // As root the server runs as postgres; otherwise the files are already ours.
            if nix::unistd::geteuid().is_root() {
                let chown = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&to)
                    .status()
                    .expect("run chown");
                assert!(chown.success(), "chown {}", to.display());
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // Plain-text TCP connections of the test role are refused: TLS or nothing.
        let hba = c.data_dir.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!(
                "hostnossl all {ROLE} 0.0.0.0/0 reject\nhostnossl all {ROLE} ::/0 reject\n{old}"
            ),
        )
        .unwrap();
        c.psql(
            "postgres",
            &format!(
                "CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}';
                 ALTER SYSTEM SET ssl = on;
                 ALTER SYSTEM SET ssl_cert_file = 'server.crt';
                 ALTER SYSTEM SET ssl_key_file = 'server.key';
                 SELECT pg_reload_conf();"
            ),
        );
        c.wait_for("postgres", "SHOW ssl", "on", 30);
        let empty_home = d.join("home");
        std::fs::create_dir(&empty_home).unwrap();
        Tls {
            ca: d.join("ca.crt"),
            other_ca: d.join("other_ca.crt"),
            empty_home,
            _dir: dir,
        }
    })
}

/// Params for `host` over TCP as the password role, from a fake environment (`PGPASSWORD`
/// plus `env`) and `home` (default: an empty directory).
fn params(host: &str, env: &[(&str, &str)], home: Option<&Path>) -> ConnParams {
    let t = tls();
    let opts = ConnectOptions {
        host: Some(host.into()),
        port: Some(cluster().port),
        username: Some(ROLE.into()),
    };
    let mut vars: Vec<(String, String)> = vec![("PGPASSWORD".into(), PASSWORD.into())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let lookup = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    ConnParams::resolve_with(&opts, &lookup, Some(home.unwrap_or(&t.empty_home))).unwrap()
}

/// Connects and returns whether the session uses TLS (per the server).
async fn connect_ssl(p: &ConnParams) -> Result<bool, Error> {
    let s = p.connect("postgres").await?;
    let row = s
        .client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    s.close("tls test").await.unwrap();
    Ok(row.get(0))
}

fn ca(t: &Tls) -> &str {
    t.ca.to_str().unwrap()
}

#[tokio::test]
async fn require_and_prefer_use_tls_without_verification() {
    let t = tls();
    for mode in ["require", "prefer", "allow"] {
        let p = params("127.0.0.1", &[("PGSSLMODE", mode)], None);
        assert!(connect_ssl(&p).await.unwrap(), "{mode}: session not TLS");
    }
    // The role cannot connect without TLS (pg_hba), so the check above means something.
    let p = params("127.0.0.1", &[("PGSSLMODE", "disable")], None);
    let e = connect_ssl(&p).await.unwrap_err().to_string();
    assert!(e.contains("no encryption"), "{e}");

    // libpq: require verifies the chain when a root certificate file exists (~/.postgresql).
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    let root = home.path().join(".postgresql/root.crt");
    std::fs::copy(&t.ca, &root).unwrap();
    let p = params("127.0.0.1", &[("PGSSLMODE", "require")], Some(home.path()));
    assert!(connect_ssl(&p).await.unwrap());
    std::fs::copy(&t.other_ca, &root).unwrap();
    let p = params("127.0.0.1", &[("PGSSLMODE", "require")], Some(home.path()));
    let e = connect_ssl(&p).await.unwrap_err().to_string();
    assert!(
        e.contains("sslmode=require") && e.contains("127.0.0.1"),
        "{e}"
    );
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(
        e.contains(&format!("root certificate file \"{}\"", root.display())),
        "{e}"
    );
    // prefer retries in plain text when the handshake fails (libpq), which pg_hba refuses here.
    let p = params("127.0.0.1", &[("PGSSLMODE", "prefer")], Some(home.path()));
    let e = connect_ssl(&p).await.unwrap_err().to_string();
    assert!(e.contains("no encryption"), "{e}");
}

#[tokio::test]
async fn verify_full_checks_chain_and_host_name() {
    let t = tls();
    let env = [("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca(t))];
    assert!(connect_ssl(&params("localhost", &env, None)).await.unwrap());

    // The certificate names "localhost" only, not the IP address.
    let e = connect_ssl(&params("127.0.0.1", &env, None))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.contains("127.0.0.1") && msg.contains("sslmode=verify-full"),
        "{msg}"
    );
    assert!(msg.contains("not valid for name"), "{msg}");

    // A certificate from another CA.
    let env = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", t.other_ca.to_str().unwrap()),
    ];
    let msg = connect_ssl(&params("localhost", &env, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("sslmode=verify-full") && msg.contains("invalid peer certificate"),
        "{msg}"
    );
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let t = tls();
    let env = [("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", ca(t))];
    assert!(connect_ssl(&params("127.0.0.1", &env, None)).await.unwrap());
    assert!(connect_ssl(&params("localhost", &env, None)).await.unwrap());

    let env = [
        ("PGSSLMODE", "verify-ca"),
        ("PGSSLROOTCERT", t.other_ca.to_str().unwrap()),
    ];
    let msg = connect_ssl(&params("127.0.0.1", &env, None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("sslmode=verify-ca") && msg.contains("invalid peer certificate"),
        "{msg}"
    );
}

#[tokio::test]
async fn verify_ca_without_root_certificate_fails_clearly() {
    let t = tls();
    // No PGSSLROOTCERT and no ~/.postgresql/root.crt.
    let p = params("127.0.0.1", &[("PGSSLMODE", "verify-ca")], None);
    let e = connect_ssl(&p).await.unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e:?}");
    let msg = e.to_string();
    let expected = t.empty_home.join(".postgresql/root.crt");
    assert!(
        msg.contains("sslmode=verify-ca")
            && msg.contains("127.0.0.1")
            && msg.contains(&format!("\"{}\" does not exist", expected.display())),
        "{msg}"
    );
    // A PGSSLROOTCERT that does not exist is named.
    let p = params(
        "127.0.0.1",
        &[
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", "/nonexistent/ca.crt"),
        ],
        None,
    );
    let msg = connect_ssl(&p).await.unwrap_err().to_string();
    assert!(
        msg.contains("\"/nonexistent/ca.crt\" does not exist"),
        "{msg}"
    );
    // Unix sockets never use TLS, so no root certificate is needed there.
    let c = cluster();
    let sock = ConnParams::resolve_with(
        &ConnectOptions {
            host: Some(c.socket_dir.to_string_lossy().into_owned()),
            port: Some(c.port),
            username: Some("postgres".into()),
        },
        &|k| (k == "PGSSLMODE").then(|| "verify-full".to_string()),
        Some(&t.empty_home),
    )
    .unwrap();
    assert!(!connect_ssl(&sock).await.unwrap());
}

#[tokio::test]
async fn cancel_reaches_a_session_that_requires_tls() {
    let p = params("127.0.0.1", &[("PGSSLMODE", "require")], None);
    let s = p.connect("postgres").await.unwrap();
    let token = s.cancel.clone();
    let pid = s.backend_pid;
    let canceller = tokio::spawn(async move {
        // Once the statement runs: a cancel that arrives before it is ignored.
        let running =
            format!("SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = {pid}");
        tokio::task::spawn_blocking(move || cluster().wait_for("postgres", &running, "t", 120))
            .await
            .unwrap();
        dbbackup::source::conn::cancel_query(&token).await
    });
    let e = s
        .client
        .simple_query("SELECT pg_sleep(60)")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    canceller.await.unwrap().unwrap();
}

#[test]
fn backup_and_restore_over_tls() {
    let c = cluster();
    tls();
    let src = c.unique_db("tls_src");
    c.create_db(&src);
    c.load_fixture(&src, "hard_types.sql");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("backup");
    let port = c.port.to_string();
    let over_tls = |cmd: &mut Command| {
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", ROLE])
            .env("PGPASSWORD", PASSWORD)
            .env("PGSSLMODE", "require")
            .env("HOME", &tls().empty_home);
    };
    let mut backup = dbbackup();
    backup
        .args(["backup", "single", "--format", "native", &src, "--out"])
        .arg(&out)
        .arg("--quiet");
    over_tls(&mut backup);
    run_ok(&mut backup);

    let target = c.unique_db("tls_dst");
    let mut restore = dbbackup();
    restore
        .arg("restore")
        .arg(&out)
        .args(["--dbname", &target, "--create", "--quiet"]);
    over_tls(&mut restore);
    run_ok(&mut restore);
    assert_same(&c.fingerprint(&src), &c.fingerprint(&target));
    c.drop_db(&target);
    c.drop_db(&src);
}
