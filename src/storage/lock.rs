//! One dbbackup per backup location: a lock object holding the holder's host name, pid and
//! start time, created only if absent. A lock is stale, and taken over, only when that is
//! provable: it was taken on this host by a process that no longer runs (a crash, kill -9,
//! reboot). A lock of another host is never taken over: the message says whose it is.

use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Store;

pub const LOCK_FILE: &str = ".dbbackup.lock";

#[derive(Serialize, Deserialize, Debug)]
struct Holder {
    host: String,
    pid: i32,
    started_at: String,
}

/// Held while a backup writes into a location; removed on drop.
#[derive(Debug)]
pub struct DirLock {
    store: Store,
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

impl DirLock {
    pub fn acquire(store: &Store) -> Result<DirLock> {
        let me = Holder {
            host: host_name(),
            pid: std::process::id() as i32,
            started_at: crate::clock::now_rfc3339(),
        };
        let body = serde_json::to_vec(&me).expect("lock serializes");
        for _ in 0..2 {
            if store.create_exclusive(LOCK_FILE, &body)? {
                return Ok(DirLock {
                    store: store.clone(),
                });
            }
            let text = store.read_small(LOCK_FILE)?.unwrap_or_default();
            // Locks of earlier versions hold just the pid.
            let holder: Option<Holder> = serde_json::from_slice(&text).ok().or_else(|| {
                let pid = String::from_utf8_lossy(&text).trim().parse().ok()?;
                Some(Holder {
                    host: me.host.clone(),
                    pid,
                    started_at: "an unknown time".into(),
                })
            });
            match holder {
                Some(h) if h.host != me.host => {
                    return Err(Error::Refused(format!(
                        "{} is locked by dbbackup pid {} on host {} since {}; if that run is over, remove {}",
                        store.display(),
                        h.pid,
                        h.host,
                        h.started_at,
                        store.describe(LOCK_FILE).display()
                    )))
                }
                Some(h) if pid_alive(h.pid) => {
                    return Err(Error::Refused(format!(
                        "{} is in use by another dbbackup (pid {} on this host, since {}); wait for it or stop it",
                        store.display(),
                        h.pid,
                        h.started_at
                    )))
                }
                // Stale: its holder is gone (or the lock is unreadable). Remove and retry once.
                _ => store.delete(LOCK_FILE)?,
            }
        }
        Err(Error::Refused(format!(
            "could not take the lock {} (another process keeps recreating it)",
            store.describe(LOCK_FILE).display()
        )))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.store.delete(LOCK_FILE);
    }
}

fn pid_alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Whether a location's lock is held, as far as this host can prove (see the module
/// documentation): what `list` and `expire` need to tell a running backup from an interrupted
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// No lock object.
    Free,
    /// Held by a running process on this host, or by another host (which cannot be checked
    /// from here, so it counts as running).
    Held,
    /// Left by a process of this host that no longer runs, or unreadable.
    Stale,
}

/// The state of `store`'s lock.
pub fn lock_state(store: &Store) -> Result<LockState> {
    let Some(text) = store.read_small(LOCK_FILE)? else {
        return Ok(LockState::Free);
    };
    let holder: Option<Holder> = serde_json::from_slice(&text).ok().or_else(|| {
        let pid = String::from_utf8_lossy(&text).trim().parse().ok()?;
        Some(Holder {
            host: host_name(),
            pid,
            started_at: String::new(),
        })
    });
    Ok(match holder {
        Some(h) if h.host != host_name() || pid_alive(h.pid) => LockState::Held,
        _ => LockState::Stale,
    })
}
