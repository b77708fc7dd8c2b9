//! What a backup is asked to do, its record in the manifest, and the output location it may use.

use std::time::Duration;

use crate::error::Result;
use crate::format::compress::Codec;
use crate::format::manifest::OptionsRecord;
use crate::format::selection::{Filters, Selection};
use crate::source::probe::CopyFormatChoice;

/// Options of a native backup (the CLI's flags, validated).
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub out: crate::storage::Store,
    pub parallel_tables: usize,
    pub codec: Codec,
    pub level: i32,
    /// Uncompressed bytes per chunk; a unit's stream rotates to a new chunk on a row boundary.
    pub chunk_size: u64,
    /// Tables whose `pg_table_size` exceeds this are split into ctid ranges.
    pub split_larger_than: u64,
    pub copy_format: CopyFormatChoice,
    /// How long to wait for each table's ACCESS SHARE lock.
    pub lock_timeout: Duration,
    /// Attempts after the first for a unit that fails with a retryable error.
    pub retries: u32,
    /// Continue the backup already in `out` instead of starting a new one.
    pub resume: bool,
    /// With `resume`: accept that the resumed units come from a new snapshot.
    pub allow_inconsistent: bool,
    /// Read in this exported snapshot (of a transaction the user keeps open) instead of our own.
    pub snapshot: Option<String>,
    /// `--memory-limit`; `None` for no limit. See [`super::budget`].
    pub memory_limit: Option<u64>,
    /// `parallel_tables` was chosen by the user: refused, not shrunk, when it does not fit.
    pub parallel_tables_explicit: bool,
    /// Backups this process runs at once (a cluster's `--parallel-databases`); each gets an
    /// equal share of the memory limit.
    pub backups_at_once: usize,
    /// `--pause-replay`: pause WAL replay on a standby for the backup ([`super::standby`]).
    pub pause_replay: ReplayPause,
    /// `-t`, `-T`, `-n`, `-N`, `--exclude-table-data`, `--strict-names`, `-b` (filter files
    /// expanded): which tables are backed up ([`crate::format::selection`]).
    pub filters: Filters,
    /// Part of a cluster backup: a `db.schema.table` pattern for another database is left out
    /// here rather than refused, and `--strict-names` is judged across the databases.
    pub filters_per_database: bool,
}

impl BackupOptions {
    /// The selection for database `dbname`.
    pub fn selection(&self, dbname: &str) -> Result<Selection> {
        if self.filters_per_database {
            Selection::for_database(&self.filters, dbname)
        } else {
            Selection::new(&self.filters, dbname)
        }
    }
}

/// Whether WAL replay on a standby is paused for a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayPause {
    /// Not asked: replay runs (and may cancel a long backup; the probe warns).
    #[default]
    Off,
    /// `--pause-replay`: the backup pauses replay itself.
    Asked,
    /// Paused by the caller for this backup and others (a cluster backup, or the outer call
    /// of a single one): nothing to do here, but no warning either.
    Held,
}

/// Claims the location of a new backup: creates it (a directory private to the owner, 0700),
/// takes its lock (so that a second dbbackup is told whose run it is), and refuses it if it
/// holds anything else.
pub fn prepare_out_dir(out: &crate::storage::Store) -> Result<crate::storage::lock::DirLock> {
    out.create_dir("")?;
    let lock = crate::storage::lock::DirLock::acquire(out)?;
    out.check_empty(&[crate::storage::lock::LOCK_FILE])?;
    Ok(lock)
}

/// What a backup with `opts` records as its `options`.
pub fn options_record(opts: &BackupOptions) -> OptionsRecord {
    OptionsRecord {
        codec: opts.codec,
        level: opts.level,
        chunk_size: opts.chunk_size,
        split_tables_larger_than: opts.split_larger_than,
        parallel_tables: opts.parallel_tables,
        copy_format: format!("{:?}", opts.copy_format).to_lowercase(),
        recipients: opts.out.sealing().recipients().to_vec(),
    }
}
