//! Connecting: our own tokio-postgres sessions (TLS as the sslmode says), their drivers, and
//! cancelling a running statement.

use crate::{Error, Result};

use super::{ConnParams, SslMode, TlsSetup};

impl ConnParams {
    /// Opens a connection to `dbname` (TLS as the sslmode says, see [`super::tls`]), spawns
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
        .cancel_query(crate::source::conn::tls::cancel_connector())
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
