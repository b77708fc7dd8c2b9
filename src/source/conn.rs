//! Connection settings, resolved once with libpq's rules and then used two ways:
//! for our own tokio-postgres sessions ([`ConnParams::connect`]) and for child programs
//! (pg_dump, psql, pg_restore) through their environment ([`ConnParams::child_env`]).
//!
//! Secrets never reach a command line (visible in `ps`) or any `Debug`/`Display` output.
//! Precedence, as in libpq: command-line flags > `PG*` environment variables > defaults.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::source::tls::{MakeRustlsConnect, TlsFiles, Verify};
use crate::{Error, Result};

/// Connection flags shared by every subcommand (clap derive; flattened into the CLI).
///
/// `-h` is the host, as in psql/pg_dump: the top-level command must use
/// `#[command(disable_help_flag = true)]` and declare a long-only `--help`, or clap panics
/// on the duplicate short flag.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Database server host or socket directory (default: $PGHOST, else the local socket directory /var/run/postgresql)
    #[arg(short = 'h', long = "host", global = true)]
    pub host: Option<String>,
    /// Database server port (default: $PGPORT, else 5432)
    #[arg(short = 'p', long = "port", global = true)]
    pub port: Option<u16>,
    /// Database user name (default: $PGUSER, else the OS user name)
    #[arg(short = 'U', long = "username", global = true)]
    pub username: Option<String>,
}

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Parses a libpq `sslmode` keyword (`disable`, ..., `verify-full`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The libpq keyword, as passed to children in `PGSSLMODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Fully resolved connection settings. Cheap to clone; `Debug` hides the password.
#[derive(Clone)]
pub struct ConnParams {
    /// TCP host name, or a Unix socket directory when it starts with '/'.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `PGPASSWORD`; when set it wins over the pgpass file for every database.
    password: Option<String>,
    /// Parsed pgpass entries (empty when `PGPASSWORD` is set or the file is absent/unsafe).
    /// Kept whole because entries can be per database.
    pgpass: Vec<PassEntry>,
    pub sslmode: SslMode,
    /// `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` as set, for child programs.
    ssl_env: Vec<(String, String)>,
    /// The TLS connector for TCP connections (`None` with sslmode=disable), or why it cannot
    /// be built (a missing root certificate file...). Reported when a TCP connection needs it.
    tls: Option<std::result::Result<TlsSetup, String>>,
    /// `None` means wait forever (libpq: unset or 0).
    pub connect_timeout: Option<Duration>,
    /// Database for cluster-wide queries (`PGDATABASE`, default "postgres").
    pub maintenance_db: String,
    pub application_name: String,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |b: bool| if b { "<set>" } else { "<none>" };
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &set(self.password.is_some()))
            .field("pgpass_entries", &self.pgpass.len())
            .field("sslmode", &self.sslmode)
            .field("ssl_env", &self.ssl_env)
            .field(
                "tls",
                &match &self.tls {
                    None => "<none>".to_string(),
                    Some(Ok(TlsSetup {
                        verified_by: Some(root),
                        ..
                    })) => format!("<verified against {}>", root.display()),
                    Some(Ok(_)) => "<server certificate not verified>".to_string(),
                    Some(Err(e)) => format!("<unusable: {e}>"),
                },
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("maintenance_db", &self.maintenance_db)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl ConnParams {
    /// Resolves from `opts` and the real process environment; see [`ConnParams::resolve_with`].
    pub fn resolve(opts: &ConnectOptions) -> Result<Self> {
        // libpq (PG >= 14) prefers $HOME and falls back to the passwd entry.
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::geteuid())
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
            });
        Self::resolve_with(opts, &|k| std::env::var(k).ok(), home.as_deref())
    }

    /// Testable core of [`ConnParams::resolve`]: `env` stands for the process environment and
    /// `home` for the home directory (where `.pgpass` lives unless `PGPASSFILE` is set).
    ///
    /// Flags > `PGHOST`/`PGPORT`/`PGUSER` > defaults (socket directory, 5432, OS user).
    /// Also reads `PGPASSWORD`, `PGPASSFILE`, `PGDATABASE` (maintenance db, default
    /// "postgres"), `PGSSLMODE` (default prefer), `PGSSLROOTCERT`/`PGSSLCERT`/`PGSSLKEY`
    /// (defaults under `home`/.postgresql; see [`crate::source::tls`]) and `PGCONNECT_TIMEOUT`. Empty
    /// variables count as unset. Fails with [`Error::Usage`] on unparsable values and
    /// multi-host lists. Unusable TLS files (e.g. sslmode=verify-ca without a root
    /// certificate) are reported by [`ConnParams::connect`], only when TLS is used.
    pub fn resolve_with(
        opts: &ConnectOptions,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<Self> {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());

        let host = match opts
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| env("PGHOST"))
        {
            Some(h) => h,
            // Debian-style builds put the socket here; upstream's compiled-in default is /tmp.
            None if Path::new("/var/run/postgresql").is_dir() => "/var/run/postgresql".into(),
            None => "/tmp".into(),
        };
        if host.contains(',') {
            return Err(Error::Usage(format!(
                "multiple hosts ({host}) are not supported; give a single host"
            )));
        }

        let port = match (opts.port, env("PGPORT")) {
            (Some(p), _) => p,
            (None, Some(p)) => p
                .trim()
                .parse()
                .map_err(|_| Error::Usage(format!("invalid port in PGPORT: \"{p}\"")))?,
            (None, None) => 5432,
        };

        let user = match opts
            .username
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| env("PGUSER"))
        {
            Some(u) => u,
            None => nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .ok_or_else(|| {
                    Error::Usage("cannot determine the OS user name; use -U/--username".into())
                })?,
        };

        let sslmode = match env("PGSSLMODE") {
            None => SslMode::Prefer,
            Some(s) => SslMode::parse(&s)
                .ok_or_else(|| Error::Usage(format!("invalid sslmode in PGSSLMODE: \"{s}\"")))?,
        };
        let ssl_env: Vec<(String, String)> = ["PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"]
            .into_iter()
            .filter_map(|k| Some((k.to_string(), env(k)?)))
            .collect();
        let tls = (sslmode != SslMode::Disable).then(|| {
            let files = TlsFiles::resolve(
                env("PGSSLROOTCERT"),
                env("PGSSLCERT"),
                env("PGSSLKEY"),
                home,
            );
            crate::source::tls::connector(sslmode, &files).map(|(connector, verify)| TlsSetup {
                connector,
                verified_by: (verify != Verify::Nothing)
                    .then(|| files.root_cert.clone())
                    .flatten(),
            })
        });

        let connect_timeout = match env("PGCONNECT_TIMEOUT") {
            None => None,
            Some(s) => match s.trim().parse::<i64>() {
                Ok(n) if n <= 0 => None,
                // libpq: anything shorter than 2 seconds is too short to be useful.
                Ok(n) => Some(Duration::from_secs(n.max(2) as u64)),
                Err(_) => {
                    return Err(Error::Usage(format!(
                        "invalid connect timeout in PGCONNECT_TIMEOUT: \"{s}\""
                    )))
                }
            },
        };

        let password = env("PGPASSWORD");
        // The file is only consulted when PGPASSWORD is absent, as libpq does.
        let pgpass = match (&password, env("PGPASSFILE").map(PathBuf::from)) {
            (Some(_), _) => Vec::new(),
            (None, Some(file)) => read_pgpass(&file),
            (None, None) => home
                .map(|h| read_pgpass(&h.join(".pgpass")))
                .unwrap_or_default(),
        };

        Ok(ConnParams {
            host,
            port,
            user,
            password,
            pgpass,
            sslmode,
            ssl_env,
            tls,
            connect_timeout,
            maintenance_db: env("PGDATABASE").unwrap_or_else(|| "postgres".into()),
            application_name: "dbbackup".into(),
        })
    }

    /// The password for the maintenance database (see [`ConnParams::password_for`]).
    pub fn password(&self) -> Option<&str> {
        self.password_for(&self.maintenance_db)
    }

    /// The password for `dbname`: `PGPASSWORD` if it was set, else the first pgpass entry
    /// matching host, port, `dbname` and user (pgpass entries may be per database).
    pub fn password_for(&self, dbname: &str) -> Option<&str> {
        if let Some(p) = &self.password {
            return Some(p);
        }
        let port = self.port.to_string();
        self.pgpass
            .iter()
            .find(|e| {
                // libpq matches socket connections against "localhost" entries.
                let host_ok = field_matches(&e.host, &self.host)
                    || (self.host.starts_with('/') && field_matches(&e.host, "localhost"));
                host_ok
                    && field_matches(&e.port, &port)
                    && field_matches(&e.database, dbname)
                    && field_matches(&e.user, &self.user)
            })
            .map(|e| e.password.as_str())
    }

    /// Human-readable target for error messages; never contains the password.
    pub fn describe(&self, dbname: &str) -> String {
        format!(
            "database \"{dbname}\" on {}:{} as user {}",
            self.host, self.port, self.user
        )
    }

    /// True when connections use a Unix socket (never TLS, as in libpq).
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// tokio-postgres settings for a connection to `dbname`. The sslmode maps to
    /// tokio-postgres's: disable (and any Unix socket) → Disable; allow, prefer → Prefer
    /// (tokio-postgres has no "allow", which libpq tries plain text first for; TLS first is
    /// close enough); require, verify-ca, verify-full → Require. Use it with
    /// [`ConnParams::connect`]'s TLS connector, or `NoTls` when the mode is Disable.
    pub fn pg_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        if self.host.starts_with('/') {
            c.host_path(&self.host);
        } else {
            c.host(&self.host);
        }
        c.port(self.port)
            .user(&self.user)
            .dbname(dbname)
            .application_name(&self.application_name)
            .ssl_mode(match self.sslmode {
                _ if self.is_unix_socket() => tokio_postgres::config::SslMode::Disable,
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    tokio_postgres::config::SslMode::Require
                }
            });
        if let Some(p) = self.password_for(dbname) {
            c.password(p);
        }
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(t);
        }
        c
    }

    /// Environment for a child program working on `dbname`: `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGDATABASE`, `PGSSLMODE`, `PGAPPNAME`, plus `PGPASSWORD` only when we know a password,
    /// `PGCONNECT_TIMEOUT` only when one is set and `PGSSLROOTCERT`/`PGSSLCERT`/`PGSSLKEY` only
    /// when they were set (libpq applies the same ~/.postgresql defaults). Callers add these
    /// with `Command::envs`; the password thus never appears on a command line.
    pub fn child_env(&self, dbname: &str) -> Vec<(String, String)> {
        let mut v = vec![
            ("PGHOST".to_string(), self.host.clone()),
            ("PGPORT".to_string(), self.port.to_string()),
            ("PGUSER".to_string(), self.user.clone()),
            ("PGDATABASE".to_string(), dbname.to_string()),
            ("PGSSLMODE".to_string(), self.sslmode.as_str().to_string()),
            ("PGAPPNAME".to_string(), self.application_name.clone()),
        ];
        if let Some(p) = self.password_for(dbname) {
            v.push(("PGPASSWORD".to_string(), p.to_string()));
        }
        if let Some(t) = self.connect_timeout {
            v.push(("PGCONNECT_TIMEOUT".to_string(), t.as_secs().to_string()));
        }
        v.extend(self.ssl_env.iter().cloned());
        v
    }

    /// Opens a connection to `dbname` (TLS as the sslmode says, see [`crate::source::tls`]), spawns
    /// its driver on the current tokio runtime and pins the session settings a dump/restore
    /// relies on (ISO dates, exact floats, no timeouts, no silent row-level-security
    /// filtering). Must be called inside a tokio runtime. Fails with [`Error::Connect`] naming
    /// [`ConnParams::describe`] (plus the sslmode when TLS failed), or [`Error::Usage`] when
    /// the TLS files are unusable.
    pub async fn connect(&self, dbname: &str) -> Result<Session> {
        let err = |source| self.connect_error(dbname, source);
        let (client, driver) = self.open(dbname).await?;
        // One round trip; the SELECT's text result is the backend pid.
        let msgs = client
            .simple_query(
                "SET DateStyle = ISO; SET extra_float_digits = 3; SET statement_timeout = 0; \
                 SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
                 SET row_security = off; SET IntervalStyle = postgres; \
                 SELECT pg_backend_pid()",
            )
            .await
            .map_err(err)?;
        let backend_pid = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                _ => None,
            })
            .unwrap_or(0);
        Ok(Session {
            cancel: client.cancel_token(),
            client,
            backend_pid,
            driver,
        })
    }
}

impl ConnParams {
    /// Connects (TLS or not) and spawns the connection's driver.
    async fn open(&self, dbname: &str) -> Result<(tokio_postgres::Client, Driver)> {
        let config = self.pg_config(dbname);
        let tls = match &self.tls {
            Some(tls) if !self.is_unix_socket() => tls.as_ref().map_err(|msg| {
                Error::Usage(format!(
                    "cannot connect to {} with sslmode={}: {msg}",
                    self.describe(dbname),
                    self.sslmode.as_str()
                ))
            })?,
            _ => {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| self.connect_error(dbname, e))?;
                return Ok((client, tokio::spawn(connection)));
            }
        };
        match config.connect(tls.connector.clone()).await {
            Ok((client, connection)) => Ok((client, tokio::spawn(connection))),
            // libpq: with allow/prefer a failed TLS handshake is retried in plain text.
            Err(e)
                if is_tls_error(&e) && matches!(self.sslmode, SslMode::Allow | SslMode::Prefer) =>
            {
                let mut plain = config;
                plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, connection) = plain
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| self.connect_error(dbname, e))?;
                Ok((client, tokio::spawn(connection)))
            }
            Err(e) => Err(self.connect_error(dbname, e)),
        }
    }

    /// [`Error::Connect`] for `dbname`; a TLS failure also names the sslmode.
    fn connect_error(&self, dbname: &str, source: tokio_postgres::Error) -> Error {
        let mut target = self.describe(dbname);
        if is_tls_error(&source) {
            target.push_str(&format!(" with sslmode={}", self.sslmode.as_str()));
            if let Some(Ok(TlsSetup {
                verified_by: Some(root),
                ..
            })) = &self.tls
            {
                target.push_str(&format!(
                    " and root certificate file \"{}\"",
                    root.display()
                ));
            }
        }
        Error::Connect { target, source }
    }
}

/// A usable TLS configuration.
#[derive(Clone)]
struct TlsSetup {
    connector: MakeRustlsConnect,
    /// The root certificate file the server's certificate is verified against, if it is.
    verified_by: Option<PathBuf>,
}

/// tokio-postgres's TLS failures (handshake, verification, "server does not support TLS")
/// have no public kind; their message is fixed.
fn is_tls_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none() && e.to_string() == "error performing TLS handshake"
}

/// Cancels the statement running in `token`'s session, over TLS if that session required it
/// (a `NoTls` cancel fails for sslmode require/verify-*). The cancel request carries only the
/// backend's pid and cancel key, so the server's certificate is not verified.
pub async fn cancel_query(
    token: &tokio_postgres::CancelToken,
) -> std::result::Result<(), tokio_postgres::Error> {
    token
        .cancel_query(crate::source::tls::cancel_connector())
        .await
}

type Driver = tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>;

/// A connected client plus its cancel token and the driver task of its connection.
/// Dropping it closes the connection (the driver then ends by itself).
pub struct Session {
    pub client: tokio_postgres::Client,
    /// Cancels the running statement from elsewhere; use [`cancel_query`] (a `NoTls` cancel
    /// fails for sessions with sslmode require/verify-*).
    pub cancel: tokio_postgres::CancelToken,
    /// `pg_backend_pid()` of this session (0 if the server did not say).
    pub backend_pid: i32,
    driver: Driver,
}

impl Session {
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Closes the connection and waits until the server was told (Terminate sent), returning
    /// the connection error if the connection had failed. `what` names it in the error.
    pub async fn close(self, what: &str) -> Result<()> {
        drop(self.client);
        match self.driver.await {
            Ok(r) => r.map_err(|e| Error::query(format!("closing {what}"), e)),
            // The driver task only fails to join if the runtime is shutting down.
            Err(_) => Ok(()),
        }
    }
}

/// One pgpass line; `None` fields are the `*` wildcard. No `Debug`: it holds a password.
#[derive(Clone)]
struct PassEntry {
    host: Option<String>,
    port: Option<String>,
    database: Option<String>,
    user: Option<String>,
    password: String,
}

fn field_matches(pattern: &Option<String>, value: &str) -> bool {
    pattern.as_deref().is_none_or(|p| p == value)
}

/// Reads a pgpass file like libpq: a missing or unreadable file is silently no file; a file
/// that is not a plain file or is group/world accessible is ignored with a warning.
fn read_pgpass(path: &Path) -> Vec<PassEntry> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    if !meta.is_file() {
        eprintln!(
            "warning: password file \"{}\" is not a plain file",
            path.display()
        );
        return Vec::new();
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "warning: password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        );
        return Vec::new();
    }
    std::fs::read_to_string(path)
        .map(|text| parse_pgpass(&text))
        .unwrap_or_default()
}

/// Parses `hostname:port:database:username:password` lines. `\` escapes the next character
/// (so `\:` and `\\`); an unescaped `*` field is a wildcard; lines starting with `#` and lines
/// with fewer than five fields are skipped; the password ends at the next unescaped ':'.
fn parse_pgpass(text: &str) -> Vec<PassEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_pgpass_line)
        .collect()
}

fn parse_pgpass_line(line: &str) -> Option<PassEntry> {
    // (text, whether any character was escaped): "\*" is a literal star, not a wildcard.
    let mut fields: Vec<(String, bool)> = Vec::with_capacity(5);
    let (mut cur, mut escaped) = (String::new(), false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    cur.push(n);
                    escaped = true;
                }
                None => cur.push('\\'),
            },
            ':' => {
                fields.push((std::mem::take(&mut cur), std::mem::take(&mut escaped)));
                if fields.len() == 5 {
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    if fields.len() == 4 {
        fields.push((cur, escaped));
    }
    if fields.len() < 5 {
        return None;
    }
    let mut it = fields.into_iter();
    let mut pat = || {
        let (text, escaped) = it.next().expect("five fields");
        (escaped || text != "*").then_some(text)
    };
    Some(PassEntry {
        host: pat(),
        port: pat(),
        database: pat(),
        user: pat(),
        // The password field is never a wildcard; pat() gives None only for a bare "*".
        password: pat().unwrap_or_else(|| "*".into()),
    })
}

/// libpq conninfo naming just the database (the rest comes from the environment).
pub(crate) fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
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
        let get = |v: &[(String, String)], k: &str| {
            v.iter().find(|(n, _)| n == k).map(|(_, x)| x.clone())
        };
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
}
