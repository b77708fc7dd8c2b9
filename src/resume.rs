//! Resuming a backup after a crash: keep what is provably finished, delete everything else.
//!
//! A unit counts as finished only if the manifest on disk says so and every one of its chunks
//! still has the size and SHA-256 the manifest records. Files the manifest does not list
//! (temporary files, chunks of units that never completed) are deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::dirlock::LOCK_FILE;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, OptionsRecord, MANIFEST_FILE};
use crate::probe::Probe;
use crate::verify::{verify_chunk, Payload};

/// What reconciling found.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub units_kept: usize,
    pub units_redo: usize,
    /// Chunks that failed their check, with why.
    pub bad_chunks: Vec<String>,
    pub files_deleted: usize,
}

/// Refuses to resume with options that would make chunks of the two runs disagree.
pub fn check_options(old: &OptionsRecord, new: &OptionsRecord) -> Result<()> {
    let mut diffs = Vec::new();
    if old.codec != new.codec {
        diffs.push(format!("--compress {:?} (was {:?})", new.codec, old.codec));
    }
    if old.level != new.level {
        diffs.push(format!(
            "--compress-level {} (was {})",
            new.level, old.level
        ));
    }
    if old.chunk_size != new.chunk_size {
        diffs.push(format!(
            "--chunk-size {} (was {})",
            new.chunk_size, old.chunk_size
        ));
    }
    if old.split_tables_larger_than != new.split_tables_larger_than {
        diffs.push(format!(
            "--split-tables-larger-than {} (was {})",
            new.split_tables_larger_than, old.split_tables_larger_than
        ));
    }
    if old.copy_format != new.copy_format {
        diffs.push(format!(
            "--copy-format {} (was {})",
            new.copy_format, old.copy_format
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "cannot resume with different options: {}; resume with the options of the first run",
            diffs.join(", ")
        )))
    }
}

/// Refuses to resume when the tables changed since the first run: their data would not fit
/// the schema taken then.
pub fn check_tables(old: &Manifest, now: &Probe) -> Result<()> {
    let mut diffs = Vec::new();
    for t in &old.tables {
        match now
            .tables
            .iter()
            .find(|n| n.schema == t.schema && n.name == t.name)
        {
            None => diffs.push(format!("table {} is gone", t.display_name())),
            Some(n) if n.columns != t.columns => {
                diffs.push(format!("columns of {} changed", t.display_name()))
            }
            Some(n) if n.oid != t.oid => {
                diffs.push(format!("table {} was recreated", t.display_name()))
            }
            _ => {}
        }
    }
    for n in &now.tables {
        if !old
            .tables
            .iter()
            .any(|t| t.schema == n.schema && t.name == n.name)
        {
            diffs.push(format!("table {} is new", n.display_name()));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "cannot resume: the database changed since the first run ({}); start a new backup",
            diffs.join("; ")
        )))
    }
}

/// Re-checks every finished unit's chunks and deletes files the manifest does not vouch for.
pub fn reconcile(dir: &Path, m: &mut Manifest) -> Result<Reconciled> {
    let mut r = Reconciled::default();
    for t in &mut m.tables {
        let format = t.copy_format;
        for u in &mut t.units {
            if u.done {
                let bad: Vec<String> = u
                    .chunks
                    .iter()
                    .filter_map(|c| verify_chunk(dir, c, Payload::Copy(format)).err())
                    .map(|e| e.to_string())
                    .collect();
                if bad.is_empty() {
                    r.units_kept += 1;
                    continue;
                }
                r.bad_chunks.extend(bad);
            }
            u.done = false;
            u.chunks.clear();
            u.snapshot = None;
            r.units_redo += 1;
        }
    }
    if m.large_objects.done {
        let bad: Vec<String> = m
            .large_objects
            .chunks
            .iter()
            .filter_map(|c| verify_chunk(dir, c, Payload::LargeObjects).err())
            .chain(
                m.large_objects
                    .metadata
                    .iter()
                    .filter_map(|c| verify_chunk(dir, c, Payload::Opaque).err()),
            )
            .map(|e| e.to_string())
            .collect();
        if !bad.is_empty() {
            r.bad_chunks.extend(bad);
            m.large_objects.done = false;
        }
    }
    if !m.large_objects.done {
        m.large_objects.chunks.clear();
        m.large_objects.metadata = None;
    }
    let schema_ok = m.schema.len() == 2
        && m.schema
            .iter()
            .all(|s| verify_chunk(dir, &s.chunk, Payload::Opaque).is_ok());
    if !schema_ok {
        m.schema.clear();
    }
    m.stream.clear();

    let keep: HashSet<PathBuf> = m
        .all_chunks()
        .map(|c| dir.join(&c.file))
        .chain([dir.join(MANIFEST_FILE), dir.join(LOCK_FILE)])
        .collect();
    r.files_deleted = delete_unlisted(dir, &keep)?;
    Ok(r)
}

fn delete_unlisted(dir: &Path, keep: &HashSet<PathBuf>) -> Result<usize> {
    let mut deleted = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io("listing", &d, e))?;
        for e in entries {
            let p = e.map_err(|e| Error::io("listing", &d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if !keep.contains(&p) {
                std::fs::remove_file(&p).map_err(|e| Error::io("deleting leftover", &p, e))?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}
