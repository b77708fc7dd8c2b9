//! Connecting: our own tokio-postgres sessions (TLS as the sslmode says), their drivers, and
//! cancelling a running statement.

use crate::{Error, Result};

use tokio_postgres::tls::MakeTlsConnect;

use super::socket::{self, raw_stream, RawStream, Socket, SplitTls};
use super::{ConnParams, SslMode, TlsSetup};

impl ConnParams {
    /// Opens a connection to `dbname` (TLS as the sslmode says, see [`super::tls`]), spawns
    /// its driver on the current tokio runtime and pins the session settings a dump/restore
    /// relies on (ISO dates, exact floats, no timeouts, no silent row-level-security
    /// filtering, an empty search_path as pg_dump and pg_restore use: reg* values in text
    /// print schema-qualified, whatever path the database or role sets, so the restore
    /// resolves them to the same objects). Must be called inside a tokio runtime. Fails with [`Error::Connect`] naming
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
                 SET search_path = ''; \
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
            cancel: self.canceller(client.cancel_token()),
            client,
            backend_pid,
            driver,
        })
    }

    /// Connects (TLS or not) over a socket we open ourselves (see [`super::socket`]) and
    /// spawns the connection's driver. `connect_timeout` covers socket, TLS and
    /// authentication, as in libpq.
    async fn open(&self, dbname: &str) -> Result<(tokio_postgres::Client, Driver)> {
        let config = self.pg_config(dbname);
        let tls = match &self.tls {
            Some(tls) if !self.is_unix_socket() => Some(tls.as_ref().map_err(|msg| {
                Error::Usage(format!(
                    "cannot connect to {} with sslmode={}: {msg}",
                    self.describe(dbname),
                    self.sslmode.as_str()
                ))
            })?),
            _ => None,
        };
        let attempt = async {
            let Some(tls) = tls else {
                return self.open_plain(dbname, &config).await;
            };
            let socket = self.open_socket(dbname).await?;
            let mut make = SplitTls(tls.connector.clone());
            let connector = MakeTlsConnect::<RawStream>::make_tls_connect(&mut make, &self.host)
                .map_err(|e| Error::ConnectIo {
                    target: self.describe(dbname),
                    source: std::io::Error::other(e),
                })?;
            match config
                .connect_raw(raw_stream(socket, true), connector)
                .await
            {
                Ok((client, connection)) => Ok((client, tokio::spawn(connection))),
                // libpq: with allow/prefer a failed TLS handshake is retried in plain text.
                Err(e)
                    if is_tls_error(&e)
                        && matches!(self.sslmode, SslMode::Allow | SslMode::Prefer) =>
                {
                    let mut plain = config.clone();
                    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
                    self.open_plain(dbname, &plain).await
                }
                Err(e) => Err(self.connect_error(dbname, e)),
            }
        };
        match self.connect_timeout {
            None => attempt.await,
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::ConnectIo {
                        target: self.describe(dbname),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no connection within {} s", limit.as_secs()),
                        ),
                    })
                }),
        }
    }

    async fn open_plain(
        &self,
        dbname: &str,
        config: &tokio_postgres::Config,
    ) -> Result<(tokio_postgres::Client, Driver)> {
        let socket = self.open_socket(dbname).await?;
        let (client, connection) = config
            .connect_raw(raw_stream(socket, false), tokio_postgres::NoTls)
            .await
            .map_err(|e| self.connect_error(dbname, e))?;
        Ok((client, tokio::spawn(connection)))
    }

    async fn open_socket(&self, dbname: &str) -> Result<Socket> {
        socket::open(&self.host, self.port)
            .await
            .map_err(|source| Error::ConnectIo {
                target: self.describe(dbname),
                source,
            })
    }

    /// How to cancel statements of a session of these settings.
    fn canceller(&self, token: tokio_postgres::CancelToken) -> Canceller {
        Canceller {
            token,
            host: self.host.clone(),
            port: self.port,
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

/// tokio-postgres's TLS failures (handshake, verification, "server does not support TLS")
/// have no public kind; their message is fixed.
fn is_tls_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none() && e.to_string() == "error performing TLS handshake"
}

/// Cancels the statement running in a session from elsewhere: a new socket to the same server
/// carrying the session's cancel key, over TLS if that session required it. The cancel request
/// carries only the backend's pid and key, so the server's certificate is not verified.
#[derive(Clone)]
pub struct Canceller {
    token: tokio_postgres::CancelToken,
    host: String,
    port: u16,
}

/// Cancels the statement running in `canceller`'s session (errors are for logging only: the
/// session may be gone already).
pub async fn cancel_query(canceller: &Canceller) -> std::result::Result<(), String> {
    let socket = socket::open(&canceller.host, canceller.port)
        .await
        .map_err(|e| e.to_string())?;
    let mut make = crate::source::conn::tls::cancel_connector();
    let tls = MakeTlsConnect::<Socket>::make_tls_connect(&mut make, &canceller.host)
        .map_err(|e| e.to_string())?;
    canceller
        .token
        .cancel_query_raw(socket, tls)
        .await
        .map_err(|e| e.to_string())
}

type Driver = tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>;

/// A connected client plus its cancel token and the driver task of its connection.
/// Dropping it closes the connection (the driver then ends by itself).
pub struct Session {
    pub client: tokio_postgres::Client,
    /// Cancels the running statement from elsewhere, with [`cancel_query`].
    pub cancel: Canceller,
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
