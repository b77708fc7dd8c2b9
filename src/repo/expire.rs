//! `expire`: which backups go (a plan, shown by `--dry-run`) and removing them so that an
//! interruption at any point leaves a state `list` shows and the next `expire` finishes.
//!
//! Per database (the cluster backups count as the database `cluster`):
//! - the newest complete backup is always kept, and backups in progress (a held lock) and
//!   those whose manifest cannot be read are never touched;
//! - the other complete backups are kept when a rule of the [`Policy`] keeps them;
//! - failed and interrupted backups older than the newest complete one go; newer ones stay
//!   (they may be resumed, and they tell what went wrong);
//! - a backup marked `deleting` by an interrupted `expire` goes.
//!
//! Removing one: its manifest is first rewritten with `status: "deleting"` (so nothing reads
//! a half-deleted backup as good), then every other object is deleted (drill records too),
//! the manifest last.

use crate::error::{Error, Result};
use crate::format::manifest::{Status, MANIFEST_FILE};
use crate::repo::catalog::{BackupRecord, BackupStatus, Catalog};
use crate::repo::retention::{keep_reasons, Policy};
use crate::storage::Store;

/// What happens to one backup, and why.
#[derive(Debug, Clone)]
pub enum Verdict {
    Keep(Vec<String>),
    Remove(String),
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub backup: BackupRecord,
    pub verdict: Verdict,
}

/// The decisions for every backup of `catalog` whose database matches `database` (a glob;
/// all when `None`), newest first. `policy` must not be empty (the caller refuses that).
pub fn plan(catalog: &Catalog, policy: &Policy, database: Option<&str>) -> Vec<Decision> {
    let mut groups: Vec<(&str, crate::repo::catalog::Kind)> = Vec::new();
    for b in &catalog.backups {
        let key = (b.database.as_str(), b.kind);
        if !groups.contains(&key) && database.is_none_or(|p| crate::cluster::glob_match(p, key.0)) {
            groups.push(key);
        }
    }
    let mut decisions = Vec::new();
    for (name, kind) in groups {
        let of_db: Vec<&BackupRecord> = catalog
            .backups
            .iter()
            .filter(|b| b.database == name && b.kind == kind)
            .collect();
        decisions.extend(plan_database(&of_db, policy));
    }
    decisions.sort_by(|a, b| {
        b.backup
            .time
            .cmp(&a.backup.time)
            .then(a.backup.database.cmp(&b.backup.database))
    });
    decisions
}

/// The decisions for the backups of one database (newest first).
fn plan_database(backups: &[&BackupRecord], policy: &Policy) -> Vec<Decision> {
    let complete: Vec<&&BackupRecord> = backups
        .iter()
        .filter(|b| b.status == BackupStatus::Complete)
        .collect();
    let times: Vec<_> = complete.iter().map(|b| b.time).collect();
    let mut reasons = keep_reasons(policy, &times).into_iter();
    let newest_complete = complete.first().map(|b| b.time);
    backups
        .iter()
        .map(|b| {
            let verdict = match b.status {
                BackupStatus::Complete => {
                    let mut why = reasons.next().expect("one per complete backup");
                    if Some(b.time) == newest_complete {
                        why.insert(0, "newest complete backup".into());
                    }
                    match why.is_empty() {
                        true => Verdict::Remove("no rule keeps it".into()),
                        false => Verdict::Keep(why),
                    }
                }
                BackupStatus::InProgress => Verdict::Keep(vec![
                    "in progress (a running dbbackup holds its lock)".into(),
                ]),
                BackupStatus::Unknown => Verdict::Keep(vec![format!(
                    "its manifest cannot be read, so it is never deleted ({})",
                    b.error.as_deref().unwrap_or("unreadable")
                )]),
                BackupStatus::Deleting => {
                    Verdict::Remove("finishing an interrupted deletion".into())
                }
                BackupStatus::Failed | BackupStatus::Interrupted => match newest_complete {
                    Some(t) if b.time < t => Verdict::Remove(format!(
                        "{}, older than the newest complete backup",
                        b.status.as_str()
                    )),
                    Some(_) => Verdict::Keep(vec![format!(
                        "{}, newer than the newest complete backup",
                        b.status.as_str()
                    )]),
                    None => Verdict::Keep(vec![format!(
                        "{}, and there is no complete backup of this database",
                        b.status.as_str()
                    )]),
                },
            };
            Decision {
                backup: (*b).clone(),
                verdict,
            }
        })
        .collect()
}

/// Removes the backup `b` of the repository `repo`: marks its manifest `deleting`, deletes
/// every other object, then the manifest (and, in a local repository, its empty directories).
pub fn remove_backup(repo: &Store, b: &BackupRecord) -> Result<()> {
    let dir = repo.sub(&b.dir);
    if b.status != BackupStatus::Deleting {
        mark_deleting(&dir)?;
    }
    let mut objects: Vec<&String> = b.objects.iter().filter(|o| *o != MANIFEST_FILE).collect();
    // Deepest first, so a cluster's databases lose their chunks before their manifests.
    objects.sort_by_key(|o| std::cmp::Reverse(o.matches('/').count()));
    for o in objects {
        dir.delete(o)?;
    }
    dir.delete(MANIFEST_FILE)?;
    if let Some(path) = dir.local_dir() {
        remove_empty_dirs(&path);
        if let Some(parent) = path.parent() {
            // The database's directory, once its last backup is gone.
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(())
}

/// Rewrites `dir/manifest.json` with `status: "deleting"` (nothing when there is none).
fn mark_deleting(dir: &Store) -> Result<()> {
    let Some(text) = dir.read_small(MANIFEST_FILE)? else {
        return Ok(());
    };
    let path = dir.describe(MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::manifest(&path, format!("not valid JSON: {e}")))?;
    let Some(fields) = v.as_object_mut() else {
        return Err(Error::manifest(&path, "not a JSON object"));
    };
    fields.insert(
        "status".into(),
        serde_json::to_value(Status::Deleting).expect("serializes"),
    );
    let json = serde_json::to_vec_pretty(&v).expect("serializes");
    crate::format::manifest::store_atomically(dir, &json)
}

/// Removes `path` and the directories below it that are empty (a directory that is not stays).
fn remove_empty_dirs(path: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(path);
}
