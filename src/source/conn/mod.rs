//! Connection settings, resolved once with libpq's rules and then used two ways:
//! for our own tokio-postgres sessions ([`ConnParams::connect`]) and for child programs
//! (pg_dump, psql, pg_restore) through their environment ([`ConnParams::child_env`]).
//!
//! Secrets never reach a command line (visible in `ps`) or any `Debug`/`Display` output.
//! Precedence, as in libpq: command-line flags > `PG*` environment variables > defaults.

mod pgpass;
mod session;
mod socket;
mod split;
#[cfg(test)]
mod tests;
pub mod tls;

use pgpass::{field_matches, read_pgpass, PassEntry};
pub use session::{cancel_query, Canceller, Session};
pub use split::MAX_PIECE;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::source::conn::tls::{MakeRustlsConnect, TlsFiles, Verify};
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
    /// (defaults under `home`/.postgresql; see [`tls`]) and `PGCONNECT_TIMEOUT`. Empty
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
            crate::source::conn::tls::connector(sslmode, &files).map(|(connector, verify)| {
                TlsSetup {
                    connector,
                    verified_by: (verify != Verify::Nothing)
                        .then(|| files.root_cert.clone())
                        .flatten(),
                }
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
}

/// A usable TLS configuration.
#[derive(Clone)]
struct TlsSetup {
    connector: MakeRustlsConnect,
    /// The root certificate file the server's certificate is verified against, if it is.
    verified_by: Option<PathBuf>,
}

/// libpq conninfo naming just the database (the rest comes from the environment).
pub(crate) fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}
