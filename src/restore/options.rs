//! What a restore is asked to do, and what it reports.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: crate::storage::Store,
    pub target: String,
    pub create: bool,
    pub clean: bool,
    pub jobs: usize,
    /// Plain/custom backups: where `pg_restore --jobs` gets its decompressed archive
    /// (default: beside the backup directory).
    pub work_dir: Option<PathBuf>,
    /// `--memory-limit`; `None` for no limit. See [`super::budget`].
    pub memory_limit: Option<u64>,
    /// `jobs` was chosen by the user: refused, not shrunk, when it does not fit.
    pub jobs_explicit: bool,
    /// `--keep-failed`: a database this restore created stays when the restore fails (by
    /// default it is dropped; see `failure.rs`).
    pub keep_failed: bool,
    /// `-t/-n/--exclude-*/--schema-only/--data-only` (see [`super::filter`]); the default takes
    /// everything.
    pub filter: super::filter::TableFilter,
    /// `--as`/`--into-schema`: the one table of `filter` restored beside the live objects (see
    /// [`super::beside`]).
    pub rename: Option<super::rename::RenameTarget>,
}

#[derive(Debug, Default)]
pub struct RestoreSummary {
    pub tables: u64,
    pub rows: u64,
    pub chunks: u64,
    pub raw_bytes: u64,
    pub warnings: Vec<String>,
    /// Seconds spent in each phase, in order: where a restore's time goes.
    pub phases: Vec<(&'static str, f64)>,
    /// The memory plan and the peaks measured at the end.
    pub memory: Option<crate::memory::MemoryRecord>,
    /// Foreign keys left out because they reference (or belong to) a table that was not
    /// restored, as `table: constraint -> referenced table`.
    pub left_out_foreign_keys: Vec<String>,
    /// `--as`/`--into-schema`: what was created, e.g. `public.orders_restored (2 partitions,
    /// 3 indexes)`.
    pub created: Option<String>,
}
