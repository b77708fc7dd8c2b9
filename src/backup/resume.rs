//! Resuming a backup after a crash: keep what is provably finished, delete everything else.
//!
//! A unit counts as finished only if the manifest on disk says so and every one of its chunks
//! still has the size and SHA-256 the manifest records. Files the manifest does not list
//! (temporary files, chunks of units that never completed) are deleted.
//!
//! A table is always read in one snapshot. The ranges of a split table are only kept when the
//! resumed run reads in the snapshot they were read in (`--snapshot`, the same one across runs);
//! otherwise an unfinished range would be read at a later instant than the finished ones, and an
//! update between the two moves a row version from a finished range into an unfinished one (a
//! duplicate) or the other way (a lost row). Such a table is copied again whole.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::check::{verify_chunk, Payload};
use crate::format::manifest::{Manifest, OptionsRecord, MANIFEST_FILE};
use crate::source::probe::Probe;
use crate::storage::lock::LOCK_FILE;
use crate::storage::Store;

/// What reconciling found.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub units_kept: usize,
    pub units_redo: usize,
    /// Split tables with finished ranges from another snapshot and unfinished ones: copied
    /// again whole (their finished ranges count in `units_redo`).
    pub tables_recopied: Vec<String>,
    /// Chunks that failed their check, with why.
    pub bad_chunks: Vec<String>,
    pub files_deleted: usize,
}

/// Options given for a resumed backup that differ from the ones it was started with, each
/// named with both values: `--chunk-size: given 4MiB, the backup was started with 8MiB`.
#[derive(Debug, Default)]
pub struct OptionConflicts(Vec<String>);

impl OptionConflicts {
    /// Records a conflict when `given` differs from `recorded`.
    pub fn compare<T: PartialEq + ?Sized>(
        &mut self,
        flag: &str,
        given: &T,
        recorded: &T,
        show: impl Fn(&T) -> String,
    ) {
        if given != recorded {
            self.0.push(format!(
                "{flag}: given {}, the backup was started with {}",
                show(given),
                show(recorded)
            ));
        }
    }

    /// The value an option takes on resume: the one given (compared with the recorded one),
    /// else the recorded one; `None` when neither is known.
    pub fn take<T: PartialEq>(
        &mut self,
        flag: &str,
        given: Option<T>,
        recorded: Option<T>,
        show: impl Fn(&T) -> String,
    ) -> Option<T> {
        if let (Some(g), Some(r)) = (&given, &recorded) {
            self.compare(flag, g, r, show);
        }
        given.or(recorded)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` without conflicts, else one error naming them all, made by `error` (a usage error
    /// on the command line, a refusal in the engine).
    pub fn into_result(self, error: fn(String) -> Error) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(error(format!(
            "cannot resume with different options: {}; leave them out to resume with the options the backup was started with",
            self.0.join("; ")
        )))
    }
}

/// A byte count the way `--chunk-size` takes it: `8MiB`, `1536KiB`, `1000` (bytes).
pub fn size_text(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A value of a `--flag` with fixed choices as it is spelled there (`zstd`, `binary`).
pub fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Refuses to resume with options that would make chunks of the two runs disagree. (The
/// command line takes options it is not given from the manifest, so there this only fires for
/// callers of the library.)
pub fn check_options(old: &OptionsRecord, new: &OptionsRecord) -> Result<()> {
    let mut c = OptionConflicts::default();
    c.compare("--compress", &new.codec, &old.codec, value_name);
    c.compare("--compress-level", &new.level, &old.level, |v| {
        v.to_string()
    });
    c.compare("--chunk-size", &new.chunk_size, &old.chunk_size, |v| {
        size_text(*v)
    });
    c.compare(
        "--split-tables-larger-than",
        &new.split_tables_larger_than,
        &old.split_tables_larger_than,
        |v| size_text(*v),
    );
    c.compare("--copy-format", &new.copy_format, &old.copy_format, |v| {
        v.clone()
    });
    c.compare("--recipient", &new.recipients, &old.recipients, |v| {
        if v.is_empty() {
            "none (unencrypted)".into()
        } else {
            v.join(", ")
        }
    });
    c.into_result(Error::Refused)
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

/// Re-checks every finished unit's chunks, redoes split tables that would otherwise mix two
/// snapshots (the resumed run reads in `snapshot`), and deletes files the manifest does not
/// vouch for.
pub fn reconcile(dir: &Store, m: &mut Manifest, snapshot: &str) -> Result<Reconciled> {
    let mut r = Reconciled::default();
    for t in &mut m.tables {
        let format = t.copy_format;
        // Which finished units still have sound chunks; a unit with a bad chunk is redone like
        // an unfinished one.
        let mut kept = Vec::with_capacity(t.units.len());
        for u in &t.units {
            let bad: Vec<String> = if u.done {
                u.chunks
                    .iter()
                    .filter_map(|c| verify_chunk(dir, c, Payload::Copy(format)).err())
                    .map(|e| e.to_string())
                    .collect()
            } else {
                vec![]
            };
            kept.push(u.done && bad.is_empty());
            r.bad_chunks.extend(bad);
        }
        let mixed = kept.iter().any(|k| !k)
            && t.units
                .iter()
                .zip(&kept)
                .any(|(u, k)| *k && u.snapshot.as_deref() != Some(snapshot));
        if mixed {
            r.tables_recopied.push(t.display_name());
        }
        for (u, k) in t.units.iter_mut().zip(kept) {
            if k && !mixed {
                r.units_kept += 1;
                continue;
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
    let schema_ok = m.schema_complete()
        && m.schema
            .iter()
            .all(|s| verify_chunk(dir, &s.chunk, Payload::Opaque).is_ok());
    if !schema_ok {
        m.schema.clear();
    }
    m.stream.clear();

    // Interrupted writes first (temporary files; open multipart uploads, which are aborted),
    // then every object the manifest does not vouch for.
    r.files_deleted = dir.clean_incomplete()?.len();
    let keep: HashSet<String> = m
        .all_chunks()
        .map(|c| c.file.clone())
        .chain([MANIFEST_FILE.to_string(), LOCK_FILE.to_string()])
        .collect();
    for (name, _) in dir.list()? {
        if !keep.contains(&name) {
            dir.delete(&name)?;
            r.files_deleted += 1;
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compress::Codec;

    #[test]
    fn sizes_read_as_given() {
        assert_eq!(size_text(8 << 20), "8MiB");
        assert_eq!(size_text(1536 << 10), "1536KiB");
        assert_eq!(size_text(1 << 30), "1GiB");
        assert_eq!(size_text(1000), "1000");
    }

    #[test]
    fn conflicts_name_both_values() {
        let old = OptionsRecord {
            codec: Codec::Zstd,
            level: 3,
            chunk_size: 8 << 20,
            split_tables_larger_than: 32 << 20,
            parallel_tables: 2,
            copy_format: "auto".into(),
            recipients: vec![],
        };
        let mut new = old.clone();
        new.parallel_tables = 8;
        check_options(&old, &new).expect("parallelism may change");
        new.chunk_size = 4 << 20;
        new.codec = Codec::Gzip;
        let e = check_options(&old, &new).unwrap_err().to_string();
        assert!(
            e.contains("--compress: given gzip, the backup was started with zstd"),
            "{e}"
        );
        assert!(
            e.contains("--chunk-size: given 4MiB, the backup was started with 8MiB"),
            "{e}"
        );
    }
}
