//! `contents` of a cluster backup: the databases it holds (one backup each), and one of them
//! chosen by name for [`crate::contents::contents`].

use serde::Serialize;

use super::manifest::ClusterManifest;
use crate::error::{Error, Result};
use crate::storage::Store;

/// A cluster backup's databases, as `contents --json` prints them without `--database`.
#[derive(Debug, Serialize)]
pub struct ClusterContents {
    /// Always `cluster`: tells this document from a database's.
    pub kind: &'static str,
    pub location: String,
    pub status: String,
    pub error: Option<String>,
    pub server_version: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The roles and tablespaces (`pg_dumpall --globals-only`): `complete` or `failed`.
    pub globals: String,
    /// False when the role passwords are not in the backup.
    pub role_passwords: bool,
    pub databases: Vec<DatabaseContents>,
}

#[derive(Debug, Serialize)]
pub struct DatabaseContents {
    pub name: String,
    /// `complete`, `failed`, `skipped`, `pending`.
    pub status: String,
    /// `native`, `plain`, `custom`, when it got that far.
    pub strategy: Option<String>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Why it failed or was skipped.
    pub error: Option<String>,
}

/// The databases of the cluster backup in `dir`.
pub fn cluster_contents(dir: &Store) -> Result<ClusterContents> {
    let m = ClusterManifest::load(dir)?;
    Ok(ClusterContents {
        kind: "cluster",
        location: dir.display(),
        status: m.status.as_str().to_string(),
        error: m.error.clone(),
        server_version: m.server_version.clone(),
        started_at: m.started_at.clone(),
        finished_at: m.finished_at.clone(),
        globals: m.globals.status.as_str().to_string(),
        role_passwords: m.globals.role_passwords,
        databases: m
            .databases
            .iter()
            .map(|d| DatabaseContents {
                name: d.name.clone(),
                status: d.status.as_str().to_string(),
                strategy: d.strategy.clone(),
                raw_bytes: d.raw_bytes,
                stored_bytes: d.stored_bytes,
                error: d.error.clone(),
            })
            .collect(),
    })
}

/// The backup of database `name` inside the cluster backup `dir` (its sealing kept). A name the
/// backup does not hold is a usage error listing the ones it does, as `restore --database`.
pub fn database_backup(dir: &Store, name: &str) -> Result<Store> {
    let m = ClusterManifest::load(dir)?;
    match m.databases.iter().find(|d| d.name == name) {
        Some(d) => Ok(dir.sub(&d.dir)),
        None => {
            let names: Vec<&str> = m.databases.iter().map(|d| d.name.as_str()).collect();
            Err(Error::Usage(format!(
                "--database {name:?} is not in this cluster backup (it has: {})",
                names.join(", ")
            )))
        }
    }
}
