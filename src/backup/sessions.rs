//! The sessions of a backup whose statements are cancelled when the run is interrupted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Cancel keys of every session a backup opened, so that stopping it (failure, Ctrl-C, a
/// cluster timeout) cancels their running statements on the server: closing a socket does not
/// wake a backend that waits for a lock.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<Vec<crate::source::conn::Canceller>>>);

impl Sessions {
    pub fn add(&self, token: crate::source::conn::Canceller) {
        self.0.lock().unwrap().push(token);
    }

    pub async fn cancel_all(&self) {
        let tokens: Vec<_> = std::mem::take(&mut *self.0.lock().unwrap());
        for t in tokens {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                crate::source::conn::cancel_query(&t),
            )
            .await;
        }
    }
}

/// Runs `fut` unless `cancel` fires first; then cancels the sessions' statements.
pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    sessions: &Sessions,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = fut => r,
        _ = cancel.cancelled() => {
            sessions.cancel_all().await;
            Err(Error::Interrupted)
        }
    }
}
