//! One dbbackup per backup directory: a lock file holding the holder's pid. A lock whose pid is
//! no longer running (a crash, kill -9, reboot) is stale and taken over.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::error::{Error, Result};

pub const LOCK_FILE: &str = ".dbbackup.lock";

/// Held while a backup writes into a directory; removed on drop.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())
                        .and_then(|_| f.sync_all())
                        .map_err(|e| Error::io("writing lock file", &path, e))?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok());
                    match holder {
                        Some(pid) if pid_alive(pid) => {
                            return Err(Error::Refused(format!(
                            "{} is in use by another dbbackup (pid {pid}); wait for it or stop it",
                            dir.display()
                        )))
                        }
                        // Stale: its holder is gone. Remove and retry once.
                        _ => {
                            fs::remove_file(&path)
                                .map_err(|e| Error::io("removing stale lock file", &path, e))?;
                        }
                    }
                }
                Err(e) => return Err(Error::io("creating lock file", &path, e)),
            }
        }
        Err(Error::Refused(format!(
            "could not take the lock {} (another process keeps recreating it)",
            path.display()
        )))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
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
